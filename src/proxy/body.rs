//! Body plumbing: the boxed body type both directions use, and a wrapper that
//! holds a value exactly until its body ends. Dropping that value is the
//! signal — an [`Active`](crate::backend::Active) guard frees a backend slot
//! when the response is done, a `oneshot::Sender` tells the forwarder that the
//! request body is fully sent — so no path can forget to signal.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// `inner`, holding `held` until the end of the stream (or an error, or drop).
pub struct HoldUntilEnd<T> {
    inner: Body,
    held: Option<T>,
}

impl<T> HoldUntilEnd<T> {
    pub fn new(inner: Body, held: T) -> Self {
        // An empty body may never be polled; release at once.
        let held = (!inner.is_end_stream()).then_some(held);
        HoldUntilEnd { inner, held }
    }
}

impl<T: Unpin> HttpBody for HoldUntilEnd<T> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.held = None,
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.held = None,
            _ => {}
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
