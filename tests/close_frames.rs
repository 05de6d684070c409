//! WebSocket goodbyes: when latch ends a tunnel itself, the client gets a
//! close frame with a code that says why (and the backend gets one too),
//! never just a cut connection that a browser reports as 1006.
//!
//! Real tokio-tungstenite clients through latch to a tokio-tungstenite
//! backend that reports the close frame it got (support/ws_recorder.rs):
//! a stop once the grace is over (1001, spread over `close_spread`), a
//! reload that removes the server (1012), `tunnel_idle` (1001), a killed
//! backend (1011). A close the client makes itself passes through as it is.

mod support;

use std::path::Path;
use std::time::Duration;

use futures_util::SinkExt;
use latch::Config;
use support::ws_recorder::{Ended, WsRecorder, spawn_ws_recorder};
use support::*;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Ws = WebSocketStream<TcpStream>;

fn config(server: &str, backends: &[&WsRecorder], upstream_extra: &str) -> String {
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    format!(
        "[server]\n{server}\n{}",
        simple_config(&addrs, upstream_extra)
    )
}

/// A WebSocket through latch that has echoed one message.
async fn open(lb: std::net::SocketAddr) -> Ws {
    let (mut ws, _) = ws_connect(lb, "/chat").await;
    within("send", ws.send(Message::text("hello")))
        .await
        .unwrap();
    match next_msg(&mut ws).await {
        Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "hello"),
        other => panic!("no echo: {other:?}"),
    }
    ws
}

/// Reads until the close frame; panics if the stream ends without one (what
/// a browser would report as 1006). Then reads on until the end, as a
/// browser does: tungstenite sends its close reply on that next read, and
/// latch closes the connection once it has the reply.
async fn close_of(ws: &mut Ws) -> (u16, String) {
    loop {
        match next_msg(ws).await {
            Some(Ok(Message::Close(Some(f)))) => {
                while let Some(Ok(_)) = next_msg(ws).await {}
                return (u16::from(f.code), f.reason.to_string());
            }
            Some(Ok(Message::Close(None))) => panic!("close frame without a code"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("no close frame, the connection broke: {e}"),
            None => panic!("no close frame, the connection just ended"),
        }
    }
}

#[tokio::test]
async fn stop_after_grace_says_1001_to_clients_and_backend_spread_over_the_window() {
    const CLIENTS: usize = 20;
    let mut backend = spawn_ws_recorder().await;
    let lb = spawn_lb(&config(
        "grace = \"1500ms\"\nclose_spread = \"1s\"",
        &[&backend],
        "",
    ))
    .await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(open(lb.addr()).await);
    }
    let started = tokio::time::Instant::now();
    let stopping = tokio::spawn(lb.handle.shutdown());
    let mut readers = tokio::task::JoinSet::new();
    for mut ws in clients {
        readers.spawn(async move {
            let close = close_of(&mut ws).await;
            (close, started.elapsed())
        });
    }
    let got = within_for(LONG_TIMEOUT, "every client's close", readers.join_all()).await;
    for (close, _) in &got {
        assert_eq!(*close, (1001, "latch stopping".to_owned()));
    }
    let first = got.iter().map(|g| g.1).min().unwrap();
    let last = got.iter().map(|g| g.1).max().unwrap();
    // Undisturbed for grace - close_spread, then spread over the window.
    assert!(
        first >= Duration::from_millis(500),
        "first close at {first:?}"
    );
    assert!(
        last - first >= Duration::from_millis(200),
        "{CLIENTS} closes within {:?}: not spread",
        last - first
    );
    for _ in 0..CLIENTS {
        assert_eq!(
            backend.next_end().await,
            Ended::Close(1001, "latch stopping".into())
        );
    }
    within("shutdown", stopping).await.unwrap();
}

#[tokio::test]
async fn reload_removing_the_server_says_1012() {
    let mut old = spawn_ws_recorder().await;
    let new = spawn_ws_recorder().await;
    let server = "grace = \"300ms\"\nclose_spread = \"200ms\"";
    let lb = spawn_lb(&config(server, &[&old], "")).await;
    let mut ws = open(lb.addr()).await;
    let next = Config::parse(&config(server, &[&new], ""), Path::new("/t/latch.toml")).unwrap();
    lb.handle.reload(next).expect("reload");
    assert_eq!(close_of(&mut ws).await, (1012, "server removed".to_owned()));
    assert_eq!(
        old.next_end().await,
        Ended::Close(1012, "server removed".into())
    );
    // The client comes back, to the server that stays.
    let mut again = open(lb.addr()).await;
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    within("close", again.close(Some(frame))).await.unwrap();
    assert_eq!(close_of(&mut again).await, (1000, "bye".to_owned()));
    drop(again);
    wait_all_idle(&lb).await;
}

#[tokio::test]
async fn tunnel_idle_says_1001() {
    let mut backend = spawn_ws_recorder().await;
    let lb = spawn_lb(&config(
        "",
        &[&backend],
        "[upstream.app.timeouts]\ntunnel_idle = \"300ms\"",
    ))
    .await;
    let mut ws = open(lb.addr()).await;
    assert_eq!(close_of(&mut ws).await, (1001, "idle timeout".to_owned()));
    assert_eq!(
        backend.next_end().await,
        Ended::Close(1001, "idle timeout".into())
    );
    wait_all_idle(&lb).await;
}

#[tokio::test]
async fn killed_backend_says_1011() {
    let backend = spawn_ws_recorder().await;
    let lb = spawn_lb(&config("", &[&backend], "")).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(open(lb.addr()).await);
    }
    backend.kill().await;
    for ws in &mut clients {
        assert_eq!(close_of(ws).await, (1011, "backend lost".to_owned()));
    }
    wait_all_idle(&lb).await;
}

#[tokio::test]
async fn a_close_the_client_makes_passes_through_as_it_is() {
    let mut backend = spawn_ws_recorder().await;
    let lb = spawn_lb(&config("", &[&backend], "")).await;
    let mut ws = open(lb.addr()).await;
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    };
    within("close", ws.close(Some(frame))).await.unwrap();
    assert_eq!(close_of(&mut ws).await, (1000, "done".to_owned()));
    assert_eq!(backend.next_end().await, Ended::Close(1000, "done".into()));
    drop(ws);
    wait_all_idle(&lb).await;
}

#[test]
fn close_spread_longer_than_grace_is_refused_by_name() {
    let text = "[server]\ngrace = \"10s\"\nclose_spread = \"20s\"\n";
    let e = Config::parse(text, Path::new("/t/latch.toml")).unwrap_err();
    assert_eq!((e.key.as_str(), e.line), ("server.close_spread", 3), "{e}");
    assert!(e.message.contains("server.grace"), "{e}");
}

#[test]
fn close_spread_defaults_to_5s_or_half_the_grace_and_the_example_loads() {
    let rest = "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n[upstream.app]\nservers = [{ addr = \"127.0.0.1:9\" }]\n";
    let parse = |t: &str| {
        let text = format!("{t}{rest}");
        Config::parse(&text, Path::new("/t/latch.toml")).unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(parse("").server.close_spread, Duration::from_secs(5));
    let short = parse("[server]\ngrace = \"2s\"\n");
    assert_eq!(short.server.close_spread, Duration::from_secs(1));
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/goodbyes.toml");
    let c = Config::load(&example).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.server.grace, Duration::from_secs(60));
    assert_eq!(c.server.close_spread, Duration::from_secs(20));
}
