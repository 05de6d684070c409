//! The byte tunnel behind an upgraded connection (WebSocket after its 101).
//!
//! One hand-written future drives both directions, so a slow reader on one side
//! never stalls the other direction. When one side ends its stream, the other
//! side's write half is shut down (the half-close travels through) and the
//! remaining direction gets [`FIN_TIMEOUT`] to finish, so a backend that goes
//! away closes the client promptly (HAProxy calls this `timeout client-fin`).
//! An error on either side, `idle` without a byte, or a hard stop ends both.
//!
//! WebSocket goodbyes: a WebSocket tunnel that latch ends itself (a stop or a
//! removed server once the grace is over, `tunnel_idle`, the backend lost, the
//! client gone) is not just cut. Each direction follows the frame headers it
//! carries ([`ws_frames`](super::ws_frames), 16 bytes, no payload kept), so
//! at the end latch finishes the frame in flight, puts a close frame after it
//! (1001, 1012 or 1011, see [`Goodbye`]) toward the client and a masked one
//! toward the backend, shuts both writers down and waits up to
//! [`CLOSE_TIMEOUT`] for each peer's close reply. A stop or a removal picks a
//! random moment within `spread` first, so thousands of clients do not come
//! back at the same instant. Other upgrades (not `websocket`) are cut as before.
//!
//! Memory: most tunnels are idle most of the time, so an idle tunnel holds no
//! buffer at all. A direction waits for its reader with nothing but a waker;
//! when bytes come, they are read into this thread's scratch buffer, written on
//! at once and flushed. Only what the writer does not take is copied into a
//! buffer of the direction's own, and while it holds one the direction reads no
//! more (backpressure); the buffer is freed once written. The scratch buffer is
//! taken only inside one synchronous `poll`, never across an `.await`, so sharing
//! it between the tunnels of one thread needs no `unsafe` and no lock.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::ws_frames::{Frames, close_frame};

/// Time the second direction gets after the first one finished.
pub const FIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a goodbye may take: the frame in flight, the close frames and the
/// peers' replies.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Size of the per-thread scratch buffer: one TLS record's worth of plaintext.
const SCRATCH: usize = 16 * 1024;
/// Reads one direction does in one poll before it lets other tasks run.
const READS_PER_POLL: usize = 16;

thread_local! {
    /// This thread's scratch buffer, allocated on first use; taken out while a
    /// read and its write run, put back after.
    static SCRATCH_BUF: Cell<Option<Box<[u8]>>> = const { Cell::new(None) };
}

/// Runs `f` on this thread's scratch buffer, or on a fresh one if it is out
/// (it never should be: `f` does not reach another tunnel) or already gone
/// (thread teardown).
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

/// Why latch ends a tunnel from outside: what the `stop` future of [`run`]
/// resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// latch stops and the grace is over, but for the `close_spread`
    /// window the tunnel's goodbye is spread over.
    Stop,
    /// latch stops with no spread window left (an explicit grace, or the
    /// spread already spent): the goodbye begins at once.
    StopNow,
    /// The server was removed by a reload (or drained) and the grace is over.
    Removed,
}

/// Why latch said goodbye on a WebSocket, and the close code it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goodbye {
    /// 1001 going away: latch stops.
    Stop,
    /// 1012 service restart: the server was removed by a reload.
    Removed,
    /// 1001 going away: no byte either way for `tunnel_idle`.
    Idle,
    /// 1011 internal error: the backend closed or broke without a close
    /// frame. (1014 "bad gateway" would say it better, but tungstenite 0.30
    /// takes it for a protocol violation and older browsers refuse it.)
    BackendLost,
    /// 1001 going away (to the backend): the client closed or broke without
    /// a close frame.
    ClientGone,
}

impl Goodbye {
    /// The close code (RFC 6455 §7.4.1; 1012 from the IANA registry).
    pub fn code(self) -> u16 {
        match self {
            Goodbye::Stop | Goodbye::Idle | Goodbye::ClientGone => 1001,
            Goodbye::Removed => 1012,
            Goodbye::BackendLost => 1011,
        }
    }

