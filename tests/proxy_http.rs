//! End-to-end HTTP/1.1 behaviour of latch as a reverse proxy, over real
//! sockets on 127.0.0.1: requests reach the right backend with the right
//! headers (X-Forwarded-*, hop-by-hop headers stripped), connections are kept
//! alive on both sides, TLS and SNI certificates are served, bodies stream in
//! both directions without buffering (long-poll, 100 MiB each way), routes and
//! weighted round robin pick the expected backends, backend failures map to
//! 502/504, a graceful shutdown lets in-flight requests finish, and the
//! per-backend `active` counter always returns to zero. Bad clients are in
//! `bad_clients.rs`.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::http_client::handshake_on;
use support::*;

// === Helpers ===

const MIB: u64 = 1024 * 1024;

/// Period of the support pattern (`pattern_byte(i) = i % 251`).
const PERIOD: u64 = 251;

/// `GET path` with `Host: host`.
fn get_req(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", host)
        .body(Full::default())
        .expect("valid GET request")
}

/// The backends of `upstream` in the configuration now in force.
fn backends(lb: &Lb, upstream: &str) -> Vec<Arc<latch::backend::Backend>> {
    lb.handle.snapshot().upstreams[upstream].backends.clone()
}

/// Polls `cond` every 10 ms for at most ~5 s. Only for counters that have no
/// event to await (e.g. a backend's `active()` after a client went away).
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(cond(), "still false after ~5 s: {what}");
}

/// Sends `req` on a fresh connection and waits up to [`LONG_TIMEOUT`] for the
/// response head (an upload is answered only once its whole body is in).
async fn send_long<B>(addr: SocketAddr, req: Request<B>) -> Response<Incoming>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let stream = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect to latch");
    let (mut sender, _conn) = handshake_on(stream).await.expect("http1 handshake");
    within_for(LONG_TIMEOUT, "response head", sender.send_request(req))
        .await
        .expect("request through latch")
}

/// Next data frame of `body` (trailers skipped); `None` at the end.
async fn next_data(body: &mut Incoming) -> Option<Bytes> {
    // A body has finitely many frames; each await is bounded by the caller.
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("body error").into_data() {
            return Some(data);
        }
    }
    None
}

/// Reads `body` to its end, bounded by [`TIMEOUT`].
async fn rest_of(body: &mut Incoming) -> Vec<u8> {
    within("rest of the body", async {
        let mut out = Vec::new();
        while let Some(d) = next_data(body).await {
            out.extend_from_slice(&d);
        }
        out
    })
    .await
}

/// Checks streamed bytes against the pattern as they come, without keeping
/// them: each piece is compared with a precomputed window of the pattern.
struct PatternCheck {
    table: Vec<u8>,
    pos: u64,
}

impl PatternCheck {
    fn new() -> Self {
        assert_eq!(pattern_byte(PERIOD), pattern_byte(0), "pattern period");
        assert_eq!(pattern_byte(PERIOD + 7), pattern_byte(7), "pattern period");
        PatternCheck {
            table: pattern_bytes(0, (PERIOD * 1024) as usize),
            pos: 0,
        }
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let start = (self.pos % PERIOD) as usize;
            let n = data.len().min(self.table.len() - start);
            let want = &self.table[start..start + n];
            if data[..n] != *want {
                let i = data.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
                let at = self.pos + i as u64;
                panic!(
                    "byte {at} is {} but the pattern says {}",
                    data[i],
                    pattern_byte(at)
                );
            }
            self.pos += n as u64;
            data = &data[n..];
        }
    }
}

/// A TCP relay in front of `target` that counts the connections it accepts:
/// put it between latch and a backend to see how many backend connections
/// latch opens.
async fn counting_relay(target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let addr = faulty::spawn_raw("counting relay", move |mut client| {
        count.fetch_add(1, Ordering::SeqCst);
        async move {
            if let Ok(mut server) = TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        }
    })
    .await;
    (addr, accepted)
}

// === Forwarding and headers ===

