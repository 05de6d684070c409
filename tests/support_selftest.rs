//! Exercises the shared test helpers directly (no proxy involved).

mod support;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use support::*;

#[tokio::test]
async fn name_route_and_counters() {
    let b = spawn_backend("b1").await;
    assert_eq!(b.hits(), 0);
    let (status, headers, body) = http_get(b.addr, "example.test", "/name").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "b1");
    assert_eq!(headers["x-backend"], "b1");
    assert_eq!(b.hits(), 1);
    assert_eq!(b.last_headers()["host"], "example.test");
    assert_eq!(b.last_uri().as_deref(), Some("/name"));

    let (status, _, _) = http_get(b.addr, "localhost", "/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(b.hits(), 2);
}

#[tokio::test]
async fn keep_alive_connection() {
    let b = spawn_backend("ka").await;
    let mut conn = HttpConn::connect(b.addr).await;
    for _ in 0..3 {
        let (status, _, body) = conn.get("localhost", "/name").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "ka");
    }
    assert_eq!(b.hits(), 3);
    assert!(!conn.is_closed());
    b.stop().await;
    conn.wait_closed().await;
    assert!(conn.is_closed());
}

#[tokio::test]
async fn echo_shows_request() {
    let b = spawn_backend("b1").await;
    let req = Request::post("/echo?x=1")
        .header("host", "svc.test")
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-multi", "a")
        .header("x-multi", "b")
        .body(Full::new(Bytes::from_static(b"hello\n\nworld")))
        .unwrap();
    let (status, _, body) = http_request(b.addr, req).await;
    assert_eq!(status, StatusCode::OK);
    let echo = parse_echo(&body);
    assert_eq!(echo.method, "POST");
    assert_eq!(echo.target, "/echo?x=1");
    assert_eq!(echo.header("Host"), Some("svc.test"));
    assert_eq!(echo.header("x-forwarded-for"), Some("10.0.0.1"));
    assert_eq!(echo.header_all("x-multi"), vec!["a", "b"]);
    assert_eq!(echo.body, "hello\n\nworld");
    assert_eq!(b.last_headers()["x-forwarded-for"], "10.0.0.1");

    // No Host given: the client adds `localhost`.
    let req = Request::get("/echo").body(Full::default()).unwrap();
    let (_, _, body) = http_request(b.addr, req).await;
    assert_eq!(parse_echo(&body).header("host"), Some("localhost"));
}

#[tokio::test]
async fn slow_stream_sends_first_chunk_early() {
    let b = spawn_backend("b1").await;
    let req = Request::get("/slow-stream?ms=2000")
        .body(Full::<Bytes>::default())
        .unwrap();
    // Head and first chunk must arrive well before the 2 s delay ends.
    let body = tokio::time::timeout(Duration::from_secs(1), async {
        let resp = send_request(b.addr, req)
            .await
            .expect("slow-stream request");
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let frame = body.frame().await.expect("a frame").expect("frame ok");
        assert_eq!(frame.into_data().unwrap(), "first\n");
        body
    })
    .await
    .expect("first chunk arrives within 1 s");
    let rest = within("rest of slow-stream", body.collect()).await.unwrap();
    assert_eq!(rest.to_bytes(), "last\n");
}

#[tokio::test]
async fn hang_never_answers() {
    let b = spawn_backend("b1").await;
    let req = Request::get("/hang")
        .body(Full::<Bytes>::default())
        .unwrap();
    let r = tokio::time::timeout(Duration::from_millis(300), send_request(b.addr, req)).await;
    assert!(r.is_err(), "/hang answered");
    assert_eq!(b.hits(), 1);
}

#[tokio::test]
async fn big_body_pattern() {
    let b = spawn_backend("b1").await;
    let n = 3 * 64 * 1024 + 17;
    for path in [
        format!("/big?bytes={n}"),
        format!("/big?bytes={n}&chunked=1"),
    ] {
        let (status, headers, body) = http_get(b.addr, "localhost", &path).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), n);
        assert!(
            body.iter()
                .enumerate()
                .all(|(i, &x)| x == pattern_byte(i as u64))
        );
        if path.contains("chunked") {
            assert_eq!(headers["transfer-encoding"], "chunked");
        } else {
            assert_eq!(headers["content-length"], n.to_string().as_str());
        }
    }
}

#[tokio::test]
async fn checksum_schemes_agree() {
    let data = pattern_bytes(0, 1000);
    assert_eq!(checksum(&data), pattern_checksum(1000));
    let mut c = Checksum::new();
    c.update(&data[..300]);
    c.update(&data[300..]);
    assert_eq!(c.finish(), checksum(&data));
    assert_eq!(c.len(), 1000);
    assert_eq!(checksum(b""), 0xcbf2_9ce4_8422_2325);
}

#[tokio::test]
async fn upload_streams_5mb() {
    let b = spawn_backend("b1").await;
    let n: u64 = 5_000_000;
    for body in [PatternBody::new(n), PatternBody::chunked(n)] {
        let req = Request::post("/upload").body(body).unwrap();
        let resp = send_request(b.addr, req).await.expect("upload");
        assert_eq!(resp.status(), StatusCode::OK);
        let got = within_for(LONG_TIMEOUT, "upload answer", resp.into_body().collect())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(got, format!("{n} {}", pattern_checksum(n)).as_str());
    }
}

