//! Unit tests of the tunnel: byte moving, backpressure, memory, timeouts,
//! and the WebSocket goodbyes, over in-memory duplex streams.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio_util::sync::CancellationToken;

fn opts(idle: Duration) -> Options {
    Options {
        idle,
        websocket: false,
        spread: Duration::ZERO,
    }
}

fn on_cancel(stop: CancellationToken) -> impl Future<Output = Ending> {
    let cancelled = stop.cancelled_owned();
    async move {
        cancelled.await;
        Ending::Stop
    }
}

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
        opts(Duration::from_secs(60)),
        std::future::pending(),
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
            to_client: 2,
            ..Moved::default()
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
        up: Half::new(true),
        down: Half::new(true),
        last: Instant::now(),
        idle: Duration::from_secs(60),
        deadline: None,
        spread_ms: 0,
        websocket: true,
        stopped: false,
        goodbye: None,
        closing: false,
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
            to_client: LEN as u64,
            ..Moved::default()
        }
    );
}

#[test]
fn tunnel_state_is_small() {
    // The state an idle tunnel keeps (its task holds this future), for the
    // sides forward.rs gives it: 568 bytes (480 before the WebSocket
    // goodbyes: they add 16 bytes of frame state and a few flags per
    // direction, and hold the stop future in place).
    type Client = crate::http1::ClientIo;
    type Backend = crate::backend::conn::Upgraded;
    fn size<F: Fn(Client, Backend) -> Fut, Fut>(_: F) -> usize {
        std::mem::size_of::<Fut>()
    }
    let n = size(|c, b| {
        let stop = CancellationToken::new();
        run(c, b, opts(Duration::from_secs(1)), on_cancel(stop))
    });
    assert!(n <= 576, "the tunnel future grew to {n} bytes");
}

#[tokio::test(start_paused = true)]
async fn idle_tunnel_is_closed() {
    let (_c, client) = duplex(64);
    let (_b, backend) = duplex(64);
    let idle = Duration::from_secs(30);
    let started = Instant::now();
    run(client, backend, opts(idle), std::future::pending()).await;
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
        opts(Duration::from_secs(3600)),
        on_cancel(stop.clone()),
    ));
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), t)
        .await
        .unwrap()
        .unwrap();
}

fn ws(spread: Duration) -> Options {
    Options {
        idle: Duration::from_secs(3600),
        websocket: true,
        spread,
    }
}

/// Reads one close frame; returns its code and reason (unmasked).
async fn read_close<R: AsyncRead + Unpin>(r: &mut R, masked: bool) -> (u16, String) {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).await.unwrap();
    assert_eq!(head[0], 0x88, "not a close frame: {head:?}");
    assert_eq!(head[1] & 0x80 != 0, masked, "mask bit");
    let mut mask = [0u8; 4];
    if masked {
        r.read_exact(&mut mask).await.unwrap();
    }
    let mut payload = vec![0u8; usize::from(head[1] & 0x7f)];
    r.read_exact(&mut payload).await.unwrap();
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    (code, String::from_utf8(payload[2..].to_vec()).unwrap())
}

#[tokio::test]
async fn stop_finishes_the_frame_in_flight_then_says_goodbye_both_ways() {
    let (mut c, client) = duplex(1024);
    let (mut b, backend) = duplex(1024);
    let stop = CancellationToken::new();
    let t = tokio::spawn(run(
        client,
        backend,
        ws(Duration::ZERO),
        on_cancel(stop.clone()),
    ));
    // Half a binary frame from the backend, then the stop.
    b.write_all(&[0x82, 10, 0, 1, 2, 3]).await.unwrap();
    let mut got = [0u8; 6];
    c.read_exact(&mut got).await.unwrap();
    stop.cancel();
    // The rest of that frame, and one more that must not get through.
    b.write_all(&[4, 5, 6, 7, 8, 9, 0x81, 1, b'x'])
        .await
        .unwrap();
    let mut rest = [0u8; 6];
    c.read_exact(&mut rest).await.unwrap();
    assert_eq!(rest, [4, 5, 6, 7, 8, 9]);
    assert_eq!(
        read_close(&mut c, false).await,
        (1001, "latch stopping".into())
    );
    assert_eq!(
        read_close(&mut b, true).await,
        (1001, "latch stopping".into())
    );
    // Both peers answer; the tunnel ends without waiting for its deadline.
    c.write_all(&close_frame(1001, "", Some([1, 2, 3, 4])))
        .await
        .unwrap();
    b.write_all(&close_frame(1001, "", None)).await.unwrap();
    let moved = tokio::time::timeout(Duration::from_secs(2), t)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved.goodbye, Some(Goodbye::Stop));
    assert!(moved.close_sent);
    let mut tail = Vec::new();
    c.read_to_end(&mut tail).await.unwrap();
    assert!(tail.is_empty(), "after the close frame: {tail:?}");
}

