//! Upstream HTTP/1.1 connections, driven by the task of the request that uses
//! them (as Pingora does), and the idle list each [`Server`] keeps of them.
//!
//! hyper's pooled client runs every upstream connection as a task of its own
//! and hands it requests through a channel: each request then costs two
//! cross-task wake-ups (often cross-thread) and each body chunk another. Here
//! a [`Conn`] is a plain value: [`Conn::send`] polls the connection and the
//! response future together, and the response body ([`Streaming`]) keeps
//! polling the connection as the client's connection task reads it. When the
//! response ends cleanly the connection goes back to its server's [`Idle`]
//! list, ready for the next request, which checks it is still open before
//! using it. Nothing runs for an idle connection; the pool's reaper closes the
//! ones that timed out or that their server closed.
//!
//! An Upgrade request gets a fresh connection of its own whose driver is a
//! task (it outlives the request as a tunnel), as before.
//!
//! [`Server`]: super::Server

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::Active;
use crate::body::Body;

type Io = TokioIo<TcpStream>;

/// One keep-alive HTTP/1.1 connection to a server.
pub struct Conn {
    send: http1::SendRequest<Body>,
    /// The connection's state machine: reads and writes happen when polled.
    drive: Pin<Box<http1::Connection<Io, Body>>>,
    /// Came from the idle list (served a request before).
    reused: bool,
    /// The driver finished (the connection closed): never poll it again.
    closed: bool,
    /// When it went idle; the reaper closes it `pool_idle_timeout` later.
    idle_since: Instant,
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
    Io(std::io::Error),
    Timeout,
}

/// Why a request on a connection got no response head.
#[derive(Debug)]
pub enum SendError {
    /// The connection was found closed before the request was written: the
    /// request comes back untouched and may go on another connection.
    Unsent(Box<Request<Body>>, hyper::Error),
    /// The exchange broke after the request was (maybe partly) written.
    Failed(hyper::Error),
}

/// Opens a connection to `addr` within `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Conn, ConnectError> {
    let (send, drive) = open(addr, timeout).await?;
    Ok(Conn {
        send,
        drive: Box::pin(drive),
        reused: false,
        closed: false,
        idle_since: Instant::now(),
    })
}

async fn open(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(http1::SendRequest<Body>, http1::Connection<Io, Body>), ConnectError> {
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout),
        Ok(Err(e)) => return Err(ConnectError::Io(e)),
        Ok(Ok(tcp)) => tcp,
    };
    let _ = tcp.set_nodelay(true);
    http1::Builder::new()
        .handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| ConnectError::Io(std::io::Error::other(e)))
}

/// Sends an Upgrade request on a fresh connection whose driver runs as a task
/// of its own, so that after a `101` the upgraded stream can outlive the
/// request (`hyper::upgrade::on` on the response yields it).
pub async fn send_upgrade(
    addr: SocketAddr,
    timeout: Duration,
    req: Request<Body>,
) -> Result<Response<Incoming>, UpgradeError> {
    let (mut send, drive) = open(addr, timeout).await.map_err(UpgradeError::Connect)?;
    tokio::spawn(drive.with_upgrades());
    send.send_request(req).await.map_err(UpgradeError::Failed)
}

/// Why an Upgrade request got no response head.
#[derive(Debug)]
pub enum UpgradeError {
    Connect(ConnectError),
    Failed(hyper::Error),
}

impl Conn {
    /// Whether it served a request before.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Sends `req` and waits for the response head, driving the connection
    /// meanwhile. On success the connection must keep being driven while the
    /// body is read: hand it to [`Streaming`].
    pub async fn send(&mut self, req: Request<Body>) -> Result<Response<Incoming>, SendError> {
        let mut response = std::pin::pin!(self.send.try_send_request(req));
        let drive = &mut self.drive;
        let closed = &mut self.closed;
        let result = std::future::poll_fn(|cx| {
            // The connection first: it writes the request, reads the answer,
            // and hands the head to `response`, all in this poll.
            if !*closed && drive.as_mut().poll(cx).is_ready() {
                *closed = true;
            }
            response.as_mut().poll(cx)
        })
        .await;
        result.map_err(|mut e| match e.take_message() {
            Some(req) => SendError::Unsent(Box::new(req), e.into_error()),
            None => SendError::Failed(e.into_error()),
        })
    }

    /// Polls the connection once: true when it is open and ready for a
    /// request. `cx` is registered for its events.
    fn ready(&mut self, cx: &mut Context<'_>) -> bool {
        if self.closed || self.drive.as_mut().poll(cx).is_ready() {
            return false; // closed by the server, or broken
        }
        matches!(self.send.poll_ready(cx), Poll::Ready(Ok(())))
    }
}

// === impl Idle ===

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
        conn.idle_since = Instant::now();
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
        std::future::poll_fn(|cx| Poll::Ready(self.take_ready(cx, max_age))).await
    }

    fn take_ready(&self, cx: &mut Context<'_>, max_age: Duration) -> Option<Conn> {
        loop {
            let mut conn = self.list().pop()?;
            if conn.idle_since.elapsed() < max_age && conn.ready(cx) {
                return Some(conn);
            }
        }
    }

    /// Closes the connections older than `max_age` or closed by the server.
    pub fn reap(&self, max_age: Duration) {
        let mut cx = Context::from_waker(Waker::noop());
        let mut stale = Vec::new();
        {
            let mut list = self.list();
            for mut c in std::mem::take(&mut *list) {
                if c.idle_since.elapsed() < max_age && c.ready(&mut cx) {
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

// === impl Streaming ===

/// A response body from a pooled connection. Reading it drives the
/// connection; when it ends cleanly the connection returns to its server's
/// idle list and the request's slot (`Active`) is released.
pub struct Streaming {
    body: Incoming,
    /// `None` once the connection closed or went back to the pool.
    conn: Option<Conn>,
    /// The request's slot on the server; also names the server.
    active: Option<Active>,
    /// Idle connections the server may keep (`pool_max_idle`).
    max_idle: usize,
}

impl Streaming {
    pub fn new(body: Incoming, conn: Conn, active: Active, max_idle: usize) -> Streaming {
        let mut s = Streaming {
            body,
            conn: Some(conn),
            active: Some(active),
            max_idle,
        };
        // An empty body may never be polled; it has ended already.
        if s.body.is_end_stream() {
            s.finish(true);
        }
        s
    }

    fn finish(&mut self, clean: bool) {
        if let (true, Some(conn), Some(active)) = (clean, self.conn.take(), &self.active) {
            active.server().idle.put(conn, self.max_idle);
        }
        self.conn = None;
        self.active = None;
    }
}

impl HttpBody for Streaming {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(c) = this.conn.as_mut()
            && (c.closed || c.drive.as_mut().poll(cx).is_ready())
        {
            // Closed after this response (or broken): not reusable. What it
            // read is still in the body channel.
            this.conn = None;
        }
        let r = Pin::new(&mut this.body).poll_frame(cx);
        match &r {
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
