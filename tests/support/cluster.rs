//! Several latch instances run as one: the same config started N times,
//! a client that picks an instance per request (as a resolver rotating
//! round-robin records would), and requests from chosen loopback source
//! addresses (127.1.x.y), so `ip_hash` sees many distinct clients.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http::header::HOST;
use http_body_util::Full;
use tokio::net::TcpSocket;

use super::http_client::{Got, handshake_on, read_body};
use super::lb::{Lb, spawn_lb};
use super::within;

/// `n` latch instances of `toml`.
pub async fn spawn_instances(n: usize, toml: &str) -> Vec<Lb> {
    let mut lbs = Vec::new();
    for _ in 0..n {
        lbs.push(spawn_lb(toml).await);
    }
    lbs
}

/// The addresses of upstream `app`'s servers in `lb`'s routing table, sorted.
pub fn servers_of(lb: &Lb) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = lb.handle.snapshot().upstreams["app"]
        .backends
        .iter()
        .map(|b| b.addr)
        .collect();
    v.sort();
    v
}

/// Waits (bounded by `limit`) until every instance routes `app` to `want`.
pub async fn wait_servers(lbs: &[Lb], want: &[SocketAddr], limit: Duration) {
    let start = Instant::now();
    while !lbs.iter().all(|lb| servers_of(lb) == want) {
        let now: Vec<_> = lbs.iter().map(servers_of).collect();
        assert!(
            start.elapsed() < limit,
            "instances have {now:?}, not {want:?}, after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "all {} instances have {} servers after {:?}",
        lbs.len(),
        want.len(),
        start.elapsed()
    );
}

/// The `i`-th client address: 127.1.x.y, distinct for i < 64,000.
pub fn client_ip(i: usize) -> IpAddr {
    let i = u32::try_from(i).expect("client index");
    IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8))
}

/// `GET path` to `addr` on a fresh connection from `local` (any port), with
/// an optional `Cookie` header.
pub async fn get_from(local: IpAddr, addr: SocketAddr, path: &str, cookie: Option<&str>) -> Got {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(local, 0))
        .unwrap_or_else(|e| panic!("bind {local}: {e}"));
    let stream = within("connect", socket.connect(addr))
        .await
        .unwrap_or_else(|e| panic!("connect {addr} from {local}: {e}"));
    let (mut sender, _conn) = handshake_on(stream).await.expect("handshake");
    let mut req = Request::get(path).header(HOST, "localhost");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let req = req.body(Full::<Bytes>::default()).expect("request");
    let resp = within("response", sender.send_request(req))
        .await
        .unwrap_or_else(|e| panic!("GET {path} from {local}: {e}"));
    let (parts, body) = resp.into_parts();
    let body = read_body(body).await.expect("body");
    (parts.status, parts.headers, body)
}

/// A small deterministic generator (xorshift64*): the "random" instance a
/// client picks, the same on every run.
pub struct Pick(u64);

impl Pick {
    pub fn new(seed: u64) -> Pick {
        Pick(seed | 1)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}
