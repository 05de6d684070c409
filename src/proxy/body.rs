//! Body plumbing: the boxed body type both directions use, and one wrapper
//! that acts exactly once when its body ends — at the end of the stream, on
//! an error, or when dropped unfinished — so no path can forget to signal.
//! What it does is an [`OnEnd`]: today an access-log entry, which writes its
//! line with the byte count. (Backend slots and pooled connections are
//! released by the upstream body itself, `backend::conn::Streaming`.)
//!
//! [`IdleTimeout`] cuts a body whose sender goes quiet (the client's request
//! body, a backend's response body).

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::backend::conn::OutBody;

pub use crate::body::{Body, BoxError};

/// What to do when a body ends, told how many data bytes went through.
pub trait OnEnd: Unpin + Send + Sync + 'static {
    fn ended(self, bytes: u64);
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

// === impl IdleTimeout ===

/// Why a body was cut: nothing came for `idle` while it was waited for.
#[derive(Debug, thiserror::Error)]
#[error("{what} sent nothing for {idle:?}")]
pub struct BodyTimeout {
    /// "the client" or "the backend".
    pub what: &'static str,
    pub idle: Duration,
}

/// `inner`, cut with a [`BodyTimeout`] error when it has been asked for a
/// frame and has produced none for `idle` (nginx `client_body_timeout` and
/// `proxy_read_timeout`: a timeout between two reads, not for the whole
/// body). The clock runs only while the reader waits: a reader that stops
/// asking (its own peer is slow) does not make the body idle. `idle` of zero
/// turns it off.
///
/// Cheap when nothing waits: the timer is allocated at the first wait, and
/// moving the deadline is a field write (the timer is re-armed only when it
/// fires early), not a timer-wheel update per frame.
pub struct IdleTimeout<B> {
    inner: B,
    idle: Duration,
    what: &'static str,
    /// When the current wait times out; `None` while no poll is waiting.
    deadline: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    timed_out: bool,
}

impl<B> IdleTimeout<B> {
    /// `what` names the sender in the error ("the client", "the backend").
    pub fn new(inner: B, idle: Duration, what: &'static str) -> Self {
        IdleTimeout {
            inner,
            idle,
            what,
            deadline: None,
            timer: None,
            timed_out: false,
        }
    }

    /// Ready when the current wait has lasted `idle`.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = *self
            .deadline
            .get_or_insert_with(|| Instant::now() + self.idle);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            ready!(timer.as_mut().poll(cx));
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            // Set for an earlier wait; this one ends later.
            timer.as_mut().reset(deadline);
        }
    }
}

impl<B> HttpBody for IdleTimeout<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.timed_out {
            return Poll::Ready(None);
        }
        if let Poll::Ready(r) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.deadline = None;
            return Poll::Ready(r.map(|f| f.map_err(Into::into)));
        }
        if this.idle.is_zero() || this.poll_idle(cx).is_pending() {
            return Poll::Pending;
        }
        this.timed_out = true;
        let e = BodyTimeout {
            what: this.what,
            idle: this.idle,
        };
        Poll::Ready(Some(Err(e.into())))
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
    /// stays bounded by `max`. A client that sends nothing for `idle` while
    /// the body is read (here, or later by the backend through the stream)
    /// is cut off (`client_body_timeout`).
    pub async fn read(
        body: Body,
        max: usize,
        length: Option<u64>,
        idle: Duration,
    ) -> Result<ReqBody, super::ProxyError> {
        if body.is_end_stream() {
            return Ok(ReqBody::Replayable(Bytes::new(), length.is_some()));
        }
        let mut body = IdleTimeout::new(body, idle, "the client");
        let streamed = |head: Vec<Frame<Bytes>>, rest: IdleTimeout<Body>| {
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
                Some(Err(e)) => return Err(super::ProxyError::from_client_body(e)),
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
    rest: IdleTimeout<Body>,
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
        Pin::new(&mut this.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.rest.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    /// A body fed through a channel, one data frame per message.
    struct Chan(mpsc::Receiver<Bytes>);

    impl HttpBody for Chan {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.get_mut()
                .0
                .poll_recv(cx)
                .map(|m| m.map(|b| Ok(Frame::data(b))))
        }
    }

    const IDLE: Duration = Duration::from_secs(10);

    fn idle_body(idle: Duration) -> (mpsc::Sender<Bytes>, IdleTimeout<Chan>) {
        let (tx, rx) = mpsc::channel(4);
        (tx, IdleTimeout::new(Chan(rx), idle, "the test"))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_sends_nothing_is_cut_after_idle() {
        let (_tx, mut body) = idle_body(IDLE);
        let started = Instant::now();
        let err = body.frame().await.expect("a frame").expect_err("cut");
        assert_eq!(started.elapsed(), IDLE);
        let timeout = err.downcast_ref::<BodyTimeout>().expect("a BodyTimeout");
        assert_eq!((timeout.what, timeout.idle), ("the test", IDLE));
        assert!(body.frame().await.is_none(), "nothing after the cut");
    }

    #[tokio::test(start_paused = true)]
    async fn each_frame_restarts_the_clock() {
        let (tx, mut body) = idle_body(IDLE);
        tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(IDLE * 3 / 4).await;
                tx.send(Bytes::from_static(b"x")).await.unwrap();
            }
        });
        let started = Instant::now();
        let mut frames = 0;
        while let Some(f) = body.frame().await {
            f.expect("no cut: every gap is shorter than idle");
            frames += 1;
        }
        assert_eq!(frames, 5);
        assert!(started.elapsed() > IDLE * 3, "the whole body took longer");
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_runs_only_while_the_reader_waits() {
        let (tx, mut body) = idle_body(IDLE);
        tx.send(Bytes::from_static(b"a")).await.unwrap();
        body.frame().await.unwrap().unwrap();
        // The reader is busy elsewhere (its own peer is slow) for a while:
        // the body is not idle for that.
        tokio::time::sleep(IDLE * 3).await;
        tokio::spawn(async move {
            tokio::time::sleep(IDLE / 2).await;
            tx.send(Bytes::from_static(b"b")).await.unwrap();
        });
        let f = body.frame().await.unwrap().expect("not cut");
        assert_eq!(f.into_data().unwrap(), "b");
    }

    #[tokio::test(start_paused = true)]
    async fn zero_turns_it_off() {
        let (_tx, mut body) = idle_body(Duration::ZERO);
        let waited = tokio::time::timeout(IDLE * 100, body.frame()).await;
        assert!(waited.is_err(), "a zero timeout cut the body");
    }
}
