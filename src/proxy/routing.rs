//! The routing table: what a reload replaces whole. Each listener's routes,
//! and each upstream's servers (views of the pool's long-lived [`Server`]s),
//! placement [`Policy`], sticky cookie, retry and timeouts. A request loads
//! one [`Routing`] through `ArcSwap` and keeps it to the end, so a reload
//! never changes the rules under a request in flight.
//!
//! [`Server`]: crate::backend::Server

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::select::StickyCookie;
use crate::backend::{Backend, Pool, ServerKey};
use crate::balance::Policy;
use crate::config::{
    Balance, Cidr, Config, HashKey, ListenerMode, RetryConfig, Route, ServerSettings, Sticky,
    Timeouts, UpstreamConfig,
};
use crate::metrics::{Metrics, UpstreamMetrics};

/// One upstream, ready to take requests.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub balance: Balance,
    pub backends: Vec<Arc<Backend>>,
    pub timeouts: Timeouts,
    pub retry: RetryConfig,
    /// A PROXY protocol header goes first on each new server connection.
    pub send_proxy: Option<crate::proxy_protocol::Version>,
    /// Placement: pins, health, limits, backups, the balance algorithm.
    pub policy: Policy,
    /// The signed cookie, when stickiness is by cookie.
    pub(super) cookie: Option<StickyCookie>,
    /// What ring placement hashes, and how client addresses are grouped.
    pub(super) hash_key: HashKey,
    pub(crate) prefixes: (u8, u8),
    /// Metric handles for this upstream and its servers.
    pub(super) metrics: UpstreamMetrics,
}

impl Upstream {
    /// The upstream `cfg` describes, on the pool's servers.
    pub fn new(cfg: &UpstreamConfig, pool: &Pool, metrics: &Metrics) -> Result<Upstream, String> {
        let backends: Vec<Arc<Backend>> = cfg
            .servers
            .iter()
            .map(|s| Arc::new(Backend::on(pool.server(cfg, s), s)))
            .collect();
        let cookie = match &cfg.sticky {
            Sticky::Cookie(c) | Sticky::SessionId(c) => Some(
                StickyCookie::new(c, &backends, matches!(cfg.sticky, Sticky::SessionId(_)))
                    .map_err(|e| format!("upstream {}: {e}", cfg.name))?,
            ),
            _ => None,
        };
        let ids: Vec<&str> = backends.iter().map(|b| b.id.as_str()).collect();
        Ok(Upstream {
            name: cfg.name.clone(),
            balance: cfg.balance,
            policy: Policy::for_upstream(cfg, &backends),
            metrics: metrics.upstream(&cfg.name, &ids),
            backends,
            timeouts: cfg.timeouts,
            retry: cfg.retry.clone(),
            send_proxy: cfg.send_proxy,
            cookie,
            hash_key: cfg.hash_key.clone().unwrap_or(HashKey::Ip),
            prefixes: (cfg.ip_prefix_v4, cfg.ip_prefix_v6),
        })
    }
}

/// One listener's routing table.
#[derive(Debug)]
pub struct ListenerRoutes {
    /// A `tcp` listener's one route names its upstream (`stream/`).
    pub mode: ListenerMode,
    pub routes: Vec<Route>,
    pub trusted_proxies: Vec<Cidr>,
    /// `proxy_protocol = true`: who may send the header every connection
    /// starts with. `None`: no header is read.
    pub proxy_protocol: Option<Vec<Cidr>>,
    /// HTTP/2 settings for new connections; `None`: HTTP/1.1 only.
    pub http2: Option<crate::config::H2Settings>,
}

impl ListenerRoutes {
    /// The first route matching `host` (no port; any case) and `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<&Route> {
        let host = host.strip_suffix('.').unwrap_or(host);
        self.routes.iter().find(|r| {
            let host_ok = match r.host.as_deref() {
                None => true,
                Some(pattern) => match pattern.strip_prefix("*.") {
                    Some(suffix) => {
                        host.len() > suffix.len() + 1
                            && host.as_bytes()[host.len() - suffix.len()..]
                                .eq_ignore_ascii_case(suffix.as_bytes())
                            && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                    }
                    None => pattern.eq_ignore_ascii_case(host),
                },
            };
            host_ok && path.starts_with(&r.path_prefix)
        })
    }
}

/// The routing table's maps: looked up on every request by keys latch
/// made itself (config names, listener ids), so a fast hasher without
/// HashDoS resistance is safe (SipHash cost ~1.5% of a request).
pub type FastMap<K, V> = HashMap<K, V, rustc_hash::FxBuildHasher>;

/// Everything a request needs to be routed, swapped whole on reload.
#[derive(Debug)]
pub struct Routing {
    pub upstreams: FastMap<String, Arc<Upstream>>,
    /// Routes by listener id (ids are stable across reloads).
    pub listeners: FastMap<u64, Arc<ListenerRoutes>>,
    /// Settings read when a connection or request arrives.
    pub server: ServerSettings,
}

impl Routing {
    /// The routing table for `config` on `pool`'s servers; `listener_ids[i]`
    /// is the id of `config.listeners[i]`. Servers the pool already has keep
    /// their state; new ones join it (and leave again at the next
    /// [`Pool::retire`] if this table is never committed).
    pub fn build(
        config: &Config,
        listener_ids: &[u64],
        pool: &Pool,
        metrics: &Metrics,
    ) -> Result<Routing, String> {
        let mut upstreams = FastMap::default();
        for (name, u) in &config.upstreams {
            upstreams.insert(name.clone(), Arc::new(Upstream::new(u, pool, metrics)?));
        }
        let listeners = config
            .listeners
            .iter()
            .zip(listener_ids)
            .map(|(l, id)| {
                let routes = ListenerRoutes {
                    mode: l.mode,
                    routes: l.routes.clone(),
                    trusted_proxies: l.trusted_proxies.clone(),
                    proxy_protocol: l.proxy_protocol.clone(),
                    http2: l.http2,
                };
                (*id, Arc::new(routes))
            })
            .collect();
        Ok(Routing {
            upstreams,
            listeners,
            server: config.server.clone(),
        })
    }

    /// The pool keys of every server this table routes to.
    pub fn server_keys(&self) -> HashSet<ServerKey> {
        self.upstreams
            .values()
            .flat_map(|u| {
                u.backends
                    .iter()
                    .map(|b| (b.upstream.clone(), b.id.clone(), b.addr))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, prefix: &str, up: &str) -> Route {
        Route {
            host: host.map(str::to_string),
            path_prefix: prefix.into(),
            upstream: up.into(),
            dispatch: None,
        }
    }

    #[test]
    fn routes_match_host_then_prefix_in_order() {
        let t = ListenerRoutes {
            mode: ListenerMode::Http,
            routes: vec![
                route(Some("chat.test"), "/socket.io/", "io"),
                route(Some("*.test"), "/", "wild"),
                route(None, "/api", "api"),
                route(None, "/", "default"),
            ],
            trusted_proxies: vec![],
            proxy_protocol: None,
            http2: None,
        };
        let up = |h, p| t.find(h, p).map(|r| r.upstream.as_str());
        assert_eq!(up("chat.test", "/socket.io/?EIO=4"), Some("io"));
        assert_eq!(up("Chat.Test.", "/socket.io/"), Some("io"));
        assert_eq!(up("chat.test", "/"), Some("wild"));
        assert_eq!(up("a.B.test", "/x"), Some("wild"));
        assert_eq!(up("test", "/api/v1"), Some("api"));
        assert_eq!(up("xtest", "/"), Some("default"));
    }
}
