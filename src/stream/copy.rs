//! The byte copy of one TCP-mode connection, both ways, until it ends; and
//! how it ended, for the access log.
//!
//! The same shape as the WebSocket tunnel (`proxy/tunnel.rs`): one future
//! drives both directions; an idle connection holds no buffer (bytes are read
//! into a per-thread scratch buffer and written on at once; only what the
//! writer does not take is kept, and that direction reads no more until it
//! is written). It differs where L4 mode must:
//!
//! - **Half-close is kept open.** When one side ends its stream, the other
//!   side's write half is shut down and the other direction goes on for as
//!   long as it carries bytes (`redis-cli < script` shuts its write half and
//!   then reads every answer). Only the idle timeout ends it, as nginx
//!   `proxy_timeout` does; the tunnel's 5 s FIN timeout would cut a slow
//!   answer.
//! - **It says how it ended** ([`End`]) and counts bytes into the metrics as
//!   they move, so a connection that lives for hours shows its traffic.
//!
//! A separate loop rather than a change to the tunnel's, which the WebSocket
//! close-frame work is changing at the same time.

use std::cell::Cell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Per-thread scratch buffer. Larger than the tunnel's (one TLS record):
/// plain TCP bulk transfers then make a quarter of the read and write
/// calls, and it costs nothing per connection (one buffer per thread).
const SCRATCH: usize = 64 * 1024;
/// Reads one direction does in one poll before it lets other tasks run.
const READS_PER_POLL: usize = 16;

thread_local! {
    static SCRATCH_BUF: Cell<Option<Box<[u8]>>> = const { Cell::new(None) };
}

/// Runs `f` on this thread's scratch buffer (taken only inside one poll,
/// never across an `.await`).
fn with_scratch<T>(f: impl FnOnce(&mut [u8]) -> T) -> T {
    let mut buf = SCRATCH_BUF
        .try_with(Cell::take)
        .ok()
        .flatten()
        .unwrap_or_else(|| vec![0; SCRATCH].into_boxed_slice());
    let out = f(&mut buf);
    let _ = SCRATCH_BUF.try_with(|s| s.set(Some(buf)));
    out
}

/// Which end of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides ended their streams (each half-close passed on).
    Closed,
    /// A read or write on that side failed (a reset, mostly).
    Error(Side, io::ErrorKind),
    /// No byte either way for the idle timeout.
    Idle,
    /// latch is stopping and the grace period is over.
    Stopped,
    /// Its server was removed by a reload and the grace period is over.
    ServerRemoved,
}

impl End {
    /// The access log's `end` field.
    pub fn as_str(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Error(Side::Client, io::ErrorKind::ConnectionReset) => "client reset",
            End::Error(Side::Client, _) => "client error",
            End::Error(Side::Server, io::ErrorKind::ConnectionReset) => "server reset",
            End::Error(Side::Server, _) => "server error",
            End::Idle => "idle timeout",
            End::Stopped => "stopped",
            End::ServerRemoved => "server removed",
        }
    }
}

/// Bytes moved each way.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub to_server: u64,
    pub to_client: u64,
}

/// Copies both ways until the connection ends, or until `stop` resolves with
/// the reason it gives. Bytes are added to `counters` (to the server, to the
/// client) as they move.
pub async fn run<C, S>(
    client: C,
    server: S,
    idle: Duration,
    counters: (Counter, Counter),
    stop: impl Future<Output = End>,
) -> (Moved, End)
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut c = Copy {
        client,
        server,
        up: Half::new(Side::Client, counters.0),
        down: Half::new(Side::Server, counters.1),
        last: Instant::now(),
        idle,
    };
    let mut timer = std::pin::pin!(tokio::time::sleep_until(c.last + c.idle));
    let mut stop = std::pin::pin!(stop);
    let end = poll_fn(|cx| {
        if let Poll::Ready(end) = stop.as_mut().poll(cx) {
            return Poll::Ready(end);
        }
        c.poll_run(cx, timer.as_mut())
    })
    .await;
    let moved = Moved {
        to_server: c.up.moved,
        to_client: c.down.moved,
    };
    (moved, end)
}

