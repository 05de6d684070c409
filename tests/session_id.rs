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
//! WebSocket-only Engine.IO clients (`transports: ["websocket"]`) get their
//! sid in the backend's first WebSocket frame, which latch tags:
//!
//! - with a scripted backend and tokio-tungstenite: the rewritten frame is a
//!   valid frame (tungstenite reads it) whose sid verifies to the backend,
//!   and the frames the backend sent in the same write after it arrive
//!   intact; first frames latch must not touch (compressed, not an open
//!   packet, over 64 KiB, binary, and any frame outside `session_id` mode)
//!   reach a raw client byte for byte;
//! - with real socket.io servers and 100 socket.io-client clients (no cookie
//!   jar, two latch instances picked at random per connection): every
//!   client's sid names its server, and a polling request with that sid
//!   through either instance reaches the server that holds the session (0
//!   `Session ID unknown`); the same clients in cookie mode get them.
//!
//! The polling handshake side (tagging the id in the answer) runs with the
//! real socket.io and SignalR servers and clients in tests/socketio.rs and
//! tests/signalr.rs.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use latch::sticky::CookieCodec;
use latch::sticky::session_id;
use serde_json::{Value, json};
use support::dns::metric;
use support::node::{NodeServer, ensure_npm_ci, node_dir, run_node_json};
use support::ws_client::ws_connect;
use support::ws_scripted::{spawn_ws_scripted, ws_raw_open};
use support::*;
use tokio_tungstenite::tungstenite::Message;

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

// === WebSocket-only Engine.IO: the open packet in the first frame ===

const WS_OPEN: &str = "/socket.io/?EIO=4&transport=websocket";

/// An unmasked frame: first byte `b0`, the length in its shortest form.
fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = session_id::text_frame(payload);
    f[0] = b0;
    f
}

/// An Engine.IO v4 open packet for `sid`, padded to about `len` bytes.
fn open_packet(sid: &str, len: usize) -> Vec<u8> {
    let pad = "p".repeat(len.saturating_sub(120));
    format!(
        r#"0{{"sid":"{sid}","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000,"pad":"{pad}"}}"#
    )
    .into_bytes()
}

fn upstream_config(addrs: &[SocketAddr], mode: &str) -> String {
    format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n{}",
        simple_config(
            addrs,
            &format!("[upstream.app.sticky]\nmode = \"{mode}\"\nsecret = \"{SECRET}\"\n"),
        )
    )
}

async fn session_metric(lb: &Lb, event: &str) -> f64 {
    let admin = lb.handle.admin_addr().expect("admin listener");
    let name = format!("latch_session_ids_total{{upstream=\"app\",event=\"{event}\"}}");
    metric(admin, &name).await
}

/// The backend's first frame (an open packet in a 16-bit-length frame), a
/// `40` text frame and a 100 kB binary frame (64-bit length), all in the
/// write of its `101`: tungstenite reads the tagged open packet as a valid
/// text message, and the two frames after it unchanged.
#[tokio::test]
async fn the_first_frame_is_tagged_and_what_follows_it_arrives_intact() {
    let open = open_packet("lv_VI97HAXpY6yYWAAAC", 300);
    let big = pattern_bytes(0, 100_000);
    let mut after = frame(0x81, &open);
    after.extend(frame(0x81, b"40"));
    after.extend(frame(0x82, &big));
    let backend = spawn_ws_scripted("", after).await;
    let lb = spawn_lb(&upstream_config(&[backend], "session_id")).await;

    let (mut ws, _) = ws_connect(lb.addr(), WS_OPEN).await;
    let first = within("the open packet", ws.next()).await;
    let Some(Ok(Message::Text(text))) = first else {
        panic!("the first message is not text: {first:?}");
    };
    let packet = text.as_str().strip_prefix('0').expect("an open packet");
    let json: Value = serde_json::from_str(packet).expect("JSON open packet");
    let sent: Value = serde_json::from_slice(&open[1..]).expect("JSON");
    let sid = json["sid"].as_str().expect("sid");
    let codec = CookieCodec::new(SECRET.as_bytes(), "LATCH", None).expect("codec");
    assert_eq!(
        session_id::untag(&codec, sid, now()),
        Some((
            "lv_VI97HAXpY6yYWAAAC",
            CookieCodec::token(&backend.to_string())
        )),
        "the sid names the backend: {sid}"
    );
    for field in [
        "upgrades",
        "pingInterval",
        "pingTimeout",
        "maxPayload",
        "pad",
    ] {
        assert_eq!(json[field], sent[field], "{field} kept");
    }
    let second = within("the frame after it", ws.next()).await;
    assert!(
        matches!(&second, Some(Ok(Message::Text(t))) if t.as_str() == "40"),
        "{second:?}"
    );
    match within("the binary frame", ws.next()).await {
        Some(Ok(Message::Binary(b))) => assert!(b[..] == big[..], "binary frame changed"),
        other => panic!("expected the binary frame: {other:?}"),
    }
    assert_eq!(session_metric(&lb, "tagged").await, 1.0);
    drop(ws.close(None).await);
    drop(ws);
    lb.handle.shutdown_within(Duration::from_secs(5)).await;
}

