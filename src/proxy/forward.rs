//! Forwarding one request: route it, build its placement key once, then
//! attempt it on one backend after another until one answers acceptably or
//! the retry policy says stop (nginx `proxy_next_upstream`):
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
//!
//! Headers are rewritten once, before the first attempt; an attempt only
//! copies them when another attempt could follow. The upstream connection is
//! the server's pooled [`Conn`], driven by this task (see `backend/conn.rs`).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::access::Served;
use super::body::{Body, HoldUntilEnd, IdleTimeout, ReqBody};
use super::error::{Condition, ProxyError};
use super::{ConnInfo, ListenerRoutes, Routing, Shared, Upstream, headers, host, select, tunnel};
use crate::backend::conn::{self, Conn, SendError, Streaming, UpgradeError};
use crate::backend::{Active, Backend};
use crate::balance::{Placed, RequestKey, Tried};
use crate::config::{AccessLog, RetryConfig, ServerSettings};

/// The client's side of an upgrade, when the request asked for one.
struct Upgrade {
    offered: HeaderValue,
    client: OnUpgrade,
}

pub(super) async fn forward(
    shared: &Shared,
    routing: &Routing,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
) -> Result<(Response<Body>, Served), ProxyError> {
    let routes = routing
        .listeners
        .get(&conn.listener)
        .or(conn.routes.as_ref())
        .ok_or(ProxyError::BadRequest("listener gone"))?;
    // Routing and forwarding use this one value (RFC 9112 §3.2).
    let host = host::request_host(req.uri(), req.headers(), req.version())
        .map_err(ProxyError::BadRequest)?;
    // Routes match, and the backend receives, the normalised path; `None`
    // when it is normal already (no allocation).
    let normal = match crate::path::normalise(req.uri().path()) {
        Ok(Cow::Borrowed(_)) => None,
        Ok(Cow::Owned(p)) => Some(p),
        Err(why) => return Err(ProxyError::BadRequest(why)),
    };
    let upstream = {
        let host = host::route_host(host.as_ref());
        let path = normal.as_deref().unwrap_or(req.uri().path());
        routes
            .find(host, path)
            .and_then(|r| routing.upstreams.get(&r.upstream))
            .ok_or_else(|| ProxyError::NoRoute {
                host: host.to_ascii_lowercase(),
                path: path.to_owned(),
            })?
            .clone()
    };
    let upgrade = headers::upgrade_request(req.headers()).map(|offered| Upgrade {
        offered,
        client: hyper::upgrade::on(&mut req),
    });
    let (mut parts, body) = req.into_parts();
    rewrite_headers(
        &mut parts,
        conn,
        routes,
        upgrade.as_ref().map(|u| &u.offered),
        host,
    );
    let idle = routing.server.client_body_timeout;
    let body = ReqBody::read(body, upstream.retry.max_body, idle).await?;
    let target =
        crate::path::origin_form(&parts.uri, normal.as_deref()).map_err(ProxyError::BadRequest)?;
    // The key borrows its path and query; a clone shares the bytes.
    let uri = target.clone();
    let key = select::request_key(
        &upstream,
        &mut parts.headers,
        conn.peer.ip(),
        uri.path(),
        uri.query(),
    );
    let attempt = Attempts {
        shared,
        settings: &routing.server,
        upstream: &upstream,
        conn,
        parts,
        target,
        upgrade,
    };
    attempt.run(&key, body).await
}

/// One request's attempts.
struct Attempts<'a> {
    shared: &'a Shared,
    /// The routing table's server settings (pool sizes, access log).
    settings: &'a ServerSettings,
    upstream: &'a Arc<Upstream>,
    conn: &'a ConnInfo,
    /// Method, version and headers as rewritten for backends.
    parts: Parts,
    /// The origin-form target sent to backends.
    target: Uri,
    upgrade: Option<Upgrade>,
}

/// What one attempt got back.
struct Answer {
    resp: Response<Incoming>,
    placed: Placed,
    /// The pooled connection, to keep driving while the body streams
    /// (`None` for an upgrade, whose connection drives itself).
    conn: Option<Conn>,
}