    /// The reason sent with the code, and the name in logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Goodbye::Stop => "latch stopping",
            Goodbye::Removed => "server removed",
            Goodbye::Idle => "idle timeout",
            Goodbye::BackendLost => "backend lost",
            Goodbye::ClientGone => "client gone",
        }
    }
}

impl From<Ending> for Goodbye {
    fn from(e: Ending) -> Goodbye {
        match e {
            Ending::Stop | Ending::StopNow => Goodbye::Stop,
            Ending::Removed => Goodbye::Removed,
        }
    }
}

/// How a tunnel runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Ends the tunnel after this long without a byte either way.
    pub idle: Duration,
    /// The upgrade is `websocket`: follow frames and say goodbye.
    pub websocket: bool,
    /// A stop or removal closes the tunnel at a random moment within this.
    pub spread: Duration,
}

/// Bytes moved each way, and how latch said goodbye, for logs and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub to_backend: u64,
    pub to_client: u64,
    /// Set when latch ended a WebSocket itself.
    pub goodbye: Option<Goodbye>,
    /// A close frame went to the client (it can fail to: the frame in flight
    /// was cut, or the client was gone).
    pub close_sent: bool,
}

/// Runs the tunnel until it ends; never fails (a broken side just ends it).
///
/// A named future rather than an `async fn` or block: those keep their
/// arguments next to what is built from them (pinning `stop` would copy it),
/// and a tunnel's state lives as long as the tunnel, so every byte counts.
pub fn run<C, B, S>(client: C, backend: B, opts: Options, stop: S) -> Run<C, B, S>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
    S: Future<Output = Ending>,
{
    let spread_ms = u32::try_from(opts.spread.as_millis()).unwrap_or(u32::MAX);
    let last = Instant::now();
    Run {
        t: Tunnel {
            client,
            backend,
            up: Half::new(opts.websocket),
            down: Half::new(opts.websocket),
            last,
            idle: opts.idle,
            deadline: None,
            spread_ms,
            websocket: opts.websocket,
            stopped: false,
            goodbye: None,
            closing: false,
        },
        timer: tokio::time::sleep_until(last + opts.idle),
        stop,
    }
}

pin_project_lite::pin_project! {
    /// The future [`run`] returns.
    pub struct Run<C, B, S> {
        t: Tunnel<C, B>,
        #[pin]
        timer: Sleep,
        #[pin]
        stop: S,
    }
}

impl<C, B, S> Future for Run<C, B, S>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
    S: Future<Output = Ending>,
{
    type Output = Moved;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Moved> {
        let this = self.project();
        let t = this.t;
        ready!(t.poll_run(cx, this.timer, this.stop));
        Poll::Ready(Moved {
            to_backend: t.up.moved,
            to_client: t.down.moved,
            // Other upgrades are cut: no goodbye to report.
            goodbye: t.goodbye.filter(|_| t.websocket),
            close_sent: t.down.close_sent,
        })
    }
}

/// Which direction failed, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broke {
    /// The reader failed.
    Read,
    /// The reader ended in the middle of a WebSocket (no close frame came).
    Eof,
    /// The writer failed.
    Write,
}

/// Both sides and both directions: `up` reads the client and writes the
/// backend, `down` the other way round.
struct Tunnel<C, B> {
    client: C,
    backend: B,
    up: Half,
    down: Half,
    /// When the last byte was read, either way (for the idle timeout).
    last: Instant,
    idle: Duration,
    /// The FIN timeout once a direction has finished; while a goodbye waits,
    /// when it begins; while it runs, when it is cut short.
    deadline: Option<Instant>,
    /// The goodbye spread, in milliseconds.
    spread_ms: u32,
    websocket: bool,
    /// The `stop` future has resolved (it is not polled again).
    stopped: bool,
    goodbye: Option<Goodbye>,
    /// The goodbye runs.
    closing: bool,
}

