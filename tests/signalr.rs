//! latch in front of SignalR, with the REAL `@microsoft/signalr` client.
//!
//! ASP.NET Core is not available on these machines, so the servers are a
//! small SignalR server written for the tests in Node.js
//! (`tests/signalr/server.js`): negotiate version 1 (connectionId and
//! connectionToken), the three transports (WebSockets, Server-Sent Events,
//! long polling), the JSON hub protocol with its handshake and pings, and
//! connection state per process: a request with an id this process did not
//! hand out gets `404 No Connection with that ID`, as ASP.NET Core answers.
//! So a request routed to another backend than its negotiate fails, as it
//! would with ASP.NET Core.
//!
//! Three servers behind latch; `tests/signalr/client.js` runs the real client
//! with one transport forced at a time (`HttpTransportType.LongPolling`,
//! `ServerSentEvents`, `WebSockets`), and every echo answer names the server
//! that handled it. Each transport runs with each mode of `STICKY_MODES`
//! (a new mode, such as session-id stickiness, is one more entry there and
//! its config lines in [`Stickiness::config`]); a control without
//! stickiness must fail with 404s, which shows the checks can fail.
//!
//! The Node client keeps cookies itself (fetch-cookie over a tough-cookie
//! jar, passed on to its WebSocket and EventSource), so cookie stickiness
//! works for it with no help.
//!
//! Server-Sent Events: every echo is a POST answered on the event stream,
//! and the client sends the next only once the answer came, so an event
//! held back by latch would stall the run (no buffering). A stream quieter
//! than `timeouts.read` is cut (that is what `read` means between body
//! reads); the SignalR pings the server sends keep it alive when they come
//! more often, which the last tests show both ways.
//!
//! Needs `node` and `npm` on PATH (`npm ci` runs in `tests/signalr` when
//! `node_modules` is missing; the lock file is committed). Without them the
//! test fails with the command to install them; it never skips.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::node::{NodeServer, ensure_npm_ci, node_dir, run_node_json};
use support::*;

const SECRET: &str = "signalr-test-secret-0123456789";
const CLIENTS: u64 = 30;
const ECHOES: u64 = 10;
const TRANSPORTS: [&str; 3] = ["LongPolling", "ServerSentEvents", "WebSockets"];

/// How latch keeps a SignalR connection on its server.
#[derive(Debug, Clone, Copy)]
enum Stickiness {
    Cookie,
    IpHash,
    /// `mode = "session_id"`, with clients that keep no cookies: only the
    /// tagged connectionToken can keep them on their server.
    SessionId,
    /// The control: `round_robin` alone.
    None,
}

/// The modes every transport is run with; a new mode is one more entry.
const STICKY_MODES: [Stickiness; 3] = [
    Stickiness::Cookie,
    Stickiness::IpHash,
    Stickiness::SessionId,
];

impl Stickiness {
    /// `balance` of `[upstream.hub]`, and the `[upstream.hub.sticky]` table
    /// (empty for none).
    fn config(self) -> (&'static str, String) {
        match self {
            Stickiness::Cookie => (
                "round_robin",
                format!("[upstream.hub.sticky]\nmode = \"cookie\"\nsecret = \"{SECRET}\"\n"),
            ),
            Stickiness::IpHash => ("ip_hash", String::new()),
            Stickiness::SessionId => (
                "round_robin",
                format!("[upstream.hub.sticky]\nmode = \"session_id\"\nsecret = \"{SECRET}\"\n"),
            ),
            Stickiness::None => ("round_robin", String::new()),
        }
    }
}

async fn spawn_servers(extra: &[&str]) -> Vec<NodeServer> {
    let dir = node_dir("signalr");
    ensure_npm_ci(&dir, &["@microsoft/signalr", "ws"]);
    let mut servers = Vec::new();
    for i in 0..3 {
        servers.push(NodeServer::spawn(&dir, "server.js", &format!("s{i}"), extra).await);
    }
    servers
}

fn config(servers: &[NodeServer], sticky: Stickiness, timeouts: &str) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|s| format!("{{ addr = \"{}\" }}", s.addr()))
        .collect();
    let (balance, sticky_table) = sticky.config();
    format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"hub\"\n\n[upstream.hub]\nbalance = \"{balance}\"\nservers = [{}]\n{sticky_table}\n{timeouts}\n",
        list.join(", ")
    )
}