/// Both sides: `up` reads the client and writes the server, `down` the
/// other way round.
struct Copy<C, S> {
    client: C,
    server: S,
    up: Half,
    down: Half,
    /// When the last byte was read, either way.
    last: Instant,
    idle: Duration,
}

impl<C, S> Copy<C, S>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Ready with how it ended. `timer` is re-armed only when it fires, so
    /// traffic costs no timer updates.
    fn poll_run(&mut self, cx: &mut Context<'_>, mut timer: Pin<&mut Sleep>) -> Poll<End> {
        let Self {
            client,
            server,
            up,
            down,
            last,
            ..
        } = self;
        if !up.done
            && let Poll::Ready(Err((side, e))) = up.poll_copy(cx, client, server, last)
        {
            return Poll::Ready(End::Error(side, e.kind()));
        }
        if !down.done
            && let Poll::Ready(Err((side, e))) = down.poll_copy(cx, server, client, last)
        {
            return Poll::Ready(End::Error(side, e.kind()));
        }
        if up.done && down.done {
            return Poll::Ready(End::Closed);
        }
        while timer.as_mut().poll(cx).is_ready() {
            let idle_at = self.last + self.idle;
            if Instant::now() >= idle_at {
                return Poll::Ready(End::Idle);
            }
            timer.as_mut().reset(idle_at);
        }
        Poll::Pending
    }
}

/// One direction.
#[derive(Debug)]
struct Half {
    /// The side this half reads (it writes the other).
    reads: Side,
    /// Bytes read but not yet taken by the writer, from `written` on.
    unwritten: Vec<u8>,
    written: usize,
    /// The writer took bytes since its last flush (TLS holds them until then).
    flush: bool,
    /// The reader has ended: flush, shut the writer down, then done.
    eof: bool,
    done: bool,
    moved: u64,
    counter: Counter,
}

type HalfResult = Result<(), (Side, io::Error)>;

impl Half {
    fn new(reads: Side, counter: Counter) -> Half {
        Half {
            reads,
            unwritten: Vec::new(),
            written: 0,
            flush: false,
            eof: false,
            done: false,
            moved: 0,
            counter,
        }
    }

