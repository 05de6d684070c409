//! The client side against scripted backends on loopback sockets: bodies by
//! every framing, delivered in pieces, and what becomes of the connection.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{Conn, OutBody, Streaming, connect};
use crate::backend::Backend;
use crate::config::ServerConfig;

/// A backend that, for each request it reads, writes the next answer in
/// pieces of `piece` bytes, then keeps the connection open.
async fn scripted(answers: Vec<&'static [u8]>, piece: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        for answer in answers {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            for part in answer.chunks(piece) {
                if s.write_all(part).await.is_err() {
                    return;
                }
                s.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
        }
        // Hold the connection until the client closes it.
        let _ = s.read(&mut [0u8; 1]).await;
    });
    addr
}

async fn get(c: &mut Conn) -> super::Head {
    let mut h = HeaderMap::new();
    h.insert("host", "t".parse().unwrap());
    c.write_request(
        &Method::GET,
        "/",
        &h,
        [],
        OutBody::Whole(Bytes::new(), false),
    )
    .await
    .unwrap();
    c.read_head(&Method::GET).await.unwrap()
}

/// Reads the whole body; the backend's slot and (maybe) the connection go
/// back to `b`.
async fn body_of(c: Conn, head: super::Head, b: &Backend) -> Result<Vec<u8>, String> {
    let body = Streaming::new(c, head.framing, head.keep_alive, b.start_request(), 4);
    let got = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("body within 10 s");
    got.map(|c| c.to_bytes().to_vec())
        .map_err(|e| e.to_string())
}

fn backend(addr: SocketAddr) -> Backend {
    Backend::new(&ServerConfig::new(addr, 1))
}

#[tokio::test]
async fn chunked_bodies_in_single_bytes_then_the_connection_is_reused() {
    let answer: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n";
    let again: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let addr = scripted(vec![answer, again], 1).await;
    let b = backend(addr);
    let mut c = connect(addr, Duration::from_secs(5)).await.unwrap();
    let head = get(&mut c).await;
    assert_eq!(body_of(c, head, &b).await.unwrap(), b"hello, world");
    assert_eq!(
        (b.active(), b.idle.len()),
        (0, 1),
        "slot freed, connection pooled"
    );
    let mut c = b
        .idle
        .checkout(Duration::from_secs(60))
        .await
        .expect("pooled");
    assert!(c.reused());
    let head = get(&mut c).await;
    assert_eq!(body_of(c, head, &b).await.unwrap(), b"ok");
}

#[tokio::test]
async fn length_bodies_in_pieces_and_close_delimited_bodies() {
    let answer: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789";
    let addr = scripted(vec![answer], 3).await;
    let b = backend(addr);
    let mut c = connect(addr, Duration::from_secs(5)).await.unwrap();
    let head = get(&mut c).await;
    assert_eq!(body_of(c, head, &b).await.unwrap(), b"0123456789");
    assert_eq!(b.idle.len(), 1);

    // HTTP/1.0 without a length: the body runs to the close.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let _ = s.read(&mut [0u8; 1024]).await;
        s.write_all(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
            .await
            .unwrap();
    });
    let b = backend(addr);
    let mut c = connect(addr, Duration::from_secs(5)).await.unwrap();
    let head = get(&mut c).await;
    assert!(!head.keep_alive);
    assert_eq!(body_of(c, head, &b).await.unwrap(), b"until the end");
    assert_eq!(
        b.idle.len(),
        0,
        "a close-delimited connection is not reused"
    );
}

#[tokio::test]
async fn broken_bodies_are_errors_and_never_pooled() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
    ] {
        let addr = scripted(vec![answer], 4).await;
        let b = backend(addr);
        let mut c = connect(addr, Duration::from_secs(5)).await.unwrap();
        let head = get(&mut c).await;
        assert!(
            body_of(c, head, &b).await.is_err(),
            "{}",
            String::from_utf8_lossy(answer)
        );
        assert_eq!((b.active(), b.idle.len()), (0, 0));
    }
    // The backend closes before the declared length.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let _ = s.read(&mut [0u8; 1024]).await;
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
            .await
            .unwrap();
    });
    let b = backend(addr);
    let mut c = connect(addr, Duration::from_secs(5)).await.unwrap();
    let head = get(&mut c).await;
    let err = body_of(c, head, &b).await.unwrap_err();
    assert!(err.contains("mid-body"), "{err}");
}

#[tokio::test]
async fn an_upgrade_keeps_the_bytes_read_past_the_101() {
    let answer: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
        Connection: upgrade\r\n\r\nfirst frame";
    let addr = scripted(vec![answer], 64).await;
    let mut c = connect(addr, Duration::from_secs(5)).await.unwrap();
    let head = get(&mut c).await;
    assert_eq!(head.response.status(), 101);
    let mut up = c.into_upgraded();
    let mut got = [0u8; 11];
    up.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"first frame");
}

