//! The PROXY protocol against Debian's HAProxy, both ways.
//!
//! In: HAProxy in `mode tcp` with `send-proxy-v2` (and `send-proxy`, v1) in
//! front of a `proxy_protocol` listener. Clients connect to HAProxy from
//! other loopback addresses (127.0.0.2, ...) while HAProxy connects to
//! latch from 127.0.0.1, so the header's client and the TCP peer differ:
//! the backend's `X-Forwarded-For`, `ip_hash`, the per-client limit and the
//! access log must all follow the header.
//!
//! Out: latch with `send_proxy` in front of HAProxy `accept-proxy`, which
//! answers with the source address it was given, for plain requests, a
//! WebSocket upgrade and health checks (which send a header naming no
//! client).
//!
//! Refusals: malformed, truncated, oversized, missing and silent headers
//! and an untrusted peer, from raw TCP clients: each is closed and counted
//! by reason, and the listener keeps serving a good client after them.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::Full;
use latch::proxy_protocol::{Addrs, Version, encode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use support::haproxy::{Haproxy, connect_from, spawn_haproxy};
use support::http_client::handshake_on;
use support::{
    Child, Lb, TIMEOUT, http_get, lb_backend, parse_echo, read_body, servers, spawn_backend,
    spawn_lb, wait_until, within,
};

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// `GET path` on an open stream; the response head and body.
async fn get_on<S>(io: S, path: &str) -> (StatusCode, http::HeaderMap, Bytes)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, _conn) = handshake_on(io).await.expect("HTTP/1.1 handshake");
    get_with(&mut sender, path).await
}

async fn get_with(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let req = Request::get(path)
        .header("host", "test")
        .body(Full::default())
        .unwrap();
    within("connection ready", sender.ready())
        .await
        .expect("connection open");
    let resp = within("response", sender.send_request(req))
        .await
        .expect("a response");
    let (parts, body) = resp.into_parts();
    let body = read_body(body).await.expect("body");
    (parts.status, parts.headers, body)
}

/// A PROXY listener trusting only 127.0.0.1 (where HAProxy connects from).
fn pp_listener(extra: &str) -> String {
    format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\nproxy_protocol = true\n\
         proxy_protocol_from = [\"127.0.0.1/32\"]\n{extra}\n"
    )
}

/// HAProxy in `mode tcp` forwarding port 0 with `send-proxy-v2` and port 1
/// with `send-proxy` (v1) to `latch`.
async fn haproxy_in_front_of(latch: SocketAddr) -> Haproxy {
    spawn_haproxy(2, |p| {
        format!(
            "frontend v2\n  mode tcp\n  bind 127.0.0.1:{}\n  default_backend latch_v2\n\
             frontend v1\n  mode tcp\n  bind 127.0.0.1:{}\n  default_backend latch_v1\n\
             backend latch_v2\n  mode tcp\n  server latch {latch} send-proxy-v2\n\
             backend latch_v1\n  mode tcp\n  server latch {latch} send-proxy\n",
            p[0], p[1]
        )
    })
    .await
}

/// The first listener as `/status` shows it (the config needs `[admin]`).
async fn listener_status(lb: &Lb) -> serde_json::Value {
    let admin = lb.handle.admin_addr().expect("admin bound");
    let (status, _, body) = http_get(admin, "admin", "/status").await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON status");
    json["listeners"][0].clone()
}

/// The listener's PROXY refusals by reason, from `/status`.
async fn refused(lb: &Lb) -> HashMap<String, u64> {
    let l = listener_status(lb).await;
    let by_reason = l["proxy_protocol_rejected"].as_object().expect("a map");
    by_reason
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().expect("a count")))
        .collect()
}

const ADMIN: &str = "[admin]\nbind = \"127.0.0.1:0\"\n\n";

