//! Reload: swapping in a new config while every connection stays up.
//!
//! A reload is prepared completely before anything changes — new listener
//! sockets bound, TLS set up, the new [`Snapshot`] built — so a failure at any
//! step leaves the running config untouched. Then it is committed in one go:
//!
//! - The snapshot is swapped atomically. Requests in flight keep the one they
//!   started with; servers that stay share their live state with the new
//!   snapshot (counts, health, slow start survive).
//! - Listeners are matched by bind address. A matched listener keeps its
//!   socket and accept loop; only its TLS certificates and routes change. A
//!   new one is bound; a removed one stops accepting (its connections finish).
//! - Servers that left are *draining*: nothing new goes to them, and their
//!   tunnels live until they close or the new config's `grace` runs out.
//! - Health checkers restart for the new set of servers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard};

use tokio::net::{TcpListener, TcpSocket};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, ConfigError};
use crate::listener::{self, Accept, TlsSlot};
use crate::proxy::Snapshot;
use crate::{Inner, StartError, health};

/// Why a reload was refused (the running config stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
}

/// The config in force and what runs for it.
pub(crate) struct Generation {
    pub config: Config,
    /// In config order.
    pub listeners: Vec<Running>,
    /// Stops this generation's health checkers.
    checks: CancellationToken,
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
}

/// A listener of the next config, ready to commit.
pub(crate) struct Bound {
    pub id: u64,
    socket: Socket,
    tls: Option<TlsAcceptor>,
}

enum Socket {
    /// Keeps running listener number N of the current generation.
    Kept(usize),
    New(TcpListener),
}

static NEXT_LISTENER_ID: AtomicU64 = AtomicU64::new(1);

impl Generation {
    pub fn empty(config: Config, checks: CancellationToken) -> Generation {
        Generation {
            config,
            listeners: Vec::new(),
            checks,
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
        let tls = match &l.tls {
            Some(t) => Some(
                listener::tls::acceptor(t).map_err(|source| StartError::Tls {
                    addr: l.bind,
                    source,
                })?,
            ),
            None => None,
        };
        let matched = (0..running.len()).find(|&j| !used[j] && running[j].bind == l.bind);
        let (id, socket) = match matched {
            Some(j) => {
                used[j] = true;
                (running[j].id, Socket::Kept(j))
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

    fn try_reload(&self, config: Config) -> Result<(), ReloadError> {
        let current = self.generation();
        let bound = bind_all(&config, &current.listeners)?;
        let ids: Vec<u64> = bound.iter().map(|b| b.id).collect();
        let old = self.shared.snapshot.load_full();
        let next = Snapshot::build(&config, &ids, Some(&old)).map_err(StartError::Upstream)?;
        drop(current);
        let removed = old.removed_in(&next);
        self.shared.snapshot.store(Arc::new(next));
        self.commit(config, bound, removed);
        info!("reloaded");
        Ok(())
    }

    /// Makes `config` the one in force; its snapshot is already in place.
    pub(crate) fn commit(
        &self,
        config: Config,
        bound: Vec<Bound>,
        removed: Vec<(String, Arc<crate::backend::Backend>)>,
    ) {
        let mut current = self.generation();
        let mut old: Vec<Option<Running>> = current.listeners.drain(..).map(Some).collect();
        let mut listeners = Vec::new();
        for (b, l) in bound.into_iter().zip(&config.listeners) {
            let running = match b.socket {
                Socket::Kept(j) => match old.get_mut(j).and_then(Option::take) {
                    Some(r) => {
                        r.tls.store(b.tls.map(Arc::new));
                        r
                    }
                    None => continue, // unreachable: each running listener is kept once
                },
                Socket::New(tcp) => self.spawn_listener(b.id, l.bind, tcp, b.tls),
            };
            listeners.push(running);
        }
        for r in old.into_iter().flatten() {
            info!(addr = %r.addr, "listener removed; it stops accepting");
            r.stop.cancel();
        }
        current.listeners = listeners;

        current.checks.cancel();
        current.checks = self.stop_accepting.child_token();
        let snapshot = self.shared.snapshot.load();
        for (name, up) in &config.upstreams {
            if let (Some(check), Some(rt)) = (&up.check, snapshot.upstreams.get(name)) {
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
        }
        self.drain_removed(removed, config.server.grace);
        current.config = config;
    }

    fn spawn_listener(
        &self,
        id: u64,
        bind: SocketAddr,
        tcp: TcpListener,
        tls: Option<TlsAcceptor>,
    ) -> Running {
        let addr = tcp.local_addr().unwrap_or(bind);
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
        };
        self.conns.spawn(accept.run());
        Running {
            id,
            bind,
            addr,
            stop,
            tls,
        }
    }

    /// Removed servers take nothing new (they are in no snapshot any more);
    /// their tunnels get `grace`, then close.
    fn drain_removed(
        &self,
        removed: Vec<(String, Arc<crate::backend::Backend>)>,
        grace: std::time::Duration,
    ) {
        let mut list = self
            .shared
            .draining
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        list.retain(|(_, b)| b.load() > 0);
        for (upstream, b) in removed {
            b.start_draining();
            if b.load() == 0 {
                continue;
            }
            warn!(%upstream, backend = %b.addr, tunnels = b.tunnels(), ?grace, "server removed; draining");
            list.push((upstream, b.clone()));
            // Not tracked: a stop must not wait for this timer. When a stop
            // begins, its own grace governs the tunnels instead.
            let stopping = self.stop_accepting.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(grace) => b.close_tunnels(),
                    _ = stopping.cancelled() => {}
                }
            });
        }
    }
}
