//! Backends and their live state.
//!
//! A [`Backend`] is one server of an upstream: its address and weight from the
//! config, plus counters that the proxy moves with RAII guards ([`Active`],
//! [`Tunnel`]) so that every path — finish, error, client gone, cancellation —
//! gives the slot back. Selectors read this state; they never write it.
//!
//! A reload builds new `Backend`s from the new config, but a server that
//! stays (same upstream, same `id`, same address) shares its live state — the
//! counters and the [`Condition`] — with its predecessor, so its counts,
//! health and slow start carry over, and guards taken before the reload still
//! count against it. A server that leaves is *draining*: no new requests, and
//! its tunnels close when they end or when the grace period does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio_util::sync::CancellationToken;

mod condition;

pub use condition::{Condition, Report, now_ms};

use crate::config::{Passive, ServerConfig, UpstreamConfig};

/// One server of an upstream.
#[derive(Debug)]
pub struct Backend {
    /// Stable identity: the configured address as text. It does not depend on
    /// the server's position in the list, so reordering servers changes nothing.
    pub id: String,
    pub addr: SocketAddr,
    pub weight: u32,
    /// Requests + tunnels allowed at once.
    pub max_conns: Option<usize>,
    /// Used only while no primary can take a request.
    pub backup: bool,
    /// Health as checks see it, and slow start (kept across reloads).
    pub condition: Arc<Condition>,
    /// Counters and the drain signal (kept across reloads).
    live: Arc<Live>,
}

/// The state of a server that outlives any one config.
#[derive(Debug, Default)]
struct Live {
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
}

impl Backend {
    /// A backend with no health checks, passive checks or slow start.
    pub fn new(cfg: &ServerConfig) -> Backend {
        let off = Passive {
            max_fails: 0,
            fail_timeout: std::time::Duration::ZERO,
        };
        Backend::build(
            cfg,
            Arc::new(Condition::new(off, None, true)),
            Arc::default(),
        )
    }

    /// A server of `up`, with that upstream's passive checks and slow start.
    /// With `previous` (the same server in the config being replaced), the
    /// live state carries over and only the settings change.
    pub fn for_upstream(
        cfg: &ServerConfig,
        up: &UpstreamConfig,
        previous: Option<&Backend>,
    ) -> Backend {
        match previous {
            Some(p) => {
                p.condition.reconfigure(up.passive, up.slow_start);
                Backend::build(cfg, p.condition.clone(), p.live.clone())
            }
            None => {
                let start_up = up.check.as_ref().is_none_or(|c| c.start_up);
                let condition = Condition::new(up.passive, up.slow_start, start_up);
                Backend::build(cfg, Arc::new(condition), Arc::default())
            }
        }
    }

    fn build(cfg: &ServerConfig, condition: Arc<Condition>, live: Arc<Live>) -> Backend {
        Backend {
            condition,
            live,
            id: cfg.id.clone(),
            addr: cfg.addr,
            weight: cfg.weight,
            max_conns: cfg.max_conns,
            backup: cfg.backup,
        }
    }

    /// Whether `other` is this same server in another config generation.
    pub fn same_server(&self, other: &Backend) -> bool {
        Arc::ptr_eq(&self.live, &other.live)
    }

    /// Marks the server as removed: it takes no new requests (it is no longer
    /// in any snapshot) and its tunnels close on [`Backend::close_tunnels`].
    pub fn start_draining(&self) {
        self.live.draining.store(true, Ordering::Release);
    }

    pub fn draining(&self) -> bool {
        self.live.draining.load(Ordering::Acquire)
    }

    /// Ends the tunnels of a draining server (its grace period is over).
    pub fn close_tunnels(&self) {
        self.live.closed.cancel();
    }

    /// Resolves when the server's tunnels must close.
    pub fn tunnels_closed(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.live.closed.clone().cancelled_owned()
    }

    pub fn active(&self) -> usize {
        self.live.active.load(Ordering::Relaxed)
    }

    pub fn tunnels(&self) -> usize {
        self.live.tunnels.load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        self.live.total.load(Ordering::Relaxed)
    }

    /// Weight to balance with now: the configured weight in thousandths,
    /// reduced while slow start ramps (so even weight 1 can ramp smoothly).
    pub fn effective_weight(&self) -> u64 {
        u64::from(self.weight) * self.condition.weight_permille()
    }

    /// In-flight requests plus open tunnels: what least-connections compares.
    pub fn load(&self) -> usize {
        self.active() + self.tunnels()
    }

    /// At `max_conns`: takes nothing new.
    pub fn is_full(&self) -> bool {
        self.max_conns.is_some_and(|m| self.load() >= m)
    }

    /// Counts one request in flight until the guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> Active {
        self.live.active.fetch_add(1, Ordering::Relaxed);
        self.live.total.fetch_add(1, Ordering::Relaxed);
        Active(self.clone())
    }

    /// Like [`Backend::start_request`], but only below `max_conns`; the check
    /// and the increment are one atomic step, so racing requests cannot
    /// overshoot the limit.
    pub fn try_start_request(self: &Arc<Self>) -> Option<Active> {
        let Some(max) = self.max_conns else {
            return Some(self.start_request());
        };
        self.live
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                (a + self.tunnels() < max).then_some(a + 1)
            })
            .ok()?;
        self.live.total.fetch_add(1, Ordering::Relaxed);
        Some(Active(self.clone()))
    }
}

// === impl Active ===

/// One request in flight on a backend; decrements on drop.
#[derive(Debug)]
pub struct Active(Arc<Backend>);

impl Active {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.0
    }

    /// The request became a tunnel: it stops counting as a request and starts
    /// counting as a tunnel, with no moment where it counts as neither.
    pub fn into_tunnel(self) -> Tunnel {
        self.0.live.tunnels.fetch_add(1, Ordering::Relaxed);
        Tunnel(self.0.clone())
        // `self` drops here and releases the request slot.
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.live.active.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl Tunnel ===

/// One open tunnel on a backend; decrements on drop.
#[derive(Debug)]
pub struct Tunnel(Arc<Backend>);

impl Tunnel {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.0
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.0.live.tunnels.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_exactly() {
        let b = Arc::new(Backend::new(&ServerConfig::new(
            "127.0.0.1:1".parse().unwrap(),
            1,
        )));
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
