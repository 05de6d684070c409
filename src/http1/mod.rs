//! latch's own HTTP/1.1 server side: one task per client connection reads
//! request heads, runs the handler for each, and writes its response, with
//! no other task or channel between the socket and the handler (as HAProxy,
//! nginx and Pingora do it; hyper's dispatcher cost as much as the rest of
//! the request path). What a client connection needs of a server:
//!
//! - heads parsed in one pass (`head.rs`), limited by `max_header_size`
//!   (431) and by `header_timeout` from the moment a head is awaited (408
//!   when part of one came, a quiet close when none did);
//! - bodies read by their framing (`body.rs`) while the handler runs, and
//!   `100 Continue` when the client asks for it;
//! - responses framed for the client (`write.rs`): their length, else
//!   chunked, else until close for HTTP/1.0; small bodies leave in the same
//!   write as their head;
//! - keep-alive and pipelining (the next head may already be in the buffer);
//! - upgrades: after a `101`, the connection (and anything read past the
//!   request head) goes to whoever holds the request's [`OnUpgrade`];
//! - a drain: an idle connection closes at once, a busy one after its
//!   response (with `Connection: close`).
//!
//! Nothing here knows about routing or backends: the handler is a function
//! from request to response.

mod body;
pub mod fields;
pub mod head;
mod upgrade;
mod write;

use std::future::Future;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt as _;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Body as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use body::{BodyError, ClientBody, chunk_size, decode_whole};
pub use head::{Framing as ReqFraming, Parsed, Refused};
pub use upgrade::{ClientIo, Io, NotUpgraded, OnUpgrade, Rewind};
pub use write::{Framing as RespFraming, HOP_BY_HOP, RawFields, is_hop_by_hop};

use crate::body::{Body, BoxError};
use crate::woken::WokenOnly;

/// Bytes read from the socket at a time for heads.
const READ_SIZE: usize = 8 * 1024;
/// Body frames up to this size are copied into the write buffer (so a small
/// response leaves in one write); larger ones are written as they are.
const COPY_MAX: usize = 8 * 1024;
/// The write buffer is written out once it holds this much.
const FLUSH_AT: usize = 32 * 1024;
/// A request running this long has its client's socket watched for a close.
const WATCH_AFTER: Duration = Duration::from_millis(200);
/// Longest wait to say goodbye to an idle connection.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The connection's deadlines (header, keep-alive, watch) are seconds or
/// hundreds of milliseconds: the coarse clock, a tick off at most, sets
/// them at a fifth of the precise clock's cost (see [`crate::clock`]).
fn coarse_now() -> Instant {
    Instant::from_std(crate::clock::coarse())
}

/// A connection's limits.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Time for a whole request head: from the moment it is awaited for a
    /// connection's first request, from its first byte for later ones.
    pub header_timeout: Duration,
    /// How long a kept-alive connection may wait idle for its next request;
    /// zero: no keep-alive (each response closes its connection).
    pub keepalive_timeout: Duration,
    /// Largest request head, request line to blank line.
    pub max_header_size: usize,
}

/// How a connection ended other than cleanly (for the debug log).
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("refused request head: {0}")]
    Refused(&'static str),
    #[error("no complete request head within {0:?}")]
    HeaderTimeout(Duration),
    #[error("the client closed the connection in the middle of a request head")]
    ClosedMidHead,
    #[error("response body: {0}")]
    Body(BoxError),
    #[error("the client closed the connection before its response")]
    ClientGone,
}

