//! Accepting clients: the accept loop of each listener, the TLS handshake, and
//! the HTTP/1.1 server (`crate::http1`) or the HTTP/2 one (`crate::h2`: by
//! ALPN `h2` with TLS, by its preface on a plain `http2 = true` listener)
//! that runs [`proxy::handle`] for each request.
//!
//! One task per connection. A failed handshake, a slow or malformed client, or
//! a reset costs only that connection's task. Stopping is in two steps: stop
//! accepting (the loop ends), then ask each connection to finish its current
//! request and close (the `drain` token).
//!
//! The loop waits for room under `max_connections` before it accepts, and
//! gives each connection a slot that lives as long as its socket
//! (`limit.rs`); when accepting fails it backs off (`backoff.rs`). On a
//! `proxy_protocol` listener each connection first gives its PROXY header
//! (`proxy_protocol.rs`), before TLS; the client it names is the client from
//! then on, and its address is the one `max_connections_per_client` counts.

pub mod backoff;
pub mod limit;
pub mod proxy_protocol;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::config::{H2Settings, ServerSettings};
use crate::http1;
use crate::proxy::{self, ConnInfo, Shared};
use backoff::AcceptBackoff;
use limit::{Limiter, Slot, WithSlot};

/// A listener's TLS setup, replaceable by a reload (new handshakes use the
/// new certificates; established connections keep theirs).
pub type TlsSlot = Arc<arc_swap::ArcSwapOption<TlsAcceptor>>;

/// Everything an accept loop needs.
pub struct Accept {
    /// Stable across reloads; names this listener's routes in the snapshot.
    pub id: u64,
    pub listener: TcpListener,
    pub tls: TlsSlot,
    pub shared: Arc<Shared>,
    /// Cancelled to stop accepting.
    pub stop_accepting: CancellationToken,
    /// Cancelled to ask open connections to finish their request and close.
    pub drain: CancellationToken,
    /// Connection tasks, so a stop can wait for them.
    pub conns: TaskTracker,
    /// This listener's connection limits and counts (a reload may change
    /// the limits).
    pub limit: Arc<Limiter>,
}

