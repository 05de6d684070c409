//! latch: a WebSocket-aware L7 load balancer with sticky sessions.
//!
//! The layout follows the path of a request. `config` turns a TOML file into a
//! validated [`Config`]. `listener` accepts clients (TLS, HTTP/1.1) and hands
//! each request to `proxy`, which routes it to an upstream, asks `balance` for
//! a backend among the upstream's `backend`s, forwards it, and turns upgrades
//! into tunnels. `admin` serves the operator's endpoints; `demo` is the
//! self-contained setup behind `latch demo`. Dependencies point one way:
//! config → backend → balance → proxy → listener/admin → here.
//!
//! [`start`] binds everything and returns a [`Handle`] to stop it.
#![forbid(unsafe_code)]

pub mod admin;
pub mod backend;
pub mod balance;
pub mod config;
pub mod demo;
pub mod health;
pub mod listener;
pub mod proxy;
pub mod sticky;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::{Config, ConfigError};
use proxy::{Shared, Snapshot};

/// Why latch could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS setup for listener {addr}: {source}")]
    Tls {
        addr: SocketAddr,
        source: rustls::Error,
    },
    #[error("{0}")]
    Upstream(String),
}

/// A running latch: its bound addresses, and the way to stop it.
pub struct Handle {
    listeners: Vec<SocketAddr>,
    admin: Option<SocketAddr>,
    shared: Arc<Shared>,
    grace: Duration,
    stop_accepting: CancellationToken,
    drain: CancellationToken,
    conns: TaskTracker,
}

/// Binds every listener (and the admin listener) of `config` and starts serving.
pub async fn start(config: Config) -> Result<Handle, StartError> {
    let shared = Arc::new(Shared {
        snapshot: ArcSwap::from_pointee(Snapshot::new(&config).map_err(StartError::Upstream)?),
        tunnels: TaskTracker::new(),
        hard_stop: CancellationToken::new(),
        draining: Default::default(),
    });
    let stop_accepting = CancellationToken::new();
    let drain = CancellationToken::new();
    let conns = TaskTracker::new();

    // Bind everything before serving anything, so a failure leaves nothing running.
    let mut bound = Vec::new();
    for l in &config.listeners {
        let tcp = TcpListener::bind(l.bind)
            .await
            .map_err(|source| StartError::Bind {
                what: "listener",
                addr: l.bind,
                source,
            })?;
        let tls = match &l.tls {
            Some(t) => Some(
                listener::tls::acceptor(t).map_err(|source| StartError::Tls {
                    addr: l.bind,
                    source,
                })?,
            ),
            None => None,
        };
        bound.push((tcp, tls));
    }
    let admin = match &config.admin {
        Some(a) => Some(
            TcpListener::bind(a.bind)
                .await
                .map_err(|source| StartError::Bind {
                    what: "admin listener",
                    addr: a.bind,
                    source,
                })?,
        ),
        None => None,
    };

    // Active health checks: one task per backend, stopped with the listeners.
    let snapshot = shared.snapshot.load();
    for (name, up) in &config.upstreams {
        if let (Some(check), Some(rt)) = (&up.check, snapshot.upstreams.get(name)) {
            health::spawn_checkers(name, &rt.backends, check, &stop_accepting, &conns);
        }
    }

    let mut addrs = Vec::new();
    for (index, (tcp, tls)) in bound.into_iter().enumerate() {
        let addr = tcp.local_addr().map_err(|source| StartError::Bind {
            what: "listener",
            addr: config.listeners[index].bind,
            source,
        })?;
        info!(%addr, tls = tls.is_some(), "listening");
        addrs.push(addr);
        let accept = listener::Accept {
            index,
            listener: tcp,
            tls,
            shared: shared.clone(),
            server: config.server.clone(),
            stop_accepting: stop_accepting.clone(),
            drain: drain.clone(),
            conns: conns.clone(),
        };
        conns.spawn(accept.run());
    }
    let admin_addr = match admin {
        Some(tcp) => {
            let addr = tcp.local_addr().ok();
            info!(addr = ?addr, "admin listening");
            conns.spawn(admin::serve(tcp, stop_accepting.clone(), conns.clone()));
            addr
        }
        None => None,
    };

    Ok(Handle {
        listeners: addrs,
        admin: admin_addr,
        shared,
        grace: config.server.grace,
        stop_accepting,
        drain,
        conns,
    })
}

impl Handle {
    /// Bound address of each `[[listener]]`, in config order.
    pub fn listener_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.clone()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// The routable state now in force (upstreams and their backends).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// Graceful stop: stop accepting, let in-flight requests finish and tunnels
    /// run for up to `grace`, then close whatever is left.
    pub async fn shutdown(self) {
        self.shutdown_within(self.grace).await
    }

    /// Like [`Handle::shutdown`] with an explicit grace period.
    pub async fn shutdown_within(&self, grace: Duration) {
        self.stop_accepting.cancel();
        self.drain.cancel();
        self.conns.close();
        self.shared.tunnels.close();
        let everything = async {
            self.conns.wait().await;
            self.shared.tunnels.wait().await;
        };
        if tokio::time::timeout(grace, everything).await.is_err() {
            warn!(
                tunnels = self.shared.tunnels.len(),
                connections = self.conns.len(),
                "grace period over; closing what is left"
            );
            self.shared.hard_stop.cancel();
            self.conns.wait().await;
            self.shared.tunnels.wait().await;
        }
    }
}
