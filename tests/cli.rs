//! The `latch` command line: `latch demo` as a child process (plain HTTP page,
//! round robin, WebSocket echo, long-poll sessions that only their own backend
//! knows), the same demo through the library over HTTPS/WSS, `latch run` with a
//! config file and a graceful SIGTERM, and `latch` with nothing to do.
//!
//! Every child process is held by a [`Child`] guard that kills it on drop;
//! its output is read line by line in the background, so waiting for a line
//! is waiting for an event, and a chatty child never blocks on a full pipe.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use support::*;

// === child processes (the harness is in support/child.rs) ===

/// The port in a line like `open  https://localhost:PORT/ ...`.
fn port_after(line: &str, prefix: &str) -> u16 {
    let rest = &line[line.find(prefix).expect("prefix in line") + prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no port after {prefix:?} in {line:?}"))
}

// === demo helpers ===

const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];
const UNKNOWN_SID: &str = r#"{"code":1,"message":"Session ID unknown"}"#;

/// The backend that comes after `name` in the demo's round robin.
fn next_of(name: &str) -> &'static str {
    let i = NAMES
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("{name:?} is not a demo backend"));
    NAMES[(i + 1) % 3]
}

fn x_backend(headers: &http::HeaderMap) -> String {
    headers
        .get("x-backend")
        .expect("x-backend header")
        .to_str()
        .expect("x-backend is text")
        .to_string()
}

