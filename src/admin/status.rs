//! `/status`: what every server of every upstream is doing now, and every
//! client listener's connections and limits, as plain data that serializes
//! to the JSON the endpoint serves and that the dashboard renders. Everything
//! is read at the moment of the request from the live state (atomics and the
//! check report), so it never goes stale and costs nothing between requests.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::backend::{Backend, Server};
use crate::config::Balance;
use crate::metrics::{ListenerStats, server_state};
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
    /// Client listeners, by address.
    pub listeners: Vec<ListenerView>,
    /// HTTP/2 to clients: connections, streams, WebSockets over HTTP/2.
    pub http2: crate::metrics::h2::H2View,
}

/// A client listener's connections and limits.
#[derive(Debug, Serialize)]
pub struct ListenerView {
    pub addr: String,
    /// Client connections open now (tunnels included).
    pub open: usize,
    pub max_connections: Option<usize>,
    pub max_connections_per_client: Option<usize>,
    /// Times it reached `max_connections` and waited for one to close.
    pub full: u64,
    /// Connections closed at once: their address had its share open.
    pub refused_per_client: u64,
    /// Failed accepts (out of file descriptors, usually).
    pub accept_errors: u64,
    /// Connections closed for their PROXY protocol header, by reason; only
    /// the reasons seen (empty on most listeners).
    pub proxy_protocol_rejected: std::collections::BTreeMap<&'static str, u64>,
}

impl ListenerView {
    fn of(s: &ListenerStats) -> ListenerView {
        ListenerView {
            addr: s.addr.to_string(),
            open: s.open(),
            max_connections: ListenerStats::limit(&s.max_connections),
            max_connections_per_client: ListenerStats::limit(&s.max_per_client),
            full: s.full.load(Ordering::Relaxed),
            refused_per_client: s.refused_per_client.load(Ordering::Relaxed),
            accept_errors: s.accept_errors.load(Ordering::Relaxed),
            proxy_protocol_rejected: crate::metrics::PROXY_REFUSALS
                .iter()
                .zip(&s.proxy_refused)
                .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct UpstreamView {
    pub name: String,
    pub balance: &'static str,
    /// Static servers in config order, then those found by DNS, by id.
    pub servers: Vec<ServerView>,
    /// The last DNS resolution, when the upstream has `discover`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discover: Option<crate::metrics::DnsStatus>,
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
    /// `max_upgrades_per_sec`; `None` = no cap.
    pub max_upgrades_per_sec: Option<u32>,
    /// Upgrade tokens in the bucket now (its burst when full); `None` = no cap.
    pub upgrade_tokens: Option<u64>,
    /// Upgrades placed on the server, and turned away for want of a token.
    pub upgrades_admitted: u64,
    pub upgrades_deferred: u64,
    /// `static` (listed in `servers`) or `dns:NAME` (found by discovery).
    pub origin: String,
    /// One of [`crate::metrics::STATES`].
    pub state: &'static str,
    pub active: usize,
    pub tunnels: usize,
    pub total: u64,
    /// Times the dispatcher named this server.
    pub dispatches: u64,
    /// The load the server last reported (`[upstream.NAME.load]`), while
    /// fresh; `null` when not polled, failing or stale.
    pub reported_load: Option<u32>,
    /// The `max` in that report, if it gave one.
    pub reported_max: Option<u32>,
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
        let routing = shared.routing.load_full();
        let dns = shared.metrics.dns_statuses();
        let mut upstreams: Vec<UpstreamView> = routing
            .upstreams
            .values()
            .map(|up| UpstreamView {
                name: up.name.clone(),
                balance: balance_name(up.balance),
                servers: up.backends.iter().map(|b| ServerView::of(b)).collect(),
                discover: dns
                    .iter()
                    .find(|(name, _)| *name == up.name)
                    .map(|(_, s)| s.clone()),
            })
            .collect();
        upstreams.sort_by(|a, b| a.name.cmp(&b.name));
        let draining = shared
            .pool
            .draining
            .servers()
            .iter()
            .map(|s| DrainingView {
                upstream: s.upstream.clone(),
                server: ServerView::of_server(s, 0, false, None),
            })
            .collect();
        let listeners = shared
            .metrics
            .listeners()
            .iter()
            .map(|s| ListenerView::of(s))
            .collect();
        Status {
            uptime_secs,
            now_unix: unix(SystemTime::now()),
            upstreams,
            draining,
            listeners,
            http2: shared.metrics.h2.view(),
        }
    }
}

impl ServerView {
    pub fn of(b: &Backend) -> ServerView {
        let mut view = ServerView::of_server(b, b.weight, b.backup, b.max_conns);
        if let Some(name) = &b.origin {
            view.origin = format!("dns:{name}");
        }
        if let Some(rate) = b.upgrade_rate {
            view.max_upgrades_per_sec = Some(rate.per_second());
            let now = crate::backend::admission::now_ns();
            view.upgrade_tokens = Some(b.upgrades.tokens(rate, now));
        }
        view
    }

    /// A server with the settings the routing table gives it (a draining
    /// server is in none: weight 0).
    pub fn of_server(
        b: &Server,
        weight: u32,
        backup: bool,
        max_conns: Option<usize>,
    ) -> ServerView {
        let report = b.condition.snapshot_report();
        let reported = b.reported.get(crate::backend::now_ms());
        ServerView {
            id: b.id.clone(),
            addr: b.addr.to_string(),
            weight,
            backup,
            max_conns,
            max_upgrades_per_sec: None,
            upgrade_tokens: None,
            upgrades_admitted: b.upgrades.admitted(),
            upgrades_deferred: b.upgrades.deferred(),
            origin: "static".to_string(),
            state: server_state(b),
            active: b.active(),
            tunnels: b.tunnels(),
            total: b.total(),
            dispatches: b.dispatched(),
            reported_load: reported.map(|r| r.load),
            reported_max: reported.and_then(|r| r.max),
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
