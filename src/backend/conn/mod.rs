//! Upstream HTTP/1.1 connections: latch's own client side, driven by the
//! task of the request that uses them (as Pingora does), and the idle list
//! each [`Server`] keeps of them.
//!
//! A [`Conn`] is a socket with a read and a write buffer. A request's head
//! is serialised once into the write buffer (with a small body, in the same
//! write), the response head is parsed with `httparse` straight from the
//! read buffer (header values share its bytes), and the body is read by
//! [`Streaming`] as the client's connection task pulls it: no task, channel
//! or wake-up between the backend's socket and the client's. When the
//! response ends cleanly the connection goes back to its server's [`Idle`]
//! list; the next request checks its socket's readiness before reusing it,
//! so a connection the server closed is noticed without a system call.
//! Nothing runs for an idle connection; the pool's reaper closes the ones
//! that timed out or that their server closed.
//!
//! After a `101`, the connection becomes the backend side of a tunnel
//! ([`Conn::into_upgraded`]), with any bytes already read kept in front.
//!
//! Layout: `wire.rs` writes request heads and parses response heads,
//! `body.rs` reads response bodies, this file holds connections and the pool.
//!
//! [`Server`]: super::Server

mod body;
mod wire;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body_util::BodyExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub use body::Streaming;
pub use wire::{Head, HeadError, RespFraming};

use crate::body::Body;
use crate::proxy_protocol::{self, Addrs};

/// A request body is sent in the same write as its head up to this size.
const INLINE_BODY: usize = 16 * 1024;

/// One keep-alive HTTP/1.1 connection to a server. Its state is boxed: a
/// connection moves out of the idle list, through the attempt, into the
/// response body and back on every request, and a pointer moves in one
/// register where the state took a 192-byte copy each time.
pub struct Conn(Box<State>);

/// A connection's state, behind [`Conn`]'s box.
pub struct State {
    io: TcpStream,
    /// Bytes read and not consumed yet.
    rbuf: BytesMut,
    /// The request head (and a small body) being written.
    wbuf: Vec<u8>,
    /// Came from the idle list (served a request before).
    reused: bool,
    /// When it went idle ([`crate::clock::coarse`]); the reaper closes it
    /// `pool_idle_timeout` later.
    idle_since: Instant,
    /// The client connection its PROXY protocol header named
    /// (`send_proxy`): it carries requests of that client connection only,
    /// and is closed once that connection is gone.
    proxied: Option<Proxied>,
    /// The response head's `read` timer, kept armed from request to request
    /// (see [`Conn::read_head_within`]).
    read_timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The client connection that owns an upstream connection: held weakly, so
/// the idle list can tell when it is gone.
pub type Owner = std::sync::Weak<dyn std::any::Any + Send + Sync>;

/// What a connection's PROXY header said, and for whom.
#[derive(Debug, Clone)]
struct Proxied {
    client: Addrs,
    owner: Owner,
}

impl std::ops::Deref for Conn {
    type Target = State;
    fn deref(&self) -> &State {
        &self.0
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.0
    }
}

impl Conn {
    /// Whether it may carry a request for `owner` (`None`: a request that
    /// sends no PROXY header).
    fn serves(&self, owner: Option<&Owner>) -> bool {
        match (&self.proxied, owner) {
            (None, None) => true,
            (Some(p), Some(o)) => p.owner.ptr_eq(o),
            _ => false,
        }
    }