async fn run_clients(lb: &Lb, transport: &str, extra: Value) -> Value {
    let mut cfg = json!({
        "url": format!("http://{}", lb.addr()),
        "transport": transport,
        "clients": CLIENTS,
        "echoes": ECHOES,
    });
    if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    let report = run_node_json(&node_dir("signalr"), "client.js", &cfg, LONG_TIMEOUT).await;
    eprintln!("{transport}: totals {}", report["totals"]);
    report
}

/// Every client got all its echoes, all from one server, with no error, and
/// no server saw an id it did not know. Returns clients per server.
fn assert_sticky(what: &str, report: &Value, servers: &[NodeServer]) -> Vec<usize> {
    let clients = report["clients"].as_array().expect("clients array");
    assert_eq!(clients.len() as u64, CLIENTS, "{what}: clients");
    let mut per_server = vec![0; servers.len()];
    let mut problems = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let backends: Vec<&str> = c["backends"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let one = backends.first().copied();
        let moved = backends.iter().any(|b| Some(*b) != one);
        if c["errors"] != 0 || backends.len() as u64 != ECHOES || moved {
            problems.push(format!(
                "client {i}: answered by {backends:?}: {}",
                c["details"]
            ));
        }
        if let Some(k) = servers.iter().position(|s| Some(s.name.as_str()) == one) {
            per_server[k] += 1;
        }
    }
    let unknown: Vec<usize> = servers.iter().map(|s| s.count("unknown_id")).collect();
    assert!(
        problems.is_empty(),
        "{what}: {} of {CLIENTS} clients failed (totals {}, unknown ids per server {unknown:?}):\n{}",
        problems.len(),
        report["totals"],
        problems[..problems.len().min(5)].join("\n")
    );
    assert!(
        unknown.iter().all(|&n| n == 0),
        "{what}: unknown ids {unknown:?}"
    );
    per_server
}