fn sid_of(body: &[u8]) -> String {
    let body = std::str::from_utf8(body).expect("JSON is UTF-8");
    let rest = body
        .split_once(r#""sid":""#)
        .unwrap_or_else(|| panic!("no sid in {body}"))
        .1;
    rest.split_once('"').expect("closing quote").0.to_string()
}

/// `method path` with `body` on a fresh plain connection to `addr`.
async fn plain(addr: SocketAddr, method: &str, path: &str, body: &str) -> Got {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid request");
    http_request(addr, req).await
}

/// Asserts the page served by `GET /` names the backend of its `x-backend`.
fn assert_page(got: &Got) -> String {
    let (status, headers, body) = got;
    assert_eq!(*status, StatusCode::OK);
    let name = x_backend(headers);
    assert!(NAMES.contains(&name.as_str()), "x-backend {name:?}");
    let page = String::from_utf8_lossy(body);
    let shown = format!("Served by backend <strong id=\"backend\">{name}</strong>");
    assert!(page.contains(&shown), "page lacks {shown:?}");
    name
}

/// The demo WebSocket: greets with its backend's name, then echoes.
async fn demo_ws_session<S>(ws: &mut WebSocketStream<S>, expect_backend: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hello = next_msg(ws).await.expect("hello").expect("hello");
    assert_eq!(
        hello,
        Message::text(format!(r#"{{"backend":"{expect_backend}"}}"#))
    );
    for msg in [
        Message::text("hi demo"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::binary(pattern_bytes(0, 200_000)),
    ] {
        within("send", ws.send(msg.clone())).await.expect("send");
        let got = next_msg(ws).await.expect("echo").expect("echo");
        assert!(got == msg, "echo differs for a {}-byte message", msg.len());
    }
    within("close", ws.close(None)).await.expect("close");
    for _ in 0..4 {
        match next_msg(ws).await {
            Some(Ok(Message::Close(_))) => {}
            None | Some(Err(_)) => return,
            Some(Ok(other)) => panic!("after close: {other:?}"),
        }
    }
    panic!("websocket did not end after the close handshake");
}

// === latch demo (binary, plain listener) ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_binary_serves_page_ws_and_poll_round_robin() {
    let mut demo = Child::spawn(&["demo", "--https", "127.0.0.1:0", "--http", "127.0.0.1:0"]);
    let https_line = demo
        .stdout
        .wait_for("the https line", |l| l.contains("https://localhost:"))
        .await;
    let http_line = demo
        .stdout
        .wait_for("the http line", |l| l.contains("http://localhost:"))
        .await;
    let https_port = port_after(&https_line, "https://localhost:");
    let http = SocketAddr::from(([127, 0, 0, 1], port_after(&http_line, "http://localhost:")));
    assert_ne!(https_port, http.port());
    let listed = demo.stdout.text();
    for name in NAMES {
        assert!(
            listed.contains(name),
            "backend {name} not listed:\n{listed}"
        );
    }

    // The page, then round robin: three requests, three backends, in order.
    let mut last = assert_page(&plain(http, "GET", "/", "").await);
    let mut three = Vec::new();
    for _ in 0..3 {
        let name = assert_page(&plain(http, "GET", "/", "").await);
        assert_eq!(name, next_of(&last), "round robin order");
        three.push(name.clone());
        last = name;
    }
    three.sort();
    assert_eq!(three, NAMES, "three consecutive requests, three backends");

    // WebSocket: the next backend in line greets, then echoes.
    let (mut ws, resp) = ws_connect(http, "/ws").await;
    assert_eq!(x_backend(resp.headers()), next_of(&last));
    last = x_backend(resp.headers());
    demo_ws_session(&mut ws, &last).await;

    // Long-poll without stickiness: each request goes to the next backend, so
    // a session only works on every third request.
    let (status, h, body) = plain(http, "GET", "/poll", "").await;
    assert_eq!(status, StatusCode::OK);
    let owner = x_backend(&h);
    assert_eq!(owner, next_of(&last));
    let sid = sid_of(&body);
    let at = format!("/poll?sid={sid}");
    let expect = |got: &Got, backend: &str, status: StatusCode, body: &str| {
        assert_eq!(x_backend(&got.1), backend, "routed to");
        assert_eq!(got.0, status, "status from {backend}");
        assert_eq!(String::from_utf8_lossy(&got.2), body, "body from {backend}");
    };
    let b2 = next_of(&owner);
    let b3 = next_of(b2);
    expect(
        &plain(http, "GET", &at, "").await,
        b2,
        StatusCode::BAD_REQUEST,
        UNKNOWN_SID,
    );
    expect(
        &plain(http, "POST", &at, "lost").await,
        b3,
        StatusCode::BAD_REQUEST,
        UNKNOWN_SID,
    );
    let ok = format!(r#"{{"backend":"{owner}","ok":true}}"#);
    expect(
        &plain(http, "POST", &at, "hello").await,
        &owner,
        StatusCode::OK,
        &ok,
    );
    expect(
        &plain(http, "GET", &at, "").await,
        b2,
        StatusCode::BAD_REQUEST,
        UNKNOWN_SID,
    );
    expect(
        &plain(http, "GET", &at, "").await,
        b3,
        StatusCode::BAD_REQUEST,
        UNKNOWN_SID,
    );
    let got = format!(r#"{{"backend":"{owner}","messages":["hello"]}}"#);
    expect(
        &plain(http, "GET", &at, "").await,
        &owner,
        StatusCode::OK,
        &got,
    );

    // The https port speaks TLS with a certificate nobody here trusts.
    let https = SocketAddr::from(([127, 0, 0, 1], https_port));
    let err = tls_connect(https, "localhost", &tls_connector(&[]))
        .await
        .expect_err("an untrusted self-signed certificate must be rejected");
    assert!(
        err.to_string().contains("certificate"),
        "not a certificate error: {err}"
    );

    demo.terminate().await;
    let status = demo.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", demo.stderr.text());
}

// === latch demo (library, TLS listener) ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_library_https_wss_and_long_poll_wait() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let demo = latch::demo::start(any, any).await.expect("demo starts");
    let [https, http] = demo.handle.listener_addrs()[..] else {
        panic!("the demo has two listeners");
    };
    let names: Vec<&str> = demo.backends.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, NAMES);
    let conn = tls_connector(&[&demo.cert_pem]);

    // HTTPS page, then round robin over TLS.
    let mut last = assert_page(&https_get(https, "localhost", &conn, "/").await);
    for _ in 0..3 {
        let name = assert_page(&https_get(https, "localhost", &conn, "/").await);
        assert_eq!(name, next_of(&last), "round robin order");
        last = name;
    }
    // The certificate also names 127.0.0.1.
    let (status, _, _) = https_get(https, "127.0.0.1", &conn, "/health").await;
    assert_eq!(status, StatusCode::OK);
    last = next_of(&last).to_string();

    // WSS echo.
    let (mut ws, resp) = wss_connect(https, "localhost", &conn, "/ws").await;
    assert_eq!(x_backend(resp.headers()), next_of(&last));
    last = x_backend(resp.headers());
    demo_ws_session(&mut ws, &last).await;

    // Long-poll through the plain listener, with a GET that really waits.
    let (status, h, body) = plain(http, "GET", "/poll", "").await;
    assert_eq!(status, StatusCode::OK);
    let owner = x_backend(&h);
    assert_eq!(owner, next_of(&last));
    let sid = sid_of(&body);
    let at = format!("/poll?sid={sid}");
    // The other two backends do not know the session.
    for (method, body) in [("GET", ""), ("POST", "lost")] {
        let (status, h, got) = plain(http, method, &at, body).await;
        assert_ne!(x_backend(&h), owner);
        assert_eq!(
            (status, &got[..]),
            (StatusCode::BAD_REQUEST, UNKNOWN_SID.as_bytes())
        );
    }
    // Third request in line: back on the owner, where the GET waits.
    let owner_lb = {
        let i = NAMES.iter().position(|n| *n == owner).unwrap();
        demo.handle.snapshot().upstreams["demo"].backends[i].clone()
    };
    assert_eq!(
        owner_lb.addr,
        demo.backends[NAMES.iter().position(|n| *n == owner).unwrap()].1
    );
    assert_eq!(owner_lb.active(), 0);
    let waiting = {
        let at = at.clone();
        tokio::spawn(async move { plain(http, "GET", &at, "").await })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while owner_lb.active() == 0 {
        assert!(
            Instant::now() < deadline,
            "the long-poll GET never reached {owner}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !waiting.is_finished(),
        "the GET answered with nothing queued"
    );
    // Two more requests move the round robin past the other backends...
    for _ in 0..2 {
        let (status, h, _) = plain(http, "GET", "/health", "").await;
        assert_eq!(status, StatusCode::OK);
        assert_ne!(x_backend(&h), owner);
    }
    // ...so the POST lands on the owner and wakes the waiting GET.
    let (status, h, body) = plain(http, "POST", &at, "hello").await;
    assert_eq!(x_backend(&h), owner);
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let (status, h, body) = within("the waiting GET", waiting).await.expect("GET task");
    assert_eq!(x_backend(&h), owner);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!(r#"{{"backend":"{owner}","messages":["hello"]}}"#)
    );

    within_for(
        Duration::from_secs(5),
        "demo shutdown",
        demo.handle.shutdown_within(Duration::from_secs(2)),
    )
    .await;
}

/// Like `plain`, carrying `cookie` (a `name=value` pair) when given.
async fn with_cookie(addr: SocketAddr, method: &str, path: &str, body: &str, cookie: &str) -> Got {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("cookie", cookie)
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    http_request(addr, req).await
}

/// The demo pins a browser (a client that returns the cookie) to one backend,
/// so a long-poll session works even while other clients keep the round robin
/// moving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_cookie_keeps_a_long_poll_session_on_its_backend() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let demo = latch::demo::start(any, any).await.expect("demo starts");
    let http = demo.handle.listener_addrs()[1];

    let (status, h, body) = plain(http, "GET", "/poll", "").await;
    assert_eq!(status, StatusCode::OK);
    let owner = x_backend(&h);
    let set = h
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("the first response pins the client");
    let cookie = set.split(';').next().unwrap().trim().to_string();
    assert!(cookie.starts_with("LATCH="), "{set}");
    let at = format!("/poll?sid={}", sid_of(&body));

    let waiting = {
        let (at, cookie) = (at.clone(), cookie.clone());
        tokio::spawn(async move { with_cookie(http, "GET", &at, "", &cookie).await })
    };
    // Cookie-less traffic in between still rotates over all backends...
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let (_, h, _) = plain(http, "GET", "/health", "").await;
        seen.insert(x_backend(&h));
    }
    assert_eq!(seen.len(), 3, "round robin for clients without the cookie");
    // ...while every request with the cookie reaches the session's backend.
    for i in 0..3 {
        let (status, h, body) = with_cookie(http, "POST", &at, &format!("m{i}"), &cookie).await;
        assert_eq!(
            (status, x_backend(&h)),
            (StatusCode::OK, owner.clone()),
            "{body:?}"
        );
        assert!(
            h.get("set-cookie").is_none(),
            "a valid pin is not re-issued"
        );
    }
    let (status, h, body) = within("the waiting GET", waiting).await.expect("GET task");
    assert_eq!((status, x_backend(&h)), (StatusCode::OK, owner.clone()));
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains(r#""m0""#), "{body}");
    demo.handle.shutdown_within(Duration::from_secs(2)).await;
}

// === latch run, SIGTERM ===

/// `latch run --config FILE` in front of `backend`, on a port picked here;
/// returns once latch logs that it is listening. The tempdir holds the config.
async fn run_latch(backend: SocketAddr) -> (Child, SocketAddr, tempfile::TempDir) {
    run_latch_with(backend, "").await
}

/// Like [`run_latch`], with `server_extra` lines added to `[server]`.
async fn run_latch_with(
    backend: SocketAddr,
    server_extra: &str,
) -> (Child, SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("latch.toml");
    // A long grace: exiting quickly must come from the drain finishing.
    std::fs::write(
        &config,
        format!(
            "[server]\ngrace = \"30s\"\n{server_extra}\n\n[[listener]]\nbind = \"127.0.0.1:{port}\"\n\
             upstream = \"app\"\n\n[upstream.app]\n{}\n",
            servers(&[backend])
        ),
    )
    .expect("write config");
    let config = config.to_str().expect("UTF-8 path").to_string();
    let mut latch = Child::spawn(&["run", "--config", &config]);
    latch
        .stderr
        .wait_for("the `listening` log line", |l| l.contains("listening"))
        .await;
    (latch, SocketAddr::from(([127, 0, 0, 1], port)), dir)
}

/// Starts `GET /slow-stream?ms=N` and reads its first chunk; returns the
/// rest of the body, still streaming.
async fn slow_stream_started(addr: SocketAddr, ms: u64) -> hyper::body::Incoming {
    let req = Request::get(format!("/slow-stream?ms={ms}"))
        .body(Full::<Bytes>::default())
        .unwrap();
    let resp = send_request(addr, req).await.expect("slow-stream head");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = within("the first chunk", body.frame())
        .await
        .expect("a first frame")
        .expect("first frame ok")
        .into_data()
        .expect("data frame");
    assert_eq!(&first[..], b"first\n");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_and_drains_on_sigterm() {
    let b = spawn_backend("b1").await;
    let (mut latch, addr, _dir) = run_latch(b.addr).await;

    let (status, h, body) = http_get(addr, "localhost", "/name").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"b1"[..]));
    assert_eq!(h["x-backend"], "b1");

    // A slow response is in flight when SIGTERM arrives.
    let body = slow_stream_started(addr, 1500).await;
    let head_at = Instant::now();
    latch.terminate().await;
    latch
        .stderr
        .wait_for("the `stopping` log line", |l| l.contains("stopping"))
        .await;
    assert!(
        head_at.elapsed() < Duration::from_millis(1200),
        "latch took {:?} to react to SIGTERM; the request may have finished first",
        head_at.elapsed()
    );

    // The request in flight completes fully...
    let rest = within("the rest of the slow body", body.collect())
        .await
        .expect("slow body completes")
        .to_bytes();
    assert_eq!(&rest[..], b"last\n");
    assert!(head_at.elapsed() >= Duration::from_millis(1000));
    let done_at = Instant::now();

    // ...and then latch exits 0, without waiting for its 30 s grace.
    let status = latch.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", latch.stderr.text());
    assert!(
        done_at.elapsed() < Duration::from_secs(3),
        "exited {:?} after the last request finished",
        done_at.elapsed()
    );
    let log = latch.stderr.wait_end().await;
    assert!(log.contains("stopped"), "no `stopped` log line:\n{log}");
}

/// While draining, the listening port must refuse new connections, so that
/// clients (and balancers in front) fail over at once instead of waiting in
/// the kernel's accept queue of a socket nobody accepts from any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_new_connections_while_draining() {
    let b = spawn_backend("b1").await;
    let (mut latch, addr, _dir) = run_latch(b.addr).await;
    let body = slow_stream_started(addr, 3000).await;
    let head_at = Instant::now();
    latch.terminate().await;
    latch
        .stderr
        .wait_for("the `stopping` log line", |l| l.contains("stopping"))
        .await;

    // Poll (bounded) until a connection attempt is refused.
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut accepted = 0;
    loop {
        match within("connect", tokio::net::TcpStream::connect(addr)).await {
            Err(_) => break,
            Ok(conn) => {
                drop(conn);
                accepted += 1;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{accepted} new connections were still accepted 1 s into the drain \
             (a 3 s request was in flight, started {:?} ago)",
            head_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        head_at.elapsed() < Duration::from_millis(2500),
        "refused only after the request would have ended"
    );

    // The request in flight still completes, and latch exits 0.
    let rest = within("the rest of the slow body", body.collect())
        .await
        .expect("slow body completes")
        .to_bytes();
    assert_eq!(&rest[..], b"last\n");
    let status = latch.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", latch.stderr.text());
}

// === access log ===

/// A JSON line's string field.
fn str_field<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

fn is_hex_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `access_log = "json"`: every line on stderr is one JSON object. A request
/// line has its own RFC 3339 UTC timestamp, the request id the backend got,
/// how the server was chosen, the attempts, times and the user agent; an
/// upgrade has a line for its 101 and one for its tunnel, with one id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_json_lines_for_requests_and_tunnels() {
    let backend = spawn_backend("b1").await;
    let (mut latch, addr, _dir) = run_latch_with(backend.addr, "access_log = \"json\"").await;
    let agent = "test-agent/1.0 (\"quoted\" \\ back)";
    let (status, _, body) = http_get_with(
        addr,
        "localhost",
        "/name?x=1",
        &[("user-agent", agent), ("x-request-id", "forged-by-client")],
    )
    .await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"b1"[..]));
    let sent_id = backend.last_headers()["x-request-id"]
        .to_str()
        .expect("text")
        .to_string();
    assert!(is_hex_id(&sent_id), "a client's id is replaced: {sent_id}");
    let line = latch
        .stderr
        .wait_for("the request's access line", |l| {
            l.contains("\"target\":\"/name?x=1\"")
        })
        .await;
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    let ts = str_field(&v, "timestamp");
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("timestamp {ts}: {e}"));
    assert!(ts.ends_with('Z'), "UTC: {ts}");
    assert_eq!(str_field(&v, "request_id"), sent_id);
    assert!(str_field(&v, "client").starts_with("127.0.0.1:"), "{v}");
    assert_eq!(str_field(&v, "method"), "GET");
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes"], 2);
    assert_eq!(str_field(&v, "upstream"), "app");
    assert_eq!(str_field(&v, "server"), backend.addr.to_string());
    assert_eq!(str_field(&v, "chosen"), "new");
    assert_eq!(v["attempts"], 1);
    assert_eq!(str_field(&v, "user_agent"), agent);
    let (head, total) = (v["response_secs"].as_f64(), v["secs"].as_f64());
    assert!(
        matches!((head, total), (Some(h), Some(t)) if 0.0 <= h && h <= t),
        "{v}"
    );

    let (mut ws, _) = ws_connect(addr, "/ws").await;
    ws.send(Message::text("hi")).await.expect("send");
    assert!(matches!(
        next_msg(&mut ws).await,
        Some(Ok(Message::Text(_)))
    ));
    ws.close(None).await.expect("close");
    drop(ws);
    let upgrade = latch
        .stderr
        .wait_for("the upgrade's access line", |l| {
            l.contains("\"status\":101")
        })
        .await;
    let upgrade: serde_json::Value = serde_json::from_str(&upgrade).expect("JSON");
    let line = latch
        .stderr
        .wait_for("the tunnel's access line", |l| {
            l.contains("\"tunnel\":true")
        })
        .await;
    let tunnel: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    assert!(tunnel["to_backend"].is_u64() && tunnel["to_client"].is_u64());
    assert_eq!(
        tunnel["request_id"], upgrade["request_id"],
        "{tunnel} {upgrade}"
    );
    assert!(is_hex_id(str_field(&tunnel, "request_id")));
    latch.terminate().await;
    let status = latch.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0));
    // Every line, not only the access lines, is one JSON object.
    let all = latch.stderr.wait_end().await;
    for l in all.lines() {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"));
        assert!(v.is_object() && v["timestamp"].is_string(), "{l}");
    }
    assert!(all.contains("\"level\":\"INFO\""), "{all}");
}