#[tokio::test]
async fn request_reaches_backend_with_forwarding_headers() {
    let app = spawn_backend("app1").await;
    let toml = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\
         trusted_proxies = [\"127.0.0.1\"]\n\n\
         [upstream.app]\n{}\n",
        servers(&[app.addr])
    );
    let lb = spawn_lb(&toml).await;
    let (plain, trusting) = (lb.addrs[0], lb.addrs[1]);

    let (status, headers, body) = http_get(plain, "app.test", "/name").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "app1");
    assert_eq!(headers["x-backend"], "app1");
    assert_eq!(app.last_uri().as_deref(), Some("/name"));

    // Host passes unchanged; X-Forwarded-* describe the client; hop-by-hop
    // headers (standard ones and those named by Connection) stay behind.
    let (status, _, body) = http_get_with(
        plain,
        "app.test",
        "/echo?q=1&r=2",
        &[
            ("connection", "keep-alive, x-drop"),
            ("x-drop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-connection", "x"),
            ("x-keep", "1"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let echo = parse_echo(&body);
    assert_eq!(echo.method, "GET");
    assert_eq!(echo.target, "/echo?q=1&r=2");
    assert_eq!(echo.header_all("host"), vec!["app.test"]);
    assert_eq!(echo.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(echo.header_all("x-forwarded-proto"), vec!["http"]);
    assert_eq!(echo.header_all("x-forwarded-host"), vec!["app.test"]);
    assert_eq!(echo.header_all("x-keep"), vec!["1"]);
    for hop in [
        "connection",
        "x-drop",
        "keep-alive",
        "te",
        "proxy-connection",
    ] {
        assert!(
            echo.header(hop).is_none(),
            "hop-by-hop header `{hop}` reached the backend: {:?}",
            echo.headers
        );
    }

    // A request body is forwarded as sent.
    let req = Request::post("/echo")
        .header("host", "app.test")
        .body(Full::new(Bytes::from_static(b"hello\nbackend")))
        .expect("valid POST");
    let (status, _, body) = http_request(plain, req).await;
    assert_eq!(status, StatusCode::OK);
    let echo = parse_echo(&body);
    assert_eq!(echo.method, "POST");
    assert_eq!(echo.body, "hello\nbackend");

    // An untrusted client cannot forge X-Forwarded-*.
    let forged = [
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.test"),
    ];
    let (_, _, body) = http_get_with(plain, "app.test", "/echo", &forged).await;
    let echo = parse_echo(&body);
    assert_eq!(echo.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(echo.header_all("x-forwarded-proto"), vec!["http"]);
    assert_eq!(echo.header_all("x-forwarded-host"), vec!["app.test"]);

    // A trusted peer's X-Forwarded-For is extended with its address.
    let (_, _, body) = http_get_with(
        trusting,
        "app.test",
        "/echo",
        &[("x-forwarded-for", "6.6.6.6")],
    )
    .await;
    let echo = parse_echo(&body);
    assert_eq!(
        echo.header_all("x-forwarded-for"),
        vec!["6.6.6.6, 127.0.0.1"]
    );
    let (_, _, body) = http_get_with(
        trusting,
        "app.test",
        "/echo",
        &[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ],
    )
    .await;
    let echo = parse_echo(&body);
    assert_eq!(
        echo.header_all("x-forwarded-for"),
        vec!["1.1.1.1, 2.2.2.2, 127.0.0.1"]
    );
    let (_, _, body) = http_get(trusting, "app.test", "/echo").await;
    let echo = parse_echo(&body);
    assert_eq!(echo.header_all("x-forwarded-for"), vec!["127.0.0.1"]);

    assert_eq!(app.hits(), 7);
}

// === Keep-alive ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_on_both_sides() {
    let app = spawn_backend("ka").await;
    let (relay, accepted) = counting_relay(app.addr).await;
    let lb = spawn_lb(&simple_config(&[relay], "")).await;

    let mut conn = HttpConn::connect(lb.addr()).await;
    for i in 0..20 {
        let req = Request::post("/echo")
            .header("host", "app.test")
            .body(Full::new(Bytes::from(format!("request {i}"))))
            .expect("valid POST");
        let (status, headers, body) = conn.request(req).await;
        assert_eq!(status, StatusCode::OK, "request {i}");
        assert_eq!(headers["x-backend"], "ka");
        assert_eq!(parse_echo(&body).body, format!("request {i}"));
        assert!(!conn.is_closed(), "latch closed the client connection");
    }
    assert_eq!(app.hits(), 20);
    assert_eq!(backends(&lb, "app")[0].total(), 20);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "20 sequential requests should share one pooled backend connection"
    );
}

// === TLS ===

#[tokio::test]
async fn tls_listener_terminates_https() {
    let app = spawn_backend("tls-app").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, _, cert_pem) = write_cert_files(dir.path(), "srv", &["app.test"]);
    let toml = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\
         tls = {{ cert = \"srv.crt\", key = \"srv.key\" }}\n\n\
         [upstream.app]\n{}\n",
        servers(&[app.addr])
    );
    let lb = spawn_lb_in(&toml, Some(dir.path())).await;
    let connector = tls_connector(&[&cert_pem]);

    let (status, headers, body) = https_get(lb.addr(), "app.test", &connector, "/name").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "tls-app");
    assert_eq!(headers["x-backend"], "tls-app");

    let (status, _, body) = https_get(lb.addr(), "app.test", &connector, "/echo").await;
    assert_eq!(status, StatusCode::OK);
    let echo = parse_echo(&body);
    assert_eq!(echo.header_all("host"), vec!["app.test"]);
    assert_eq!(echo.header_all("x-forwarded-proto"), vec!["https"]);
    assert_eq!(echo.header_all("x-forwarded-host"), vec!["app.test"]);
    assert_eq!(echo.header_all("x-forwarded-for"), vec!["127.0.0.1"]);

    let stream = tls_connect(lb.addr(), "app.test", &connector)
        .await
        .expect("TLS handshake");
    let (_, session) = stream.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        session.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    // The client really verifies: one that trusts another certificate fails.
    let (other_pem, _) = self_signed(&["app.test"]);
    let stranger = tls_connector(&[&other_pem]);
    assert!(
        tls_connect(lb.addr(), "app.test", &stranger).await.is_err(),
        "a client trusting another certificate completed the handshake"
    );
    assert_eq!(app.hits(), 2);
}

#[tokio::test]
async fn sni_picks_certificate_by_name() {
    let app = spawn_backend("sni").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, _, default_pem) = write_cert_files(dir.path(), "default", &["other.test", "b.test"]);
    let (_, _, a_pem) = write_cert_files(dir.path(), "a", &["a.test"]);
    let (_, _, b_pem) = write_cert_files(dir.path(), "b", &["*.b.test"]);
    let toml = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\
         [listener.tls]\ncert = \"default.crt\"\nkey = \"default.key\"\n\
         [[listener.tls.sni]]\nnames = [\"a.test\"]\ncert = \"a.crt\"\nkey = \"a.key\"\n\
         [[listener.tls.sni]]\nnames = [\"*.b.test\"]\ncert = \"b.crt\"\nkey = \"b.key\"\n\n\
         [upstream.app]\n{}\n",
        servers(&[app.addr])
    );
    let lb = spawn_lb_in(&toml, Some(dir.path())).await;
    let connector = tls_connector(&[&default_pem, &a_pem, &b_pem]);
    let (default_der, a_der, b_der) = (cert_der(&default_pem), cert_der(&a_pem), cert_der(&b_pem));
    assert!(default_der != a_der && a_der != b_der && default_der != b_der);

    let cases = [
        ("a.test", &a_der, "exact name"),
        ("x.b.test", &b_der, "wildcard"),
        ("other.test", &default_der, "unknown name → default"),
        ("b.test", &default_der, "wildcard parent itself → default"),
    ];
    for (name, want, why) in cases {
        let got = tls_peer_cert(lb.addr(), name, &connector).await;
        assert!(got == **want, "SNI {name} ({why}): wrong certificate");
    }

    // And requests flow over each of them.
    for name in ["a.test", "x.b.test", "other.test"] {
        let (status, _, body) = https_get(lb.addr(), name, &connector, "/name").await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, Bytes::from("sni")),
            "{name}"
        );
    }
}

