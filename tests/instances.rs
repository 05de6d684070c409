//! Three latch instances with the same config, one DNS name (dnsmasq on
//! loopback) naming the backends, and clients that pick an instance at
//! random for every request. The fleet scales out 5 → 8 and in 8 → 3:
//!
//! - cookie mode: no session moves on scale-out, and on scale-in only the
//!   sessions of removed servers are re-pinned — whichever instance answers;
//! - `ip_hash`: the instances agree on every client at every step; scale-out
//!   moves about the new servers' share; scale-in moves almost nothing of
//!   what was on the servers that stay.
//!
//! The measured shares are printed (`cargo test --test instances -- --nocapture`).

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use support::Lb;
use support::cluster::{Pick, client_ip, get_from, spawn_instances, wait_servers};
use support::dns::{Dnsmasq, Fleet};

const INSTANCES: usize = 3;
/// Longer than one re-resolution (1 s) plus a lookup, for three instances
/// on a busy machine.
const FOLLOW: Duration = Duration::from_secs(10);
const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn config(dns: SocketAddr, port: u16, balance: &str, sticky: &str) -> String {
    format!(
        r#"[[listener]]
bind = "127.0.0.1:0"
upstream = "app"

[upstream.app]
balance = "{balance}"
discover = {{ name = "app.test", port = {port}, min_interval = "1s", timeout = "1s" }}
resolver = "{dns}"
max_fails = 0
{sticky}
"#
    )
}

fn addrs(fleet: &Fleet, n: usize) -> Vec<SocketAddr> {
    (0..n).map(|i| fleet.addr(i)).collect()
}