/// HAProxy `send-proxy-v2` and `send-proxy` in front: the backend sees each
/// client's own address in `X-Forwarded-For`, and `ip_hash` places each
/// client address on one server whichever version carried it, spreading
/// the addresses over both (by the TCP peer they would all be 127.0.0.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_send_proxy_gives_latch_the_client_address() {
    let (b1, b2) = (spawn_backend("b1").await, spawn_backend("b2").await);
    let lb = spawn_lb(&format!(
        "{ADMIN}{}\n[upstream.app]\nbalance = \"ip_hash\"\n{}\n",
        pp_listener(""),
        servers(&[b1.addr, b2.addr])
    ))
    .await;
    let haproxy = haproxy_in_front_of(lb.addr()).await;
    let mut placed: HashMap<IpAddr, String> = HashMap::new();
    for frontend in [0, 1] {
        for last in 2..=17 {
            let ip = loopback(last);
            let tcp = connect_from(ip, haproxy.addr(frontend)).await;
            let (status, headers, body) = get_on(tcp, "/echo").await;
            assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
            let echo = parse_echo(&body);
            assert_eq!(echo.header("x-forwarded-for"), Some(&*ip.to_string()));
            let backend = headers["x-backend"].to_str().unwrap().to_string();
            let first = placed.entry(ip).or_insert_with(|| backend.clone());
            assert_eq!(*first, backend, "{ip} moved (frontend {frontend})");
        }
    }
    let used: HashSet<&String> = placed.values().collect();
    assert_eq!(used.len(), 2, "16 addresses all on one server: {placed:?}");
    let refusals = refused(&lb).await;
    assert!(refusals.is_empty(), "{refusals:?}");
}

/// `max_connections_per_client` counts the address the header names: two
/// clients behind one balancer each get their connection, a second one
/// from the same client is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_client_limit_counts_the_header_address() {
    let b = spawn_backend("b").await;
    let lb = spawn_lb(&format!(
        "{ADMIN}{}\n[upstream.app]\n{}\n",
        pp_listener("max_connections_per_client = 1"),
        servers(&[b.addr])
    ))
    .await;
    let haproxy = haproxy_in_front_of(lb.addr()).await;
    let (mut first, _c1) = handshake_on(connect_from(loopback(2), haproxy.addr(0)).await)
        .await
        .expect("handshake");
    assert_eq!(get_with(&mut first, "/name").await.0, StatusCode::OK);
    let (mut other, _c2) = handshake_on(connect_from(loopback(3), haproxy.addr(0)).await)
        .await
        .expect("handshake");
    assert_eq!(get_with(&mut other, "/name").await.0, StatusCode::OK);
    // A second connection from 127.0.0.2: HAProxy passes it on, latch
    // closes it after reading its header.
    let mut again = connect_from(loopback(2), haproxy.addr(0)).await;
    again
        .write_all(b"GET /name HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    within(
        "the refused connection to close",
        again.read_to_end(&mut got),
    )
    .await
    .ok();
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert_eq!(listener_status(&lb).await["refused_per_client"], 1);
    // The two first clients are still served.
    assert_eq!(get_with(&mut first, "/name").await.0, StatusCode::OK);
    assert_eq!(get_with(&mut other, "/name").await.0, StatusCode::OK);
}

/// The header comes before TLS: HAProxy `send-proxy-v2` in `mode tcp` in
/// front of a TLS listener; the client's TLS goes through unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_is_read_before_tls() {
    let b = spawn_backend("b").await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, pem) = support::write_cert_files(dir.path(), "lb", &["localhost"]);
    let tls = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}",
        cert.display(),
        key.display()
    );
    let lb = spawn_lb(&format!(
        "{}\n[upstream.app]\n{}\n",
        pp_listener(&tls),
        servers(&[b.addr])
    ))
    .await;
    let haproxy = haproxy_in_front_of(lb.addr()).await;
    let tcp = connect_from(loopback(9), haproxy.addr(0)).await;
    let connector = support::tls_connector(&[&pem]);
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = within("TLS through HAProxy", connector.connect(name, tcp))
        .await
        .expect("TLS handshake");
    let (status, _, body) = get_on(tls, "/echo").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        parse_echo(&body).header("x-forwarded-for"),
        Some("127.0.0.9")
    );
}

