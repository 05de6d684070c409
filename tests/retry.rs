//! Retries (`[upstream.NAME.retry]`, nginx `proxy_next_upstream`) through
//! real sockets: a server dying under a stream of requests, every retry
//! condition with and without it listed, POST and the replayable body limit,
//! `tries` and the time budget, WebSocket handshakes, and re-pinning of a
//! sticky client whose server died.
//!
//! Smooth round robin over equal weights picks the servers of a fresh latch
//! in config order, so "the first request goes to server 0" is deterministic;
//! each case checks where attempts went through latch's own counters
//! (`total()` counts every attempt, refused ones included). Passive checks are
//! switched off (`max_fails = 0`) wherever they would hide the retry logic.
//!
//! Everything runs on `127.0.0.1:0`; waits are bounded, and counters are
//! polled in bounded loops, never slept on.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::Full;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use support::*;

// === helpers ===

/// latch's backends of upstream `app`, in config order.
fn lb_backends(lb: &Lb) -> Vec<Arc<latch::backend::Backend>> {
    lb.handle.snapshot().upstreams["app"].backends.clone()
}

/// Attempts latch made on the server at `addr`.
fn attempts(lb: &Lb, addr: SocketAddr) -> u64 {
    lb_backends(lb)
        .iter()
        .find(|b| b.addr == addr)
        .unwrap_or_else(|| panic!("latch has no backend {addr}"))
        .total()
}

/// One listener → `app` over `addrs` with passive checks off, `extra`
/// upstream lines, and a retry table with `retry` lines (none: defaults).
fn config(addrs: &[SocketAddr], extra: &str, retry: &str) -> String {
    let retry = if retry.is_empty() {
        String::new()
    } else {
        format!("[upstream.app.retry]\n{retry}\n")
    };
    simple_config(addrs, &format!("max_fails = 0\n{extra}\n{retry}"))
}

fn backend_of(headers: &HeaderMap) -> &str {
    headers
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// `GET /name` on a fresh connection.
async fn get(lb: &Lb) -> Got {
    within("GET /name", http_get(lb.addr(), "localhost", "/name")).await
}

/// `n` sequential `GET /name`: their statuses.
async fn statuses(lb: &Lb, n: usize) -> Vec<StatusCode> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get(lb).await.0);
    }
    out
}

fn count(got: &[StatusCode], status: StatusCode) -> usize {
    got.iter().filter(|s| **s == status).count()
}

/// `POST /upload` of `body` on a fresh connection: status, headers, body.
async fn post<B>(lb: &Lb, body: B) -> Got
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let req = Request::post("/upload")
        .header("host", "localhost")
        .body(body)
        .expect("valid POST");
    let resp = within("POST /upload", send_request(lb.addr(), req))
        .await
        .unwrap_or_else(|e| panic!("POST /upload: {e}"));
    let (parts, body) = resp.into_parts();
    let body = read_body(body).await.expect("POST /upload: body");
    (parts.status, parts.headers, body)
}

/// What `/upload` (and a status server) answers for `len` pattern bytes.
fn upload_answer(len: u64) -> String {
    format!("{len} {}", pattern_checksum(len))
}

// === a server dying under load ===

#[tokio::test]
async fn a_dying_server_costs_no_request() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let c = spawn_backend("c").await;
    let lb = spawn_lb(&simple_config(&[a.addr, b.addr, c.addr], "")).await;
    let mut conn = HttpConn::connect(lb.addr()).await;
    let dead = b.addr;
    let mut b = Some(b);
    let mut hits_at_kill = 0;
    for i in 0..200 {
        if i == 50 {
            let b = b.take().expect("killed once");
            hits_at_kill = b.hits();
            b.stop().await;
        }
        let (status, headers, body) = conn.get("localhost", "/name").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "request {i} failed: {:?}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(body, backend_of(&headers).as_bytes());
        if i >= 50 {
            assert_ne!(
                backend_of(&headers),
                "b",
                "request {i} answered by the dead server"
            );
        }
    }
    assert!(
        (16..=18).contains(&hits_at_kill),
        "b had {hits_at_kill} of 50"
    );
    assert!(
        attempts(&lb, dead) > hits_at_kill as u64,
        "the dead server was never attempted, so nothing was retried"
    );
    assert_eq!(a.hits() + c.hits() + hits_at_kill, 200);
}

