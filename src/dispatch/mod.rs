//! The dispatcher's choice (issue 11 §3): which server of an upstream a thick
//! client should connect to *itself* — the "get server address" call of a
//! chat system's login server. Pure: no sockets, no headers; the HTTP side
//! is `proxy/dispatch.rs`.
//!
//! - A server can be named when it is healthy (active and passive checks),
//!   not draining, and not full: below its `max_conns`, and below the `max`
//!   it reports itself. Primaries first; backups only when no primary can.
//! - A verified pin (the signed cookie) naming such a server wins; with
//!   `ip_hash` stickiness the client's key picks by rendezvous hashing, so
//!   one key keeps one server while that server can be named, and moves
//!   only when it cannot.
//! - Otherwise weighted least connections on the load: the larger of
//!   latch's own count and the server's fresh report (`load/`), plus the
//!   clients dispatched there since that report (they connect directly,
//!   so no count of latch's sees them until the next report).

use std::sync::Arc;

use serde::Serialize;

use crate::backend::{Backend, now_ms};
use crate::balance::{How, Repin, hash64};
use crate::config::dispatch::split_host_port;

/// What the dispatcher knows of a request's stickiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sticky {
    None,
    /// A verified cookie pin (backend index), or `None` when the cookie did
    /// not verify.
    Pin(Option<usize>),
    /// The client's hashed key (ip_hash).
    Hash(u64),
}

/// Whether the dispatcher may name `b` now, and if not, why.
pub fn why_not(b: &Backend) -> Option<Repin> {
    if !b.condition.usable() || b.draining() {
        return Some(Repin::Down);
    }
    if full(b) {
        return Some(Repin::Full);
    }
    None
}

/// At `max_conns`, or at the `max` the server reported. Clients dispatched
/// since that report count toward both.
fn full(b: &Backend) -> bool {
    if b.is_full() {
        return true;
    }
    let Some(r) = b
        .reported
        .maybe()
        .then(|| b.reported.get(now_ms()))
        .flatten()
    else {
        return false;
    };
    let load = (b.load().max(r.load as usize) as u64).saturating_add(b.pending());
    let over_max = r.max.is_some_and(|m| load >= u64::from(m));
    let over_conns = b.max_conns.is_some_and(|m| load >= m as u64);
    over_max || over_conns
}

/// The server to name, and how it was chosen; `None` when every server is
/// down, draining or full (the caller answers 503).
pub fn choose(backends: &[Arc<Backend>], sticky: Sticky) -> Option<(usize, How)> {
    let repin = match sticky {
        Sticky::Pin(None) => Some(Repin::Invalid),
        Sticky::Pin(Some(i)) => match backends.get(i).map(|b| why_not(b)) {
            None => Some(Repin::Invalid),
            Some(None) => return Some((i, How::Pinned)),
            Some(Some(why)) => Some(why),
        },
        Sticky::None | Sticky::Hash(_) => None,
    };
    let ok: Vec<bool> = backends.iter().map(|b| why_not(b).is_none()).collect();
    let tier = |backup: bool| -> Vec<usize> {
        (0..backends.len())
            .filter(|&i| ok[i] && backends[i].backup == backup)
            .collect()
    };
    let mut candidates = tier(false);
    if candidates.is_empty() {
        candidates = tier(true);
    }
    let index = match sticky {
        Sticky::Hash(key) => *candidates
            .iter()
            .max_by_key(|&&i| hash64(backends[i].id.as_bytes(), key))?,
        _ => least_loaded(backends, &candidates)?,
    };
    let how = match (repin, sticky) {
        (Some(why), _) => How::Repinned(why),
        (None, Sticky::Hash(_)) => How::Hash,
        _ => How::New,
    };
    Some((index, how))
}

/// Lowest `(load + pending) / weight`, by cross-multiplying (no floats);
/// the first in list order wins a tie.
fn least_loaded(backends: &[Arc<Backend>], candidates: &[usize]) -> Option<usize> {
    let mut best: Option<(usize, u128, u128)> = None;
    for &i in candidates {
        let b = &backends[i];
        let load = b.balance_load() as u128 + u128::from(b.pending());
        let weight = u128::from(b.effective_weight().max(1));
        if best.is_none_or(|(_, bl, bw)| load * bw < bl * weight) {
            best = Some((i, load, weight));
        }
    }
    best.map(|(i, _, _)| i)
}

/// The JSON answer: `{"id", "host", "port", "addrs"}`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Answer<'a> {
    pub id: &'a str,
    pub host: String,
    pub port: u16,
    /// Every address the client may use, the answer's own first.
    pub addrs: Vec<String>,
}

impl<'a> Answer<'a> {
    /// What a client is told about `b`: its first advertised address, or
    /// `addr` when it advertises none.
    pub fn of(b: &'a Backend) -> Answer<'a> {
        let first = b.advertise.first().and_then(|a| split_host_port(a).ok());
        let (host, port) = match first {
            Some((h, p)) => (h.to_string(), p),
            None => (b.addr.ip().to_string(), b.addr.port()),
        };
        let addrs = if b.advertise.is_empty() {
            vec![b.addr.to_string()]
        } else {
            b.advertise.clone()
        };
        Answer {
            id: &b.id,
            host,
            port,
            addrs,
        }
    }
}

#[cfg(test)]
mod tests;