    /// A PROXY connection whose client connection has closed: no request
    /// can use it any more.
    fn orphaned(&self) -> bool {
        self.proxied
            .as_ref()
            .is_some_and(|p| p.owner.strong_count() == 0)
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("reused", &self.reused)
            .finish_non_exhaustive()
    }
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub enum ConnectError {
    Io(io::Error),
    Timeout,
}

/// A request body on its way out.
pub enum OutBody {
    /// Kept whole (and replayable); `had_length`: the client sent a
    /// `Content-Length`, which is kept even when it is 0.
    Whole(Bytes, bool),
    /// Streamed from the client; `length` when the client declared one
    /// (otherwise it is sent chunked).
    Stream(Body, Option<u64>),
}

/// Why a request got no response head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("writing the request: {0}")]
    Write(io::Error),
    #[error("reading the response: {0}")]
    Read(io::Error),
    /// Kept whole, so the forwarder can tell a client that went quiet
    /// (`client_body_timeout`, 408) from one that broke off.
    #[error("the request body from the client failed: {0}")]
    ClientBody(crate::body::BoxError),
    #[error("connection closed before the response head")]
    Closed,
    #[error(transparent)]
    Head(#[from] HeadError),
}

impl SendError {
    /// The server had closed (or was closing) the connection and sent
    /// nothing: it did not process the request.
    pub fn stale(&self) -> bool {
        match self {
            SendError::Closed => true,
            SendError::Write(e) | SendError::Read(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

/// Reads a response head from `io` into `rbuf`.
async fn read_head(
    io: &mut TcpStream,
    rbuf: &mut BytesMut,
    method: &Method,
    pass: bool,
) -> Result<Head, SendError> {
    loop {
        if let Some(head) = wire::parse_head(rbuf, method, pass)? {
            return Ok(head);
        }
        if rbuf.capacity() - rbuf.len() < 1024 {
            rbuf.reserve(8 * 1024);
        }
        let n = tokio::io::AsyncReadExt::read_buf(io, rbuf)
            .await
            .map_err(SendError::Read)?;
        if n == 0 {
            return Err(if rbuf.is_empty() {
                SendError::Closed
            } else {
                SendError::Read(io::ErrorKind::UnexpectedEof.into())
            });
        }
    }
}

/// Parses a response head from the front of `bytes` as a connection does
/// (`Ok(None)`: incomplete); with `pass`, its fields kept as bytes (see
/// [`wire::parse_head`]). For fuzzing and tests.
pub fn parse_response_head(
    bytes: &[u8],
    method: &Method,
    pass: bool,
) -> Result<Option<Head>, HeadError> {
    wire::parse_head(&mut BytesMut::from(bytes), method, pass)
}

/// Opens a connection to `addr` within `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Conn, ConnectError> {
    let io = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout),
        Ok(Err(e)) => return Err(ConnectError::Io(e)),
        Ok(Ok(io)) => io,
    };
    let _ = io.set_nodelay(true);
    Ok(Conn(Box::new(State {
        io,
        rbuf: BytesMut::with_capacity(8 * 1024),
        wbuf: Vec::with_capacity(1024),
        reused: false,
        idle_since: crate::clock::coarse(),
        proxied: None,
        read_timer: None,
    })))
}

impl Conn {
    /// Sends a PROXY protocol header for `client` first, on a new
    /// connection (`send_proxy`); from then on the connection belongs to
    /// `owner` (the client connection), and the idle list hands it to no
    /// other request and closes it once `owner` is gone (as HAProxy keeps
    /// such connections private).
    pub async fn send_proxy_header(
        &mut self,
        version: proxy_protocol::Version,
        client: Addrs,
        owner: Owner,
    ) -> io::Result<()> {
        let header = proxy_protocol::encode(version, Some(client));
        self.io.write_all(&header).await?;
        self.proxied = Some(Proxied { client, owner });
        Ok(())
    }

    /// The client its PROXY header named, if it sent one.
    pub fn proxied_client(&self) -> Option<Addrs> {
        self.proxied.as_ref().map(|p| p.client)
    }

    /// Whether it served a request before.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Writes the request: head and body. Returns early (`Ok(false)`) when
    /// the backend starts answering before a streamed body is all sent (it
    /// may refuse a large upload); the connection is then not reusable.
    pub async fn write_request<'a>(
        &mut self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        added: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
        body: OutBody,
    ) -> Result<bool, SendError> {
        let this = &mut *self.0;
        this.wbuf.clear();
        match body {
            OutBody::Whole(bytes, had_length) => {
                let framing = wire::framing_for(method, bytes.len() as u64, had_length);
                wire::write_head(&mut this.wbuf, method, target, headers, added, framing);
                if bytes.len() <= INLINE_BODY {
                    this.wbuf.extend_from_slice(&bytes);
                    this.io
                        .write_all(&this.wbuf)
                        .await
                        .map_err(SendError::Write)?;
                } else {
                    this.io
                        .write_all(&this.wbuf)
                        .await
                        .map_err(SendError::Write)?;
                    this.io.write_all(&bytes).await.map_err(SendError::Write)?;
                }
                Ok(true)
            }
            OutBody::Stream(body, length) => {
                let framing = match length {
                    Some(n) => wire::ReqFraming::Length(n),
                    None => wire::ReqFraming::Chunked,
                };
                wire::write_head(&mut this.wbuf, method, target, headers, added, framing);
                let (rd, mut wr) = this.io.split();
                let head = std::mem::take(&mut this.wbuf);
                let send = async {
                    wr.write_all(&head).await.map_err(SendError::Write)?;
                    write_stream(&mut wr, body, length.is_none()).await
                };
                let answered = async {
                    let _ = rd.readable().await;
                };
                let outcome = tokio::select! {
                    r = send => r.map(|()| true),
                    () = answered => Ok(false),
                };
                this.wbuf = head;
                outcome
            }
        }
    }

    /// Reads the response head.
    pub async fn read_head(&mut self, method: &Method) -> Result<Head, SendError> {
        let this = &mut *self.0;
        read_head(&mut this.io, &mut this.rbuf, method, false).await
    }