impl Attempts<'_> {
    /// The retry loop.
    async fn run(
        self,
        key: &RequestKey<'_>,
        mut body: ReqBody,
    ) -> Result<(Response<Body>, Served), ProxyError> {
        let up = self.upstream;
        let retry = &up.retry;
        let idempotent = !matches!(self.parts.method.as_str(), "POST" | "PATCH" | "LOCK");
        let started = Instant::now();
        let mut tried = Tried::default();
        // The last failure, answered if no further attempt can be made.
        let mut last: Option<Result<Answer, ProxyError>> = None;
        loop {
            let placed = match up.policy.place(&up.name, &up.backends, key, &tried) {
                Ok(p) => p,
                Err(why) => {
                    return match last {
                        Some(Ok(answer)) => self.finish(answer, tried.len()),
                        Some(Err(prev)) => Err(prev),
                        None => Err(ProxyError::NoBackend(why)),
                    };
                }
            };
            tried.push(placed.index);
            let backend = up.backends[placed.index].clone();
            let Some(attempt_body) = body.next_attempt() else {
                // Unreachable: a streamed body allows no second attempt.
                return Err(ProxyError::BadRequest("request body already sent"));
            };
            let req = self.request(&backend, attempt_body);
            let result = self.send(&backend, req, &mut body).await;
            let more =
                body.replayable() && more_allowed(retry, tried.len(), started, up.backends.len());
            match result {
                Ok((resp, conn)) => {
                    let status = resp.status().as_u16();
                    let answer = Answer { resp, placed, conn };
                    if !retry.retries_status(status) {
                        backend.condition.record_success();
                        return self.finish(answer, tried.len());
                    }
                    backend.condition.record_failure();
                    if !(more && (idempotent || retry.non_idempotent)) {
                        return self.finish(answer, tried.len());
                    }
                    warn!(peer = %self.conn.peer, backend = %backend.addr, status, "retrying on the next server");
                    self.shared
                        .metrics
                        .retry(&up.name, &format!("http_{status}"));
                    last = Some(Ok(answer));
                }
                // The client's body failed (or went quiet): not the server's
                // fault, and no other server would do better.
                Err(e) if e.client_fault() => return Err(e),
                Err(e) => {
                    backend.condition.record_failure();
                    let listed = e.condition().is_some_and(|c| retry_listed(retry, c));
                    let method_ok = idempotent
                        || retry.non_idempotent
                        || e.condition().is_some_and(Condition::unsent);
                    if !(listed && more && method_ok) {
                        return Err(e);
                    }
                    warn!(peer = %self.conn.peer, "{e}; retrying on the next server");
                    if let Some(c) = e.condition() {
                        self.shared.metrics.retry(&up.name, c.name());
                    }
                    last = Some(Err(e));
                }
            }
        }
    }

    /// The request for one attempt on `backend` (the headers as rewritten
    /// once, copied).
    fn request(&self, backend: &Backend, body: Body) -> Request<Body> {
        let headers = self.parts.headers.clone();
        let mut req = Request::new(body);
        *req.method_mut() = self.parts.method.clone();
        *req.uri_mut() = self.target.clone();
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = headers;
        if !req.headers().contains_key(header::HOST) {
            // An HTTP/1.0 client sent none; HTTP/1.1 needs one.
            if let Ok(h) = HeaderValue::from_str(&backend.addr.to_string()) {
                req.headers_mut().insert(header::HOST, h);
            }
        }
        req
    }

    /// Sends one attempt. The `read` timeout runs from the moment the request
    /// body is completely sent until the response head arrives, so a slow
    /// upload is not mistaken for a slow backend.
    async fn send(
        &self,
        backend: &Backend,
        req: Request<Body>,
        body: &mut ReqBody,
    ) -> Result<(Response<Incoming>, Option<Conn>), ProxyError> {
        let timeouts = self.upstream.timeouts;
        if self.upgrade.is_some() {
            let (req, sent) = body_sent_signal(req);
            let exchange = conn::send_upgrade(backend.addr, timeouts.connect, req);
            let resp = read_timeout(backend, timeouts.read, sent, exchange).await?;
            return resp
                .map(|resp| (resp, None))
                .map_err(|e| upgrade_error(backend, e));
        }
        let mut c = match backend.idle.checkout(self.settings.pool_idle_timeout).await {
            Some(c) => c,
            None => connect(backend, timeouts.connect).await?,
        };
        let (req, sent) = body_sent_signal(req);
        let outcome = read_timeout(backend, timeouts.read, sent, c.send(req)).await?;
        let req = match outcome {
            Ok(resp) => return Ok((resp, Some(c))),
            // The pooled connection had closed before the request was written.
            Err(SendError::Unsent(req, _)) if c.reused() => *req,
            // The server closed a pooled connection just as the request went
            // out (a keep-alive timeout race, common with Node.js backends):
            // it never saw the request, so it is sent again on a fresh
            // connection, as browsers and nginx do, and not counted as a
            // failure. A body can be sent again only if it was kept.
            Err(SendError::Failed(e)) if c.reused() && stale(&e) => match body.next_attempt() {
                Some(b) => self.request(backend, b),
                None => return Err(ProxyError::from_hyper(backend.addr, &e)),
            },
            Err(e) => return Err(send_error(backend, e)),
        };
        debug!(backend = %backend.addr, "pooled connection was closed; sending on a new one");
        let mut fresh = connect(backend, timeouts.connect).await?;
        let (req, sent) = body_sent_signal(req);
        match read_timeout(backend, timeouts.read, sent, fresh.send(req)).await? {
            Ok(resp) => Ok((resp, Some(fresh))),
            Err(e) => Err(send_error(backend, e)),
        }
    }

    /// The accepted answer, on its way to the client: a `101` becomes a
    /// tunnel, anything else streams back holding its backend slot until done.
    fn finish(
        mut self,
        answer: Answer,
        attempts: usize,
    ) -> Result<(Response<Body>, Served), ProxyError> {
        let Answer {
            mut resp,
            placed,
            conn,
        } = answer;
        let up = self.upstream;
        let backend = &up.backends[placed.index];
        if let Some(c) =
            select::set_cookie(up, backend, placed.how).and_then(|c| HeaderValue::from_str(&c).ok())
        {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
        let served = Served {
            upstream: up.clone(),
            index: placed.index,
            how: placed.how,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let (mut parts, body) = resp.into_parts();
            response_headers(&mut parts.headers);
            // `timeouts.read` also bounds each wait for the body's next bytes
            // (nginx `proxy_read_timeout`).
            let read = up.timeouts.read;
            let body = match conn {
                Some(c) => {
                    let max_idle = self.settings.pool_max_idle;
                    let body = Streaming::new(body, c, placed.active, max_idle);
                    IdleTimeout::new(body, read, "the backend").boxed()
                }
                None => {
                    let body = IdleTimeout::new(body, read, "the backend").boxed();
                    HoldUntilEnd::new(body, placed.active).boxed()
                }
            };
            return Ok((Response::from_parts(parts, body), served));
        }
        let Some(upgrade) = self.upgrade.take() else {
            return Err(ProxyError::BadResponse(
                backend.addr,
                "101 to a request that did not ask to upgrade".into(),
            ));
        };
        if !headers::upgrade_matches(&upgrade.offered, resp.headers().get(header::UPGRADE)) {
            return Err(ProxyError::BadResponse(
                backend.addr,
                "101 with an Upgrade the client did not offer".into(),
            ));
        }
        let backend_upgrade = hyper::upgrade::on(&mut resp);
        self.spawn_tunnel(placed.active, upgrade.client, backend_upgrade);
        let (mut parts, _) = resp.into_parts();
        let proto = parts.headers.get(header::UPGRADE).cloned();
        headers::strip_hop_by_hop(&mut parts.headers);
        if let Some(p) = proto {
            headers::keep_upgrade(&mut parts.headers, p);
        }
        let empty = http_body_util::Empty::new().map_err(|e| match e {}).boxed();
        Ok((Response::from_parts(parts, empty), served))
    }

    fn spawn_tunnel(&self, active: Active, client: OnUpgrade, backend: OnUpgrade) {
        let shared = self.shared;
        let guard = active.into_tunnel();
        let idle = self.upstream.timeouts.tunnel_idle;
        let access_log = self.settings.access_log;
        let stop = shared.hard_stop.clone();
        let peer = self.conn.peer;
        shared.tunnels.spawn(async move {
            let server = guard.server();
            let addr = server.addr;
            let (c, b) = match tokio::try_join!(client, backend) {
                Ok(pair) => pair,
                Err(e) => {
                    debug!(%peer, backend = %addr, "upgrade did not complete: {e}");
                    return;
                }
            };
            let started = tokio::time::Instant::now();
            let closed = server.tunnels_closed();
            let (moved, why) = tokio::select! {
                m = tunnel::run(TokioIo::new(c), TokioIo::new(b), idle, stop) => (m, "closed"),
                // The server was removed by a reload and its grace ran out.
                _ = closed => (tunnel::Moved::default(), "closed: server removed, grace over"),
            };
            let secs = started.elapsed().as_secs_f64();
            let upstream = server.upstream.as_str();
            if access_log == AccessLog::Off {
                debug!(%peer, %upstream, backend = %addr, to_backend = moved.to_backend,
                    to_client = moved.to_client, secs, "tunnel {why}");
            } else {
                super::access::tunnel(access_log, peer, upstream, addr, moved, secs, why);
            }
            drop(guard);
        });
    }
}