    fn writes(&self) -> Side {
        match self.reads {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }

    /// Copies `r` to `w` until `r` has nothing for now or `w` pushes back
    /// (pending), or `r` ended and `w` is shut down (ready, done).
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        last: &mut Instant,
    ) -> Poll<HalfResult>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let wside = self.writes();
        for _ in 0..READS_PER_POLL {
            ready!(self.poll_drain(cx, w)).map_err(|e| (wside, e))?;
            if self.eof {
                // A peer that already closed its read side fails this with
                // NotConnected; the write side is gone either way.
                match ready!(Pin::new(&mut *w).poll_shutdown(cx)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                    Err(e) => return Poll::Ready(Err((wside, e))),
                }
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_read_write(cx, r, w, last))?;
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Writes out the held remainder, if any, then flushes.
    fn poll_drain<W>(&mut self, cx: &mut Context<'_>, w: &mut W) -> Poll<io::Result<()>>
    where
        W: AsyncWrite + Unpin,
    {
        while self.written < self.unwritten.len() {
            let n = ready!(Pin::new(&mut *w).poll_write(cx, &self.unwritten[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
            self.count(n);
        }
        if !self.unwritten.is_empty() {
            self.unwritten = Vec::new();
            self.written = 0;
        }
        if self.flush {
            ready!(Pin::new(&mut *w).poll_flush(cx))?;
            self.flush = false;
        }
        Poll::Ready(Ok(()))
    }

    fn count(&mut self, n: usize) {
        self.moved += n as u64;
        self.counter.inc_by(n as u64);
    }

    /// One read into the scratch buffer, written on at once; the remainder
    /// the writer does not take is kept (pending: the writer wakes us).
    fn poll_read_write<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        last: &mut Instant,
    ) -> Poll<HalfResult>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let (rside, wside) = (self.reads, self.writes());
        with_scratch(|buf| {
            let mut rb = ReadBuf::new(buf);
            ready!(Pin::new(&mut *r).poll_read(cx, &mut rb)).map_err(|e| (rside, e))?;
            let data = rb.filled();
            if data.is_empty() {
                self.eof = true;
                return Poll::Ready(Ok(()));
            }
            *last = Instant::now();
            let mut at = 0;
            while at < data.len() {
                match Pin::new(&mut *w).poll_write(cx, &data[at..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err((wside, io::ErrorKind::WriteZero.into())));
                    }
                    Poll::Ready(Ok(n)) => at += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err((wside, e))),
                    Poll::Pending => break,
                }
            }
            self.count(at);
            self.flush |= at > 0;
            if at < data.len() {
                self.unwritten = data[at..].to_vec();
                self.written = 0;
                return Poll::Pending;
            }
            Poll::Ready(Ok(()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    fn counters() -> (Counter, Counter) {
        (Counter::default(), Counter::default())
    }

    fn never() -> impl Future<Output = End> {
        std::future::pending()
    }

    #[tokio::test]
    async fn half_close_keeps_the_other_way_open_past_five_seconds() {
        tokio::time::pause();
        let (mut c, client) = duplex(64);
        let (mut s, server) = duplex(64);
        let (up, down) = counters();
        let t = tokio::spawn(run(
            client,
            server,
            Duration::from_secs(60),
            (up.clone(), down.clone()),
            never(),
        ));
        c.write_all(b"QUIT").await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"QUIT");
        // Longer than the tunnel's FIN timeout, shorter than idle.
        tokio::time::sleep(Duration::from_secs(30)).await;
        s.write_all(b"+OK").await.unwrap();
        let mut got = [0u8; 3];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"+OK");
        drop(s);
        let (moved, end) = t.await.unwrap();
        assert_eq!(end, End::Closed);
        assert_eq!((moved.to_server, moved.to_client), (4, 3));
        assert_eq!((up.get(), down.get()), (4, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_ends_it() {
        let (_c, client) = duplex(64);
        let (_s, server) = duplex(64);
        let started = Instant::now();
        let (_, end) = run(client, server, Duration::from_secs(7), counters(), never()).await;
        assert_eq!(end, End::Idle);
        assert!(started.elapsed() >= Duration::from_secs(7));
    }

    #[tokio::test]
    async fn stop_ends_it_with_its_reason() {
        let (_c, client) = duplex(64);
        let (_s, server) = duplex(64);
        let stop = async { End::ServerRemoved };
        let (_, end) = run(client, server, Duration::from_secs(60), counters(), stop).await;
        assert_eq!(end, End::ServerRemoved);
    }

    #[tokio::test]
    async fn large_transfer_arrives_whole() {
        const LEN: usize = 4 << 20;
        let (c, client) = duplex(997);
        let (s, server) = duplex(4093);
        let t = tokio::spawn(run(
            client,
            server,
            Duration::from_secs(60),
            counters(),
            never(),
        ));
        let data: Vec<u8> = (0..LEN).map(|i| (i * 31 % 251) as u8).collect();
        let sent = data.clone();
        let (mut cr, mut cw) = tokio::io::split(c);
        let writer = tokio::spawn(async move {
            cw.write_all(&sent).await.unwrap();
            cw.shutdown().await.unwrap();
        });
        let (mut sr, mut sw) = tokio::io::split(s);
        let mut got = Vec::new();
        sr.read_to_end(&mut got).await.unwrap();
        assert!(got == data, "bytes lost or reordered");
        writer.await.unwrap();
        sw.shutdown().await.unwrap();
        let mut rest = Vec::new();
        cr.read_to_end(&mut rest).await.unwrap();
        let (moved, end) = t.await.unwrap();
        assert_eq!((moved.to_server, end), (LEN as u64, End::Closed));
    }
}