// === each condition, listed or not ===

#[tokio::test]
async fn error_is_retried_by_default_only() {
    for (retry, retried) in [("", true), ("on = [\"timeout\"]", false)] {
        let good = spawn_backend("good").await;
        let refusing = spawn_refusing().await;
        let lb = spawn_lb(&config(&[refusing, good.addr], "", retry)).await;
        let got = statuses(&lb, 10).await;
        let tried = attempts(&lb, refusing);
        assert!(tried >= 4, "refusing server attempted {tried} times");
        if retried {
            assert_eq!(count(&got, StatusCode::OK), 10, "{got:?}");
        } else {
            // Every attempt on the refusing server is the client's 502.
            assert_eq!(
                count(&got, StatusCode::BAD_GATEWAY) as u64,
                tried,
                "{got:?}"
            );
            assert_eq!(good.hits() as u64, 10 - tried);
        }
    }
}

#[tokio::test]
async fn timeout_is_retried_by_default_only() {
    let read = "[upstream.app.timeouts]\nread = \"300ms\"";
    for (retry, retried) in [("", true), ("on = [\"error\"]", false)] {
        let good = spawn_backend("good").await;
        let hole = spawn_blackhole().await;
        let lb = spawn_lb(&config(&[hole, good.addr], read, retry)).await;
        // Fresh latch: the first request goes to the blackhole.
        let (status, headers, _) = get(&lb).await;
        assert_eq!(attempts(&lb, hole), 1);
        if retried {
            assert_eq!(status, StatusCode::OK);
            assert_eq!(backend_of(&headers), "good");
        } else {
            assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
            assert_eq!(good.hits(), 0, "retried although only `error` is listed");
        }
    }
}

#[tokio::test]
async fn invalid_header_is_retried_only_when_listed() {
    for (retry, retried) in [("", false), ("on = [\"invalid_header\"]", true)] {
        let good = spawn_backend("good").await;
        let garbage = spawn_garbage().await;
        let lb = spawn_lb(&config(&[garbage, good.addr], "", retry)).await;
        let (status, headers, _) = get(&lb).await;
        assert_eq!(attempts(&lb, garbage), 1);
        if retried {
            assert_eq!(status, StatusCode::OK, "{retry}");
            assert_eq!(backend_of(&headers), "good");
        } else {
            assert_eq!(status, StatusCode::BAD_GATEWAY, "{retry:?}");
            assert_eq!(good.hits(), 0, "garbage retried without invalid_header");
        }
    }
}

#[tokio::test]
async fn statuses_are_retried_only_when_listed() {
    for (code, retry, retried) in [
        (502, "", false),
        (502, "on = [\"http_503\"]", false),
        (502, "on = [\"http_502\"]", true),
        (503, "on = [\"error\", \"timeout\", \"http_502\"]", false),
        (503, "on = [\"http_503\"]", true),
    ] {
        let good = spawn_backend("good").await;
        let failing = spawn_status("failing", code).await;
        let lb = spawn_lb(&config(&[failing.addr, good.addr], "", retry)).await;
        let (status, headers, body) = get(&lb).await;
        assert_eq!(failing.hits(), 1, "{code} {retry:?}");
        if retried {
            assert_eq!(status, StatusCode::OK, "{code} with {retry:?}");
            assert_eq!(backend_of(&headers), "good");
        } else {
            // The backend's own answer, passed through.
            assert_eq!(status.as_u16(), code, "{retry:?}");
            assert_eq!(backend_of(&headers), "failing", "{code} {retry:?}");
            assert_eq!(body, upload_answer(0).as_bytes());
            assert_eq!(good.hits(), 0, "{code} retried with {retry:?}");
        }
    }
}