/// Runs `exchange` under the `read` timeout, which starts once `sent` fires
/// (at once when there is no body to wait for).
async fn read_timeout<T>(
    backend: &Backend,
    read: std::time::Duration,
    sent: Option<oneshot::Receiver<()>>,
    exchange: impl std::future::Future<Output = T>,
) -> Result<T, ProxyError> {
    let deadline = async {
        if let Some(sent) = sent {
            let _ = sent.await; // Err = sender dropped, which also means "done"
        }
        tokio::time::sleep(read).await;
    };
    tokio::select! {
        r = exchange => Ok(r),
        _ = deadline => Err(ProxyError::Timeout(backend.addr, read)),
    }
}

/// A failure that means the server had closed (or was closing) the
/// connection, with no response started: it did not process the request.
fn stale(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        return true;
    }
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            );
        }
        src = s.source();
    }
    false
}

/// For a request with a body, a receiver that fires once it is completely
/// sent; an empty body counts as sent already (and costs nothing).
fn body_sent_signal(req: Request<Body>) -> (Request<Body>, Option<oneshot::Receiver<()>>) {
    if hyper::body::Body::is_end_stream(req.body()) {
        return (req, None);
    }
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let req = req.map(|b| HoldUntilEnd::new(b, done_tx).boxed());
    (req, Some(done_rx))
}