/// A connection that sent a PROXY header goes back to the idle list but is
/// handed out again only for the client connection it was opened for, and
/// closed by the reaper once that connection is gone; plain connections are
/// never handed to a `send_proxy` request, nor the other way round.
#[tokio::test]
async fn a_proxied_connection_serves_only_its_client_connection() {
    use crate::proxy_protocol::{Addrs, Version};
    use std::sync::Arc;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Keeps every connection open, reading nothing.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let client = Addrs {
        src: SocketAddr::from(([192, 0, 2, 1], 1)),
        dst: addr,
    };
    let owner = |a: &Arc<dyn std::any::Any + Send + Sync>| Arc::downgrade(a);
    let (one, two): (
        Arc<dyn std::any::Any + Send + Sync>,
        Arc<dyn std::any::Any + Send + Sync>,
    ) = (Arc::new(1u8), Arc::new(2u8));
    let idle = super::Idle::default();
    let max = Duration::from_secs(60);
    let mut a = connect(addr, max).await.unwrap();
    a.send_proxy_header(Version::V2, client, owner(&one))
        .await
        .unwrap();
    idle.put(a, 4);
    idle.put(connect(addr, max).await.unwrap(), 4);
    assert!(idle.checkout_for(max, Some(&owner(&two))).await.is_none());
    assert_eq!(idle.len(), 2, "the others' connections stay");
    let back = idle
        .checkout_for(max, Some(&owner(&one)))
        .await
        .expect("its own");
    assert_eq!(back.proxied_client(), Some(client));
    let plain = idle.checkout(max).await.expect("the plain one");
    assert_eq!(plain.proxied_client(), None);
    idle.put(back, 4);
    assert!(
        idle.checkout(max).await.is_none(),
        "a proxied one is not plain"
    );
    idle.reap(max);
    assert_eq!(idle.len(), 1, "kept while its client connection lives");
    drop(one);
    idle.reap(max);
    assert!(idle.is_empty(), "closed once its client connection is gone");
}

/// A backend that answers each request `200` with an empty body once it is
/// told to (one message per request).
async fn answering_when_told() -> (SocketAddr, tokio::sync::mpsc::UnboundedSender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        loop {
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            if rx.recv().await.is_none() {
                return;
            }
            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
            if s.write_all(ok).await.is_err() {
                return;
            }
        }
    });
    (addr, tx)
}

async fn send_get(c: &mut Conn) {
    let mut h = HeaderMap::new();
    h.insert("host", "t".parse().unwrap());
    let body = OutBody::Whole(Bytes::new(), false);
    c.write_request(&Method::GET, "/", &h, [], body)
        .await
        .unwrap();
}

/// The `read` timer stays armed from one request to the next: a timer set
/// for an earlier request's deadline must not end a later request early,
/// and a shorter timeout must still be kept.
#[tokio::test(start_paused = true)]
async fn the_read_timer_kept_between_requests_times_each_by_its_own_deadline() {
    let (addr, answer) = answering_when_told().await;
    let mut c = connect(addr, Duration::from_secs(5)).await.unwrap();
    let read = Duration::from_secs(10);

    // First request, answered at once: the timer is armed for t0 + 10 s.
    send_get(&mut c).await;
    answer.send(()).unwrap();
    let head = c.read_head_within(&Method::GET, read, false).await;
    assert!(matches!(head, Some(Ok(_))), "the first answer");

    // Six seconds later a second request whose answer takes 7 s: the
    // timer's old deadline (t0 + 10 s) passes while it waits, and it must
    // be set again for this request's own (t0 + 16 s), not time it out.
    tokio::time::sleep(Duration::from_secs(6)).await;
    send_get(&mut c).await;
    let started = tokio::time::Instant::now();
    let late = answer.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(7)).await;
        late.send(()).unwrap();
    });
    let head = c.read_head_within(&Method::GET, read, false).await;
    assert!(
        matches!(head, Some(Ok(_))),
        "timed out after {:?} of a 10 s timeout",
        started.elapsed()
    );

    // A third request with a 1 s timeout and no answer: it ends after 1 s,
    // not at the timer's later deadline.
    send_get(&mut c).await;
    let started = tokio::time::Instant::now();
    let head = c
        .read_head_within(&Method::GET, Duration::from_secs(1), false)
        .await;
    assert!(head.is_none(), "no answer came, so it timed out");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(2),
        "timed out after {waited:?}, not 1 s"
    );
}