/// Share of each backend name in `names`, as "b2 20.0%, b3 …".
fn shares<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    let mut total = 0;
    for n in names {
        *count.entry(n.as_str()).or_default() += 1;
        total += 1;
    }
    count
        .iter()
        .map(|(n, c)| format!("{n} {:.1}%", 100.0 * *c as f64 / total as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

fn body(got: &support::Got) -> String {
    assert_eq!(
        got.0,
        200,
        "request failed: {}",
        String::from_utf8_lossy(&got.2)
    );
    String::from_utf8_lossy(&got.2).into_owned()
}

/// A session of cookie mode: its cookie and the backend it is on.
struct Session {
    cookie: String,
    on: String,
}

/// One request of `s` through a random instance: the backend answering, and
/// the new cookie if the instance re-pinned the session.
async fn visit(lbs: &[Lb], pick: &mut Pick, s: &mut Session) -> bool {
    let lb = &lbs[pick.below(lbs.len())];
    let got = get_from(LOCAL, lb.addr(), "/name", Some(&s.cookie)).await;
    let name = body(&got);
    let repinned = name != s.on;
    if let Some(set) = got.1.get("set-cookie") {
        let set = set.to_str().expect("ascii cookie");
        s.cookie = set.split(';').next().expect("name=value").to_string();
    }
    assert!(
        !repinned || got.1.contains_key("set-cookie"),
        "moved without a new pin"
    );
    s.on = name;
    repinned
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_sessions_hold_on_scale_out_and_only_removed_ones_move_on_scale_in() {
    let fleet = Fleet::start(2, 8).await;
    let dns = Dnsmasq::start(&fleet.hosts("app.test", 0..5), &[]).await;
    let sticky = "[upstream.app.sticky]\nmode = \"cookie\"\nsecret = \"shared-by-all-instances-0123456789\"\n";
    let lbs = spawn_instances(
        INSTANCES,
        &config(dns.addr, fleet.port, "round_robin", sticky),
    )
    .await;
    wait_servers(&lbs, &addrs(&fleet, 5), FOLLOW).await;
    let mut pick = Pick::new(0x5eed);

    // 300 sessions, each started on a random instance and then visiting
    // random instances: every instance honours every other's pin.
    let mut sessions = Vec::new();
    for _ in 0..300 {
        let lb = &lbs[pick.below(INSTANCES)];
        let got = get_from(LOCAL, lb.addr(), "/name", None).await;
        let set = got.1.get("set-cookie").expect("a new session is pinned");
        let cookie = set
            .to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("pair")
            .to_string();
        sessions.push(Session {
            cookie,
            on: body(&got),
        });
    }
    for s in &mut sessions {
        assert!(
            !visit(&lbs, &mut pick, s).await,
            "a session moved with no change"
        );
    }
    eprintln!(
        "cookie, 5 servers: sessions {}",
        shares(sessions.iter().map(|s| &s.on))
    );

    // Scale out 5 → 8: no session moves; new sessions use the new servers.
    dns.set_hosts(&fleet.hosts("app.test", 0..8), "app.test")
        .await;
    wait_servers(&lbs, &addrs(&fleet, 8), FOLLOW).await;
    let mut moved = 0;
    for s in &mut sessions {
        moved += usize::from(visit(&lbs, &mut pick, s).await);
    }
    eprintln!(
        "cookie, scale-out 5 -> 8: {moved} of {} sessions moved",
        sessions.len()
    );
    assert_eq!(moved, 0, "scale-out moved sessions");
    let mut fresh = Vec::new();
    for _ in 0..240 {
        let got = get_from(LOCAL, lbs[pick.below(INSTANCES)].addr(), "/name", None).await;
        fresh.push(body(&got));
    }
    eprintln!("cookie, 8 servers: new sessions {}", shares(fresh.iter()));
    for new in ["b7", "b8", "b9"] {
        assert!(fresh.iter().any(|n| n == new), "no new session on {new}");
    }

    // Scale in 8 → 3: sessions on b2..b4 stay, the others are re-pinned.
    dns.set_hosts(&fleet.hosts("app.test", 0..3), "app.test")
        .await;
    wait_servers(&lbs, &addrs(&fleet, 3), FOLLOW).await;
    let staying = ["b2", "b3", "b4"];
    let (mut kept_moved, mut removed, mut removed_moved) = (0, 0, 0);
    for s in &mut sessions {
        let was_staying = staying.contains(&s.on.as_str());
        let moved = visit(&lbs, &mut pick, s).await;
        if was_staying {
            kept_moved += usize::from(moved);
        } else {
            removed += 1;
            removed_moved += usize::from(moved);
        }
        assert!(
            staying.contains(&s.on.as_str()),
            "a session is on removed {}",
            s.on
        );
    }
    eprintln!(
        "cookie, scale-in 8 -> 3: {kept_moved} of {} sessions on staying servers moved; \
         {removed_moved} of {removed} on removed servers re-pinned; now {}",
        sessions.len() - removed,
        shares(sessions.iter().map(|s| &s.on))
    );
    assert_eq!(kept_moved, 0, "sessions on staying servers moved");
    assert_eq!(
        removed_moved, removed,
        "sessions on removed servers were not re-pinned"
    );
    assert!(removed > 0, "the test needs sessions on removed servers");
    // The new pins hold on every instance.
    for s in &mut sessions {
        assert!(
            !visit(&lbs, &mut pick, s).await,
            "a re-pinned session moved again"
        );
    }
}

/// The backend each of `clients` addresses lands on, asked of every
/// instance: panics unless all instances agree.
async fn placements(lbs: &[Lb], clients: usize) -> Vec<String> {
    let lbs_addrs: Vec<SocketAddr> = lbs.iter().map(|lb| lb.addr()).collect();
    let asks = (0..clients).map(|c| {
        let lbs_addrs = lbs_addrs.clone();
        async move {
            let mut names = Vec::new();
            for lb in &lbs_addrs {
                names.push(body(&get_from(client_ip(c), *lb, "/name", None).await));
            }
            (c, names)
        }
    });
    let mut out = vec![String::new(); clients];
    let mut answers = futures_util::stream::iter(asks).buffer_unordered(16);
    while let Some((c, names)) = answers.next().await {
        assert!(
            names.iter().all(|n| *n == names[0]),
            "instances disagree on client {}: {names:?}",
            client_ip(c)
        );
        out[c] = names[0].clone();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_hash_instances_agree_and_scaling_moves_only_the_needed_share() {
    const CLIENTS: usize = 600;
    let fleet = Fleet::start(2, 8).await;
    let dns = Dnsmasq::start(&fleet.hosts("app.test", 0..5), &[]).await;
    let lbs = spawn_instances(INSTANCES, &config(dns.addr, fleet.port, "ip_hash", "")).await;
    wait_servers(&lbs, &addrs(&fleet, 5), FOLLOW).await;

    let five = placements(&lbs, CLIENTS).await;
    eprintln!(
        "ip_hash, 5 servers, instances agree: {}",
        shares(five.iter())
    );

    dns.set_hosts(&fleet.hosts("app.test", 0..8), "app.test")
        .await;
    wait_servers(&lbs, &addrs(&fleet, 8), FOLLOW).await;
    let eight = placements(&lbs, CLIENTS).await;
    let moved: Vec<usize> = (0..CLIENTS).filter(|&c| five[c] != eight[c]).collect();
    let to_new = moved
        .iter()
        .filter(|&&c| ["b7", "b8", "b9"].contains(&eight[c].as_str()))
        .count();
    let share = moved.len() as f64 / CLIENTS as f64;
    eprintln!(
        "ip_hash, scale-out 5 -> 8, instances agree: {}; moved {:.1}% of clients \
         (new servers' share 37.5%), {to_new} of {} moves to a new server",
        shares(eight.iter()),
        100.0 * share,
        moved.len()
    );
    assert!(
        (0.25..=0.5).contains(&share),
        "scale-out moved {:.1}%",
        100.0 * share
    );
    assert!(
        to_new * 10 >= moved.len() * 9,
        "most moves must go to new servers"
    );

    dns.set_hosts(&fleet.hosts("app.test", 0..3), "app.test")
        .await;
    wait_servers(&lbs, &addrs(&fleet, 3), FOLLOW).await;
    let three = placements(&lbs, CLIENTS).await;
    let staying = ["b2", "b3", "b4"];
    let on_staying: Vec<usize> = (0..CLIENTS)
        .filter(|&c| staying.contains(&eight[c].as_str()))
        .collect();
    let kept_moved = on_staying.iter().filter(|&&c| three[c] != eight[c]).count();
    let kept_share = kept_moved as f64 / on_staying.len().max(1) as f64;
    eprintln!(
        "ip_hash, scale-in 8 -> 3, instances agree: {}; {kept_moved} of {} clients on \
         staying servers moved ({:.1}%)",
        shares(three.iter()),
        on_staying.len(),
        100.0 * kept_share
    );
    assert!(
        kept_share <= 0.05,
        "scale-in moved {:.1}% of clients on staying servers",
        100.0 * kept_share
    );
}
