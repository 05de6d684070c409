//! Reload: swapping in a new config while every connection stays up.
//!
//! A reload is prepared completely before anything changes — new listener
//! sockets bound, TLS set up, the new [`Routing`] table built on the pool's
//! servers — so a failure at any step leaves the running config untouched.
//! Then it is committed in one go. One lock (the generation's) is held from
//! preparing to committing, so two reloads at once (SIGHUP and `POST
//! /reload`) take turns instead of committing against each other's state.
//!
//! - The routing table is swapped atomically. Requests in flight keep the one
//!   they started with; servers that stay are the same pool servers (counts,
//!   health, slow start and idle upstream connections survive).
//! - Listeners are matched by bind address and named by id. A matched
//!   listener keeps its socket and accept loop; only its TLS certificates,
//!   routes and connection limits change. A new one is bound; a removed one
//!   stops accepting (its connections finish).
//! - Servers that left are *draining*: nothing new goes to them, and their
//!   tunnels live until they close or the new config's `grace` runs out.
//! - Health checkers restart for the new set of servers.
//! - `[admin]`: the token is swapped at commit, so a rotated token stops
//!   working at once. A changed `bind` moves the admin listener: the new
//!   socket is bound while preparing (a failure refuses the whole reload),
//!   and at commit the old one stops accepting; its open connections finish
//!   the request in flight (the `POST /reload` that moved it) and close.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard};

use tokio::net::{TcpListener, TcpSocket};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backend::Server;
use crate::config::{Config, ConfigError, ListenerConfig};
use crate::listener::limit::Limiter;
use crate::listener::{self, Accept, TlsSlot};
use crate::proxy::Routing;
use crate::{Inner, StartError, health};

/// Why a reload was refused (the running config stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot move the admin listener to {addr}: {source}; reload refused, nothing changed")]
    AdminBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The config in force and what runs for it.
pub(crate) struct Generation {
    pub config: Config,
    /// In config order.
    pub listeners: Vec<Running>,
    /// Stops this generation's health checkers.
    checks: CancellationToken,
    /// The admin listener, when `[admin]` is set.
    pub admin: Option<RunningAdmin>,
}

/// The admin listener's accept loop, as a reload sees it.
pub(crate) struct RunningAdmin {
    /// As configured (port 0 stays 0).
    bind: SocketAddr,
    /// As bound.
    pub addr: SocketAddr,
    /// Stops this listener (and its connections, after their request).
    stop: CancellationToken,
}

/// What the next config does to the admin listener.
pub(crate) enum AdminChange {
    /// Same bind (or still none): the listener stays.
    Keep,
    /// `[admin]` is gone.
    Stop,
    /// A new (or first) bind, already bound.
    Start(SocketAddr, TcpListener),
}

/// A listener's accept loop, as a reload sees it.
pub(crate) struct Running {
    pub id: u64,
    /// As configured (port 0 stays 0).
    bind: SocketAddr,
    /// As bound.
    pub addr: SocketAddr,
    stop: CancellationToken,
    tls: TlsSlot,
    /// Its connection limits, which a reload sets anew.
    limit: Arc<Limiter>,
}

/// A listener of the next config, ready to commit.
pub(crate) struct Bound {
    pub id: u64,
    socket: Socket,
    tls: Option<TlsAcceptor>,
}

enum Socket {
    /// Keeps the running listener with this id.
    Kept,
    New(TcpListener),
}

static NEXT_LISTENER_ID: AtomicU64 = AtomicU64::new(1);

impl Generation {
    pub fn empty(config: Config, checks: CancellationToken) -> Generation {
        Generation {
            config,
            listeners: Vec::new(),
            checks,
            admin: None,
        }
    }
}

