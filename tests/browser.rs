//! The `latch demo` page in a real browser: headless Chromium (the Debian
//! package, `/usr/bin/chromium`) driven by `playwright-core` from
//! `tests/browser/demo.js` opens the page over HTTPS and waits for its
//! WebSocket echo and its long-poll exchange to pass.
//!
//! Needs `node`, `npm` and `/usr/bin/chromium`. When Chromium is missing and
//! the test runs as root, it installs Debian's package itself (as it installs
//! its npm packages); otherwise it fails with the command to run. It never
//! skips. The npm packages are installed
//! with `npm ci` when `tests/browser/node_modules` is missing. The screenshot is
//! kept at `target/browser/demo.png`.
//!
//! The page comes over HTTP/2 (ALPN `h2`), and its WebSocket rides an
//! HTTP/2 stream (RFC 8441): latch's own count of WebSockets over HTTP/2
//! says so.
//!
//! socket.io and SignalR clients run in Chromium over HTTP/2 too
//! (`tests/browser/socketio_h2.js`, `tests/browser/signalr_h2.js`).
//!
//! A second test (`tests/browser/close_codes.js`) shows Chromium getting
//! latch's WebSocket close codes where it used to see 1006.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::process::Command;

const CHROMIUM: &str = "/usr/bin/chromium";
/// Bound on `npm ci` (one small package from the registry).
const NPM_CI_LIMIT: Duration = Duration::from_secs(300);
/// Bound on one run of demo.js (it waits 20 s at most for the page itself).
const DEMO_LIMIT: Duration = Duration::from_secs(90);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// `target/browser/`, next to cargo's `target/tmp/`.
fn artifact_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent()
        .unwrap_or_else(|| panic!("{} has no parent", tmp.display()))
        .join("browser")
}

/// Runs `cmd` (killed on drop) to completion within `limit`; panics with
/// `what` if it cannot start or takes longer.
async fn run(what: &str, cmd: &mut Command, limit: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => panic!("{what}: not finished within {limit:?} (killed)"),
    }
}

/// Fails, with how to fix it, unless `tool --version` runs.
async fn require_tool(tool: &str, install: &str) {
    let out = Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "`{tool} --version` failed ({}): {}\nthis test needs {tool}: {install}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("cannot run `{tool}`: {e}\nthis test needs {tool}: {install}"),
    }
}

/// Installs the pinned npm packages unless they are there already.
async fn ensure_node_modules(dir: &Path) {
    if dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        return;
    }
    let out = run(
        "npm ci in tests/browser",
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir),
        NPM_CI_LIMIT,
    )
    .await;
    assert!(
        out.status.success(),
        "npm ci in {} failed ({}):\n{}\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Bound on installing Chromium with apt.
const APT_LIMIT: Duration = Duration::from_secs(600);

/// Makes sure Debian's Chromium is there, installing it when we may.
async fn ensure_chromium() {
    if Path::new(CHROMIUM).is_file() {
        return;
    }
    let hint = "this test needs Debian's Chromium: apt-get update && apt-get install -y chromium";
    let root = Command::new("id")
        .arg("-u")
        .output()
        .await
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    assert!(
        root,
        "{CHROMIUM} is missing and we are not root to install it; {hint}"
    );
    let install = Command::new("sh")
        .args([
            "-c",
            "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium",
        ])
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(APT_LIMIT, install)
        .await
        .unwrap_or_else(|_| panic!("installing Chromium took over {APT_LIMIT:?}; {hint}"))
        .unwrap_or_else(|e| panic!("cannot run apt-get ({e}); {hint}"));
    assert!(
        out.status.success() && Path::new(CHROMIUM).is_file(),
        "installing Chromium failed: {}\n{hint}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn demo_page_passes_its_checks_in_chromium() {
    let dir = browser_ready().await;

    let artifacts = artifact_dir();
    std::fs::create_dir_all(&artifacts)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", artifacts.display()));
    let shot = artifacts.join("demo.png");
    match std::fs::remove_file(&shot) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("cannot remove the old {}: {e}", shot.display()),
    }

    let demo = latch::demo::start(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("the demo starts");
    let addrs = demo.handle.listener_addrs();
    let url = format!("https://localhost:{}/", addrs[0].port());

    let out = run(
        "node demo.js",
        Command::new("node")
            .arg(dir.join("demo.js"))
            .arg(&url)
            .arg(&shot)
            .current_dir(&dir),
        DEMO_LIMIT,
    )
    .await;
    // Seen from latch's side: the page's WebSocket rode an HTTP/2 stream
    // (RFC 8441), on the connection the page came over.
    let h2 = demo.handle.h2_stats();
    demo.handle.shutdown_within(Duration::from_secs(1)).await;

    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo.js against {url} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("demo.js printed no JSON line:\n{stdout}\n{stderr}"));
    let json: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("demo.js printed bad JSON ({e}): {line}"));
    assert_eq!(json["ws"], "echo ok", "{json}");
    assert_eq!(json["poll"], "exchange ok", "{json}");
    assert_eq!(json["protocol"], "h2", "{json}");
    assert!(h2.streams >= 1, "{h2:?}");
    assert!(
        h2.websockets >= 1,
        "the page's WebSocket did not ride an HTTP/2 stream: {h2:?}"
    );
    let backend = json["backend"].as_str().unwrap_or_default();
    assert!(
        ["alpha", "beta", "gamma"].contains(&backend),
        "page served by an unknown backend: {json}"
    );

    let png =
        std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", shot.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        shot.display()
    );
    assert!(
        png.len() > 10 * 1024,
        "{} is only {} bytes",
        shot.display(),
        png.len()
    );
    eprintln!(
        "backend {backend}; screenshot ({} bytes) at {}",
        png.len(),
        shot.display()
    );
}

