//! The HTTP side of latch: one hyper service per client connection that routes
//! each request to an upstream, picks a backend, forwards the request with its
//! body streamed, and streams the answer back. An Upgrade request whose backend
//! answers `101` becomes a byte tunnel (`tunnel.rs`) counted as a tunnel, not a
//! request, for as long as it lives.
//!
//! Layout: `upstream.rs` holds the routable state (a [`Snapshot`]), `headers.rs`
//! rewrites headers, `body.rs` the body types, `error.rs` maps failures to
//! statuses, `tunnel.rs` copies upgraded bytes.

mod body;
mod error;
mod headers;
mod select;
pub mod tunnel;
mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{Request, Response, StatusCode, Uri, Version, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub use body::{Body, BoxError, HoldUntilEnd};
pub use error::ProxyError;
pub use upstream::{ListenerRoutes, Snapshot, Upstream};

use crate::backend::{Active, Backend};
use select::{Ask, Selection};

/// State shared by every connection of every listener.
#[derive(Debug)]
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    /// Tunnels outlive their HTTP connection; they are tracked here so a stop
    /// can wait for them.
    pub tunnels: TaskTracker,
    /// Cancelled when tunnels must close (end of the grace period).
    pub hard_stop: CancellationToken,
}

/// Facts about the client connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Index of the listener in the config.
    pub listener: usize,
    pub peer: SocketAddr,
    pub tls: bool,
}

/// The hyper service body: never fails; every error becomes a response.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let snapshot = shared.snapshot.load_full();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    match forward(&shared, &snapshot, &conn, req).await {
        Ok(resp) => {
            debug!(peer = %conn.peer, %method, %path, status = resp.status().as_u16(), "proxied");
            Ok(resp)
        }
        Err(e) => {
            let status = e.status();
            if status.is_server_error() {
                warn!(peer = %conn.peer, %method, %path, status = status.as_u16(), "{e}");
            } else {
                debug!(peer = %conn.peer, %method, %path, status = status.as_u16(), "{e}");
            }
            Ok(e.response())
        }
    }
}

async fn forward(
    shared: &Shared,
    snap: &Snapshot,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    let host = request_host(&req)?;
    let path = req.uri().path().to_owned();
    let routes = snap
        .listeners
        .get(conn.listener)
        .ok_or(ProxyError::BadRequest("listener gone"))?;
    let upstream = routes
        .find(&host, &path)
        .and_then(|r| snap.upstreams.get(&r.upstream))
        .ok_or_else(|| ProxyError::NoRoute {
            host: host.clone(),
            path: path.clone(),
        })?;
    let query = req.uri().query().map(str::to_owned);
    let ask = Ask {
        client_ip: conn.peer.ip(),
        path: &path,
        query: query.as_deref(),
        headers: req.headers_mut(),
    };
    let Selection { active, set_cookie } =
        upstream
            .policy
            .select(&upstream.name, &upstream.backends, ask)?;
    let backend = active.backend().clone();

    let offered = headers::upgrade_request(req.headers());
    let client_upgrade = offered.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (req, sent) = backend_request(req, &backend, conn, routes, offered.clone())?;
    let mut resp = send(upstream, &backend, req, sent).await?;
    if let Some(c) = set_cookie.and_then(|c| http::HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let (Some(offered), Some(client_upgrade)) = (offered, client_upgrade) else {
            return Err(ProxyError::BadResponse(
                backend.addr,
                "101 to a request that did not ask to upgrade".into(),
            ));
        };
        if !headers::upgrade_matches(&offered, resp.headers().get(header::UPGRADE)) {
            return Err(ProxyError::BadResponse(
                backend.addr,
                "101 with an Upgrade the client did not offer".into(),
            ));
        }
        let backend_upgrade = hyper::upgrade::on(&mut resp);
        spawn_tunnel(
            shared,
            upstream,
            active,
            client_upgrade,
            backend_upgrade,
            conn.peer,
        );
        let (mut parts, _) = resp.into_parts();
        let proto = parts.headers.get(header::UPGRADE).cloned();
        headers::strip_hop_by_hop(&mut parts.headers);
        if let Some(p) = proto {
            headers::keep_upgrade(&mut parts.headers, p);
        }
        return Ok(Response::from_parts(
            parts,
            http_body_util::Empty::new().map_err(|e| match e {}).boxed(),
        ));
    }

    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    let body = HoldUntilEnd::new(body.map_err(BoxError::from).boxed(), active);
    Ok(Response::from_parts(parts, body.boxed()))
}