/// HAProxy `accept-proxy` answering with the source it was given.
async fn haproxy_accepting_proxy(ws_backend: SocketAddr) -> Haproxy {
    spawn_haproxy(2, |p| {
        format!(
            "frontend says_src\n  mode http\n  bind 127.0.0.1:{} accept-proxy\n  \
             http-request return status 200 content-type text/plain \
             lf-string \"%[src] %[src_port] %[dst]:%[dst_port]\"\n\
             frontend to_ws\n  mode http\n  bind 127.0.0.1:{} accept-proxy\n  \
             http-request set-header x-pp-src %[src]\n  default_backend ws\n\
             backend ws\n  mode http\n  server ws {ws_backend}\n",
            p[0], p[1]
        )
    })
    .await
}

/// latch `send_proxy` (v1 and v2) in front of HAProxy `accept-proxy`: each
/// client's address and port reach HAProxy; a pooled connection carries
/// only its own client's requests; the health check's header (naming no
/// client) is accepted, so a server that starts down comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latch_send_proxy_to_haproxy_accept_proxy() {
    let ws = spawn_backend("ws").await;
    let haproxy = haproxy_accepting_proxy(ws.addr).await;
    for version in ["v1", "v2"] {
        let lb = spawn_lb(&format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\n\
             [upstream.app]\nsend_proxy = \"{version}\"\nservers = [{{ addr = \"{}\" }}]\n\
             [upstream.app.check]\ntype = \"http\"\ninterval = \"100ms\"\nrise = 1\n\
             start = \"down\"\n",
            haproxy.addr(0)
        ))
        .await;
        let server = lb_backend(&lb, haproxy.addr(0));
        wait_until("the checked server to come up", TIMEOUT, || {
            server.condition.active_up()
        })
        .await;
        for last in [2, 3, 2] {
            let tcp = connect_from(loopback(last), lb.addr()).await;
            let port = tcp.local_addr().unwrap().port();
            let (mut sender, _conn) = handshake_on(tcp).await.expect("handshake");
            for _ in 0..2 {
                let (status, _, body) = get_with(&mut sender, "/").await;
                assert_eq!(status, StatusCode::OK);
                let want = format!("127.0.0.{last} {port} {}", lb.addr());
                assert_eq!(String::from_utf8_lossy(&body), want, "{version}");
            }
        }
        // Each client connection's upstream connection was its own, and
        // is closed once that client has gone.
        wait_until("the clients' upstream connections closed", TIMEOUT, || {
            lb.handle.pool().reap_idle(Duration::from_secs(60));
            server.idle.is_empty()
        })
        .await;
    }
}

/// A WebSocket upgrade through latch `send_proxy = "v2"` and HAProxy
/// `accept-proxy` to a WebSocket backend: HAProxy names the client in a
/// header the backend receives, and messages echo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_carries_the_header() {
    let ws = spawn_backend("ws").await;
    let haproxy = haproxy_accepting_proxy(ws.addr).await;
    let lb = spawn_lb(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\n\
         [upstream.app]\nsend_proxy = \"v2\"\nservers = [{{ addr = \"{}\" }}]\n",
        haproxy.addr(1)
    ))
    .await;
    let tcp = connect_from(loopback(5), lb.addr()).await;
    let url = format!("ws://{}/ws", lb.addr());
    let (mut socket, resp) = within("WebSocket handshake", async {
        tokio_tungstenite::client_async(url, tcp).await
    })
    .await
    .expect("WebSocket through latch and HAProxy");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        ws.last_headers()
            .get("x-pp-src")
            .map(|v| v.to_str().unwrap()),
        Some("127.0.0.5")
    );
    socket.send(Message::text("hello")).await.unwrap();
    let echoed = within("echo", socket.next()).await.expect("a message");
    assert_eq!(echoed.unwrap(), Message::text("hello"));
}

/// What latch sends back before closing: nothing.
async fn closed_without_answer(mut s: TcpStream, what: &str) {
    let mut got = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "{what}: not closed within {TIMEOUT:?}");
    assert!(got.is_empty(), "{what}: {}", String::from_utf8_lossy(&got));
}

