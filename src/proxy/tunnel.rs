//! The byte tunnel behind an upgraded connection (WebSocket after its 101).
//!
//! One hand-written future drives both directions, so a slow reader on one side
//! never stalls the other direction. When one side ends its stream, the other
//! side's write half is shut down (the half-close travels through) and the
//! remaining direction gets [`FIN_TIMEOUT`] to finish, so a backend that goes
//! away closes the client promptly (HAProxy calls this `timeout client-fin`).
//! An error on either side, `idle` without a byte, or a hard stop ends both.
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
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// Time the second direction gets after the first one finished.
pub const FIN_TIMEOUT: Duration = Duration::from_secs(5);
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

/// Bytes moved each way, for logs and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub to_backend: u64,
    pub to_client: u64,
}

/// Runs the tunnel until it ends; never fails (a broken side just ends it).
///
/// A plain `fn` returning the future rather than an `async fn`: the arguments
/// of an `async fn` stay in its state next to what is built from them, and a
/// tunnel's state lives as long as the tunnel, so every byte counts.
pub fn run<C, B>(
    client: C,
    backend: B,
    idle: Duration,
    stop: CancellationToken,
) -> impl Future<Output = Moved>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut t = Tunnel {
        client,
        backend,
        up: Half::default(),
        down: Half::default(),
        last: Instant::now(),
        idle,
        fin_deadline: None,
    };
    async move {
        let mut timer = std::pin::pin!(tokio::time::sleep_until(t.last + t.idle));
        let mut stopped = std::pin::pin!(stop.cancelled_owned());
        poll_fn(|cx| t.poll_run(cx, timer.as_mut(), stopped.as_mut())).await;
        Moved {
            to_backend: t.up.moved,
            to_client: t.down.moved,
        }
    }
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
    /// Set when the first direction has finished.
    fin_deadline: Option<Instant>,
}

impl<C, B> Tunnel<C, B>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    /// Runs the tunnel: ready when it has ended (both directions done, an
    /// error, idle, the FIN timeout, or `stop`).
    ///
    /// `timer` is armed for the earliest moment the tunnel could time out; it
    /// is re-armed only when it fires, so traffic costs no timer updates.
    fn poll_run(
        &mut self,
        cx: &mut Context<'_>,
        mut timer: Pin<&mut Sleep>,
        stopped: Pin<&mut impl Future<Output = ()>>,
    ) -> Poll<()> {
        if stopped.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        while let Poll::Ready(r) = self.poll_step(cx) {
            if r.is_err() || (self.up.done && self.down.done) {
                return Poll::Ready(());
            }
            if self.fin_deadline.is_none() {
                let fin = Instant::now() + FIN_TIMEOUT;
                self.fin_deadline = Some(fin);
                if fin < timer.deadline() {
                    timer.as_mut().reset(fin);
                }
            }
        }
        while timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let idle_at = self.last + self.idle;
            let fin = self.fin_deadline.unwrap_or(idle_at);
            if now >= idle_at || now >= fin {
                return Poll::Ready(());
            }
            timer.as_mut().reset(idle_at.min(fin));
        }
        Poll::Pending
    }

    /// Moves what can be moved both ways; ready when a direction has finished
    /// (EOF passed on) or failed.
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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
            return Poll::Ready(r);
        }
        if !down.done
            && let Poll::Ready(r) = down.poll_copy(cx, backend, client, last)
        {
            return Poll::Ready(r);
        }
        Poll::Pending
    }
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
    /// The reader has ended: flush, shut the writer down, and this half is done.
    eof: bool,
    done: bool,
    /// Bytes the writer has taken.
    moved: u64,
}