impl<C, B> Tunnel<C, B>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    /// Runs the tunnel: ready when it has ended (both directions done, an
    /// error, idle, the FIN timeout, a stop, or the goodbye done).
    ///
    /// `timer` is armed for the earliest moment the tunnel could time out; it
    /// is re-armed only when it fires, so traffic costs no timer updates.
    fn poll_run<S: Future<Output = Ending>>(
        &mut self,
        cx: &mut Context<'_>,
        mut timer: Pin<&mut Sleep>,
        stop: Pin<&mut S>,
    ) -> Poll<()> {
        if !self.stopped
            && let Poll::Ready(why) = stop.poll(cx)
        {
            self.stopped = true;
            if self.goodbye.is_none() {
                self.goodbye = Some(why.into());
                let delay = match (why, self.spread_ms) {
                    (Ending::StopNow, _) | (_, 0) => Duration::ZERO,
                    (_, n) => Duration::from_millis(rand::random_range(0..u64::from(n))),
                };
                if delay.is_zero() {
                    if !self.websocket {
                        return Poll::Ready(());
                    }
                    self.begin_closing(why.into(), timer.as_mut());
                    return self.poll_closing(cx, timer);
                }
                let at = Instant::now() + delay;
                self.deadline = Some(self.deadline.map_or(at, |d| d.min(at)));
                let first = at.min(timer.deadline());
                timer.as_mut().reset(first);
            }
        }
        if self.closing {
            return self.poll_closing(cx, timer);
        }
        while let Poll::Ready(r) = self.poll_step(cx) {
            match r {
                Err((up, broke)) if self.websocket => {
                    let Some(g) = self.broken(up, broke) else {
                        return Poll::Ready(());
                    };
                    self.begin_closing(g, timer.as_mut());
                    return self.poll_closing(cx, timer);
                }
                Err(_) => return Poll::Ready(()),
                Ok(()) if self.up.done && self.down.done => return Poll::Ready(()),
                Ok(()) => {}
            }
            if self.deadline.is_none() {
                let fin = Instant::now() + FIN_TIMEOUT;
                self.deadline = Some(fin);
                if fin < timer.deadline() {
                    timer.as_mut().reset(fin);
                }
            }
        }
        while timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let idle_at = self.last + self.idle;
            let due = self.deadline.is_some_and(|d| now >= d);
            if due || now >= idle_at {
                let g = match self.goodbye {
                    Some(g) if due => g,
                    _ if now >= idle_at => Goodbye::Idle,
                    _ => return Poll::Ready(()), // the FIN timeout
                };
                if !self.websocket {
                    return Poll::Ready(());
                }
                self.begin_closing(g, timer.as_mut());
                return self.poll_closing(cx, timer);
            }
            timer
                .as_mut()
                .reset(self.deadline.map_or(idle_at, |d| d.min(idle_at)));
        }
        Poll::Pending
    }

    /// Marks what broke; says which goodbye that calls for, if any: none
    /// when the side that broke had sent its close frame (it said goodbye).
    fn broken(&mut self, up: bool, broke: Broke) -> Option<Goodbye> {
        let half = if up { &mut self.up } else { &mut self.down };
        match broke {
            Broke::Read | Broke::Eof => half.eof = true,
            Broke::Write => half.wdead = true,
        }
        // `up` reads the client and writes the backend.
        if up == (broke == Broke::Write) {
            (!self.down.frames.close_seen()).then_some(Goodbye::BackendLost)
        } else {
            (!self.up.frames.close_seen()).then_some(Goodbye::ClientGone)
        }
    }

    fn begin_closing(&mut self, g: Goodbye, mut timer: Pin<&mut Sleep>) {
        self.goodbye = Some(g);
        self.closing = true;
        let end = Instant::now() + CLOSE_TIMEOUT;
        self.deadline = Some(end);
        timer.as_mut().reset(end);
    }

    /// The goodbye: ready when both directions are through it, or at its
    /// deadline.
    fn poll_closing(&mut self, cx: &mut Context<'_>, timer: Pin<&mut Sleep>) -> Poll<()> {
        let code = self.goodbye.map_or(1001, Goodbye::code);
        let reason = self.goodbye.map_or("", Goodbye::reason);
        let Self {
            client,
            backend,
            up,
            down,
            ..
        } = self;
        let to_backend = || close_frame(code, reason, Some(rand::random()));
        let to_client = || close_frame(code, reason, None);
        let up_done = up.poll_close(cx, client, backend, to_backend).is_ready();
        let down_done = down.poll_close(cx, backend, client, to_client).is_ready();
        if (up_done && down_done) || timer.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Moves what can be moved both ways; ready when a direction has finished
    /// (EOF passed on) or failed (`true` for `up`).
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), (bool, Broke)>> {
        let Self {
            client,
            backend,
            up,
            down,
            last,
            ..
        } = self;
        if !up.done
            && let Poll::Ready(r) = up.poll_copy(cx, client, backend, last)
        {
            return Poll::Ready(r.map_err(|b| (true, b)));
        }
        if !down.done
            && let Poll::Ready(r) = down.poll_copy(cx, backend, client, last)
        {
            return Poll::Ready(r.map_err(|b| (false, b)));
        }
        Poll::Pending
    }
}

