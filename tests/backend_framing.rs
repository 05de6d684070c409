//! How a backend's response framing reaches the client (RFC 9112 §6.3):
//! a response with both `Content-Length` and `Transfer-Encoding: chunked`
//! is read as chunked and reaches the client whole, without the
//! `Content-Length`, and the client connection stays in step for the next
//! response; a head with conflicting lengths is refused with 502.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::StatusCode;
use support::*;
use tokio::io::AsyncWriteExt;

/// A backend that answers every request on a connection with `answer`.
async fn spawn_answering(answer: &'static [u8]) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let addr = support::faulty::spawn_raw("answering", move |mut s| {
        let counter = counter.clone();
        async move {
            loop {
                let head = support::faulty::read_head_pub(&mut s).await;
                if head.is_empty() {
                    break;
                }
                counter.fetch_add(1, Ordering::SeqCst);
                if s.write_all(answer).await.is_err() {
                    break;
                }
            }
        }
    })
    .await;
    (addr, served)
}

#[tokio::test]
async fn length_and_chunked_together_reach_the_client_whole() {
    let (addr, served) = spawn_answering(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
          a\r\n0123456789\r\n0\r\n\r\n",
    )
    .await;
    let lb = spawn_lb(&simple_config(&[addr], "")).await;
    let mut client = HttpConn::connect(lb.addr()).await;
    for i in 0..2 {
        let (status, headers, body) = client.get("app.test", "/").await;
        assert_eq!(status, StatusCode::OK, "response {i}");
        assert_eq!(&body[..], b"0123456789", "response {i} cut short");
        assert!(
            headers.get("content-length").is_none_or(|v| v == "10"),
            "the backend's Content-Length reached the client: {headers:?}"
        );
    }
    assert_eq!(served.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn conflicting_lengths_are_a_bad_gateway() {
    let (addr, _) =
        spawn_answering(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello")
            .await;
    let lb = spawn_lb(&simple_config(
        &[addr],
        "[upstream.app.retry]\non = [\"off\"]",
    ))
    .await;
    let mut client = HttpConn::connect(lb.addr()).await;
    let (status, _, _) = client.get("app.test", "/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}
