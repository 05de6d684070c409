//! The placement policy of one upstream: which backend takes a request, given
//! its [`RequestKey`], stickiness, health, limits and backup servers. Pure:
//! no sockets, no headers. The key is built once per request by the proxy
//! (client address, verified pin, hash of the configured key), and the
//! policy is asked once per attempt with the servers already tried.
//!
//! Order, as HAProxy and sozu do it:
//! 1. A verified pin naming a usable backend wins. A pin that is forged,
//!    expired or unknown, or names a backend that is down, full or already
//!    tried, is ignored and the request is placed anew (sticky falls back to
//!    normal selection; the caller re-pins the client).
//! 2. Otherwise the upstream's placement picks among usable primaries; only
//!    when none is usable does it pick among usable backups.
//! 3. "Usable" means up and not at `max_conns`. The slot is claimed
//!    atomically, so two racing requests cannot push a backend over its limit.
//! 4. When no server is up at all, `all_down` decides between placing on them
//!    anyway (least bad) and refusing.
//! 5. An upgrade (WebSocket) request also needs a token from the server's
//!    `max_upgrades_per_sec` bucket: a server without one is skipped like a
//!    full one (a pin to it is re-placed), and when no server has a token the
//!    caller answers 503 with a jittered `Retry-After` ([`upgrade_throttled`]).
//!    Plain requests never look at the buckets.

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::error;

use super::{Balancer, Maglev, Request};
use crate::backend::{Active, Backend};
use crate::config::{AllDown, Balance, Sticky, UpstreamConfig};

/// What places a request that has no valid pin.
#[derive(Debug)]
pub enum Placement {
    /// A balance algorithm (round robin, least_conn, random).
    Balancer(Box<dyn Balancer>),
    /// A consistent hash of the request key (ip_hash, hash, sticky ip_hash).
    Ring(Maglev),
}

/// What the policy knows of a request; built once, before the first attempt.
#[derive(Debug, Clone, Copy)]
pub struct RequestKey<'a> {
    pub client_ip: IpAddr,
    pub path: &'a str,
    /// Hash of the configured key (ring placement only; 0 otherwise).
    pub hash: u64,
    pub pin: Pin,
    /// `Some(now)` for an upgrade (WebSocket) request: the time, in ns of
    /// [`crate::backend::admission::now_ns`], its admission is judged at.
    pub upgrade: Option<u64>,
}

/// A sticky pin as the request carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// No pin (or stickiness is not by cookie).
    Absent,
    /// A verified pin: the index of the backend it names.
    To(usize),
    /// A pin that did not verify (forged, expired, or naming no server).
    Invalid,
}

/// How a request's server was chosen: the access log's answer to "why did
/// this client go to that server?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Its verified pin.
    Pinned,
    /// Placed by the balancer; it had no pin.
    New,
    /// Its pin could not be honoured and it was placed anew.
    Repinned(Repin),
    /// By the consistent hash of its key.
    Hash,
}

/// Why a pin was not honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repin {
    Invalid,
    Down,
    Full,
    Tried,
    /// An upgrade, and the server had no upgrade token.
    Throttled,
}

impl How {
    pub fn as_str(self) -> &'static str {
        match self {
            How::Pinned => "pinned",
            How::New => "new",
            How::Hash => "hash",
            How::Repinned(Repin::Invalid) => "repinned:invalid",
            How::Repinned(Repin::Down) => "repinned:down",
            How::Repinned(Repin::Full) => "repinned:full",
            How::Repinned(Repin::Tried) => "repinned:tried",
            How::Repinned(Repin::Throttled) => "repinned:throttled",
        }
    }
}

/// A claimed slot on the chosen backend.
#[derive(Debug)]
pub struct Placed {
    /// Position of the chosen backend in the upstream's list.
    pub index: usize,
    pub active: Active,
    pub how: How,
}

/// Servers an earlier attempt of this request already used. Inline for the
/// usual few attempts, so the first ones allocate nothing.
#[derive(Debug, Default, Clone)]
pub struct Tried {
    first: [usize; 4],
    len: usize,
    more: Vec<usize>,
}

impl Tried {
    pub fn push(&mut self, i: usize) {
        if self.len < self.first.len() {
            self.first[self.len] = i;
        } else {
            self.more.push(i);
        }
        self.len += 1;
    }

