//! The pool: every server latch knows, kept for the life of the process.
//!
//! Servers are keyed by `(upstream, id, address)`. A routing table asks the
//! pool for its servers ([`Pool::server`]); a server already there is reused
//! with its live state, so a reload changes settings, not state. After a new
//! routing table is in force, [`Pool::retire`] moves the servers it no longer
//! names into [`Draining`], where they stay until their last tunnel or
//! request is gone.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::Server;
use crate::config::{ServerConfig, UpstreamConfig};

/// `(upstream, id, address)`: what makes two configs' servers the same one.
pub type ServerKey = (String, String, SocketAddr);

/// Every server in force, and the ones draining.
#[derive(Debug, Default)]
pub struct Pool {
    servers: Mutex<HashMap<ServerKey, Arc<Server>>>,
    pub draining: Draining,
}

impl Pool {
    fn servers(&self) -> MutexGuard<'_, HashMap<ServerKey, Arc<Server>>> {
        self.servers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The server `cfg` of upstream `up`: the one the pool has (with the new
    /// passive-check and slow-start settings), or a new one. A new server is
    /// not in force until the routing table that asked for it is committed;
    /// one that is never committed is dropped by the next [`Pool::retire`].
    pub fn server(&self, up: &UpstreamConfig, cfg: &ServerConfig) -> Arc<Server> {
        let key = (up.name.clone(), cfg.id.clone(), cfg.addr);
        let mut servers = self.servers();
        if let Some(s) = servers.get(&key) {
            s.condition.reconfigure(up.passive, up.slow_start);
            return s.clone();
        }
        let s = Arc::new(Server::new(&up.name, cfg, up));
        servers.insert(key, s.clone());
        s
    }

    /// Keeps only the servers in `keep`; the others start draining. Returns
    /// the ones that now drain with tunnels or requests still open.
    pub fn retire(&self, keep: &HashSet<ServerKey>) -> Vec<Arc<Server>> {
        let mut gone = Vec::new();
        self.servers().retain(|k, s| {
            let stays = keep.contains(k);
            if !stays {
                gone.push(s.clone());
            }
            stays
        });
        for s in &gone {
            s.start_draining();
        }
        gone.retain(|s| s.load() > 0);
        self.draining.add(&gone);
        gone
    }

    /// Every server in force.
    pub fn all(&self) -> Vec<Arc<Server>> {
        self.servers().values().cloned().collect()
    }

    /// Closes idle upstream connections older than `max_idle` or closed by
    /// their server (the pool's housekeeping, run every few seconds).
    pub fn reap_idle(&self, max_idle: Duration) {
        for s in self.all() {
            s.idle.reap(max_idle);
        }
    }
}

/// Servers removed by a reload whose tunnels or requests are still open.
#[derive(Debug, Default)]
pub struct Draining(Mutex<Vec<Arc<Server>>>);

impl Draining {
    fn list(&self) -> MutexGuard<'_, Vec<Arc<Server>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, servers: &[Arc<Server>]) {
        let mut list = self.list();
        list.retain(|s| s.load() > 0);
        list.extend(servers.iter().cloned());
    }

    /// The draining servers that still have something open.
    pub fn servers(&self) -> Vec<Arc<Server>> {
        let mut list = self.list();
        list.retain(|s| s.load() > 0);
        list.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(name: &str) -> UpstreamConfig {
        let toml = format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"{name}\"\n\
             [upstream.{name}]\nservers = [{{ addr = \"127.0.0.1:1\" }}]\n"
        );
        let cfg = crate::config::Config::parse(&toml, std::path::Path::new("t.toml")).unwrap();
        cfg.upstreams[name].clone()
    }

    #[test]
    fn same_key_same_server_and_retire_drains_the_rest() {
        let pool = Pool::default();
        let up = upstream("app");
        let cfg = ServerConfig::new("127.0.0.1:1".parse().unwrap(), 1);
        let a = pool.server(&up, &cfg);
        assert!(Arc::ptr_eq(&a, &pool.server(&up, &cfg)));
        let other = ServerConfig::new("127.0.0.1:2".parse().unwrap(), 1);
        let b = pool.server(&up, &other);
        let held = crate::backend::Backend::on(b.clone(), &other).start_request();
        let keep: HashSet<ServerKey> = [("app".into(), cfg.id.clone(), cfg.addr)].into();
        let gone = pool.retire(&keep);
        assert_eq!(gone.len(), 1);
        assert!(b.draining() && !a.draining());
        assert_eq!(pool.draining.servers().len(), 1);
        drop(held);
        assert!(pool.draining.servers().is_empty());
        assert_eq!(pool.all().len(), 1);
    }
}
