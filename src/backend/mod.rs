//! Backends and their live state.
//!
//! A [`Backend`] is one server of an upstream: its address and weight from the
//! config, plus counters that the proxy moves with RAII guards ([`Active`],
//! [`Tunnel`]) so that every path — finish, error, client gone, cancellation —
//! gives the slot back. Selectors read this state; they never write it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

mod condition;

pub use condition::{Condition, now_ms};

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
    /// Health as checks see it, and slow start.
    pub condition: Condition,
    /// Requests in flight (head sent, response not finished).
    active: AtomicUsize,
    /// Open upgraded tunnels (WebSockets).
    tunnels: AtomicUsize,
    /// Requests ever sent here, for status and tests.
    total: AtomicU64,
}

impl Backend {
    /// A backend with no health checks, passive checks or slow start.
    pub fn new(cfg: &ServerConfig) -> Backend {
        let off = Passive { max_fails: 0, fail_timeout: std::time::Duration::ZERO };
        Backend::with_condition(cfg, Condition::new(off, None, true))
    }

    /// A server of `up`, with that upstream's passive checks and slow start.
    pub fn for_upstream(cfg: &ServerConfig, up: &UpstreamConfig) -> Backend {
        let start_up = up.check.as_ref().is_none_or(|c| c.start_up);
        Backend::with_condition(cfg, Condition::new(up.passive, up.slow_start, start_up))
    }

    fn with_condition(cfg: &ServerConfig, condition: Condition) -> Backend {
        Backend {
            condition,
            id: cfg.id.clone(),
            addr: cfg.addr,
            weight: cfg.weight,
            max_conns: cfg.max_conns,
            backup: cfg.backup,
            active: AtomicUsize::new(0),
            tunnels: AtomicUsize::new(0),
            total: AtomicU64::new(0),
        }
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
        self.active.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        Active(self.clone())
    }

    /// Like [`Backend::start_request`], but only below `max_conns`; the check
    /// and the increment are one atomic step, so racing requests cannot
    /// overshoot the limit.
    pub fn try_start_request(self: &Arc<Self>) -> Option<Active> {
        let Some(max) = self.max_conns else {
            return Some(self.start_request());
        };
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                (a + self.tunnels() < max).then_some(a + 1)
            })
            .ok()?;
        self.total.fetch_add(1, Ordering::Relaxed);
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
        self.0.tunnels.fetch_sub(1, Ordering::Relaxed);
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
