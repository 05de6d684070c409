//! HTTP/2 to clients (issue 14 §1) through real sockets: ALPN `h2` on TLS
//! listeners (on by default, `http2 = false` turns it off, a listener's key
//! wins over `[server]`'s), h2c with prior knowledge next to HTTP/1.1 on a
//! plain `http2 = true` listener, requests forwarded as valid HTTP/1.1 to
//! the backends with routing and cookie stickiness, many streams on one
//! connection, `GOAWAY` on a drain, and the abuse guards: rapid reset
//! (CVE-2023-44487) and CONTINUATION floods, sent as hand-built frames,
//! close that connection with `GOAWAY ENHANCE_YOUR_CALM` while others are
//! served.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use support::h2::*;
use support::*;

const SECRET: &str = "h2-test-secret-0123456789abcdef";

/// A TLS listener (certificate for `localhost` written to `dir` once) and a
/// plain one, both in front of `app`, with an admin listener. `server` and
/// `listener` are extra lines for `[server]` and the TLS listener.
fn config(dir: &std::path::Path, backends: &[SocketAddr], server: &str, listener: &str) -> String {
    if !dir.join("srv.crt").exists() {
        write_cert_files(dir, "srv", &["localhost"]);
    }
    format!(
        "[server]\n{server}\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\
         tls = {{ cert = \"srv.crt\", key = \"srv.key\" }}\n{listener}\n\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\nhttp2 = true\n\n\
         [upstream.app]\n{}\n",
        servers(backends)
    )
}

/// latch on [`config`] in a directory of its own (kept as long as the test).
async fn start(backends: &[SocketAddr], server: &str, listener: &str) -> (Lb, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let lb = spawn_lb_in(
        &config(dir.path(), backends, server, listener),
        Some(dir.path()),
    )
    .await;
    (lb, dir)
}

fn cert(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("srv.crt")).expect("certificate")
}

fn admin(lb: &Lb) -> SocketAddr {
    lb.handle.admin_addr().expect("admin listener")
}

#[tokio::test]
async fn tls_offers_h2_first_and_requests_reach_the_backend_as_http11() {
    let b = spawn_backend("b1").await;
    let (lb, dir) = start(&[b.addr], "", "").await;
    let pem = cert(dir.path());

    let (_, chosen) = tls_alpn(lb.addr(), &pem, &[b"h2", b"http/1.1"]).await;
    assert_eq!(chosen.as_deref(), Some(&b"h2"[..]));
    let (_, chosen) = tls_alpn(lb.addr(), &pem, &[b"http/1.1"]).await;
    assert_eq!(chosen.as_deref(), Some(&b"http/1.1"[..]));

    let mut h2 = h2_tls(lb.addr(), &pem).await;
    let req = Request::post("https://localhost:8443/echo?x=1")
        .header("te", "trailers")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Full::new(Bytes::from_static(b"hello over h2")))
        .expect("request");
    let (status, headers, body) = h2_request(&mut h2, req).await.expect("POST over h2");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-backend"], "b1");
    for h in headers.keys() {
        assert!(
            !["connection", "keep-alive", "transfer-encoding"].contains(&h.as_str()),
            "connection-specific field {h} in an h2 answer"
        );
    }
    let echo = parse_echo(&body);
    assert_eq!(
        (echo.method.as_str(), echo.target.as_str()),
        ("POST", "/echo?x=1")
    );
    assert_eq!(echo.header_all("host"), ["localhost:8443"]);
    assert_eq!(echo.header_all("cookie"), ["a=1; b=2"]);
    assert_eq!(echo.header_all("x-forwarded-proto"), ["https"]);
    assert!(echo.header("te").is_none(), "te reached the backend");
    assert!(
        echo.headers.iter().all(|(k, _)| !k.starts_with(':')),
        "a pseudo-header reached the backend: {:?}",
        echo.headers
    );
    assert_eq!(&echo.body[..], b"hello over h2");

    // Many streams at once on the one connection.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut h2 = h2.clone();
        tasks.push(tokio::spawn(async move {
            h2_get(&mut h2, "localhost", "/name").await
        }));
    }
    for t in tasks {
        let (status, _, body) = t.await.expect("task");
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"b1"[..]));
    }
    let st = h2_status(admin(&lb)).await;
    // The ALPN probe that chose h2 above, and this one.
    assert_eq!(st["connections"], 2, "{st}");
    assert_eq!(st["streams"], 21, "{st}");
    assert_eq!(metric(admin(&lb), "latch_h2_streams_total").await, 21.0);
}

