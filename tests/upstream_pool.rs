//! latch's own upstream connection pool: keep-alive connections to a server
//! are reused request after request, one the server closed is never used,
//! and a reload keeps the pooled connections of the servers that stay.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::StatusCode;
use support::*;

/// `n` requests, one after another, on one client connection.
async fn sequential(lb: &Lb, n: usize) {
    let mut client = HttpConn::connect(lb.addr()).await;
    for i in 0..n {
        let (status, _, body) = client.get("app.test", "/").await;
        assert_eq!(status, StatusCode::OK, "request {i}");
        assert_eq!(&body[..], b"ok");
    }
}

#[tokio::test]
async fn requests_reuse_one_pooled_connection() {
    let backend = spawn_keepalive(Duration::from_secs(60)).await;
    let lb = spawn_lb(&simple_config(&[backend.addr], "")).await;
    sequential(&lb, 20).await;
    // A second client's requests, after the first one's, reuse it too.
    sequential(&lb, 5).await;
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 1);
    let b = lb_backend(&lb, backend.addr);
    assert_eq!(b.idle.len(), 1);
    assert_eq!(
        b.connections_opened(),
        1,
        "latch's count of opened connections"
    );
}

#[tokio::test]
async fn a_pooled_connection_the_server_closed_is_not_used() {
    let backend = spawn_keepalive(Duration::from_millis(100)).await;
    let lb = spawn_lb(&simple_config(&[backend.addr], "max_fails = 1")).await;
    for round in 1..=3 {
        sequential(&lb, 2).await;
        // The backend closes the idle connection; the next request must go
        // on a new one, not fail on the closed one.
        wait_until("the backend closed its idle connection", TIMEOUT, || {
            backend.closed.load(Ordering::SeqCst) == round
        })
        .await;
    }
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 3);
    let b = lb_backend(&lb, backend.addr);
    assert_eq!(b.connections_opened(), 3);
    assert!(
        b.condition.usable(),
        "a closed idle connection counted as a failure"
    );
}

#[tokio::test]
async fn reload_keeps_the_pooled_connections_of_servers_that_stay() {
    let stays = spawn_keepalive(Duration::from_secs(60)).await;
    let joins = spawn_keepalive(Duration::from_secs(60)).await;
    let lb = spawn_lb(&simple_config(&[stays.addr], "")).await;
    sequential(&lb, 3).await;
    assert_eq!(stays.accepted.load(Ordering::SeqCst), 1);

    let toml = simple_config(&[stays.addr, joins.addr], "balance = \"least_conn\"");
    let origin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test.toml");
    lb.handle
        .reload(latch::Config::parse(&toml, &origin).unwrap())
        .expect("reload");
    assert_eq!(
        lb_backend(&lb, stays.addr).idle.len(),
        1,
        "pool emptied by the reload"
    );
    sequential(&lb, 6).await;
    assert_eq!(
        stays.accepted.load(Ordering::SeqCst),
        1,
        "the server that stayed saw a new connection after the reload"
    );
    assert!(
        joins.accepted.load(Ordering::SeqCst) >= 1,
        "the new server got nothing"
    );
}

/// The server closes a pooled connection just as a request goes out on it
/// (its keep-alive timer fired): the request, a POST with a body included,
/// is sent again on a new connection to the same server, and the failure
/// is not held against the server.
#[tokio::test]
async fn a_request_lost_to_a_closing_pooled_connection_is_sent_again() {
    let backend = spawn_keepalive_limited(Duration::from_secs(60), 1).await;
    let lb = spawn_lb(&simple_config(&[backend.addr], "max_fails = 1")).await;
    let mut client = HttpConn::connect(lb.addr()).await;
    for i in 0..4 {
        let req = http::Request::post("/")
            .header("host", "app.test")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"data",
            )))
            .unwrap();
        let (status, _, body) = client.request(req).await;
        assert_eq!(
            (status, &body[..]),
            (StatusCode::OK, &b"ok"[..]),
            "request {i}"
        );
    }
    // Each request after the first met a connection that closed on it.
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 4);
    assert!(lb_backend(&lb, backend.addr).condition.usable());
}

/// Three requests at once, each holding its backend connection for a
/// moment (a body streamed over 300 ms), so each needs its own.
async fn three_at_once(lb: &Lb) {
    let addr = lb.addr();
    let clients: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = HttpConn::connect(addr).await;
                let (status, _, body) = client.get("app.test", "/slow-stream?ms=300").await;
                assert_eq!((status, &body[..]), (StatusCode::OK, &b"first\nlast\n"[..]));
            })
        })
        .collect();
    for c in clients {
        c.await.expect("client task");
    }
}

#[tokio::test]
async fn a_pool_too_small_for_the_load_closes_and_reopens_connections() {
    let backend = spawn_backend("a").await;
    let small = format!(
        "[server]\npool_max_idle = 1\n{}",
        simple_config(&[backend.addr], "")
    );
    let lb = spawn_lb(&small).await;
    let b = lb_backend(&lb, backend.addr);
    three_at_once(&lb).await;
    assert_eq!(b.connections_opened(), 3);
    assert_eq!(b.idle.len(), 1, "two of the three closed as they came back");
    three_at_once(&lb).await;
    assert_eq!(b.connections_opened(), 5, "two opened again");

    // The default pool keeps all three.
    let lb = spawn_lb(&simple_config(&[backend.addr], "")).await;
    let b = lb_backend(&lb, backend.addr);
    three_at_once(&lb).await;
    three_at_once(&lb).await;
    assert_eq!(b.connections_opened(), 3);
    assert_eq!(b.idle.len(), 3);
}
