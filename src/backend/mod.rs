//! Backends: the long-lived [`Server`]s of the pool, and the [`Backend`] view
//! of one in the routing table.
//!
//! A [`Server`] is what lives across reloads: its live counters, moved by RAII
//! guards ([`Active`], [`Tunnel`]) so that every path — finish, error, client
//! gone, cancellation — gives the slot back; its health [`Condition`]; its
//! drain flag; and its idle upstream connections. The [`Pool`] owns every
//! server by `(upstream, id, address)`; reload (and later discovery) is the
//! only writer of that set. A reload builds a new routing table whose
//! [`Backend`]s point at the pool's servers, so a server that stays keeps its
//! counts, health, slow start *and* its keep-alive connections. A server that
//! leaves is *draining*: no new requests, and its tunnels close when they end
//! or when the grace period does.
//!
//! A [`Backend`] adds what the config says about the server in one routing
//! generation (weight, `max_conns`, backup) and derefs to its [`Server`].

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio_util::sync::CancellationToken;

pub mod admission;
mod condition;
pub mod conn;
mod pool;
mod reported;

pub use condition::{Condition, Report, now_ms};
pub use pool::{Draining, Pool, ServerKey};
pub use reported::{Report as LoadReport, Reported};

use crate::config::{Passive, ServerConfig, UpstreamConfig};

/// One server of an upstream as the pool keeps it, across reloads.
#[derive(Debug)]
pub struct Server {
    /// The upstream it belongs to (a server listed in two upstreams is two
    /// servers: their counts and health are separate).
    pub upstream: String,
    /// Stable identity: the configured `id`, or the address as text. It does
    /// not depend on the server's position in the list.
    pub id: String,
    pub addr: SocketAddr,
    /// Health as checks see it, and slow start.
    pub condition: Condition,
    /// Requests in flight (head sent, response not finished).
    active: AtomicUsize,
    /// Open upgraded tunnels (WebSockets).
    tunnels: AtomicUsize,
    /// Requests ever sent here, for status and tests.
    total: AtomicU64,
    /// Removed from the config by a reload.
    draining: AtomicBool,
    /// Cancelled when a draining server's tunnels must close.
    closed: CancellationToken,
    /// Keep-alive connections to this server, waiting for a request.
    pub idle: conn::Idle,
    /// Connections ever opened to it for requests (the rest reused one).
    opened: AtomicU64,
    /// The load the server last reported itself (`[upstream.NAME.load]`).
    pub reported: Reported,
    /// Times the dispatcher named this server, for status and metrics.
    dispatched: AtomicU64,
    /// Dispatches since the server's last load report: clients sent there
    /// that no report counts yet (so the dispatcher does not send every
    /// client to one server between two polls).
    pending: AtomicU64,
    /// The `max_upgrades_per_sec` bucket and upgrade counts; here, not in
    /// the routing table, so a reload does not refill it.
    pub upgrades: admission::UpgradeGate,
}

impl Server {
    /// A server of `up` with that upstream's passive checks and slow start.
    pub fn new(upstream: &str, cfg: &ServerConfig, up: &UpstreamConfig) -> Server {
        let start_up = up.check.as_ref().is_none_or(|c| c.start_up);
        Server::with_condition(
            upstream,
            cfg,
            Condition::new(up.passive, up.slow_start, start_up),
        )
    }

    fn with_condition(upstream: &str, cfg: &ServerConfig, condition: Condition) -> Server {
        Server {
            upstream: upstream.to_owned(),
            id: cfg.id.clone(),
            addr: cfg.addr,
            condition,
            active: AtomicUsize::new(0),
            tunnels: AtomicUsize::new(0),
            total: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            closed: CancellationToken::new(),
            idle: conn::Idle::default(),
            opened: AtomicU64::new(0),
            reported: Reported::default(),
            dispatched: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            upgrades: admission::UpgradeGate::default(),
        }
    }

    /// Marks the server as removed: it takes no new requests (it is no longer
    /// in the routing table), its idle connections close, and its tunnels
    /// close on [`Server::close_tunnels`].
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.idle.clear();
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Ends the tunnels of a draining server (its grace period is over).
    pub fn close_tunnels(&self) {
        self.closed.cancel();
    }

