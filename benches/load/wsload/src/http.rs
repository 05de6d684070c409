//! An open-loop HTTP/1.1 GET generator for `soak` mode: RATE requests a second on a fixed
//! schedule (a request that is slow delays no other; a schedule the process fell behind
//! on is caught up), each on an idle keep-alive connection from a pool (`http://` or
//! `https://`), or a new one, with at most [`MAX_IN_FLIGHT`] at once. Each answer counts as
//! 2xx, another status, or a transport error (connect, TLS, reset, timeout, unparsable
//! answer). The client retries nothing, except what every HTTP client does: a request
//! on a kept-alive connection that turns out closed before any byte of an answer is sent
//! again once on a new connection (counted as `stale_retried`, not as a failure).
//!
//! The body of a 200 from `wsload echo-server --name NAME` is NAME, so answers are also
//! counted per backend.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{Instant, MissedTickBehavior, interval_at, timeout};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_util::either::Either;

use crate::soak::Counters;

const MAX_IN_FLIGHT: usize = 64;
/// A whole request (connect included) gets this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_HEAD: usize = 64 * 1024;
/// How many distinct errors the summary keeps.
const KEEP_ERRORS: usize = 5;

type Stream = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

/// What the loop saw, for the summary.
#[derive(Default)]
pub struct HttpTally {
    pub sent: u64,
    pub ok: u64,
    pub non2xx: u64,
    pub errors: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub by_backend: BTreeMap<String, u64>,
    pub first_errors: Vec<String>,
    /// Requests whose kept-alive connection turned out closed before any answer, and
    /// that were sent again on a new connection (not failures; counted to be seen).
    pub stale_retried: u64,
    pub stale_errors: Vec<String>,
    /// (epoch ms, what) of every failure, for placing them on the timeline.
    pub failures: Vec<(u64, String)>,
}

struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

pub async fn run(
    url: &str,
    rate: f64,
    start: Instant,
    end: Instant,
    counters: Arc<Counters>,
) -> Result<HttpTally, String> {
    let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let secure = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(format!("{url}: the scheme must be http or https")),
    };
    let host = uri.host().ok_or_else(|| format!("{url}: no host"))?.to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("{host}: {e}"))?
        .collect();
    addrs.sort_by_key(|a| !a.is_ipv4());
    let addr = *addrs.first().ok_or_else(|| format!("{host}: no address"))?;
    let tls = if secure {
        let name = ServerName::try_from(host.clone()).map_err(|e| format!("{host}: {e}"))?;
        Some((TlsConnector::from(crate::tls::client()?), name))
    } else {
        None
    };
    let target = Arc::new(Target {
        addr,
        host: match uri.port_u16() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        },
        path: uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.to_string()),
        tls,
    });
    let tally = Arc::new(Mutex::new(HttpTally::default()));
    let pool: Pool = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tick = interval_at(start, Duration::from_secs_f64(1.0 / rate.max(0.001)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        if tick.tick().await >= end {
            break;
        }
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        let (target, pool, counters, tally) =
            (target.clone(), pool.clone(), counters.clone(), tally.clone());
        tasks.spawn(async move {
            one(&target, &pool, &counters, &tally).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    // Each request ends within REQUEST_TIMEOUT.
    while tasks.join_next().await.is_some() {}
    let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
    Ok(std::mem::take(&mut *t))
}

type Conn = (Stream, Vec<u8>);
type Pool = Arc<Mutex<Vec<Conn>>>;

async fn one(target: &Target, pool: &Pool, counters: &Counters, tally: &Mutex<HttpTally>) {
    let mut conn = pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
    let reused = conn.is_some();
    let began = Instant::now();
    counters.http_sent.fetch_add(1, Relaxed);
    let attempt = async {
        match request(target, &mut conn).await {
            // A kept-alive connection the server closed while it sat in the pool (latch
            // closes idle client connections): sent again once on a new connection, as
            // HTTP clients do for an idempotent request that got no answer at all.
            Err(f) if reused && f.before_answer => {
                conn = None;
                (request(target, &mut conn).await, Some(f.what))
            }
            r => (r, None),
        }
    };
    let (result, stale) = match timeout(REQUEST_TIMEOUT, attempt).await {
        Ok(r) => r,
        Err(_) => {
            conn = None;
            (
                Err(Failure {
                    what: "request timed out".into(),
                    before_answer: false,
                }),
                None,
            )
        }
    };
    if let Some(c) = conn {
        pool.lock().unwrap_or_else(|p| p.into_inner()).push(c);
    }
    counters
        .http_max_us
        .fetch_max(began.elapsed().as_micros() as u64, Relaxed);
    let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
    t.sent += 1;
    if let Some(what) = &stale {
        t.stale_retried += 1;
        if t.stale_errors.len() < KEEP_ERRORS && !t.stale_errors.contains(what) {
            t.stale_errors.push(what.clone());
        }
    }
    match result {
        Ok((status, body)) => {
            *t.statuses.entry(status).or_default() += 1;
            if (200..300).contains(&status) {
                t.ok += 1;
                counters.http_ok.fetch_add(1, Relaxed);
                *t.by_backend.entry(body).or_default() += 1;
            } else {
                t.non2xx += 1;
                counters.http_non2xx.fetch_add(1, Relaxed);
                t.failures
                    .push((crate::soak::epoch_ms(), format!("status {status}")));
            }
        }
        Err(f) => {
            let e = format!(
                "{} ({} connection)",
                f.what,
                if reused && stale.is_none() { "kept-alive" } else { "new" }
            );
            t.errors += 1;
            counters.http_err.fetch_add(1, Relaxed);
            if t.first_errors.len() < KEEP_ERRORS && !t.first_errors.contains(&e) {
                t.first_errors.push(e.clone());
            }
            t.failures.push((crate::soak::epoch_ms(), e));
        }
    }
}

/// Why a request failed, and whether that was before any byte of an answer arrived.
struct Failure {
    what: String,
    before_answer: bool,
}

/// One GET on the kept connection (opened first if there is none). Returns the status
/// and the body (lossy UTF-8, trimmed).
async fn request(target: &Target, conn: &mut Option<Conn>) -> Result<(u16, String), Failure> {
    let early = |what: String| Failure {
        what,
        before_answer: true,
    };
    if conn.is_none() {
        *conn = Some((connect(target).await.map_err(early)?, Vec::with_capacity(4096)));
    }
    let Some((stream, buf)) = conn.as_mut() else {
        return Err(early("no connection".into()));
    };
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: wsload-soak\r\n\r\n",
        target.path, target.host
    );
    let io = async {
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| early(format!("write: {e}")))?;
        if buf.is_empty() {
            fill(stream, buf).await.map_err(early)?;
        }
        read_response(stream, buf).await.map_err(|what| Failure {
            what,
            before_answer: false,
        })
    };
    match io.await {
        Ok((status, body, keep)) => {
            if !keep {
                *conn = None;
            }
            Ok((status, body))
        }
        Err(e) => {
            *conn = None;
            Err(e)
        }
    }
}

async fn connect(target: &Target) -> Result<Stream, String> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    Ok(match &target.tls {
        None => Either::Left(tcp),
        Some((c, name)) => Either::Right(
            c.connect(name.clone(), tcp)
                .await
                .map_err(|e| format!("tls: {e}"))?,
        ),
    })
}

