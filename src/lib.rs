//! latch: a WebSocket-aware L7 load balancer with sticky sessions.
//!
//! The layout follows the path of a request. `config` turns a TOML file into a
//! validated [`Config`]. `listener` accepts clients (TLS, HTTP/1.1) and hands
//! each request to `proxy`, which routes it to an upstream, asks `balance`'s
//! policy for a backend among the upstream's `backend`s, forwards it on a
//! pooled upstream connection, and turns upgrades into tunnels. A `tcp`
//! listener hands its connections to `stream` instead (L4 mode): raw bytes
//! to a server placed by the same pool and policy. `admin`
//! serves the operator's endpoints; `demo` is the self-contained setup behind
//! `latch demo`. Dependencies point one way:
//! config → body/metrics → backend → balance/sticky/health → proxy →
//! listener/admin → here.
//!
//! State comes in two lifetimes. The [`backend::Pool`] lives as long as the
//! process: every server's counts, health, drain flag and idle upstream
//! connections. The [`proxy::Routing`] table (routes, upstreams, placement
//! policies) is what a reload swaps whole; its backends point into the pool.
//! `discover` (servers from DNS) is the other writer: when a name's answer
//! changes it swaps in a table with that upstream rebuilt, under the same
//! lock as a reload, and the pool keeps or drains servers as for a reload.
//!
//! [`start`] binds everything and returns a [`Handle`] to reload or stop it;
//! `reload` swaps in a new config without dropping a connection.
//! `path` (request paths in normal form) is a pure leaf that config
//! validation and routing share; `proxy_protocol` (PROXY protocol headers,
//! parsed and written) is a pure leaf that listeners, the forwarder and
//! health checks share; `clock` (the coarse monotonic clock for deadlines
//! and idle ages) is a leaf the HTTP/1.1 server and the idle pool read.
#![forbid(unsafe_code)]

pub mod admin;
pub mod backend;
pub mod balance;
pub mod body;
pub mod clock;
pub mod config;
pub mod demo;
pub mod discover;
pub mod dispatch;
pub mod h2;
pub mod health;
pub mod http1;
pub mod listener;
pub mod load;
pub mod log;
pub mod metrics;
pub mod path;
pub mod proxy;
pub mod proxy_protocol;
mod reload;
pub mod sticky;
pub mod stream;
mod woken;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

pub use config::{Config, ConfigError};
use proxy::{Routing, Shared};
pub use reload::ReloadError;

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

/// A running latch: its bound addresses, and the way to reload or stop it.
/// Cloning gives another handle to the same instance.
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// What the admin routes read (its token follows reloads), wherever the
    /// admin listener is bound.
    admin: Arc<admin::AdminState>,
    /// Parent of every listener's and checker's stop token.
    stop_accepting: CancellationToken,
    /// Cancelled to ask open connections to finish their request and close.
    drain: CancellationToken,
    /// Accept loops, connections, checkers, drain timers.
    conns: TaskTracker,
    /// The config in force and what runs for it; reloads take turns here.
    generation: Mutex<reload::Generation>,
    /// Servers found by DNS discovery, by upstream (outlives reloads).
    discovery: discover::Registry,
    /// This instance, for the tasks it starts (discovery).
    this: std::sync::Weak<Inner>,
}

/// Binds every listener (and the admin listener) of `config` and starts serving.
pub async fn start(config: Config) -> Result<Handle, StartError> {
    let stop_accepting = CancellationToken::new();
    let conns = TaskTracker::new();
    // Bind everything before serving anything, so a failure leaves nothing running.
    let bound = reload::bind_all(&config, &[])?;
    let ids: Vec<u64> = bound.iter().map(|b| b.id).collect();
    let pool = backend::Pool::default();
    let metrics = Arc::new(metrics::Metrics::new());
    let discovery = discover::Registry::default();
    discover::first(&config, &discovery, &metrics).await;
    let routing = Routing::build(&discovery.effective(&config), &ids, &pool, &metrics)
        .map_err(StartError::Upstream)?;
    let shared = Arc::new(Shared {
        routing: ArcSwap::from_pointee(routing),
        pool,
        tunnels: TaskTracker::new(),
        hard_stop: CancellationToken::new(),
        stop_spreads: Arc::default(),
        metrics,
    });
    let admin =
        reload::prepare_admin(&config, None).map_err(|(addr, source)| StartError::Bind {
            what: "admin listener",
            addr,
            source,
        })?;
    let inner = Arc::new_cyclic(|weak| Inner {
        admin: Arc::new(admin::AdminState {
            shared: shared.clone(),
            metrics: shared.metrics.clone(),
            token: Default::default(),
            reload: Some(reload_fn(weak.clone())),
            started: std::time::Instant::now(),
        }),
        shared,
        stop_accepting: stop_accepting.clone(),
        drain: CancellationToken::new(),
        conns: conns.clone(),
        generation: Mutex::new(reload::Generation::empty(
            config.clone(),
            stop_accepting.child_token(),
        )),
        discovery,
        this: weak.clone(),
    });
    {
        let mut generation = inner.generation();
        inner.commit(&mut generation, config, bound, admin);
    }
    conns.spawn(reap_idle(inner.shared.clone(), stop_accepting.clone()));
    Ok(Handle { inner })
}