#[tokio::test]
async fn ws_echo() {
    let b = spawn_backend("b1").await;
    let (mut ws, resp) = ws_connect(b.addr, "/ws").await;
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(resp.headers()["set-cookie"], "backend=b1; Path=/");
    assert_eq!(resp.headers()["x-backend"], "b1");
    assert_eq!(b.last_headers()["host"], "localhost");

    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(
        next_msg(&mut ws).await.unwrap().unwrap(),
        Message::text("hi")
    );
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        next_msg(&mut ws).await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    let big = pattern_bytes(0, 1 << 20);
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(
        next_msg(&mut ws).await.unwrap().unwrap(),
        Message::binary(big)
    );

    ws.close(None).await.unwrap();
    loop {
        match next_msg(&mut ws).await {
            Some(Ok(Message::Close(_))) => {}
            None | Some(Err(WsError::ConnectionClosed)) => break,
            other => panic!("unexpected after close: {other:?}"),
        }
    }
}

#[tokio::test]
async fn ws_with_headers() {
    let b = spawn_backend("b1").await;
    let (_ws, _) = ws_connect_with(b.addr, "chat.test", "/ws", &[("cookie", "backend=b1")]).await;
    assert_eq!(b.last_headers()["cookie"], "backend=b1");
    assert_eq!(b.last_headers()["host"], "chat.test");
}

#[tokio::test]
async fn ws_close_route() {
    let b = spawn_backend("b1").await;
    let (mut ws, _) = ws_connect(b.addr, "/ws-close").await;
    match next_msg(&mut ws).await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.reason, "bye"),
        other => panic!("expected a Close frame, got {other:?}"),
    }
    match next_msg(&mut ws).await {
        None | Some(Err(_)) => {}
        other => panic!("expected the end of the stream, got {other:?}"),
    }
}

#[tokio::test]
async fn ws_refuse_and_wrong() {
    let b = spawn_backend("b1").await;
    match try_ws_connect(b.addr, "/ws-refuse").await {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status(), StatusCode::FORBIDDEN);
            assert_eq!(resp.body().as_deref(), Some(&b"refused by b1"[..]));
        }
        other => panic!("expected a 403, got {:?}", other.map(|(_, r)| r)),
    }
    match try_ws_connect(b.addr, "/ws-wrong").await {
        Err(WsError::Protocol(_)) => {}
        other => panic!("expected a protocol error, got {:?}", other.map(|(_, r)| r)),
    }
    // A plain GET on /ws is not a valid handshake.
    let (status, _, _) = http_get(b.addr, "localhost", "/ws").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn faulty_backends() {
    let refusing = spawn_refusing().await;
    assert!(TcpStream::connect(refusing).await.is_err());

    let garbage = spawn_garbage().await;
    let got = raw_exchange(garbage, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(got, b"garbage\r\n\r\n");
    let req = Request::get("/").body(Full::default()).unwrap();
    assert!(try_http_request(garbage, req).await.is_err());

    let hole = spawn_blackhole().await;
    let req = Request::get("/").body(Full::<Bytes>::default()).unwrap();
    let r = tokio::time::timeout(Duration::from_millis(300), send_request(hole, req)).await;
    assert!(r.is_err(), "blackhole answered");
}

#[tokio::test]
async fn raw_exchanges_with_backend() {
    let b = spawn_backend("b1").await;
    let got = raw_exchange_open(
        b.addr,
        b"GET /name HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let got = String::from_utf8(got).unwrap();
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.ends_with("\r\n\r\nb1"), "{got}");

    let got = raw_exchange(b.addr, b"NOT HTTP AT ALL\r\n\r\n").await;
    assert!(
        got.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test]
async fn stopped_backend_refuses() {
    let b = spawn_backend("b1").await;
    let addr = b.addr;
    b.stop().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

/// A tiny TLS server answering `tls <method> <path>` to everything.
async fn tiny_tls_echo(cert: &str, key: &str) -> std::net::SocketAddr {
    let acceptor = tls_acceptor(cert, key);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let body = format!("tls {} {}", req.method(), req.uri().path());
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_against_tiny_tls_echo() {
    let (cert, key) = self_signed(&["localhost", "a.test"]);
    let addr = tiny_tls_echo(&cert, &key).await;
    let connector = tls_connector(&[&cert]);

    let (status, _, body) = https_get(addr, "a.test", &connector, "/hello").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "tls GET /hello");
    assert_eq!(
        tls_peer_cert(addr, "localhost", &connector).await,
        cert_der(&cert)
    );

    let (other, _) = self_signed(&["localhost"]);
    assert!(
        tls_connect(addr, "localhost", &tls_connector(&[&other]))
            .await
            .is_err()
    );
    assert!(tls_connect(addr, "b.test", &connector).await.is_err());
}

#[tokio::test]
async fn tls_backend_and_cert_files() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path, cert) = write_cert_files(dir.path(), "srv", &["wss.test"]);
    assert_eq!(std::fs::read_to_string(&cert_path).unwrap(), cert);
    let key = std::fs::read_to_string(&key_path).unwrap();

    let b = spawn_tls_backend("secure", tls_acceptor(&cert, &key)).await;
    let connector = tls_connector(&[&cert]);
    let (status, headers, body) = https_get(b.addr, "wss.test", &connector, "/name").await;
    assert_eq!((status, body), (StatusCode::OK, Bytes::from("secure")));
    assert_eq!(headers["x-backend"], "secure");

    let (mut ws, resp) = wss_connect(b.addr, "wss.test", &connector, "/ws").await;
    assert_eq!(resp.headers()["set-cookie"], "backend=secure; Path=/");
    ws.send(Message::text("over tls")).await.unwrap();
    assert_eq!(
        next_msg(&mut ws).await.unwrap().unwrap(),
        Message::text("over tls")
    );
    assert_eq!(b.last_headers()["host"], "wss.test");
}
