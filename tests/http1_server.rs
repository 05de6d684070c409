//! latch's own HTTP/1.1 server side (`src/http1/`), seen from a raw client:
//! what hyper's server used to do for latch and a client relies on —
//! pipelining, HTTP/1.0 keep-alive rules, `100 Continue`, chunked uploads,
//! refusing ambiguous framing, `HEAD`, a drain that closes idle
//! connections at once and busy ones after their response, and the
//! keep-alive timeout (apart from `header_timeout`, closed politely on TLS).

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn one_backend() -> (Lb, Backend) {
    let app = spawn_backend("app").await;
    let lb = spawn_lb(&simple_config(&[app.addr], "")).await;
    (lb, app)
}

/// Reads from `s` until `n` complete responses (by Content-Length or
/// chunked end) have arrived; returns the bytes.
async fn read_responses(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    within("responses", async {
        while count_responses(&got) < n {
            let k = s.read(&mut buf).await.expect("read");
            assert!(k > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..k]);
        }
    })
    .await;
    got
}

/// Complete responses at the front of `raw`.
fn count_responses(mut raw: &[u8]) -> usize {
    let mut n = 0;
    while let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
        let r = parse_response(raw);
        let head = end + 4;
        let len = if r.header("transfer-encoding").is_some() {
            match raw[head..].windows(5).position(|w| w == b"0\r\n\r\n") {
                Some(i) => i + 5,
                None => return n,
            }
        } else {
            r.header("content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0)
        };
        if raw.len() < head + len {
            return n;
        }
        raw = &raw[head + len..];
        n += 1;
    }
    n
}

/// Reads until the server closes; what came.
async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    within("server closing", s.read_to_end(&mut got))
        .await
        .expect("read to end");
    got
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (lb, app) = one_backend().await;
    let mut s = TcpStream::connect(lb.addr()).await.unwrap();
    let three = "GET /name HTTP/1.1\r\nHost: a\r\n\r\n\
                 GET /missing HTTP/1.1\r\nHost: a\r\n\r\n\
                 GET /name HTTP/1.1\r\nHost: a\r\n\r\n";
    s.write_all(three.as_bytes()).await.unwrap();
    let raw = read_responses(&mut s, 3).await;
    let mut statuses = Vec::new();
    let mut rest = &raw[..];
    while !rest.is_empty() {
        let r = parse_response(rest);
        statuses.push(r.status);
        let head = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let len: usize = r.header("content-length").unwrap().parse().unwrap();
        rest = &rest[head + len..];
    }
    assert_eq!(statuses, [200, 404, 200]);
    assert_eq!(app.hits(), 3);
}