async fn connect(backend: &Backend, timeout: std::time::Duration) -> Result<Conn, ProxyError> {
    conn::connect(backend.addr, timeout)
        .await
        .map_err(|e| connect_error(backend, e))
}

fn connect_error(backend: &Backend, e: conn::ConnectError) -> ProxyError {
    match e {
        conn::ConnectError::Timeout => ProxyError::ConnectTimeout(backend.addr),
        conn::ConnectError::Io(e) => ProxyError::Connect(backend.addr, e.to_string()),
    }
}

fn send_error(backend: &Backend, e: SendError) -> ProxyError {
    match e {
        SendError::Unsent(_, e) | SendError::Failed(e) => ProxyError::from_hyper(backend.addr, &e),
    }
}

fn upgrade_error(backend: &Backend, e: UpgradeError) -> ProxyError {
    match e {
        UpgradeError::Connect(e) => connect_error(backend, e),
        UpgradeError::Failed(e) => ProxyError::from_hyper(backend.addr, &e),
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
    upgrade: Option<&HeaderValue>,
    host: Option<HeaderValue>,
) {
    parts.version = Version::HTTP_11;
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(proto) = upgrade {
        headers::keep_upgrade(&mut parts.headers, proto.clone());
    }
    // After the strip: `Connection: Host` must not remove it. In
    // absolute-form this replaces the client's Host with the authority.
    if let Some(host) = host {
        parts.headers.insert(header::HOST, host);
    }
    headers::set_forwarded(
        &mut parts.headers,
        conn.peer,
        conn.tls,
        &routes.trusted_proxies,
    );
}

/// A response's headers as the client gets them: hop-by-hop ones removed,
/// and a `Content-Length` that came with `Transfer-Encoding` dropped (the
/// body was de-chunked by its length-less framing; RFC 9112 §6.3).
fn response_headers(h: &mut http::HeaderMap) {
    if h.contains_key(header::TRANSFER_ENCODING) {
        h.remove(header::CONTENT_LENGTH);
    }
    headers::strip_hop_by_hop(h);
}
