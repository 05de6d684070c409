//! What a running proxy routes over: a [`Snapshot`] of upstreams (backends,
//! balancer, pooled client) and each listener's routes. The snapshot is built
//! from a [`Config`] and read lock-free through `ArcSwap`, so a reload can
//! replace it whole while requests in flight keep the one they started with.

use std::collections::HashMap;
use std::sync::Arc;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::Body;
use super::select::{Placement, Policy};
use crate::backend::Backend;
use crate::balance::{self, Maglev};
use crate::config::{
    Balance, Cidr, Config, HashKey, RetryConfig, Route, ServerSettings, Sticky, Timeouts,
    UpstreamConfig,
};

/// One upstream, ready to take requests.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub balance: Balance,
    pub backends: Vec<Arc<Backend>>,
    pub timeouts: Timeouts,
    pub retry: RetryConfig,
    /// Stickiness, limits, backups and the balance algorithm.
    pub policy: Policy,
    /// Keep-alive pool to this upstream's backends (pooled per address).
    pub client: Client<HttpConnector, Body>,
}

impl Upstream {
    /// Builds the upstream; servers that were in `previous` (same id and
    /// address) keep their live state.
    pub fn new(
        cfg: &UpstreamConfig,
        server: &ServerSettings,
        previous: Option<&Upstream>,
    ) -> Result<Upstream, String> {
        let before = |s: &crate::config::ServerConfig| {
            previous?
                .backends
                .iter()
                .find(|b| b.id == s.id && b.addr == s.addr)
                .map(|b| b.as_ref())
        };
        let backends: Vec<Arc<Backend>> = cfg
            .servers
            .iter()
            .map(|s| Arc::new(Backend::for_upstream(s, cfg, before(s))))
            .collect();
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(cfg.timeouts.connect));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(server.pool_idle_timeout)
            .pool_max_idle_per_host(server.pool_max_idle)
            .build(connector);
        let hashed =
            matches!(cfg.balance, Balance::IpHash | Balance::Hash) || cfg.sticky == Sticky::IpHash;
        let placement = if hashed {
            Placement::Ring {
                table: Maglev::new(&backends),
                key: cfg.hash_key.clone().unwrap_or(HashKey::Ip),
                v4: cfg.ip_prefix_v4,
                v6: cfg.ip_prefix_v6,
            }
        } else {
            Placement::Balancer(balance::for_config(cfg.balance, &backends))
        };
        let cookie = match &cfg.sticky {
            Sticky::Cookie(c) => Some(c),
            _ => None,
        };
        let policy = Policy::new(&backends, placement, cookie, cfg.all_down)
            .map_err(|e| format!("upstream {}: {e}", cfg.name))?;
        Ok(Upstream {
            name: cfg.name.clone(),
            balance: cfg.balance,
            policy,
            backends,
            timeouts: cfg.timeouts,
            retry: cfg.retry.clone(),
            client,
        })
    }
}

/// One listener's routing table.
#[derive(Debug)]
pub struct ListenerRoutes {
    pub routes: Vec<Route>,
    pub trusted_proxies: Vec<Cidr>,
}

impl ListenerRoutes {
    /// The first route matching `host` (lower-case, no port) and `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| {
            let host_ok = match r.host.as_deref() {
                None => true,
                Some(pattern) => match pattern.strip_prefix("*.") {
                    Some(suffix) => {
                        host.len() > suffix.len() + 1
                            && host.ends_with(suffix)
                            && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                    }
                    None => pattern == host,
                },
            };
            host_ok && path.starts_with(&r.path_prefix)
        })
    }
}

/// Everything a request needs to be routed, swapped whole on reload.
#[derive(Debug)]
pub struct Snapshot {
    pub upstreams: HashMap<String, Arc<Upstream>>,
    /// Routes by listener id (ids are stable across reloads).
    pub listeners: HashMap<u64, Arc<ListenerRoutes>>,
    /// Settings read when a connection arrives.
    pub server: ServerSettings,
}

impl Snapshot {
    /// The snapshot for `config`; `listener_ids[i]` is the id of
    /// `config.listeners[i]`. Servers that were in `previous` keep their state.
    pub fn build(
        config: &Config,
        listener_ids: &[u64],
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, String> {
        let mut upstreams = HashMap::new();
        for (name, u) in &config.upstreams {
            let before = previous
                .and_then(|p| p.upstreams.get(name))
                .map(|u| u.as_ref());
            upstreams.insert(
                name.clone(),
                Arc::new(Upstream::new(u, &config.server, before)?),
            );
        }
        let listeners = config
            .listeners
            .iter()
            .zip(listener_ids)
            .map(|(l, id)| {
                let routes = ListenerRoutes {
                    routes: l.routes.clone(),
                    trusted_proxies: l.trusted_proxies.clone(),
                };
                (*id, Arc::new(routes))
            })
            .collect();
        Ok(Snapshot {
            upstreams,
            listeners,
            server: config.server.clone(),
        })
    }

    /// Servers of `self` that `next` no longer has.
    pub fn removed_in(&self, next: &Snapshot) -> Vec<(String, Arc<Backend>)> {
        let mut gone = Vec::new();
        for (name, up) in &self.upstreams {
            let kept = next.upstreams.get(name);
            for b in &up.backends {
                if !kept.is_some_and(|k| k.backends.iter().any(|n| n.same_server(b))) {
                    gone.push((name.clone(), b.clone()));
                }
            }
        }
        gone
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
        }
    }

    #[test]
    fn routes_match_host_then_prefix_in_order() {
        let t = ListenerRoutes {
            routes: vec![
                route(Some("chat.test"), "/socket.io/", "io"),
                route(Some("*.test"), "/", "wild"),
                route(None, "/api", "api"),
                route(None, "/", "default"),
            ],
            trusted_proxies: vec![],
        };
        let up = |h, p| t.find(h, p).map(|r| r.upstream.as_str());
        assert_eq!(up("chat.test", "/socket.io/?EIO=4"), Some("io"));
        assert_eq!(up("chat.test", "/"), Some("wild"));
        assert_eq!(up("a.b.test", "/x"), Some("wild"));
        assert_eq!(up("test", "/api/v1"), Some("api"));
        assert_eq!(up("xtest", "/"), Some("default"));
    }
}
