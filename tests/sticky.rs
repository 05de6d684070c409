//! Sticky sessions and selection policy through real sockets: signed cookies
//! shared by two latch instances, the cookie kept away from backends, ip_hash
//! from distinct source addresses, tampered / foreign / expired cookies and
//! cookies naming a removed backend, and stickiness of WebSocket upgrades.
//! Balancing (least_conn over tunnels, `max_conns`, backups, `balance =
//! "hash"`) is in `balance.rs`; the helpers both use in `support/sticky.rs`.
//!
//! Everything runs on `127.0.0.1:0` with the mock backends of `support`;
//! waits are bounded, and counters are polled in bounded loops.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http::header::{COOKIE, SET_COOKIE};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;
use tokio::task::JoinSet;

use support::sticky::*;
use support::*;

const SECRET: &str = "0123456789abcdef0123";
const OTHER_SECRET: &str = "another-secret-0123456789";

// === HTTP from a chosen source address ===

/// `GET path` with `Host: localhost` to `to`, on a connection bound to `src`.
async fn get_from(src: IpAddr, to: SocketAddr, path: &str) -> Result<Got, BoxError> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(src, 0))?;
    let stream = tokio::time::timeout(TIMEOUT, sock.connect(to))
        .await
        .map_err(|_| format!("connect {src} → {to}: timed out"))??;
    let (mut sender, conn) = tokio::time::timeout(
        TIMEOUT,
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| "http1 handshake timed out")??;
    tokio::spawn(conn);
    let resp = tokio::time::timeout(TIMEOUT, sender.send_request(get_request(path, &[])))
        .await
        .map_err(|_| format!("GET {path} from {src}: no response head in time"))??;
    let (parts, body) = resp.into_parts();
    Ok((parts.status, parts.headers, read_body(body).await?))
}

// === 1. cookie stickiness across two instances ===