#[tokio::test]
async fn backend_gone_between_frames_sends_1011() {
    let (mut c, client) = duplex(1024);
    let (mut b, backend) = duplex(1024);
    let t = tokio::spawn(run(
        client,
        backend,
        ws(Duration::ZERO),
        std::future::pending(),
    ));
    b.write_all(&[0x81, 2, b'h', b'i']).await.unwrap();
    let mut got = [0u8; 4];
    c.read_exact(&mut got).await.unwrap();
    drop(b);
    assert_eq!(
        read_close(&mut c, false).await,
        (1011, "backend lost".into())
    );
    c.write_all(&close_frame(1011, "", Some([9, 9, 9, 9])))
        .await
        .unwrap();
    let moved = tokio::time::timeout(Duration::from_secs(2), t)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved.goodbye, Some(Goodbye::BackendLost));
}

#[tokio::test]
async fn backend_close_frame_passes_through_untouched() {
    let (mut c, client) = duplex(1024);
    let (mut b, backend) = duplex(1024);
    let t = tokio::spawn(run(
        client,
        backend,
        ws(Duration::ZERO),
        std::future::pending(),
    ));
    let bye = close_frame(1000, "bye", None);
    b.write_all(&bye).await.unwrap();
    drop(b);
    let mut got = Vec::new();
    c.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, bye, "latch added to a close the backend made");
    c.write_all(&close_frame(1000, "", Some([5, 6, 7, 8])))
        .await
        .unwrap();
    drop(c);
    let moved = tokio::time::timeout(Duration::from_secs(10), t)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved.goodbye, None);
}

#[tokio::test(start_paused = true)]
async fn idle_websocket_gets_1001() {
    let (mut c, client) = duplex(1024);
    let (mut b, backend) = duplex(1024);
    let mut o = ws(Duration::ZERO);
    o.idle = Duration::from_secs(30);
    let t = tokio::spawn(run(client, backend, o, std::future::pending()));
    assert_eq!(
        read_close(&mut c, false).await,
        (1001, "idle timeout".into())
    );
    assert_eq!(
        read_close(&mut b, true).await,
        (1001, "idle timeout".into())
    );
    // Nobody answers: the goodbye ends at its deadline.
    let moved = t.await.unwrap();
    assert_eq!(moved.goodbye, Some(Goodbye::Idle));
}

#[tokio::test(start_paused = true)]
async fn stop_spreads_goodbyes_over_the_window() {
    let spread = Duration::from_secs(10);
    let stop = CancellationToken::new();
    let mut peers = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (c, client) = duplex(1024);
        let (b, backend) = duplex(1024);
        tasks.push(tokio::spawn(run(
            client,
            backend,
            ws(spread),
            on_cancel(stop.clone()),
        )));
        peers.push((c, b));
    }
    let started = Instant::now();
    let mut readers = tokio::task::JoinSet::new();
    for (mut c, b) in peers {
        readers.spawn(async move {
            read_close(&mut c, false).await;
            drop(b);
            started.elapsed()
        });
    }
    stop.cancel();
    let at = readers.join_all().await;
    assert!(at.iter().all(|d| *d < spread), "{at:?}");
    let distinct: std::collections::BTreeSet<_> = at.iter().map(Duration::as_millis).collect();
    assert!(distinct.len() > 30, "goodbyes not spread: {at:?}");
    drop(tasks);
}

#[tokio::test]
async fn client_gone_without_close_says_1001_to_the_backend() {
    let (c, client) = duplex(1024);
    let (mut b, backend) = duplex(1024);
    let t = tokio::spawn(run(
        client,
        backend,
        ws(Duration::ZERO),
        std::future::pending(),
    ));
    drop(c);
    assert_eq!(read_close(&mut b, true).await, (1001, "client gone".into()));
    b.write_all(&close_frame(1001, "", None)).await.unwrap();
    let moved = tokio::time::timeout(Duration::from_secs(2), t)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved.goodbye, Some(Goodbye::ClientGone));
    assert!(!moved.close_sent, "nothing can reach a client that is gone");
}
