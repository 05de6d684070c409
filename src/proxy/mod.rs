//! The HTTP side of latch: one hyper service per client connection that routes
//! each request to an upstream, places it on a backend, forwards it with its
//! body streamed, and streams the answer back. An Upgrade request whose backend
//! answers `101` becomes a byte tunnel (`tunnel.rs`) counted as a tunnel, not a
//! request, for as long as it lives.
//!
//! Layout: `routing.rs` holds the swappable [`Routing`] table, `select.rs`
//! builds a request's placement key, `forward.rs` runs the attempts,
//! `host.rs` decides the one Host a request is routed and forwarded by,
//! `headers.rs` rewrites headers, `body.rs` the body types, `error.rs` maps
//! failures to statuses, `tunnel.rs` copies upgraded bytes,
//! `ws_first.rs` tags the Engine.IO open packet in a WebSocket's first frame
//! (`session_id` stickiness) before the tunnel starts. What outlives a
//! reload (servers, their counts and connections) is the [`Pool`]'s.

pub mod access;
mod body;
mod dispatch;
mod error;
mod forward;
mod handshake;
pub mod headers;
pub mod host;
mod routing;
mod select;
pub mod tunnel;
mod ws_first;
mod ws_frames;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

pub use body::{Body, BoxError, HoldUntilEnd, OnEnd};
pub use error::ProxyError;
pub use routing::{ListenerRoutes, Routing, Upstream};

use crate::backend::Pool;

/// State shared by every connection of every listener.
#[derive(Debug)]
pub struct Shared {
    /// The routing table in force; a reload swaps it whole.
    pub routing: ArcSwap<Routing>,
    /// Every server and its live state; lives as long as the process.
    pub pool: Pool,
    /// Tunnels outlive their HTTP connection; they are tracked here so a stop
    /// can wait for them.
    pub tunnels: TaskTracker,
    /// Cancelled when tunnels must close (end of the grace period).
    pub hard_stop: CancellationToken,
    /// Set before `hard_stop` is cancelled: whether tunnels spread their
    /// goodbyes over `close_spread` (a stop that kept that window for them)
    /// or say goodbye at once (a stop whose grace is all used up).
    pub stop_spreads: Arc<std::sync::atomic::AtomicBool>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Facts about the client connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Id of the listener (stable across reloads).
    pub listener: u64,
    /// The listener's routes when the connection arrived: used only if a
    /// reload removed the listener, so its open connections keep working.
    pub routes: Option<Arc<ListenerRoutes>>,
    /// The client: the TCP peer, or the client a PROXY protocol header named.
    pub peer: SocketAddr,
    /// The address the client connected to (from the PROXY header when one
    /// named it), for `send_proxy`; `None` when unknown (set by the
    /// listener after [`ConnInfo::new`]).
    pub local: Option<SocketAddr>,
    pub tls: bool,
    /// `peer`'s address as an `X-Forwarded-For` value, made once.
    pub forwarded_for: http::HeaderValue,
}

impl ConnInfo {
    pub fn new(
        listener: u64,
        routes: Option<Arc<ListenerRoutes>>,
        peer: SocketAddr,
        tls: bool,
    ) -> ConnInfo {
        ConnInfo {
            listener,
            routes,
            peer,
            local: None,
            tls,
            forwarded_for: headers::forwarded_for(peer),
        }
    }
}

/// Put in a request's extensions by a protocol layer that has already
/// decided to refuse it (with this status and reason): [`handle`] answers it
/// without routing it, and counts and logs it like any other request.
#[derive(Debug, Clone, Copy)]
pub struct Refuse(pub http::StatusCode, pub &'static str);

/// One request, start to end: never fails; every error becomes a response,
/// whose fields are all in its map.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Body>,
) -> Response<Body> {
    let (mut resp, fields) = answer(shared, conn, req).await;
    if let Some(fields) = fields {
        // Passed through for an HTTP/1.1 client only; should an answer
        // arrive here with them, they go into the map, filtered as there.
        fields.append_to(resp.headers_mut());
        forward::response_headers(resp.headers_mut());
    }
    resp
}

/// [`handle`] for an HTTP/1.1 client: a backend's answer may keep its
/// fields as the backend's bytes ([`crate::http1::RawFields`]), for the client's
/// writer to copy on, instead of a map built and read back per field.
pub async fn answer(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Body>,
) -> (Response<Body>, Option<crate::http1::RawFields>) {
    let started = std::time::Instant::now();
    let routing = shared.routing.load_full();
    let method = req.method().clone();
    let version = req.version();
    let trusted = routing
        .listeners
        .get(&conn.listener)
        .or(conn.routes.as_ref())
        .map_or(&[][..], |r| r.trusted_proxies.as_slice());
    let id = headers::request_id(req.headers(), conn.peer, trusted);
    let format = routing.server.access_log;
    // Only the access line reads it: no lookup while the log is off.
    let user_agent = match format {
        crate::config::AccessLog::Off => None,
        _ => req.headers().get(http::header::USER_AGENT).cloned(),
    };
    // A clone shares the request's bytes: no allocation on the hot path.
    let target = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let (resp, mut served) = match forward::forward(&shared, &routing, &conn, req, &id).await {
        Ok((resp, served)) => (resp, Some(served)),
        Err(e) => {
            let status = e.status().as_u16();
            // A client's own fault (a refused HTTP/2 CONNECT answers 501)
            // is no warning: clients could flood the log with it.
            if e.status().is_server_error() && !e.client_fault() {
                warn!(peer = %conn.peer, %method, %target, status, "{e}");
            } else {
                debug!(peer = %conn.peer, %method, %target, status, "{e}");
            }
            (e.response(), None)
        }
    };
    // One clock read for the metric and the log line.
    let elapsed = started.elapsed();
    let head_secs = elapsed.as_secs_f64();
    let status = resp.status();
    match &served {
        // A dispatch answer (no attempt): the server counts it as a
        // dispatch, not as a request sent to it.
        Some(s) if s.attempts == 0 => {
            shared
                .metrics
                .request(&s.upstream.name, "", status.as_u16(), elapsed)
        }
        Some(s) => s
            .upstream
            .metrics
            .request(s.index, status.as_u16(), elapsed),
        None => shared.metrics.request("", "", status.as_u16(), elapsed),
    }
    let fields = served.as_mut().and_then(|s| s.fields.take());
    // An upgrade's 101 gets its line now; its tunnel writes another when it closes.
    if format == crate::config::AccessLog::Off {
        return (resp, fields);
    }
    let (method, status) = access::as_client_saw(version, method, status);
    let entry = access::Entry {
        format,
        peer: conn.peer,
        method,
        target,
        version,
        status,
        served,
        started,
        head_secs,
        request_id: id,
        user_agent,
    };
    (resp.map(|b| HoldUntilEnd::new(b, entry).boxed()), fields)
}