// === Streaming ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_streams_without_buffering() {
    let app = spawn_backend("stream").await;
    let lb = spawn_lb(&simple_config(&[app.addr], "")).await;
    let early = Duration::from_millis(1500);

    let start = Instant::now();
    let resp = within_for(
        early,
        "response head of /slow-stream",
        send_request(lb.addr(), get_req("app.test", "/slow-stream?ms=3000")),
    )
    .await
    .expect("request through latch");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-backend"], "stream");
    let mut body = resp.into_body();

    let first = within_for(
        early.saturating_sub(start.elapsed()),
        "first chunk of /slow-stream (buffered by the proxy?)",
        async {
            let mut got = Vec::new();
            while got.len() < b"first\n".len() {
                match next_data(&mut body).await {
                    Some(d) => got.extend_from_slice(&d),
                    None => break,
                }
            }
            got
        },
    )
    .await;
    let first_at = start.elapsed();
    assert_eq!(first, b"first\n", "first chunk");
    assert!(first_at < early, "first chunk after {first_at:?}");

    let rest = rest_of(&mut body).await;
    let last_at = start.elapsed();
    assert_eq!(rest, b"last\n", "rest of the body");
    assert!(
        last_at >= Duration::from_millis(3000),
        "body ended after {last_at:?}, before the backend's 3 s pause"
    );
    assert!(
        last_at - first_at >= Duration::from_millis(1500),
        "first chunk at {first_at:?}, end at {last_at:?}: not streamed"
    );
}

