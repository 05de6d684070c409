//! latch in front of REAL socket.io v4: three `socket.io` servers (node,
//! `tests/socketio/server.js`) behind latch, and 200 `socket.io-client`
//! clients (`tests/socketio/client.js`) that connect, long-poll, upgrade to a
//! WebSocket and echo through it. Every echo answer names the server that
//! handled it, so a client whose requests were spread over several servers
//! shows up either as an engine.io `Session ID unknown` error (HTTP 400 to a
//! poll the server does not know) or as a mixed list of backends.
//!
//! Cases: WSS with cookie stickiness and least_conn (polling, then upgrade);
//! polling only with cookie stickiness; two latch instances sharing one config
//! with every connection sent to a random instance (cookie mode, then
//! ip_hash); and a control without stickiness that must produce
//! `Session ID unknown` errors, which shows the checks can fail.
//!
//! Needs `node` and `npm` on PATH: the test runs `npm ci` in `tests/socketio`
//! when `node_modules` is missing (the lock file is committed). Without them
//! it fails with a message; it never skips. Node processes are killed when
//! their guard drops, and servers also exit when their stdin closes.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use support::*;

const SECRET: &str = "socketio-test-secret-0123456789";
const CLIENTS: u64 = 200;
const ECHOES: u64 = 10;

// === node and npm ===

fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/socketio")
}

/// Checks that `node` and `npm` exist and runs `npm ci` once when the
/// packages are missing. Panics (never skips) when they cannot be had.
fn ensure_node_modules() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let dir = node_dir();
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "the socket.io test needs Node.js: `node --version` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "the socket.io test needs Node.js (>= 18) and npm on PATH, but `node` could not be run: {e}"
        ),
    }
    let installed = ["socket.io", "socket.io-client"].iter().all(|p| {
        dir.join("node_modules")
            .join(p)
            .join("package.json")
            .is_file()
    });
    if !installed {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "the socket.io test needs npm on PATH to install tests/socketio/package-lock.json, \
                     but `npm` could not be run: {e}"
                )
            });
        assert!(
            out.status.success(),
            "`npm ci` in {} failed ({}):\n{}\n{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    *done = true;
}

/// A `node server.js 0 <name>` child; killed (and reaped) on drop.
struct IoServer {
    child: Child,
    port: u16,
    name: String,
    /// stdout lines after `ready` (engine.io connection errors, as JSON)
    lines: Arc<Mutex<Vec<String>>>,
}

impl IoServer {
    fn spawn(name: &str) -> IoServer {
        let mut child = Command::new("node")
            .arg("server.js")
            .arg("0")
            .arg(name)
            .current_dir(node_dir())
            .stdin(Stdio::piped()) // kept open: the server exits when it closes
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start `node server.js` ({name}): {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = line.strip_prefix("ready ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(port.trim().parse::<u16>());
                    }
                } else {
                    sink.lock().unwrap().push(line);
                }
            }
        });
        let mut server = IoServer {
            child,
            port: 0,
            name: name.to_string(),
            lines,
        };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(port)) => server.port = port,
            Ok(Err(e)) => panic!("socket.io server {name} printed a bad port: {e}"),
            Err(e) => panic!("socket.io server {name} did not print `ready <port>` in 20 s: {e}"),
        }
        server
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// engine.io `Session ID unknown` errors this server reported.
    fn session_unknown(&self) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("Session ID unknown"))
            .count()
    }
}

impl Drop for IoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three socket.io servers `s0`, `s1`, `s2`.
fn spawn_io_servers() -> Vec<IoServer> {
    ensure_node_modules();
    (0..3).map(|i| IoServer::spawn(&format!("s{i}"))).collect()
}

/// Runs `node client.js <config>` (killed if it overruns) and parses its line.
async fn run_clients(config: Value) -> Value {
    let child = tokio::process::Command::new("node")
        .arg("client.js")
        .arg(config.to_string())
        .current_dir(node_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("could not start `node client.js`: {e}"));
    let out = within_for(
        Duration::from_secs(60),
        "node client.js",
        child.wait_with_output(),
    )
    .await
    .expect("node client.js output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node client.js failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line from client.js:\n{stdout}"));
    let report: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("bad JSON from client.js: {e}\n{line}"));
    eprintln!("client.js totals: {}", report["totals"]);
    report
}

// === latch configs ===

fn upstream_servers(servers: &[IoServer]) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|s| format!("{{ addr = \"{}\" }}", s.addr()))
        .collect();
    format!("servers = [{}]", list.join(", "))
}

/// One listener (`tls` line may be empty) → upstream `io`.
fn io_config(servers: &[IoServer], tls: &str, balance: &str, sticky: bool) -> String {
    io_config_mode(servers, tls, balance, sticky.then_some("cookie"))
}