/// Binds what `config` needs that `running` does not already have. A
/// listener matches a running one with the same configured bind (the n-th
/// `127.0.0.1:0` matches the n-th, so port-0 configs reload too).
pub(crate) fn bind_all(config: &Config, running: &[Running]) -> Result<Vec<Bound>, StartError> {
    let mut used = vec![false; running.len()];
    let mut out = Vec::new();
    for l in &config.listeners {
        let tls =
            match &l.tls {
                Some(t) => Some(listener::tls::acceptor(t, l.http2.is_some()).map_err(
                    |source| StartError::Tls {
                        addr: l.bind,
                        source,
                    },
                )?),
                None => None,
            };
        let matched = (0..running.len()).find(|&j| !used[j] && running[j].bind == l.bind);
        let (id, socket) = match matched {
            Some(j) => {
                used[j] = true;
                (running[j].id, Socket::Kept)
            }
            None => {
                let tcp = listen(l.bind).map_err(|source| StartError::Bind {
                    what: "listener",
                    addr: l.bind,
                    source,
                })?;
                (
                    NEXT_LISTENER_ID.fetch_add(1, Ordering::Relaxed),
                    Socket::New(tcp),
                )
            }
        };
        out.push(Bound { id, socket, tls });
    }
    Ok(out)
}

