//! The byte tunnel behind an upgraded connection (WebSocket after its 101).
//!
//! Two pumps run side by side, one per direction, so a slow reader on one side
//! never stalls the other direction. When one side ends its stream, the other
//! side's write half is shut down (the half-close travels through) and the
//! remaining direction gets [`FIN_TIMEOUT`] to finish, so a backend that goes
//! away closes the client promptly (HAProxy calls this `timeout client-fin`).
//! An error on either side, `idle` without a byte, or a hard stop ends both.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Time the second direction gets after the first one finished.
pub const FIN_TIMEOUT: Duration = Duration::from_secs(5);
const BUF: usize = 8 * 1024;

/// Bytes moved each way, for logs and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub to_backend: u64,
    pub to_client: u64,
}

/// Runs the tunnel until it ends; never fails (a broken side just ends it).
pub async fn run<C, B>(client: C, backend: B, idle: Duration, stop: CancellationToken) -> Moved
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = AtomicU64::new(0); // ms since `start` of the last byte either way
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut br, mut bw) = tokio::io::split(backend);
    let (up_n, down_n) = (AtomicU64::new(0), AtomicU64::new(0));
    let up = pump(&mut cr, &mut bw, &last, &up_n, start);
    let down = pump(&mut br, &mut cw, &last, &down_n, start);
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    let mut fin_deadline: Option<Instant> = None;
    loop {
        let idle_at = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
        let wake = fin_deadline.map_or(idle_at, |f| f.min(idle_at));
        tokio::select! {
            r = &mut up, if !up_done => {
                up_done = true;
                if r.is_err() || down_done { break; }
                fin_deadline = Some(Instant::now() + FIN_TIMEOUT);
            }
            r = &mut down, if !down_done => {
                down_done = true;
                if r.is_err() || up_done { break; }
                fin_deadline = Some(Instant::now() + FIN_TIMEOUT);
            }
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                let idle_at = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
                if now >= idle_at || fin_deadline.is_some_and(|f| now >= f) { break; }
            }
            _ = stop.cancelled() => break,
        }
    }
    Moved {
        to_backend: up_n.load(Ordering::Relaxed),
        to_client: down_n.load(Ordering::Relaxed),
    }
}

/// Copies `r` to `w` until EOF, then shuts `w` down (forwarding the half-close).
async fn pump<R, W>(
    r: &mut R,
    w: &mut W,
    last: &AtomicU64,
    count: &AtomicU64,
    start: Instant,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return w.shutdown().await;
        }
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        w.write_all(&buf[..n]).await?;
        // TLS streams hold written bytes until flushed.
        w.flush().await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test]
    async fn moves_bytes_both_ways_and_propagates_close() {
        let (client_end, client) = duplex(64);
        let (backend_end, backend) = duplex(64);
        let t = tokio::spawn(run(
            client,
            backend,
            Duration::from_secs(60),
            CancellationToken::new(),
        ));
        let (mut c, mut b) = (client_end, backend_end);
        c.write_all(b"hello backend").await.unwrap();
        let mut got = [0u8; 13];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello backend");
        b.write_all(b"hi").await.unwrap();
        let mut got = [0u8; 2];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hi");
        // Backend goes away: the client must see EOF, and the tunnel must end.
        drop(b);
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        let moved = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            moved,
            Moved {
                to_backend: 13,
                to_client: 2
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_tunnel_is_closed() {
        let (_c, client) = duplex(64);
        let (_b, backend) = duplex(64);
        let idle = Duration::from_secs(30);
        let started = Instant::now();
        run(client, backend, idle, CancellationToken::new()).await;
        assert!(started.elapsed() >= idle);
    }

    #[tokio::test]
    async fn stop_ends_tunnel() {
        let (_c, client) = duplex(64);
        let (_b, backend) = duplex(64);
        let stop = CancellationToken::new();
        let t = tokio::spawn(run(
            client,
            backend,
            Duration::from_secs(3600),
            stop.clone(),
        ));
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .unwrap()
            .unwrap();
    }
}
