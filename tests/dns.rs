//! DNS discovery against a real DNS server (dnsmasq on loopback): latch
//! follows an A record as it grows and shrinks, drains tunnels to removed
//! servers, keeps its servers while the name is gone or the DNS server is
//! down, and takes SRV targets as server ids so cookie pins survive a move.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::dns::{Dnsmasq, Fleet, metric, status_json};
use support::{Lb, http_get, spawn_lb, ws_connect};
use tokio_tungstenite::tungstenite::Message;

/// One re-resolution interval (the records' TTL is 1 s, `min_interval` 1 s)
/// plus the budget of one lookup (`timeout` 1 s, twice): latch must follow
/// a change of the record within this. With `max_interval` at its default
/// (30 s), a latch that ignored the TTL would fail here.
const FOLLOW: Duration = Duration::from_secs(3);

fn config(dns: SocketAddr, discover: &str, upstream_extra: &str) -> String {
    format!(
        r#"[server]
grace = "30s"

[admin]
bind = "127.0.0.1:0"

[[listener]]
bind = "127.0.0.1:0"
upstream = "app"

[upstream.app]
balance = "round_robin"
discover = {{ {discover}, min_interval = "1s", timeout = "1s" }}
resolver = "{dns}"
max_fails = 0
{upstream_extra}
"#
    )
}

/// The addresses of `app`'s servers in the routing table now, sorted.
fn in_force(lb: &Lb) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = lb.handle.snapshot().upstreams["app"]
        .backends
        .iter()
        .map(|b| b.addr)
        .collect();
    v.sort();
    v
}

