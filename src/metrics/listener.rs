//! Each client listener's connections, for `/metrics` and `/status`: how
//! many are open, the limits in force, and how often a limit or the
//! operating system turned a client away. The counts are atomics that the
//! accept loop and its connections update (`listener/limit.rs`); a scrape
//! reads them into a fresh registry, as the pool's gauges are, so a listener
//! that a reload removed leaves `/metrics` once its last connection closes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// One listener's live counts and limits.
#[derive(Debug)]
pub struct ListenerStats {
    /// As bound (port 0 resolved), naming the series.
    pub addr: SocketAddr,
    /// Client connections open now, TLS handshakes and tunnels included.
    pub open: AtomicUsize,
    /// `max_connections` in force; 0 = no limit.
    pub max_connections: AtomicUsize,
    /// `max_connections_per_client` in force; 0 = no limit.
    pub max_per_client: AtomicUsize,
    /// Times the listener was full and stopped accepting until one closed.
    pub full: AtomicU64,
    /// Connections closed at once: their address had its share open.
    pub refused_per_client: AtomicU64,
    /// Failed accepts (usually out of file descriptors).
    pub accept_errors: AtomicU64,
    /// Connections closed for their PROXY protocol header, by reason
    /// (the index in [`PROXY_REFUSALS`]).
    pub proxy_refused: [AtomicU64; PROXY_REFUSALS.len()],
}

/// Why a `proxy_protocol` listener closed a connection before its header was
/// accepted: the `reason` label of `latch_proxy_protocol_rejected_total`.
pub const PROXY_REFUSALS: [&str; 8] = [
    "untrusted",
    "missing",
    "malformed",
    "oversized",
    "truncated",
    "closed",
    "timeout",
    "error",
];

impl ListenerStats {
    pub fn new(addr: SocketAddr) -> ListenerStats {
        ListenerStats {
            addr,
            open: AtomicUsize::new(0),
            max_connections: AtomicUsize::new(0),
            max_per_client: AtomicUsize::new(0),
            full: AtomicU64::new(0),
            refused_per_client: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            proxy_refused: Default::default(),
        }
    }

    /// Counts a connection closed for its PROXY header (`reason` is one of
    /// [`PROXY_REFUSALS`]; another counts as "error").
    pub fn proxy_refused(&self, reason: &str) {
        let i = PROXY_REFUSALS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(PROXY_REFUSALS.len() - 1);
        self.proxy_refused[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections closed for their PROXY header, every reason together.
    pub fn proxy_refused_total(&self) -> u64 {
        self.proxy_refused
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A limit as configured: `None` for none.
    pub fn limit(value: &AtomicUsize) -> Option<usize> {
        Some(value.load(Ordering::Relaxed)).filter(|&n| n > 0)
    }
}

/// The listeners alive now, held weakly: a listener's stats live as long as
/// its accept loop or any of its connections.
#[derive(Debug, Default)]
pub(super) struct Listeners(Mutex<Vec<Weak<ListenerStats>>>);

impl Listeners {
    pub(super) fn add(&self, addr: SocketAddr) -> Arc<ListenerStats> {
        let stats = Arc::new(ListenerStats::new(addr));
        let mut list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&stats));
        stats
    }

    /// The live ones, by address.
    pub(super) fn all(&self) -> Vec<Arc<ListenerStats>> {
        let list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<_> = list.iter().filter_map(Weak::upgrade).collect();
        out.sort_by_key(|s| s.addr);
        out
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    listener: String,
    reason: &'static str,
}

/// The listeners' series, built for one scrape.
pub(super) fn registry(listeners: &[Arc<ListenerStats>]) -> Registry {
    let open = Family::<ListenerLabel, Gauge>::default();
    let full = Family::<ListenerLabel, Counter>::default();
    let refused = Family::<RefusedLabels, Counter>::default();
    let errors = Family::<ListenerLabel, Counter>::default();
    let proxy = Family::<RefusedLabels, Counter>::default();
    for s in listeners {
        for (reason, n) in PROXY_REFUSALS.iter().zip(&s.proxy_refused) {
            let n = n.load(Ordering::Relaxed);
            // Only the reasons that happened: most listeners never see one.
            if n > 0 {
                let labels = RefusedLabels {
                    listener: s.addr.to_string(),
                    reason,
                };
                proxy.get_or_create(&labels).inc_by(n);
            }
        }
        let label = ListenerLabel {
            listener: s.addr.to_string(),
        };
        let n = i64::try_from(s.open()).unwrap_or(i64::MAX);
        open.get_or_create(&label).set(n);
        full.get_or_create(&label)
            .inc_by(s.full.load(Ordering::Relaxed));
        errors
            .get_or_create(&label)
            .inc_by(s.accept_errors.load(Ordering::Relaxed));
        let per_client = RefusedLabels {
            listener: label.listener,
            reason: "per_client",
        };
        refused
            .get_or_create(&per_client)
            .inc_by(s.refused_per_client.load(Ordering::Relaxed));
    }
    let mut r = Registry::default();
    r.register(
        "latch_listener_connections",
        "Client connections open on the listener (tunnels included)",
        open,
    );
    r.register(
        "latch_listener_full",
        "Times the listener reached max_connections and waited for a connection to close",
        full,
    );
    r.register(
        "latch_listener_refused",
        "Client connections closed at once, by reason (per_client: the address had its share open)",
        refused,
    );
    r.register(
        "latch_listener_accept_errors",
        "Failed accepts (usually out of file descriptors); the listener backs off",
        errors,
    );
    r.register(
        "latch_proxy_protocol_rejected",
        "Client connections closed for their PROXY protocol header, by reason (untrusted, \
         missing, malformed, oversized, truncated, closed, timeout, error)",
        proxy,
    );
    r
}
