//! L4 stream mode (`[[listener]] mode = "tcp"`) against real Redis servers:
//! three `redis-server`s behind a TCP listener, driven through latch by
//! `redis-cli`, `redis-benchmark` and a Rust RESP client that binds its own
//! source address (127.0.0.x) to play many clients. Placement (ip_hash,
//! least_conn, max_conns), retries on a killed server, reload with drain,
//! half-close, the idle timeout, TLS termination, metrics, /status and the
//! access log are checked on the wire.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use latch::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::redis::{Redis, Reply, RespConn, connect_from, redis_cli};
use support::{Child, counts, http_get, lb_backends, spawn_lb, within};

async fn three() -> Vec<Redis> {
    let (a, b, c) = tokio::join!(Redis::start(), Redis::start(), Redis::start());
    vec![a, b, c]
}

fn addrs(redis: &[Redis]) -> Vec<SocketAddr> {
    redis.iter().map(|r| r.addr).collect()
}

/// A TCP listener (plus `listener` lines) in front of upstream `app` over
/// `servers`, with `upstream` lines (keys first, then tables) appended.
fn config(servers: &[SocketAddr], upstream: &str, listener: &str) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    format!(
        "[server]\ngrace = \"5s\"\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nmode = \"tcp\"\nupstream = \"app\"\n{listener}\n\n\
         [upstream.app]\nservers = [{}]\n{upstream}\n",
        list.join(", ")
    )
}

fn parse(toml: &str) -> Config {
    let origin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test.toml");
    Config::parse(toml, &origin).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

const IP_HASH: &str = "balance = \"ip_hash\"\nip_prefix_v4 = 32\n";

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

async fn metrics(lb: &support::Lb) -> String {
    let admin = lb.handle.admin_addr().expect("admin listener");
    let (status, _, body) = http_get(admin, "localhost", "/metrics").await;
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body).into_owned()
}