#[tokio::test]
async fn http2_false_keeps_a_tls_listener_on_http11_and_listener_keys_win() {
    let b = spawn_backend("b1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    // `[server] http2 = false` reaches the first TLS listener; the second
    // turns it back on for itself.
    let mut toml = config(dir.path(), &[b.addr], "http2 = false", "");
    toml.push_str(
        "\n[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\
         tls = { cert = \"srv.crt\", key = \"srv.key\" }\nhttp2 = true\n",
    );
    let lb = spawn_lb_in(&toml, Some(dir.path())).await;
    let pem = cert(dir.path());
    let (_, chosen) = tls_alpn(lb.addrs[0], &pem, &[b"h2", b"http/1.1"]).await;
    assert_eq!(chosen.as_deref(), Some(&b"http/1.1"[..]));
    let (_, chosen) = tls_alpn(lb.addrs[2], &pem, &[b"h2", b"http/1.1"]).await;
    assert_eq!(chosen.as_deref(), Some(&b"h2"[..]));
    let mut h2 = h2_tls(lb.addrs[2], &pem).await;
    let (status, _, _) = h2_get(&mut h2, "localhost", "/name").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn h2c_with_prior_knowledge_and_http11_share_a_plain_listener() {
    let b = spawn_backend("b1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut toml = config(dir.path(), &[b.addr], "", "");
    toml.push_str("\n[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n");
    let lb = spawn_lb_in(&toml, Some(dir.path())).await;
    let h2c_addr = lb.addrs[1];

    let mut h2 = h2c(h2c_addr).await;
    let (status, _, body) = h2_get(&mut h2, "localhost", "/name").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"b1"[..]));
    let (status, _, body) = http_get(h2c_addr, "localhost", "/name").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"b1"[..]));
    // A request head that arrives a byte at a time is still HTTP/1.1.
    let head = b"GET /name HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let raw = raw_in_pieces(h2c_addr, head, 1).await;
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw)
    );

    // A plain listener without `http2` does not speak h2c.
    let plain = lb.addrs[2];
    let tcp = TcpStream::connect(plain).await.expect("connect");
    let refused = match handshake(tcp).await {
        Err(_) => true,
        Ok(mut h2) => {
            let req = Request::get("http://localhost/name")
                .body(Full::default())
                .expect("request");
            h2_request(&mut h2, req).await.is_err()
        }
    };
    assert!(refused, "a plain listener without http2 served h2c");
}

#[tokio::test]
async fn the_sticky_cookie_pins_h2_requests() {
    let b1 = spawn_backend("b1").await;
    let b2 = spawn_backend("b2").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut toml = config(dir.path(), &[b1.addr, b2.addr], "", "");
    toml.push_str(&format!(
        "\n[upstream.app.sticky]\nmode = \"cookie\"\ncookie = \"LATCH\"\nsecret = \"{SECRET}\"\n"
    ));
    let lb = spawn_lb_in(&toml, Some(dir.path())).await;
    let mut h2 = h2_tls(lb.addr(), &cert(dir.path())).await;
    let (_, headers, first) = h2_get(&mut h2, "localhost", "/name").await;
    let set = headers["set-cookie"].to_str().expect("text");
    let pin = set.split(';').next().expect("name=value").to_string();
    assert!(pin.starts_with("LATCH="), "{set}");
    for i in 0..8 {
        // HTTP/2 clients may send each cookie as its own field (RFC 9113
        // §8.2.3); latch joins them before looking for its own.
        let req = Request::get("https://localhost/name")
            .header("cookie", format!("other={i}"))
            .header("cookie", pin.as_str())
            .body(Full::default())
            .expect("request");
        let (status, _, body) = h2_request(&mut h2, req).await.expect("GET");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, first, "request {i} left its pinned server");
    }
}

