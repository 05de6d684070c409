//! A future polled only when it asked to be: [`WokenOnly`] wraps a future
//! that is rarely ready (a tunnel's stop signal, a connection's drain)
//! inside one that is polled on every byte or request, so that each does
//! not pay for polling the signal again (for a cancellation token that is a
//! lock and a waiter-list check, about a tenth of a plain WebSocket
//! message's cost).
//! The inner future gets its own waker, which records the wake-up and
//! passes it on to the task.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

pin_project_lite::pin_project! {
    /// `inner`, polled on the first poll and after each of its own
    /// wake-ups only.
    pub struct WokenOnly<F> {
        #[pin]
        inner: F,
        flag: Arc<Flag>,
        waker: Waker,
    }
}

/// The inner future's wake-up, and the task to pass it on to.
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F> WokenOnly<F> {
    pub fn new(inner: F) -> Self {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(flag.clone());
        WokenOnly { inner, flag, waker }
    }
}

impl<F: Future> Future for WokenOnly<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        this.flag.task.register(cx.waker());
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.inner.poll(&mut Context::from_waker(this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio_util::sync::CancellationToken;

    /// Counts its polls; ready when the token is cancelled.
    struct Counted<'a> {
        polls: &'a AtomicUsize,
        inner: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    }

    impl Future for Counted<'_> {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            self.inner.as_mut().poll(cx)
        }
    }

    #[tokio::test]
    async fn polled_once_until_woken_then_ready() {
        let polls = AtomicUsize::new(0);
        let token = CancellationToken::new();
        let fut = WokenOnly::new(Counted {
            polls: &polls,
            inner: Box::pin(token.clone().cancelled_owned()),
        });
        tokio::pin!(fut);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..100 {
            assert!(fut.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1, "polled without a wake-up");
        // The cancellation wakes it: the task's waker is called and the next
        // poll sees it ready.
        let woke = tokio::spawn({
            let token = token.clone();
            async move { token.cancel() }
        });
        woke.await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), fut)
            .await
            .expect("ready once cancelled");
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }
}
