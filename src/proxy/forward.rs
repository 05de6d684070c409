//! Forwarding one request: route it, then attempt it on one backend after
//! another until one answers acceptably or the retry policy says stop
//! (nginx `proxy_next_upstream`):
//!
//! - A failure is retried only if its condition is listed in `retry.on`
//!   (`error`, `timeout`, `invalid_header`, `http_5xx`, ...), within `tries`
//!   attempts and the `timeout` budget, and on a server not tried yet.
//! - Nothing has reached the client until an answer is accepted, so every
//!   retry is invisible to it.
//! - POST, PATCH and LOCK are retried only when the request never left (the
//!   connection failed), unless `non_idempotent` is listed.
//! - The body must be replayable: bodies up to `retry.max_body` are kept; a
//!   larger one is streamed to one backend and not retried.
//! - Every failure and every success also feeds passive health checks.

use std::net::SocketAddr;
use std::time::Instant;

use http::request::Parts;
use http::{Request, Response, StatusCode, Uri, Version, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::body::{Body, BoxError, HoldUntilEnd, ReqBody};
use super::error::{Condition, ProxyError};
use super::select::{Ask, Selection};
use super::{ConnInfo, ListenerRoutes, Shared, Snapshot, Upstream, headers, tunnel};
use crate::backend::{Active, Backend};
use crate::config::{AccessLog, RetryConfig};

/// Everything about the client's request that stays the same across attempts.
struct Client<'a> {
    conn: &'a ConnInfo,
    parts: Parts,
    path: String,
    query: Option<String>,
    /// The client side of an upgrade, if the request asked for one.
    upgrade: Option<OnUpgrade>,
    offered: Option<http::HeaderValue>,
}

pub(super) async fn forward(
    shared: &Shared,
    snap: &Snapshot,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    let host = request_host(&req)?;
    let path = req.uri().path().to_owned();
    let routes = snap
        .listeners
        .get(&conn.listener)
        .or(conn.routes.as_ref())
        .ok_or(ProxyError::BadRequest("listener gone"))?;
    let upstream = routes
        .find(&host, &path)
        .and_then(|r| snap.upstreams.get(&r.upstream))
        .ok_or_else(|| ProxyError::NoRoute {
            host: host.clone(),
            path: path.clone(),
        })?;
    let offered = headers::upgrade_request(req.headers());
    let upgrade = offered.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    rewrite_headers(&mut parts, conn, routes, offered.clone());
    let body = ReqBody::read(body, upstream.retry.max_body).await?;
    let query = parts.uri.query().map(str::to_owned);
    let client = Client {
        conn,
        parts,
        path,
        query,
        upgrade,
        offered,
    };
    attempts(shared, upstream, client, body).await
}

/// The retry loop.
async fn attempts(
    shared: &Shared,
    upstream: &Upstream,
    mut client: Client<'_>,
    mut body: ReqBody,
) -> Result<Response<Body>, ProxyError> {
    let retry = &upstream.retry;
    let idempotent = !matches!(client.parts.method.as_str(), "POST" | "PATCH" | "LOCK");
    let started = Instant::now();
    let mut tried: Vec<usize> = Vec::new();
    // The last failure, answered if no further attempt can be made.
    let mut last: Option<Result<(Response<Incoming>, Selection), ProxyError>> = None;
    loop {
        let ask = Ask {
            client_ip: client.conn.peer.ip(),
            path: &client.path,
            query: client.query.as_deref(),
            headers: &mut client.parts.headers,
        };
        let selection =
            match upstream
                .policy
                .select(&upstream.name, &upstream.backends, ask, &tried)
            {
                Ok(s) => s,
                Err(e) => {
                    return match last {
                        Some(Ok((resp, sel))) => finish(shared, upstream, &mut client, resp, sel),
                        Some(Err(prev)) => Err(prev),
                        None => Err(e),
                    };
                }
            };
        tried.push(selection.index);
        let backend = selection.active.backend().clone();
        let Some(attempt_body) = body.next_attempt() else {
            // Unreachable: a streamed body allows no second attempt.
            return Err(ProxyError::BadRequest("request body already sent"));
        };
        let (req, sent) = attempt_request(&client.parts, &backend, attempt_body)?;
        let result = send(upstream, &backend, req, sent).await;
        let more =
            body.replayable() && more_allowed(retry, tried.len(), started, upstream.backends.len());
        match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                if !retry.retries_status(status) {
                    backend.condition.record_success();
                    return finish(shared, upstream, &mut client, resp, selection);
                }
                backend.condition.record_failure();
                if !(more && (idempotent || retry.non_idempotent)) {
                    return finish(shared, upstream, &mut client, resp, selection);
                }
                warn!(peer = %client.conn.peer, backend = %backend.addr, status, "retrying on the next server");
                shared
                    .metrics
                    .retry(&upstream.name, &format!("http_{status}"));
                last = Some(Ok((resp, selection)));
            }
            Err(e) => {
                backend.condition.record_failure();
                let listed = e.condition().is_some_and(|c| retry_listed(retry, c));
                let method_ok = idempotent
                    || retry.non_idempotent
                    || e.condition().is_some_and(Condition::unsent);
                if !(listed && more && method_ok) {
                    return Err(e);
                }
                warn!(peer = %client.conn.peer, "{e}; retrying on the next server");
                if let Some(c) = e.condition() {
                    shared.metrics.retry(&upstream.name, c.name());
                }
                last = Some(Err(e));
            }
        }
    }
}

