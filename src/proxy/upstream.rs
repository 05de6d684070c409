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
use crate::backend::Backend;
use crate::balance::{self, Balancer};
use crate::config::{Cidr, Config, Route, ServerSettings, Timeouts, UpstreamConfig};

/// One upstream, ready to take requests.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub backends: Vec<Arc<Backend>>,
    pub timeouts: Timeouts,
    balancer: Box<dyn Balancer>,
    /// Keep-alive pool to this upstream's backends (pooled per address).
    pub client: Client<HttpConnector, Body>,
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig, server: &ServerSettings) -> Upstream {
        let backends: Vec<Arc<Backend>> = cfg
            .servers
            .iter()
            .map(|s| Arc::new(Backend::new(s)))
            .collect();
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(cfg.timeouts.connect));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(server.pool_idle_timeout)
            .pool_max_idle_per_host(server.pool_max_idle)
            .build(connector);
        Upstream {
            name: cfg.name.clone(),
            balancer: balance::for_config(cfg.balance, &backends),
            backends,
            timeouts: cfg.timeouts,
            client,
        }
    }

    /// The backend a new request goes to, if any can take it.
    pub fn select(&self, req: &balance::Request<'_>) -> Option<Arc<Backend>> {
        let i = self.balancer.pick(&self.backends, req, &|_| true)?;
        self.backends.get(i).cloned()
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
    /// Indexed like `Config::listeners`.
    pub listeners: Vec<Arc<ListenerRoutes>>,
}

impl Snapshot {
    pub fn new(config: &Config) -> Snapshot {
        let upstreams = config
            .upstreams
            .iter()
            .map(|(name, u)| (name.clone(), Arc::new(Upstream::new(u, &config.server))))
            .collect();
        let listeners = config
            .listeners
            .iter()
            .map(|l| {
                Arc::new(ListenerRoutes {
                    routes: l.routes.clone(),
                    trusted_proxies: l.trusted_proxies.clone(),
                })
            })
            .collect();
        Snapshot {
            upstreams,
            listeners,
        }
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
