//! Raw, misbehaving backends. Their tasks live until the test's runtime ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// [`read_head`] for test files.
pub async fn read_head_pub(s: &mut TcpStream) -> Vec<u8> {
    read_head(s).await
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

/// A keep-alive HTTP/1.1 backend that answers every request `200 ok` and
/// closes a connection once it has been idle for `idle` (as Node.js closes
/// after its `keepAliveTimeout`). Counts connections accepted and closed.
pub struct KeepAlive {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    pub closed: Arc<AtomicUsize>,
}

pub async fn spawn_keepalive(idle: Duration) -> KeepAlive {
    spawn_keepalive_limited(idle, usize::MAX).await
}

/// Like [`spawn_keepalive`], but a connection answers only `answers`
/// requests: the next one is read and the connection closed unanswered (a
/// server whose keep-alive timer fired just as the request arrived).
pub async fn spawn_keepalive_limited(idle: Duration, answers: usize) -> KeepAlive {
    let accepted = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let (a, c) = (accepted.clone(), closed.clone());
    let addr = spawn_raw("keepalive", move |mut s| {
        a.fetch_add(1, Ordering::SeqCst);
        let c = c.clone();
        async move {
            let mut answered = 0;
            for _ in 0..=answers {
                let head = match tokio::time::timeout(idle, read_head(&mut s)).await {
                    Ok(head) if !head.is_empty() => head,
                    _ => break, // idle too long, or the peer closed
                };
                let _ = head;
                if n_answered(&mut answered, answers) {
                    break; // read, never answered
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if s.write_all(answer).await.is_err() {
                    break;
                }
            }
            drop(s);
            c.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await;
    KeepAlive {
        addr,
        accepted,
        closed,
    }
}

/// Counts one more answer; true when `limit` were given already.
fn n_answered(answered: &mut usize, limit: usize) -> bool {
    if *answered >= limit {
        return true;
    }
    *answered += 1;
    false
}
