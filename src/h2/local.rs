//! A connection's streams run inside the connection's own task.
//!
//! hyper hands each new stream's future to an executor. With tokio's, every
//! stream is a task of its own: spawned (allocated, its future moved in),
//! woken on whichever worker, and each stream that finishes a response
//! wakes the connection's task, which then runs at once (tokio's LIFO
//! slot) and writes that one response. Under multiplexed load that is
//! about one `writev` per two or three responses, and as many TCP segments
//! and wake-ups on the client's side.
//!
//! [`Local`] keeps the streams' futures in a list that the connection's
//! task polls itself ([`Streams`]), before it polls the connection: every
//! stream that can answer does, and the connection then writes their
//! frames together, as HAProxy's and nginx's HTTP/2 do. A connection is
//! served on one thread at a time, as an HTTP/1.1 one is.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::task::AtomicWaker;

type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// hyper's executor for one connection: new streams wait in `new` until
/// the connection's task picks them up.
#[derive(Clone, Default)]
pub(super) struct Local(Arc<Queue>);

#[derive(Default)]
struct Queue {
    new: Mutex<Vec<StreamFuture>>,
    /// The connection's task, woken when a stream arrives.
    task: AtomicWaker,
}

impl<F> hyper::rt::Executor<F> for Local
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        let mut new = self.0.new.lock().unwrap_or_else(PoisonError::into_inner);
        new.push(Box::pin(stream));
        drop(new);
        self.0.task.wake();
    }
}

/// The streams of a connection, polled by its task.
pub(super) struct Streams {
    queue: Arc<Queue>,
    running: FuturesUnordered<StreamFuture>,
}

impl Streams {
    pub(super) fn new(exec: &Local) -> Streams {
        Streams {
            queue: exec.0.clone(),
            running: FuturesUnordered::new(),
        }
    }

    /// Takes in the streams hyper started and polls the ones that were
    /// woken until none can go on. Never ready: it runs for as long as the
    /// connection.
    pub(super) fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.queue.task.register(cx.waker());
        loop {
            {
                let mut new = self
                    .queue
                    .new
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                self.running.extend(new.drain(..));
            }
            match self.running.poll_next_unpin(cx) {
                Poll::Ready(Some(())) => continue,
                // Empty, or every stream waits: anything new since?
                Poll::Ready(None) | Poll::Pending => {
                    let more = !self
                        .queue
                        .new
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .is_empty();
                    if !more {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}