#[tokio::test]
async fn http10_closes_unless_it_asks_to_keep_alive() {
    let (lb, _app) = one_backend().await;
    let mut s = TcpStream::connect(lb.addr()).await.unwrap();
    s.write_all(b"GET /name HTTP/1.0\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let r = parse_response(&read_to_close(&mut s).await);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"app"[..]));

    let mut s = TcpStream::connect(lb.addr()).await.unwrap();
    let ka = b"GET /name HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n";
    s.write_all(ka).await.unwrap();
    let r = parse_response(&read_responses(&mut s, 1).await);
    assert_eq!(r.header("connection"), Some("keep-alive"), "{r:?}");
    // Still open: a second request on it is answered.
    s.write_all(ka).await.unwrap();
    let r = parse_response(&read_responses(&mut s, 1).await);
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn expect_100_continue_then_the_answer() {
    let (lb, _app) = one_backend().await;
    let mut s = TcpStream::connect(lb.addr()).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut first = [0u8; 25];
    within("100 Continue", s.read_exact(&mut first))
        .await
        .unwrap();
    assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").await.unwrap();
    let r = parse_response(&read_responses(&mut s, 1).await);
    assert_eq!(r.status, 200);
    assert_eq!(r.echo().body, "hello");
}

#[tokio::test]
async fn a_chunked_upload_reaches_the_backend_whole() {
    let (lb, _app) = one_backend().await;
    let req = b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n";
    let raw = raw_in_pieces(lb.addr(), req, 3).await;
    let r = parse_response(&raw);
    assert_eq!(r.echo().body, "hello world");
}

#[tokio::test]
async fn ambiguous_framing_is_refused_and_closes() {
    let (lb, app) = one_backend().await;
    for head in [
        "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    ] {
        let raw = raw_in_pieces(lb.addr(), head.as_bytes(), 1 << 16).await;
        let r = parse_response(&raw);
        assert_eq!(r.status, 400, "{head:?}");
        assert_eq!(r.header("connection"), Some("close"));
    }
    assert_eq!(app.hits(), 0, "an ambiguous request reached the backend");
}

#[tokio::test]
async fn head_gets_the_length_and_no_body() {
    let (lb, _app) = one_backend().await;
    let mut s = TcpStream::connect(lb.addr()).await.unwrap();
    s.write_all(b"HEAD /name HTTP/1.1\r\nHost: a\r\n\r\nGET /name HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    // The HEAD answer has a length but no body: the GET's answer follows
    // its head directly.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    within("two answers", async {
        while !got.ends_with(b"app") {
            let k = s.read(&mut buf).await.unwrap();
            assert!(k > 0);
            got.extend_from_slice(&buf[..k]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got);
    // (The test backend answers HEAD /name with a 405 and its length.)
    let first = parse_response(&got);
    assert!(first.header("content-length").is_some(), "{text}");
    let after = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(got[after..].starts_with(b"HTTP/1.1 200 OK\r\n"), "{text}");
    assert_eq!(
        text.matches("app").count(),
        3,
        "x-backend twice, body once: {text}"
    );
}

#[tokio::test]
async fn stop_closes_idle_connections_at_once_and_busy_ones_after_their_answer() {
    let (lb, app) = one_backend().await;
    let addr = lb.addr();
    // An idle keep-alive connection, and one in the middle of a slow answer.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /name HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    read_responses(&mut idle, 1).await;
    let mut busy = TcpStream::connect(addr).await.unwrap();
    busy.write_all(b"GET /slow-stream?ms=1500 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut first = Vec::new();
    let mut buf = [0u8; 4096];
    within("the slow answer's first part", async {
        while !first.ends_with(b"first\n\r\n") {
            let k = busy.read(&mut buf).await.unwrap();
            assert!(k > 0);
            first.extend_from_slice(&buf[..k]);
        }
    })
    .await;
    assert_eq!(app.hits(), 2);
    let handle = lb.handle.clone();
    let stopping =
        tokio::spawn(async move { handle.shutdown_within(Duration::from_secs(20)).await });
    // The idle one closes with nothing more.
    let rest = within_for(
        Duration::from_secs(5),
        "idle connection closed",
        read_to_close(&mut idle),
    )
    .await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    // The busy one gets the rest of its answer, then the connection closes.
    let rest = read_to_close(&mut busy).await;
    first.extend_from_slice(&rest);
    let r = parse_response(&first);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"first\nlast\n"[..]));
    within("stop", stopping).await.unwrap();
}

// === keep-alive timeout ===

/// One backend behind a listener whose `[server]` section is `server`.
async fn backend_with_server(server: &str) -> (Lb, Backend) {
    let app = spawn_backend("app").await;
    let toml = format!("[server]\n{server}\n{}", simple_config(&[app.addr], ""));
    (spawn_lb(&toml).await, app)
}

#[tokio::test]
async fn an_idle_kept_alive_connection_closes_after_keepalive_timeout() {
    // header_timeout is long: only keepalive_timeout can close it.
    let (lb, _app) =
        backend_with_server("header_timeout = \"1h\"\nkeepalive_timeout = \"300ms\"").await;
    let mut s = TcpStream::connect(lb.addr()).await.unwrap();
    s.write_all(b"GET /name HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let r = parse_response(&read_responses(&mut s, 1).await);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), None, "kept alive");
    // Then nothing more comes: a close, with no 408.
    assert!(read_to_close(&mut s).await.is_empty());
}

#[tokio::test]
async fn the_next_request_may_come_later_than_header_timeout() {
    let (lb, app) =
        backend_with_server("header_timeout = \"300ms\"\nkeepalive_timeout = \"1h\"").await;
    let mut s = TcpStream::connect(lb.addr()).await.unwrap();
    s.write_all(b"GET /name HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    read_responses(&mut s, 1).await;
    // Idle for three header timeouts (the point of the test, not a wait
    // for something to happen): a keep-alive wait, not a slow head.
    tokio::time::sleep(Duration::from_millis(900)).await;
    s.write_all(b"GET /name HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let r = parse_response(&read_responses(&mut s, 1).await);
    assert_eq!(r.status, 200);
    assert_eq!(app.hits(), 2);
}

#[tokio::test]
async fn the_next_head_still_has_header_timeout_from_its_first_byte() {
    let (lb, _app) =
        backend_with_server("header_timeout = \"300ms\"\nkeepalive_timeout = \"1h\"").await;
    let mut s = TcpStream::connect(lb.addr()).await.unwrap();
    s.write_all(b"GET /name HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let first = read_responses(&mut s, 1).await;
    // Half a head, then silence: 408, as for a connection's first request.
    s.write_all(b"GET /name HTTP/1.1\r\n").await.unwrap();
    let rest = read_to_close(&mut s).await;
    assert_eq!(parse_response(&rest).status, 408, "after {first:?}");
}

#[tokio::test]
async fn keepalive_timeout_zero_closes_after_each_response() {
    let (lb, _app) = backend_with_server("keepalive_timeout = \"0s\"").await;
    let mut s = TcpStream::connect(lb.addr()).await.unwrap();
    s.write_all(b"GET /name HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let r = parse_response(&read_to_close(&mut s).await);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
}

#[tokio::test]
async fn an_idle_tls_connection_closes_with_close_notify() {
    let app = spawn_backend("app").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, _, cert_pem) = write_cert_files(dir.path(), "srv", &["app.test"]);
    let toml = format!(
        "[server]\nkeepalive_timeout = \"300ms\"\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\
         tls = {{ cert = \"srv.crt\", key = \"srv.key\" }}\n\n\
         [upstream.app]\n{}\n",
        servers(&[app.addr])
    );
    let lb = spawn_lb_in(&toml, Some(dir.path())).await;
    let connector = tls_connector(&[&cert_pem]);
    let mut s = tls_connect(lb.addr(), "app.test", &connector)
        .await
        .expect("TLS");
    s.write_all(b"GET /name HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while count_responses(&got) < 1 {
        let n = within("response", s.read(&mut buf)).await.expect("read");
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    // A close without close_notify is an UnexpectedEof error here.
    let mut rest = Vec::new();
    within("idle close", s.read_to_end(&mut rest))
        .await
        .expect("a clean TLS close (close_notify)");
    assert!(rest.is_empty());
}
