//! WebSockets through latch: echoes over plain and TLS listeners, the 101 as
//! the backend sent it, closes from either side, refused and malformed
//! upgrades, tunnel accounting on the backends, the tunnel idle timeout, a
//! backend dying mid-tunnel, many concurrent sockets, and a graceful stop.
//!
//! Everything runs on `127.0.0.1:0` with the mock backends of `support`;
//! waits are bounded, and counters are polled in bounded loops.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use support::*;

// === helpers ===

/// Compares messages without dumping megabytes on failure.
fn assert_same(got: &Message, want: &Message, what: &str) {
    if got != want {
        let show = |m: &Message| match m {
            Message::Text(t) if t.len() <= 200 => format!("Text({t:?})"),
            Message::Binary(b) if b.len() <= 200 => format!("Binary({b:?})"),
            Message::Text(t) => format!("Text(len {})", t.len()),
            Message::Binary(b) => format!("Binary(len {})", b.len()),
            other => format!("{other:?}"),
        };
        panic!("{what}: got {}, want {}", show(got), show(want));
    }
}

/// Sends `msg` and expects the very same message back.
async fn echo<S>(ws: &mut WebSocketStream<S>, msg: Message)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    within("sending a websocket message", ws.send(msg.clone()))
        .await
        .expect("send websocket message");
    let got = next_msg(ws)
        .await
        .expect("websocket ended before the echo")
        .expect("websocket error before the echo");
    assert_same(&got, &msg, "echo");
}

/// Text, binary and 1 MiB binary echoes, then several pipelined in order.
async fn echo_suite<S>(ws: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    echo(ws, Message::text("hello through latch")).await;
    echo(ws, Message::binary(vec![0u8, 1, 2, 127, 128, 255])).await;
    echo(ws, Message::binary(pattern_bytes(0, 1 << 20))).await;
    echo(ws, Message::text("é ü ✓ after the big one")).await;

    // Several in flight at once: they come back complete and in order.
    let sent: Vec<Message> = (0..10)
        .map(|i| {
            if i % 2 == 0 {
                Message::text(format!("pipelined {i}"))
            } else {
                Message::binary(pattern_bytes(i * 1000, 3000 + i as usize))
            }
        })
        .collect();
    for m in &sent {
        within("feeding a message", ws.feed(m.clone()))
            .await
            .expect("feed");
    }
    within("flushing messages", ws.flush())
        .await
        .expect("flush");
    for (i, want) in sent.iter().enumerate() {
        let got = next_msg(ws)
            .await
            .unwrap_or_else(|| panic!("ended before pipelined echo {i}"))
            .unwrap_or_else(|e| panic!("error before pipelined echo {i}: {e}"));
        assert_same(&got, want, &format!("pipelined echo {i}"));
    }
}

/// How a websocket ended, as the client saw it.
#[derive(Debug)]
enum End {
    /// A Close frame arrived (then the stream ended or errored).
    Close,
    /// The stream ended or failed without a Close frame (shown in failures).
    Cut(#[allow(dead_code)] String),
}

/// Reads until the websocket ends, within `limit` overall. Data messages are
/// a failure (nothing should still be echoed).
async fn expect_end<S>(ws: &mut WebSocketStream<S>, limit: Duration, what: &str) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    within_for(limit, what, async {
        let mut saw_close = false;
        for _ in 0..8 {
            match ws.next().await {
                Some(Ok(Message::Close(_))) => saw_close = true,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(other)) => panic!("{what}: unexpected message {other:?}"),
                None | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    return if saw_close {
                        End::Close
                    } else {
                        End::Cut("end of stream".into())
                    };
                }
                Some(Err(e)) => {
                    return if saw_close {
                        End::Close
                    } else {
                        End::Cut(e.to_string())
                    };
                }
            }
        }
        panic!("{what}: the stream kept going after 8 control frames");
    })
    .await
}

