//! WebSockets over HTTP/2 streams (RFC 8441, issue 14 §2): hyper's HTTP/2
//! client sends extended CONNECT (`:protocol = websocket`) to latch over
//! TLS, latch makes it an HTTP/1.1 Upgrade to the backend, answers the
//! `101` with `200`, and tunnels the stream. Checked: the handshake fields
//! (the pin's Set-Cookie carried, no `Sec-WebSocket-Accept`), echoes,
//! stickiness of a second WebSocket on the same connection, the tunnel
//! counted by least_conn and freed at the end, `max_conns`, refusals,
//! per-stream flow control (a stalled WebSocket does not stop another on
//! the same connection), and the close frame a stop sends through the
//! stream; the `/status` and metric counts of WebSockets over HTTP/2.

mod support;

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tokio_tungstenite::tungstenite::Message;

use support::h2::*;
use support::ws_recorder::{Ended, spawn_ws_recorder};
use support::*;

const SECRET: &str = "h2-ws-test-secret-0123456789abcdef";

/// A TLS listener (certificate for `localhost` in `dir`) in front of `app`
/// over `backends`, an admin listener, `server` lines for `[server]` and
/// `upstream` lines for `[upstream.app]`.
fn config(dir: &std::path::Path, backends: &[SocketAddr], server: &str, upstream: &str) -> String {
    write_cert_files(dir, "srv", &["localhost"]);
    format!(
        "[server]\n{server}\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\
         tls = {{ cert = \"srv.crt\", key = \"srv.key\" }}\n\n\
         [upstream.app]\nbalance = \"least_conn\"\n{}\n{upstream}\n",
        servers(backends)
    )
}

async fn start(
    backends: &[SocketAddr],
    server: &str,
    upstream: &str,
) -> (Lb, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let lb = spawn_lb_in(
        &config(dir.path(), backends, server, upstream),
        Some(dir.path()),
    )
    .await;
    let pem = std::fs::read_to_string(dir.path().join("srv.crt")).expect("certificate");
    (lb, pem, dir)
}

fn admin(lb: &Lb) -> SocketAddr {
    lb.handle.admin_addr().expect("admin listener")
}

/// Sends `msg` and expects it back.
async fn echo(ws: &mut H2Ws, msg: Message) {
    within("send", ws.send(msg.clone())).await.expect("send");
    match next_msg(ws).await {
        Some(Ok(m)) => assert_eq!(m, msg),
        other => panic!("no echo: {other:?}"),
    }
}

