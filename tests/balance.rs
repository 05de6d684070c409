//! Balancing over real backends, across instances where it matters:
//! `least_conn` spreading long-lived WebSockets by weight, `max_conns`
//! answering 503 with `Retry-After` when every server is full, backup servers
//! used only while no primary can take a request, and `balance = "hash"` on a
//! header, a query parameter or a cookie agreeing across two instances.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{HeaderMap, StatusCode};
use tokio_tungstenite::tungstenite::Error as WsError;

use support::sticky::*;
use support::*;

// === 6. least_conn over long-lived WebSockets ===

#[tokio::test]
async fn least_conn_spreads_websockets_by_weight() {
    let b = [
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
    ];
    let servers = server_list(&[
        entry(b[0].addr, "weight = 1"),
        entry(b[1].addr, "weight = 1"),
        entry(b[2].addr, "weight = 2"),
    ]);
    let lb = spawn_lb(&lb_config(&servers, "balance = \"least_conn\"", "")).await;
    let tunnels = |lb: &Lb| -> Vec<usize> { lb_backends(lb).iter().map(|b| b.tunnels()).collect() };

    let mut held: HashMap<String, Vec<Ws>> = HashMap::new();
    for _ in 0..60 {
        let (ws, name, _) = open_ws(lb.addr(), None).await;
        held.entry(name).or_default().push(ws);
    }
    let got = tunnels(&lb);
    for (i, want) in [15usize, 15, 30].into_iter().enumerate() {
        assert!(
            got[i].abs_diff(want) <= 1,
            "tunnels per backend {got:?}, want 15/15/30 (±1)"
        );
        assert_eq!(
            held.get(&b[i].name).map_or(0, Vec::len),
            got[i],
            "101s from {} vs latch's count",
            b[i].name
        );
    }

    // Close 10 of server a's: it is far below its share now and takes the next 10.
    let a_before = got[0];
    let a_socks = held.get_mut("a").expect("a holds sockets");
    let closing: Vec<Ws> = a_socks.drain(..10).collect();
    for ws in closing {
        close_ws(ws).await;
    }
    wait_until(
        "server a's tunnel count drops by 10",
        Duration::from_secs(5),
        || lb_backend(&lb, b[0].addr).tunnels() == a_before - 10,
    )
    .await;
    for i in 0..10 {
        let (ws, name, _) = open_ws(lb.addr(), None).await;
        assert_eq!(
            name,
            "a",
            "new socket {i} after closing 10 on a; tunnels {:?}",
            tunnels(&lb)
        );
        held.entry(name).or_default().push(ws);
    }
    assert_eq!(tunnels(&lb), got);

    for (_, socks) in held {
        for ws in socks {
            close_ws(ws).await;
        }
    }
    wait_all_idle(&lb).await;
}

// === 7. max_conns ===