/// [`io_config`] with `sticky.mode = MODE` (and the shared secret) when given.
fn io_config_mode(servers: &[IoServer], tls: &str, balance: &str, mode: Option<&str>) -> String {
    let mut t = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"io\"\n{tls}\n\n\
         [upstream.io]\nbalance = \"{balance}\"\n{}\n",
        upstream_servers(servers)
    );
    if let Some(mode) = mode {
        t.push_str(&format!(
            "\n[upstream.io.sticky]\nmode = \"{mode}\"\nsecret = \"{SECRET}\"\n"
        ));
    }
    t
}

// === checks ===

/// Clients per backend their session started on (`hello`).
fn spread(report: &Value) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for c in report["clients"].as_array().expect("clients array") {
        let name = c["hello"].as_str().unwrap_or("<none>").to_string();
        *m.entry(name).or_insert(0) += 1;
    }
    m
}

/// Zero errors of any kind, every client got all its echoes, every echo
/// answered by the server its session started on, and no server saw an
/// unknown session id.
fn assert_sticky_and_clean(what: &str, report: &Value, servers: &[IoServer]) {
    let totals = &report["totals"];
    let clients = report["clients"].as_array().expect("clients array");
    assert_eq!(clients.len() as u64, CLIENTS, "{what}: client count");
    let mut problems = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let hello = c["hello"].as_str();
        let backends: Vec<&str> = c["backends"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let errors = c["errors"].as_u64().unwrap_or(u64::MAX);
        let unknown = c["sessionUnknown"].as_u64().unwrap_or(u64::MAX);
        let moved = hello.is_none() || backends.iter().any(|b| Some(*b) != hello);
        if errors != 0 || unknown != 0 || backends.len() as u64 != ECHOES || moved {
            problems.push(format!(
                "client {i}: hello {hello:?}, echoes answered by {backends:?}, errors {errors} \
                 (session unknown {unknown}): {}",
                c["details"]
            ));
        }
    }
    let server_unknown: Vec<(String, usize)> = servers
        .iter()
        .map(|s| (s.name.clone(), s.session_unknown()))
        .collect();
    assert!(
        problems.is_empty(),
        "{what}: {} of {CLIENTS} clients failed (totals {totals}; server-side Session ID unknown {server_unknown:?}); first ones:\n{}",
        problems.len(),
        problems
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(totals["errors"], 0, "{what}: totals {totals}");
    assert_eq!(totals["sessionUnknown"], 0, "{what}: totals {totals}");
    assert_eq!(
        totals["echoes"],
        CLIENTS * ECHOES,
        "{what}: totals {totals}"
    );
    assert!(
        server_unknown.iter().all(|(_, n)| *n == 0),
        "{what}: servers saw unknown session ids: {server_unknown:?}"
    );
}

fn total(report: &Value, key: &str) -> u64 {
    report["totals"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("totals.{key} missing: {}", report["totals"]))
}

async fn shutdown(lb: Lb) {
    lb.handle.shutdown_within(Duration::from_secs(5)).await;
}

// === cases ===

/// 200 clients over WSS (polling first, then the WebSocket upgrade), cookie
/// stickiness, least_conn: all sessions stay on their server, the upgrade
/// works, and the load is spread.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wss_polling_then_upgrade_cookie_sticky_least_conn() {
    let servers = spawn_io_servers();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, cert_pem) = write_cert_files(dir.path(), "lb", &["127.0.0.1", "localhost"]);
    let tls = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}",
        cert.display(),
        key.display()
    );
    let lb = spawn_lb(&io_config(&servers, &tls, "least_conn", true)).await;

    let report = run_clients(json!({
        "urls": [format!("https://{}", lb.addr())],
        "clients": CLIENTS,
        "echoes": ECHOES,
        "transports": ["polling", "websocket"],
        "ca": cert_pem,
    }))
    .await;

    assert_sticky_and_clean("wss + cookie + least_conn", &report, &servers);
    let upgraded = total(&report, "upgraded");
    assert!(
        upgraded * 10 >= CLIENTS * 9,
        "only {upgraded} of {CLIENTS} clients upgraded to websocket: {}",
        report["totals"]
    );
    let spread = spread(&report);
    assert_eq!(
        spread.len(),
        3,
        "least_conn should place sessions on all three servers: {spread:?}"
    );
    shutdown(lb).await;
}

/// 200 polling-only clients over plain HTTP with cookie stickiness: every
/// long-poll and POST lands on the session's server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn polling_only_cookie_sticky() {
    let servers = spawn_io_servers();
    let lb = spawn_lb(&io_config(&servers, "", "round_robin", true)).await;

    let report = run_clients(json!({
        "urls": [format!("http://{}", lb.addr())],
        "clients": CLIENTS,
        "echoes": ECHOES,
        "transports": ["polling"],
    }))
    .await;

    assert_sticky_and_clean("polling + cookie", &report, &servers);
    assert_eq!(total(&report, "upgraded"), 0, "polling only never upgrades");
    let spread = spread(&report);
    assert_eq!(spread.len(), 3, "round robin placement: {spread:?}");
    shutdown(lb).await;
}

