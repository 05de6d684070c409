//! Reading a response body off a pooled connection, by its framing (RFC 9112
//! §6.3, §7.1): a known length, chunked, or until the backend closes. The
//! body is read by the task that streams it to the client; no other task
//! and no channel sits between the socket and the client. When the body ends
//! cleanly on a keep-alive connection, the connection goes back to its
//! server's idle list and the request's slot is released.
//!
//! A backend is not trusted: a malformed chunk, an oversized chunk line or
//! trailer section, or a close before the declared length is an error that
//! ends the client's response, never a panic.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::Conn;
use super::wire::{MAX_HEAD, RespFraming};
use crate::backend::Active;
use crate::body::BoxError;
use crate::http1::chunk_size;

/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Bytes read from the socket at a time.
const READ_SIZE: usize = 16 * 1024;

/// A response body from a pooled connection.
pub struct Streaming {
    /// `None` once the connection closed or went back to the pool.
    conn: Option<Conn>,
    state: State,
    /// The connection may serve another request once this body ends.
    keep_alive: bool,
    /// The request's slot on the server; also names the server.
    active: Option<Active>,
    /// Idle connections the server may keep (`pool_max_idle`).
    max_idle: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Close,
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Inside a chunk with this many bytes left.
    ChunkData(u64),
    /// Expecting the CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailer lines (discarded) until an empty line.
    Trailers(usize),
    Done,
}

impl Streaming {
    pub fn new(
        conn: Conn,
        framing: RespFraming,
        keep_alive: bool,
        active: Active,
        max_idle: usize,
    ) -> Streaming {
        let state = match framing {
            RespFraming::Empty => State::Done,
            RespFraming::Length(n) => State::Length(n),
            RespFraming::Chunked => State::ChunkSize,
            RespFraming::Close => State::Close,
        };
        let mut s = Streaming {
            conn: Some(conn),
            state,
            keep_alive,
            active: Some(active),
            max_idle,
        };
        // An empty body may never be polled; it has ended already.
        if s.state == State::Done {
            s.finish(true);
        }
        s
    }

    /// The body ended (`clean`) or broke: the connection goes back to the
    /// pool only after a clean end, on a keep-alive connection, with nothing
    /// unexpected left in its buffer.
    fn finish(&mut self, clean: bool) {
        self.state = State::Done;
        if let (Some(conn), Some(active)) = (self.conn.take(), &self.active)
            && clean
            && self.keep_alive
            && conn.rbuf.is_empty()
        {
            active.server().idle.put(conn, self.max_idle);
        }
        self.active = None;
    }

    fn fail(&mut self, why: &'static str) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.finish(false);
        Poll::Ready(Some(Err(why.into())))
    }

    /// Reads more from the socket into the buffer; `Ok(false)` at EOF.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, BoxError>> {
        let Some(conn) = self.conn.as_deref_mut() else {
            return Poll::Ready(Ok(false));
        };
        if conn.rbuf.capacity() - conn.rbuf.len() < 1024 {
            conn.rbuf.reserve(READ_SIZE);
        }
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut conn.io),
            cx,
            &mut conn.rbuf
        ))?;
        Poll::Ready(Ok(n > 0))
    }

    fn take(&mut self, max: u64) -> Bytes {
        let Some(conn) = self.conn.as_mut() else {
            return Bytes::new();
        };
        let n = usize::try_from(max)
            .unwrap_or(usize::MAX)
            .min(conn.rbuf.len());
        conn.rbuf.split_to(n).freeze()
    }

    fn buffered(&self) -> usize {
        self.conn.as_ref().map_or(0, |c| c.rbuf.len())
    }

    /// Consumes one line (through `\n`) from the buffer, if a whole one is
    /// there; returns its length without the line end.
    fn line(&mut self) -> Option<Bytes> {
        let conn = self.conn.as_mut()?;
        let end = conn.rbuf.iter().position(|&b| b == b'\n')?;
        let mut line = conn.rbuf.split_to(end + 1).freeze();
        line.truncate(end);
        if line.last() == Some(&b'\r') {
            line.truncate(end - 1);
        }
        Some(line)
    }
}

impl HttpBody for Streaming {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match this.state {
                State::Done => return Poll::Ready(None),
                State::Length(0) => {
                    this.finish(true);
                    return Poll::Ready(None);
                }
                State::Length(left) | State::ChunkData(left) if this.buffered() > 0 => {
                    let data = this.take(left);
                    let left = left - data.len() as u64;
                    this.state = match this.state {
                        State::Length(_) if left == 0 => {
                            this.finish(true);
                            State::Done
                        }
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::ChunkEnd,
                        _ => State::ChunkData(left),
                    };
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Close if this.buffered() > 0 => {
                    let data = this.take(u64::MAX);
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::ChunkSize => match this.line() {
                    Some(line) => {
                        this.state = match chunk_size(&line) {
                            Some(0) => State::Trailers(0),
                            Some(n) => State::ChunkData(n),
                            None => return this.fail("malformed chunk size from the backend"),
                        };
                        continue;
                    }
                    None if this.buffered() > MAX_CHUNK_LINE => {
                        return this.fail("chunk size line too long from the backend");
                    }
                    None => {}
                },
                State::ChunkEnd => match this.line() {
                    Some(line) if line.is_empty() => {
                        this.state = State::ChunkSize;
                        continue;
                    }
                    Some(_) => return this.fail("chunk data longer than its size"),
                    None if this.buffered() >= 2 => {
                        return this.fail("chunk data longer than its size");
                    }
                    None => {}
                },
                State::Trailers(seen) => match this.line() {
                    Some(line) if line.is_empty() => {
                        this.finish(true);
                        return Poll::Ready(None);
                    }
                    Some(line) if seen + line.len() > MAX_HEAD => {
                        return this.fail("trailers too large from the backend");
                    }
                    Some(line) => {
                        this.state = State::Trailers(seen + line.len() + 2);
                        continue;
                    }
                    None if seen + this.buffered() > MAX_HEAD => {
                        return this.fail("trailers too large from the backend");
                    }
                    None => {}
                },
                _ => {}
            }
            // Nothing usable buffered: read more.
            if this.state == State::Done {
                return Poll::Ready(None);
            }
            match ready!(this.fill(cx)) {
                Ok(true) => {}
                Ok(false) if this.state == State::Close => {
                    this.finish(false); // the close ended it: not reusable
                    return Poll::Ready(None);
                }
                Ok(false) => return this.fail("backend closed the connection mid-body"),
                Err(e) => {
                    this.finish(false);
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        // Abandoned mid-body (the client went away): the connection closes.
        self.finish(false);
    }
}