    pub fn contains(&self, i: usize) -> bool {
        self.first[..self.len.min(self.first.len())].contains(&i) || self.more.contains(&i)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// How one upstream places requests; built once per routing generation.
#[derive(Debug)]
pub struct Policy {
    placement: Placement,
    all_down: AllDown,
    /// The "every server is down" error was logged and not yet cleared, so
    /// it is logged once per outage, not once per request.
    all_down_logged: AtomicBool,
}

impl Policy {
    /// The policy `cfg` asks for over `backends` (in config order).
    pub fn for_upstream(cfg: &UpstreamConfig, backends: &[Arc<Backend>]) -> Policy {
        let hashed =
            matches!(cfg.balance, Balance::IpHash | Balance::Hash) || cfg.sticky == Sticky::IpHash;
        let placement = if hashed {
            Placement::Ring(Maglev::new(backends))
        } else {
            Placement::Balancer(super::for_config(cfg.balance, backends))
        };
        Policy::new(placement, cfg.all_down)
    }

    pub fn new(placement: Placement, all_down: AllDown) -> Policy {
        Policy {
            placement,
            all_down,
            all_down_logged: AtomicBool::new(false),
        }
    }

    /// Whether requests are placed by the hash of a key (the caller then
    /// computes [`RequestKey::hash`]).
    pub fn hashed(&self) -> bool {
        matches!(self.placement, Placement::Ring(_))
    }

    /// Claims a slot on the backend this request should use now, never one
    /// of `tried`. The error says why none could take it, for the log.
    pub fn place(
        &self,
        upstream: &str,
        backends: &[Arc<Backend>],
        key: &RequestKey<'_>,
        tried: &Tried,
    ) -> Result<Placed, String> {
        // Servers skipped for want of an upgrade token, each counted once.
        let throttled = RefCell::new(Tried::default());
        let repin = match key.pin {
            Pin::Absent => None,
            Pin::Invalid => Some(Repin::Invalid),
            Pin::To(i) => match backends.get(i) {
                None => Some(Repin::Invalid),
                Some(_) if tried.contains(i) => Some(Repin::Tried),
                Some(b) if !b.condition.usable() => Some(Repin::Down),
                Some(b) if b.is_full() => Some(Repin::Full),
                Some(b) if key.upgrade.is_some_and(|now| !b.admit_upgrade(now)) => {
                    b.upgrades.defer();
                    throttled.borrow_mut().push(i);
                    Some(Repin::Throttled)
                }
                Some(b) => match b.try_start_request() {
                    Some(active) => {
                        return Ok(Placed {
                            index: i,
                            active,
                            how: How::Pinned,
                        });
                    }
                    None => Some(Repin::Full),
                },
            },
        };
        let (index, active) = self.choose(upstream, backends, key, tried, &throttled)?;
        let how = match (repin, &self.placement) {
            (Some(why), _) => How::Repinned(why),
            (None, Placement::Ring(_)) => How::Hash,
            (None, Placement::Balancer(_)) => How::New,
        };
        Ok(Placed { index, active, how })
    }

    /// Healthy servers first; when none is up at all, `all_down` decides
    /// between placing on them anyway and refusing.
    fn choose(
        &self,
        upstream: &str,
        backends: &[Arc<Backend>],
        key: &RequestKey<'_>,
        tried: &Tried,
        throttled: &RefCell<Tried>,
    ) -> Result<(usize, Active), String> {
        if let Some(found) = self.tiers(backends, key, tried, true, throttled) {
            self.all_down_logged.store(false, Ordering::Relaxed);
            return Ok(found);
        }
        let none_up = backends.iter().all(|b| !b.condition.usable());
        if none_up && self.all_down == AllDown::Serve {
            if !self.all_down_logged.swap(true, Ordering::Relaxed) {
                error!(
                    upstream,
                    "every server is down; serving through them anyway (all_down = \"serve\")"
                );
            }
            if let Some(found) = self.tiers(backends, key, tried, false, throttled) {
                return Ok(found);
            }
        }
        Err(why_none(
            upstream,
            backends,
            tried,
            throttled.borrow().len(),
        ))
    }

    /// Primaries first, then backups; a backend that fills up between being
    /// picked and being claimed is excluded and the pick repeated.
    fn tiers(
        &self,
        backends: &[Arc<Backend>],
        key: &RequestKey<'_>,
        tried: &Tried,
        healthy_only: bool,
        throttled: &RefCell<Tried>,
    ) -> Option<(usize, Active)> {
        let defer = |i: usize| {
            let mut t = throttled.borrow_mut();
            if !t.contains(i) {
                t.push(i);
                backends[i].upgrades.defer();
            }
        };
        let req = Request {
            client_ip: key.client_ip,
            path: key.path,
        };
        // Slow start on a hash ring: a ramping server takes only the keys whose
        // admission number is below its share, so as the share grows keys move
        // onto it and never off it. (Other modes ramp through the weight.)
        let admission = key.hash.rotate_left(29) % 1000;
        for backup in [false, true] {
            let mut lost = Tried::default();
            // Each round either succeeds or excludes one more backend.
            for _ in 0..=backends.len() {
                let eligible = |i: usize| {
                    let b = &backends[i];
                    b.backup == backup
                        && !b.is_full()
                        && !tried.contains(i)
                        && !lost.contains(i)
                        && (!healthy_only || b.condition.usable())
                        && key.upgrade.is_none_or(|now| {
                            let room = b.upgrade_room(now);
                            if !room {
                                defer(i);
                            }
                            room
                        })
                };
                let pick = match &self.placement {
                    Placement::Ring(table) => table.lookup(key.hash, &|i| {
                        eligible(i) && admission < backends[i].condition.weight_permille()
                    }),
                    Placement::Balancer(b) => b.pick(backends, &req, &eligible),
                };
                let Some(i) = pick else { break };
                // The token first: a racing upgrade may have taken the last.
                if let Some(now) = key.upgrade
                    && !backends[i].admit_upgrade(now)
                {
                    defer(i);
                    lost.push(i);
                    continue;
                }
                match backends[i].try_start_request() {
                    Some(active) => return Some((i, active)),
                    None => lost.push(i),
                }
            }
        }
        None
    }
}

/// Whether an upgrade found no server because of `max_upgrades_per_sec`:
/// some server it could have used (not tried, usable, not full) had no
/// upgrade token at `now`. Asked only once placement failed.
pub fn upgrade_throttled(backends: &[Arc<Backend>], tried: &Tried, now: u64) -> bool {
    backends.iter().enumerate().any(|(i, b)| {
        !tried.contains(i) && b.condition.usable() && !b.is_full() && !b.upgrade_room(now)
    })
}

/// Why no backend could be chosen, for the log line that goes with the 503.
fn why_none(upstream: &str, backends: &[Arc<Backend>], tried: &Tried, throttled: usize) -> String {
    let full = backends.iter().filter(|b| b.is_full()).count();
    let down = backends.iter().filter(|b| !b.condition.usable()).count();
    let mut why = format!(
        "{upstream}: of {} servers, {down} down, {full} at max_conns, {} already tried",
        backends.len(),
        tried.len()
    );
    if throttled > 0 {
        why.push_str(&format!(
            ", {throttled} out of upgrade tokens (max_upgrades_per_sec)"
        ));
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_util::pool;
    use crate::balance::{LeastConn, SmoothRoundRobin};

    fn key(pin: Pin) -> RequestKey<'static> {
        RequestKey {
            client_ip: "10.0.0.1".parse().unwrap(),
            path: "/",
            hash: 42,
            pin,
            upgrade: None,
        }
    }

    #[test]
    fn tried_set_grows_past_inline() {
        let mut t = Tried::default();
        for i in 0..9 {
            assert!(!t.contains(i));
            t.push(i);
            assert!(t.contains(i));
        }
        assert_eq!(t.len(), 9);
        assert!(!t.contains(9));
    }

    #[test]
    fn pin_wins_then_falls_back_with_a_reason() {
        let backends = pool(&[1, 1, 1]);
        let p = Policy::new(
            Placement::Balancer(Box::new(LeastConn::new())),
            AllDown::Reject,
        );
        let placed = p.place("u", &backends, &key(Pin::To(2)), &Tried::default());
        let placed = placed.unwrap();
        assert_eq!((placed.index, placed.how), (2, How::Pinned));
        let mut tried = Tried::default();
        tried.push(2);
        let again = p.place("u", &backends, &key(Pin::To(2)), &tried).unwrap();
        assert_ne!(again.index, 2);
        assert_eq!(again.how, How::Repinned(Repin::Tried));
        let forged = p.place("u", &backends, &key(Pin::Invalid), &Tried::default());
        assert_eq!(forged.unwrap().how, How::Repinned(Repin::Invalid));
        let fresh = p.place("u", &backends, &key(Pin::Absent), &Tried::default());
        assert_eq!(fresh.unwrap().how, How::New);
    }

    #[test]
    fn backups_only_when_no_primary_and_refusal_names_the_cause() {
        let mut backends = pool(&[1, 1]);
        let backup = Arc::get_mut(&mut backends[1]).unwrap();
        backup.backup = true;
        let p = Policy::new(
            Placement::Balancer(Box::new(SmoothRoundRobin::new(2))),
            AllDown::Reject,
        );
        for _ in 0..4 {
            let placed = p.place("u", &backends, &key(Pin::Absent), &Tried::default());
            assert_eq!(placed.unwrap().index, 0);
        }
        let mut tried = Tried::default();
        tried.push(0);
        assert_eq!(
            p.place("u", &backends, &key(Pin::Absent), &tried)
                .unwrap()
                .index,
            1
        );
        tried.push(1);
        let err = p
            .place("u", &backends, &key(Pin::Absent), &tried)
            .unwrap_err();
        assert!(err.contains("2 already tried"), "{err}");
    }

    #[test]
    fn ring_placement_is_by_hash() {
        let backends = pool(&[1, 1, 1, 1]);
        let p = Policy::new(Placement::Ring(Maglev::new(&backends)), AllDown::Reject);
        let a = p
            .place("u", &backends, &key(Pin::Absent), &Tried::default())
            .unwrap();
        assert_eq!(a.how, How::Hash);
        for _ in 0..5 {
            let b = p
                .place("u", &backends, &key(Pin::Absent), &Tried::default())
                .unwrap();
            assert_eq!(b.index, a.index, "the same key lands on the same server");
        }
    }

    /// Backends capped at these upgrade rates (`None` = no cap).
    fn capped(rates: &[Option<u32>]) -> Vec<Arc<Backend>> {
        rates
            .iter()
            .enumerate()
            .map(|(i, &rate)| {
                let addr = format!("127.0.0.1:{}", 2000 + i).parse().unwrap();
                let cfg = crate::config::ServerConfig {
                    max_upgrades_per_sec: rate,
                    ..crate::config::ServerConfig::new(addr, 1)
                };
                Arc::new(Backend::new(&cfg))
            })
            .collect()
    }

    fn upgrade(pin: Pin, now: u64) -> RequestKey<'static> {
        RequestKey {
            upgrade: Some(now),
            ..key(pin)
        }
    }

    #[test]
    fn upgrades_over_the_rate_go_elsewhere_then_are_refused() {
        // Server 0 takes 10/s (burst 1), server 1 takes 20/s (burst 2).
        let backends = capped(&[Some(10), Some(20)]);
        let p = Policy::new(
            Placement::Balancer(Box::new(SmoothRoundRobin::new(backends.len()))),
            AllDown::Reject,
        );
        let now = 7_000_000_000;
        let mut on = [0usize; 2];
        for _ in 0..3 {
            let placed = p
                .place(
                    "u",
                    &backends,
                    &upgrade(Pin::Absent, now),
                    &Tried::default(),
                )
                .unwrap();
            on[placed.index] += 1;
        }
        assert_eq!(on, [1, 2], "each server's burst, no more");
        let why = p
            .place(
                "u",
                &backends,
                &upgrade(Pin::Absent, now),
                &Tried::default(),
            )
            .unwrap_err();
        assert!(why.contains("2 out of upgrade tokens"), "{why}");
        assert!(upgrade_throttled(&backends, &Tried::default(), now));
        // Plain requests are not throttled.
        for _ in 0..10 {
            p.place("u", &backends, &key(Pin::Absent), &Tried::default())
                .unwrap();
        }
        // 100 ms later server 0 has one token again.
        let later = now + 100_000_000;
        let placed = p
            .place(
                "u",
                &backends,
                &upgrade(Pin::To(1), later),
                &Tried::default(),
            )
            .unwrap();
        assert_eq!(placed.index, 1, "server 1 refilled two tokens in 100 ms");
        assert_eq!(
            (
                backends[0].upgrades.admitted(),
                backends[1].upgrades.admitted()
            ),
            (1, 3)
        );
        assert!(backends[0].upgrades.deferred() >= 1);
        assert!(backends[1].upgrades.deferred() >= 1);
    }

    #[test]
    fn a_pin_to_a_throttled_server_is_placed_anew() {
        let backends = capped(&[Some(5), None]);
        let p = Policy::new(
            Placement::Balancer(Box::new(LeastConn::new())),
            AllDown::Reject,
        );
        let now = 1_000_000_000;
        let first = p
            .place("u", &backends, &upgrade(Pin::To(0), now), &Tried::default())
            .unwrap();
        assert_eq!((first.index, first.how), (0, How::Pinned));
        let second = p
            .place("u", &backends, &upgrade(Pin::To(0), now), &Tried::default())
            .unwrap();
        assert_eq!(
            (second.index, second.how),
            (1, How::Repinned(Repin::Throttled))
        );
        assert_eq!(
            How::Repinned(Repin::Throttled).as_str(),
            "repinned:throttled"
        );
        // The uncapped server always admits, and counts what it admitted.
        assert_eq!(backends[1].upgrades.admitted(), 1);
        assert_eq!(backends[0].upgrades.deferred(), 1);
    }
}