    /// Resolves when the server's tunnels must close.
    pub fn tunnels_closed(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.closed.clone().cancelled_owned()
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    pub fn tunnels(&self) -> usize {
        self.tunnels.load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// A connection to the server was opened for a request.
    pub fn connection_opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections opened for requests so far (requests on reused
    /// connections do not count).
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// In-flight requests plus open tunnels: latch's own count.
    pub fn load(&self) -> usize {
        self.active() + self.tunnels()
    }

    /// What least-connections and P2C compare: latch's own count, or the
    /// load the server reported when that is higher and still fresh (other
    /// balancers' sessions count too).
    pub fn balance_load(&self) -> usize {
        let own = self.load();
        if !self.reported.maybe() {
            return own;
        }
        match self.reported.get(now_ms()) {
            Some(r) => own.max(r.load as usize),
            None => own,
        }
    }

    /// Stores a fresh load report; the dispatches it now counts are no
    /// longer pending.
    pub fn set_reported(&self, report: LoadReport, until_ms: u64) {
        self.reported.set(report, until_ms);
        self.pending.store(0, Ordering::Relaxed);
    }

    /// Counts one dispatch to this server.
    pub fn count_dispatch(&self) {
        self.dispatched.fetch_add(1, Ordering::Relaxed);
        self.pending.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dispatched(&self) -> u64 {
        self.dispatched.load(Ordering::Relaxed)
    }

    /// Dispatches no load report counts yet.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }
}

/// One server as one routing generation sees it: the config's settings for
/// it, and the pool's [`Server`] it derefs to.
#[derive(Debug)]
pub struct Backend {
    server: Arc<Server>,
    pub weight: u32,
    /// Requests + tunnels allowed at once.
    pub max_conns: Option<usize>,
    /// Used only while no primary can take a request.
    pub backup: bool,
    /// The DNS name it was discovered under; `None` when listed in `servers`.
    pub origin: Option<Arc<str>>,
    /// `"host:port"` addresses the dispatcher hands out; empty = `addr`.
    pub advertise: Vec<String>,
    /// `max_upgrades_per_sec`: the bucket's shape; `None` = no cap.
    pub upgrade_rate: Option<admission::Rate>,
}

impl Deref for Backend {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl Backend {
    /// A backend of its own, with no health checks, passive checks or slow
    /// start, and in no pool (for tests and benchmarks of the algorithms).
    pub fn new(cfg: &ServerConfig) -> Backend {
        Backend::standalone("", cfg)
    }

    /// Like [`Backend::new`], in upstream `upstream`.
    pub fn standalone(upstream: &str, cfg: &ServerConfig) -> Backend {
        let off = Passive {
            max_fails: 0,
            fail_timeout: std::time::Duration::ZERO,
        };
        let server = Server::with_condition(upstream, cfg, Condition::new(off, None, true));
        Backend::on(Arc::new(server), cfg)
    }

    /// The view of `server` that `cfg` describes.
    pub fn on(server: Arc<Server>, cfg: &ServerConfig) -> Backend {
        Backend {
            server,
            weight: cfg.weight,
            max_conns: cfg.max_conns,
            backup: cfg.backup,
            origin: cfg.origin.clone(),
            advertise: cfg.advertise.clone(),
            upgrade_rate: cfg.max_upgrades_per_sec.map(admission::Rate::per_sec),
        }
    }

    /// The pool's server behind this view.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// Whether `other` is this same server in another routing generation.
    pub fn same_server(&self, other: &Backend) -> bool {
        Arc::ptr_eq(&self.server, &other.server)
    }

    /// Weight to balance with now: the configured weight in thousandths,
    /// reduced while slow start ramps (so even weight 1 can ramp smoothly).
    pub fn effective_weight(&self) -> u64 {
        u64::from(self.weight) * self.condition.weight_permille()
    }

    /// At `max_conns`: takes nothing new.
    pub fn is_full(&self) -> bool {
        self.max_conns.is_some_and(|m| self.load() >= m)
    }

    /// Whether an upgrade arriving at `now` ([`admission::now_ns`]) would get
    /// a token here (none is taken).
    pub fn upgrade_room(&self, now: u64) -> bool {
        self.upgrade_rate
            .is_none_or(|r| self.server.upgrades.has_room(r, now))
    }

    /// Takes an upgrade token at `now` (always, with no cap), counting the
    /// upgrade as admitted; `false` counts it as deferred.
    pub fn admit_upgrade(&self, now: u64) -> bool {
        let gate = &self.server.upgrades;
        match self.upgrade_rate {
            None => {
                gate.admit();
                true
            }
            Some(r) => gate.try_take(r, now),
        }
    }

    /// Counts one request in flight until the guard is dropped.
    pub fn start_request(&self) -> Active {
        self.server.active.fetch_add(1, Ordering::Relaxed);
        self.server.total.fetch_add(1, Ordering::Relaxed);
        Active(self.server.clone())
    }

    /// Like [`Backend::start_request`], but only below `max_conns`; the check
    /// and the increment are one atomic step, so racing requests cannot
    /// overshoot the limit.
    pub fn try_start_request(&self) -> Option<Active> {
        let Some(max) = self.max_conns else {
            return Some(self.start_request());
        };
        let s = &self.server;
        s.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                (a + s.tunnels() < max).then_some(a + 1)
            })
            .ok()?;
        s.total.fetch_add(1, Ordering::Relaxed);
        Some(Active(s.clone()))
    }
}

// === impl Active ===

/// One request in flight on a server; decrements on drop.
#[derive(Debug)]
pub struct Active(Arc<Server>);

impl Active {
    pub fn server(&self) -> &Arc<Server> {
        &self.0
    }

    /// The request became a tunnel: it stops counting as a request and starts
    /// counting as a tunnel, with no moment where it counts as neither.
    pub fn into_tunnel(self) -> Tunnel {
        self.0.tunnels.fetch_add(1, Ordering::Relaxed);
        Tunnel(self.0.clone())
        // `self` drops here and releases the request slot.
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl Tunnel ===

/// One open tunnel on a server; decrements on drop.
#[derive(Debug)]
pub struct Tunnel(Arc<Server>);

impl Tunnel {
    pub fn server(&self) -> &Arc<Server> {
        &self.0
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.0.tunnels.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_exactly() {
        let b = Backend::new(&ServerConfig::new("127.0.0.1:1".parse().unwrap(), 1));
        let a1 = b.start_request();
        let a2 = b.start_request();
        assert_eq!((b.active(), b.tunnels()), (2, 0));
        let t = a1.into_tunnel();
        assert_eq!((b.active(), b.tunnels()), (1, 1));
        drop(a2);
        assert_eq!(b.load(), 1);
        drop(t);
        assert_eq!((b.active(), b.tunnels(), b.total()), (0, 0, 2));
    }
}