/// Chromium sees latch's close codes, not 1006: an idle tunnel gets 1001
/// "idle timeout", a tunnel whose backend drops the connection gets 1011
/// "backend lost", both clean (`wasClean`). Driven by
/// `tests/browser/close_codes.js`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chromium_sees_the_close_codes() {
    let dir = browser_ready().await;

    let backend = support::ws_recorder::spawn_ws_recorder().await;
    let lb = support::spawn_lb(&support::simple_config(
        &[backend.addr],
        "[upstream.app.timeouts]\ntunnel_idle = \"1s\"",
    ))
    .await;
    let base = format!("ws://127.0.0.1:{}", lb.addr().port());
    let out = run(
        "node close_codes.js",
        Command::new("node")
            .arg(dir.join("close_codes.js"))
            .arg(&base)
            .current_dir(&dir),
        DEMO_LIMIT,
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "close_codes.js against {base} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    let json: serde_json::Value = serde_json::from_str(line.unwrap_or_default())
        .unwrap_or_else(|e| panic!("close_codes.js printed no JSON ({e}):\n{stdout}\n{stderr}"));
    let expect = |name: &str, code: u64, reason: &str| {
        let got = &json[name];
        assert_eq!(got["code"], code, "{name}: {json}\n{stderr}");
        assert_eq!(got["reason"], reason, "{name}: {json}");
        assert_eq!(got["wasClean"], true, "{name}: {json}");
    };
    expect("chat", 1001, "idle timeout");
    expect("die", 1011, "backend lost");
}

/// Three socket.io servers behind two latch instances with one config;
/// headless Chromium with every cookie blocked runs socket.io clients whose
/// connections go to a random instance (`tests/browser/socketio_no_cookies.js`).
/// Three Node servers (`server.js` in `app_dir`, named s0..s2) and their
/// `servers = [...]` list for an upstream.
async fn three_node_servers(app_dir: &Path) -> (Vec<support::node::NodeServer>, String) {
    let mut servers = Vec::new();
    for i in 0..3 {
        servers.push(
            support::node::NodeServer::spawn(app_dir, "server.js", &format!("s{i}"), &[]).await,
        );
    }
    let list: Vec<String> = servers
        .iter()
        .map(|s| format!("{{ addr = \"{}\" }}", s.addr()))
        .collect();
    (servers, list.join(", "))
}

/// One listener in front of round-robin upstream `up` over `servers` with
/// `mode` stickiness; TLS from `srv.crt`/`srv.key` when `tls`.
fn sticky_config(up: &str, servers: &str, mode: &str, tls: bool) -> String {
    let tls = match tls {
        true => "tls = { cert = \"srv.crt\", key = \"srv.key\" }\n",
        false => "",
    };
    format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"{up}\"\n{tls}\n\
         [upstream.{up}]\nbalance = \"round_robin\"\nservers = [{servers}]\n\n\
         [upstream.{up}.sticky]\nmode = \"{mode}\"\nsecret = \"browser-test-secret-0123456789\"\n"
    )
}