/// One transport through latch with `sticky`: every connection stays on the
/// server it negotiated with.
async fn sticky_case(transport: &str, sticky: Stickiness) {
    let servers = spawn_servers(&[]).await;
    let lb = spawn_lb(&config(&servers, sticky, "")).await;
    let extra = match sticky {
        Stickiness::SessionId => json!({"cookies": false}),
        _ => json!({}),
    };
    let report = run_clients(&lb, transport, extra).await;
    let what = format!("{transport} with {sticky:?}");
    let per_server = assert_sticky(&what, &report, &servers);
    match sticky {
        // Every client is 127.0.0.1: one server takes them all.
        Stickiness::IpHash => assert_eq!(per_server.iter().filter(|&&n| n > 0).count(), 1),
        _ => assert!(per_server.iter().all(|&n| n > 0), "{what}: {per_server:?}"),
    }
    lb.handle.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_stays_on_its_server() {
    for sticky in STICKY_MODES {
        sticky_case("LongPolling", sticky).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_stay_on_their_server() {
    for sticky in STICKY_MODES {
        sticky_case("ServerSentEvents", sticky).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_stay_on_their_server() {
    for sticky in STICKY_MODES {
        sticky_case("WebSockets", sticky).await;
    }
}

/// Control: `round_robin` without stickiness sends the requests after
/// negotiate to other servers, which answer 404 for every transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_without_stickiness_gets_404s_on_every_transport() {
    control_case(Stickiness::None, json!({})).await;
}

/// Control for session-id stickiness: clients without cookies in cookie
/// mode lose their connections on every transport (so the cookie jar is
/// really off, and only the tagged token keeps them in `session_id` mode).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_cookie_mode_without_cookies_gets_404s_on_every_transport() {
    control_case(Stickiness::Cookie, json!({"cookies": false})).await;
}

/// Every transport through latch with `sticky` and client options `extra`
/// breaks every connection with 404s.
///
/// The clients run one after the other, so nothing comes between one
/// client's requests in latch's round robin over three servers: its first
/// request after negotiate (the poll, the event stream or the WebSocket)
/// goes to the server after the one that negotiated, which does not know
/// the id. Every client must break. (Run at once, as they once were, the
/// clients' requests interleave: a client whose one request after negotiate
/// (WebSockets) happened to come round to its own server worked, about one
/// in three, so "more than half of 30 break" failed about 4% of the time,
/// and more when a burst of negotiates was followed by the connects in the
/// same order.) If stickiness were on, no client would break.
async fn control_case(sticky: Stickiness, extra: Value) {
    let servers = spawn_servers(&[]).await;
    let lb = spawn_lb(&config(&servers, sticky, "")).await;
    let mut extra = extra;
    if let Some(o) = extra.as_object_mut() {
        o.insert("sequential".into(), json!(true));
    }
    for transport in TRANSPORTS {
        let before: usize = servers.iter().map(|s| s.count("unknown_id")).sum();
        let report = run_clients(&lb, transport, extra.clone()).await;
        let clients = report["clients"].as_array().expect("clients array");
        let failed = clients.iter().filter(|c| c["errors"] != 0).count();
        let not_found = clients.iter().filter(|c| c["notFound"] != 0).count();
        assert!(
            failed as u64 == CLIENTS && not_found as u64 == CLIENTS,
            "{transport} with {sticky:?} and {extra} should break every connection with a 404 \
             ({failed} broke, {not_found} with a 404): {}",
            report["totals"]
        );
        // Their stdout is read in the background: wait for it (bounded).
        let unknown = || servers.iter().map(|s| s.count("unknown_id")).sum::<usize>();
        let what = format!("{transport}: the servers report unknown ids");
        wait_until(&what, TIMEOUT, || unknown() > before).await;
    }
    lb.handle.shutdown_within(Duration::from_secs(5)).await;
}

/// An event stream that pings (every 300 ms) more often than `read` (1 s)
/// lives on: a client quiet for 3 s before its last echo still gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_with_heartbeats_outlives_the_read_timeout() {
    let servers = spawn_servers(&["300"]).await;
    let timeouts = "[upstream.hub.timeouts]\nread = \"1s\"";
    let lb = spawn_lb(&config(&servers, Stickiness::Cookie, timeouts)).await;
    let report = run_clients(
        &lb,
        "ServerSentEvents",
        json!({"clients": 5, "echoes": 3, "pauseMs": 3000}),
    )
    .await;
    let clients = report["clients"].as_array().expect("clients array");
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(c["errors"], 0, "client {i}: {}", c["details"]);
        assert_eq!(
            c["backends"].as_array().map(Vec::len),
            Some(3),
            "client {i}: {c}"
        );
    }
    lb.handle.shutdown_within(Duration::from_secs(5)).await;
}

/// The same stream with pings every 5 s (longer than `read`, 1 s) is cut
/// after 1 s of silence: the client loses its connection. This is what
/// `read` promises; set it above the server's keep-alive interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_quieter_than_the_read_timeout_is_cut() {
    let servers = spawn_servers(&["5000"]).await;
    let timeouts = "[upstream.hub.timeouts]\nread = \"1s\"";
    let lb = spawn_lb(&config(&servers, Stickiness::Cookie, timeouts)).await;
    let report = run_clients(
        &lb,
        "ServerSentEvents",
        json!({"clients": 5, "echoes": 3, "pauseMs": 3000}),
    )
    .await;
    let clients = report["clients"].as_array().expect("clients array");
    assert!(
        clients.iter().all(|c| c["errors"] != 0),
        "every stream should have been cut: {}",
        report["totals"]
    );
    lb.handle.shutdown_within(Duration::from_secs(5)).await;
}

/// A long poll the server holds (3 s) longer than `read` (1 s) gets 504
/// from latch, and the client's connection ends with it. ASP.NET Core holds
/// a poll 90 s by default (`LongPollingOptions.PollTimeout`), longer than
/// latch's default `read` of 60 s: the README says to raise one or lower the
/// other. (Retries are limited to `error` here: with the default `timeout`
/// retry, the poll goes on to another server, which answers 404 for the
/// unknown id; the connection is lost all the same.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_held_longer_than_read_gets_504() {
    // Pings every 10 s, so nothing answers a held poll early.
    let servers = spawn_servers(&["10000", "3000"]).await;
    let timeouts = "[upstream.hub.timeouts]\nread = \"1s\"\n[upstream.hub.retry]\non = [\"error\"]";
    let lb = spawn_lb(&config(&servers, Stickiness::Cookie, timeouts)).await;
    let report = run_clients(
        &lb,
        "LongPolling",
        json!({"clients": 5, "echoes": 3, "pauseMs": 2500}),
    )
    .await;
    let clients = report["clients"].as_array().expect("clients array");
    for (i, c) in clients.iter().enumerate() {
        let details = c["details"].to_string();
        assert!(
            c["errors"] != 0 && details.contains("Gateway Timeout"),
            "client {i} should have lost its connection to a 504: {c}"
        );
    }
    lb.handle.shutdown_within(Duration::from_secs(5)).await;
}
