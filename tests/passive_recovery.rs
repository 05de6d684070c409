//! Active checks end a passive time out (issue 10, bug 7): a server that
//! passive checks took out for a long `fail_timeout` gets traffic again as
//! soon as the active checker has seen it healthy `rise` times, whether or
//! not the checker had seen it down.
//!
//! Real sockets on `127.0.0.1:0`; a backend is killed and started again on
//! its port. States are polled in bounded loops, never slept on.

mod support;

use std::net::SocketAddr;

use http::StatusCode;
use tokio::time::Instant;

use support::*;

/// Long enough that only a check can bring a server back within a test.
const LONG_FAIL_TIMEOUT: &str = "1h";

fn config(a: SocketAddr, b: SocketAddr, fall: u32) -> String {
    simple_config(
        &[a, b],
        &format!(
            "max_fails = 1\nfail_timeout = \"{LONG_FAIL_TIMEOUT}\"\n\
             [upstream.app.check]\ntype = \"http\"\npath = \"/health\"\n\
             interval = \"100ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = {fall}\n"
        ),
    )
}

/// `GET /name` through latch until `dead` has been attempted and taken out
/// by passive checks; each request is retried on the other server, so all
/// succeed.
async fn take_out_passively(lb: &Lb, dead: SocketAddr) {
    let b = lb_backend(lb, dead);
    for i in 0..10 {
        if b.condition.passive_down() {
            return;
        }
        let (status, _, _) = within("GET /name", http_get(lb.addr(), "localhost", "/name")).await;
        assert_eq!(status, StatusCode::OK, "request {i} (retried elsewhere)");
    }
    assert!(b.condition.passive_down(), "never taken out passively");
}

/// `n` sequential `GET /name`: how many the server named `name` answered.
async fn answered_by(lb: &Lb, name: &str, n: usize) -> usize {
    let mut count = 0;
    for _ in 0..n {
        let (status, headers, _) =
            within("GET /name", http_get(lb.addr(), "localhost", "/name")).await;
        assert_eq!(status, StatusCode::OK);
        count += usize::from(headers.get("x-backend").is_some_and(|v| v == name));
    }
    count
}

/// The case: killed, taken out by a failed request, seen down by
/// the checker, restarted. It is back after `rise` good probes, not after
/// `fail_timeout`.
#[tokio::test]
async fn a_check_flipping_a_server_up_ends_its_passive_time_out() {
    let a = spawn_named("a").await;
    let b = spawn_named("b").await;
    let lb = spawn_lb(&config(a.addr, b.addr, 2)).await;
    let dead = b.stop().await;
    take_out_passively(&lb, dead).await;
    let server = lb_backend(&lb, dead);
    wait_until("the checker sees b down", TIMEOUT, || {
        !server.condition.active_up()
    })
    .await;

    let b2 = spawn_named_at("b", dead).await;
    let restarted = Instant::now();
    wait_until("b usable again", TIMEOUT, || server.condition.usable()).await;
    let back = restarted.elapsed();
    assert!(
        b2.probes() >= 2,
        "back after {} probes; rise is 2",
        b2.probes()
    );
    assert!(!server.condition.passive_down());
    let to_b = answered_by(&lb, "b", 10).await;
    assert!(to_b >= 4, "b gets its share at once: {to_b} of 10");
    eprintln!("back {back:?} after the restart (fail_timeout {LONG_FAIL_TIMEOUT})");
}

/// Killed and restarted faster than the checker's `fall`: the checker never
/// saw it down, so there is no flip; `rise` good probes after the passive
/// out bring it back all the same.
#[tokio::test]
async fn rise_good_probes_end_a_passive_time_out_the_checker_never_saw() {
    let a = spawn_named("a").await;
    let b = spawn_named("b").await;
    // A fall this high never flips within the test.
    let lb = spawn_lb(&config(a.addr, b.addr, 1000)).await;
    let dead = b.stop().await;
    take_out_passively(&lb, dead).await;
    let server = lb_backend(&lb, dead);
    let b2 = spawn_named_at("b", dead).await;
    wait_until("b usable again", TIMEOUT, || server.condition.usable()).await;
    assert!(
        server.condition.active_up(),
        "the checker never saw it down"
    );
    assert!(
        b2.probes() >= 2,
        "back after {} probes; rise is 2",
        b2.probes()
    );
    let to_b = answered_by(&lb, "b", 10).await;
    assert!(to_b >= 4, "b gets its share at once: {to_b} of 10");
}