#[tokio::test]
async fn a_websocket_rides_an_h2_stream_like_an_http11_one() {
    let b1 = spawn_backend("b1").await;
    let b2 = spawn_backend("b2").await;
    let sticky = format!(
        "[upstream.app.sticky]\nmode = \"cookie\"\ncookie = \"LATCH\"\nsecret = \"{SECRET}\"\n"
    );
    let (lb, pem, _dir) = start(&[b1.addr, b2.addr], "", &sticky).await;
    let mut h2 = h2_tls(lb.addr(), &pem).await;

    let (headers, mut ws) = h2_ws(&mut h2, "localhost", "/ws", &[])
        .await
        .unwrap_or_else(|(s, h)| panic!("refused: {s} {h:?}"));
    for gone in ["sec-websocket-accept", "upgrade", "connection"] {
        assert!(
            headers.get(gone).is_none(),
            "{gone} in the 200: {headers:?}"
        );
    }
    let cookies: Vec<_> = headers.get_all("set-cookie").iter().collect();
    let pin = cookies
        .iter()
        .filter_map(|c| c.to_str().ok())
        .find(|c| c.starts_with("LATCH="))
        .unwrap_or_else(|| panic!("no pin in {cookies:?}"))
        .split(';')
        .next()
        .expect("name=value")
        .to_string();
    let first = cookies
        .iter()
        .filter_map(|c| c.to_str().ok())
        .find_map(|c| c.strip_prefix("backend="))
        .and_then(|c| c.split(';').next())
        .expect("the backend's own cookie")
        .to_string();
    echo(&mut ws, Message::text("hello over h2")).await;
    echo(&mut ws, Message::binary(vec![7u8; 100_000])).await;
    // A tunnel, counted as such by least_conn, on the backend that answered.
    let (pinned, other) = if first == "b1" { (0, 1) } else { (1, 0) };
    assert_eq!(counts(&lb)[pinned].1, 1);
    assert_eq!(counts(&lb)[other].1, 0);

    // A second WebSocket on the same connection, with the pin: the same
    // backend, although least_conn alone would pick the other.
    let (_, mut ws2) = h2_ws(&mut h2, "localhost", "/ws", &[("cookie", pin.as_str())])
        .await
        .unwrap_or_else(|(s, h)| panic!("refused: {s} {h:?}"));
    echo(&mut ws2, Message::text("second")).await;
    assert_eq!(counts(&lb)[pinned].1, 2);
    let st = h2_status(admin(&lb)).await;
    assert_eq!(
        (st["websockets"].as_u64(), st["websockets_open"].as_u64()),
        (Some(2), Some(2)),
        "{st}"
    );
    assert_eq!(st["connections"], 1, "{st}");
    assert_eq!(metric(admin(&lb), "latch_h2_websockets_total").await, 2.0);

    // Closed by the client: the tunnels and the gauges are given back. After
    // the close handshake the client lets go of its streams, as a browser
    // does (one it kept half-open would hold its tunnel for the 5 s a
    // half-closed tunnel is given to finish, as long as this wait).
    within("close", ws.close(None)).await.expect("close");
    while let Some(Ok(_)) = next_msg(&mut ws).await {}
    within("close", ws2.close(None)).await.expect("close");
    while let Some(Ok(_)) = next_msg(&mut ws2).await {}
    drop((ws, ws2));
    wait_all_idle(&lb).await;
    let admin = admin(&lb);
    let mut open = None;
    for _ in 0..100 {
        open = h2_status(admin).await["websockets_open"].as_u64();
        if open == Some(0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(open, Some(0));
    // The connection still serves requests.
    let (status, _, _) = h2_get(&mut h2, "localhost", "/name").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn refusals_and_max_conns_answer_on_the_stream() {
    let b = spawn_backend("b1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut toml = config(dir.path(), &[], "", "");
    toml = toml.replace(
        "servers = []",
        &format!("servers = [{{ addr = \"{}\", max_conns = 1 }}]", b.addr),
    );
    let lb = spawn_lb_in(&toml, Some(dir.path())).await;
    let pem = std::fs::read_to_string(dir.path().join("srv.crt")).expect("certificate");
    let mut h2 = h2_tls(lb.addr(), &pem).await;

    let refused = h2_ws(&mut h2, "localhost", "/ws-refuse", &[]).await;
    assert_eq!(refused.err().map(|e| e.0), Some(StatusCode::FORBIDDEN));
    // A 101 for another protocol than the client's is a bad gateway.
    let wrong = h2_ws(&mut h2, "localhost", "/ws-wrong", &[]).await;
    assert_eq!(wrong.err().map(|e| e.0), Some(StatusCode::BAD_GATEWAY));

    let (_, mut ws) = h2_ws(&mut h2, "localhost", "/ws", &[])
        .await
        .unwrap_or_else(|(s, h)| panic!("refused: {s} {h:?}"));
    echo(&mut ws, Message::text("one")).await;
    // The server is full: its one slot is the tunnel.
    let full = h2_ws(&mut h2, "localhost", "/ws", &[]).await;
    assert_eq!(
        full.err().map(|e| e.0),
        Some(StatusCode::SERVICE_UNAVAILABLE)
    );
    echo(&mut ws, Message::text("still there")).await;
    let st = h2_status(admin(&lb)).await;
    assert_eq!(st["websockets"], 1, "{st}");
}

/// Per-stream flow control: a WebSocket whose client stops reading fills
/// its own stream's window (and the tunnel stops reading its backend);
/// another WebSocket on the same connection keeps echoing. Then the stalled
/// one is read, and every byte arrives in order. (With the connection's
/// window no larger than a stream's, the stalled stream holds all of it
/// and this test fails: the default keeps 16 streams' worth.)
#[tokio::test]
async fn a_stalled_websocket_does_not_stop_another_on_the_same_connection() {
    const MESSAGE: usize = 256 * 1024;
    const MESSAGES: usize = 128; // 32 MiB, far more than every window and buffer
    let b = spawn_backend("b1").await;
    let (lb, pem, _dir) = start(&[b.addr], "", "").await;
    let mut h2 = h2_tls(lb.addr(), &pem).await;
    let (_, stalled) = h2_ws(&mut h2, "localhost", "/ws", &[])
        .await
        .unwrap_or_else(|(s, h)| panic!("refused: {s} {h:?}"));
    let (_, mut live) = h2_ws(&mut h2, "localhost", "/ws", &[])
        .await
        .unwrap_or_else(|(s, h)| panic!("refused: {s} {h:?}"));
    let (mut tx, mut rx) = stalled.split();
    let writer = tokio::spawn(async move {
        for i in 0..MESSAGES {
            let msg = Message::binary(vec![i as u8; MESSAGE]);
            if tx.send(msg).await.is_err() {
                return false;
            }
        }
        true
    });
    // The echoes pile up unread; the other WebSocket goes on.
    for i in 0..20 {
        echo(&mut live, Message::text(format!("live {i}"))).await;
    }
    assert!(
        !writer.is_finished(),
        "all {MESSAGES} messages went through an unread WebSocket: nothing stalled"
    );
    for i in 0..MESSAGES {
        match within("a stalled echo", rx.next()).await {
            Some(Ok(Message::Binary(d))) => {
                assert_eq!(d.len(), MESSAGE);
                assert!(d.iter().all(|b| *b == i as u8), "message {i} corrupted");
            }
            other => panic!("message {i}: {other:?}"),
        }
    }
    assert!(within("the writer", writer).await.expect("writer"));
    echo(&mut live, Message::text("after")).await;
}

/// A stop whose grace runs out says goodbye through the HTTP/2 stream: the
/// client gets close 1001, the backend too.
#[tokio::test]
async fn a_stop_sends_close_1001_through_the_stream() {
    let mut rec = spawn_ws_recorder().await;
    let (lb, pem, _dir) = start(
        &[rec.addr],
        "grace = \"300ms\"\nclose_spread = \"100ms\"",
        "",
    )
    .await;
    let mut h2 = h2_tls(lb.addr(), &pem).await;
    let (_, mut ws) = h2_ws(&mut h2, "localhost", "/chat", &[])
        .await
        .unwrap_or_else(|(s, h)| panic!("refused: {s} {h:?}"));
    echo(&mut ws, Message::text("hello")).await;
    let stopping = tokio::spawn(lb.handle.shutdown());
    let close = loop {
        match next_msg(&mut ws).await {
            Some(Ok(Message::Close(Some(f)))) => break (u16::from(f.code), f.reason.to_string()),
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(close, (1001, "latch stopping".to_owned()));
    while let Some(Ok(_)) = next_msg(&mut ws).await {}
    assert_eq!(
        rec.next_end().await,
        Ended::Close(1001, "latch stopping".into())
    );
    within("shutdown", stopping).await.expect("stopped");
}
