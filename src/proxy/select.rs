//! Selection policy for one upstream: which backend takes a request, given
//! stickiness, limits and backup servers. The algorithms themselves live in
//! `balance` (pure); this file decides *which* backends they may choose from.
//!
//! Order, as HAProxy and sozu do it:
//! 1. A valid sticky cookie naming a usable backend wins. A forged, expired or
//!    unknown cookie, or one naming a backend that is full or gone, is ignored
//!    and the client is re-pinned (sticky falls back to normal selection).
//! 2. Otherwise the upstream's policy picks among usable primaries; only when
//!    none is usable does it pick among usable backups.
//! 3. "Usable" means not at `max_conns`. The slot is taken atomically, so a
//!    race between two requests cannot push a backend over its limit.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use tracing::error;

use super::ProxyError;
use crate::backend::{Active, Backend};
use crate::balance::{self, Balancer, Maglev};
use crate::config::{AllDown, CookieSettings, HashKey, SameSite};
use crate::sticky::{self, BackendToken, CookieAttrs, CookieCodec};

/// How an upstream chooses, built once per config.
#[derive(Debug)]
pub struct Policy {
    placement: Placement,
    cookie: Option<StickyCookie>,
    all_down: AllDown,
    /// The "every server is down" error was logged and not yet cleared, so
    /// it is logged once per outage, not once per request.
    all_down_logged: AtomicBool,
}

/// What places a request that has no valid pin.
#[derive(Debug)]
pub enum Placement {
    /// A balance algorithm (round robin, least_conn, random).
    Balancer(Box<dyn Balancer>),
    /// A consistent hash of a request key (ip_hash, hash, sticky ip_hash).
    Ring {
        table: Maglev,
        key: HashKey,
        /// Prefixes that group client addresses when the key is the address.
        v4: u8,
        v6: u8,
    },
}

#[derive(Debug)]
struct StickyCookie {
    codec: CookieCodec,
    attrs: CookieAttrs,
    name: String,
    keep: bool,
    /// Cookie token → backend index.
    tokens: Vec<(BackendToken, usize)>,
}

/// The outcome: a slot taken on a backend, and maybe a cookie to set.
#[derive(Debug)]
pub struct Selection {
    /// Position of the chosen backend in the upstream's list.
    pub index: usize,
    pub active: Active,
    /// `Set-Cookie` value pinning the client to this backend, when it needs one.
    pub set_cookie: Option<String>,
}

/// What the policy reads from a request.
pub struct Ask<'a> {
    pub client_ip: IpAddr,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a mut HeaderMap,
}