impl Accept {
    pub async fn run(self) {
        // The listener stays here, out of what connection tasks share, so it
        // closes (and the port refuses new clients) the moment this loop ends,
        // not when the last connection does.
        let Accept {
            id,
            listener,
            tls,
            shared,
            stop_accepting,
            drain,
            conns,
            limit,
        } = self;
        let addr = limit.stats().addr;
        let ctx = Arc::new(ConnCtx {
            id,
            tls,
            shared,
            drain,
        });
        let mut backoff = AcceptBackoff::default();
        loop {
            let accepted = tokio::select! {
                _ = stop_accepting.cancelled() => return,
                // A full listener leaves new clients in the backlog.
                r = async { limit.room().await; listener.accept().await } => r,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff.succeeded(addr);
                    // Behind a PROXY header the client's address is known
                    // only once the header is read (`connection`).
                    let slot = if ctx.proxy_protocol() {
                        limit.admit_open()
                    } else if let Some(slot) = limit.admit(peer.ip()) {
                        slot
                    } else {
                        debug!(%peer, "closed: the address has max_connections_per_client open");
                        continue;
                    };
                    let ctx = ctx.clone();
                    conns.spawn(async move { ctx.connection(stream, peer, slot).await });
                }
                Err(e) => {
                    limit.stats().accept_errors.fetch_add(1, Ordering::Relaxed);
                    let wait = backoff.failed(addr, &e);
                    tokio::select! {
                        _ = stop_accepting.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

/// What each connection task of a listener shares.
struct ConnCtx {
    id: u64,
    tls: TlsSlot,
    shared: Arc<Shared>,
    drain: CancellationToken,
}

impl ConnCtx {
    /// Whether connections to this listener start with a PROXY header now.
    fn proxy_protocol(&self) -> bool {
        let routing = self.shared.routing.load();
        routing
            .listeners
            .get(&self.id)
            .is_some_and(|r| r.proxy_protocol.is_some())
    }

    /// Serves one client; `slot` is its place under the listener's limits,
    /// held by its socket from here on.
    async fn connection(&self, mut stream: TcpStream, peer: SocketAddr, mut slot: Slot) {
        let _ = stream.set_nodelay(true);
        // Settings and certificates as of this connection's arrival.
        let routing = self.shared.routing.load();
        let server = routing.server.clone();
        let routes = routing.listeners.get(&self.id).cloned();
        let acceptor = self.tls.load_full();
        // Where the client connected (for `send_proxy`): the bound address,
        // unless it is a wildcard (then one system call says which).
        let bound = slot.stats().addr;
        let local = match bound.ip().is_unspecified() {
            true => stream.local_addr().ok(),
            false => Some(bound),
        };
        let mut client = (peer, local);
        if let Some(from) = routes.as_ref().and_then(|r| r.proxy_protocol.as_deref()) {
            let timeout = server.tls_handshake_timeout;
            let stats = slot.stats().clone();
            match proxy_protocol::admit(&mut stream, peer, from, timeout, &stats).await {
                Ok(Some(named)) => client = (named.src, Some(named.dst)),
                Ok(None) => {}
                Err(_) => return,
            }
            if !slot.claim(client.0.ip()) {
                debug!(peer = %client.0, "closed: the address has max_connections_per_client open");
                return;
            }
        }
        let (peer, local) = client;
        let mut info = ConnInfo::new(self.id, routes, peer, acceptor.is_some());
        info.local = local;
        let info = Arc::new(info);
        // The serving future is boxed: it is most of this connection's state
        // (7 KiB plain, 13 KiB over TLS, whose stream it holds), and inline
        // it made the task that much larger, copied whole when the task is
        // spawned, for every new connection, before a byte is read (perf:
        // memmove under `bind_new_task` was 5% of a new TCP connection's CPU).
        match acceptor {
            None => Box::pin(self.serve(WithSlot::new(stream, slot), info, &server, false)).await,
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(server.tls_handshake_timeout, acceptor.accept(stream));
                match handshake.await {
                    Ok(Ok(tls)) => {
                        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                        Box::pin(self.serve(WithSlot::new(tls, slot), info, &server, h2)).await
                    }
                    Ok(Err(e)) => {
                        self.shared.metrics.tls_handshake_failure();
                        debug!(%peer, "TLS handshake failed: {e}");
                    }
                    Err(_) => {
                        self.shared.metrics.tls_handshake_failure();
                        debug!(%peer, "TLS handshake timed out");
                    }
                }
            }
        }
    }

    /// Serves one client; `alpn_h2`: TLS chose HTTP/2.
    async fn serve<I: http1::Io>(
        &self,
        mut io: I,
        info: Arc<ConnInfo>,
        server: &ServerSettings,
        alpn_h2: bool,
    ) {
        // L4 stream mode: bytes, not HTTP (`stream/`).
        if let Some(up) = info.routes.as_deref().and_then(crate::stream::upstream_of) {
            return crate::stream::serve(&self.shared, io, info.peer, info.local, up).await;
        }
        let h2 = info.routes.as_deref().and_then(|r| r.http2);
        if alpn_h2 {
            // A reload may have turned HTTP/2 off since the handshake.
            let h = h2.unwrap_or_else(|| H2Settings::defaults(server.max_header_size));
            return self.serve_h2(io, info, server, &h).await;
        }
        if let (false, Some(h)) = (info.tls, h2) {
            // h2c with prior knowledge, or HTTP/1.1: the first bytes say.
            let (is_h2, seen) = match crate::h2::sniff(&mut io, server.header_timeout).await {
                Ok(v) => v,
                Err(e) => return debug!(peer = %info.peer, "closed before a request: {e}"),
            };
            let io = http1::Rewind::new(io, &seen);
            return match is_h2 {
                true => self.serve_h2(io, info, server, &h).await,
                false => self.serve_h1(io, info, server).await,
            };
        }
        self.serve_h1(io, info, server).await
    }

    async fn serve_h2<I: http1::Io>(
        &self,
        io: I,
        info: Arc<ConnInfo>,
        server: &ServerSettings,
        h: &H2Settings,
    ) {
        let shared = self.shared.clone();
        crate::h2::serve(io, shared, info, h, server, &self.drain).await
    }

    async fn serve_h1<I: http1::Io>(&self, io: I, info: Arc<ConnInfo>, server: &ServerSettings) {
        let peer = info.peer;
        let settings = http1::Settings {
            header_timeout: server.header_timeout,
            keepalive_timeout: server.keepalive_timeout,
            max_header_size: server.max_header_size,
        };
        let shared = &self.shared;
        let conn = http1::serve(
            io,
            settings,
            |req| proxy::answer(shared.clone(), info.clone(), req),
            &self.drain,
        );
        // Polled only when it fires, not each time the connection is.
        let stop = crate::woken::WokenOnly::new(self.shared.hard_stop.cancelled());
        let result = tokio::select! {
            r = conn => r,
            // Grace is over: drop the connection with whatever it was doing.
            () = stop => Ok(()),
        };
        if let Err(e) = result {
            debug!(%peer, "connection ended: {e}");
        }
    }
}
