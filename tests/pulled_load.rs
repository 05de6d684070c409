//! Load pulled from the servers (issue 11 §4): latch polls `[upstream.NAME.load]`
//! and balances on the larger of its own count and the server's report, so
//! instances that each see only their own share still avoid a server that
//! is busy with sessions from elsewhere. A failed poll falls back to the own
//! count and never marks the server down. Real sockets: two latch instances,
//! backends holding real WebSocket sessions and reporting them over HTTP.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::dns::status_json;
use support::faults::wait_until;
use support::lb::{Lb, spawn_lb};
use support::load_backend::{
    LoadAnswer, LoadBackend, spawn_load_backend, status_server, wait_reported, wait_status,
};
use support::ws_client::ws_connect;

fn config(balance: &str, backends: &[&LoadBackend], load: &str) -> String {
    let servers: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ id = \"{}\", addr = \"{}\" }}", b.name, b.addr))
        .collect();
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[[listener]]
bind = "127.0.0.1:0"
upstream = "chat"

[upstream.chat]
balance = "{balance}"
servers = [{}]
{load}
"#,
        servers.join(", ")
    )
}

const POLLED: &str = "[upstream.chat.load]\ninterval = \"50ms\"\ntimeout = \"1s\"\n";

/// Opens one session through `lb`; the name of the backend that took it.
async fn open(
    lb: SocketAddr,
    held: &mut Vec<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>>,
) -> String {
    let (ws, resp) = ws_connect(lb, "/ws").await;
    held.push(ws);
    resp.headers()["x-backend"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn two_instances_avoid_a_server_busy_from_elsewhere_until_the_others_catch_up() {
    let a = spawn_load_backend("a", LoadAnswer::Sessions { elsewhere: 0 }).await;
    let busy = spawn_load_backend("busy", LoadAnswer::Sessions { elsewhere: 100 }).await;
    let c = spawn_load_backend("c", LoadAnswer::Sessions { elsewhere: 0 }).await;
    let text = config("least_conn", &[&a, &busy, &c], POLLED);
    let lbs: [Lb; 2] = [spawn_lb(&text).await, spawn_lb(&text).await];
    for lb in &lbs {
        let admin = lb.handle.admin_addr().expect("admin listener");
        wait_reported(admin, "chat", "busy", Some(100)).await;
    }
    let mut held = Vec::new();
    let mut busy_first: Option<(usize, usize)> = None;
    // Alternate between the two instances, as DNS round-robin would.
    for n in 0..240 {
        if n % 10 == 0 {
            fresh_reports(&lbs, &[&a, &busy, &c], n).await;
        }
        let lb = lbs[n % 2].addr();
        let got = open(lb, &mut held).await;
        if got == "busy" && busy_first.is_none() {
            // Sessions only grow here, so a report is never above the
            // truth: latch can only prefer `busy` once a and c are as loaded.
            busy_first = Some((a.sessions(), c.sessions()));
        }
    }
    let (a_at, c_at) = busy_first.expect("busy took no session after the others caught up");
    assert!(
        a_at >= 99 && c_at >= 99,
        "busy (100 from elsewhere) took a session while a had {a_at} and c {c_at}"
    );
    wait_until(
        "all 240 sessions counted by the backends",
        Duration::from_secs(10),
        || a.sessions() + busy.sessions() + c.sessions() == 240,
    )
    .await;
    // The 40 past 200 spread over all three: none is far ahead.
    let loads = [a.sessions(), busy.sessions() + 100, c.sessions()];
    let spread = loads.iter().max().unwrap() - loads.iter().min().unwrap();
    assert!(spread <= 12, "true loads {loads:?} after catching up");
}

/// Waits until every instance holds a report of every backend's current
/// sessions (the backends report them as they are; polls run every 50 ms).
async fn fresh_reports(lbs: &[Lb], backends: &[&LoadBackend], open: usize) {
    wait_until(
        "backends counted every session",
        Duration::from_secs(10),
        || backends.iter().map(|b| b.sessions()).sum::<usize>() == open,
    )
    .await;
    for lb in lbs {
        let admin = lb.handle.admin_addr().expect("admin listener");
        wait_status(admin, "reports of the current sessions", |s| {
            backends.iter().all(|b| {
                let extra = if b.name == "busy" { 100 } else { 0 };
                status_server(s, "chat", &b.name)["reported_load"].as_u64()
                    == Some((b.sessions() + extra) as u64)
            })
        })
        .await;
    }
}

#[tokio::test]
async fn random_two_choices_use_the_reported_load_too() {
    let a = spawn_load_backend("a", LoadAnswer::Sessions { elsewhere: 0 }).await;
    let busy = spawn_load_backend("busy", LoadAnswer::Sessions { elsewhere: 1000 }).await;
    let lb = spawn_lb(&config("random", &[&a, &busy], POLLED)).await;
    let admin = lb.handle.admin_addr().expect("admin listener");
    wait_reported(admin, "chat", "busy", Some(1000)).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        // With two servers both are drawn each time; the lighter wins.
        assert_eq!(open(lb.addr(), &mut held).await, "a");
    }
}

#[tokio::test]
async fn a_failed_or_bad_poll_falls_back_to_the_own_count_and_never_marks_down() {
    let a = spawn_load_backend("a", LoadAnswer::Sessions { elsewhere: 0 }).await;
    let b = spawn_load_backend("b", LoadAnswer::Sessions { elsewhere: 500 }).await;
    let lb = spawn_lb(&config("least_conn", &[&a, &b], POLLED)).await;
    let admin = lb.handle.admin_addr().expect("admin listener");
    wait_reported(admin, "chat", "b", Some(500)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        assert_eq!(open(lb.addr(), &mut held).await, "a");
    }

    for bad in [
        LoadAnswer::Fixed(500, "500\n".into()),
        LoadAnswer::Fixed(200, "lots".into()),
        LoadAnswer::Fixed(200, r#"{"load": -1}"#.into()),
        LoadAnswer::Fixed(200, "9".repeat(10_000)),
    ] {
        b.set_answer(bad.clone());
        let polls = b.polls();
        wait_status(admin, &format!("b's report dropped after {bad:?}"), |s| {
            status_server(s, "chat", "b")["reported_load"].is_null()
        })
        .await;
        // Polled again, still unreadable: still no report, still up.
        wait_until("b polled again", Duration::from_secs(5), || {
            b.polls() > polls + 1
        })
        .await;
        let status = status_json(admin).await;
        let view = status_server(&status, "chat", "b");
        assert!(view["reported_load"].is_null(), "{view}");
        assert_eq!(view["state"], "up", "a bad poll marked b down: {view}");
    }
    // Own counts now: a holds 3 sessions, b none, so b takes the next ones.
    assert_eq!(open(lb.addr(), &mut held).await, "b");

    // b stops answering at all: the same fallback, and it stays up.
    drop(held);
    let addr = b.addr;
    drop(b);
    wait_status(admin, "b's report dropped after it went away", |s| {
        status_server(s, "chat", "b")["reported_load"].is_null()
    })
    .await;
    let status = status_json(admin).await;
    assert_eq!(status_server(&status, "chat", "b")["state"], "up", "{addr}");
}
