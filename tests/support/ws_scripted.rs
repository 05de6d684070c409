//! A WebSocket backend that sends fixed bytes: it answers the handshake with
//! a valid `101` (plus extra header lines) and, in the SAME write, `after`,
//! raw frames chosen by the test; then it keeps the connection, discarding
//! what comes, until the peer closes (bounded). Tests that latch passes or
//! rewrites exact frames use it (`tests/session_id.rs`), and a raw client
//! ([`ws_raw_open`]) that reads exactly what latch sent after its `101`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::faulty::{drain, read_head, spawn_raw};
use super::within;

/// Starts the backend; every connection gets the same answer.
pub async fn spawn_ws_scripted(extra_headers: &str, after: Vec<u8>) -> SocketAddr {
    let extra = extra_headers.to_owned();
    spawn_raw("ws-scripted", move |mut s| {
        let (extra, after) = (extra.clone(), after.clone());
        async move {
            let head = read_head(&mut s).await;
            let head = String::from_utf8_lossy(&head);
            let Some(key) = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| v.trim().to_owned())
            }) else {
                return;
            };
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
                 sec-websocket-accept: {}\r\n{extra}\r\n",
                derive_accept_key(key.as_bytes())
            )
            .into_bytes();
            out.extend_from_slice(&after);
            if s.write_all(&out).await.is_ok() {
                drain(&mut s, Duration::from_secs(10)).await;
            }
        }
    })
    .await
}

/// A raw WebSocket handshake for `path` to `addr` (`extra` header lines
/// added); returns the connection, the response head, and the `want` bytes
/// that followed it (reading stops there, bounded by `support::TIMEOUT`).
pub async fn ws_raw_open(
    addr: SocketAddr,
    path: &str,
    extra: &str,
    want: usize,
) -> (TcpStream, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.expect("connect to latch");
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write handshake");
    let mut got = Vec::new();
    let what = format!("{want} bytes after the 101 for {path}");
    within(&what, async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n")
                && got.len() >= end + 4 + want
            {
                break;
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head from latch: {got:?}"))
        + 4;
    let head = String::from_utf8_lossy(&got[..end]).into_owned();
    (s, head, got[end..].to_vec())
}