/// Binds the admin listener `config` asks for if `running` is not already
/// it; the error names the address that could not be bound.
pub(crate) fn prepare_admin(
    config: &Config,
    running: Option<&RunningAdmin>,
) -> Result<AdminChange, (SocketAddr, std::io::Error)> {
    let want = config.admin.as_ref().map(|a| a.bind);
    match (want, running) {
        (None, None) => Ok(AdminChange::Keep),
        (None, Some(_)) => Ok(AdminChange::Stop),
        (Some(bind), Some(r)) if r.bind == bind => Ok(AdminChange::Keep),
        (Some(bind), _) => listen(bind)
            .map(|tcp| AdminChange::Start(bind, tcp))
            .map_err(|e| (bind, e)),
    }
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl Inner {
    pub(crate) fn generation(&self) -> MutexGuard<'_, Generation> {
        self.generation.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the file the running config came from and reloads it.
    pub(crate) fn reload_file(&self) -> Result<(), ReloadError> {
        let path = self.generation().config.source.clone();
        match Config::load(&path) {
            Ok(config) => self.reload(config),
            Err(e) => {
                self.shared.metrics.reload(false);
                Err(ReloadError::Config(e))
            }
        }
    }

    pub(crate) fn reload(&self, config: Config) -> Result<(), ReloadError> {
        let outcome = self.try_reload(config);
        self.shared.metrics.reload(outcome.is_ok());
        outcome
    }

    pub(crate) fn admin_addr(&self) -> Option<SocketAddr> {
        self.generation().admin.as_ref().map(|a| a.addr)
    }

    fn try_reload(&self, config: Config) -> Result<(), ReloadError> {
        let mut current = self.generation();
        let bound = bind_all(&config, &current.listeners)?;
        let admin = prepare_admin(&config, current.admin.as_ref())
            .map_err(|(addr, source)| ReloadError::AdminBind { addr, source })?;
        let ids: Vec<u64> = bound.iter().map(|b| b.id).collect();
        let shared = &self.shared;
        // Servers found by DNS stay while the upstream's `discover` is unchanged.
        let effective = self.discovery.effective(&config);
        let next = Routing::build(&effective, &ids, &shared.pool, &shared.metrics)
            .map_err(StartError::Upstream)?;
        shared.routing.store(Arc::new(next));
        self.commit(&mut current, config, bound, admin);
        info!("reloaded");
        Ok(())
    }

    /// Makes `config` the one in force; its routing table is already in
    /// place. The caller holds the generation lock from before `bind_all`.
    pub(crate) fn commit(
        &self,
        current: &mut Generation,
        config: Config,
        bound: Vec<Bound>,
        admin: AdminChange,
    ) {
        crate::log::set_json(config.server.access_log == crate::config::AccessLog::Json);
        self.commit_admin(current, &config, admin);
        let mut old: Vec<Running> = current.listeners.drain(..).collect();
        let mut listeners = Vec::new();
        for (b, l) in bound.into_iter().zip(&config.listeners) {
            let running = match b.socket {
                Socket::Kept => match old.iter().position(|r| r.id == b.id) {
                    Some(j) => {
                        let r = old.swap_remove(j);
                        r.tls.store(b.tls.map(Arc::new));
                        r.limit
                            .configure(l.max_connections, l.max_connections_per_client);
                        r
                    }
                    None => continue, // unreachable: each running listener is kept once
                },
                Socket::New(tcp) => self.spawn_listener(b.id, l, tcp, b.tls),
            };
            listeners.push(running);
        }
        for r in old {
            info!(addr = %r.addr, "listener removed; it stops accepting");
            r.stop.cancel();
        }
        current.listeners = listeners;

        self.spawn_discovery(&config);
        self.apply_pool(current, &config);
        current.config = config;
    }

    /// After a new routing table is in force: health checkers restart for
    /// its servers, and the servers it no longer has drain for `grace`. A
    /// reload and a DNS discovery change both end here, under the
    /// generation lock.
    pub(crate) fn apply_pool(&self, current: &mut Generation, config: &Config) {
        current.checks.cancel();
        current.checks = self.stop_accepting.child_token();
        let routing = self.shared.routing.load();
        for (name, up) in &config.upstreams {
            if let (Some(check), Some(rt)) = (&up.check, routing.upstreams.get(name)) {
                let metrics = self.shared.metrics.clone();
                health::spawn_checkers(
                    name,
                    &rt.backends,
                    check,
                    metrics,
                    &current.checks,
                    &self.conns,
                );
            }
            if let (Some(load), Some(rt)) = (&up.load, routing.upstreams.get(name)) {
                crate::load::spawn_all(name, &rt.backends, load, &current.checks, &self.conns);
            }
        }
        let removed = self.shared.pool.retire(&routing.server_keys());
        self.drain_removed(removed, config.server.grace, config.server.close_spread);
    }

    /// The new admin token at once; the listener moved if its bind changed.
    fn commit_admin(&self, current: &mut Generation, config: &Config, change: AdminChange) {
        let token = config.admin.as_ref().and_then(|a| a.token.clone());
        self.admin.token.store(token.map(Arc::new));
        let old = match change {
            AdminChange::Keep => return,
            AdminChange::Stop => current.admin.take(),
            AdminChange::Start(bind, tcp) => {
                let addr = tcp.local_addr().unwrap_or(bind);
                let stop = self.stop_accepting.child_token();
                let serve =
                    crate::admin::serve(tcp, self.admin.clone(), stop.clone(), self.conns.clone());
                self.conns.spawn(serve);
                let old = current.admin.replace(RunningAdmin { bind, addr, stop });
                match &old {
                    Some(o) => info!(from = %o.addr, to = %addr, "admin listener moved"),
                    None => info!(%addr, "admin listening"),
                }
                old
            }
        };
        if let Some(old) = old {
            if current.admin.is_none() {
                info!(addr = %old.addr, "admin listener stopped");
            }
            old.stop.cancel();
        }
    }

    fn spawn_listener(
        &self,
        id: u64,
        config: &ListenerConfig,
        tcp: TcpListener,
        tls: Option<TlsAcceptor>,
    ) -> Running {
        let bind = config.bind;
        let addr = tcp.local_addr().unwrap_or(bind);
        let limit = Limiter::new(
            self.shared.metrics.listener(addr),
            config.max_connections,
            config.max_connections_per_client,
        );
        info!(%addr, tls = tls.is_some(), "listening");
        let stop = self.stop_accepting.child_token();
        let tls: TlsSlot = Arc::new(arc_swap::ArcSwapOption::new(tls.map(Arc::new)));
        let accept = Accept {
            id,
            listener: tcp,
            tls: tls.clone(),
            shared: self.shared.clone(),
            stop_accepting: stop.clone(),
            drain: self.drain.clone(),
            conns: self.conns.clone(),
            limit: limit.clone(),
        };
        self.conns.spawn(accept.run());
        Running {
            id,
            bind,
            addr,
            stop,
            tls,
            limit,
        }
    }

    /// Removed servers take nothing new (they are in no routing table any
    /// more); their tunnels get `grace`, then close.
    /// Lets a removed server's tunnels run for `grace - spread`, then has
    /// them close (WebSockets pick their moments within `spread`).
    fn drain_removed(
        &self,
        removed: Vec<Arc<Server>>,
        grace: std::time::Duration,
        spread: std::time::Duration,
    ) {
        let until = grace.saturating_sub(spread);
        for s in removed {
            warn!(upstream = %s.upstream, backend = %s.addr, tunnels = s.tunnels(), ?grace, close_spread = ?spread, "server removed; draining");
            // Not tracked: a stop must not wait for this timer. When a stop
            // begins, its own grace governs the tunnels instead.
            let stopping = self.stop_accepting.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(until) => s.close_tunnels(),
                    _ = stopping.cancelled() => {}
                }
            });
        }
    }
}
