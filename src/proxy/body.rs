//! Body plumbing: the boxed body type both directions use, and one wrapper
//! that acts exactly once when its body ends — at the end of the stream, on
//! an error, or when dropped unfinished — so no path can forget to signal.
//! What it does is an [`OnEnd`]: an [`Active`] guard frees a backend slot when
//! the response is done, a `oneshot::Sender` tells the forwarder the request
//! body is fully sent, an access-log entry writes its line with the byte count.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::sync::oneshot;

use crate::backend::Active;
use crate::backend::conn::OutBody;

pub use crate::body::{Body, BoxError};

/// What to do when a body ends, told how many data bytes went through.
pub trait OnEnd: Unpin + Send + Sync + 'static {
    fn ended(self, bytes: u64);
}

/// Dropping the guard releases the backend slot.
impl OnEnd for Active {
    fn ended(self, _bytes: u64) {}
}

/// Dropping the sender wakes the receiver: "the body is sent".
impl OnEnd for oneshot::Sender<()> {
    fn ended(self, _bytes: u64) {}
}

/// `inner`, running `on_end` once when the stream ends (or errs, or is dropped).
pub struct HoldUntilEnd<T: OnEnd> {
    inner: Body,
    bytes: u64,
    on_end: Option<T>,
}

impl<T: OnEnd> HoldUntilEnd<T> {
    pub fn new(inner: Body, on_end: T) -> Self {
        let mut this = HoldUntilEnd {
            inner,
            bytes: 0,
            on_end: Some(on_end),
        };
        // An empty body may never be polled; it has ended already.
        if this.inner.is_end_stream() {
            this.finish();
        }
        this
    }

    fn finish(&mut self) {
        if let Some(t) = self.on_end.take() {
            t.ended(self.bytes);
        }
    }
}

impl<T: OnEnd> HttpBody for HoldUntilEnd<T> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                this.bytes += f.data_ref().map_or(0, |d| d.len() as u64);
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(_) => this.finish(),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<T: OnEnd> Drop for HoldUntilEnd<T> {
    fn drop(&mut self) {
        self.finish();
    }
}

// === impl ReqBody ===

/// A request body as the retry loop sees it (nginx buffers request bodies for
/// the same reason: a body already streamed to one backend cannot be sent to
/// the next).
pub enum ReqBody {
    /// Small enough to keep (≤ `retry.max_body`): every attempt gets a copy.
    /// `had_length`: the client declared a `Content-Length`.
    Replayable(Bytes, bool),
    /// Too big to keep: streamed to the first attempt only, never retried,
    /// with the length the client declared, if any.
    Streamed(Option<(Body, Option<u64>)>),
}

impl ReqBody {
    /// Reads up to `max` bytes of `body`, whose declared length is `length`.
    /// A body known to be larger, or found to be larger while reading, is
    /// passed on as a stream (what was read first, then the rest), so memory
    /// stays bounded by `max`.
    pub async fn read(
        mut body: Incoming,
        max: usize,
        length: Option<u64>,
    ) -> Result<ReqBody, super::ProxyError> {
        if body.is_end_stream() {
            return Ok(ReqBody::Replayable(Bytes::new(), length.is_some()));
        }
        let streamed = |head: Vec<Frame<Bytes>>, rest: Incoming| {
            let body = Prefixed {
                head: head.into(),
                rest,
            }
            .boxed();
            ReqBody::Streamed(Some((body, length)))
        };
        if body.size_hint().lower() > max as u64 {
            return Ok(streamed(Vec::new(), body));
        }
        let mut buf = bytes::BytesMut::new();
        loop {
            match body.frame().await {
                None => return Ok(ReqBody::Replayable(buf.freeze(), length.is_some())),
                Some(Err(e)) => return Err(super::ProxyError::ClientBody(e.to_string())),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        buf.extend_from_slice(&data);
                        if buf.len() > max {
                            return Ok(streamed(vec![Frame::data(buf.freeze())], body));
                        }
                    }
                    // Trailers: rare in requests; pass them on, don't replay.
                    Err(trailers) => {
                        return Ok(streamed(vec![Frame::data(buf.freeze()), trailers], body));
                    }
                },
            }
        }
    }

    pub fn replayable(&self) -> bool {
        matches!(self, ReqBody::Replayable(..))
    }

    /// The body for the next attempt; `None` once a streamed body was used.
    pub fn next_attempt(&mut self) -> Option<OutBody> {
        match self {
            ReqBody::Replayable(b, had_length) => Some(OutBody::Whole(b.clone(), *had_length)),
            ReqBody::Streamed(s) => s.take().map(|(body, length)| OutBody::Stream(body, length)),
        }
    }
}

/// Frames already read, then the rest of the client's body.
struct Prefixed {
    head: std::collections::VecDeque<Frame<Bytes>>,
    rest: Incoming,
}

impl HttpBody for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(f) = this.head.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        Pin::new(&mut this.rest)
            .poll_frame(cx)
            .map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.rest.is_end_stream()
    }
}