#[tokio::test]
async fn exhausted_retries_return_the_last_answer() {
    let s502 = spawn_status("s502", 502).await;
    let s503 = spawn_status("s503", 503).await;
    let lb = spawn_lb(&config(
        &[s502.addr, s503.addr],
        "",
        "on = [\"http_502\", \"http_503\"]",
    ))
    .await;
    for i in 0..4 {
        let (status, headers, _) = get(&lb).await;
        assert_eq!(
            (s502.hits(), s503.hits()),
            (i + 1, i + 1),
            "each tried once per request"
        );
        let last = if s502.last_hit() > s503.last_hit() {
            &s502
        } else {
            &s503
        };
        assert_eq!(
            backend_of(&headers),
            last.name,
            "request {i}: got {status}, not the answer of the last server tried"
        );
        assert_eq!(status.as_u16(), if last.name == "s502" { 502 } else { 503 });
    }

    // The same when the loop ends because no untried server is usable (the
    // third is down by its checks), not because every server was tried.
    let s502 = spawn_status("s502", 502).await;
    let s503 = spawn_status("s503", 503).await;
    let down = spawn_refusing().await;
    let lb = spawn_lb(&config(
        &[s502.addr, s503.addr, down],
        "[upstream.app.check]\ntype = \"http\"\npath = \"/probe\"\nexpect = [\"5xx\"]\ninterval = \"50ms\"\nrise = 1\nfall = 1",
        "on = [\"http_502\", \"http_503\"]",
    ))
    .await;
    let down_backend = lb_backends(&lb)[2].clone();
    wait_until(
        "refusing server down by checks",
        Duration::from_secs(2),
        || !down_backend.condition.active_up(),
    )
    .await;
    let (before_502, before_503) = (s502.hits(), s503.hits());
    let (status, headers, _) = get(&lb).await;
    assert_eq!(
        (s502.hits() - before_502, s503.hits() - before_503),
        (1, 1),
        "each tried once"
    );
    let last = if s502.last_hit() > s503.last_hit() {
        &s502
    } else {
        &s503
    };
    assert_eq!(
        backend_of(&headers),
        last.name,
        "got {status}, not the answer of the last server tried"
    );
    assert_eq!(down_backend.total(), 0);

    // Errors exhausted: 502 for a refused connection, 504 for a timeout.
    let r1 = spawn_refusing().await;
    let r2 = spawn_refusing().await;
    let lb = spawn_lb(&config(&[r1, r2], "", "")).await;
    assert_eq!(get(&lb).await.0, StatusCode::BAD_GATEWAY);
    assert_eq!((attempts(&lb, r1), attempts(&lb, r2)), (1, 1));
    let refusing = spawn_refusing().await;
    let hole = spawn_blackhole().await;
    let lb = spawn_lb(&config(
        &[refusing, hole],
        "[upstream.app.timeouts]\nread = \"200ms\"",
        "",
    ))
    .await;
    assert_eq!(
        get(&lb).await.0,
        StatusCode::GATEWAY_TIMEOUT,
        "last was the timeout"
    );
}

// === methods and bodies ===

#[tokio::test]
async fn post_is_not_retried_once_sent() {
    let read = "[upstream.app.timeouts]\nread = \"300ms\"";
    let small = || PatternBody::new(1000);
    // (retry lines, method is POST, retried)
    for (retry, is_post, retried) in [
        ("", true, false),
        ("on = [\"error\", \"timeout\"]", true, false),
        (
            "on = [\"error\", \"timeout\", \"non_idempotent\"]",
            true,
            true,
        ),
        ("", false, true),
    ] {
        let good = spawn_backend("good").await;
        let hole = spawn_blackhole().await;
        let lb = spawn_lb(&config(&[hole, good.addr], read, retry)).await;
        let (status, _, body) = if is_post {
            post(&lb, small()).await
        } else {
            get(&lb).await
        };
        assert_eq!(attempts(&lb, hole), 1, "{retry:?}");
        let what = format!("{} with {retry:?}", if is_post { "POST" } else { "GET" });
        if retried {
            assert_eq!(status, StatusCode::OK, "{what}");
            assert_eq!(good.hits(), 1);
            if is_post {
                assert_eq!(body, upload_answer(1000).as_bytes(), "{what}: body damaged");
            }
        } else {
            assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{what}");
            assert_eq!(good.hits(), 0, "{what} retried after it was sent");
        }
    }
}

