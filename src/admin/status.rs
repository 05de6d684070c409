//! `/status`: what every server of every upstream is doing now, as plain data
//! that serializes to the JSON the endpoint serves and that the dashboard
//! renders. Everything is read at the moment of the request from the live
//! state (atomics and the check report), so it never goes stale and costs
//! nothing between requests.

use std::sync::{Arc, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::backend::Backend;
use crate::config::Balance;
use crate::metrics::server_state;
use crate::proxy::Shared;

#[derive(Debug, Serialize)]
pub struct Status {
    pub uptime_secs: u64,
    /// The server's clock, so pages can tell "how long ago" without trusting
    /// the viewer's clock.
    pub now_unix: u64,
    /// Sorted by name.
    pub upstreams: Vec<UpstreamView>,
    /// Servers removed by a reload that still hold tunnels.
    pub draining: Vec<DrainingView>,
}

#[derive(Debug, Serialize)]
pub struct UpstreamView {
    pub name: String,
    pub balance: &'static str,
    /// In config order.
    pub servers: Vec<ServerView>,
}

#[derive(Debug, Serialize)]
pub struct DrainingView {
    pub upstream: String,
    #[serde(flatten)]
    pub server: ServerView,
}

#[derive(Debug, Serialize)]
pub struct ServerView {
    pub id: String,
    pub addr: String,
    pub weight: u32,
    pub backup: bool,
    pub max_conns: Option<usize>,
    /// One of [`crate::metrics::STATES`].
    pub state: &'static str,
    pub active: usize,
    pub tunnels: usize,
    pub total: u64,
    pub weight_permille: u64,
    pub passive_fails: u32,
    pub passive_outs: u64,
    pub last_check: Option<CheckView>,
    pub last_transition_unix: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct CheckView {
    pub ok: bool,
    /// Why the probe failed; empty when it passed.
    pub reason: String,
    pub at_unix: u64,
}

impl Status {
    /// The state of `shared` now; `uptime_secs` is the caller's to give.
    pub fn collect(shared: &Shared, uptime_secs: u64) -> Status {
        let snapshot = shared.snapshot.load_full();
        let mut upstreams: Vec<UpstreamView> = snapshot
            .upstreams
            .values()
            .map(|up| UpstreamView {
                name: up.name.clone(),
                balance: balance_name(up.balance),
                servers: up.backends.iter().map(|b| ServerView::of(b)).collect(),
            })
            .collect();
        upstreams.sort_by(|a, b| a.name.cmp(&b.name));
        let draining = draining(shared);
        let draining = draining
            .iter()
            .map(|(upstream, b)| DrainingView {
                upstream: upstream.clone(),
                server: ServerView::of(b),
            })
            .collect();
        Status {
            uptime_secs,
            now_unix: unix(SystemTime::now()),
            upstreams,
            draining,
        }
    }
}

impl ServerView {
    pub fn of(b: &Backend) -> ServerView {
        let report = b.condition.snapshot_report();
        ServerView {
            id: b.id.clone(),
            addr: b.addr.to_string(),
            weight: b.weight,
            backup: b.backup,
            max_conns: b.max_conns,
            state: server_state(b),
            active: b.active(),
            tunnels: b.tunnels(),
            total: b.total(),
            weight_permille: b.condition.weight_permille(),
            passive_fails: report.passive_fails,
            passive_outs: report.passive_outs,
            last_check: report.last_check.map(|(ok, reason, at)| CheckView {
                ok,
                reason,
                at_unix: unix(at),
            }),
            last_transition_unix: report.last_transition.map(unix),
        }
    }
}

/// Servers removed by a reload that still hold tunnels or requests. The
/// shared list is pruned only at the next reload; emptied servers are
/// skipped here.
pub fn draining(shared: &Shared) -> Vec<(String, Arc<Backend>)> {
    let list = shared
        .draining
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    list.iter().filter(|(_, b)| b.load() > 0).cloned().collect()
}

/// The name `balance` has in the config file.
pub fn balance_name(b: Balance) -> &'static str {
    match b {
        Balance::RoundRobin => "round_robin",
        Balance::LeastConn => "least_conn",
        Balance::Random => "random",
        Balance::IpHash => "ip_hash",
        Balance::Hash => "hash",
    }
}

/// Seconds since the Unix epoch (0 for times before it).
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
