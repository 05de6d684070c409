//! Bad clients against latch over real sockets: malformed and oversized
//! heads, slow and silent clients, TLS garbage and half-finished handshakes
//! are each rejected (or cut) without disturbing good traffic on the same
//! listeners, one at a time and all in parallel with well-behaved clients.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use support::*;

// === Bad clients ===

const BAD_CLIENT_SERVER: &str = "[server]\nmax_header_size = \"16k\"\nheader_timeout = \"1s\"\n\
                                 tls_handshake_timeout = \"2s\"\n\n";

/// latch with a plain and a TLS listener in front of one backend, limits
/// tightened for bad-client tests. Returns the TLS client that trusts it.
async fn spawn_guarded_lb(
    app: &Backend,
    dir: &std::path::Path,
) -> (Lb, tokio_rustls::TlsConnector) {
    let (_, _, cert_pem) = write_cert_files(dir, "srv", &["app.test"]);
    let toml = format!(
        "{BAD_CLIENT_SERVER}\
         [[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\
         tls = {{ cert = \"srv.crt\", key = \"srv.key\" }}\n\n\
         [upstream.app]\n{}\n",
        servers(&[app.addr])
    );
    let lb = spawn_lb_in(&toml, Some(dir)).await;
    (lb, tls_connector(&[&cert_pem]))
}

/// The bad clients: each panics when latch does not reject it as expected.
mod bad {
    use super::*;

    pub async fn malformed_request_line(addr: SocketAddr) {
        let raw = raw_exchange(addr, b"NOT A REQUEST\r\n\r\n").await;
        let line = status_line(&raw);
        assert!(
            line.starts_with("HTTP/1.1 400"),
            "malformed request: {line:?}"
        );
    }

    pub async fn oversized_header(addr: SocketAddr) {
        let big = "a".repeat(32 * 1024);
        let req = format!("GET /name HTTP/1.1\r\nHost: app.test\r\nx-big: {big}\r\n\r\n");
        let raw = raw_exchange(addr, req.as_bytes()).await;
        let line = status_line(&raw);
        assert!(line.starts_with("HTTP/1.1 431"), "32 KiB header: {line:?}");
    }

    pub async fn missing_host(addr: SocketAddr) {
        let raw = raw_exchange_open(addr, b"GET /name HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        let line = status_line(&raw);
        assert!(line.starts_with("HTTP/1.1 400"), "no Host: {line:?}");
    }

    pub async fn tls_garbage(tls_addr: SocketAddr) {
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 13) as u8).collect();
        // Also a complete TLS handshake record (5-byte header, 4091 bytes)
        // whose content is junk.
        let mut record = vec![0x16, 0x03, 0x01, 0x0f, 0xfb];
        record.extend(std::iter::repeat_n(0xee, 4091));
        for bytes in [garbage, record] {
            let mut s = within("connect to TLS listener", TcpStream::connect(tls_addr))
                .await
                .expect("connect to TLS listener");
            // latch may close before all is written: a failed write is fine.
            let _ = s.write_all(&bytes).await;
            let got =
                read_until_closed(&mut s, TIMEOUT, "TLS listener closing a garbage connection")
                    .await;
            assert!(
                got.is_empty() || got[0] == 0x15,
                "garbage on the TLS port got something other than a TLS alert: {:?}",
                String::from_utf8_lossy(&got)
            );
        }
    }

    pub async fn tls_stall(tls_addr: SocketAddr) {
        let start = Instant::now();
        let mut s = within("connect to TLS listener", TcpStream::connect(tls_addr))
            .await
            .expect("connect to TLS listener");
        // A handshake record header announcing 512 bytes, then only 16.
        let mut partial = vec![0x16, 0x03, 0x01, 0x02, 0x00];
        partial.extend([0x01; 16]);
        s.write_all(&partial).await.expect("write a partial record");
        let got = read_until_closed(
            &mut s,
            Duration::from_secs(6),
            "TLS listener cutting a stalled handshake",
        )
        .await;
        let took = start.elapsed();
        assert!(
            got.is_empty() || got[0] == 0x15,
            "stalled handshake got something other than a TLS alert: {got:?}"
        );
        assert!(
            took >= Duration::from_millis(1800),
            "stalled handshake cut after {took:?}, tls_handshake_timeout is 2 s"
        );
    }

    pub async fn slow_head(addr: SocketAddr) {
        let start = Instant::now();
        let mut s = within("connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        s.write_all(b"GET /name HTTP/1.1\r\nHost: app.test\r\nx-slow: 1\r\n")
            .await
            .expect("write half a head");
        let got =
            read_until_closed(&mut s, Duration::from_secs(5), "slow client being cut off").await;
        let took = start.elapsed();
        let line = status_line(&got);
        assert!(
            got.is_empty() || line.starts_with("HTTP/1.1 408"),
            "half a request head got {line:?}"
        );
        assert!(
            took >= Duration::from_millis(900),
            "slow client cut after {took:?}, header_timeout is 1 s"
        );
    }
}

