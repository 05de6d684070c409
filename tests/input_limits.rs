//! Limits on what a client may send and how slowly (issue 10, bugs 4 and 5):
//! `max_header_size` is exact however the head arrives, a request body that
//! stalls is cut after `client_body_timeout`, and a response body whose
//! backend stalls is cut after `timeouts.read`, so neither can hold a
//! backend slot forever.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

// === max_header_size (bug 5) ===

/// A `GET /name` head of exactly `len` bytes, counting the request line, the
/// headers and the blank line that ends them.
fn head_of(len: usize) -> Vec<u8> {
    let start = "GET /name HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\nx-pad: ";
    let end = "\r\n\r\n";
    let pad = len - start.len() - end.len();
    format!("{start}{}{end}", "p".repeat(pad)).into_bytes()
}

fn status_of(raw: &[u8]) -> u16 {
    parse_response(raw).status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_header_size_is_exact_in_one_write_and_in_small_writes() {
    let app = spawn_backend("app").await;
    let toml = format!(
        "[server]\nmax_header_size = \"64k\"\n\n{}",
        simple_config(&[app.addr], "")
    );
    let lb = spawn_lb(&toml).await;
    let max = 64 * 1024;
    // (head length, write size, status expected)
    let cases = [
        (max, usize::MAX, 200),
        (max + 1, usize::MAX, 431),
        (max, 4096, 200),
        (max + 1, 4096, 431),
        (max, 1000, 200),
        (max + 1, 1000, 431),
        // The numbers: 114,677 bytes in one write was accepted.
        (114_677, usize::MAX, 431),
        (66_000, 4096, 431),
    ];
    for (len, piece, want) in cases {
        let head = head_of(len);
        assert_eq!(head.len(), len);
        let raw = raw_in_pieces(lb.addr(), &head, piece).await;
        let piece = if piece == usize::MAX {
            "one write".to_string()
        } else {
            format!("{piece}-byte writes")
        };
        assert_eq!(status_of(&raw), want, "{len}-byte head in {piece}");
    }
}

// === client_body_timeout (bug 4) ===

/// Opens a connection and sends a POST head announcing `total` body bytes,
/// then `sent` of them, and stops there (the socket stays open).
async fn stalled_upload(addr: std::net::SocketAddr, total: usize, sent: usize) -> TcpStream {
    let mut s = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let head =
        format!("POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: {total}\r\n\r\n");
    within("send head", s.write_all(head.as_bytes()))
        .await
        .expect("send head");
    within("send part of the body", s.write_all(&vec![b'u'; sent]))
        .await
        .expect("send part of the body");
    s
}

/// Reads what latch answers a stalled client, until it closes.
async fn answer_to_stalled(mut s: TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    within("latch closing a stalled upload", async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_release_a_full_server() {
    // The scenario: max_conns = 2, two clients send 70 KB of a 1 MB
    // upload and go silent. Bodies over retry.max_body (64k) are streamed,
    // so each holds a slot on the only server.
    let app = spawn_backend("app").await;
    let toml = format!(
        "[server]\nclient_body_timeout = \"1s\"\n\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\n\
         [upstream.app]\nservers = [{{ addr = \"{}\", max_conns = 2 }}]\n",
        app.addr
    );
    let lb = spawn_lb(&toml).await;
    let first = stalled_upload(lb.addr(), 1 << 20, 70_000).await;
    let second = stalled_upload(lb.addr(), 1 << 20, 70_000).await;
    let server = lb_backend(&lb, app.addr);
    wait_until("both uploads hold a slot", TIMEOUT, || server.active() == 2).await;

    // Meanwhile everyone else is turned away...
    let (status, _, _) = http_get(lb.addr(), "app.test", "/name").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "server not full?");

    // ...until the body timeout frees the slots.
    let (a, b) = tokio::join!(answer_to_stalled(first), answer_to_stalled(second));
    for raw in [a, b] {
        assert_eq!(status_of(&raw), 408, "{:?}", String::from_utf8_lossy(&raw));
    }
    wait_until("slots released", TIMEOUT, || server.active() == 0).await;
    let (status, _, body) = http_get(lb.addr(), "app.test", "/name").await;
    assert_eq!((status, body), (StatusCode::OK, Bytes::from("app")));
    // The client stalled, not the server: it stays in the pool.
    assert!(
        server.condition.usable(),
        "a stalled client took the server out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_before_it_is_forwarded_gets_408() {
    // Small enough to be buffered for retries: it stalls before any backend
    // is chosen.
    let app = spawn_backend("app").await;
    let toml = format!(
        "[server]\nclient_body_timeout = \"500ms\"\n\n{}",
        simple_config(&[app.addr], "")
    );
    let lb = spawn_lb(&toml).await;
    let s = stalled_upload(lb.addr(), 10_000, 1_000).await;
    let raw = answer_to_stalled(s).await;
    assert_eq!(status_of(&raw), 408, "{:?}", String::from_utf8_lossy(&raw));
    assert_eq!(app.hits(), 0, "a stalled body reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_steady_upload_is_not_cut() {
    // Every gap is shorter than the timeout, the whole upload much longer.
    let app = spawn_backend("app").await;
    let toml = format!(
        "[server]\nclient_body_timeout = \"400ms\"\n\n{}",
        simple_config(&[app.addr], "[upstream.app.retry]\nmax_body = 0\n")
    );
    let lb = spawn_lb(&toml).await;
    let (tx, body) = tokio::sync::mpsc::channel::<Bytes>(1);
    let feeder = tokio::spawn(async move {
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if tx.send(Bytes::from_static(&[b'x'; 1000])).await.is_err() {
                return;
            }
        }
    });
    let body =
        http_body_util::StreamBody::new(futures_util::stream::unfold(body, |mut rx| async {
            rx.recv().await.map(|b| {
                (
                    Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(b)),
                    rx,
                )
            })
        }));
    let req = Request::post("/upload")
        .header("host", "app.test")
        .header("content-length", "8000")
        .body(body)
        .expect("request");
    let resp = send_request(lb.addr(), req).await.expect("upload answered");
    let status = resp.status();
    let got = read_body(resp.into_body()).await.expect("body");
    assert_eq!(status, StatusCode::OK, "{got:?}");
    assert!(got.starts_with(b"8000 "), "{got:?}");
    feeder.await.expect("feeder");
}

// === response body idle: timeouts.read (bug 4) ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_that_stalls_is_cut_after_the_read_timeout() {
    let app = spawn_backend("app").await;
    let toml = simple_config(&[app.addr], "[upstream.app.timeouts]\nread = \"500ms\"\n");
    let lb = spawn_lb(&toml).await;
    // The backend sends `first`, then nothing for a minute.
    let resp = send_request(
        lb.addr(),
        Request::get("/slow-stream?ms=60000")
            .body(Full::<Bytes>::default())
            .expect("request"),
    )
    .await
    .expect("response head");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = within("first chunk", body.frame())
        .await
        .expect("a frame")
        .expect("first chunk");
    assert_eq!(first.into_data().expect("data"), "first\n");
    let rest = within("the stalled body ending", body.frame()).await;
    assert!(
        matches!(rest, Some(Err(_))),
        "a stalled body must end in an error (cut), got {rest:?}"
    );
    wait_all_idle(&lb).await;

    // A gap shorter than the timeout is fine.
    let (status, _, body) = http_get(lb.addr(), "app.test", "/slow-stream?ms=100").await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, Bytes::from("first\nlast\n"))
    );
}