/// latch on one TLS listener (a certificate for `localhost`, kept in the
/// returned directory) in front of `up` over `servers`, `session_id` sticky.
async fn tls_session_id_lb(up: &str, servers: &str) -> (support::Lb, tempfile::TempDir) {
    let certs = tempfile::tempdir().expect("tempdir");
    support::write_cert_files(certs.path(), "srv", &["localhost"]);
    let config = sticky_config(up, servers, "session_id", true);
    (
        support::spawn_lb_in(&config, Some(certs.path())).await,
        certs,
    )
}

/// Chromium, node and npm there, and the browser scripts' packages
/// installed: their directory.
async fn browser_ready() -> PathBuf {
    ensure_chromium().await;
    require_tool("node", "apt-get install -y nodejs npm").await;
    require_tool("npm", "apt-get install -y npm").await;
    let dir = browser_dir();
    ensure_node_modules(&dir).await;
    dir
}

async fn socketio_without_cookies(mode: &str) -> (serde_json::Value, usize) {
    let dir = browser_ready().await;
    let io_dir = support::node::node_dir("socketio");
    support::node::ensure_npm_ci(&io_dir, &["socket.io", "socket.io-client"]);
    let (servers, list) = three_node_servers(&io_dir).await;
    let config = sticky_config("io", &list, mode, false);
    let a = support::spawn_lb(&config).await;
    let b = support::spawn_lb(&config).await;
    let json = support::node::run_node_json(
        &dir,
        "socketio_no_cookies.js",
        &serde_json::json!({
            "urls": [format!("http://{}", a.addr()), format!("http://{}", b.addr())],
            "clients": 6,
            "echoes": 6,
        }),
        DEMO_LIMIT,
    )
    .await;
    a.handle.shutdown_within(Duration::from_secs(1)).await;
    b.handle.shutdown_within(Duration::from_secs(1)).await;
    let unknown = servers.iter().map(|s| s.count("Session ID unknown")).sum();
    eprintln!(
        "{mode}: totals {}, servers saw {unknown} unknown session ids",
        json["totals"]
    );
    // `navigator.cookieEnabled` stays true in headless Chromium whatever the
    // content setting says; the cookie-mode control below is the proof that
    // no cookie comes back.
    (json, unknown)
}

/// `sticky.mode = "session_id"`: Chromium with cookies blocked keeps every
/// socket.io session on its server, polling then upgraded, across two
/// instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chromium_without_cookies_socketio_session_id_sticky() {
    let (json, unknown) = socketio_without_cookies("session_id").await;
    let totals = &json["totals"];
    assert_eq!(totals["errors"], 0, "{json}");
    assert_eq!(totals["echoes"], 36, "{json}");
    assert_eq!(unknown, 0, "{json}");
    for c in json["clients"].as_array().expect("clients") {
        let hello = c["hello"].as_str().expect("hello");
        let backends = c["backends"].as_array().expect("backends");
        assert!(backends.iter().all(|b| b == hello), "moved: {c}");
        assert_eq!(c["upgraded"], true, "not upgraded: {c}");
    }
}

/// Control: the same browser in cookie mode loses its sessions, which shows
/// the profile really blocks cookies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chromium_without_cookies_socketio_cookie_mode_breaks() {
    let (json, unknown) = socketio_without_cookies("cookie").await;
    assert!(
        json["totals"]["errors"].as_u64() > Some(0) && unknown > 0,
        "{json}"
    );
}