    /// Reads the response head within `timeout`; `None` when it did not
    /// come in time. With `pass`, its fields are kept as the backend's bytes
    /// (see [`wire::parse_head`]).
    ///
    /// The timer is the connection's, and it is not re-armed per request
    /// (each time a remove and an insert in the runtime's timer wheel, under
    /// its lock): while it is set for a moment no later than this request's
    /// deadline, and still ahead, it stays; should it fire before the
    /// deadline, it is set again for the deadline. With `read` at seconds
    /// and requests at microseconds, a busy connection re-arms it about once
    /// per `read`.
    pub async fn read_head_within(
        &mut self,
        method: &Method,
        timeout: Duration,
        pass: bool,
    ) -> Option<Result<Head, SendError>> {
        let now = tokio::time::Instant::now();
        // As `tokio::time::timeout`: a timeout past any clock is ~30 years.
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400));
        let this = &mut *self.0;
        let timer = this
            .read_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() > deadline || timer.deadline() <= now {
            timer.as_mut().reset(deadline);
        }
        let read = read_head(&mut this.io, &mut this.rbuf, method, pass);
        tokio::pin!(read);
        loop {
            tokio::select! {
                biased;
                r = &mut read => return Some(r),
                () = timer.as_mut() => {
                    if tokio::time::Instant::now() >= deadline {
                        return None;
                    }
                    // Set for an earlier request: on to this one's deadline.
                    timer.as_mut().reset(deadline);
                }
            }
        }
    }

    /// The connection as the backend side of a tunnel, after a `101`.
    pub fn into_upgraded(self) -> Upgraded {
        let State { io, rbuf, .. } = *self.0;
        Upgraded::new(io, &rbuf)
    }

    /// Checks an idle connection before reuse: true when it is open and has
    /// nothing unexpected to read. Normally no system call: only when the
    /// socket reports readiness is it read to tell a close from data.
    fn ready(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.rbuf.is_empty() {
            return false;
        }
        match self.io.poll_read_ready(cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

/// Writes a streamed body, chunked when it has no declared length.
async fn write_stream<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut body: Body,
    chunked: bool,
) -> Result<(), SendError> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(SendError::ClientBody)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers are not forwarded
        };
        if data.is_empty() {
            continue;
        }
        if chunked {
            w.write_all(&wire::chunk_header(data.len()))
                .await
                .map_err(SendError::Write)?;
        }
        w.write_all(&data).await.map_err(SendError::Write)?;
        if chunked {
            w.write_all(b"\r\n").await.map_err(SendError::Write)?;
        }
    }
    if chunked {
        w.write_all(b"0\r\n\r\n").await.map_err(SendError::Write)?;
    }
    Ok(())
}

/// The backend side of a tunnel: the socket, with the bytes read past the
/// `101` head served first.
pub type Upgraded = crate::http1::Rewind<TcpStream>;

// === impl Idle ===

/// How long `conn` has been idle, by the coarse clock (a tick off at most).
fn idle_for(conn: &Conn) -> Duration {
    crate::clock::coarse().saturating_duration_since(conn.idle_since)
}

/// A server's idle keep-alive connections, most recently used last.
#[derive(Debug, Default)]
pub struct Idle(Mutex<Vec<Conn>>);

impl Idle {
    fn list(&self) -> MutexGuard<'_, Vec<Conn>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `conn` for a later request; past `max` the oldest is closed.
    pub fn put(&self, mut conn: Conn, max: usize) {
        if max == 0 {
            return;
        }
        conn.reused = true;
        conn.idle_since = crate::clock::coarse();
        let evicted = {
            let mut list = self.list();
            let evicted = (list.len() >= max).then(|| list.remove(0));
            list.push(conn);
            evicted
        };
        drop(evicted); // closed outside the lock
    }

    /// The most recently used connection that is still open and younger than
    /// `max_age`; closed or stale ones met on the way are dropped.
    pub async fn checkout(&self, max_age: Duration) -> Option<Conn> {
        self.checkout_for(max_age, None).await
    }

    /// Like [`Idle::checkout`], among the connections whose PROXY header
    /// was sent for `owner`, a client connection (`None`: the ones that sent
    /// none). A header names one client, so such a connection serves only
    /// the client connection it was opened for.
    pub async fn checkout_for(&self, max_age: Duration, owner: Option<&Owner>) -> Option<Conn> {
        std::future::poll_fn(|cx| Poll::Ready(self.take_ready(cx, max_age, owner))).await
    }

    fn take_ready(
        &self,
        cx: &mut Context<'_>,
        max_age: Duration,
        owner: Option<&Owner>,
    ) -> Option<Conn> {
        loop {
            let mut conn = {
                let mut list = self.list();
                let i = list.iter().rposition(|c| c.serves(owner))?;
                list.remove(i)
            };
            if idle_for(&conn) < max_age && conn.ready(cx) {
                return Some(conn);
            }
        }
    }

    /// Closes the connections older than `max_age`, closed by the server, or
    /// whose PROXY header's client connection is gone.
    pub fn reap(&self, max_age: Duration) {
        let mut cx = Context::from_waker(Waker::noop());
        let mut stale = Vec::new();
        {
            let mut list = self.list();
            for mut c in std::mem::take(&mut *list) {
                if idle_for(&c) < max_age && !c.orphaned() && c.ready(&mut cx) {
                    list.push(c);
                } else {
                    stale.push(c);
                }
            }
        }
        drop(stale); // closed outside the lock
    }

    /// Closes every idle connection (the server is leaving).
    pub fn clear(&self) {
        let all = std::mem::take(&mut *self.list());
        drop(all);
    }

    pub fn len(&self) -> usize {
        self.list().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
