//! Deterministic byte pattern, checksum, and streaming bodies.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// Chunk size used by [`PatternBody`] (and so by the backend's `/big`).
pub const CHUNK: usize = 64 * 1024;

/// Byte `i` of the deterministic pattern: `(i % 251) as u8`.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// `len` pattern bytes starting at offset `start`.
pub fn pattern_bytes(start: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pattern_byte(start + i)).collect()
}

/// FNV-1a (64 bit) over `bytes`; what the backend's `/upload` answers.
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut c = Checksum::new();
    c.update(bytes);
    c.finish()
}

/// Checksum of the first `len` pattern bytes, computed without allocating them.
pub fn pattern_checksum(len: u64) -> u64 {
    let mut c = Checksum::new();
    for i in 0..len {
        c.update_byte(pattern_byte(i));
    }
    c.finish()
}

/// Incremental FNV-1a 64: `update` over consecutive pieces equals
/// [`checksum`] over their concatenation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checksum {
    state: u64,
    len: u64,
}

impl Default for Checksum {
    fn default() -> Self {
        Self::new()
    }
}

impl Checksum {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub fn new() -> Self {
        Checksum {
            state: Self::OFFSET,
            len: 0,
        }
    }

    pub fn update_byte(&mut self, b: u8) {
        self.state ^= u64::from(b);
        self.state = self.state.wrapping_mul(Self::PRIME);
        self.len += 1;
    }

    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.update_byte(b);
        }
    }

    /// Number of bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(&self) -> u64 {
        self.state
    }
}

/// A body of `total` pattern bytes generated lazily in [`CHUNK`]-sized frames
/// (never allocates `total` at once). Usable as a request body for uploads.
#[derive(Debug, Clone)]
pub struct PatternBody {
    pos: u64,
    total: u64,
    sized: bool,
}

impl PatternBody {
    /// Exact size hint, so hyper sends `Content-Length: total`.
    pub fn new(total: u64) -> Self {
        PatternBody {
            pos: 0,
            total,
            sized: true,
        }
    }

    /// No size hint, so hyper sends `Transfer-Encoding: chunked`.
    pub fn chunked(total: u64) -> Self {
        PatternBody {
            sized: false,
            ..Self::new(total)
        }
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.pos >= self.total {
            return Poll::Ready(None);
        }
        let n = (self.total - self.pos).min(CHUNK as u64) as usize;
        let chunk = pattern_bytes(self.pos, n);
        self.pos += n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.total
    }

    fn size_hint(&self) -> SizeHint {
        if self.sized {
            SizeHint::with_exact(self.total - self.pos)
        } else {
            SizeHint::default()
        }
    }
}

/// A body fed chunk by chunk through an mpsc channel; ends when every
/// sender is dropped. Sent as chunked transfer encoding (no length known).
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    pub fn new(capacity: usize) -> (mpsc::Sender<Bytes>, Self) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, ChannelBody { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// Body type served by the mock backend.
pub type RespBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

pub fn full(b: impl Into<Bytes>) -> RespBody {
    http_body_util::Full::new(b.into()).boxed()
}

pub fn empty() -> RespBody {
    http_body_util::Empty::new().boxed()
}

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<RespBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    resp
}

pub fn empty_response(status: StatusCode) -> Response<RespBody> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = status;
    resp
}
