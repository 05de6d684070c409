//! The pool's side of `/metrics`: gauges of every server's load, health and
//! weight, read from the live state at each scrape into a fresh registry.
//! Building them per scrape (rather than updating long-lived gauges) means a
//! server that leaves with a reload leaves `/metrics` too.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::backend::{Backend, Server};

/// Every value of the `state` label, in display order.
pub const STATES: [&str; 5] = ["up", "slow_start", "down", "out", "draining"];

/// How an operator names the state of a server: `draining` (removed by a
/// reload, tunnels still open), `down` (failing active checks), `out` (taken
/// out by passive checks), `slow_start` (back, weight still ramping) or `up`.
pub fn server_state(b: &Server) -> &'static str {
    let c = &b.condition;
    if b.draining() {
        "draining"
    } else if !c.active_up() {
        "down"
    } else if c.passive_down() {
        "out"
    } else if c.ramping() {
        "slow_start"
    } else {
        "up"
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    upstream: String,
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    upstream: String,
    state: &'static str,
}

/// The pool's gauges, built for one scrape. A draining server that has come
/// back under the same id adds its load to the new one's series.
pub(super) fn registry(
    upstreams: &[(&str, &[Arc<Backend>])],
    draining: &[Arc<Server>],
) -> Registry {
    let active = Family::<ServerLabels, Gauge>::default();
    let tunnels = Family::<ServerLabels, Gauge>::default();
    let up = Family::<ServerLabels, Gauge>::default();
    let weight = Family::<ServerLabels, Gauge>::default();
    let total = Family::<ServerLabels, Counter>::default();
    let opened = Family::<ServerLabels, Counter>::default();
    let idle = Family::<ServerLabels, Gauge>::default();
    let dispatches = Family::<ServerLabels, Counter>::default();
    let reported = Family::<ServerLabels, Gauge>::default();
    let admitted = Family::<ServerLabels, Counter>::default();
    let deferred = Family::<ServerLabels, Counter>::default();
    let states = Family::<StateLabels, Gauge>::default();

    let count = |upstream: &str, b: &Server| {
        let labels = ServerLabels {
            upstream: upstream.to_owned(),
            server: b.id.clone(),
        };
        active.get_or_create(&labels).inc_by(gauge(b.active()));
        tunnels.get_or_create(&labels).inc_by(gauge(b.tunnels()));
        total.get_or_create(&labels).inc_by(b.total());
        opened.get_or_create(&labels).inc_by(b.connections_opened());
        idle.get_or_create(&labels).inc_by(gauge(b.idle.len()));
        if b.dispatched() > 0 {
            dispatches.get_or_create(&labels).inc_by(b.dispatched());
        }
        if let Some(r) = b.reported.get(crate::backend::now_ms()) {
            reported.get_or_create(&labels).set(i64::from(r.load));
        }
        admitted
            .get_or_create(&labels)
            .inc_by(b.upgrades.admitted());
        deferred
            .get_or_create(&labels)
            .inc_by(b.upgrades.deferred());
        let state = server_state(b);
        states
            .get_or_create(&StateLabels {
                upstream: upstream.to_owned(),
                state,
            })
            .inc();
        labels
    };
    // Every state of every upstream is a series, 0 when no server is in it.
    for (upstream, _) in upstreams {
        for state in STATES {
            let labels = StateLabels {
                upstream: upstream.to_string(),
                state,
            };
            states.get_or_create(&labels).set(0);
        }
    }
    for b in draining {
        let labels = count(&b.upstream, b);
        up.get_or_create(&labels).set(0);
    }
    for (upstream, backends) in upstreams {
        for b in backends.iter() {
            let labels = count(upstream, b);
            up.get_or_create(&labels)
                .set(i64::from(b.condition.usable()));
            let permille = i64::try_from(b.condition.weight_permille()).unwrap_or(i64::MAX);
            weight.get_or_create(&labels).set(permille);
        }
    }

    let mut r = Registry::default();
    r.register(
        "latch_server_active_requests",
        "Requests in flight to the server",
        active,
    );
    r.register(
        "latch_server_open_tunnels",
        "Open upgraded tunnels (WebSockets) to the server",
        tunnels,
    );
    r.register(
        "latch_server_up",
        "1 when the server takes new requests (health checks pass)",
        up,
    );
    r.register(
        "latch_server_weight_permille",
        "Share of its weight the server has now (below 1000 during slow start)",
        weight,
    );
    r.register(
        "latch_server_requests",
        "Requests ever sent to the server",
        total,
    );
    r.register(
        "latch_server_connections_opened",
        "Connections opened to the server for requests (the others reused an idle one)",
        opened,
    );
    r.register(
        "latch_server_idle_connections",
        "Keep-alive connections to the server waiting in latch's pool",
        idle,
    );
    r.register(
        "latch_server_dispatches",
        "Times a dispatch route named the server",
        dispatches,
    );
    r.register(
        "latch_server_reported_load",
        "Load the server reported itself, while the report is fresh",
        reported,
    );
    r.register(
        "latch_server_upgrades_admitted",
        "WebSocket upgrades placed on the server (within max_upgrades_per_sec)",
        admitted,
    );
    r.register(
        "latch_server_upgrades_deferred",
        "WebSocket upgrades turned away from the server for want of a max_upgrades_per_sec token (placed elsewhere or answered 503)",
        deferred,
    );
    r.register(
        "latch_upstream_servers",
        "Servers of the upstream by state",
        states,
    );
    r
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