/// socket.io over HTTP/2 in Chromium: eight clients at once through one
/// HTTPS latch (session_id stickiness, which pins each session rather than
/// the browser, so they spread; three socket.io servers), each polling
/// then upgrading, all on one HTTP/2 connection
/// (`tests/browser/socketio_h2.js`). Every echo comes from the client's
/// first server, every client upgrades, and latch counts the WebSockets as
/// HTTP/2 streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chromium_runs_socketio_over_h2() {
    const CLIENTS: u64 = 8;
    let dir = browser_ready().await;
    let io_dir = support::node::node_dir("socketio");
    support::node::ensure_npm_ci(&io_dir, &["socket.io", "socket.io-client"]);
    let (servers, list) = three_node_servers(&io_dir).await;
    let (lb, _certs) = tls_session_id_lb("io", &list).await;
    let json = support::node::run_node_json(
        &dir,
        "socketio_h2.js",
        &serde_json::json!({
            "url": format!("https://localhost:{}", lb.addr().port()),
            "clients": CLIENTS,
            "echoes": 6,
        }),
        DEMO_LIMIT,
    )
    .await;
    let h2 = lb.handle.h2_stats();
    lb.handle.shutdown_within(Duration::from_secs(1)).await;
    let unknown: usize = servers.iter().map(|s| s.count("Session ID unknown")).sum();
    eprintln!("socket.io over h2: {}; latch: {h2:?}", json["totals"]);
    assert_eq!(json["protocol"], "h2", "{json}");
    let totals = &json["totals"];
    assert_eq!(totals["errors"], 0, "{json}");
    assert_eq!(totals["echoes"], CLIENTS * 6, "{json}");
    assert_eq!(totals["upgraded"], CLIENTS, "{json}");
    assert_eq!(unknown, 0, "{json}");
    for c in json["clients"].as_array().expect("clients") {
        let hello = c["hello"].as_str().expect("hello");
        let backends = c["backends"].as_array().expect("backends");
        assert!(backends.iter().all(|b| b == hello), "moved: {c}");
    }
    let used: std::collections::HashSet<&str> = json["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .filter_map(|c| c["hello"].as_str())
        .collect();
    assert!(used.len() > 1, "every client on one server: {used:?}");
    assert_eq!(h2.websockets, CLIENTS, "{h2:?}");
    assert_eq!(h2.connections, 1, "{h2:?}");
    assert!(
        h2.streams > 2 * CLIENTS,
        "the long polls did not ride h2: {h2:?}"
    );
}

/// SignalR over HTTP/2 in Chromium: the real `@microsoft/signalr` browser
/// client through one HTTPS latch (session_id stickiness, three SignalR-protocol
/// servers, `tests/signalr/server.js`), each transport forced in turn, six
/// connections at once (`tests/browser/signalr_h2.js`). Every echo comes
/// from the connection's first server; the WebSockets rode HTTP/2 streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chromium_runs_signalr_over_h2() {
    const CLIENTS: u64 = 6;
    const ECHOES: u64 = 5;
    let dir = browser_ready().await;
    let hub_dir = support::node::node_dir("signalr");
    support::node::ensure_npm_ci(&hub_dir, &["@microsoft/signalr", "ws"]);
    let bundle = hub_dir.join("node_modules/@microsoft/signalr/dist/browser/signalr.min.js");
    assert!(
        bundle.is_file(),
        "no browser bundle at {}",
        bundle.display()
    );
    let (servers, list) = three_node_servers(&hub_dir).await;
    let (lb, _certs) = tls_session_id_lb("hub", &list).await;
    let json = support::node::run_node_json(
        &dir,
        "signalr_h2.js",
        &serde_json::json!({
            "url": format!("https://localhost:{}", lb.addr().port()),
            "bundle": bundle,
            "clients": CLIENTS,
            "echoes": ECHOES,
        }),
        DEMO_LIMIT,
    )
    .await;
    let h2 = lb.handle.h2_stats();
    lb.handle.shutdown_within(Duration::from_secs(1)).await;
    eprintln!("SignalR over h2: {}; latch: {h2:?}", json["transports"]);
    assert_eq!(json["protocol"], "h2", "{json}");
    for t in ["WebSockets", "ServerSentEvents", "LongPolling"] {
        let r = &json["transports"][t];
        assert_eq!(r["totals"]["errors"], 0, "{t}: {r}");
        assert_eq!(r["totals"]["echoes"], CLIENTS * ECHOES, "{t}: {r}");
        for c in r["clients"].as_array().expect("clients") {
            let backends = c["backends"].as_array().expect("backends");
            assert!(backends.iter().all(|b| *b == backends[0]), "{t} moved: {c}");
        }
    }
    let unknown: usize = servers.iter().map(|s| s.count("unknown_id")).sum();
    assert_eq!(unknown, 0, "a server saw an id it did not know");
    // session_id stickiness pins each connection, not the browser: the
    // connections spread over the servers, and each stays on its own.
    let used: std::collections::HashSet<String> = json["transports"]
        .as_object()
        .expect("transports")
        .values()
        .flat_map(|r| r["clients"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["backends"][0].as_str().map(str::to_owned))
        .collect();
    assert!(used.len() > 1, "every connection on one server: {used:?}");
    assert_eq!(h2.websockets, CLIENTS, "{h2:?}");
}