#[tokio::test]
async fn a_drain_sends_goaway() {
    let b = spawn_backend("b1").await;
    let (lb, _dir) = start(&[b.addr], "", "").await;
    let mut raw = TcpStream::connect(lb.addrs[1]).await.expect("connect");
    raw.write_all(&preface()).await.expect("preface");
    // Served: latch's SETTINGS came.
    let (kind, ..) = within("SETTINGS", read_frame(&mut raw))
        .await
        .expect("a frame");
    assert_eq!(kind, SETTINGS);
    // A client that answers pings (a graceful GOAWAY is confirmed by one)
    // sees GOAWAY NO_ERROR, then the end of the connection; the stop
    // completes well within its grace.
    let client = async {
        let mut codes = Vec::new();
        while let Some((kind, flags, _, payload)) = read_frame(&mut raw).await {
            match kind {
                GOAWAY => codes.push(u32::from_be_bytes(payload[4..8].try_into().unwrap())),
                PING if flags & ACK == 0 => {
                    let _ = raw.write_all(&frame(PING, ACK, 0, &payload)).await;
                }
                _ => {}
            }
        }
        codes
    };
    let started = std::time::Instant::now();
    let (codes, ()) = within("GOAWAY and the stop", async {
        tokio::join!(client, lb.handle.shutdown_within(TIMEOUT))
    })
    .await;
    assert!(
        !codes.is_empty() && codes.iter().all(|c| *c == NO_ERROR),
        "{codes:?}"
    );
    assert!(started.elapsed() < TIMEOUT, "the stop waited for its grace");
}

/// Rapid reset: streams opened and cancelled at once, over and over. hyper
/// counts streams reset before they were served and closes the connection
/// past `h2_max_pending_accept_reset_streams`; other clients go on.
#[tokio::test]
async fn rapid_reset_gets_goaway_and_other_connections_are_served() {
    let b = spawn_backend("b1").await;
    let (lb, _dir) = start(&[b.addr], "", "").await;
    let addr = lb.addrs[1];
    let raw = TcpStream::connect(addr).await.expect("connect");
    let mut out = preface();
    let block = get_block("localhost");
    for i in 0..5000u32 {
        let id = 2 * i + 1;
        out.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &block));
        out.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let code = write_then_goaway(raw, out).await;
    assert_eq!(code, Some(ENHANCE_YOUR_CALM));
    // The connection was closed, not the listener.
    let mut h2 = h2c(addr).await;
    let (status, _, _) = h2_get(&mut h2, "localhost", "/name").await;
    assert_eq!(status, StatusCode::OK);
    assert!(b.hits() < 5000, "the reset streams were all served");
    let st = h2_status(admin(&lb)).await;
    assert_eq!(st["connection_errors"], 1, "{st}");
    assert_eq!(
        metric(admin(&lb), "latch_h2_connection_errors_total").await,
        1.0
    );
}

/// Writes `out` while reading frames until a GOAWAY (latch may close
/// before it has read everything: a failed write is expected then).
async fn write_then_goaway(raw: TcpStream, out: Vec<u8>) -> Option<u32> {
    let (mut rd, mut wr) = raw.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&out).await;
        wr
    });
    let code = read_until_goaway(&mut rd).await;
    drop(writer);
    code
}

