//! `sticky.mode = "session_id"` at the request side, against real sockets:
//! three mock backends behind latch with `round_robin`, requests sent with a
//! session id in the query as Engine.IO (`sid`) and SignalR (`id`) clients
//! send it after their handshake. The tag is made with latch's own codec and
//! the test's secret, as another latch instance would have made it.
//!
//! - a valid tag pins every request to the backend it names, and the backend
//!   sees the original id (the tag is removed), also for a WebSocket upgrade;
//! - a forged tag (one byte changed), a tag signed with another secret and
//!   an untagged id are left as they are, and the requests are placed by
//!   `round_robin` as usual;
//! - the `latch_session_ids` metric counts the pinned requests.
//!
//! The handshake side (tagging the id in the answer) runs with the real
//! socket.io and SignalR servers and clients in tests/socketio.rs and
//! tests/signalr.rs.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use latch::sticky::CookieCodec;
use latch::sticky::session_id;
use support::dns::metric;
use support::*;

const SECRET: &str = "session-id-test-secret-0123456789";
const ROUNDS: usize = 12;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn config(addrs: &[SocketAddr]) -> String {
    format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n{}",
        simple_config(
            addrs,
            &format!(
                "balance = \"round_robin\"\n\n[upstream.app.sticky]\nmode = \"session_id\"\nsecret = \"{SECRET}\"\n"
            ),
        )
    )
}

/// `GET target` through latch `ROUNDS` times: the backends that answered
/// and the targets they saw.
async fn send(lb: SocketAddr, target: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut backends = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for _ in 0..ROUNDS {
        let (status, headers, body) = http_get(lb, "localhost", target).await;
        assert_eq!(
            status,
            200,
            "GET {target}: {}",
            String::from_utf8_lossy(&body)
        );
        let name = headers
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .expect("x-backend header");
        backends.insert(name.to_string());
        seen.insert(parse_echo(&body).target);
    }
    (backends, seen)
}

#[tokio::test]
async fn valid_tags_pin_and_are_removed_forged_ones_are_ignored() {
    let b = [
        spawn_backend("b0").await,
        spawn_backend("b1").await,
        spawn_backend("b2").await,
    ];
    let addrs: Vec<SocketAddr> = b.iter().map(|b| b.addr).collect();
    let lb = spawn_lb(&config(&addrs)).await;
    let admin = lb.handle.admin_addr().expect("admin listener");
    let codec = CookieCodec::new(SECRET.as_bytes(), "LATCH", None).expect("codec");
    // A server's id defaults to its address.
    let sid = session_id::tag(
        &codec,
        "lv_VI97HAXpY6yYWAAAC",
        &b[1].addr.to_string(),
        now(),
    );

    // Engine.IO polling, and SignalR long polling: pinned to b1, id restored.
    for (param, rest) in [("sid", "EIO=4&transport=polling&t=x1"), ("id", "")] {
        let target = format!("/echo?{rest}&{param}={sid}&z=1");
        let (backends, seen) = send(lb.addr(), &target).await;
        assert_eq!(backends, BTreeSet::from(["b1".to_string()]), "{target}");
        let want = format!("/echo?{rest}&{param}=lv_VI97HAXpY6yYWAAAC&z=1");
        assert_eq!(seen, BTreeSet::from([want]), "{target}");
    }
    assert_eq!(
        metric(
            admin,
            "latch_session_ids_total{upstream=\"app\",event=\"pinned\"}"
        )
        .await,
        (2 * ROUNDS) as f64
    );

    // A WebSocket upgrade carrying the tag reaches b1 too, untagged.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/ws?EIO=4&transport=websocket&sid={sid}",
        lb.addr()
    ))
    .await
    .expect("websocket through latch");
    drop(ws.close(None).await);
    drop(ws);
    assert_eq!(
        b[1].last_uri().as_deref(),
        Some("/ws?EIO=4&transport=websocket&sid=lv_VI97HAXpY6yYWAAAC")
    );

    // Forged: one byte of the MAC changed. Left as is, placed normally.
    let mut forged = sid.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).expect("ascii");
    // Signed with another secret (another cluster's latch).
    let other = CookieCodec::new(b"some-other-secret-0123456789", "LATCH", None).expect("codec");
    let foreign = session_id::tag(&other, "abc", &b[1].addr.to_string(), now());
    for bad in [
        forged.as_str(),
        foreign.as_str(),
        "plain-session-id",
        "x.1.2.3",
    ] {
        let target = format!("/echo?EIO=4&transport=polling&sid={bad}");
        let (backends, seen) = send(lb.addr(), &target).await;
        assert_eq!(
            backends.len(),
            3,
            "{bad}: placed by round robin, got {backends:?}"
        );
        assert_eq!(
            seen,
            BTreeSet::from([target.clone()]),
            "{bad}: passed on unchanged"
        );
    }
    assert_eq!(
        metric(
            admin,
            "latch_session_ids_total{upstream=\"app\",event=\"pinned\"}"
        )
        .await,
        (2 * ROUNDS + 1) as f64,
        "forged tags pin nothing"
    );
    lb.handle
        .shutdown_within(std::time::Duration::from_secs(5))
        .await;
}
