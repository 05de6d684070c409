//! What latch counts, for Prometheus: the admin listener serves it at
//! `/metrics`.
//!
//! Two kinds of series. Events (requests, retries, checks, reloads, TLS
//! failures) are counted as they happen, into prometheus-client families that
//! live as long as the process; the proxy and the checkers call the methods
//! of [`Metrics`] on their hot paths; per-request series are resolved once
//! into [`UpstreamMetrics`] handles, so counting a request is an atomic add.
//! The state of the pool (load, health, weight of each server) is not counted
//! at all: the caller passes it in at each scrape and it is read into a fresh
//! registry (`metrics/pool.rs`), so a server that leaves with a reload leaves
//! `/metrics` too instead of lingering with its last values.
//!
//! Series name servers by their id (the configured address unless `id` is
//! set), so they stay the same series across reloads. Client listeners'
//! connection counts (`metrics/listener.rs`) are read at each scrape too.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::backend::{Backend, Server};

/// Content type of [`Metrics::encode`]'s output (OpenMetrics text, which
/// Prometheus scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the latency buckets: 1 ms to 30 s, about ×2.5.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    upstream: String,
    server: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    upstream: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    upstream: String,
    result: &'static str,
}

type Durations = Family<UpstreamLabel, Histogram, fn() -> Histogram>;

fn durations() -> Histogram {
    Histogram::new(BUCKETS)
}