fn retry_listed(retry: &RetryConfig, c: Condition) -> bool {
    match c {
        Condition::ConnectError | Condition::Error => retry.on_error,
        Condition::ConnectTimeout | Condition::Timeout => retry.on_timeout,
        Condition::InvalidHeader => retry.on_invalid_header,
    }
}

/// Whether `tries` and the time budget allow another attempt, and a server
/// is left that was not tried.
fn more_allowed(retry: &RetryConfig, attempts: usize, started: Instant, servers: usize) -> bool {
    (retry.tries == 0 || attempts < retry.tries as usize)
        && retry.timeout.is_none_or(|t| started.elapsed() < t)
        && attempts < servers
}

/// Header rules applied once, before the first attempt.
fn rewrite_headers(
    parts: &mut Parts,
    conn: &ConnInfo,
    routes: &ListenerRoutes,
    upgrade: Option<http::HeaderValue>,
) {
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
}

/// The request for one attempt on `backend`, and a receiver that fires when
/// its body has been sent completely.
fn attempt_request(
    parts: &Parts,
    backend: &Backend,
    body: Body,
) -> Result<(Request<Body>, oneshot::Receiver<()>), ProxyError> {
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = format!("http://{}{pq}", backend.addr)
        .parse::<Uri>()
        .map_err(|_| ProxyError::BadRequest("unusable request target"))?;
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let mut req = Request::new(HoldUntilEnd::new(body, done_tx).boxed());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    Ok((req, done_rx))
}

/// The accepted answer, on its way to the client: a `101` becomes a tunnel,
/// anything else streams back holding its backend slot until done.
fn finish(
    shared: &Shared,
    upstream: &Upstream,
    client: &mut Client<'_>,
    mut resp: Response<Incoming>,
    selection: Selection,
) -> Result<Response<Body>, ProxyError> {
    let Selection {
        active, set_cookie, ..
    } = selection;
    let addr = active.backend().addr;
    if let Some(c) = set_cookie.and_then(|c| http::HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp.extensions_mut().insert(super::access::Served {
        upstream: upstream.name.clone(),
        server: active.backend().id.clone(),
        backend: addr,
    });
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        let body = HoldUntilEnd::new(body.map_err(BoxError::from).boxed(), active);
        return Ok(Response::from_parts(parts, body.boxed()));
    }
    let (Some(offered), Some(client_upgrade)) = (client.offered.as_ref(), client.upgrade.take())
    else {
        return Err(ProxyError::BadResponse(
            addr,
            "101 to a request that did not ask to upgrade".into(),
        ));
    };
    if !headers::upgrade_matches(offered, resp.headers().get(header::UPGRADE)) {
        return Err(ProxyError::BadResponse(
            addr,
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
        client.conn.peer,
    );
    let (mut parts, _) = resp.into_parts();
    let proto = parts.headers.get(header::UPGRADE).cloned();
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(p) = proto {
        headers::keep_upgrade(&mut parts.headers, p);
    }
    Ok(Response::from_parts(
        parts,
        http_body_util::Empty::new().map_err(|e| match e {}).boxed(),
    ))
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
    let access_log = shared.snapshot.load().server.access_log;
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
        let closed = guard.backend().tunnels_closed();
        let (moved, why) = tokio::select! {
            m = tunnel::run(TokioIo::new(c), TokioIo::new(b), idle, stop) => (m, "closed"),
            // The server was removed by a reload and its grace ran out.
            _ = closed => (tunnel::Moved::default(), "closed: server removed, grace over"),
        };
        let secs = started.elapsed().as_secs_f64();
        if access_log == AccessLog::Off {
            debug!(%peer, %upstream, backend = %addr, to_backend = moved.to_backend,
                to_client = moved.to_client, secs, "tunnel {why}");
        } else {
            super::access::tunnel(access_log, peer, &upstream, addr, moved, secs, why);
        }
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