impl Policy {
    pub fn new(
        backends: &[Arc<Backend>],
        placement: Placement,
        cookie: Option<&CookieSettings>,
        all_down: AllDown,
    ) -> Result<Policy, String> {
        let cookie = match cookie {
            Some(c) => Some(StickyCookie {
                codec: CookieCodec::new(&c.secret, &c.name, c.max_age)?,
                attrs: CookieAttrs {
                    path: c.path.clone(),
                    domain: c.domain.clone(),
                    max_age: c.max_age,
                    secure: c.secure,
                    http_only: c.http_only,
                    same_site: c.same_site.map(|s| match s {
                        SameSite::Strict => sticky::SameSite::Strict,
                        SameSite::Lax => sticky::SameSite::Lax,
                        SameSite::None => sticky::SameSite::None,
                    }),
                },
                name: c.name.clone(),
                keep: c.keep,
                tokens: backends
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (CookieCodec::token(&b.id), i))
                    .collect(),
            }),
            None => None,
        };
        Ok(Policy {
            placement,
            cookie,
            all_down,
            all_down_logged: AtomicBool::new(false),
        })
    }

    /// Takes a slot on the backend this request should use, never one of
    /// `tried` (the servers earlier attempts of this request already failed on).
    pub fn select(
        &self,
        upstream: &str,
        backends: &[Arc<Backend>],
        ask: Ask<'_>,
        tried: &[usize],
    ) -> Result<Selection, ProxyError> {
        let now = unix_now();
        if let Some(c) = &self.cookie {
            let pinned = sticky::find_in_request(ask.headers, &c.name)
                .iter()
                .filter_map(|v| c.codec.decode(v, now))
                .find_map(|t| c.tokens.iter().find(|(tok, _)| *tok == t).map(|(_, i)| *i));
            if !c.keep {
                sticky::strip_from_request(ask.headers, &c.name);
            }
            let pinned = pinned.filter(|i| !tried.contains(i) && backends[*i].condition.usable());
            if let Some((i, active)) =
                pinned.and_then(|i| Some((i, backends[i].try_start_request()?)))
            {
                return Ok(Selection {
                    index: i,
                    active,
                    set_cookie: None,
                });
            }
        }
        let (index, active) = self.choose(upstream, backends, &ask, tried)?;
        let set_cookie = self.cookie.as_ref().map(|c| {
            let value = c.codec.encode(&active.backend().id, now);
            c.codec.set_cookie_header(&value, &c.attrs)
        });
        Ok(Selection {
            index,
            active,
            set_cookie,
        })
    }

    /// Healthy servers first; when none is up at all, `all_down` decides
    /// between serving through them anyway (least bad: the normal policy,
    /// ignoring health) and refusing.
    fn choose(
        &self,
        upstream: &str,
        backends: &[Arc<Backend>],
        ask: &Ask<'_>,
        tried: &[usize],
    ) -> Result<(usize, Active), ProxyError> {
        if let Some(found) = self.tiers(backends, ask, tried, true) {
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
            if let Some(found) = self.tiers(backends, ask, tried, false) {
                return Ok(found);
            }
        }
        Err(ProxyError::NoBackend(why_none(upstream, backends, tried)))
    }

    /// Primaries first, then backups; a backend that fills up between being
    /// picked and being claimed is excluded and the pick repeated.
    fn tiers(
        &self,
        backends: &[Arc<Backend>],
        ask: &Ask<'_>,
        tried: &[usize],
        healthy_only: bool,
    ) -> Option<(usize, Active)> {
        let req = balance::Request {
            client_ip: ask.client_ip,
            path: ask.path,
        };
        let hash = match &self.placement {
            Placement::Ring { key, v4, v6, .. } => key_hash(key, *v4, *v6, ask),
            Placement::Balancer(_) => 0,
        };
        // Slow start on a hash ring: a ramping server takes only the keys whose
        // admission number is below its share, so as the share grows keys move
        // onto it and never off it. (Other modes ramp through the weight.)
        let admission = hash.rotate_left(29) % 1000;
        for backup in [false, true] {
            let mut lost = Vec::new();
            // Each round either succeeds or excludes one more backend.
            for _ in 0..=backends.len() {
                let eligible = |i: usize| {
                    let b = &backends[i];
                    b.backup == backup
                        && !b.is_full()
                        && !tried.contains(&i)
                        && !lost.contains(&i)
                        && (!healthy_only || b.condition.usable())
                };
                let pick = match &self.placement {
                    Placement::Ring { table, .. } => table.lookup(hash, &|i| {
                        eligible(i) && admission < backends[i].condition.weight_permille()
                    }),
                    Placement::Balancer(b) => b.pick(backends, &req, &eligible),
                };
                let Some(i) = pick else { break };
                match backends[i].try_start_request() {
                    Some(active) => return Some((i, active)),
                    None => lost.push(i),
                }
            }
        }
        None
    }
}

/// The consistent-hash key of a request. A request without the configured key
/// is placed by its address, as nginx falls back when the hash key is empty.
fn key_hash(key: &HashKey, v4: u8, v6: u8, ask: &Ask<'_>) -> u64 {
    let by_value = |v: &[u8]| balance::hash64(v, 1);
    let found = match key {
        HashKey::Ip => None,
        HashKey::Header(h) => ask.headers.get(h).map(|v| by_value(v.as_bytes())),
        HashKey::Cookie(n) => sticky::find_in_request(ask.headers, n)
            .first()
            .map(|v| by_value(v.as_bytes())),
        HashKey::Query(n) => ask
            .query
            .and_then(|q| query_param(q, n))
            .map(|v| by_value(v.as_bytes())),
    };
    found.unwrap_or_else(|| balance::hash64(&sticky::ip_key(ask.client_ip, v4, v6), 0))
}

/// The value of query parameter `name` (raw, not percent-decoded: it is only hashed).
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// Why no backend could be chosen, for the log line that goes with the 503.
fn why_none(upstream: &str, backends: &[Arc<Backend>], tried: &[usize]) -> String {
    let full = backends.iter().filter(|b| b.is_full()).count();
    let down = backends.iter().filter(|b| !b.condition.usable()).count();
    format!(
        "{upstream}: of {} servers, {down} down, {full} at max_conns, {} already tried",
        backends.len(),
        tried.len()
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params() {
        assert_eq!(query_param("EIO=4&sid=abc&t=1", "sid"), Some("abc"));
        assert_eq!(query_param("flag&sid=", "flag"), Some(""));
        assert_eq!(query_param("a=1", "sid"), None);
    }
}