// === Large bodies ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_download_streams_through() {
    let app = spawn_backend("big").await;
    let lb = spawn_lb(&simple_config(&[app.addr], "")).await;

    for (n, chunked) in [(100 * MIB, false), (20 * MIB, true)] {
        let path = if chunked {
            format!("/big?bytes={n}&chunked=1")
        } else {
            format!("/big?bytes={n}")
        };
        let resp = send_request(lb.addr(), get_req("app.test", &path))
            .await
            .expect("download through latch");
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        if chunked {
            assert!(resp.headers().get("content-length").is_none(), "{path}");
        } else {
            assert_eq!(resp.headers()["content-length"], n.to_string(), "{path}");
        }
        let mut body = resp.into_body();
        let mut check = PatternCheck::new();
        within_for(LONG_TIMEOUT, &format!("download {path}"), async {
            while let Some(d) = next_data(&mut body).await {
                check.feed(&d);
            }
        })
        .await;
        assert_eq!(check.pos, n, "{path}: bytes received");
    }
    assert_all_idle(&lb, "after downloads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upload_streams_through() {
    let app = spawn_backend("up").await;
    let lb = spawn_lb(&simple_config(&[app.addr], "")).await;

    for (n, chunked) in [(100 * MIB, false), (20 * MIB, true)] {
        let expected = tokio::task::spawn_blocking(move || pattern_checksum(n));
        let body = if chunked {
            PatternBody::chunked(n)
        } else {
            PatternBody::new(n)
        };
        let req = Request::post("/upload")
            .header("host", "app.test")
            .body(body)
            .expect("valid POST");
        let resp = send_long(lb.addr(), req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let answer = within_for(LONG_TIMEOUT, "upload answer", read_body(resp.into_body()))
            .await
            .expect("upload answer body");
        let expected = expected.await.expect("checksum task");
        assert_eq!(
            String::from_utf8_lossy(&answer),
            format!("{n} {expected}"),
            "upload of {n} bytes (chunked: {chunked})"
        );
        let seen = app.last_headers();
        if chunked {
            assert_eq!(seen["transfer-encoding"], "chunked");
            assert!(seen.get("content-length").is_none());
        } else {
            assert_eq!(seen["content-length"], n.to_string());
        }
    }
    assert_eq!(app.hits(), 2);
    assert_all_idle(&lb, "after uploads");
}

// === Routing ===

#[tokio::test]
async fn routes_by_host_and_path() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let c = spawn_backend("c").await;
    let toml = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"c\"\n\
         [[listener.route]]\nhost = \"a.test\"\nupstream = \"a\"\n\
         [[listener.route]]\npath_prefix = \"/api\"\nupstream = \"b\"\n\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n\
         [[listener.route]]\nhost = \"a.test\"\nupstream = \"a\"\n\
         [[listener.route]]\nhost = \"*.w.test\"\nupstream = \"b\"\n\n\
         [upstream.a]\n{}\n[upstream.b]\n{}\n[upstream.c]\n{}\n",
        servers(&[a.addr]),
        servers(&[b.addr]),
        servers(&[c.addr])
    );
    let lb = spawn_lb(&toml).await;
    let (main, only_routes) = (lb.addrs[0], lb.addrs[1]);

    // (listener, host, path, backend that must answer)
    let cases = [
        (main, "a.test", "/name", "a"),
        (main, "A.Test", "/name", "a"),
        (main, "a.test:8080", "/name", "a"),
        (main, "a.test", "/api/name", "a"), // first matching route wins
        (main, "other.test", "/api/v1/items?x=1", "b"),
        (main, "other.test", "/api", "b"),
        (main, "other.test", "/name", "c"),
        (main, "b.test", "/", "c"),
        (only_routes, "a.test", "/name", "a"),
        (only_routes, "x.w.test", "/name", "b"),
    ];
    for (addr, host, path, want) in cases {
        let (_, headers, _) = http_get(addr, host, path).await;
        assert_eq!(
            headers.get("x-backend").and_then(|v| v.to_str().ok()),
            Some(want),
            "{host}{path} on {addr}"
        );
    }
    assert_eq!(b.last_uri().as_deref(), Some("/name"));
    let (status, _, body) = http_get(main, "other.test", "/api/v1/items?x=1").await;
    assert_eq!(status, StatusCode::NOT_FOUND); // the backend's own 404
    assert_eq!(body, "not found: /api/v1/items");
    assert_eq!(b.last_uri().as_deref(), Some("/api/v1/items?x=1"));

    // A listener with only routes answers 404 itself when none matches.
    let hits = (a.hits(), b.hits(), c.hits());
    for host in ["other.test", "w.test", "a.test.evil"] {
        let (status, headers, body) = http_get(only_routes, host, "/name").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "host {host}");
        assert!(headers.get("x-backend").is_none(), "host {host}");
        assert_eq!(body, "404 Not Found\n", "host {host}");
    }
    assert_eq!(
        (a.hits(), b.hits(), c.hits()),
        hits,
        "a 404 reached a backend"
    );
}