async fn plain_ok(addr: SocketAddr, when: &str) {
    let (status, _, body) = http_get(addr, "app.test", "/name").await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, Bytes::from("app")),
        "{when}"
    );
}

async fn https_ok(addr: SocketAddr, connector: &tokio_rustls::TlsConnector, when: &str) {
    let (status, _, body) = https_get(addr, "app.test", connector, "/name").await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, Bytes::from("app")),
        "{when}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_are_rejected_and_latch_keeps_serving() {
    let app = spawn_backend("app").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (lb, connector) = spawn_guarded_lb(&app, dir.path()).await;
    let (plain, tls) = (lb.addrs[0], lb.addrs[1]);
    plain_ok(plain, "before any bad client").await;

    bad::malformed_request_line(plain).await;
    plain_ok(plain, "after a malformed request line").await;

    bad::oversized_header(plain).await;
    plain_ok(plain, "after an oversized header").await;

    bad::missing_host(plain).await;
    plain_ok(plain, "after a request without Host").await;

    bad::tls_garbage(tls).await;
    https_ok(tls, &connector, "after garbage on the TLS port").await;

    bad::tls_stall(tls).await;
    https_ok(tls, &connector, "after a stalled TLS handshake").await;

    bad::slow_head(plain).await;
    plain_ok(plain, "after a slow client").await;
    https_ok(tls, &connector, "at the end").await;

    // Only the eight good requests reached the backend.
    assert_eq!(app.hits(), 8);
    assert_all_idle(&lb, "after bad clients");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_in_parallel_with_good_traffic() {
    let app = spawn_backend("app").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (lb, connector) = spawn_guarded_lb(&app, dir.path()).await;
    let (plain, tls) = (lb.addrs[0], lb.addrs[1]);

    let mut bad_clients = JoinSet::new();
    for _ in 0..2 {
        bad_clients.spawn(bad::malformed_request_line(plain));
        bad_clients.spawn(bad::oversized_header(plain));
        bad_clients.spawn(bad::missing_host(plain));
        bad_clients.spawn(bad::tls_garbage(tls));
        bad_clients.spawn(bad::tls_stall(tls));
        bad_clients.spawn(bad::slow_head(plain));
    }
    let mut good = JoinSet::new();
    for i in 0..40 {
        let connector = connector.clone();
        good.spawn(async move {
            if i % 2 == 0 {
                let mut conn = HttpConn::connect(plain).await;
                for _ in 0..3 {
                    let (status, _, body) = conn.get("app.test", "/name").await;
                    assert_eq!((status, body), (StatusCode::OK, Bytes::from("app")));
                }
                3
            } else {
                https_ok(tls, &connector, "https during bad clients").await;
                1
            }
        });
    }

    let served = within("good clients", async {
        let mut served = 0;
        while let Some(r) = good.join_next().await {
            served += r.expect("a good client failed");
        }
        served
    })
    .await;
    assert_eq!(served, 20 * 3 + 20);
    within("bad clients", async {
        while let Some(r) = bad_clients.join_next().await {
            r.expect("a bad client was not rejected as expected");
        }
    })
    .await;
    plain_ok(plain, "after the storm").await;
    assert_eq!(app.hits(), 81);
    assert_all_idle(&lb, "after the storm");
}
