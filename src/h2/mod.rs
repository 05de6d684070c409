//! HTTP/2 to clients (RFC 9113), with WebSockets over HTTP/2 streams
//! (RFC 8441). hyper's HTTP/2 server reads the frames; each stream's
//! request is turned into what an HTTP/1.1 backend expects (`convert.rs`)
//! and runs through the same [`proxy::handle`] as an HTTP/1.1 request:
//! routing, stickiness, retries, headers, metrics and the access log are
//! the HTTP/1.1 ones. Backends stay HTTP/1.1.
//!
//! A WebSocket (extended CONNECT, `:protocol = websocket`) becomes an
//! HTTP/1.1 upgrade request carrying an [`OnUpgrade`], like the one the
//! HTTP/1.1 server gives: when the backend answers `101`, the forwarder
//! opens its tunnel (counted, drained and said goodbye to as any other),
//! the stream is answered `200`, and hyper's upgraded stream is handed to
//! that tunnel as its client side (`stream.rs`). Each stream has its own
//! flow-control window, so a stalled WebSocket holds only its own window
//! and the connection's other streams go on.
//!
//! A connection's streams run inside its own task (`local.rs`): hyper
//! hands each stream's future to an executor that keeps it in a list the
//! connection polls, before the connection itself, so the responses that are
//! ready go out together in one write, as HAProxy's and nginx's do.
//!
//! A connection (`serve`) ends when the client closes it, on a protocol
//! error or abuse (hyper and h2 send `GOAWAY`: too many streams reset
//! before they were served, the rapid reset of CVE-2023-44487; too many
//! streams latch had to reset; a header block over
//! `h2_max_header_list_size`, or too many CONTINUATION frames), after
//! `keepalive_timeout` with no stream open, or on a drain: `GOAWAY`, then the
//! open streams finish. At the end of the grace the connection is kept
//! just long enough for its tunnels to send their close frames.

mod convert;
mod local;
mod stream;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::server::conn::http2;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncReadExt as _;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::{H2Settings, ServerSettings};
use crate::http1::{Io, OnUpgrade};
use crate::proxy::{ConnInfo, Shared, tunnel};
use crate::woken::WokenOnly;