/// latch's counters and histograms; one per process, shared by reference.
#[derive(Debug)]
pub struct Metrics {
    /// Holds clones of the families below (they share their values).
    registry: Registry,
    /// TCP mode's bytes and connections.
    pub stream: stream::StreamMetrics,
    /// HTTP/2 to clients: connections, streams, WebSockets over HTTP/2.
    pub h2: h2::H2Metrics,
    requests: Family<RequestLabels, Counter>,
    request_duration: Durations,
    retries: Family<RetryLabels, Counter>,
    tls_failures: Counter,
    reloads: Family<OutcomeLabel, Counter>,
    checks: Family<CheckLabels, Counter>,
    check_duration: Durations,
    /// Every client listener's connection counts (read at each scrape).
    listeners: listener::Listeners,
    /// WebSockets latch ended itself, by reason and close code.
    goodbyes: Family<GoodbyeLabels, Counter>,
    /// DNS resolutions by upstream and result.
    dns_resolutions: Family<dns::DnsLabels, Counter>,
    /// The last resolution of each discovering upstream (for `/status`).
    dns: dns::Statuses,
    /// `sticky.mode = "session_id"`: handshakes tagged, requests pinned.
    session_ids: Family<SessionLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    upstream: String,
    /// "tagged" (a handshake answer got a tagged id) or "pinned" (a request
    /// was pinned by a verified tagged id).
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GoodbyeLabels {
    reason: &'static str,
    code: u16,
    /// "sent", or "cut" when no close frame could reach the client.
    client: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            stream: stream::StreamMetrics::default(),
            h2: h2::H2Metrics::default(),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(durations),
            retries: Family::default(),
            tls_failures: Counter::default(),
            reloads: Family::default(),
            checks: Family::default(),
            check_duration: Family::new_with_constructor(durations),
            listeners: listener::Listeners::default(),
            goodbyes: Family::default(),
            dns_resolutions: Family::default(),
            dns: dns::Statuses::default(),
            session_ids: Family::default(),
        };
        let mut r = Registry::default();
        m.stream.register(&mut r);
        m.h2.register(&mut r);
        r.register(
            "latch_requests",
            "Proxied requests by final status class",
            m.requests.clone(),
        );
        r.register_with_unit(
            "latch_request_duration",
            "Time from request head to response head",
            Unit::Seconds,
            m.request_duration.clone(),
        );
        r.register("latch_retries", "Retried attempts", m.retries.clone());
        r.register(
            "latch_session_ids",
            "Session-id stickiness: handshakes tagged and requests pinned by a tagged id",
            m.session_ids.clone(),
        );
        r.register(
            "latch_tls_handshake_failures",
            "Client TLS handshakes that failed",
            m.tls_failures.clone(),
        );
        r.register("latch_reloads", "Config reloads", m.reloads.clone());
        r.register("latch_checks", "Active health probes", m.checks.clone());
        r.register_with_unit(
            "latch_check_duration",
            "Time an active health probe took",
            Unit::Seconds,
            m.check_duration.clone(),
        );
        r.register(
            "latch_tunnel_goodbyes",
            "WebSockets latch ended itself (stop, removed server, idle, backend lost, client gone), by close code",
            m.goodbyes.clone(),
        );
        r.register(
            "latch_dns_resolutions",
            "DNS resolutions of discover names, by result (ok, nxdomain, empty, error)",
            m.dns_resolutions.clone(),
        );
        // Both outcomes exist from the start, so `rate()` sees the first one.
        for outcome in ["ok", "error"] {
            let _ = m.reloads.get_or_create(&OutcomeLabel { outcome });
        }
        Metrics { registry: r, ..m }
    }

    /// One proxied request, counted once with its final answer. `server` is
    /// the chosen server's id, or "" when none was chosen.
    pub fn request(&self, upstream: &str, server: &str, status: u16, elapsed: Duration) {
        let labels = RequestLabels {
            upstream: upstream.to_owned(),
            server: server.to_owned(),
            class: status_class(status),
        };
        self.requests.get_or_create(&labels).inc();
        let upstream = UpstreamLabel {
            upstream: labels.upstream,
        };
        let histogram = self.request_duration.get_or_create(&upstream);
        histogram.observe(elapsed.as_secs_f64());
    }

    /// Handles for the request series of upstream `name` and its servers
    /// (`ids`, in the upstream's order), so that counting a request is an
    /// atomic add with no label strings built. Series appear on first use.
    pub fn upstream(&self, name: &str, ids: &[&str]) -> UpstreamMetrics {
        UpstreamMetrics {
            name: name.to_owned(),
            ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            requests: self.requests.clone(),
            durations: self.request_duration.clone(),
            by_server: ids.iter().map(|_| Default::default()).collect(),
            duration: Default::default(),
        }
    }

    /// One retried attempt; `reason` as in `retry.on` (error, timeout,
    /// invalid_header, http_502, ...).
    pub fn retry(&self, upstream: &str, reason: &str) {
        let labels = RetryLabels {
            upstream: upstream.to_owned(),
            reason: reason.to_owned(),
        };
        self.retries.get_or_create(&labels).inc();
    }

    /// `session_id` stickiness: `event` is "tagged" or "pinned".
    pub fn session_id(&self, upstream: &str, event: &'static str) {
        let labels = SessionLabels {
            upstream: upstream.to_owned(),
            event,
        };
        self.session_ids.get_or_create(&labels).inc();
    }

    /// A tunnel ended; counted when latch said goodbye on it.
    pub fn tunnel_ended(&self, moved: &crate::proxy::tunnel::Moved) {
        if let Some(g) = moved.goodbye {
            let labels = GoodbyeLabels {
                reason: g.reason(),
                code: g.code(),
                client: if moved.close_sent { "sent" } else { "cut" },
            };
            self.goodbyes.get_or_create(&labels).inc();
        }
    }

    pub fn tls_handshake_failure(&self) {
        self.tls_failures.inc();
    }

    pub fn reload(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// One active probe of a server of `upstream`.
    pub fn check(&self, upstream: &str, ok: bool, elapsed: Duration) {
        let labels = CheckLabels {
            upstream: upstream.to_owned(),
            result: if ok { "ok" } else { "fail" },
        };
        self.checks.get_or_create(&labels).inc();
        let upstream = UpstreamLabel {
            upstream: labels.upstream,
        };
        let histogram = self.check_duration.get_or_create(&upstream);
        histogram.observe(elapsed.as_secs_f64());
    }

    /// One resolution of `upstream`'s discover name; `result` is `ok`,
    /// `nxdomain`, `empty` or `error`.
    pub fn dns_resolution(&self, upstream: &str, result: &'static str) {
        let labels = dns::DnsLabels {
            upstream: upstream.to_owned(),
            result,
        };
        self.dns_resolutions.get_or_create(&labels).inc();
    }

    /// Records `upstream`'s last resolution, shown by `/status`.
    pub fn set_dns_status(&self, upstream: &str, status: DnsStatus) {
        self.dns.set(upstream, status);
    }

    /// Every discovering upstream's last resolution, by upstream name.
    pub fn dns_statuses(&self) -> Vec<(String, DnsStatus)> {
        self.dns.all()
    }

    /// Forgets the statuses of upstreams that no longer discover.
    pub fn retain_dns(&self, keep: &dyn Fn(&str) -> bool) {
        self.dns.retain(keep);
    }

    /// Counts for a client listener bound at `addr`, shown until the
    /// returned handle and all its clones are gone.
    pub fn listener(&self, addr: std::net::SocketAddr) -> Arc<ListenerStats> {
        self.listeners.add(addr)
    }

    /// The client listeners alive now, by address.
    pub fn listeners(&self) -> Vec<Arc<ListenerStats>> {
        self.listeners.all()
    }

    /// The whole exposition ([`CONTENT_TYPE`]): the event series, the
    /// listeners, then the pool as given: each upstream's servers, and the
    /// draining servers.
    pub fn encode(
        &self,
        upstreams: &[(&str, &[Arc<Backend>])],
        draining: &[Arc<Server>],
    ) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = text::encode_registry(&mut out, &self.registry);
        let listeners = listener::registry(&self.listeners.all());
        let _ = text::encode_registry(&mut out, &listeners);
        let _ = text::encode_registry(&mut out, &pool::registry(upstreams, draining));
        let _ = text::encode_eof(&mut out);
        out
    }
}