/// Two latch instances with one config; each request and WebSocket goes to a
/// random instance (new TCP connection each time, no keep-alive).
async fn two_instances(what: &str, balance: &str, sticky: bool) -> (Value, Vec<IoServer>) {
    two_instances_with(what, balance, sticky.then_some("cookie"), true).await
}

/// [`two_instances`] with sticky `mode`; `cookies = false` gives the
/// clients no cookie jar (like native and Node.js clients by default).
async fn two_instances_with(
    what: &str,
    balance: &str,
    mode: Option<&str>,
    cookies: bool,
) -> (Value, Vec<IoServer>) {
    let servers = spawn_io_servers();
    let config = io_config_mode(&servers, "", balance, mode);
    let a = spawn_lb(&config).await;
    let b = spawn_lb(&config).await;

    let report = run_clients(json!({
        "urls": [format!("http://{}", a.addr()), format!("http://{}", b.addr())],
        "clients": CLIENTS,
        "echoes": ECHOES,
        "transports": ["polling", "websocket"],
        "cookies": cookies,
    }))
    .await;

    assert_sticky_and_clean(what, &report, &servers);
    let upgraded = total(&report, "upgraded");
    assert!(
        upgraded * 10 >= CLIENTS * 9,
        "{what}: only {upgraded} of {CLIENTS} clients upgraded: {}",
        report["totals"]
    );
    // both instances carried traffic
    for (name, lb) in [("a", &a), ("b", &b)] {
        let snap = lb.handle.snapshot();
        let hits: u64 = snap.upstreams["io"]
            .backends
            .iter()
            .map(|b| b.total())
            .sum();
        assert!(hits > 0, "{what}: latch instance {name} got no requests");
    }
    shutdown(a).await;
    shutdown(b).await;
    (report, servers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_random_routing_cookie_sticky() {
    let (report, _servers) = two_instances("two instances + cookie", "round_robin", true).await;
    let spread = spread(&report);
    assert_eq!(
        spread.len(),
        3,
        "sessions spread over all servers: {spread:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_random_routing_ip_hash() {
    let (report, _servers) = two_instances("two instances + ip_hash", "ip_hash", false).await;
    // every client is 127.0.0.1, so ip_hash pins them all to one server
    let spread = spread(&report);
    assert_eq!(spread.len(), 1, "ip_hash from one address: {spread:?}");
}

/// Control: without stickiness, polling requests are spread by round robin
/// and the servers answer `400 Session ID unknown`. Proves the checks above
/// can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_without_stickiness_sessions_break() {
    let servers = spawn_io_servers();
    let lb = spawn_lb(&io_config(&servers, "", "round_robin", false)).await;

    let report = run_clients(json!({
        "urls": [format!("http://{}", lb.addr())],
        "clients": CLIENTS,
        "echoes": ECHOES,
        "transports": ["polling"],
    }))
    .await;

    eprintln!(
        "control, first client's errors: {}",
        report["clients"][0]["details"]
    );
    let unknown = total(&report, "sessionUnknown");
    let errors = total(&report, "errors");
    let server_unknown: usize = servers.iter().map(IoServer::session_unknown).sum();
    assert!(
        unknown > 0 && errors > 0,
        "without stickiness the clients should hit `Session ID unknown`: {}",
        report["totals"]
    );
    assert!(
        server_unknown > 0,
        "the servers should have reported `Session ID unknown` errors"
    );
    shutdown(lb).await;
}

// === session-id stickiness (clients without a cookie jar) ===

/// Clients with no cookie jar, two instances picked at random per request,
/// polling then upgrade: `sticky.mode = "session_id"` pins by the signed
/// tag latch put in the Engine.IO `sid`, so no session is ever unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_no_cookie_jar_session_id_sticky() {
    let what = "two instances + session_id, no cookie jar";
    let (report, _servers) =
        two_instances_with(what, "round_robin", Some("session_id"), false).await;
    let spread = spread(&report);
    assert_eq!(
        spread.len(),
        3,
        "sessions spread over all servers: {spread:?}"
    );
}

/// Control for the case above: the same clients in cookie mode lose their
/// sessions (they never send the cookie back).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_no_cookie_jar_cookie_mode_sessions_break() {
    let servers = spawn_io_servers();
    let config = io_config_mode(&servers, "", "round_robin", Some("cookie"));
    let a = spawn_lb(&config).await;
    let b = spawn_lb(&config).await;
    let report = run_clients(json!({
        "urls": [format!("http://{}", a.addr()), format!("http://{}", b.addr())],
        "clients": CLIENTS,
        "echoes": ECHOES,
        "transports": ["polling", "websocket"],
        "cookies": false,
    }))
    .await;
    let unknown = total(&report, "sessionUnknown");
    let server_unknown: usize = servers.iter().map(IoServer::session_unknown).sum();
    assert!(
        unknown > 0 && server_unknown > 0,
        "cookie mode without a cookie jar should hit `Session ID unknown` \
         (client {unknown}, servers {server_unknown}): {}",
        report["totals"]
    );
    shutdown(a).await;
    shutdown(b).await;
}