// === Backend failures ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_failures_map_to_502_and_504() {
    let good = spawn_backend("good").await;
    let slow = spawn_backend("slow").await;
    let refusing = spawn_refusing().await;
    let garbage = spawn_garbage().await;
    let blackhole = spawn_blackhole().await;
    let toml = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"good\"\n\
         [[listener.route]]\nhost = \"refused.test\"\nupstream = \"refused\"\n\
         [[listener.route]]\nhost = \"garbage.test\"\nupstream = \"garbage\"\n\
         [[listener.route]]\nhost = \"blackhole.test\"\nupstream = \"blackhole\"\n\
         [[listener.route]]\nhost = \"slow.test\"\nupstream = \"slow\"\n\n\
         [upstream.good]\n{}\n\
         [upstream.refused]\n{}\n\
         [upstream.garbage]\n{}\n\
         [upstream.blackhole]\n{}\n[upstream.blackhole.timeouts]\nread = \"500ms\"\n\
         [upstream.slow]\n{}\n[upstream.slow.timeouts]\nread = \"500ms\"\n",
        servers(&[good.addr]),
        servers(&[refusing]),
        servers(&[garbage]),
        servers(&[blackhole]),
        servers(&[slow.addr]),
    );
    let lb = spawn_lb(&toml).await;
    let addr = lb.addr();

    let still_good = |when: &'static str| async move {
        let (status, _, body) = http_get(addr, "good.test", "/name").await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, Bytes::from("good")),
            "{when}"
        );
    };

    let (status, _, body) = http_get(addr, "refused.test", "/name").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "refused connection");
    assert_eq!(body, "502 Bad Gateway\n");
    still_good("after a refused connection").await;

    let (status, _, body) = http_get(addr, "garbage.test", "/name").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "garbage answer");
    assert_eq!(body, "502 Bad Gateway\n");
    still_good("after a garbage answer").await;

    for (host, path) in [("blackhole.test", "/name"), ("slow.test", "/hang")] {
        let start = Instant::now();
        let (status, _, body) = http_get(addr, host, path).await;
        let took = start.elapsed();
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{host}{path}");
        assert_eq!(body, "504 Gateway Timeout\n");
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_secs(5),
            "{host}{path}: 504 after {took:?}, read timeout is 500 ms"
        );
        still_good("after a read timeout").await;
    }
    // The upstream that timed out still serves a quick request.
    let (status, _, body) = http_get(addr, "slow.test", "/name").await;
    assert_eq!((status, body), (StatusCode::OK, Bytes::from("slow")));
    assert_eq!(slow.hits(), 2);
    assert_eq!(good.hits(), 4);
    assert_all_idle(&lb, "after backend failures");
}