/// One upstream's request series, resolved lazily and then kept.
pub struct UpstreamMetrics {
    name: String,
    ids: Vec<String>,
    requests: Family<RequestLabels, Counter>,
    durations: Durations,
    /// Per server, per status class (see [`class_index`]).
    by_server: Vec<[OnceLock<Counter>; CLASSES]>,
    duration: OnceLock<Histogram>,
}

impl std::fmt::Debug for UpstreamMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamMetrics")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl UpstreamMetrics {
    /// A request answered by the server at `index` of the upstream's list.
    pub fn request(&self, index: usize, status: u16, elapsed: Duration) {
        let class = class_index(status);
        if let Some(slots) = self.by_server.get(index) {
            let counter = slots[class].get_or_init(|| {
                let labels = RequestLabels {
                    upstream: self.name.clone(),
                    server: self.ids[index].clone(),
                    class: CLASS_NAMES[class],
                };
                self.requests.get_or_create(&labels).clone()
            });
            counter.inc();
        }
        let histogram = self.duration.get_or_init(|| {
            let label = UpstreamLabel {
                upstream: self.name.clone(),
            };
            self.durations.get_or_create(&label).clone()
        });
        histogram.observe(elapsed.as_secs_f64());
    }
}

const CLASSES: usize = 6;
const CLASS_NAMES: [&str; CLASSES] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

fn class_index(status: u16) -> usize {
    match status / 100 {
        1..=5 => usize::from(status / 100) - 1,
        _ => 5,
    }
}

/// "2xx" for 200..=299 and so on; "other" outside 100..=599.
fn status_class(status: u16) -> &'static str {
    CLASS_NAMES[class_index(status)]
}

mod dns;
pub mod h2;
mod listener;
mod pool;
pub mod stream;

pub use dns::DnsStatus;
pub use listener::{ListenerStats, PROXY_REFUSALS};
pub use pool::{STATES, server_state};

#[cfg(test)]
mod tests;
