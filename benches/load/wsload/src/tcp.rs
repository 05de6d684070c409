//! The TCP-mode side of the load bench (L4 proxies: latch `mode = "tcp"`, nginx
//! `stream`, HAProxy `mode tcp`):
//!
//! ```text
//! wsload tcp-server PORT              echo backend: every byte goes back, a FIN is
//!                                     answered with a FIN once all is echoed
//! wsload tcp-bulk ADDR CONNS SECS     CONNS connections each writing 64 KiB chunks for
//!                                     SECS while reading the echo; prints JSON
//!                                     {bytes, mb, mb_per_s, errors, ...}; `bytes` counts
//!                                     both directions (each byte crosses the proxy twice)
//! wsload tcp-conn ADDR CONNS SECS     CONNS loops of connect, 1-byte echo, close; prints
//!                                     JSON {conns, conns_per_s, p99_ms, errors, ...}
//! ```
//!
//! Clients close with SO_LINGER 0 in `tcp-conn` (a reset, no TIME_WAIT), so a 10 s run
//! at thousands of connections a second does not run out of local ports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};

const CHUNK: usize = 64 * 1024;
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn server(port: u16, max: Duration) -> Result<(), String> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| format!("bind 127.0.0.1:{port}: {e}"))?;
    let serve = async {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            });
        }
    };
    let _ = timeout(max, serve).await;
    Ok(())
}

fn addr(a: &str) -> Result<SocketAddr, String> {
    a.parse().map_err(|e| format!("{a}: {e}"))
}

pub async fn bulk(target: &str, conns: usize, secs: Duration) -> Result<(), String> {
    let target = addr(target)?;
    let bytes = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let end = started + secs;
    let mut tasks = JoinSet::new();
    for _ in 0..conns {
        let (bytes, errors) = (bytes.clone(), errors.clone());
        tasks.spawn(async move {
            if let Err(e) = one_bulk(target, end, &bytes).await {
                errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("tcp-bulk: {e}");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let wall = started.elapsed().as_secs_f64();
    let total = bytes.load(Ordering::Relaxed);
    let out = json!({
        "conns": conns,
        "bytes": total,
        "mb": total / 1_000_000,
        "mb_per_s": total as f64 / 1e6 / wall,
        "secs": wall,
        "errors": errors.load(Ordering::Relaxed),
    });
    println!("{out}");
    Ok(())
}

/// Writes until `end`, then half-closes; reads the echo until its FIN.
async fn one_bulk(target: SocketAddr, end: Instant, bytes: &AtomicU64) -> Result<(), String> {
    let s = timeout(STEP_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let (mut r, mut w) = s.into_split();
    let writer = async {
        let chunk = vec![0x5a; CHUNK];
        while Instant::now() < end {
            w.write_all(&chunk)
                .await
                .map_err(|e| format!("write: {e}"))?;
            bytes.fetch_add(CHUNK as u64, Ordering::Relaxed);
        }
        w.shutdown().await.map_err(|e| format!("shutdown: {e}"))
    };
    let reader = async {
        let mut buf = vec![0; CHUNK];
        loop {
            let n = timeout(STEP_TIMEOUT, r.read(&mut buf))
                .await
                .map_err(|_| "read timed out".to_string())?
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Ok(());
            }
            bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
    };
    let (a, b) = tokio::join!(writer, reader);
    a.and(b)
}

pub async fn conn(target: &str, conns: usize, secs: Duration) -> Result<(), String> {
    let target = addr(target)?;
    let started = Instant::now();
    let end = started + secs;
    let mut tasks = JoinSet::new();
    for _ in 0..conns {
        tasks.spawn(async move {
            let (mut n, mut errors, mut first, mut lat) = (0u64, 0u64, None, Vec::new());
            while Instant::now() < end {
                let t0 = Instant::now();
                match one_conn(target).await {
                    Ok(()) => {
                        n += 1;
                        lat.push(t0.elapsed().as_micros() as u32);
                    }
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert(e);
                    }
                }
            }
            (n, errors, first, lat)
        });
    }
    let (mut n, mut errors, mut first, mut lat) = (0u64, 0u64, None, Vec::new());
    while let Some(r) = tasks.join_next().await {
        if let Ok((a, b, f, l)) = r {
            n += a;
            errors += b;
            if first.is_none() {
                first = f;
            }
            lat.extend(l);
        }
    }
    let wall = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let p99 = lat
        .get(((lat.len() as f64 * 0.99) as usize).min(lat.len().saturating_sub(1)))
        .map(|us| f64::from(*us) / 1000.0);
    let out = json!({
        "conns": n,
        "conns_per_s": n as f64 / wall,
        "p99_ms": p99,
        "secs": wall,
        "errors": errors,
        "first_error": first,
    });
    println!("{out}");
    Ok(())
}

/// Connect, send one byte, read it back, close with a reset.
async fn one_conn(target: SocketAddr) -> Result<(), String> {
    let step = async {
        let mut s = TcpStream::connect(target)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = s.set_nodelay(true);
        s.write_all(b"x").await.map_err(|e| format!("write: {e}"))?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let _ = s.set_zero_linger();
        Ok(())
    };
    timeout(STEP_TIMEOUT, step)
        .await
        .map_err(|_| "timed out".to_string())?
}