/// Where a direction is in a goodbye.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Passing the reader's bytes on up to the end of the frame in flight.
    #[default]
    ToBoundary,
    /// Writing the close frame (if one can go) and shutting the writer down.
    Sending,
    /// Reading and dropping until the reader's own close frame or its end.
    Draining,
    Done,
}

/// One direction of the tunnel.
#[derive(Debug, Default)]
struct Half {
    /// Bytes read but not yet taken by the writer, from `written` on. Empty,
    /// with nothing allocated, unless the writer pushed back.
    unwritten: Vec<u8>,
    written: usize,
    /// The writer took bytes since its last flush (TLS holds them until then).
    flush: bool,
    /// The reader has ended (or, in a goodbye, failed).
    eof: bool,
    /// EOF passed on (the writer shut down): this half is done.
    done: bool,
    /// Bytes the writer has taken.
    moved: u64,
    /// Follow WebSocket frames.
    track: bool,
    frames: Frames,
    phase: Phase,
    /// The writer failed; nothing more goes to it.
    wdead: bool,
    /// A close frame of latch's was written (and flushed) to the writer.
    close_sent: bool,
}

impl Half {
    fn new(track: bool) -> Half {
        Half {
            track,
            ..Half::default()
        }
    }

    /// Copies `r` to `w` until `r` has nothing more for now or `w` pushes back
    /// (pending), or until `r` ended and `w` has been shut down (ready).
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        last: &mut Instant,
    ) -> Poll<Result<(), Broke>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        for _ in 0..READS_PER_POLL {
            ready!(self.poll_drain(cx, w)).map_err(|_| Broke::Write)?;
            if self.eof {
                if self.track && !self.frames.close_seen() {
                    return Poll::Ready(Err(Broke::Eof));
                }
                ready!(Pin::new(&mut *w).poll_shutdown(cx)).map_err(|_| Broke::Write)?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_read_write(cx, r, w, last))?;
        }
        // Busy: let the other direction and other tasks run, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Writes out the held remainder, if any, then flushes the writer.
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
            self.moved += n as u64;
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

    /// One read into the scratch buffer, written on at once; what the writer
    /// does not take is kept in `unwritten` (pending then: the writer will wake
    /// us). Ready once the bytes are all written or the reader ended.
    fn poll_read_write<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        last: &mut Instant,
    ) -> Poll<Result<(), Broke>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        with_scratch(|buf| {
            let mut rb = ReadBuf::new(buf);
            ready!(Pin::new(&mut *r).poll_read(cx, &mut rb)).map_err(|_| Broke::Read)?;
            let data = rb.filled();
            if data.is_empty() {
                self.eof = true;
                return Poll::Ready(Ok(()));
            }
            *last = Instant::now();
            if self.track {
                self.frames.advance(data, false);
            }
            self.write_or_hold(cx, w, data).map_err(|_| Broke::Write)
        })
    }

    /// Writes `data` on; what the writer does not take is kept in
    /// `unwritten` (pending then: the writer will wake us).
    fn write_or_hold<W>(
        &mut self,
        cx: &mut Context<'_>,
        w: &mut W,
        data: &[u8],
    ) -> Poll<io::Result<()>>
    where
        W: AsyncWrite + Unpin,
    {
        let mut at = 0;
        while at < data.len() {
            match Pin::new(&mut *w).poll_write(cx, &data[at..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => at += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        self.moved += at as u64;
        self.flush |= at > 0;
        if at < data.len() {
            self.unwritten = data[at..].to_vec();
            self.written = 0;
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    /// This direction's part of a goodbye: the frame in flight goes on, then
    /// `frame()` (unless the frame was cut or the reader already sent its
    /// own close), the writer is shut down, and the reader is read (and
    /// dropped) until its close frame or its end. Ready when all that is done.
    fn poll_close<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        frame: impl Fn() -> Vec<u8>,
    ) -> Poll<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.done {
            // The close handshake went through before: EOF passed on.
            self.phase = Phase::Done;
        }
        for _ in 0..READS_PER_POLL {
            match self.phase {
                Phase::ToBoundary => {
                    if !self.wdead && ready!(self.poll_drain(cx, w)).is_err() {
                        self.wdead = true;
                    }
                    if self.wdead || self.eof || self.frames.at_boundary() {
                        if !self.wdead && self.frames.at_boundary() && !self.frames.close_seen() {
                            self.unwritten = frame();
                            self.written = 0;
                            self.flush = true;
                            self.close_sent = true;
                        }
                        self.phase = Phase::Sending;
                        continue;
                    }
                    ready!(self.poll_pass_to_boundary(cx, r, w));
                }
                Phase::Sending => {
                    if !self.wdead && ready!(self.poll_drain(cx, w)).is_err() {
                        self.wdead = true;
                        self.close_sent = false; // it did not get through
                    }
                    if !self.wdead && ready!(Pin::new(&mut *w).poll_shutdown(cx)).is_err() {
                        self.wdead = true;
                    }
                    self.phase = Phase::Draining;
                }
                Phase::Draining => {
                    if self.eof || self.frames.close_done() {
                        self.phase = Phase::Done;
                        continue;
                    }
                    ready!(self.poll_discard(cx, r));
                }
                Phase::Done => return Poll::Ready(()),
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// One read: what belongs to the frame in flight is written on, the rest
    /// is dropped (but followed, to see the reader's close frame).
    fn poll_pass_to_boundary<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
    ) -> Poll<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        with_scratch(|buf| {
            let mut rb = ReadBuf::new(buf);
            if ready!(Pin::new(&mut *r).poll_read(cx, &mut rb)).is_err() || rb.filled().is_empty() {
                self.eof = true;
                return Poll::Ready(());
            }
            let data = rb.filled();
            let n = self.frames.advance(data, true);
            self.frames.advance(&data[n..], false);
            match self.write_or_hold(cx, w, &data[..n]) {
                Poll::Ready(Err(_)) => self.wdead = true,
                // Held: `ToBoundary` drains it first.
                Poll::Pending | Poll::Ready(Ok(())) => {}
            }
            Poll::Ready(())
        })
    }

    /// One read, dropped but followed.
    fn poll_discard<R: AsyncRead + Unpin>(&mut self, cx: &mut Context<'_>, r: &mut R) -> Poll<()> {
        with_scratch(|buf| {
            let mut rb = ReadBuf::new(buf);
            if ready!(Pin::new(&mut *r).poll_read(cx, &mut rb)).is_err() || rb.filled().is_empty() {
                self.eof = true;
            } else {
                self.frames.advance(rb.filled(), false);
            }
            Poll::Ready(())
        })
    }
}

#[cfg(test)]
#[path = "tunnel_tests.rs"]
mod tests;