// === Load balancing ===

#[tokio::test]
async fn weighted_round_robin_is_exact() {
    let b1 = spawn_backend("w1").await;
    let b2 = spawn_backend("w2").await;
    let b3 = spawn_backend("w3").await;
    let toml = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\n\
         [upstream.app]\nbalance = \"round_robin\"\n\
         servers = [{{ addr = \"{}\", weight = 1 }}, {{ addr = \"{}\", weight = 2 }}, {{ addr = \"{}\", weight = 3 }}]\n",
        b1.addr, b2.addr, b3.addr
    );
    let lb = spawn_lb(&toml).await;

    let mut conn = HttpConn::connect(lb.addr()).await;
    let mut seq = Vec::new();
    for _ in 0..300 {
        let (status, _, body) = conn.get("app.test", "/name").await;
        assert_eq!(status, StatusCode::OK);
        seq.push(String::from_utf8_lossy(&body).into_owned());
    }
    let count = |n: &str| seq.iter().filter(|s| *s == n).count();
    assert_eq!((count("w1"), count("w2"), count("w3")), (50, 100, 150));
    // Smooth WRR (nginx) with weights 1/2/3 repeats `w3 w2 w1 w3 w2 w3`.
    assert_eq!(seq[..6], ["w3", "w2", "w1", "w3", "w2", "w3"]);
    assert_eq!((b1.hits(), b2.hits(), b3.hits()), (50, 100, 150));
    let totals: Vec<u64> = backends(&lb, "app").iter().map(|b| b.total()).collect();
    assert_eq!(totals, [50, 100, 150]);
}

// === Graceful shutdown ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    let app = spawn_backend("drain").await;
    let lb = spawn_lb(&simple_config(&[app.addr], "")).await;

    let mut idle = HttpConn::connect(lb.addr()).await;
    let (status, _, _) = idle.get("app.test", "/name").await;
    assert_eq!(status, StatusCode::OK);

    let resp = send_request(lb.addr(), get_req("app.test", "/slow-stream?ms=1000"))
        .await
        .expect("slow request through latch");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = within("first chunk", next_data(&mut body)).await;
    assert_eq!(first.as_deref(), Some(&b"first\n"[..]));

    let started = Instant::now();
    let shutdown = async {
        lb.handle.shutdown_within(Duration::from_secs(10)).await;
        started.elapsed()
    };
    let (took, rest) = within("shutdown with a request in flight", async {
        tokio::join!(shutdown, rest_of(&mut body))
    })
    .await;
    assert_eq!(rest, b"last\n", "in-flight body after shutdown began");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "shutdown took {took:?}: it should wait for the in-flight request, not the grace"
    );

    idle.wait_closed().await;
    assert!(idle.is_closed(), "idle keep-alive connection left open");
    let refused = within("connect after shutdown", TcpStream::connect(lb.addr())).await;
    match refused {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
        Ok(_) => panic!("latch accepted a new connection after shutdown"),
    }
}