async fn fill<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 8192];
    let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("closed by peer".into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Reads one response from `buf` + `s`; leaves any following bytes in `buf`.
/// Returns (status, body, whether the connection can be kept).
async fn read_response<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> Result<(u16, String, bool), String> {
    let (status, head_len, length, chunked, mut keep) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => {
                let status = resp.code.unwrap_or(0);
                let get = |name: &str| {
                    resp.headers
                        .iter()
                        .filter(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                let length = get("content-length").trim().parse::<usize>().ok();
                let chunked = get("transfer-encoding").contains("chunked");
                let keep = resp.version == Some(1)
                    && !get("connection").split(',').any(|t| t.trim() == "close");
                break (status, n, length, chunked, keep);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => fill(s, buf).await?,
            Ok(httparse::Status::Partial) => return Err("response head too large".into()),
            Err(e) => return Err(format!("bad response head: {e}")),
        }
    };
    buf.drain(..head_len);
    let body: Vec<u8> = if (100..200).contains(&status) || status == 204 || status == 304 {
        Vec::new()
    } else if chunked {
        read_chunked(s, buf).await?
    } else if let Some(n) = length {
        while buf.len() < n {
            fill(s, buf).await?;
        }
        buf.drain(..n).collect()
    } else {
        keep = false;
        loop {
            match fill(s, buf).await {
                Ok(()) => continue,
                Err(_) => break std::mem::take(buf),
            }
        }
    };
    Ok((status, String::from_utf8_lossy(&body).trim().to_string(), keep))
}

async fn read_chunked<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line = read_line(s, buf).await?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| "bad chunk size".to_string())?;
        if size == 0 {
            // Trailers, up to the blank line.
            while !read_line(s, buf).await?.is_empty() {}
            return Ok(body);
        }
        while buf.len() < size + 2 {
            fill(s, buf).await?;
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

async fn read_line<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Result<String, String> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..i]).to_string();
            buf.drain(..i + 2);
            return Ok(line);
        }
        if buf.len() > MAX_HEAD {
            return Err("chunk line too long".into());
        }
        fill(s, buf).await?;
    }
}