/// Serves HTTP/1.1 on `io` until the client closes, a request asks to
/// close, the connection is upgraded, or `drain` is cancelled (at once when
/// idle, else after the response in progress). The handler answers with a
/// response and, for a backend's answer, maybe its fields as the backend's
/// bytes (written before the response's map).
pub async fn serve<I, H, F>(
    mut io: I,
    settings: Settings,
    mut handler: H,
    drain: &CancellationToken,
) -> Result<(), ConnError>
where
    I: Io,
    H: FnMut(Request<Body>) -> F,
    F: Future<Output = (Response<Body>, Option<RawFields>)>,
{
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    // One timer serves both waits, re-armed only when it must be: the head's
    // deadline, and the moment a running request starts to watch the socket.
    let timer = tokio::time::sleep(settings.header_timeout);
    tokio::pin!(timer);
    let mut first = true;
    // The drain, waited for once per connection and polled only when it
    // fires: a fresh `cancelled()` per request would register and remove a
    // waiter under the lock of a list every connection shares.
    let drained = WokenOnly::new(drain.cancelled());
    tokio::pin!(drained);
    let mut draining = false;
    loop {
        // The head, within header_timeout; but between requests a kept-alive
        // connection may first sit idle for keepalive_timeout, and its next
        // head's header_timeout runs from its first byte (nginx
        // `keepalive_timeout` and `client_header_timeout`).
        let mut between = !first && buf.is_empty();
        first = false;
        let mut head_deadline = coarse_now()
            + if between {
                settings.keepalive_timeout
            } else {
                settings.header_timeout
            };
        if timer.deadline() > head_deadline {
            timer.as_mut().reset(head_deadline);
        }
        let parsed = loop {
            if !buf.is_empty() {
                match head::parse(&mut buf, settings.max_header_size) {
                    Ok(Some(p)) => break p,
                    Ok(None) => {}
                    Err(refused) => {
                        refuse(&mut io, &mut out, refused.status).await;
                        return Err(ConnError::Refused(refused.why));
                    }
                }
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(READ_SIZE);
            }
            let idle = buf.is_empty();
            let n = tokio::select! {
                biased;
                r = io.read_buf(&mut buf) => r?,
                () = &mut timer => {
                    // The precise clock: the coarse one can still be behind
                    // the deadline that just fired.
                    if Instant::now() < head_deadline {
                        // Set for an earlier request's watch.
                        timer.as_mut().reset(head_deadline);
                        continue;
                    }
                    if idle {
                        close_quietly(&mut io).await;
                        return Ok(());
                    }
                    refuse(&mut io, &mut out, StatusCode::REQUEST_TIMEOUT).await;
                    return Err(ConnError::HeaderTimeout(settings.header_timeout));
                }
                () = drained.as_mut(), if idle => {
                    close_quietly(&mut io).await;
                    return Ok(());
                }
            };
            if n == 0 {
                return if buf.is_empty() {
                    Ok(())
                } else {
                    Err(ConnError::ClosedMidHead)
                };
            }
            if between {
                // The next request has begun: its head has header_timeout.
                between = false;
                head_deadline = coarse_now() + settings.header_timeout;
                if timer.deadline() > head_deadline {
                    timer.as_mut().reset(head_deadline);
                }
            }
        };
        let head::Parsed {
            request,
            framing,
            keep_alive,
            expect_continue,
            upgrade,
        } = parsed;
        let head_request = request.method() == Method::HEAD;
        let version = request.version();

        // The body, read by this task while the handler runs.
        let (body, mut pump) = match framing {
            head::Framing::None => (empty(), None),
            f => {
                let (b, p) = body::channel(f);
                (b.boxed(), Some(p))
            }
        };
        let mut request = request.map(|()| body);
        let upgrade_tx = upgrade.then(|| {
            let (tx, rx) = oneshot::channel();
            request.extensions_mut().insert(OnUpgrade::new(rx));
            tx
        });
        if expect_continue && pump.is_some() && buf.is_empty() {
            io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            io.flush().await?;
        }
        let fut = handler(request);
        tokio::pin!(fut);
        // While the handler runs: first its body is read, if it has one;
        // then, once the request has taken WATCH_AFTER, the socket is
        // watched, so that a client that leaves (say, during a long poll)
        // ends its request at once, as hyper and nginx do. A quick request
        // costs no read that would only find nothing there.
        let now = coarse_now();
        let watch_at = now + WATCH_AFTER;
        if timer.deadline() <= now || timer.deadline() > watch_at {
            timer.as_mut().reset(watch_at);
        }
        let mut early = None;
        if let Some(p) = pump.as_mut() {
            tokio::select! {
                biased;
                r = &mut fut => early = Some(r),
                () = p.run(&mut io, &mut buf) => {}
            }
        }
        let response = match early {
            Some(r) => r,
            None => {
                let mut watching = false;
                loop {
                    tokio::select! {
                        biased;
                        r = &mut fut => break r,
                        () = &mut timer, if !watching => watching = true,
                        r = io.read_buf(&mut buf), if watching => match r {
                            // Pipelined bytes wait in the buffer, up to a head's worth.
                            Ok(n) if n > 0 => watching = buf.len() < settings.max_header_size,
                            Ok(_) => return Err(ConnError::ClientGone),
                            Err(e) => return Err(ConnError::Io(e)),
                        },
                    }
                }
            }
        };

        // The response.
        let body_read = pump.as_ref().is_none_or(body::Pump::finished);
        // Without a lock: whether the drain's wake-up came.
        draining = draining || drained.as_mut().now_or_never().is_some();
        let keep = keep_alive && body_read && !draining && !settings.keepalive_timeout.is_zero();
        let (response, fields) = response;
        let (parts, mut rbody) = response.into_parts();
        out.clear();
        let written = write::head(
            &mut out,
            &parts,
            fields.as_ref(),
            &rbody.size_hint(),
            head_request,
            version,
            keep,
        );
        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            io.write_all(&out).await?;
            io.flush().await?;
            if let Some(tx) = upgrade_tx {
                // With what the client sent past its request head.
                let _ = tx.send(ClientIo::new(Box::new(io), &buf));
            }
            return Ok(());
        }
        drop(upgrade_tx);
        drop(parts);
        write_body(&mut io, &mut out, &mut rbody, written.framing).await?;
        drop(rbody);
        if out.capacity() > FLUSH_AT * 2 {
            out = Vec::with_capacity(1024);
        }
        if !written.keep_alive {
            let _ = io.shutdown().await;
            return Ok(());
        }
    }
}