/// First frames latch does not rewrite reach the client byte for byte,
/// together with what follows them; outside `session_id` mode even an open
/// packet does. (A compressed frame is one permessage-deflate made: latch
/// does not inflate, so its sid stays untagged; see the README.)
#[tokio::test]
async fn other_first_frames_pass_byte_for_byte() {
    let next = frame(0x81, b"40");
    let open = open_packet("abc", 100);
    let mut over = open_packet("abc", 70_000);
    over.truncate(70_000);
    let deflate = "sec-websocket-extensions: permessage-deflate\r\n";
    let cases: [(&str, &str, Vec<u8>, &str); 5] = [
        (
            "compressed",
            deflate,
            frame(0xc1, b"\x32\x30\xa8\x06\x00"),
            "session_id",
        ),
        (
            "not an open packet",
            "",
            frame(0x81, b"2probe"),
            "session_id",
        ),
        ("over 64 KiB", "", frame(0x81, &over), "session_id"),
        ("binary", "", frame(0x82, &open), "session_id"),
        ("cookie mode", "", frame(0x81, &open), "cookie"),
    ];
    for (what, headers, first, mode) in cases {
        let mut after = first;
        after.extend_from_slice(&next);
        let backend = spawn_ws_scripted(headers, after.clone()).await;
        let lb = spawn_lb(&upstream_config(&[backend], mode)).await;
        let (conn, head, got) = ws_raw_open(lb.addr(), WS_OPEN, headers, after.len()).await;
        drop(conn);
        assert!(head.starts_with("HTTP/1.1 101"), "{what}: {head}");
        assert!(got == after, "{what}: the bytes after the 101 changed");
        if mode == "session_id" {
            assert_eq!(session_metric(&lb, "not_tagged").await, 1.0, "{what}");
            assert_eq!(session_metric(&lb, "tagged").await, 0.0, "{what}");
        }
        lb.handle.shutdown_within(Duration::from_secs(5)).await;
    }
}

// === real socket.io, websocket-only clients ===

const WS_CLIENTS: usize = 100;

/// Three socket.io servers `s0`..`s2` (`extra`: `["deflate"]` offers
/// permessage-deflate).
async fn socketio_servers(extra: &[&str]) -> Vec<NodeServer> {
    let dir = node_dir("socketio");
    ensure_npm_ci(&dir, &["socket.io", "socket.io-client"]);
    let mut servers = Vec::new();
    for i in 0..3 {
        servers.push(NodeServer::spawn(&dir, "server.js", &format!("s{i}"), extra).await);
    }
    servers
}

/// Two latch instances with `mode` over three socket.io servers, and
/// `ws_only.js` with `extra` options through a forwarder that sends every
/// connection to a random instance.
async fn ws_only_clients(servers: &[NodeServer], mode: &str, extra: Value) -> (Value, [Lb; 2]) {
    let addrs: Vec<SocketAddr> = servers
        .iter()
        .map(|s| s.addr().parse().expect("server address"))
        .collect();
    let config = upstream_config(&addrs, mode);
    let lbs = [spawn_lb(&config).await, spawn_lb(&config).await];
    let mut cfg = json!({
        "urls": lbs.iter().map(|lb| format!("http://{}", lb.addr())).collect::<Vec<_>>(),
        "clients": WS_CLIENTS,
    });
    if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    let report = run_node_json(&node_dir("socketio"), "ws_only.js", &cfg, LONG_TIMEOUT).await;
    eprintln!("ws_only.js ({mode}): totals {}", report["totals"]);
    (report, lbs)
}

/// socket.io-client with `transports: ["websocket"]` and no cookie jar: the
/// sid it got names its server, and a polling request with it, sent through
/// a random instance, reaches that server (which answers "transport
/// mismatch", code 3: it holds the session) for every one of 100 clients;
/// no server ever sees an unknown sid.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websocket_only_socketio_clients_keep_their_sid_across_two_instances() {
    let servers = socketio_servers(&[]).await;
    websocket_only_sessions_stay(&servers).await;
}

