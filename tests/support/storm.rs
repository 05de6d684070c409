//! A restartable WebSocket echo backend that records when each WebSocket
//! handshake completes, and reconnecting WebSocket clients, for reconnect
//! storms (tests/upgrade_storm.rs).
//!
//! [`StormBackend::restart`] is what a process restart looks like from the
//! outside: the listener and every connection close at once, then the same
//! address listens again.
//!
//! Backends accept on a thread of their own and run connections on a runtime
//! of their own (see [`backend_runtime`]), so the thousands of client tasks
//! of the test do not delay or bunch their accepts (on a task of a busy
//! runtime, accepts were late by up to ~0.6 s, and a second could show 1.7
//! times the rate latch admitted).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

use super::{TIMEOUT, within, within_for};

/// What a backend saw, shared with its connection tasks.
#[derive(Default)]
struct Seen {
    /// When each WebSocket handshake completed.
    accepts: Mutex<Vec<Instant>>,
    /// WebSockets open now.
    open: AtomicUsize,
}

/// A one-thread runtime for the backends' connections, apart from the
/// test's clients.
pub fn backend_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("storm-backend")
        .enable_all()
        .build()
        .expect("backend runtime")
}

pub struct StormBackend {
    pub addr: SocketAddr,
    rt: tokio::runtime::Handle,
    seen: Arc<Seen>,
    /// Ends the connections (and tells the accept thread to stop).
    stop: CancellationToken,
    accept_thread: Option<std::thread::JoinHandle<()>>,
}

impl StormBackend {
    /// A backend on 127.0.0.1:0 whose connections run on `rt` (from
    /// [`backend_runtime`]).
    pub async fn spawn(rt: tokio::runtime::Handle) -> StormBackend {
        let mut b = StormBackend {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            rt,
            seen: Arc::default(),
            stop: CancellationToken::new(),
            accept_thread: None,
        };
        b.serve();
        b
    }

    /// Listens on `self.addr` (the port it got the first time) and serves.
    /// Accepts happen on a thread of their own, blocked in `accept(2)`, so
    /// each is timestamped the moment the kernel hands it over, however busy
    /// the runtimes are.
    fn serve(&mut self) {
        let listener = std::net::TcpListener::bind(self.addr).expect("bind");
        self.addr = listener.local_addr().expect("local addr");
        let (seen, stop, rt) = (self.seen.clone(), self.stop.clone(), self.rt.clone());
        self.accept_thread = Some(std::thread::spawn(move || {
            for conn in listener.incoming() {
                let at = Instant::now();
                if stop.is_cancelled() {
                    return;
                }
                let Ok(stream) = conn else { continue };
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                let (seen, stop) = (seen.clone(), stop.clone());
                rt.spawn(async move {
                    let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                        return;
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    // Every connection latch opens is one admitted upgrade.
                    seen.accepts.lock().unwrap().push(at);
                    seen.open.fetch_add(1, Ordering::SeqCst);
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            m = ws.next() => match m {
                                Some(Ok(Message::Text(t))) => {
                                    if ws.send(Message::Text(t)).await.is_err() {
                                        break;
                                    }
                                }
                                Some(Ok(_)) => {}
                                _ => break,
                            },
                        }
                    }
                    seen.open.fetch_sub(1, Ordering::SeqCst);
                    // Dropping `ws` closes the socket with no close frame.
                });
            }
        }));
    }

    /// WebSockets open now.
    pub fn open(&self) -> usize {
        self.seen.open.load(Ordering::SeqCst)
    }

    /// When each connection that became a WebSocket was accepted.
    pub fn accepts(&self) -> Vec<Instant> {
        self.seen.accepts.lock().unwrap().clone()
    }

    /// Stops accepting and ends every connection; waits until the listener
    /// is closed.
    async fn stop_all(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.accept_thread.take() {
            // Wakes the accept thread, which sees the stop and returns,
            // closing the listener.
            let _ = std::net::TcpStream::connect(self.addr);
            within(
                "the accept thread to end",
                tokio::task::spawn_blocking(move || t.join()),
            )
            .await
            .expect("join")
            .expect("the accept thread");
        }
    }

    /// Closes the listener and every connection at once, then listens on the
    /// same address again.
    pub async fn restart(&mut self) {
        self.stop_all().await;
        let seen = self.seen.clone();
        super::wait_until("the backend's connections to close", TIMEOUT, || {
            seen.open.load(Ordering::SeqCst) == 0
        })
        .await;
        self.stop = CancellationToken::new();
        self.serve();
    }

    pub async fn stop(mut self) {
        self.stop_all().await;
    }
}

/// What all the storm's clients saw, together.
#[derive(Default)]
pub struct ClientStats {
    /// Clients connected now.
    pub connected: AtomicUsize,
    /// WebSocket handshakes that succeeded.
    pub handshakes: AtomicUsize,
    /// 503 answers, and the `Retry-After` values they carried.
    pub refused: AtomicUsize,
    pub retry_after: Mutex<Vec<u64>>,
    /// Other failed attempts (connection errors, other statuses).
    pub failed: AtomicUsize,
}

/// A WebSocket client that stays connected to `url` until `stop`: it
/// reconnects at once when its connection ends, and after `Retry-After`
/// when answered 503, as browsers' reconnecting libraries do. At most
/// `max_attempts` handshakes are tried in all.
pub async fn reconnecting_client(
    url: String,
    stats: Arc<ClientStats>,
    stop: CancellationToken,
    max_attempts: usize,
) {
    for _ in 0..max_attempts {
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            r = within_for(Duration::from_secs(30), "a WebSocket handshake", tokio_tungstenite::connect_async(url.as_str())) => r,
        };
        let wait = match attempt {
            Ok((mut ws, _)) => {
                stats.handshakes.fetch_add(1, Ordering::SeqCst);
                stats.connected.fetch_add(1, Ordering::SeqCst);
                let ended = tokio::select! {
                    _ = stop.cancelled() => false,
                    _ = async { while let Some(Ok(_)) = ws.next().await {} } => true,
                };
                stats.connected.fetch_sub(1, Ordering::SeqCst);
                if !ended {
                    let _ = ws.close(None).await;
                    return;
                }
                Duration::ZERO
            }
            Err(WsError::Http(resp)) if resp.status() == 503 => {
                stats.refused.fetch_add(1, Ordering::SeqCst);
                let secs = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .expect("a 503 to an upgrade carries Retry-After in seconds");
                stats.retry_after.lock().unwrap().push(secs);
                Duration::from_secs(secs)
            }
            Err(_) => {
                stats.failed.fetch_add(1, Ordering::SeqCst);
                Duration::from_millis(rand::random_range(50..250))
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    panic!("a client gave up after {max_attempts} attempts");
}

/// Accepts per `window` from `start`, for `windows` windows.
pub fn per_window(
    accepts: &[Instant],
    start: Instant,
    window: Duration,
    windows: usize,
) -> Vec<usize> {
    let mut counts = vec![0; windows];
    for t in accepts.iter().filter(|t| **t >= start) {
        let i = (t.duration_since(start).as_nanos() / window.as_nanos()) as usize;
        if let Some(c) = counts.get_mut(i) {
            *c += 1;
        }
    }
    counts
}

/// The most accepts in any sliding window of `span` (accepts sorted).
pub fn max_in_span(accepts: &[Instant], span: Duration) -> usize {
    let mut sorted = accepts.to_vec();
    sorted.sort();
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..sorted.len() {
        while sorted[hi].duration_since(sorted[lo]) >= span {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}
