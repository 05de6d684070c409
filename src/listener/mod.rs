//! Accepting clients: the accept loop of each listener, the TLS handshake, and
//! the hyper HTTP/1.1 server that runs [`proxy::handle`] for each request.
//!
//! One task per connection. A failed handshake, a slow or malformed client, or
//! a reset costs only that connection's task. Stopping is in two steps: stop
//! accepting (the loop ends), then ask each connection to finish its current
//! request and close (`graceful_shutdown`).

pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::config::ServerSettings;
use crate::proxy::{self, ConnInfo, Shared};

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
        } = self;
        let ctx = Arc::new(ConnCtx {
            id,
            tls,
            shared,
            drain,
        });
        loop {
            let accepted = tokio::select! {
                _ = stop_accepting.cancelled() => return,
                r = listener.accept() => r,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let ctx = ctx.clone();
                    conns.spawn(async move { ctx.connection(stream, peer).await });
                }
                Err(e) => {
                    // Usually EMFILE/ENFILE: back off briefly instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
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
    async fn connection(&self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        // Settings and certificates as of this connection's arrival.
        let routing = self.shared.routing.load();
        let server = routing.server.clone();
        let routes = routing.listeners.get(&self.id).cloned();
        let acceptor = self.tls.load_full();
        let info = Arc::new(ConnInfo {
            listener: self.id,
            routes,
            peer,
            tls: acceptor.is_some(),
        });
        match acceptor {
            None => self.serve(stream, info, &server).await,
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(server.tls_handshake_timeout, acceptor.accept(stream));
                match handshake.await {
                    Ok(Ok(tls)) => self.serve(tls, info, &server).await,
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

    async fn serve<I>(&self, io: I, info: Arc<ConnInfo>, server: &ServerSettings)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let shared = self.shared.clone();
        let peer = info.peer;
        let svc = service_fn(move |req| proxy::handle(shared.clone(), info.clone(), req));
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(server.header_timeout)
            // The head limit, exact: hyper counts from the request line to
            // the blank line and answers 431 past it, however the bytes
            // arrive. The buffer limit alone is not exact: one large read
            // can carry a whole head past it.
            .max_header_size(server.max_header_size)
            .max_buf_size(server.max_header_size)
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades();
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = self.drain.cancelled() => {
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    r = conn.as_mut() => r,
                    // Grace is over: drop the connection with whatever it was doing.
                    _ = self.shared.hard_stop.cancelled() => Ok(()),
                }
            }
        };
        if let Err(e) = result {
            debug!(%peer, "connection ended: {e}");
        }
    }
}