/// With stderr a file (no terminal) latch writes no colour codes, whatever
/// `NO_COLOR` says; text access lines end with the request id and the user
/// agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_colours_when_stderr_is_a_file() {
    let backend = spawn_backend("b1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("latch.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\naccess_log = \"text\"\n\n[[listener]]\nbind = \"127.0.0.1:{port}\"\n\
             upstream = \"app\"\n\n[upstream.app]\n{}\n",
            servers(&[backend.addr])
        ),
    )
    .expect("write config");
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let config = config.to_str().expect("UTF-8 path").to_string();
    let mut latch = Child::spawn_to_file(&["run", "--config", &config], log);
    let read = || std::fs::read(&log_path).expect("read the log");
    wait_until("latch listening", TIMEOUT, || {
        String::from_utf8_lossy(&read()).contains("listening")
    })
    .await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (status, _, _) = http_get_with(addr, "localhost", "/name", &[("user-agent", "ua/1")]).await;
    assert_eq!(status, StatusCode::OK);
    wait_until("the access line", TIMEOUT, || {
        String::from_utf8_lossy(&read()).contains("\"GET /name\"")
    })
    .await;
    latch.terminate().await;
    let status = latch.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0));
    let bytes = read();
    let text = String::from_utf8_lossy(&bytes);
    assert!(!bytes.contains(&0x1b), "ESC in a file:\n{text}");
    let line = text
        .lines()
        .find(|l| l.contains("\"GET /name\""))
        .expect("access line");
    let id = backend.last_headers()["x-request-id"]
        .to_str()
        .expect("text")
        .to_string();
    assert!(
        line.ends_with(&format!(" {id} \"ua/1\"")),
        "text line ends with the id and the agent: {line}"
    );
}

// === latch with nothing to do ===

#[tokio::test]
async fn no_arguments_exits_2_with_a_hint() {
    let mut latch = Child::spawn(&[]);
    let status = latch.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(2));
    let err = latch.stderr.wait_end().await;
    assert!(err.contains("nothing to do"), "stderr: {err}");
    assert!(err.contains("latch demo"), "stderr: {err}");
    assert!(err.contains("--config"), "stderr: {err}");
    assert!(err.contains("--help"), "stderr: {err}");
    assert_eq!(latch.stdout.wait_end().await, "");
}
