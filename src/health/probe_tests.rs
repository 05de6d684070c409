//! Probes against tiny real servers on 127.0.0.1: TCP and HTTP here, the
//! WebSocket and TLS probes in `probe_tests_ws`. Every wait is bounded by the
//! probe's own timeout; nothing sleeps to synchronise.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{Expect, HttpProbe, Probe, probe};

/// Generous for a loopback exchange; only the timeout test waits it out.
pub(super) const T: Duration = Duration::from_secs(5);

/// Reads one request head (up to the blank line, EOF or 16 KiB).
pub(super) async fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        match s.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A server that answers every connection with `answer` once it has read the
/// request head, then closes. The heads it read come out of the receiver.
pub(super) async fn server(answer: &'static [u8]) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(read_head(&mut s).await);
                let _ = s.write_all(answer).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, rx)
}

/// A server that accepts and then says nothing, keeping connections open.
pub(super) async fn silent_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    addr
}

fn http(f: impl FnOnce(&mut HttpProbe)) -> Probe {
    let mut h = HttpProbe::default();
    f(&mut h);
    Probe::Http(h)
}

async fn answer(answer: &'static [u8], p: &Probe) -> Result<(), String> {
    let (addr, _) = server(answer).await;
    probe(p, addr, T).await
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world";

#[tokio::test]
async fn tcp_up_and_refused() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(probe(&Probe::Tcp, l.local_addr().unwrap(), T).await, Ok(()));
    let dead = l.local_addr().unwrap();
    drop(l);
    let e = probe(&Probe::Tcp, dead, T).await.unwrap_err();
    assert_eq!(e, "connect: connection refused");
}

#[tokio::test]
async fn http_200_passes_and_sends_a_proper_request() {
    let (addr, mut heads) = server(OK).await;
    let p = http(|h| h.path = "/healthz?full=1".into());
    assert_eq!(probe(&p, addr, T).await, Ok(()));
    let head = heads.recv().await.unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with("get /healthz?full=1 http/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains(&format!("host: {addr}\r\n")), "{head}");
    assert!(head.contains("user-agent: latch-health\r\n"), "{head}");
    assert!(head.contains("connection: close\r\n"), "{head}");
}

#[tokio::test]
async fn http_503_fails_with_the_status() {
    let p = http(|_| {});
    let e = answer(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n", &p).await;
    assert_eq!(e, Err("status 503".into()));
}

#[tokio::test]
async fn redirects_pass_by_default_but_not_under_expect_2xx() {
    const FOUND: &[u8] = b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(answer(FOUND, &http(|_| {})).await, Ok(()));
    let p = http(|h| h.expect = vec!["2xx".parse().unwrap()]);
    assert_eq!(answer(FOUND, &p).await, Err("status 302".into()));
}

#[tokio::test]
async fn expect_an_exact_code() {
    let p = http(|h| h.expect = vec![Expect::Code(204)]);
    assert_eq!(answer(b"HTTP/1.1 204 No Content\r\n\r\n", &p).await, Ok(()));
    assert_eq!(answer(OK, &p).await, Err("status 200".into()));
}

#[tokio::test]
async fn expect_body_with_length_chunks_and_eof() {
    let hello = http(|h| h.expect_body = Some("lo wo".into()));
    let bye = http(|h| h.expect_body = Some("goodbye".into()));
    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        4\r\nhell\r\n7\r\no world\r\n0\r\n\r\n";
    const TO_EOF: &[u8] = b"HTTP/1.1 200 OK\r\n\r\nhello world";
    for body in [OK, CHUNKED, TO_EOF] {
        assert_eq!(answer(body, &hello).await, Ok(()));
        let e = answer(body, &bye).await.unwrap_err();
        assert_eq!(e, "body does not contain \"goodbye\"");
    }
}

#[tokio::test]
async fn raw_send_is_sent_as_is() {
    const RAW: &str = "GET /raw HTTP/1.0\r\nHost: check\r\nX-Odd:  spaced \r\n\r\n";
    let (addr, mut heads) = server(OK).await;
    let p = http(|h| h.send = Some(RAW.into()));
    assert_eq!(probe(&p, addr, T).await, Ok(()));
    assert_eq!(heads.recv().await.unwrap(), RAW);

    let p = http(|h| {
        h.send = Some(RAW.into());
        h.expect_body = Some("world".into());
    });
    assert_eq!(probe(&p, addr, T).await, Ok(()));
    let p = http(|h| {
        h.send = Some(RAW.into());
        h.expect_body = Some("nope".into());
    });
    let e = probe(&p, addr, T).await.unwrap_err();
    assert_eq!(e, "body does not contain \"nope\"");
    let p = http(|h| {
        h.send = Some(RAW.into());
        h.expect = vec![Expect::Class(3)];
    });
    assert_eq!(probe(&p, addr, T).await, Err("status 200".into()));
}

#[tokio::test]
async fn garbage_answers_fail_as_invalid() {
    for garbage in [&b"SSH-2.0-OpenSSH_9.6\r\n\r\n"[..], b"HTTP/1.1 abc\r\n\r\n"] {
        let (addr, _) = server(garbage).await;
        for p in [
            http(|_| {}),
            http(|h| h.send = Some("GET / HTTP/1.0\r\n\r\n".into())),
        ] {
            let e = probe(&p, addr, T).await.unwrap_err();
            assert!(e.starts_with("invalid response"), "{e}");
        }
    }
}

#[tokio::test]
async fn a_server_that_closes_without_answering_fails() {
    let (addr, _) = server(b"").await;
    for p in [
        http(|_| {}),
        http(|h| h.send = Some("GET / HTTP/1.0\r\n\r\n".into())),
    ] {
        let e = probe(&p, addr, T).await.unwrap_err();
        assert!(e.starts_with("connection closed before"), "{e}");
    }
}

#[tokio::test]
async fn a_silent_server_times_out_on_time() {
    let addr = silent_server().await;
    let timeout = Duration::from_millis(300);
    let raw = http(|h| h.send = Some("GET / HTTP/1.0\r\n\r\n".into()));
    for p in [http(|_| {}), raw] {
        let start = Instant::now();
        let e = probe(&p, addr, timeout).await.unwrap_err();
        assert_eq!(e, "timeout after 300ms");
        let took = start.elapsed();
        assert!(
            took >= timeout && took < timeout + Duration::from_secs(2),
            "{took:?}"
        );
    }
}