/// Whether a header value lists `token` (comma-separated, case-insensitive).
fn has_token(v: Option<&http::HeaderValue>, token: &str) -> bool {
    v.and_then(|v| v.to_str().ok())
        .is_some_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

async fn one_backend_lb(name: &str, extra: &str) -> (Backend, Lb) {
    let b = spawn_backend(name).await;
    let lb = spawn_lb(&simple_config(&[b.addr], extra)).await;
    (b, lb)
}

// === echo over plain and TLS listeners ===

#[tokio::test]
async fn ws_echo_text_binary_and_1mib() {
    let (b, lb) = one_backend_lb("b1", "").await;
    let (mut ws, resp) = ws_connect(lb.addr(), "/ws").await;
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    echo_suite(&mut ws).await;
    assert_eq!(b.hits(), 1, "one handshake reached the backend");
    assert_eq!(b.last_uri().as_deref(), Some("/ws"));
    assert_eq!(b.last_headers()["x-forwarded-proto"], "http");
    within("client close", ws.close(None)).await.expect("close");
    assert!(matches!(
        expect_end(&mut ws, TIMEOUT, "end after client close").await,
        End::Close
    ));
}

#[tokio::test]
async fn wss_echo_over_tls_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, _, cert_pem) = write_cert_files(dir.path(), "lb", &["localhost"]);
    let b = spawn_backend("b1").await;
    let toml = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\
         tls = {{ cert = \"lb.crt\", key = \"lb.key\" }}\n\n[upstream.app]\n{}\n",
        servers(&[b.addr])
    );
    let lb = spawn_lb_in(&toml, Some(dir.path())).await;
    let conn = tls_connector(&[&cert_pem]);
    let (mut ws, resp) = wss_connect(lb.addr(), "localhost", &conn, "/ws").await;
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(resp.headers()["x-backend"], "b1");
    echo_suite(&mut ws).await;
    // The backend side is plain WS, told the client came over TLS.
    assert_eq!(b.last_headers()["x-forwarded-proto"], "https");
    assert_eq!(b.last_headers()["host"], "localhost");
    within("client close", ws.close(None)).await.expect("close");
    expect_end(&mut ws, TIMEOUT, "end after client close").await;
}

// === the 101 response ===

#[tokio::test]
async fn switching_protocols_carries_backend_headers() {
    let b1 = spawn_backend("b1").await;
    let b2 = spawn_backend("b2").await;
    let lb = spawn_lb(&simple_config(&[b1.addr, b2.addr], "")).await;
    for name in ["b1", "b2"] {
        let (_ws, resp) = ws_connect(lb.addr(), "/ws").await;
        let h = resp.headers();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(h["set-cookie"], format!("backend={name}; Path=/").as_str());
        assert_eq!(h["x-backend"], name);
        assert!(
            has_token(h.get("upgrade"), "websocket"),
            "Upgrade: {:?}",
            h.get("upgrade")
        );
        assert!(
            has_token(h.get("connection"), "upgrade"),
            "Connection: {:?}",
            h.get("connection")
        );
        assert!(h.contains_key("sec-websocket-accept"));
    }
    // The backend saw a proper upgrade request.
    let seen = b2.last_headers();
    assert!(has_token(seen.get("upgrade"), "websocket"), "{seen:?}");
    assert!(has_token(seen.get("connection"), "upgrade"), "{seen:?}");
    assert_eq!(seen["sec-websocket-version"], "13");
}

// === closing from either side ===

#[tokio::test]
async fn backend_close_reaches_client_and_frees_tunnel() {
    let (b, lb) = one_backend_lb("b1", "").await;
    let (mut ws, _) = ws_connect(lb.addr(), "/ws-close").await;
    // The mock sends Close("bye") then FIN: the client sees both promptly.
    let end = expect_end(&mut ws, Duration::from_secs(5), "backend's close").await;
    assert!(matches!(end, End::Close), "{end:?}");
    let tunnel = lb_backend(&lb, b.addr);
    drop(ws);
    wait_until(
        "tunnel count back to 0 after the backend closed",
        Duration::from_secs(3),
        || tunnel.tunnels() == 0,
    )
    .await;
    assert_eq!(tunnel.active(), 0);
    // Still serving.
    let (mut ws, _) = ws_connect(lb.addr(), "/ws").await;
    echo(&mut ws, Message::text("still here")).await;
}