pub use convert::{Kind, WsAnswer};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads the first bytes of a plain connection to tell h2c with prior
/// knowledge (the preface) from HTTP/1.1: reads until the bytes cannot be
/// the preface, or are all of it. Returns the verdict and what was read
/// (to be read again by the server chosen). Bounded by `timeout`.
pub async fn sniff<I: Io>(io: &mut I, timeout: Duration) -> std::io::Result<(bool, Vec<u8>)> {
    let mut buf = Vec::with_capacity(PREFACE.len());
    let read = async {
        loop {
            let n = io.read_buf(&mut buf).await?;
            let seen = buf.len().min(PREFACE.len());
            if n == 0 || buf[..seen] != PREFACE[..seen] {
                return Ok(false);
            }
            if seen == PREFACE.len() {
                return Ok(true);
            }
            // `read_buf` appends; room for the rest of the preface.
            buf.reserve(PREFACE.len() - buf.len());
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r.map(|h2| (h2, buf)),
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Streams open on a connection, and whether one came or went since the
/// idle timer last looked.
#[derive(Debug, Default)]
struct Activity {
    open: AtomicUsize,
    touched: AtomicBool,
}

/// A stream's place in its connection's [`Activity`], given back when
/// dropped (its response body ended, or its tunnel closed).
#[derive(Debug)]
struct StreamGuard(Arc<Activity>);

impl StreamGuard {
    fn new(a: &Arc<Activity>) -> StreamGuard {
        a.open.fetch_add(1, Ordering::Relaxed);
        a.touched.store(true, Ordering::Relaxed);
        StreamGuard(a.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.touched.store(true, Ordering::Relaxed);
    }
}

/// What every stream of one connection shares.
struct Ctx {
    shared: Arc<Shared>,
    info: Arc<ConnInfo>,
    activity: Arc<Activity>,
}

/// hyper's HTTP/2 server with `h`'s limits, extended CONNECT on, its
/// streams run by `exec` (in the connection's task).
fn builder(h: &H2Settings, exec: local::Local) -> http2::Builder<local::Local> {
    let mut b = http2::Builder::new(exec);
    b.timer(TokioTimer::new())
        .max_concurrent_streams(h.max_concurrent_streams)
        .initial_stream_window_size(h.initial_window_size)
        .initial_connection_window_size(h.connection_window_size)
        .max_header_list_size(h.max_header_list_size)
        .max_pending_accept_reset_streams(h.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(h.max_local_error_reset_streams)
        .enable_connect_protocol();
    b
}

/// Serves HTTP/2 on `io` until the connection ends (see the module doc).
pub async fn serve<I: Io>(
    io: I,
    shared: Arc<Shared>,
    info: Arc<ConnInfo>,
    h: &H2Settings,
    server: &ServerSettings,
    drain: &CancellationToken,
) {
    let metrics = shared.metrics.clone();
    let _open = metrics.h2.connection();
    let hard_stop = shared.hard_stop.clone();
    let peer = info.peer;
    let activity = Arc::new(Activity::default());
    let ctx = Arc::new(Ctx {
        shared,
        info,
        activity: activity.clone(),
    });
    // hyper wraps each stream's future in one of its own, which moves by
    // value (into the executor, and with tokio's executor into a task and
    // out at each stage change). Boxed, what moves is a pointer; inline it
    // was the whole request path's state, several KiB (callgrind, with
    // tokio's executor: memcpy 20% of an HTTP/2 request's instructions).
    let service = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        let serve = Box::pin(stream::serve(ctx, req));
        async move { Ok::<_, std::convert::Infallible>(serve.await) }
    });
    let exec = local::Local::default();
    let mut streams = local::Streams::new(&exec);
    let conn = builder(h, exec).serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    // As HTTP/1.1's keep-alive; an HTTP/2 connection is for many requests,
    // so keep-alive off (zero) falls back to `header_timeout`.
    let idle = match server.keepalive_timeout.is_zero() {
        true => server.header_timeout,
        false => server.keepalive_timeout,
    };
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    let mut closing = false;
    let mut hard = false;
    // Polled only when they fire, not on each of the connection's frames.
    let drained = WokenOnly::new(drain.cancelled());
    let stopped = WokenOnly::new(hard_stop.cancelled());
    tokio::pin!(drained, stopped);
    let result = loop {
        tokio::select! {
            // The streams first, the connection after: the responses the
            // streams finished go out in the connection's next write.
            biased;
            () = std::future::poll_fn(|cx| streams.poll_run(cx)) => {}
            r = conn.as_mut() => break r,
            () = drained.as_mut(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = &mut timer, if !closing || hard => {
                if hard {
                    // The tunnels had their time to say goodbye.
                    debug!(%peer, "HTTP/2 connection closed at the end of the grace");
                    return;
                }
                let busy = activity.open.load(Ordering::Relaxed) > 0;
                if !busy && !activity.touched.swap(false, Ordering::Relaxed) {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                } else {
                    activity.touched.store(false, Ordering::Relaxed);
                    timer.as_mut().reset(tokio::time::Instant::now() + idle);
                }
            }
            () = stopped.as_mut(), if !hard => {
                // Tunnels on this connection send their close frames
                // through it: keep it served while they may.
                hard = true;
                let left = server.close_spread + tunnel::CLOSE_TIMEOUT + Duration::from_secs(1);
                timer.as_mut().reset(tokio::time::Instant::now() + left);
            }
        }
    };
    if let Err(e) = result {
        if sent_goaway_error(&e) {
            metrics.h2.connection_error();
        }
        debug!(%peer, "HTTP/2 connection ended: {e}");
    }
}

/// Whether latch ended the connection with a `GOAWAY` carrying an error
/// (a protocol error or abuse by the client), rather than the client
/// leaving.
fn sent_goaway_error(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<::h2::Error>() {
            return h2.is_go_away() && h2.is_library();
        }
        source = s.source();
    }
    false
}

/// Gives the upgraded stream's io to `on_upgrade`'s holder (the tunnel).
pub(crate) fn upgrade_slot() -> (
    tokio::sync::oneshot::Sender<crate::http1::ClientIo>,
    OnUpgrade,
) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    (tx, OnUpgrade::new(rx))
}
