//! Connection limits of a listener, with real connections: `max_connections`
//! makes the accept loop wait for a permit that each connection holds for
//! its whole life (an upgraded tunnel included), `max_connections_per_client`
//! closes a client's connection beyond its share at once, both follow a
//! reload, both show in `/metrics` and `/status`; and when the process runs
//! out of file descriptors the accept loop backs off and logs once.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use support::*;

// === helpers ===

/// latch with an admin listener and one listener whose `[[listener]]`
/// section gets `limits` lines, in front of `app`.
fn limited_config(app: SocketAddr, limits: &str) -> String {
    format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n{limits}\n\n\
         [upstream.app]\n{}\n",
        servers(&[app])
    )
}

/// A connection from `from` (any 127.0.0.0/8 address) to `addr`.
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback address");
    within("connect", socket.connect(addr))
        .await
        .expect("connect")
}

const GET_NAME: &[u8] = b"GET /name HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";

/// Sends `GET /name` (Connection: close) on `s` and reads to EOF within `limit`.
/// `None` if nothing came back in time.
async fn get_name_on(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    // A refused connection may be closed before the request is written.
    let _ = s.write_all(GET_NAME).await;
    read_to_eof(s, limit).await
}

async fn read_to_eof(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(limit, read).await.ok()?;
    Some(out)
}

/// What "not served" means here: no byte back within this time. Only ever
/// used to show that something is still waiting; what it waits for is then
/// released and awaited with a bound.
const STILL_WAITING: Duration = Duration::from_millis(300);

/// The value of the sample `series` (name and labels exactly as exposed).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