#[tokio::test]
async fn backend_close_frame_is_delivered() {
    let (_b, lb) = one_backend_lb("b1", "").await;
    let (mut ws, _) = ws_connect(lb.addr(), "/ws-close").await;
    match within_for(Duration::from_secs(5), "backend's Close frame", ws.next()).await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.reason, "bye"),
        other => panic!("expected the backend's Close(\"bye\"), got {other:?}"),
    }
}

#[tokio::test]
async fn client_close_frees_tunnel() {
    let (b, lb) = one_backend_lb("b1", "").await;
    let (mut ws, _) = ws_connect(lb.addr(), "/ws").await;
    echo(&mut ws, Message::text("before close")).await;
    let tunnel = lb_backend(&lb, b.addr);
    assert_eq!((tunnel.active(), tunnel.tunnels()), (0, 1));
    within("client close", ws.close(None)).await.expect("close");
    let end = expect_end(&mut ws, TIMEOUT, "close handshake").await;
    assert!(matches!(end, End::Close), "backend's Close reply: {end:?}");
    drop(ws);
    wait_until(
        "tunnel count back to 0 after the client closed",
        Duration::from_secs(3),
        || tunnel.tunnels() == 0,
    )
    .await;
    assert_eq!(tunnel.active(), 0);
}

// === refused and malformed upgrades ===

#[tokio::test]
async fn refused_upgrade_passes_403_through() {
    let (b, lb) = one_backend_lb("b1", "").await;
    for _ in 0..2 {
        match try_ws_connect(lb.addr(), "/ws-refuse").await {
            Err(WsError::Http(resp)) => {
                assert_eq!(resp.status(), StatusCode::FORBIDDEN);
                assert_eq!(resp.body().as_deref(), Some(&b"refused by b1"[..]));
                assert_eq!(resp.headers()["x-backend"], "b1");
            }
            other => panic!("expected a 403, got {:?}", other.map(|(_, r)| r)),
        }
    }
    assert_eq!(b.hits(), 2);
    wait_all_idle(&lb).await;
    // The proxy keeps serving both kinds of traffic.
    let (status, _, body) = http_get(lb.addr(), "localhost", "/name").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"b1"[..]));
    let (mut ws, _) = ws_connect(lb.addr(), "/ws").await;
    echo(&mut ws, Message::text("after refusal")).await;
}

#[tokio::test]
async fn mismatched_upgrade_is_502() {
    let (b, lb) = one_backend_lb("b1", "").await;
    let tunnel = lb_backend(&lb, b.addr);
    match try_ws_connect(lb.addr(), "/ws-wrong").await {
        Err(WsError::Http(resp)) => assert_eq!(
            resp.status(),
            StatusCode::BAD_GATEWAY,
            "body: {:?}",
            resp.body().as_deref().map(String::from_utf8_lossy)
        ),
        other => panic!("expected a 502, got {:?}", other.map(|(_, r)| r)),
    }
    assert_eq!(b.hits(), 1, "the handshake reached the backend");
    assert_eq!(tunnel.tunnels(), 0, "no tunnel for a mismatched 101");
    wait_until(
        "active back to 0 after the 502",
        Duration::from_secs(3),
        || tunnel.active() == 0,
    )
    .await;
    assert_eq!(tunnel.tunnels(), 0);
    // Still serving.
    let (mut ws, _) = ws_connect(lb.addr(), "/ws").await;
    echo(&mut ws, Message::text("after 502")).await;
}