/// A good client with its own v2 header is served, with its address.
async fn good_client_is_served(lb: &Lb) {
    let mut tcp = TcpStream::connect(lb.addr()).await.unwrap();
    let client = Addrs {
        src: "198.51.100.20:5555".parse().unwrap(),
        dst: lb.addr(),
    };
    tcp.write_all(&encode(Version::V2, Some(client)))
        .await
        .unwrap();
    let (status, _, body) = get_on(tcp, "/echo").await;
    assert_eq!(status, StatusCode::OK);
    let xff = parse_echo(&body)
        .header("x-forwarded-for")
        .map(str::to_string);
    assert_eq!(xff.as_deref(), Some("198.51.100.20"));
}

/// Broken headers and an untrusted peer from raw TCP clients: each is
/// closed with nothing sent back and counted under its reason in the
/// listener's stats, `/metrics` and `/status`; a good client is served
/// after every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_headers_are_refused_and_the_listener_keeps_serving() {
    let b = spawn_backend("b").await;
    let lb = spawn_lb(&format!(
        "[server]\ntls_handshake_timeout = \"300ms\"\n{ADMIN}{}\n[upstream.app]\n{}\n",
        pp_listener(""),
        servers(&[b.addr])
    ))
    .await;
    good_client_is_served(&lb).await;
    let mut oversized_v1 = b"PROXY UNKNOWN ".to_vec();
    oversized_v1.resize(300, b'x');
    let mut oversized_v2 = latch::proxy_protocol::V2_SIG.to_vec();
    oversized_v2.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    oversized_v2.resize(2000, 0);
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "missing",
            b"GET /echo HTTP/1.1\r\nhost: t\r\n\r\n".to_vec(),
            false,
        ),
        (
            "malformed",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n".to_vec(),
            false,
        ),
        ("malformed", b"PROXY TCP4 1.2.3.4 \x00".to_vec(), false),
        ("oversized", oversized_v1, false),
        ("oversized", oversized_v2, false),
        ("truncated", b"PROXY TCP4 1.2.3.4 5.6".to_vec(), true),
        ("closed", Vec::new(), true),
        ("timeout", b"PROXY TCP4 ".to_vec(), false),
    ];
    for (reason, bytes, half_close) in &cases {
        let mut s = TcpStream::connect(lb.addr()).await.unwrap();
        s.write_all(bytes).await.unwrap();
        if *half_close {
            s.shutdown().await.unwrap();
        }
        closed_without_answer(s, reason).await;
        good_client_is_served(&lb).await;
    }
    // A valid header from a peer outside proxy_protocol_from.
    let mut s = connect_from(loopback(7), lb.addr()).await;
    let header = encode(
        Version::V1,
        Some(Addrs {
            src: "203.0.113.1:1".parse().unwrap(),
            dst: lb.addr(),
        }),
    );
    s.write_all(&header).await.unwrap();
    closed_without_answer(s, "untrusted").await;
    good_client_is_served(&lb).await;

    let want: HashMap<String, u64> = [
        ("missing", 1),
        ("malformed", 2),
        ("oversized", 2),
        ("truncated", 1),
        ("closed", 1),
        ("timeout", 1),
        ("untrusted", 1),
    ]
    .map(|(r, n)| (r.to_string(), n))
    .into();
    // Each refusal is counted before its socket closes, so all are in.
    assert_eq!(refused(&lb).await, want);
    let admin = lb.handle.admin_addr().expect("admin");
    let (_, _, metrics) = http_get(admin, "admin", "/metrics").await;
    let metrics = String::from_utf8_lossy(&metrics);
    let series = format!(
        "latch_proxy_protocol_rejected_total{{listener=\"{}\",reason=\"malformed\"}} 2",
        lb.addr()
    );
    assert!(metrics.contains(&series), "{series} not in\n{metrics}");
}