/// Closes an idle connection the polite way: on TLS a `close_notify`
/// first, so the client can tell a deliberate close from a cut one. Bounded,
/// as a client that reads nothing could hold it.
async fn close_quietly<I: Io>(io: &mut I) {
    let _ = tokio::time::timeout(CLOSE_WAIT, io.shutdown()).await;
}

/// An empty body (no allocation).
fn empty() -> Body {
    http_body_util::Empty::new().map_err(|e| match e {}).boxed()
}

/// Answers `status` and closes (best effort: the client may be gone).
async fn refuse<I: Io>(io: &mut I, out: &mut Vec<u8>, status: StatusCode) {
    out.clear();
    write::refusal(out, status);
    if io.write_all(out).await.is_ok() {
        let _ = io.shutdown().await;
    }
}

/// Writes the response body after the head in `out`, by `framing`. A body
/// that fails, or does not match its declared length, ends the connection
/// (the client sees it cut, not a wrong length).
async fn write_body<I: Io>(
    io: &mut I,
    out: &mut Vec<u8>,
    body: &mut Body,
    framing: RespFraming,
) -> Result<(), ConnError> {
    let mut left = match framing {
        RespFraming::None => {
            io.write_all(out).await?;
            out.clear();
            io.flush().await?;
            return Ok(());
        }
        RespFraming::Length(n) => Some(n),
        RespFraming::Chunked | RespFraming::Close => None,
    };
    let chunked = framing == RespFraming::Chunked;
    loop {
        // A frame that is ready joins the head (or the previous frames) in
        // one write; before waiting for the next, what is buffered goes out.
        let frame = match body.frame().now_or_never() {
            Some(f) => f,
            None => {
                if !out.is_empty() {
                    io.write_all(out).await?;
                    out.clear();
                }
                io.flush().await?;
                body.frame().await
            }
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => {
                let _ = io.write_all(out).await;
                out.clear();
                return Err(ConnError::Body(e));
            }
            Some(Ok(f)) => match f.into_data() {
                Ok(d) if !d.is_empty() => d,
                // Empty data, or trailers (not forwarded).
                _ => continue,
            },
        };
        if let Some(left) = &mut left {
            match left.checked_sub(data.len() as u64) {
                Some(l) => *left = l,
                None => {
                    return Err(ConnError::Body(
                        "response body longer than its Content-Length".into(),
                    ));
                }
            }
        }
        if chunked {
            write::chunk_line(out, data.len());
        }
        if data.len() <= COPY_MAX {
            out.extend_from_slice(&data);
        } else {
            if !out.is_empty() {
                io.write_all(out).await?;
                out.clear();
            }
            io.write_all(&data).await?;
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= FLUSH_AT {
            io.write_all(out).await?;
            out.clear();
        }
    }
    if left.is_some_and(|l| l > 0) {
        let _ = io.write_all(out).await;
        out.clear();
        return Err(ConnError::Body(
            "response body shorter than its Content-Length".into(),
        ));
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    io.write_all(out).await?;
    out.clear();
    io.flush().await?;
    Ok(())
}