// === tunnel accounting ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_are_counted_per_backend() {
    let bs = [
        spawn_backend("b1").await,
        spawn_backend("b2").await,
        spawn_backend("b3").await,
    ];
    let addrs: Vec<SocketAddr> = bs.iter().map(|b| b.addr).collect();
    let lb = spawn_lb(&simple_config(&addrs, "")).await;
    let mut open = Vec::new();
    for i in 0..6 {
        let (ws, resp) = ws_connect(lb.addr(), "/ws").await;
        // Round robin in config order.
        assert_eq!(resp.headers()["x-backend"], bs[i % 3].name.as_str());
        open.push(ws);
    }
    // Counted as tunnels (not requests) as soon as the 101 is out.
    assert_eq!(counts(&lb), vec![(0, 2); 3]);
    for (i, ws) in open.iter_mut().enumerate() {
        echo(ws, Message::text(format!("ws {i}"))).await;
    }
    assert_eq!(counts(&lb), vec![(0, 2); 3]);
    for b in lb_backends(&lb) {
        assert_eq!(b.total(), 2, "requests sent to {}", b.addr);
    }

    // Close half of them: one per backend goes away.
    for mut ws in open.drain(..3) {
        within("client close", ws.close(None)).await.expect("close");
        expect_end(&mut ws, TIMEOUT, "close handshake").await;
    }
    wait_until("one tunnel per backend", Duration::from_secs(3), || {
        counts(&lb) == vec![(0, 1); 3]
    })
    .await;
    for mut ws in open {
        within("client close", ws.close(None)).await.expect("close");
        expect_end(&mut ws, TIMEOUT, "close handshake").await;
    }
    wait_all_idle(&lb).await;
}

// === idle timeout ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tunnel_is_closed_busy_one_is_not() {
    let (b, lb) = one_backend_lb("b1", "[upstream.app.timeouts]\ntunnel_idle = \"1s\"\n").await;
    let (mut idle, _) = ws_connect(lb.addr(), "/ws").await;
    let (mut busy, _) = ws_connect(lb.addr(), "/ws").await;
    let opened = Instant::now();

    let idle_task = tokio::spawn(async move {
        let end = expect_end(&mut idle, Duration::from_secs(5), "idle websocket closed").await;
        (end, opened.elapsed())
    });

    // Traffic every 300 ms for 2 s keeps the other tunnel open.
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    let mut n = 0;
    while opened.elapsed() < Duration::from_secs(2) {
        tick.tick().await;
        echo(&mut busy, Message::text(format!("keepalive {n}"))).await;
        n += 1;
    }
    assert!(n >= 6, "only {n} echoes in 2 s");

    let (end, after) = within("idle websocket task", idle_task)
        .await
        .expect("idle task");
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}, before the 1 s idle timeout ({end:?})"
    );
    assert!(
        after <= Duration::from_secs(4),
        "closed only after {after:?}"
    );
    // The busy one survived longer than the idle timeout and still works.
    echo(&mut busy, Message::text("still open")).await;
    assert_eq!(lb_backend(&lb, b.addr).tunnels(), 1);

    // Left alone, it is closed too.
    let quiet = Instant::now();
    expect_end(
        &mut busy,
        Duration::from_secs(5),
        "busy websocket once idle",
    )
    .await;
    assert!(quiet.elapsed() >= Duration::from_millis(900));
    wait_all_idle(&lb).await;
}

// === backend failure ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_dying_mid_tunnel_ends_client() {
    let (b, lb) = one_backend_lb("b1", "").await;
    let tunnel = lb_backend(&lb, b.addr);
    let (mut ws, _) = ws_connect(lb.addr(), "/ws").await;
    echo(&mut ws, Message::text("alive")).await;
    assert_eq!(tunnel.tunnels(), 1);
    within("stopping the backend", b.stop()).await;
    let t = Instant::now();
    let end = expect_end(&mut ws, Duration::from_secs(6), "end after backend died").await;
    // Well before latch's 5 s FIN timeout: the backend's close is passed on,
    // not left for the timeout to clean up.
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "the client saw the end only after {:?} ({end:?})",
        t.elapsed()
    );
    drop(ws);
    wait_until(
        "tunnel count back to 0 after the backend died",
        Duration::from_secs(3),
        || tunnel.tunnels() == 0,
    )
    .await;
    // Nothing listens any more: a new handshake gets a 502.
    match try_ws_connect(lb.addr(), "/ws").await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), StatusCode::BAD_GATEWAY),
        other => panic!("expected a 502, got {:?}", other.map(|(_, r)| r)),
    }
}