/// A header block that never ends: an endless run of CONTINUATION frames,
/// empty or full. h2 stops counting at a few frames past what
/// `h2_max_header_list_size` needs, and closes the connection; what it
/// buffered is bounded by that size.
#[tokio::test]
async fn continuation_floods_get_goaway() {
    let b = spawn_backend("b1").await;
    let (lb, _dir) = start(&[b.addr], "h2_max_header_list_size = \"16k\"", "").await;
    let addr = lb.addrs[1];
    let block = get_block("localhost");
    // Empty CONTINUATION frames, 100,000 of them (900 KB).
    let mut out = preface();
    out.extend(frame(HEADERS, END_STREAM, 1, &block));
    for _ in 0..100_000 {
        out.extend(frame(CONTINUATION, 0, 1, &[]));
    }
    let raw = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(write_then_goaway(raw, out).await, Some(ENHANCE_YOUR_CALM));

    // Full ones: one header value of 64 MiB, sent 16 KiB a frame.
    let mut out = preface();
    let field = big_field("x-flood", 64 << 20);
    // The HEADERS frame fills up to the 16 KiB frame size too.
    let (head, rest) = field.split_at(16 * 1024 - block.len());
    let mut first = block.clone();
    first.extend_from_slice(head);
    out.extend(frame(HEADERS, END_STREAM, 1, &first));
    for chunk in rest.chunks(16 * 1024).take(4096) {
        out.extend(frame(CONTINUATION, 0, 1, chunk));
    }
    let raw = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(write_then_goaway(raw, out).await, Some(ENHANCE_YOUR_CALM));

    let mut h2 = h2c(addr).await;
    let (status, _, _) = h2_get(&mut h2, "localhost", "/name").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h2_status(admin(&lb)).await["connection_errors"], 2);
}

/// A header list over `h2_max_header_list_size` is refused with `431`
/// (the connection lives on).
#[tokio::test]
async fn an_oversized_header_list_gets_431() {
    let b = spawn_backend("b1").await;
    let (lb, dir) = start(&[b.addr], "", "h2_max_header_list_size = \"8k\"").await;
    let mut h2 = h2_tls(lb.addr(), &cert(dir.path())).await;
    let req = Request::get("https://localhost/name")
        .header("x-big", "a".repeat(12 * 1024))
        .body(Full::default())
        .expect("request");
    let (status, _, _) = h2_request(&mut h2, req).await.expect("an answer");
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let (status, _, _) = h2_get(&mut h2, "localhost", "/name").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(b.hits(), 1);
}

/// A reload turns HTTP/2 off for new connections (ALPN offers `http/1.1`
/// only), while an HTTP/2 connection already open keeps working; and back.
#[tokio::test]
async fn a_reload_switches_http2_for_new_connections() {
    let b = spawn_backend("b1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let on = config(dir.path(), &[b.addr], "", "");
    let lb = spawn_lb_in(&on, Some(dir.path())).await;
    let pem = cert(dir.path());
    let mut open = h2_tls(lb.addr(), &pem).await;
    let parse = |text: &str| {
        latch::Config::parse(text, &dir.path().join("latch.toml")).expect("valid config")
    };
    let off = config(dir.path(), &[b.addr], "", "http2 = false");
    lb.handle.reload(parse(&off)).expect("reload");
    let (_, chosen) = tls_alpn(lb.addr(), &pem, &[b"h2", b"http/1.1"]).await;
    assert_eq!(chosen.as_deref(), Some(&b"http/1.1"[..]));
    let (status, _, _) = h2_get(&mut open, "localhost", "/name").await;
    assert_eq!(status, StatusCode::OK);
    lb.handle.reload(parse(&on)).expect("reload");
    let (_, chosen) = tls_alpn(lb.addr(), &pem, &[b"h2", b"http/1.1"]).await;
    assert_eq!(chosen.as_deref(), Some(&b"h2"[..]));
}

/// An HTTP/2 connection with no stream open for `keepalive_timeout` gets
/// `GOAWAY` (as an idle HTTP/1.1 keep-alive connection is closed); one
/// whose stream is still answering is left alone.
#[tokio::test]
async fn an_idle_connection_gets_goaway_a_busy_one_does_not() {
    let b = spawn_backend("b1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = config(dir.path(), &[b.addr], "keepalive_timeout = \"300ms\"", "");
    let lb = spawn_lb_in(&toml, Some(dir.path())).await;
    let addr = lb.addrs[1];
    // Busy: a response that takes 1.5 s (five idle periods) arrives whole.
    let mut h2 = h2c(addr).await;
    let (status, _, body) = h2_get(&mut h2, "localhost", "/slow-stream?ms=1500").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"first\nlast\n"[..]));
    // Not told to go away meanwhile: the connection takes the next request.
    let (status, _, _) = h2_get(&mut h2, "localhost", "/name").await;
    assert_eq!(status, StatusCode::OK);
    // Idle: GOAWAY NO_ERROR, then the end of the connection.
    let mut raw = TcpStream::connect(addr).await.expect("connect");
    raw.write_all(&preface()).await.expect("preface");
    let started = std::time::Instant::now();
    assert_eq!(read_until_goaway(&mut raw).await, Some(NO_ERROR));
    assert!(started.elapsed() < TIMEOUT);
}