/// Sum of the samples of `name` whose labels contain every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Waits (bounded) until a `latch_tcp_closed_total` sample with `end`
/// reaches `want`: the count follows the close the client saw.
async fn wait_closed(lb: &support::Lb, end: &str, want: u64) {
    let label = format!("end=\"{end}\"");
    let deadline = tokio::time::Instant::now() + support::TIMEOUT;
    loop {
        let m = metrics(lb).await;
        let n = sample(&m, "latch_tcp_closed_total", &[&label]);
        if n == want {
            return;
        }
        assert!(
            n < want && tokio::time::Instant::now() < deadline,
            "{n} closed as {end}, want {want}\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_hash_keeps_each_client_address_on_one_server() {
    let redis = three().await;
    let lb = spawn_lb(&config(&addrs(&redis), IP_HASH, "")).await;
    let mut placed: HashMap<u8, u16> = HashMap::new();
    for x in 2..=9 {
        let mut ports = HashSet::new();
        for _ in 0..3 {
            let mut c = connect_from(lb.addr(), ip(x)).await.unwrap();
            ports.insert(c.server_port().await.unwrap());
        }
        assert_eq!(ports.len(), 1, "127.0.0.{x} reached {ports:?}");
        placed.insert(x, *ports.iter().next().unwrap());
    }
    let used: HashSet<u16> = placed.values().copied().collect();
    assert!(used.len() >= 2, "8 addresses all on one server: {placed:?}");

    // redis-cli (from 127.0.0.1) lands where the Rust client from .1 does.
    let mut own = connect_from(lb.addr(), ip(1)).await.unwrap();
    let home = own.server_port().await.unwrap();
    let port = lb.addr().port();
    for _ in 0..2 {
        let out = redis_cli(port, &["CONFIG", "GET", "port"]).await;
        assert_eq!(out.lines().nth(1), Some(home.to_string().as_str()), "{out}");
    }
    assert_eq!(redis_cli(port, &["SET", "via-cli", "1"]).await.trim(), "OK");

    // redis-benchmark: 8 connections at once, all from 127.0.0.1.
    let out = within(
        "redis-benchmark",
        tokio::process::Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-t", "set,get", "-n", "2000", "-c", "8", "-q"])
            .output(),
    )
    .await
    .expect("redis-benchmark (apt-get install -y redis-server)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("GET:"), "{text}");
    // Every key went to the one server 127.0.0.1 hashes to.
    for r in &redis {
        let mut direct = connect_from(r.addr, ip(1)).await.unwrap();
        let keys = match direct.cmd(&["DBSIZE"]).await.unwrap() {
            Reply::Int(n) => n,
            other => panic!("DBSIZE: {other:?}"),
        };
        assert_eq!(keys > 0, r.port() == home, "{} has {keys} keys", r.port());
    }

    // Bytes both ways are in the metrics, under the server that moved them.
    let m = metrics(&lb).await;
    let server = format!("server=\"127.0.0.1:{home}\"");
    let up = sample(&m, "latch_tcp_bytes_total", &[&server, "to_server"]);
    let down = sample(&m, "latch_tcp_bytes_total", &[&server, "to_client"]);
    assert!(
        up > 2000 * 20 && down > 2000 * 5,
        "bytes {up} / {down}\n{m}"
    );
    let opened = sample(&m, "latch_tcp_connections_total", &["outcome=\"opened\""]);
    assert!(opened >= 24 + 1 + 3 + 8, "{opened} opened\n{m}");
    drop(own);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_servers_clients_move_on_retry() {
    let mut redis = three().await;
    let extra = format!(
        "{IP_HASH}max_fails = 1\nfail_timeout = \"60s\"\n\
         [upstream.app.retry]\non = [\"error\", \"timeout\"]\ntries = 3\n"
    );
    let lb = spawn_lb(&config(&addrs(&redis), &extra, "")).await;
    let from = ip(7);
    let mut held = connect_from(lb.addr(), from).await.unwrap();
    let first = held.server_port().await.unwrap();
    let victim = redis.iter_mut().find(|r| r.port() == first).unwrap();
    victim.kill().await;

    // The connection on the killed server is closed at once, not left hanging.
    within("the client to see its server gone", held.closed())
        .await
        .unwrap();
    // The same address connects again: the refused connect is retried on the
    // next server, and the client never sees the failure.
    let mut again = connect_from(lb.addr(), from).await.unwrap();
    let second = again.server_port().await.unwrap();
    assert_ne!(second, first);
    assert_eq!(
        again.cmd(&["PING"]).await.unwrap(),
        Reply::Simple("PONG".into())
    );
    let m = metrics(&lb).await;
    let dead = format!("server=\"127.0.0.1:{first}\"");
    let failed = sample(
        &m,
        "latch_tcp_connections_total",
        &[&dead, "connect_failed"],
    );
    assert_eq!(failed, 1, "{m}");
    assert_eq!(
        sample(&m, "latch_retries_total", &["reason=\"error\""]),
        1,
        "{m}"
    );
    // max_fails = 1: the server is out, so later clients do not try it again.
    let mut third = connect_from(lb.addr(), from).await.unwrap();
    assert_eq!(third.server_port().await.unwrap(), second);
    let m = metrics(&lb).await;
    assert_eq!(
        sample(
            &m,
            "latch_tcp_connections_total",
            &[&dead, "connect_failed"]
        ),
        1
    );
    assert_eq!(
        sample(&m, "latch_upstream_servers", &["state=\"out\""]),
        1,
        "{m}"
    );
}

/// Weights and backups apply: primaries of weight 3 and 1 take new
/// connections 3:1 (smooth round robin) and the backup none; with both
/// primaries dead, the refused connects are retried and the backup takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_and_backup_apply_to_tcp_connections() {
    let mut redis = three().await;
    let servers = format!(
        "servers = [{{ addr = \"{}\", weight = 3 }}, {{ addr = \"{}\" }}, {{ addr = \"{}\", backup = true }}]",
        redis[0].addr, redis[1].addr, redis[2].addr
    );
    let extra = "max_fails = 1\nfail_timeout = \"60s\"\n[upstream.app.retry]\ntries = 3\n";
    let toml = config(&[], extra, "").replace("servers = []", &servers);
    let lb = spawn_lb(&toml).await;
    let mut per_port: HashMap<u16, usize> = HashMap::new();
    for _ in 0..8 {
        let mut c = connect_from(lb.addr(), ip(1)).await.unwrap();
        *per_port.entry(c.server_port().await.unwrap()).or_default() += 1;
    }
    let want: HashMap<u16, usize> = [(redis[0].port(), 6), (redis[1].port(), 2)].into();
    assert_eq!(per_port, want);
    redis[0].kill().await;
    redis[1].kill().await;
    let mut c = connect_from(lb.addr(), ip(1)).await.unwrap();
    assert_eq!(c.server_port().await.unwrap(), redis[2].port());
    let m = metrics(&lb).await;
    assert!(
        sample(&m, "latch_tcp_connections_total", &["connect_failed"]) >= 1,
        "{m}"
    );
}

/// Active checks run for a TCP listener's servers as for HTTP: a server
/// whose port stops answering is taken out by its `tcp` check before any
/// client has to fail a connect on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_tcp_check_takes_a_dead_server_out_before_clients_try_it() {
    let mut redis = three().await;
    let extra = format!(
        "{IP_HASH}[upstream.app.check]\ntype = \"tcp\"\ninterval = \"50ms\"\n\
         timeout = \"200ms\"\nrise = 1\nfall = 1\n"
    );
    let lb = spawn_lb(&config(&addrs(&redis), &extra, "")).await;
    let from = ip(9);
    let mut c = connect_from(lb.addr(), from).await.unwrap();
    let home = c.server_port().await.unwrap();
    drop(c);
    redis
        .iter_mut()
        .find(|r| r.port() == home)
        .unwrap()
        .kill()
        .await;
    let backend = lb_backends(&lb)
        .into_iter()
        .find(|b| b.addr.port() == home)
        .unwrap();
    support::wait_until("the check to mark it down", support::TIMEOUT, || {
        !backend.condition.active_up()
    })
    .await;
    let mut c = connect_from(lb.addr(), from).await.unwrap();
    assert_ne!(c.server_port().await.unwrap(), home);
    let m = metrics(&lb).await;
    assert_eq!(
        sample(&m, "latch_tcp_connections_total", &["connect_failed"]),
        0,
        "{m}"
    );
    assert_eq!(sample(&m, "latch_upstream_servers", &["state=\"down\""]), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_open_connections_and_drains_removed_servers() {
    let redis = three().await;
    let all = addrs(&redis);
    let lb = spawn_lb(&config(&all, IP_HASH, "")).await;
    let from = ip(8);
    let mut c = connect_from(lb.addr(), from).await.unwrap();
    let home = c.server_port().await.unwrap();
    c.cmd(&["SET", "k", "before"]).await.unwrap();

    // The same config again: the open connection goes on.
    lb.handle.reload(parse(&config(&all, IP_HASH, ""))).unwrap();
    let got = c.cmd(&["GET", "k"]).await.unwrap();
    assert_eq!(got.text(), "before");

    // Its server removed: the connection drains (still answers), new clients
    // from the same address go to a server that stays.
    let rest: Vec<SocketAddr> = all.iter().copied().filter(|a| a.port() != home).collect();
    let shorter = config(&rest, IP_HASH, "").replace("grace = \"5s\"", "grace = \"1s\"");
    lb.handle.reload(parse(&shorter)).unwrap();
    let got = c.cmd(&["GET", "k"]).await.unwrap();
    assert_eq!(got.text(), "before");
    let draining = lb.handle.pool().draining.servers();
    assert_eq!(draining.len(), 1);
    assert_eq!((draining[0].addr.port(), draining[0].tunnels()), (home, 1));
    let admin = lb.handle.admin_addr().unwrap();
    let (_, _, status) = http_get(admin, "localhost", "/status").await;
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    assert_eq!(status["draining"][0]["tunnels"], 1, "{status}");
    let mut other = connect_from(lb.addr(), from).await.unwrap();
    assert_ne!(other.server_port().await.unwrap(), home);

    // The grace period (1 s) over, the drained connection is closed.
    within("the drained connection to close", c.closed())
        .await
        .unwrap();
    wait_closed(&lb, "server removed", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_counts_open_connections_and_max_conns_refuses() {
    let redis = three().await;
    let list: Vec<String> = redis
        .iter()
        .map(|r| format!("{{ addr = \"{}\", max_conns = 2 }}", r.addr))
        .collect();
    let toml = config(&addrs(&redis), "balance = \"least_conn\"\n", "").replace(
        &format!(
            "servers = [{}]",
            addrs(&redis)
                .iter()
                .map(|a| format!("{{ addr = \"{a}\" }}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        &format!("servers = [{}]", list.join(", ")),
    );
    let lb = spawn_lb(&toml).await;
    let mut open = Vec::new();
    let mut per_port: HashMap<u16, usize> = HashMap::new();
    for _ in 0..6 {
        let mut c = connect_from(lb.addr(), ip(1)).await.unwrap();
        *per_port.entry(c.server_port().await.unwrap()).or_default() += 1;
        open.push(c);
    }
    assert!(per_port.values().all(|&n| n == 2), "{per_port:?}");
    assert_eq!(counts(&lb), vec![(0, 2); 3]);
    let admin = lb.handle.admin_addr().unwrap();
    let (_, _, status) = http_get(admin, "localhost", "/status").await;
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    let tunnels: Vec<_> = status["upstreams"][0]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tunnels"].as_u64().unwrap())
        .collect();
    assert_eq!(tunnels, vec![2, 2, 2], "{status}");

    // Every server is at max_conns: the seventh client is closed at once.
    let mut seventh = connect_from(lb.addr(), ip(1)).await.unwrap();
    within("the refused client to be closed", seventh.closed())
        .await
        .unwrap();
    let m = metrics(&lb).await;
    assert_eq!(
        sample(&m, "latch_tcp_connections_total", &["outcome=\"refused\""]),
        1,
        "{m}"
    );
    // Closing connections gives their slots back.
    open.clear();
    support::wait_all_idle(&lb).await;
    let mut c = connect_from(lb.addr(), ip(1)).await.unwrap();
    assert!(c.server_port().await.is_ok());
    assert_eq!(lb_backends(&lb).len(), 3);
}

/// `max_connections` holds for a TCP listener as for HTTP: at the limit the
/// next client waits in the backlog and is served when a connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_holds_the_next_client_until_one_closes() {
    let redis = Redis::start().await;
    let lb = spawn_lb(&config(&[redis.addr], "", "max_connections = 1")).await;
    let mut first = connect_from(lb.addr(), ip(1)).await.unwrap();
    assert_eq!(
        first.cmd(&["PING"]).await.unwrap(),
        Reply::Simple("PONG".into())
    );
    let mut second = connect_from(lb.addr(), ip(2)).await.unwrap();
    second.send(&["PING"]).await.unwrap();
    let full = format!("latch_listener_full_total{{listener=\"{}\"}}", lb.addr());
    let deadline = tokio::time::Instant::now() + support::TIMEOUT;
    while !metrics(&lb)
        .await
        .lines()
        .any(|l| l.starts_with(&full) && !l.ends_with(" 0"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener never filled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(first);
    assert_eq!(second.reply().await.unwrap(), Reply::Simple("PONG".into()));
}

/// A server that half-closes first: it sends a greeting and shuts its write
/// side, then reads what the client still sends; and one that reads until
/// the client's FIN and only then answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_passes_through_both_ways() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        // First connection: the server closes its side first.
        let (mut s, _) = server.accept().await.unwrap();
        s.write_all(b"greeting").await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        tx.send(got).unwrap();
        // Second: the client closes first; the answer comes after its FIN.
        let (mut s, _) = server.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(format!("got {} bytes", got.len()).as_bytes())
            .await
            .unwrap();
        s.shutdown().await.unwrap();
        tx.send(got).unwrap();
    });
    let lb = spawn_lb(&config(&[addr], "", "")).await;
    let mut rx = rx;

    let mut c = TcpStream::connect(lb.addr()).await.unwrap();
    let mut greeting = Vec::new();
    within("the server's FIN", c.read_to_end(&mut greeting))
        .await
        .unwrap();
    assert_eq!(greeting, b"greeting");
    c.write_all(b"still talking after the server's FIN")
        .await
        .unwrap();
    c.shutdown().await.unwrap();
    let got = within("the server to read", rx.recv()).await.unwrap();
    assert_eq!(got, b"still talking after the server's FIN");

    let mut c = TcpStream::connect(lb.addr()).await.unwrap();
    let upload = vec![b'x'; 300_000];
    c.write_all(&upload).await.unwrap();
    c.shutdown().await.unwrap();
    let mut answer = String::new();
    within(
        "the answer after the client's FIN",
        c.read_to_string(&mut answer),
    )
    .await
    .unwrap();
    assert_eq!(answer, "got 300000 bytes");
    assert_eq!(within("second", rx.recv()).await.unwrap().len(), 300_000);
    wait_closed(&lb, "closed", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_tunnel_idle() {
    let redis = Redis::start().await;
    let extra = "[upstream.app.timeouts]\ntunnel_idle = \"400ms\"\n";
    let lb = spawn_lb(&config(&[redis.addr], extra, "")).await;
    let mut c = connect_from(lb.addr(), ip(1)).await.unwrap();
    // Traffic keeps it open past the idle timeout.
    let started = Instant::now();
    loop {
        assert_eq!(
            c.cmd(&["PING"]).await.unwrap(),
            Reply::Simple("PONG".into())
        );
        if started.elapsed() > Duration::from_millis(1000) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then silence: closed 400 ms after the last byte (latch read the PONG
    // a moment before this client did).
    let quiet = Instant::now();
    within("the idle connection to close", c.closed())
        .await
        .unwrap();
    assert!(
        quiet.elapsed() >= Duration::from_millis(390),
        "{:?}",
        quiet.elapsed()
    );
    wait_closed(&lb, "idle timeout", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_terminated_and_plain_tcp_forwarded() {
    let redis = Redis::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, pem) = support::write_cert_files(dir.path(), "lb", &["localhost"]);
    let tls = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}",
        cert.display(),
        key.display()
    );
    let lb = spawn_lb(&config(&[redis.addr], "", &tls)).await;
    let connector = support::tls_connector(&[&pem]);
    let stream = support::tls_connect(lb.addr(), "localhost", &connector)
        .await
        .unwrap();
    let mut c = RespConn::new(stream);
    assert_eq!(
        c.cmd(&["PING"]).await.unwrap(),
        Reply::Simple("PONG".into())
    );
    c.cmd(&["SET", "over-tls", "yes"]).await.unwrap();
    assert_eq!(c.server_port().await.unwrap(), redis.port());
    // The value reached the plain-TCP server.
    let mut direct = connect_from(redis.addr, ip(1)).await.unwrap();
    assert_eq!(
        direct.cmd(&["GET", "over-tls"]).await.unwrap().text(),
        "yes"
    );
    // A client speaking plain TCP to the TLS listener gets nowhere near Redis.
    let mut plain = connect_from(lb.addr(), ip(1)).await.unwrap();
    assert!(plain.cmd(&["PING"]).await.is_err());
}

/// The `latch` binary with a JSON access log: one line per closed TCP
/// connection, with the bytes each way and how it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_line_when_a_connection_closes() {
    let redis = Redis::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let toml = config(&[redis.addr], "", "")
        .replace(
            "bind = \"127.0.0.1:0\"\nmode",
            &format!("bind = \"127.0.0.1:{port}\"\nmode"),
        )
        .replace("[server]\n", "[server]\naccess_log = \"json\"\n");
    let path = dir.path().join("latch.toml");
    std::fs::write(&path, toml).unwrap();
    let mut latch = Child::spawn(&["run", "--config", path.to_str().unwrap()]);
    latch
        .stderr
        .wait_for("listening", |l| {
            l.contains("listening") && l.contains(&port.to_string())
        })
        .await;
    let lb = SocketAddr::from(([127, 0, 0, 1], port));
    let mut c = connect_from(lb, ip(3)).await.unwrap();
    assert_eq!(
        c.cmd(&["PING"]).await.unwrap(),
        Reply::Simple("PONG".into())
    );
    drop(c);
    let line = latch
        .stderr
        .wait_for("the TCP access line", |l| l.contains("\"tcp\":true"))
        .await;
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(
        v["client"].as_str().unwrap().split(':').next(),
        Some("127.0.0.3")
    );
    assert_eq!(v["server"], redis.addr.to_string());
    assert_eq!(v["upstream"], "app");
    // "*1\r\n$4\r\nPING\r\n" and "+PONG\r\n".
    assert_eq!(
        (v["to_server"].as_u64(), v["to_client"].as_u64()),
        (Some(14), Some(7))
    );
    assert_eq!(v["end"], "closed");
    assert_eq!(v["attempts"], 1);
    latch.terminate().await;
    latch.wait_exit(Duration::from_secs(10)).await;
}

#[test]
fn tcp_listener_config_errors_name_the_key() {
    let up = "[upstream.app]\nservers = [{ addr = \"127.0.0.1:9001\" }]\n";
    let err = |listener: &str, upstream: &str| {
        let text = format!("[[listener]]\nbind = \"127.0.0.1:0\"\n{listener}{up}{upstream}");
        Config::parse(&text, std::path::Path::new("t.toml"))
            .err()
            .unwrap_or_else(|| panic!("accepted:\n{text}"))
    };
    let e = err(
        "mode = \"tcp\"\n[[listener.route]]\nupstream = \"app\"\n",
        "",
    );
    assert_eq!(e.key, "listener[0].route", "{e}");
    assert!(e.message.contains("routes do not apply"), "{e}");
    let e = err("mode = \"tcp\"\n", "");
    assert_eq!(e.key, "listener[0].upstream", "{e}");
    let e = err(
        "mode = \"tcp\"\nupstream = \"app\"\ntrusted_proxies = [\"10.0.0.0/8\"]\n",
        "",
    );
    assert_eq!(e.key, "listener[0].trusted_proxies", "{e}");
    let e = err(
        "mode = \"tcp\"\nupstream = \"app\"\n",
        "[upstream.app.sticky]\nmode = \"cookie\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n",
    );
    assert_eq!(e.key, "listener[0].upstream", "{e}");
    assert!(e.message.contains("sticky cookies"), "{e}");
    let e = err("mode = \"udp\"\nupstream = \"app\"\n", "");
    assert!(e.to_string().contains("mode"), "{e}");
}

#[test]
fn the_tcp_example_in_conf_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/tcp.toml");
    let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cfg.listeners
            .iter()
            .all(|l| l.mode == latch::config::ListenerMode::Tcp)
    );
    assert!(cfg.listeners[1].tls.is_some());
}
