//! Raw, misbehaving backends. Their tasks live until the test's runtime ends.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::TIMEOUT;

/// An address where nothing listens (a listener was bound and dropped), so
/// connecting is refused. The port could in theory be reused by another test.
pub async fn spawn_refusing() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("refusing: bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("refusing: local_addr");
    drop(listener);
    addr
}

/// Accepts, reads the request head, answers `garbage\r\n\r\n` and closes.
pub async fn spawn_garbage() -> SocketAddr {
    spawn_raw("garbage", |mut s| async move {
        read_head(&mut s).await;
        let _ = s.write_all(b"garbage\r\n\r\n").await;
        let _ = s.shutdown().await;
        drain(&mut s, Duration::from_secs(5)).await;
    })
    .await
}

/// Accepts and reads everything but never answers; the connection stays open
/// until the peer closes it (or the test ends).
pub async fn spawn_blackhole() -> SocketAddr {
    spawn_raw("blackhole", |mut s| async move {
        let mut buf = [0u8; 8192];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await
}

/// Binds `127.0.0.1:0` and runs `per_conn` for every accepted connection.
pub async fn spawn_raw<F, Fut>(what: &str, per_conn: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{what}: bind 127.0.0.1:0: {e}"));
    let addr = listener.local_addr().expect("local_addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(per_conn(stream));
        }
    });
    addr
}

/// Reads until the end of an HTTP head (`\r\n\r\n`), EOF, or [`TIMEOUT`].
pub(super) async fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, async {
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    head
}

/// Discards input until EOF, an error, or `limit`.
pub(super) async fn drain(s: &mut TcpStream, limit: Duration) {
    let _ = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 8192];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