#[tokio::test]
async fn post_is_retried_after_a_connect_failure() {
    let good = spawn_backend("good").await;
    let refusing = spawn_refusing().await;
    let lb = spawn_lb(&config(&[refusing, good.addr], "", "")).await;
    let (status, headers, body) = post(&lb, PatternBody::new(5000)).await;
    assert_eq!(attempts(&lb, refusing), 1);
    assert_eq!(
        status,
        StatusCode::OK,
        "POST not retried after connection refused"
    );
    assert_eq!(backend_of(&headers), "good");
    assert_eq!(body, upload_answer(5000).as_bytes());
}

#[tokio::test]
async fn bodies_beyond_max_body_are_streamed_once() {
    let retry = "on = [\"http_502\", \"non_idempotent\"]\nmax_body = \"16k\"";
    let big: u64 = 100 * 1024;
    for chunked in [false, true] {
        let good = spawn_backend("good").await;
        let failing = spawn_status("failing", 502).await;
        let lb = spawn_lb(&config(&[failing.addr, good.addr], "", retry)).await;
        let body = if chunked {
            PatternBody::chunked(big)
        } else {
            PatternBody::new(big)
        };
        let (status, headers, body) = post(&lb, body).await;
        let what = if chunked { "chunked" } else { "with length" };
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{what}: big body retried");
        assert_eq!(backend_of(&headers), "failing");
        assert_eq!(
            String::from_utf8_lossy(&body),
            upload_answer(big),
            "{what}: body damaged on its way to the only server"
        );
        assert_eq!(good.hits(), 0, "{what}: big body sent twice");
    }

    // A small body is kept and replayed intact.
    for chunked in [false, true] {
        let good = spawn_backend("good").await;
        let failing = spawn_status("failing", 502).await;
        let lb = spawn_lb(&config(&[failing.addr, good.addr], "", retry)).await;
        let small: u64 = 8 * 1024;
        let body = if chunked {
            PatternBody::chunked(small)
        } else {
            PatternBody::new(small)
        };
        let (status, headers, body) = post(&lb, body).await;
        assert_eq!(status, StatusCode::OK, "small body not retried");
        assert_eq!(backend_of(&headers), "good");
        assert_eq!(failing.hits(), 1);
        assert_eq!(
            String::from_utf8_lossy(&body),
            upload_answer(small),
            "replayed body damaged"
        );
    }
}

// === limits ===

#[tokio::test]
async fn tries_limits_the_attempts() {
    for (tries, expect) in [(2, StatusCode::BAD_GATEWAY), (0, StatusCode::OK)] {
        let good = spawn_backend("good").await;
        let mut addrs = Vec::new();
        for _ in 0..4 {
            addrs.push(spawn_refusing().await);
        }
        addrs.push(good.addr);
        let lb = spawn_lb(&config(&addrs, "", &format!("tries = {tries}"))).await;
        let (status, _, _) = get(&lb).await;
        assert_eq!(status, expect, "tries = {tries}");
        let per_server: Vec<u64> = lb_backends(&lb).iter().map(|b| b.total()).collect();
        let total: u64 = per_server.iter().sum();
        if tries == 2 {
            assert_eq!(total, 2, "tries = 2: attempts per server {per_server:?}");
            assert_eq!(per_server.iter().filter(|n| **n > 0).count(), 2);
            assert_eq!(good.hits(), 0);
        } else {
            assert_eq!(per_server, [1, 1, 1, 1, 1], "tries = 0: every server once");
        }
    }
}