/// One client: `n` requests to `/name`, alternating instances (starting with
/// `first`), the first without cookie, the rest with the cookie it got.
/// Returns the backend it saw.
async fn cookie_client(lbs: [SocketAddr; 2], first: usize, n: usize) -> Result<String, String> {
    let mut conns = [
        HttpConn::connect(lbs[0]).await,
        HttpConn::connect(lbs[1]).await,
    ];
    let mut pin: Option<String> = None;
    let mut seen: Option<String> = None;
    for j in 0..n {
        let inst = (first + j) % 2;
        let c = pin.as_deref().map(cookie_header);
        let headers: Vec<(&str, &str)> = c.iter().map(|c| ("cookie", c.as_str())).collect();
        let (status, h, body) = conns[inst]
            .try_request(get_request("/name", &headers))
            .await
            .map_err(|e| format!("request {j} via instance {inst}: {e}"))?;
        if status != StatusCode::OK {
            return Err(format!("request {j}: status {status}, body {body:?}"));
        }
        let name = String::from_utf8_lossy(&body).into_owned();
        let set = try_pin_of(&h).map_err(|e| format!("request {j}: {e}"))?;
        match (j, set) {
            (0, Some(v)) => pin = Some(v),
            (0, None) => return Err("first request (no cookie) got no LATCH Set-Cookie".into()),
            (_, Some(v)) => {
                return Err(format!(
                    "request {j} via instance {inst} carried a valid cookie but was re-pinned to {name} with {v}"
                ));
            }
            (_, None) => {}
        }
        match &seen {
            None => seen = Some(name),
            Some(s) if *s != name => {
                return Err(format!(
                    "request {j} via instance {inst} reached {name}, earlier ones reached {s}"
                ));
            }
            Some(_) => {}
        }
    }
    seen.ok_or_else(|| "no request made".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cookie_pins_every_client_across_two_instances() {
    let b = [
        spawn_backend("web0").await,
        spawn_backend("web1").await,
        spawn_backend("web2").await,
    ];
    let cfg = cookie_config(&[&b[0], &b[1], &b[2]], SECRET, "");
    let (lb_a, lb_b) = (spawn_lb(&cfg).await, spawn_lb(&cfg).await);
    let lbs = [lb_a.addr(), lb_b.addr()];

    let mut per_backend: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    within_for(
        Duration::from_secs(20),
        "200 cookie clients × 20 requests",
        async {
            for batch in 0..4 {
                let mut set = JoinSet::new();
                for k in batch * 50..(batch + 1) * 50 {
                    set.spawn(async move { (k, cookie_client(lbs, k % 2, 20).await) });
                }
                while let Some(joined) = set.join_next().await {
                    match joined.expect("client task panicked") {
                        (_, Ok(name)) => *per_backend.entry(name).or_default() += 1,
                        (k, Err(e)) => failures.push(format!("client {k}: {e}")),
                    }
                }
            }
        },
    )
    .await;
    assert!(
        failures.is_empty(),
        "{} of 200 clients were not sticky, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(per_backend.values().sum::<usize>(), 200, "{per_backend:?}");
    for name in ["web0", "web1", "web2"] {
        let n = per_backend.get(name).copied().unwrap_or(0);
        assert!(
            n >= 40,
            "only {n} of 200 clients on {name}: {per_backend:?}"
        );
    }
}

#[tokio::test]
async fn long_poll_response_sets_the_cookie() {
    let b = [spawn_backend("web0").await, spawn_backend("web1").await];
    let lb = spawn_lb(&cookie_config(&[&b[0], &b[1]], SECRET, "")).await;
    let (status, h, body) = get(lb.addr(), "/slow-stream?ms=100", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"first\nlast\n");
    let pin = must_pin(&h, "streamed long-poll answer");
    let name = backend_of(&h);
    // The next poll with the cookie lands on the same server, without a new cookie.
    let (status, h, _) = get(
        lb.addr(),
        "/slow-stream?ms=20",
        &[("cookie", &cookie_header(&pin))],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(backend_of(&h), name);
    assert_eq!(pin_of(&h), None, "a valid cookie must not be set again");
}

#[tokio::test]
async fn latch_cookie_is_removed_before_the_backend_unless_keep_cookie() {
    let b = [spawn_backend("web0").await, spawn_backend("web1").await];
    let lb = spawn_lb(&cookie_config(&[&b[0], &b[1]], SECRET, "")).await;
    let (name, pin) = get_ok(lb.addr(), "/name", None).await;
    let pin = pin.expect("first request pins");
    let latch_cookie = cookie_header(&pin);

    // Same header, latch's cookie first or last.
    for both in [
        format!("{latch_cookie}; other=1"),
        format!("other=1; {latch_cookie}"),
    ] {
        let (status, h, body) = get(lb.addr(), "/echo", &[("cookie", &both)]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(backend_of(&h), name, "pinned backend serves /echo");
        assert_eq!(pin_of(&h), None);
        let echo = parse_echo(&body);
        assert_eq!(
            echo.header_all("cookie"),
            ["other=1"],
            "backend must see only the other cookie (sent {both:?})"
        );
    }
    // Separate Cookie headers: only latch's disappears.
    let (status, h, body) = get(
        lb.addr(),
        "/echo",
        &[("cookie", "other=1"), ("cookie", &latch_cookie)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(backend_of(&h), name);
    let echo = parse_echo(&body);
    assert_eq!(echo.header_all("cookie"), ["other=1"]);
    // Only latch's cookie: no Cookie header at all reaches the backend.
    let (_, _, body) = get(lb.addr(), "/echo", &[("cookie", &latch_cookie)]).await;
    let echo = parse_echo(&body);
    assert!(
        echo.header_all("cookie").is_empty(),
        "{:?}",
        echo.header_all("cookie")
    );
    // Also gone when the cookie was invalid (re-pinned request).
    let (_, h, body) = get(lb.addr(), "/echo", &[("cookie", "LATCH=nonsense; other=1")]).await;
    assert!(pin_of(&h).is_some());
    assert_eq!(parse_echo(&body).header_all("cookie"), ["other=1"]);

    // keep_cookie = true: the backend gets the header unchanged.
    let kept = spawn_lb(&cookie_config(
        &[&b[0], &b[1]],
        SECRET,
        "keep_cookie = true",
    ))
    .await;
    let both = format!("{latch_cookie}; other=1");
    let (status, h, body) = get(kept.addr(), "/echo", &[("cookie", &both)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(backend_of(&h), name, "same secret, same servers: same pin");
    assert_eq!(pin_of(&h), None);
    assert_eq!(parse_echo(&body).header_all("cookie"), [both.as_str()]);
}

// === 2. ip_hash from many source addresses ===

/// Client `k` (source 127.0.0.(k+2)) sends `n` requests to `/echo`,
/// alternating instances; returns the backend it always reached.
async fn ip_client(lbs: [SocketAddr; 2], k: usize, n: usize) -> Result<String, String> {
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, (k + 2) as u8));
    let mut seen: Option<String> = None;
    for j in 0..n {
        let inst = (k + j) % 2;
        let (status, h, body) = get_from(ip, lbs[inst], "/echo")
            .await
            .map_err(|e| format!("{ip} request {j}: {e}"))?;
        if status != StatusCode::OK {
            return Err(format!("{ip} request {j}: status {status}"));
        }
        // The backend saw the request come from this client's address.
        let echo = parse_echo(&body);
        let xff = echo.header("x-forwarded-for").unwrap_or_default();
        if xff != ip.to_string() {
            return Err(format!("{ip} request {j}: X-Forwarded-For {xff:?}"));
        }
        if let Some(c) = latch_set_cookies(&h).first() {
            return Err(format!("ip_hash must not set a cookie: {c}"));
        }
        let name = backend_of(&h);
        match &seen {
            None => seen = Some(name),
            Some(s) if *s != name => {
                return Err(format!(
                    "{ip} request {j} via instance {inst} reached {name}, earlier ones {s}"
                ));
            }
            Some(_) => {}
        }
    }
    seen.ok_or_else(|| "no request made".into())
}

async fn ip_hash_scenario(upstream: &str, sticky: &str) {
    let b = [
        spawn_backend("web0").await,
        spawn_backend("web1").await,
        spawn_backend("web2").await,
    ];
    let cfg = lb_config(&plain(&[&b[0], &b[1], &b[2]]), upstream, sticky);
    let (lb_a, lb_b) = (spawn_lb(&cfg).await, spawn_lb(&cfg).await);
    let lbs = [lb_a.addr(), lb_b.addr()];

    let mut per_backend: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    within_for(
        Duration::from_secs(20),
        "200 source addresses × 10 requests",
        async {
            for batch in 0..4 {
                let mut set = JoinSet::new();
                for k in batch * 50..(batch + 1) * 50 {
                    set.spawn(async move { (k, ip_client(lbs, k, 10).await) });
                }
                while let Some(joined) = set.join_next().await {
                    match joined.expect("client task panicked") {
                        (_, Ok(name)) => *per_backend.entry(name).or_default() += 1,
                        (k, Err(e)) => failures.push(format!("client {k}: {e}")),
                    }
                }
            }
        },
    )
    .await;
    assert!(
        failures.is_empty(),
        "{} of 200 source addresses were not pinned, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(per_backend.values().sum::<usize>(), 200);
    for name in ["web0", "web1", "web2"] {
        let n = per_backend.get(name).copied().unwrap_or(0);
        assert!(
            n >= 30,
            "only {n} of 200 addresses on {name}: {per_backend:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ip_hash_balance_pins_source_addresses_across_instances() {
    ip_hash_scenario("balance = \"ip_hash\"", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sticky_ip_hash_mode_pins_source_addresses_across_instances() {
    ip_hash_scenario("balance = \"round_robin\"", "mode = \"ip_hash\"").await;
}

// === 3. bad cookies are ignored and replaced ===

/// A request with cookie value `bad` is served and re-pinned: the response
/// sets a different, valid cookie that then sticks without being set again.
async fn assert_repinned(addr: SocketAddr, bad: &str, what: &str) -> (String, String) {
    let (status, h, body) = get(addr, "/name", &[("cookie", &cookie_header(bad))]).await;
    assert_eq!(status, StatusCode::OK, "{what}: {body:?}");
    let name = backend_of(&h);
    let fresh = must_pin(&h, what);
    assert_ne!(fresh, bad, "{what}: the rejected value was set again");
    let (again, set) = get_ok(addr, "/name", Some(&fresh)).await;
    assert_eq!(
        again, name,
        "{what}: the fresh cookie names the serving backend"
    );
    assert_eq!(set, None, "{what}: the fresh cookie is accepted as valid");
    (name, fresh)
}

/// `value` with the hex digit at `i` replaced by another lower-case hex digit.
fn flip(value: &str, i: usize) -> String {
    let mut b = value.as_bytes().to_vec();
    b[i] = if b[i] == b'0' { b'1' } else { b'0' };
    String::from_utf8(b).expect("ascii")
}

#[tokio::test]
async fn tampered_garbage_and_foreign_cookies_are_repinned() {
    let b = [
        spawn_backend("web0").await,
        spawn_backend("web1").await,
        spawn_backend("web2").await,
    ];
    let backends = [&b[0], &b[1], &b[2]];
    let lb = spawn_lb(&cookie_config(&backends, SECRET, "")).await;
    let foreign = spawn_lb(&cookie_config(&backends, OTHER_SECRET, "")).await;

    let (name, good) = get_ok(lb.addr(), "/name", None).await;
    let good = good.expect("first request pins");
    // Control: the genuine value sticks.
    assert_eq!(get_ok(lb.addr(), "/name", Some(&good)).await, (name, None));

    let fields: Vec<&str> = good.split('.').collect();
    assert_eq!(fields.len(), 4, "cookie value {good:?}");
    let token_at = 2; // first digit of the backend token
    let issued_at = 2 + fields[1].len() + 1;
    let mac_at = good.len() - 1;
    for (i, part) in [
        (token_at, "token"),
        (issued_at, "issue time"),
        (mac_at, "mac"),
    ] {
        assert_repinned(lb.addr(), &flip(&good, i), &format!("flipped {part}")).await;
    }
    assert_repinned(lb.addr(), &good.to_uppercase(), "upper-cased").await;
    assert_repinned(lb.addr(), &good[..good.len() - 1], "truncated").await;
    assert_repinned(lb.addr(), "nonsense", "LATCH=nonsense").await;
    assert_repinned(lb.addr(), "", "empty LATCH=").await;

    // Signed with another secret: authentic for `foreign`, forged for `lb`.
    let (_, other) = get_ok(foreign.addr(), "/name", None).await;
    let other = other.expect("foreign instance pins");
    assert_eq!(
        get_ok(foreign.addr(), "/name", Some(&other)).await.1,
        None,
        "valid where it was issued"
    );
    assert_repinned(lb.addr(), &other, "cookie signed with another secret").await;
}

#[tokio::test]
async fn expired_and_future_cookies_are_repinned() {
    let b = [spawn_backend("web0").await, spawn_backend("web1").await];
    let servers = server_list(&[
        entry(b[0].addr, "id = \"s0\""),
        entry(b[1].addr, "id = \"s1\""),
    ]);
    let lb = spawn_lb(&lb_config(
        &servers,
        "balance = \"round_robin\"",
        &cookie_sticky(SECRET, "max_age = \"1h\""),
    ))
    .await;

    // latch's own cookie carries the lifetime, and our encoder reproduces it
    // byte for byte (so the forged values below differ only where intended).
    let (status, h, _) = get(lb.addr(), "/name", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let sets = latch_set_cookies(&h);
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert!(sets[0].contains("Max-Age=3600"), "{}", sets[0]);
    let value = sets[0]["LATCH=".len()..].split(';').next().unwrap();
    let issued = u64::from_str_radix(value.split('.').nth(2).unwrap(), 16).unwrap();
    let id = if backend_of(&h) == "web0" { "s0" } else { "s1" };
    assert_eq!(forge_cookie(SECRET, "LATCH", id, issued), value);

    let now = unix_now();
    let cookie = |id: &str, issued: u64| cookie_header(&forge_cookie(SECRET, "LATCH", id, issued));
    // Ten minutes old, pinned to s1 → honoured, both ways round.
    for (id, name) in [("s1", "web1"), ("s0", "web0")] {
        let (status, h, _) = get(lb.addr(), "/name", &[("cookie", &cookie(id, now - 600))]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(backend_of(&h), name, "fresh cookie for {id}");
        assert!(latch_set_cookies(&h).is_empty(), "fresh cookie re-set");
    }
    // Two hours old (max_age 1h), or an hour in the future → re-pinned.
    for (issued, what) in [
        (now - 7200, "expired"),
        (now + 3600, "issued in the future"),
    ] {
        let (status, h, _) = get(lb.addr(), "/name", &[("cookie", &cookie("s1", issued))]).await;
        assert_eq!(status, StatusCode::OK);
        let sets = latch_set_cookies(&h);
        assert_eq!(
            sets.len(),
            1,
            "{what}: want a fresh Set-Cookie, got {sets:?}"
        );
        let fresh = sets[0]["LATCH=".len()..].split(';').next().unwrap();
        let (again, set) = get_ok_raw(lb.addr(), fresh).await;
        assert_eq!(again, backend_of(&h), "{what}: fresh cookie sticks");
        assert!(set.is_empty(), "{what}: fresh cookie accepted");
    }
    // A cookie for an id this upstream does not have → re-pinned.
    let (_, h, _) = get(lb.addr(), "/name", &[("cookie", &cookie("s9", now))]).await;
    assert_eq!(
        latch_set_cookies(&h).len(),
        1,
        "unknown id must be re-pinned"
    );
}

/// `GET /name` with `LATCH=value` where the Set-Cookie carries non-default
/// attributes; returns the backend and the LATCH Set-Cookie headers.
async fn get_ok_raw(addr: SocketAddr, value: &str) -> (String, Vec<String>) {
    let (status, h, body) = get(addr, "/name", &[("cookie", &cookie_header(value))]).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    (backend_of(&h), latch_set_cookies(&h))
}

// === 4. a pinned backend that is gone, reordered or full ===

#[tokio::test]
async fn cookie_for_removed_backend_is_repinned_and_order_does_not_matter() {
    let b = [
        spawn_backend("web0").await,
        spawn_backend("web1").await,
        spawn_backend("web2").await,
    ];
    let all = [&b[0], &b[1], &b[2]];
    let lb_a = spawn_lb(&cookie_config(&all, SECRET, "")).await;
    let reversed = spawn_lb(&cookie_config(&[&b[2], &b[1], &b[0]], SECRET, "")).await;

    // One cookie per backend (round robin visits each).
    let mut pins: HashMap<String, String> = HashMap::new();
    for _ in 0..3 {
        let (name, pin) = get_ok(lb_a.addr(), "/name", None).await;
        pins.insert(name, pin.expect("no cookie sent → pinned"));
    }
    assert_eq!(pins.len(), 3, "round robin over 3 servers: {pins:?}");

    for (x, backend) in b.iter().enumerate() {
        let pin = &pins[&backend.name];
        // Reordered servers: the original pin holds, no new cookie.
        for _ in 0..3 {
            assert_eq!(
                get_ok(reversed.addr(), "/name", Some(pin)).await,
                (backend.name.clone(), None),
                "reversed server list must honour the pin to {}",
                backend.name
            );
        }
        // X removed: served elsewhere and re-pinned there.
        let rest: Vec<&Backend> = all
            .iter()
            .copied()
            .filter(|o| o.addr != backend.addr)
            .collect();
        let lb_b = spawn_lb(&cookie_config(&rest, SECRET, "")).await;
        let hits_before = backend.hits();
        let (status, h, _) = get(lb_b.addr(), "/name", &[("cookie", &cookie_header(pin))]).await;
        assert_eq!(status, StatusCode::OK, "pin to removed web{x}");
        let y = backend_of(&h);
        assert_ne!(y, backend.name, "served by the removed backend");
        let fresh = must_pin(&h, "cookie naming a removed backend");
        assert_eq!(backend.hits(), hits_before, "removed backend got traffic");
        // The new cookie sticks on B, and names Y on A as well.
        for _ in 0..3 {
            assert_eq!(
                get_ok(lb_b.addr(), "/name", Some(&fresh)).await,
                (y.clone(), None)
            );
        }
        assert_eq!(get_ok(lb_a.addr(), "/name", Some(&fresh)).await, (y, None));
        lb_b.handle.shutdown_within(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn cookie_pins_follow_server_id_not_address() {
    let b = [
        spawn_backend("old-home").await,
        spawn_backend("web1").await,
        spawn_backend("new-home").await,
    ];
    let first = server_list(&[
        entry(b[0].addr, "id = \"app-1\""),
        entry(b[1].addr, "id = \"app-2\""),
    ]);
    let lb_a = spawn_lb(&lb_config(&first, "", &cookie_sticky(SECRET, ""))).await;
    let (name, pin) = get_ok(lb_a.addr(), "/name", None).await;
    assert_eq!(name, "old-home", "round robin starts with the first server");
    let pin = pin.expect("pinned");
    // app-1 moved to another address: the cookie follows the id.
    let moved = server_list(&[
        entry(b[1].addr, "id = \"app-2\""),
        entry(b[2].addr, "id = \"app-1\""),
    ]);
    let lb_b = spawn_lb(&lb_config(&moved, "", &cookie_sticky(SECRET, ""))).await;
    for _ in 0..3 {
        assert_eq!(
            get_ok(lb_b.addr(), "/name", Some(&pin)).await,
            ("new-home".to_string(), None)
        );
    }
    assert_eq!(b[0].hits(), 1);
}

#[tokio::test]
async fn cookie_for_full_backend_is_repinned() {
    let b = [spawn_backend("web0").await, spawn_backend("web1").await];
    let servers = server_list(&[
        entry(b[0].addr, "max_conns = 1"),
        entry(b[1].addr, "max_conns = 1"),
    ]);
    let lb = spawn_lb(&lb_config(&servers, "", &cookie_sticky(SECRET, ""))).await;
    let (x, pin) = get_ok(lb.addr(), "/name", None).await;
    let pin = pin.expect("pinned");
    // A WebSocket with the cookie fills X.
    let (ws, on, h) = open_ws(lb.addr(), Some(&pin)).await;
    assert_eq!(on, x);
    assert!(latch_set_cookies(&h).is_empty());
    // X is full: the request goes to the other server and is pinned there.
    let (status, h, _) = get(lb.addr(), "/name", &[("cookie", &cookie_header(&pin))]).await;
    assert_eq!(status, StatusCode::OK);
    let y = backend_of(&h);
    assert_ne!(y, x, "a full backend took a request");
    let fresh = must_pin(&h, "cookie naming a full backend");
    assert_eq!(get_ok(lb.addr(), "/name", Some(&fresh)).await, (y, None));
    close_ws(ws).await;
    wait_all_idle(&lb).await;
    // X has room again: the original cookie is honoured again.
    assert_eq!(get_ok(lb.addr(), "/name", Some(&pin)).await, (x, None));
}

// === 5. WebSocket upgrades ===

#[tokio::test]
async fn websocket_upgrade_sets_and_honours_the_cookie() {
    let b = [
        spawn_backend("web0").await,
        spawn_backend("web1").await,
        spawn_backend("web2").await,
    ];
    let by_name: HashMap<&str, &Backend> = b.iter().map(|x| (x.name.as_str(), x)).collect();
    let cfg = cookie_config(&[&b[0], &b[1], &b[2]], SECRET, "");
    let (lb_a, lb_b) = (spawn_lb(&cfg).await, spawn_lb(&cfg).await);
    let lbs = [lb_a.addr(), lb_b.addr()];

    let mut first_names = Vec::new();
    for i in 0..10 {
        let (mut ws, name, h) = open_ws(lbs[i % 2], None).await;
        let all: Vec<String> = h
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        assert!(
            all.contains(&format!("backend={name}; Path=/")),
            "upgrade {i}: the backend's own Set-Cookie is kept: {all:?}"
        );
        let pin = must_pin(&h, &format!("upgrade {i} without cookie (101)"));
        ws_roundtrip(&mut ws, &format!("first {i}")).await;
        first_names.push(name.clone());

        // Later upgrades with the cookie, on either instance, land on the same backend.
        for k in 1..=2 {
            let (mut again, on, h) = open_ws(lbs[(i + k) % 2], Some(&pin)).await;
            assert_eq!(on, name, "upgrade {i}.{k} with the cookie");
            let cookies: Vec<String> = h
                .get_all(SET_COOKIE)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            assert_eq!(
                cookies,
                [format!("backend={name}; Path=/")],
                "upgrade {i}.{k}: only the backend's cookie, no new LATCH"
            );
            // The backend did not receive latch's cookie.
            let seen = by_name[name.as_str()].last_headers();
            assert!(
                seen.get_all(COOKIE)
                    .iter()
                    .all(|v| !v.as_bytes().starts_with(b"LATCH")),
                "LATCH cookie reached the backend on upgrade: {:?}",
                seen.get_all(COOKIE).iter().collect::<Vec<_>>()
            );
            ws_roundtrip(&mut again, &format!("again {i}.{k}")).await;
            close_ws(again).await;
        }
        close_ws(ws).await;
    }
    for n in ["web0", "web1", "web2"] {
        assert!(
            first_names.iter().any(|x| x == n),
            "no first upgrade on {n}: {first_names:?}"
        );
    }
    wait_all_idle(&lb_a).await;
    wait_all_idle(&lb_b).await;
}