/// The pool's housekeeping: every few seconds, close upstream connections
/// that were idle too long or that their server closed.
async fn reap_idle(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let max_idle = shared.routing.load().server.pool_idle_timeout;
        shared.pool.reap_idle(max_idle);
    }
}

/// `POST /reload` for the admin listener. It holds the instance weakly, so
/// the admin task never keeps a stopped instance alive.
fn reload_fn(inner: std::sync::Weak<Inner>) -> admin::ReloadFn {
    Arc::new(move || {
        let inner = inner.clone();
        Box::pin(async move {
            let inner = inner
                .upgrade()
                .ok_or_else(|| "latch is stopping".to_string())?;
            let before = inner.admin_addr();
            // Reading files (config, certificates) blocks: off the workers.
            let outcome = tokio::task::spawn_blocking(move || {
                inner.reload_file().map(|()| inner.admin_addr())
            })
            .await
            .map_err(|e| format!("reload failed: {e}\n"))?;
            match outcome {
                Ok(after) if after != before => Ok(match after {
                    Some(addr) => format!("reloaded; the admin listener moved to {addr}\n"),
                    None => "reloaded; the admin listener is stopped\n".to_string(),
                }),
                Ok(_) => Ok("reloaded\n".to_string()),
                Err(e) => Err(format!("{e}\n")),
            }
        })
    })
}

impl Handle {
    /// Bound address of each `[[listener]]` of the config in force, in order.
    pub fn listener_addrs(&self) -> Vec<SocketAddr> {
        self.inner
            .generation()
            .listeners
            .iter()
            .map(|l| l.addr)
            .collect()
    }

    /// Where the admin listener is bound now (a reload can move it).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.inner.admin_addr()
    }

    /// The routing table now in force (upstreams and their backends).
    pub fn snapshot(&self) -> Arc<Routing> {
        self.inner.shared.routing.load_full()
    }

    /// The pool of servers (and their idle upstream connections).
    pub fn pool(&self) -> &backend::Pool {
        &self.inner.shared.pool
    }

    /// HTTP/2 counts now: connections, streams, WebSockets over HTTP/2 (as
    /// `/status` shows them under `http2`).
    pub fn h2_stats(&self) -> metrics::h2::H2View {
        self.inner.shared.metrics.h2.view()
    }

    /// Swaps in `config` without dropping anything in flight: servers that
    /// stay keep their counts, health and slow start; removed servers drain;
    /// unchanged listeners keep their sockets, new ones are bound, removed
    /// ones stop accepting. `[admin]` applies too: a new token at once, a new
    /// bind moves the admin listener. On error nothing changes.
    pub fn reload(&self, config: Config) -> Result<(), ReloadError> {
        self.inner.reload(config)
    }

    /// Re-reads the file the running config came from and reloads it. A file
    /// that fails validation is refused with the same message as `latch check`.
    /// Blocks on file reads: from async code use [`Handle::reload_file_async`].
    pub fn reload_file(&self) -> Result<(), ReloadError> {
        self.inner.reload_file()
    }

    /// [`Handle::reload_file`] on a blocking thread, off the async workers.
    pub async fn reload_file_async(&self) -> Result<(), ReloadError> {
        let inner = self.inner.clone();
        match tokio::task::spawn_blocking(move || inner.reload_file()).await {
            Ok(outcome) => outcome,
            Err(e) => Err(ReloadError::Start(StartError::Upstream(format!(
                "reload task failed: {e}"
            )))),
        }
    }

    /// Graceful stop: stop accepting, let in-flight requests finish and tunnels
    /// run for up to `grace`, then close whatever is left.
    pub async fn shutdown(self) {
        let (grace, spread) = {
            let g = self.inner.generation();
            (g.config.server.grace, g.config.server.close_spread)
        };
        self.shutdown_spread(grace, spread).await
    }

    /// Like [`Handle::shutdown`] with an explicit grace period (and no spread).
    pub async fn shutdown_within(&self, grace: Duration) {
        self.shutdown_spread(grace, Duration::ZERO).await
    }

    /// Like [`Handle::shutdown`]: WebSockets still open at `grace - spread`
    /// get their close frames at random moments over the last `spread`.
    pub async fn shutdown_spread(&self, grace: Duration, spread: Duration) {
        let grace = grace.saturating_sub(spread);
        let i = &self.inner;
        i.stop_accepting.cancel();
        i.drain.cancel();
        i.conns.close();
        i.shared.tunnels.close();
        let everything = async {
            i.conns.wait().await;
            i.shared.tunnels.wait().await;
        };
        if tokio::time::timeout(grace, everything).await.is_err() {
            warn!(
                tunnels = i.shared.tunnels.len(),
                connections = i.conns.len(),
                "grace period over; closing what is left"
            );
            i.shared
                .stop_spreads
                .store(!spread.is_zero(), std::sync::atomic::Ordering::Release);
            i.shared.hard_stop.cancel();
            i.conns.wait().await;
            i.shared.tunnels.wait().await;
        }
    }
}