/// A reload turns `proxy_protocol` on for a listener that stays: new
/// connections must then bring a header, and a connection that was open
/// before keeps being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_the_header_on_for_new_connections() {
    let b = spawn_backend("b").await;
    let upstream = format!("[upstream.app]\n{}\n", servers(&[b.addr]));
    let plain = format!("[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\n{upstream}");
    let lb = spawn_lb(&format!("{ADMIN}{plain}")).await;
    let (mut before, _c) = handshake_on(TcpStream::connect(lb.addr()).await.unwrap())
        .await
        .expect("handshake");
    assert_eq!(get_with(&mut before, "/name").await.0, StatusCode::OK);
    let text = format!("{ADMIN}{}\n{upstream}", pp_listener(""));
    let config = latch::Config::parse(&text, std::path::Path::new("t.toml")).expect("valid");
    lb.handle.reload(config).expect("reload");
    assert_eq!(
        lb.handle.listener_addrs(),
        vec![lb.addr()],
        "the listener stays"
    );
    let mut s = TcpStream::connect(lb.addr()).await.unwrap();
    s.write_all(b"GET /name HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    closed_without_answer(s, "no header after the reload").await;
    good_client_is_served(&lb).await;
    assert_eq!(get_with(&mut before, "/name").await.0, StatusCode::OK);
    let want: HashMap<String, u64> = [("missing".to_string(), 1)].into();
    assert_eq!(refused(&lb).await, want);
}

/// The access log names the client from the header: latch run as a program
/// (`access_log = "json"`) behind HAProxy `send-proxy-v2`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_names_the_header_client() {
    let b = spawn_backend("b").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = support::free_port();
    let config = dir.path().join("latch.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\naccess_log = \"json\"\n\n[[listener]]\nbind = \"127.0.0.1:{port}\"\n\
             upstream = \"app\"\nproxy_protocol = true\nproxy_protocol_from = [\"127.0.0.1\"]\n\n\
             [upstream.app]\n{}\n",
            servers(&[b.addr])
        ),
    )
    .unwrap();
    let mut latch = Child::spawn(&["run", "--config", config.to_str().unwrap()]);
    latch
        .stderr
        .wait_for("the `listening` log line", |l| l.contains("listening"))
        .await;
    let haproxy = haproxy_in_front_of(SocketAddr::from(([127, 0, 0, 1], port))).await;
    let tcp = connect_from(loopback(11), haproxy.addr(0)).await;
    let client = tcp.local_addr().unwrap();
    let (status, _, _) = get_on(tcp, "/name?logged").await;
    assert_eq!(status, StatusCode::OK);
    let line = latch
        .stderr
        .wait_for("the access line", |l| l.contains("/name?logged"))
        .await;
    let v: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
    assert_eq!(v["client"], client.to_string(), "{v}");
    drop(haproxy);
}

/// The three keys in `conf/proxy_protocol.toml` load as written, and a
/// wrong use of them is an error naming the key.
#[test]
fn config_keys_load_and_errors_name_them() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = latch::Config::load(&root.join("conf/proxy_protocol.toml")).expect("example loads");
    let from = cfg.listeners[0]
        .proxy_protocol
        .as_ref()
        .expect("proxy_protocol on");
    assert!(from[1].contains("127.0.0.1".parse().unwrap()));
    assert!(!from[0].contains("192.168.0.1".parse().unwrap()));
    assert_eq!(cfg.upstreams["chat"].send_proxy, Some(Version::V2));
    let check = cfg.upstreams["chat"].check.as_ref().expect("check");
    assert_eq!(check.send_proxy, Some(Version::V2));

    let err = |listener: &str, upstream: &str| {
        let toml = format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"a\"\n{listener}\n\
             [upstream.a]\nservers = [{{ addr = \"127.0.0.1:1\" }}]\n{upstream}\n"
        );
        latch::Config::parse(&toml, std::path::Path::new("t.toml")).expect_err(&toml)
    };
    let e = err("proxy_protocol = true", "");
    assert_eq!(
        (e.key.as_str(), e.line),
        ("listener[0].proxy_protocol_from", 4),
        "{e}"
    );
    let e = err("proxy_protocol_from = [\"10.0.0.0/8\"]", "");
    assert_eq!(e.key, "listener[0].proxy_protocol_from", "{e}");
    let e = err(
        "proxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/33\"]",
        "",
    );
    assert_eq!(e.key, "listener[0].proxy_protocol_from[0]", "{e}");
    let e = err("", "send_proxy = \"v3\"");
    assert_eq!(e.key, "upstream.a.send_proxy", "{e}");
    let e = err("proxy_protocol = \"yes\"", "");
    assert_eq!(e.key, "listener.proxy_protocol", "{e}");
}