#[tokio::test]
async fn max_conns_full_gives_503_with_retry_after() {
    let b = [spawn_backend("web0").await, spawn_backend("web1").await];
    let servers = server_list(&[
        entry(b[0].addr, "max_conns = 2"),
        entry(b[1].addr, "max_conns = 2"),
    ]);
    let lb = spawn_lb(&lb_config(&servers, "", "")).await;

    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(open_ws(lb.addr(), None).await);
    }
    let mut names: Vec<&str> = held.iter().map(|(_, n, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(names, ["web0", "web0", "web1", "web1"]);
    assert_eq!(counts(&lb), [(0, 2), (0, 2)]);
    let hits = b[0].hits() + b[1].hits();

    // Fifth request, plain and as an upgrade: 503 with Retry-After, no backend asked.
    let (status, h, body) = get(lb.addr(), "/name", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body:?}");
    assert!(
        h.contains_key(RETRY_AFTER),
        "503 without Retry-After: {h:?}"
    );
    match within(
        "refused upgrade",
        try_ws_connect_with(lb.addr(), "localhost", "/ws", &[]),
    )
    .await
    {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(resp.headers().contains_key(RETRY_AFTER));
        }
        Err(e) => panic!("fifth upgrade: unexpected error {e}"),
        Ok((_, resp)) => panic!("fifth upgrade went through: {resp:?}"),
    }
    assert_eq!(b[0].hits() + b[1].hits(), hits, "a full backend was asked");

    // Close one: the next request succeeds, on the server that has room.
    let (ws, freed, _) = held.remove(0);
    close_ws(ws).await;
    wait_until("a slot frees up", Duration::from_secs(5), || {
        lb_backends(&lb).iter().map(|b| b.load()).sum::<usize>() == 3
    })
    .await;
    for _ in 0..3 {
        let (name, _) = get_ok(lb.addr(), "/name", None).await;
        assert_eq!(name, freed);
    }
    let (ws, name, _) = open_ws(lb.addr(), None).await;
    assert_eq!(name, freed);
    held.push((ws, name, HeaderMap::new()));
    assert_eq!(
        get(lb.addr(), "/name", &[]).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    for (ws, _, _) in held {
        close_ws(ws).await;
    }
    wait_all_idle(&lb).await;
    for be in lb_backends(&lb) {
        assert_eq!(be.load(), 0, "{} still loaded", be.addr);
    }
    assert_eq!(get(lb.addr(), "/name", &[]).await.0, StatusCode::OK);
}

// === 8. backup servers ===

#[tokio::test]
async fn backup_serves_only_while_no_primary_can() {
    let p = [spawn_backend("p0").await, spawn_backend("p1").await];
    let backup = spawn_backend("backup").await;
    let servers = server_list(&[
        entry(p[0].addr, "max_conns = 1"),
        entry(backup.addr, "backup = true"),
        entry(p[1].addr, "max_conns = 1"),
    ]);
    let lb = spawn_lb(&lb_config(&servers, "", "")).await;

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..20 {
        *seen
            .entry(get_ok(lb.addr(), "/name", None).await.0)
            .or_default() += 1;
    }
    assert_eq!(
        backup.hits(),
        0,
        "backup used while primaries had room: {seen:?}"
    );
    assert_eq!(seen.len(), 2, "both primaries used: {seen:?}");

    // Fill both primaries.
    let (ws0, n0, _) = open_ws(lb.addr(), None).await;
    let (ws1, n1, _) = open_ws(lb.addr(), None).await;
    let mut filled = [n0.clone(), n1.clone()];
    filled.sort();
    assert_eq!(filled, ["p0", "p1"], "the two sockets fill the primaries");
    for i in 0..3 {
        assert_eq!(
            get_ok(lb.addr(), "/name", None).await.0,
            "backup",
            "request {i} with both primaries full"
        );
    }
    // A socket can go to the backup as well.
    let (mut wsb, nb, _) = open_ws(lb.addr(), None).await;
    assert_eq!(nb, "backup");
    ws_roundtrip(&mut wsb, "via backup").await;
    close_ws(wsb).await;

    close_ws(ws0).await;
    close_ws(ws1).await;
    wait_all_idle(&lb).await;
    let backup_hits = backup.hits();
    for i in 0..10 {
        let name = get_ok(lb.addr(), "/name", None).await.0;
        assert_ne!(name, "backup", "request {i} after the primaries freed up");
    }
    assert_eq!(backup.hits(), backup_hits);
}

// === 9. balance = "hash" ===

/// The backend `/name?..` reaches with `headers`, over `conn`.
async fn name_via(conn: &mut HttpConn, path: &str, headers: &[(&str, &str)]) -> String {
    let (status, h, body) = within(
        &format!("GET {path}"),
        conn.request(get_request(path, headers)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "GET {path} {headers:?}: {body:?}");
    assert!(latch_set_cookies(&h).is_empty(), "hash mode set a cookie");
    String::from_utf8_lossy(&body).into_owned()
}

/// Runs the hash scenario; `req(u)` gives path and headers for user `u`.
async fn hash_scenario<F>(hash_key: &str, req: F)
where
    F: Fn(&str) -> (String, Vec<(String, String)>),
{
    let b = [
        spawn_backend("web0").await,
        spawn_backend("web1").await,
        spawn_backend("web2").await,
    ];
    let cfg = lb_config(
        &plain(&[&b[0], &b[1], &b[2]]),
        &format!("balance = \"hash\"\nhash_key = \"{hash_key}\""),
        "",
    );
    let (lb_a, lb_b) = (spawn_lb(&cfg).await, spawn_lb(&cfg).await);
    let mut conns = [
        HttpConn::connect(lb_a.addr()).await,
        HttpConn::connect(lb_b.addr()).await,
    ];
    let mut ask = async |inst: usize, user: &str| {
        let (path, headers) = req(user);
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        name_via(&mut conns[inst], &path, &headers).await
    };

    // A few users, 50 requests each, alternating instances: one backend each.
    for u in 0..5 {
        let user = format!("user-{u}");
        let first = ask(0, &user).await;
        for j in 1..50 {
            let got = ask(j % 2, &user).await;
            assert_eq!(got, first, "{hash_key}: {user} request {j} moved");
        }
    }
    // 100 users, once on each instance: the instances agree, all backends used.
    let mut per_backend: BTreeMap<String, usize> = BTreeMap::new();
    for u in 0..100 {
        let user = format!("u{u}@example.com");
        let on_a = ask(0, &user).await;
        let on_b = ask(1, &user).await;
        assert_eq!(on_a, on_b, "{hash_key}: instances disagree on {user}");
        *per_backend.entry(on_a).or_default() += 1;
    }
    for name in ["web0", "web1", "web2"] {
        let n = per_backend.get(name).copied().unwrap_or(0);
        assert!(
            n >= 10,
            "{hash_key}: only {n} of 100 users on {name}: {per_backend:?}"
        );
    }
}

#[tokio::test]
async fn hash_on_header_pins_users_across_instances() {
    hash_scenario("header:X-User", |u| {
        ("/name".into(), vec![("x-user".into(), u.to_string())])
    })
    .await;
}

#[tokio::test]
async fn hash_on_query_parameter_pins_sessions_across_instances() {
    hash_scenario("query:sid", |u| {
        (format!("/name?EIO=4&sid={u}&t=1"), vec![])
    })
    .await;
}

#[tokio::test]
async fn hash_on_cookie_pins_sessions_across_instances() {
    hash_scenario("cookie:sess", |u| {
        (
            "/name".into(),
            vec![("cookie".into(), format!("a=1; sess={u}"))],
        )
    })
    .await;
}