/// Waits until `app`'s servers are `want` (sorted), within [`FOLLOW`];
/// returns how long it took.
async fn follows(lb: &Lb, want: &[SocketAddr], step: &str) -> Duration {
    let start = Instant::now();
    loop {
        if in_force(lb) == want {
            let took = start.elapsed();
            eprintln!("{step}: latch followed in {took:?}");
            return took;
        }
        assert!(
            start.elapsed() < FOLLOW,
            "{step}: latch has {:?}, not {want:?}, after {FOLLOW:?}",
            in_force(lb)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Which backends answer `n` requests through latch, by name, sorted.
async fn answering(lb: &Lb, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..n {
        let (status, _, body) = http_get(lb.addr(), "localhost", "/name").await;
        assert_eq!(
            status,
            200,
            "a request failed: {}",
            String::from_utf8_lossy(&body)
        );
        names.push(String::from_utf8_lossy(&body).into_owned());
    }
    names.sort();
    names.dedup();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_an_a_record_as_it_grows_and_shrinks_and_drains_what_leaves() {
    let fleet = Fleet::start(2, 4).await;
    let dns = Dnsmasq::start(&fleet.hosts("app.test", 0..2), &[]).await;
    let discover = format!(r#"name = "app.test", port = {}, type = "A""#, fleet.port);
    let lb = spawn_lb(&config(dns.addr, &discover, "")).await;
    let admin = lb.handle.admin_addr().expect("admin listener");
    let addrs: Vec<SocketAddr> = (0..4).map(|i| fleet.addr(i)).collect();

    // Started with the record's two servers, resolved before serving.
    assert_eq!(in_force(&lb), addrs[..2]);
    assert_eq!(answering(&lb, 4).await, ["b2", "b3"]);
    let status = status_json(admin).await;
    let up = &status["upstreams"][0];
    assert_eq!(up["discover"]["name"], "app.test");
    assert_eq!(up["discover"]["ok"], true);
    assert_eq!(up["discover"]["servers"], 2);
    assert!(up["discover"]["last_unix"].as_u64().is_some());
    assert_eq!(up["servers"][0]["origin"], "dns:app.test");
    let page = support::dns::admin_text(admin, "/").await;
    assert!(
        page.contains(r#"<span class="tag" title="app.test">dns</span>"#),
        "the dashboard tags DNS servers"
    );

    // Grow 2 → 4: the new servers take traffic.
    dns.set_hosts(&fleet.hosts("app.test", 0..4), "app.test")
        .await;
    follows(&lb, &addrs, "grow 2 -> 4").await;
    assert_eq!(answering(&lb, 8).await, ["b2", "b3", "b4", "b5"]);

    // A tunnel on every server.
    let mut tunnels = Vec::new();
    for _ in 0..4 {
        let (ws, _) = ws_connect(lb.addr(), "/ws").await;
        tunnels.push(ws);
    }
    let per_server: Vec<usize> = lb.handle.snapshot().upstreams["app"]
        .backends
        .iter()
        .map(|b| b.tunnels())
        .collect();
    assert_eq!(
        per_server,
        [1, 1, 1, 1],
        "round robin put one tunnel on each"
    );

    // Shrink 4 → 1: only b2 takes new requests; the three tunnels to the
    // removed servers drain (they still carry messages), as after a reload.
    dns.set_hosts(&fleet.hosts("app.test", 0..1), "app.test")
        .await;
    follows(&lb, &addrs[..1], "shrink 4 -> 1").await;
    assert_eq!(answering(&lb, 4).await, ["b2"]);
    let status = status_json(admin).await;
    let draining = status["draining"].as_array().expect("draining list");
    assert_eq!(draining.len(), 3, "three servers drain: {draining:?}");
    for ws in &mut tunnels {
        ws.send(Message::text("still here")).await.expect("send");
        let echo = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("echo in time")
            .expect("tunnel open")
            .expect("a message");
        assert_eq!(echo.into_text().expect("text").as_str(), "still here");
    }
    drop(tunnels);
    support::wait_until("draining servers gone", Duration::from_secs(10), || {
        lb.handle.pool().draining.servers().is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_the_last_good_set_through_nxdomain_and_a_dns_outage() {
    let fleet = Fleet::start(2, 3).await;
    let mut dns = Dnsmasq::start(&fleet.hosts("app.test", 0..2), &[]).await;
    let discover = format!(r#"name = "app.test", port = {}"#, fleet.port);
    let lb = spawn_lb(&config(dns.addr, &discover, "")).await;
    let admin = lb.handle.admin_addr().expect("admin listener");
    let two: Vec<SocketAddr> = (0..2).map(|i| fleet.addr(i)).collect();
    assert_eq!(in_force(&lb), two);

    // The name disappears (NXDOMAIN): the servers stay, once counted.
    dns.set_hosts(&[], "app.test").await;
    let nx = r#"latch_dns_resolutions_total{upstream="app",result="nxdomain"}"#;
    let start = Instant::now();
    while metric(admin, nx).await < 1.0 {
        assert!(
            start.elapsed() < FOLLOW,
            "no NXDOMAIN counted within {FOLLOW:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(in_force(&lb), two, "NXDOMAIN must not empty the pool");
    let status = status_json(admin).await;
    let d = &status["upstreams"][0]["discover"];
    assert_eq!(d["ok"], false);
    assert!(
        d["result"].as_str().unwrap_or("").starts_with("nxdomain"),
        "{d}"
    );
    assert_eq!(d["servers"], 2, "the last good set is still in force");
    assert_eq!(answering(&lb, 4).await, ["b2", "b3"]);

    // Back, then the DNS server dies: requests go on, nothing changes.
    dns.set_hosts(&fleet.hosts("app.test", 0..2), "app.test")
        .await;
    dns.kill().await;
    let errors = r#"latch_dns_resolutions_total{upstream="app",result="error"}"#;
    let start = Instant::now();
    let mut served = 0;
    while metric(admin, errors).await < 2.0 {
        assert!(start.elapsed() < 3 * FOLLOW, "no failed lookups counted");
        let (status, _, _) = http_get(lb.addr(), "localhost", "/name").await;
        assert_eq!(
            status, 200,
            "a request failed while the DNS server was down"
        );
        served += 1;
    }
    eprintln!("{served} requests served while the DNS server was down");
    assert_eq!(in_force(&lb), two, "a DNS outage must not change the pool");
    assert_eq!(answering(&lb, 4).await, ["b2", "b3"]);

    // It comes back with a third server: latch follows again.
    dns.set_hosts_offline(&fleet.hosts("app.test", 0..3));
    dns.restart().await;
    let three: Vec<SocketAddr> = (0..3).map(|i| fleet.addr(i)).collect();
    // After failures the wait backs off (1 s, 2 s, …): allow two of them.
    let start = Instant::now();
    while in_force(&lb) != three {
        assert!(
            start.elapsed() < 3 * FOLLOW,
            "latch did not follow after the outage"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("after the outage: followed in {:?}", start.elapsed());
    let status = status_json(admin).await;
    assert_eq!(status["upstreams"][0]["discover"]["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_targets_are_server_ids_so_a_pin_survives_a_move() {
    let fleet = Fleet::start(2, 3).await;
    let srv = [
        format!("_app._tcp.test,one.test,{},0,5", fleet.port),
        format!("_app._tcp.test,two.test,{},0,5", fleet.port),
    ];
    let srv: Vec<&str> = srv.iter().map(String::as_str).collect();
    let hosts = [("one.test", fleet.ip(0)), ("two.test", fleet.ip(1))];
    let dns = Dnsmasq::start(&hosts, &srv).await;
    let sticky =
        "[upstream.app.sticky]\nmode = \"cookie\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n";
    let lb = spawn_lb(&config(
        dns.addr,
        r#"name = "_app._tcp.test", type = "SRV""#,
        sticky,
    ))
    .await;
    let snap = lb.handle.snapshot();
    let mut ids: Vec<(String, u32)> = snap.upstreams["app"]
        .backends
        .iter()
        .map(|b| (b.id.clone(), b.weight))
        .collect();
    ids.sort();
    let p = fleet.port;
    assert_eq!(
        ids,
        [(format!("one.test:{p}"), 5), (format!("two.test:{p}"), 5)]
    );

    // Pin a client to one.test, then move one.test to another address.
    let mut cookie = None;
    for _ in 0..4 {
        let (_, headers, body) = http_get(lb.addr(), "localhost", "/name").await;
        if body == "b2" {
            let set = headers["set-cookie"].to_str().expect("ascii");
            cookie = Some(set.split(';').next().expect("name=value").to_string());
            break;
        }
    }
    let cookie = cookie.expect("round robin reached one.test within 4 requests");
    let (addr, cookie) = (lb.addr(), cookie.as_str());
    let pinned = move || async move {
        let (_, _, body) =
            support::http_get_with(addr, "localhost", "/name", &[("cookie", cookie)]).await;
        String::from_utf8_lossy(&body).into_owned()
    };
    assert_eq!(pinned().await, "b2");
    dns.set_hosts(
        &[("one.test", fleet.ip(2)), ("two.test", fleet.ip(1))],
        "one.test",
    )
    .await;
    let want = [fleet.addr(1), fleet.addr(2)];
    follows(&lb, &want, "SRV target moved").await;
    assert_eq!(
        pinned().await,
        "b4",
        "the pin follows the SRV target to its new address"
    );
}

/// The error for `[upstream.app]` with `body`: (line, key, message).
fn discover_err(body: &str) -> (usize, String, String) {
    let text = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n[upstream.app]\n{body}\n"
    );
    match latch::Config::parse(&text, std::path::Path::new("t.toml")) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => (e.line, e.key, e.message),
    }
}

#[test]
fn discover_keys_are_checked_without_resolving_anything() {
    let cases: [(&str, &str, &str); 11] = [
        (
            r#"discover = { name = "a.test", port = 80, ttl = 5 }"#,
            "upstream.app.discover.ttl",
            "unknown field",
        ),
        (
            r#"discover = { name = "a.test" }"#,
            "upstream.app.discover.port",
            "needs `port`",
        ),
        (
            r#"discover = { name = "_a._tcp.test", type = "SRV", port = 80 }"#,
            "upstream.app.discover.port",
            "own port",
        ),
        (
            r#"discover = { name = "a.test", port = 80, max_upgrades_per_sec = 0 }"#,
            "upstream.app.discover.max_upgrades_per_sec",
            "at least 1",
        ),
        (
            r#"discover = { name = "a.test", port = 80, type = "MX" }"#,
            "upstream.app.discover.type",
            "unknown variant",
        ),
        (
            r#"discover = { name = "a.test", port = 80, min_interval = "5s", max_interval = "1s" }"#,
            "upstream.app.discover.max_interval",
            "less than min_interval",
        ),
        (
            r#"discover = { name = "a.test", port = 80, min_interval = "0" }"#,
            "upstream.app.discover.min_interval",
            "more than 0",
        ),
        (
            r#"discover = { name = "10.0.0.1", port = 80 }"#,
            "upstream.app.discover.name",
            "not a name",
        ),
        (
            "discover = { name = \"a.test\", port = 80 }\nresolver = \"dns.example\"",
            "upstream.app.resolver",
            "invalid resolver",
        ),
        (
            "servers = [{ addr = \"127.0.0.1:1\" }]\nresolver = \"127.0.0.1:53\"",
            "upstream.app.resolver",
            "only used with `discover`",
        ),
        (
            "balance = \"round_robin\"",
            "upstream.app.servers",
            "or `discover`",
        ),
    ];
    for (body, key, words) in cases {
        let (line, k, message) = discover_err(body);
        assert_eq!(k, key, "{body}: {message}");
        assert!(
            message.contains(words),
            "{body}: {message:?} lacks {words:?}"
        );
        assert!(line >= 4, "{body}: line {line}");
    }
    // Valid: an unresolvable name and an unreachable resolver are fine to
    // `check`; resolution happens only when latch runs.
    let ok = "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n[upstream.app]\n\
              discover = { name = \"nowhere.invalid\", port = 80 }\nresolver = \"127.0.0.1:9\"\n";
    let c = latch::Config::parse(ok, std::path::Path::new("t.toml")).expect("valid");
    let d = c.upstreams["app"].discover.as_ref().expect("discover");
    assert_eq!(
        (d.min_interval, d.max_interval),
        (Duration::from_secs(1), Duration::from_secs(30))
    );
    assert_eq!(d.resolver, Some("127.0.0.1:9".parse().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_never_resolves_starts_empty_and_answers_503() {
    // Nothing listens on the resolver's port: every lookup fails.
    let port = support::free_port();
    let dead: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let lb = spawn_lb(&config(dead, r#"name = "app.test", port = 80"#, "")).await;
    assert!(in_force(&lb).is_empty());
    let (status, _, _) = http_get(lb.addr(), "localhost", "/name").await;
    assert_eq!(status, 503, "no server yet: 503, not a hang or a panic");
    let admin = lb.handle.admin_addr().expect("admin");
    let status = status_json(admin).await;
    assert_eq!(status["upstreams"][0]["discover"]["ok"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_appears_ramps_up_with_slow_start() {
    let fleet = Fleet::start(2, 3).await;
    let dns = Dnsmasq::start(&fleet.hosts("app.test", 0..2), &[]).await;
    let discover = format!(r#"name = "app.test", port = {}"#, fleet.port);
    let lb = spawn_lb(&config(dns.addr, &discover, "slow_start = \"1h\"")).await;
    dns.set_hosts(&fleet.hosts("app.test", 0..3), "app.test")
        .await;
    let all: Vec<SocketAddr> = (0..3).map(|i| fleet.addr(i)).collect();
    follows(&lb, &all, "grow 2 -> 3 with slow start").await;
    let weights: Vec<(SocketAddr, u64)> = lb.handle.snapshot().upstreams["app"]
        .backends
        .iter()
        .map(|b| (b.addr, b.condition.weight_permille()))
        .collect();
    for (addr, permille) in weights {
        if addr == fleet.addr(2) {
            assert!(permille < 200, "the new server starts low: {permille}‰");
        } else {
            assert_eq!(permille, 1000, "servers there from the start do not ramp");
        }
    }
}

/// `discover.max_upgrades_per_sec` caps every server found, as the key
/// does on a listed server: its bucket is in `/status`, and a burst of
/// upgrades beyond it is turned away with `503` and `Retry-After` while
/// plain requests still pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_servers_take_the_upgrade_cap() {
    let fleet = Fleet::start(2, 1).await;
    let dns = Dnsmasq::start(&fleet.hosts("app.test", 0..1), &[]).await;
    // 10 a second: a bucket of one token, refilled every 100 ms.
    let discover = format!(
        r#"name = "app.test", port = {}, max_upgrades_per_sec = 10"#,
        fleet.port
    );
    let lb = spawn_lb(&config(dns.addr, &discover, "")).await;
    let admin = lb.handle.admin_addr().expect("admin listener");
    let status = status_json(admin).await;
    let server = &status["upstreams"][0]["servers"][0];
    assert_eq!(server["origin"], "dns:app.test", "{status}");
    assert_eq!(server["max_upgrades_per_sec"], 10, "{status}");
    assert_eq!(server["upgrade_tokens"], 1, "a full bucket: {status}");

    // Eight upgrades at once: the one token admits one; the others find no
    // server with a token (there is one server) and are told to come back.
    let tries = (0..8).map(|_| support::try_ws_connect(lb.addr(), "/ws"));
    let results = futures_util::future::join_all(tries).await;
    let mut opened = Vec::new();
    let mut throttled = 0;
    for r in results {
        match r {
            Ok((ws, _)) => opened.push(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 503, "{resp:?}");
                let after: u32 = resp.headers()["retry-after"]
                    .to_str()
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .expect("a numeric Retry-After");
                assert!((1..=5).contains(&after), "Retry-After {after}");
                throttled += 1;
            }
            Err(e) => panic!("an upgrade failed otherwise: {e}"),
        }
    }
    assert!(
        !opened.is_empty() && opened.len() <= 2,
        "one token (two if the burst straddled a refill), {} opened",
        opened.len()
    );
    assert_eq!(opened.len() + throttled, 8);
    let deferred = metric(
        admin,
        &format!(
            "latch_server_upgrades_deferred_total{{upstream=\"app\",server=\"{}\"}}",
            fleet.addr(0)
        ),
    )
    .await;
    assert!(
        deferred >= throttled as f64,
        "deferred {deferred}, throttled {throttled}"
    );
    // Plain requests never wait for a token.
    assert_eq!(answering(&lb, 3).await, ["b2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_discovered_servers_and_a_changed_name_is_resolved_anew() {
    let fleet = Fleet::start(2, 3).await;
    let mut hosts = fleet.hosts("app.test", 0..2);
    hosts.extend(fleet.hosts("other.test", 2..3));
    let dns = Dnsmasq::start(&hosts, &[]).await;
    let text = |name: &str| {
        let discover = format!(r#"name = "{name}", port = {}"#, fleet.port);
        config(dns.addr, &discover, "")
    };
    let lb = spawn_lb(&text("app.test")).await;
    let two: Vec<SocketAddr> = (0..2).map(|i| fleet.addr(i)).collect();
    assert_eq!(in_force(&lb), two);
    let server = lb.handle.snapshot().upstreams["app"].backends[0]
        .server()
        .clone();

    // The same spec: the discovered servers stay in force through the
    // reload (no moment without them), as the same pool servers.
    let parse = |t: &str| latch::Config::parse(t, std::path::Path::new("t.toml")).expect("valid");
    lb.handle.reload(parse(&text("app.test"))).expect("reload");
    assert_eq!(
        in_force(&lb),
        two,
        "a reload must not drop discovered servers"
    );
    let after = lb.handle.snapshot().upstreams["app"].backends[0]
        .server()
        .clone();
    assert!(
        std::sync::Arc::ptr_eq(&server, &after),
        "the same pool server"
    );

    // Another name: its own servers replace the old name's.
    lb.handle
        .reload(parse(&text("other.test")))
        .expect("reload");
    follows(&lb, &[fleet.addr(2)], "reload to another name").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aaaa_records_name_ipv6_servers_and_a_missing_type_is_an_empty_answer() {
    let listener = tokio::net::TcpListener::bind("[::1]:0")
        .await
        .expect("bind [::1]:0");
    let v6 = listener.local_addr().expect("local_addr");
    let _backend = support::spawn_backend_on("v6", listener);
    let dns = Dnsmasq::start(&[("six.test", v6.ip())], &[]).await;
    let port = v6.port();
    let text = format!(
        r#"[admin]
bind = "127.0.0.1:0"

[[listener]]
bind = "127.0.0.1:0"
upstream = "app"

[[listener.route]]
path_prefix = "/v4/"
upstream = "v4"

[upstream.app]
discover = {{ name = "six.test", port = {port}, type = "AAAA", timeout = "1s" }}
resolver = "{dns}"

[upstream.v4]
discover = {{ name = "six.test", port = {port}, type = "A", timeout = "1s" }}
resolver = "{dns}"
"#,
        dns = dns.addr
    );
    let lb = spawn_lb(&text).await;
    assert_eq!(in_force(&lb), [v6]);
    let (status, _, body) = http_get(lb.addr(), "localhost", "/name").await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"v6"[..]));
    // The name has no A record: an empty answer, not NXDOMAIN.
    let status = status_json(lb.handle.admin_addr().expect("admin")).await;
    let v4 = status["upstreams"]
        .as_array()
        .expect("upstreams")
        .iter()
        .find(|u| u["name"] == "v4")
        .expect("upstream v4");
    let result = v4["discover"]["result"].as_str().unwrap_or("");
    assert!(result.starts_with("empty"), "{result}");
    assert!(lb.handle.snapshot().upstreams["v4"].backends.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_and_dns_changes_take_turns() {
    let fleet = Fleet::start(2, 3).await;
    let dns = Dnsmasq::start(&fleet.hosts("app.test", 0..2), &[]).await;
    let discover = format!(r#"name = "app.test", port = {}"#, fleet.port);
    let text = config(dns.addr, &discover, "");
    let lb = spawn_lb(&text).await;
    // Reloads back to back on a blocking thread while the record changes.
    let handle = lb.handle.clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = done.clone();
    let reloads = tokio::task::spawn_blocking(move || {
        let config = latch::Config::parse(&text, std::path::Path::new("t.toml")).expect("valid");
        let start = Instant::now();
        let mut n = 0;
        // Until the record has changed four times (bounded all the same).
        while !stop.load(std::sync::atomic::Ordering::SeqCst) && start.elapsed() < 4 * FOLLOW {
            handle.reload(config.clone()).expect("reload");
            n += 1;
        }
        n
    });
    for round in 0..2 {
        dns.set_hosts(&fleet.hosts("app.test", 0..3), "app.test")
            .await;
        let three: Vec<SocketAddr> = (0..3).map(|i| fleet.addr(i)).collect();
        follows(
            &lb,
            &three,
            &format!("round {round}: 2 -> 3 during reloads"),
        )
        .await;
        dns.set_hosts(&fleet.hosts("app.test", 0..2), "app.test")
            .await;
        let two: Vec<SocketAddr> = (0..2).map(|i| fleet.addr(i)).collect();
        follows(&lb, &two, &format!("round {round}: 3 -> 2 during reloads")).await;
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let n = reloads.await.expect("reload thread");
    eprintln!("{n} reloads while the record changed 4 times");
    // The pool holds exactly the servers in force: nothing a reload or a
    // DNS change built was left behind.
    let mut pool: Vec<SocketAddr> = lb.handle.pool().all().iter().map(|s| s.addr).collect();
    pool.sort();
    assert_eq!(pool, in_force(&lb));
    assert_eq!(answering(&lb, 4).await, ["b2", "b3"]);
}