/// The same with servers that offer permessage-deflate, and clients that
/// ask for it (socket.io-client does by default): a compressed open packet
/// could not be tagged, so latch takes the offer out of these handshakes
/// and every WebSocket runs uncompressed (the servers print what each one
/// negotiated: nothing). In cookie mode the same clients and servers
/// negotiate it, so it was latch that declined.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websocket_only_sessions_stay_when_servers_offer_permessage_deflate() {
    let servers = socketio_servers(&["deflate"]).await;
    websocket_only_sessions_stay(&servers).await;
    let plain = || {
        servers
            .iter()
            .map(|s| s.count(r#""extensions":"""#))
            .sum::<usize>()
    };
    wait_until("uncompressed WebSockets", TIMEOUT, || plain() >= WS_CLIENTS).await;
    let deflated = || {
        servers
            .iter()
            .map(|s| s.count("permessage-deflate"))
            .sum::<usize>()
    };
    assert_eq!(deflated(), 0, "no WebSocket negotiated permessage-deflate");
    let (report, lbs) = ws_only_clients(&servers, "cookie", json!({"clients": 6})).await;
    assert_eq!(report["totals"]["errors"], 0, "{}", report["totals"]);
    wait_until("deflate in cookie mode", TIMEOUT, || deflated() >= 6).await;
    for lb in lbs {
        lb.handle.shutdown_within(Duration::from_secs(5)).await;
    }
}

/// [`ws_only_clients`] in `session_id` mode: every session stays on its
/// server.
async fn websocket_only_sessions_stay(servers: &[NodeServer]) {
    let (report, lbs) = ws_only_clients(servers, "session_id", json!({})).await;
    let codec = CookieCodec::new(SECRET.as_bytes(), "LATCH", None).expect("codec");
    let clients = report["clients"].as_array().expect("clients array");
    assert_eq!(clients.len(), WS_CLIENTS);
    let mut problems = Vec::new();
    let mut started_on = BTreeSet::new();
    for (i, c) in clients.iter().enumerate() {
        let hello = c["hello"].as_str().unwrap_or("");
        let server = servers.iter().find(|s| s.name == hello);
        let sid = c["sid"].as_str().unwrap_or("");
        let names = server
            .zip(session_id::untag(&codec, sid, now()))
            .is_some_and(|(s, (_, token))| token == CookieCodec::token(&s.addr()));
        if c["errors"] != 0 || c["echo"] != c["hello"] || !names || c["follow"]["code"] != 3 {
            problems.push(format!("client {i}: {c}"));
        }
        started_on.insert(hello.to_owned());
    }
    assert!(
        problems.is_empty(),
        "{} of {WS_CLIENTS} clients failed: {}\n{}",
        problems.len(),
        report["totals"],
        problems[..problems.len().min(5)].join("\n")
    );
    assert_eq!(
        started_on.len(),
        3,
        "sessions on every server: {started_on:?}"
    );
    // Each polling request was answered by the server printing its error:
    // wait for all of them, then none may be an unknown session.
    let printed = || {
        servers
            .iter()
            .map(|s| s.count("connection_error"))
            .sum::<usize>()
    };
    wait_until("the servers' error lines", TIMEOUT, || {
        printed() >= WS_CLIENTS
    })
    .await;
    let unknown: Vec<usize> = servers
        .iter()
        .map(|s| s.count("Session ID unknown"))
        .collect();
    assert!(
        unknown.iter().all(|&n| n == 0),
        "unknown sids per server: {unknown:?}"
    );
    for (k, lb) in lbs.iter().enumerate() {
        let tagged = session_metric(lb, "tagged").await;
        assert!(tagged > 0.0, "instance {k} tagged no sid");
    }
    let tagged = session_metric(&lbs[0], "tagged").await + session_metric(&lbs[1], "tagged").await;
    assert_eq!(
        tagged, WS_CLIENTS as f64,
        "one tagged open packet per client"
    );
    for lb in lbs {
        lb.handle.shutdown_within(Duration::from_secs(5)).await;
    }
}

/// Control: the same clients with cookie mode get untagged sids, and their
/// polling requests meet `Session ID unknown`. They run one at a time: half
/// of the polling requests (the forwarder picks an instance at random) go
/// to the instance that placed the WebSocket, whose round robin then gives
/// the next server, which cannot hold the session. So at least a binomial
/// (100, 1/2) number break (the other half break two times in three); fewer
/// than 25 would happen about once in 10^7 runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_websocket_only_clients_in_cookie_mode_lose_their_sid() {
    let servers = socketio_servers(&[]).await;
    let (report, lbs) = ws_only_clients(&servers, "cookie", json!({"sequential": true})).await;
    let codec = CookieCodec::new(SECRET.as_bytes(), "LATCH", None).expect("codec");
    let clients = report["clients"].as_array().expect("clients array");
    for c in clients {
        let sid = c["sid"].as_str().unwrap_or("");
        assert!(
            session_id::untag(&codec, sid, now()).is_none(),
            "tagged in cookie mode: {c}"
        );
    }
    let unknown = report["totals"]["sessionUnknown"].as_u64().unwrap_or(0);
    assert!(
        unknown >= 25,
        "cookie mode should lose most websocket-only sessions: {}",
        report["totals"]
    );
    for lb in lbs {
        lb.handle.shutdown_within(Duration::from_secs(5)).await;
    }
}