impl Half {
    /// Copies `r` to `w` until `r` has nothing more for now or `w` pushes back
    /// (pending), or until `r` ended and `w` has been shut down (ready).
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        last: &mut Instant,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        for _ in 0..READS_PER_POLL {
            ready!(self.poll_drain(cx, w))?;
            if self.eof {
                ready!(Pin::new(&mut *w).poll_shutdown(cx))?;
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
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        with_scratch(|buf| {
            let mut rb = ReadBuf::new(buf);
            ready!(Pin::new(&mut *r).poll_read(cx, &mut rb))?;
            let data = rb.filled();
            if data.is_empty() {
                self.eof = true;
                return Poll::Ready(Ok(()));
            }
            *last = Instant::now();
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    /// A writer that takes at most 3 bytes a call and says "not now" every
    /// other call (waking itself), in front of a duplex.
    struct Trickle {
        io: DuplexStream,
        refuse: bool,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.refuse = !self.refuse;
            if self.refuse {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(3);
            Pin::new(&mut self.io).poll_write(cx, &buf[..n])
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    /// An endless reader that counts what it hands out.
    struct Counting(u64);

    impl AsyncRead for Counting {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = buf.remaining();
            buf.put_slice(&vec![7; n]);
            self.0 += n as u64;
            Poll::Ready(Ok(()))
        }
    }

    /// A writer that takes `room` bytes, then nothing more.
    struct Full {
        room: usize,
    }

    impl AsyncWrite for Full {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.room);
            self.room -= n;
            if n == 0 {
                Poll::Pending
            } else {
                Poll::Ready(Ok(n))
            }
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Deterministic bytes for the transfer tests (xorshift64).
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Writes `data` in chunks of pseudo-random size, then half-closes.
    async fn send_all<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8], seed: u64) {
        let sizes = noise(seed, data.len());
        let mut at = 0;
        for s in sizes {
            if at == data.len() {
                break;
            }
            let n = (1 + usize::from(s) * 37).min(data.len() - at);
            w.write_all(&data[at..at + n]).await.unwrap();
            at += n;
        }
        w.shutdown().await.unwrap();
    }

    fn tunnel(
        client: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
        backend: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    ) -> tokio::task::JoinHandle<Moved> {
        tokio::spawn(run(
            client,
            backend,
            Duration::from_secs(60),
            CancellationToken::new(),
        ))
    }

    #[tokio::test]
    async fn moves_bytes_both_ways_and_propagates_close() {
        let (client_end, client) = duplex(64);
        let (backend_end, backend) = duplex(64);
        let t = tunnel(client, backend);
        let (mut c, mut b) = (client_end, backend_end);
        c.write_all(b"hello backend").await.unwrap();
        let mut got = [0u8; 13];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello backend");
        b.write_all(b"hi").await.unwrap();
        let mut got = [0u8; 2];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hi");
        // Backend goes away: the client must see EOF, and the tunnel must end.
        drop(b);
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        let moved = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            moved,
            Moved {
                to_backend: 13,
                to_client: 2
            }
        );
    }

    #[tokio::test]
    async fn client_half_close_leaves_the_other_way_open() {
        let (mut c, client) = duplex(64);
        let (mut b, backend) = duplex(64);
        let t = tunnel(client, backend);
        c.write_all(b"last words").await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last words");
        b.write_all(b"answer").await.unwrap();
        let mut got = [0u8; 6];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"answer");
        drop(b);
        let moved = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((moved.to_backend, moved.to_client), (10, 6));
    }

    #[tokio::test(start_paused = true)]
    async fn second_direction_gets_fin_timeout() {
        let (c, client) = duplex(64);
        let (_b, backend) = duplex(64);
        let started = Instant::now();
        let t = tunnel(client, backend);
        drop(c); // the client is gone; the backend never answers
        t.await.unwrap();
        let took = started.elapsed();
        assert!(took >= FIN_TIMEOUT && took < FIN_TIMEOUT * 2, "{took:?}");
    }

    #[tokio::test]
    async fn writer_holding_bytes_is_flushed() {
        // A writer that passes bytes on only when flushed, like a TLS stream.
        let (mut c, client) = duplex(1024);
        let (mut b, backend) = duplex(1024);
        let _t = tunnel(tokio::io::BufWriter::new(client), backend);
        b.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut got))
            .await
            .expect("bytes held in an unflushed writer")
            .unwrap();
        assert_eq!(&got, b"ping");
    }

    #[tokio::test]
    async fn held_remainder_stops_reading() {
        let mut half = Half::default();
        let (mut r, mut w) = (Counting(0), Full { room: 1000 });
        let mut last = Instant::now();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..5 {
            assert!(
                half.poll_copy(&mut cx, &mut r, &mut w, &mut last)
                    .is_pending()
            );
        }
        // One read's worth, no more: 1000 bytes written, the rest held.
        assert_eq!(r.0, SCRATCH as u64);
        assert_eq!(half.moved, 1000);
        assert_eq!(half.unwritten.len() - half.written, SCRATCH - 1000);
        // Room again: the remainder goes out, is freed, and reading resumes.
        w.room = SCRATCH;
        assert!(
            half.poll_copy(&mut cx, &mut r, &mut w, &mut last)
                .is_pending()
        );
        assert_eq!(half.moved, SCRATCH as u64 + 1000);
        assert_eq!(r.0, 2 * SCRATCH as u64);
        assert_eq!(half.unwritten.len() - half.written, SCRATCH - 1000);
    }

    #[tokio::test]
    async fn idle_half_holds_no_buffer() {
        let (mut c, client) = duplex(64);
        let (mut b, backend) = duplex(64);
        let mut t = Tunnel {
            client,
            backend,
            up: Half::default(),
            down: Half::default(),
            last: Instant::now(),
            idle: Duration::from_secs(60),
            fin_deadline: None,
        };
        c.write_all(b"x").await.unwrap();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(t.poll_step(&mut cx).is_pending());
        let mut got = [0u8; 1];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(t.up.unwritten.capacity() + t.down.unwritten.capacity(), 0);
        assert_eq!(t.up.moved, 1);
    }

    #[tokio::test]
    async fn slow_writer_pushes_back_and_loses_nothing() {
        let (mut c, client) = duplex(16);
        let (mut b, backend) = duplex(16);
        let slow = Trickle {
            io: client,
            refuse: false,
        };
        let t = tunnel(slow, backend);
        let data = noise(1, 256 * 1024);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            send_all(&mut b, &sent, 2).await;
            b
        });
        // Nobody reads the client end: the tunnel holds at most one read, so
        // the backend cannot get its 256 KiB out.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!writer.is_finished());
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        assert!(got == data, "bytes lost or reordered");
        drop(writer.await.unwrap());
        drop(c);
        let moved = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(moved.to_client, data.len() as u64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_random_transfers_both_ways() {
        const LEN: usize = 8 << 20;
        let (c, client) = duplex(997);
        let (b, backend) = duplex(4093);
        let t = tunnel(client, backend);
        let (up, down) = (noise(3, LEN), noise(4, LEN));
        let (up2, down2) = (up.clone(), down.clone());
        let (mut cr, mut cw) = tokio::io::split(c);
        let (mut br, mut bw) = tokio::io::split(b);
        let jobs = [
            tokio::spawn(async move {
                send_all(&mut cw, &up2, 5).await;
                Vec::new()
            }),
            tokio::spawn(async move {
                send_all(&mut bw, &down2, 6).await;
                Vec::new()
            }),
            tokio::spawn(async move {
                let mut v = Vec::new();
                br.read_to_end(&mut v).await.unwrap();
                v
            }),
            tokio::spawn(async move {
                let mut v = Vec::new();
                cr.read_to_end(&mut v).await.unwrap();
                v
            }),
        ];
        let mut out = Vec::new();
        for j in jobs {
            out.push(
                tokio::time::timeout(Duration::from_secs(60), j)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        assert!(out[2] == up, "client to backend: bytes lost or reordered");
        assert!(out[3] == down, "backend to client: bytes lost or reordered");
        let moved = t.await.unwrap();
        assert_eq!(
            moved,
            Moved {
                to_backend: LEN as u64,
                to_client: LEN as u64
            }
        );
    }

    #[test]
    fn tunnel_state_is_small() {
        // The state an idle tunnel keeps (its task holds this future), for the
        // sides forward.rs gives it.
        type Client = crate::http1::ClientIo;
        type Backend = crate::backend::conn::Upgraded;
        fn size<F: Fn(Client, Backend) -> Fut, Fut>(_: F) -> usize {
            std::mem::size_of::<Fut>()
        }
        let n = size(|c, b| run(c, b, Duration::from_secs(1), CancellationToken::new()));
        assert!(n <= 512, "the tunnel future grew to {n} bytes");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_tunnel_is_closed() {
        let (_c, client) = duplex(64);
        let (_b, backend) = duplex(64);
        let idle = Duration::from_secs(30);
        let started = Instant::now();
        run(client, backend, idle, CancellationToken::new()).await;
        assert!(started.elapsed() >= idle);
    }

    #[tokio::test]
    async fn stop_ends_tunnel() {
        let (_c, client) = duplex(64);
        let (_b, backend) = duplex(64);
        let stop = CancellationToken::new();
        let t = tokio::spawn(run(
            client,
            backend,
            Duration::from_secs(3600),
            stop.clone(),
        ));
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .unwrap()
            .unwrap();
    }
}