// === many at once ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_websockets() {
    let bs = [
        spawn_backend("b1").await,
        spawn_backend("b2").await,
        spawn_backend("b3").await,
    ];
    let addrs: Vec<SocketAddr> = bs.iter().map(|b| b.addr).collect();
    let lb = spawn_lb(&simple_config(&addrs, "")).await;
    let addr = lb.addr();
    let mut set = tokio::task::JoinSet::new();
    for c in 0..50usize {
        set.spawn(async move {
            let (mut ws, resp) = ws_connect(addr, "/ws").await;
            let backend = resp.headers()["x-backend"].to_str().unwrap().to_string();
            for m in 0..20usize {
                let msg = if m % 4 == 3 {
                    Message::binary(pattern_bytes((c * 100 + m) as u64, 100 + c + m))
                } else {
                    Message::text(format!("client {c} message {m}"))
                };
                echo(&mut ws, msg).await;
            }
            within("client close", ws.close(None)).await.expect("close");
            expect_end(&mut ws, TIMEOUT, "close handshake").await;
            backend
        });
    }
    let mut per_backend = std::collections::BTreeMap::<String, usize>::new();
    within_for(LONG_TIMEOUT, "50 websocket clients", async {
        while let Some(r) = set.join_next().await {
            let name = r.expect("client task");
            *per_backend.entry(name).or_default() += 1;
        }
    })
    .await;
    assert_eq!(per_backend.values().sum::<usize>(), 50);
    let mut spread: Vec<usize> = per_backend.values().copied().collect();
    spread.sort_unstable();
    assert_eq!(
        spread,
        vec![16, 17, 17],
        "round robin spread {per_backend:?}"
    );
    wait_all_idle(&lb).await;
}

// === graceful stop ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_keeps_ws_then_closes_it() {
    let (_b, lb) = one_backend_lb("b1", "").await;
    let addr = lb.addr();
    let (mut ws, _) = ws_connect(addr, "/ws").await;
    echo(&mut ws, Message::text("before shutdown")).await;

    let lb = Arc::new(lb);
    let grace = Duration::from_millis(1500);
    let started = Instant::now();
    let stopping = {
        let lb = lb.clone();
        tokio::spawn(async move { lb.handle.shutdown_within(grace).await })
    };

    // The open websocket keeps working during the grace period.
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    for i in 0..4 {
        tick.tick().await;
        echo(&mut ws, Message::text(format!("during grace {i}"))).await;
    }
    assert!(
        started.elapsed() < grace,
        "echoes took too long to prove anything: {:?}",
        started.elapsed()
    );
    // New clients are refused at once (not left waiting in a backlog).
    match tokio::time::timeout(Duration::from_millis(500), try_ws_connect(addr, "/ws")).await {
        Ok(Err(_)) => {}
        Ok(Ok(_)) => panic!("a new websocket was accepted during shutdown"),
        Err(_) => panic!("a new websocket was neither refused nor served during shutdown"),
    }

    // When the grace period is over the tunnel is closed.
    let end = expect_end(
        &mut ws,
        Duration::from_secs(5),
        "websocket closed at end of grace",
    )
    .await;
    let closed_after = started.elapsed();
    assert!(
        closed_after >= grace - Duration::from_millis(100),
        "closed after {closed_after:?}, before the {grace:?} grace ({end:?})"
    );
    within_for(
        Duration::from_secs(5),
        "shutdown_within returning",
        stopping,
    )
    .await
    .expect("shutdown task");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    wait_all_idle(&lb).await;
}