#[tokio::test]
async fn retry_timeout_bounds_the_time() {
    let mut holes = Vec::new();
    for _ in 0..5 {
        holes.push(spawn_blackhole().await);
    }
    let lb = spawn_lb(&config(
        &holes,
        "[upstream.app.timeouts]\nread = \"300ms\"",
        "timeout = \"500ms\"",
    ))
    .await;
    let started = Instant::now();
    let (status, _, _) = get(&lb).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let total: u64 = lb_backends(&lb).iter().map(|b| b.total()).sum();
    assert_eq!(total, 2, "300 ms per attempt, 500 ms budget: two attempts");
    assert!(
        took < Duration::from_millis(1500),
        "took {took:?} (5 servers × 300 ms would be 1.5 s)"
    );
}

// === WebSockets and stickiness ===

#[tokio::test]
async fn websocket_handshakes_are_retried() {
    let good = spawn_backend("good").await;
    let refusing = spawn_refusing().await;
    let lb = spawn_lb(&config(&[refusing, good.addr], "", "")).await;
    for i in 0..20 {
        let (mut ws, resp) = within("ws connect", try_ws_connect(lb.addr(), "/ws"))
            .await
            .unwrap_or_else(|e| panic!("WebSocket connect {i} failed: {e}"));
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(backend_of(resp.headers()), "good");
        let text = format!("hello {i}");
        within("ws send", ws.send(Message::text(text.clone())))
            .await
            .expect("ws send");
        match next_msg(&mut ws).await {
            Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), text),
            other => panic!("no echo on socket {i}: {other:?}"),
        }
        let _ = within("ws close", ws.close(None)).await;
    }
    assert!(
        attempts(&lb, refusing) >= 9,
        "refusing server attempted {} times for 20 handshakes",
        attempts(&lb, refusing)
    );
    assert_eq!(good.hits(), 20);
}

/// The `LATCH=...` pair of a response's latch cookie, if it sets one.
fn latch_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("LATCH="))
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
}

async fn get_with_cookie(lb: &Lb, cookie: &str) -> Got {
    let req = Request::get("/name")
        .header("host", "localhost")
        .header(COOKIE, cookie)
        .body(Full::<Bytes>::default())
        .expect("valid GET");
    within("GET /name with cookie", http_request(lb.addr(), req)).await
}

#[tokio::test]
async fn sticky_client_is_repinned_when_its_server_dies() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let cfg = format!(
        "{}[upstream.app.sticky]\nmode = \"cookie\"\ncookie = \"LATCH\"\nsecret = \"0123456789abcdef0123\"\n",
        // Passive checks off: the re-pin must come from the retry itself.
        simple_config(&[a.addr, b.addr], "max_fails = 0")
    );
    let lb = spawn_lb(&cfg).await;
    let (status, headers, _) = get(&lb).await;
    assert_eq!(status, StatusCode::OK);
    let pinned = backend_of(&headers).to_string();
    let cookie = latch_cookie(&headers).expect("first answer pins the client");
    for _ in 0..4 {
        let (status, headers, _) = get_with_cookie(&lb, &cookie).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(backend_of(&headers), pinned, "cookie does not pin");
    }
    let (dead, survivor) = if pinned == "a" { (a, b) } else { (b, a) };
    let dead_addr = dead.addr;
    dead.stop().await;

    let (status, headers, _) = get_with_cookie(&lb, &cookie).await;
    assert_eq!(status, StatusCode::OK, "pinned server died: request failed");
    assert_eq!(backend_of(&headers), survivor.name);
    assert!(
        attempts(&lb, dead_addr) >= 6,
        "the pinned server was not even tried"
    );
    let repinned = latch_cookie(&headers).expect("no new Set-Cookie after re-pinning");
    assert_ne!(repinned, cookie);

    // The new cookie pins to the survivor, without setting another.
    for _ in 0..3 {
        let (status, headers, _) = get_with_cookie(&lb, &repinned).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(backend_of(&headers), survivor.name);
        assert_eq!(latch_cookie(&headers), None, "valid pin re-set");
    }
}