// === Counters ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_counters_return_to_zero() {
    let good = spawn_backend("good").await;
    let refusing = spawn_refusing().await;
    let blackhole = spawn_blackhole().await;
    let toml = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"good\"\n\
         [[listener.route]]\nhost = \"refused.test\"\nupstream = \"refused\"\n\
         [[listener.route]]\nhost = \"blackhole.test\"\nupstream = \"blackhole\"\n\n\
         [upstream.good]\n{}\n\
         [upstream.refused]\n{}\n\
         [upstream.blackhole]\n{}\n[upstream.blackhole.timeouts]\nread = \"300ms\"\n",
        servers(&[good.addr]),
        servers(&[refusing]),
        servers(&[blackhole]),
    );
    let lb = spawn_lb(&toml).await;
    let addr = lb.addr();
    let counter = backends(&lb, "good")[0].clone();

    // Completed requests of every shape: counted as done once read.
    let (status, _, _) = http_get(addr, "app.test", "/name").await;
    assert_eq!(status, StatusCode::OK);
    assert_all_idle(&lb, "after GET /name");
    let req = Request::post("/echo")
        .header("host", "app.test")
        .body(Full::new(Bytes::from_static(b"body")))
        .expect("valid POST");
    let (status, _, _) = http_request(addr, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_all_idle(&lb, "after POST /echo");
    let (status, _, body) = http_get(addr, "app.test", "/slow-stream?ms=50").await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, Bytes::from("first\nlast\n"))
    );
    assert_all_idle(&lb, "after /slow-stream");
    let (status, _, body) = http_get(addr, "app.test", "/big?bytes=1048576&chunked=1").await;
    assert_eq!((status, body.len()), (StatusCode::OK, 1 << 20));
    assert_all_idle(&lb, "after /big");
    let req = Request::post("/upload")
        .header("host", "app.test")
        .body(Full::new(Bytes::from(pattern_bytes(0, 100_000))))
        .expect("valid POST");
    let (status, _, body) = http_request(addr, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, format!("100000 {}", pattern_checksum(100_000)));
    assert_all_idle(&lb, "after /upload");

    // Failed requests.
    let (status, _, _) = http_get(addr, "refused.test", "/name").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let (status, _, _) = http_get(addr, "blackhole.test", "/name").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_all_idle(&lb, "after 502 and 504");

    // A client that goes away in the middle of a 100 MiB download.
    let mut s = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    s.write_all(b"GET /big?bytes=104857600 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .expect("write request");
    let got = within("first 256 KiB of /big", async {
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        while got < 256 * 1024 {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        got
    })
    .await;
    assert!(got >= 256 * 1024, "download ended early after {got} bytes");
    assert_eq!(counter.active(), 1, "download in flight");
    drop(s);
    wait_for("active back to 0 after a client left mid-download", || {
        counter.active() == 0
    })
    .await;

    // A client that goes away while the backend has not answered yet.
    let hits = good.hits();
    let mut s = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    s.write_all(b"GET /hang HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .expect("write request");
    wait_for("/hang reaching the backend", || good.hits() == hits + 1).await;
    assert_eq!(counter.active(), 1, "/hang in flight");
    drop(s);
    wait_for("active back to 0 after a client left during /hang", || {
        counter.active() == 0
    })
    .await;

    assert_eq!(counter.total(), 7);
    assert_all_idle(&lb, "at the end");
}