/// A `CONNECT` latch does not tunnel (no `:protocol`: 405; an unknown one:
/// 501) is answered on its stream and counted in `latch_requests_total`
/// like any other request, not lost before the request path.
#[tokio::test]
async fn a_refused_connect_is_answered_and_counted() {
    let b = spawn_backend("b1").await;
    let (lb, dir) = start(&[b.addr], "", "").await;
    let mut h2 = h2_tls(lb.addr(), &cert(dir.path())).await;
    let connect = Request::connect("localhost:8443")
        .body(Full::default())
        .expect("request");
    let (status, _, _) = h2_request(&mut h2, connect).await.expect("CONNECT");
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _, _) = h2_get(&mut h2, "localhost", "/name").await;
    assert_eq!(status, StatusCode::OK);
    let (code, _, body) = http_get(admin(&lb), "localhost", "/metrics").await;
    assert_eq!(code, StatusCode::OK);
    let text = String::from_utf8_lossy(&body);
    let count = |class: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("latch_requests_total{") && l.contains(class))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(count("class=\"4xx\""), 1.0, "{text}");
    assert_eq!(count("class=\"2xx\""), 1.0, "{text}");
}

#[tokio::test]
async fn a_waiting_stream_does_not_hold_back_the_others_on_its_connection() {
    // A connection's streams run in its task: one whose backend has not
    // answered (a long poll) must leave the others served.
    let b = spawn_backend("b1").await;
    let (lb, dir) = start(&[b.addr], "", "").await;
    let h2 = h2_tls(lb.addr(), &cert(dir.path())).await;
    let mut waiting = h2.clone();
    let hang = tokio::spawn(async move { h2_get(&mut waiting, "localhost", "/hang").await });
    let mut slow = h2.clone();
    let streamed =
        tokio::spawn(async move { h2_get(&mut slow, "localhost", "/slow-stream?ms=300").await });
    wait_until("both requests reached the backend", TIMEOUT, || {
        b.hits() == 2
    })
    .await;
    for i in 0..10 {
        let mut h2 = h2.clone();
        let got = tokio::time::timeout(TIMEOUT, h2_get(&mut h2, "localhost", "/name")).await;
        let (status, _, body) = got.unwrap_or_else(|_| panic!("request {i} held back"));
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"b1"[..]));
    }
    let (status, _, body) = tokio::time::timeout(TIMEOUT, streamed)
        .await
        .expect("the streamed answer ended")
        .expect("task");
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"first\nlast\n"[..]));
    assert!(!hang.is_finished(), "the unanswered request got an answer");
    hang.abort();
}