async fn metrics(lb: &Lb) -> String {
    let admin = lb.handle.admin_addr().expect("admin bound");
    let (status, _, body) = http_get(admin, "admin", "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    String::from_utf8(body.to_vec()).expect("UTF-8 metrics")
}

async fn listener_status(lb: &Lb) -> serde_json::Value {
    let admin = lb.handle.admin_addr().expect("admin bound");
    let (status, _, body) = http_get(admin, "admin", "/status").await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON status");
    json["listeners"][0].clone()
}

/// Waits (bounded) until the open-connections gauge of the listener is `n`.
async fn wait_open(lb: &Lb, n: u64) {
    let series = format!("latch_listener_connections{{listener=\"{}\"}}", lb.addr());
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let text = metrics(lb).await;
        if sample(&text, &series) == Some(n as f64) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never became {n}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// === max_connections ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_makes_the_next_client_wait_for_a_free_slot() {
    let app = spawn_backend("app").await;
    let lb = spawn_lb(&limited_config(app.addr, "max_connections = 2")).await;
    let mut first = HttpConn::connect(lb.addr()).await;
    let mut second = HttpConn::connect(lb.addr()).await;
    assert_eq!(first.get("app.test", "/name").await.0, StatusCode::OK);
    assert_eq!(second.get("app.test", "/name").await.0, StatusCode::OK);
    wait_open(&lb, 2).await;

    // The third connects (the kernel's backlog takes it) but is not served.
    let mut third = connect_from([127, 0, 0, 1], lb.addr()).await;
    assert!(
        get_name_on(&mut third, STILL_WAITING).await.is_none(),
        "served beyond max_connections"
    );
    let text = metrics(&lb).await;
    let full = format!("latch_listener_full_total{{listener=\"{}\"}}", lb.addr());
    assert!(sample(&text, &full).is_some_and(|n| n >= 1.0), "{text}");
    let status = listener_status(&lb).await;
    assert_eq!(status["open"], 2, "{status}");
    assert_eq!(status["max_connections"], 2, "{status}");

    // One leaves: the third is accepted and answered.
    drop(first);
    let raw = read_to_eof(&mut third, TIMEOUT)
        .await
        .expect("third client served once a slot freed");
    assert_eq!(parse_response(&raw).status, 200);
    wait_open(&lb, 1).await;
    assert_eq!(second.get("app.test", "/name").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_tunnel_keeps_its_connection_slot() {
    let app = spawn_backend("app").await;
    let lb = spawn_lb(&limited_config(app.addr, "max_connections = 1")).await;
    let (mut ws, _) = ws_connect(lb.addr(), "/ws").await;
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text("hi"))
        .await
        .expect("send");
    let echoed = next_msg(&mut ws).await.expect("echo").expect("echo");
    assert_eq!(echoed.into_text().expect("text"), "hi");
    // The HTTP connection task has handed its socket to the tunnel; the
    // slot goes with the socket, not with the task.
    let mut waiting = connect_from([127, 0, 0, 1], lb.addr()).await;
    assert!(
        get_name_on(&mut waiting, STILL_WAITING).await.is_none(),
        "a tunnel's slot was given away while it was open"
    );
    wait_open(&lb, 1).await;
    drop(ws);
    let raw = read_to_eof(&mut waiting, TIMEOUT)
        .await
        .expect("served once the tunnel closed");
    assert_eq!(parse_response(&raw).status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_new_limits_to_a_kept_listener() {
    let app = spawn_backend("app").await;
    let lb = spawn_lb(&limited_config(app.addr, "max_connections = 1")).await;
    let mut first = HttpConn::connect(lb.addr()).await;
    assert_eq!(first.get("app.test", "/name").await.0, StatusCode::OK);
    let mut second = connect_from([127, 0, 0, 1], lb.addr()).await;
    assert!(get_name_on(&mut second, STILL_WAITING).await.is_none());

    let raised = limited_config(app.addr, "max_connections = 2");
    let origin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test.toml");
    let config = latch::Config::parse(&raised, &origin).expect("valid config");
    lb.handle.reload(config).expect("reload");
    let raw = read_to_eof(&mut second, TIMEOUT)
        .await
        .expect("served once the limit was raised");
    assert_eq!(parse_response(&raw).status, 200);
    assert_eq!(first.get("app.test", "/name").await.0, StatusCode::OK);
    assert_eq!(listener_status(&lb).await["max_connections"], 2);
}

// === max_connections_per_client ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_address_cannot_take_more_than_its_share() {
    let app = spawn_backend("app").await;
    let lb = spawn_lb(&limited_config(
        app.addr,
        "max_connections = 10\nmax_connections_per_client = 1",
    ))
    .await;
    let mut held = HttpConn::connect(lb.addr()).await; // from 127.0.0.1
    assert_eq!(held.get("app.test", "/name").await.0, StatusCode::OK);

    // A second connection from 127.0.0.1 is closed without an answer...
    let mut extra = connect_from([127, 0, 0, 1], lb.addr()).await;
    let got = get_name_on(&mut extra, TIMEOUT)
        .await
        .expect("the extra connection is closed, not left waiting");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    // ...while another address is served.
    let mut other = connect_from([127, 0, 0, 2], lb.addr()).await;
    let raw = get_name_on(&mut other, TIMEOUT)
        .await
        .expect("other client");
    let r = parse_response(&raw);
    assert_eq!((r.status, Bytes::from(r.body)), (200, Bytes::from("app")));

    let text = metrics(&lb).await;
    let refused = format!(
        "latch_listener_refused_total{{listener=\"{}\",reason=\"per_client\"}}",
        lb.addr()
    );
    assert_eq!(sample(&text, &refused), Some(1.0), "{text}");
    assert_eq!(listener_status(&lb).await["refused_per_client"], 1);

    // Once the first connection is gone, the address may connect again.
    drop(held);
    wait_open(&lb, 0).await;
    let mut again = connect_from([127, 0, 0, 1], lb.addr()).await;
    let raw = get_name_on(&mut again, TIMEOUT)
        .await
        .expect("served again");
    assert_eq!(parse_response(&raw).status, 200);
}

// === running out of file descriptors ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_accept_loop_backs_off_and_logs_once() {
    let app = spawn_backend("app").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("latch.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\nbind = \"127.0.0.1:{port}\"\nupstream = \"app\"\n\n\
             [upstream.app]\n{}\n",
            servers(&[app.addr])
        ),
    )
    .expect("write config");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let config = config.to_str().expect("UTF-8 path");
    let mut latch = Child::spawn_env(
        &["run", "--config", config],
        &[("RUST_LOG", "info,latch::listener=debug")],
    );
    latch
        .stderr
        .wait_for("the `listening` log line", |l| l.contains("listening"))
        .await;

    // No descriptor left above the ones in use: the next accept gets EMFILE.
    let fds: Vec<u32> = std::fs::read_dir(format!("/proc/{}/fd", latch.pid))
        .expect("/proc/PID/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let highest = fds.iter().copied().max().expect("some descriptors");
    let free_below = highest as usize + 1 - fds.len();
    prlimit(latch.pid, &format!("{}:", highest + 1)).await;

    // Fill the free descriptors below the limit, then one more connection
    // that cannot be accepted.
    let mut clients = Vec::new();
    for _ in 0..=free_below {
        clients.push(connect_from([127, 0, 0, 1], addr).await);
    }
    latch
        .stderr
        .wait_for("the accept-failure warning", |l| {
            l.contains("WARN") && l.contains("accept failed")
        })
        .await;
    for n in 1..=3 {
        latch
            .stderr
            .wait_for(&format!("backed-off retry #{n}"), |l| {
                l.contains("DEBUG") && l.contains("accept failed again")
            })
            .await;
    }
    let warnings = latch
        .stderr
        .text()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("accept"))
        .count();
    assert_eq!(
        warnings,
        1,
        "one warning per episode:\n{}",
        latch.stderr.text()
    );

    // Descriptors again: the waiting client is accepted and served.
    prlimit(latch.pid, "4096:").await;
    latch
        .stderr
        .wait_for("the recovery line", |l| l.contains("accepting again"))
        .await;
    let mut last = clients.pop().expect("a client");
    let raw = get_name_on(&mut last, TIMEOUT).await.expect("served");
    assert_eq!(parse_response(&raw).status, 200);
}

/// Sets the soft descriptor limit of process `pid` (`"N:"`) with prlimit(1).
async fn prlimit(pid: u32, nofile: &str) {
    let status = within(
        "prlimit",
        tokio::process::Command::new("prlimit")
            .arg(format!("--pid={pid}"))
            .arg(format!("--nofile={nofile}"))
            .status(),
    )
    .await
    .expect("run prlimit (util-linux)");
    assert!(status.success(), "prlimit --nofile={nofile} failed");
}