/// The client's request, rewritten for `backend`. Also returns a receiver that
/// fires when the request body has been sent completely.
fn backend_request(
    req: Request<Incoming>,
    backend: &Backend,
    conn: &ConnInfo,
    routes: &ListenerRoutes,
    upgrade: Option<http::HeaderValue>,
) -> Result<(Request<Body>, oneshot::Receiver<()>), ProxyError> {
    let (mut parts, body) = req.into_parts();
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = format!("http://{}{pq}", backend.addr);
    parts.uri = uri
        .parse::<Uri>()
        .map_err(|_| ProxyError::BadRequest("unusable request target"))?;
    parts.version = Version::HTTP_11;
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(proto) = upgrade {
        headers::keep_upgrade(&mut parts.headers, proto);
    }
    headers::set_forwarded(
        &mut parts.headers,
        conn.peer,
        conn.tls,
        &routes.trusted_proxies,
    );
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let body = HoldUntilEnd::new(body.map_err(BoxError::from).boxed(), done_tx).boxed();
    Ok((Request::from_parts(parts, body), done_rx))
}

/// Sends the request; the `read` timeout runs from the moment the request body
/// is completely sent until the response head arrives, so a slow upload is not
/// mistaken for a slow backend.
async fn send(
    upstream: &Upstream,
    backend: &Backend,
    req: Request<Body>,
    sent: oneshot::Receiver<()>,
) -> Result<Response<Incoming>, ProxyError> {
    let read = upstream.timeouts.read;
    let response = upstream.client.request(req);
    let deadline = async {
        let _ = sent.await; // Err = sender dropped, which also means "done"
        tokio::time::sleep(read).await;
    };
    tokio::select! {
        r = response => r.map_err(|e| ProxyError::from_client(backend.addr, e)),
        _ = deadline => Err(ProxyError::Timeout(backend.addr, read)),
    }
}

fn spawn_tunnel(
    shared: &Shared,
    upstream: &Upstream,
    active: Active,
    client: hyper::upgrade::OnUpgrade,
    backend: hyper::upgrade::OnUpgrade,
    peer: SocketAddr,
) {
    let guard = active.into_tunnel();
    let idle = upstream.timeouts.tunnel_idle;
    let stop = shared.hard_stop.clone();
    let upstream = upstream.name.clone();
    shared.tunnels.spawn(async move {
        let addr = guard.backend().addr;
        let (c, b) = match tokio::try_join!(client, backend) {
            Ok(pair) => pair,
            Err(e) => {
                debug!(%peer, backend = %addr, "upgrade did not complete: {e}");
                return;
            }
        };
        let started = tokio::time::Instant::now();
        let moved = tunnel::run(TokioIo::new(c), TokioIo::new(b), idle, stop).await;
        info!(%peer, %upstream, backend = %addr, to_backend = moved.to_backend, to_client = moved.to_client,
            secs = started.elapsed().as_secs_f64(), "tunnel closed");
        drop(guard);
    });
}

/// The host a request is for, lower-case and without port: the absolute URI's
/// authority if given (RFC 9112 §3.2.2), else `Host`. HTTP/1.1 requires one.
fn request_host(req: &Request<Incoming>) -> Result<String, ProxyError> {
    let raw = match req.uri().authority() {
        Some(a) => a.host().to_string(),
        None => match req.headers().get(header::HOST) {
            Some(h) => {
                let h = h
                    .to_str()
                    .map_err(|_| ProxyError::BadRequest("Host is not text"))?;
                let authority: http::uri::Authority = h
                    .parse()
                    .map_err(|_| ProxyError::BadRequest("malformed Host"))?;
                authority.host().to_string()
            }
            None if req.version() == Version::HTTP_11 => {
                return Err(ProxyError::BadRequest("missing Host"));
            }
            None => String::new(),
        },
    };
    Ok(raw.trim_end_matches('.').to_ascii_lowercase())
}
