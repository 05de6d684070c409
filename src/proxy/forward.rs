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
use tracing::{debug, warn};

use super::access::Served;
use super::body::{Body, IdleTimeout, ReqBody};
use super::error::{Condition, ProxyError};
use super::{
    ConnInfo, Routing, Shared, Upstream, handshake, headers, host, select, tunnel, ws_first,
};
use crate::backend::conn::{
    self, Conn, Head, OutBody, RespFraming, SendError, Streaming, Upgraded,
};
use crate::backend::{Active, Backend};
use crate::balance::{self, Placed, RequestKey, Tried};
use crate::config::{AccessLog, RetryConfig, ServerSettings};
use crate::http1::OnUpgrade;
use crate::proxy_protocol::Addrs;
use crate::sticky::session_id::{Handshake, MAX_HANDSHAKE};

/// The client's side of an upgrade, when the request asked for one.
struct Upgrade {
    offered: HeaderValue,
    client: OnUpgrade,
}

pub(super) async fn forward(
    shared: &Shared,
    routing: &Routing,
    conn: &Arc<ConnInfo>,
    mut req: Request<Body>,
    id: &headers::RequestId,
) -> Result<(Response<Body>, Served), ProxyError> {
    if let Some(super::Refuse(status, why)) = req.extensions_mut().remove() {
        return Err(ProxyError::Refused(status, why));
    }
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
    let (upstream, dispatch) = {
        let host = host::route_host(&host, req.headers());
        let path = normal.as_deref().unwrap_or(req.uri().path());
        routes
            .find(host, path)
            .and_then(|r| Some((routing.upstreams.get(&r.upstream)?.clone(), r.dispatch)))
            .ok_or_else(|| ProxyError::NoRoute {
                host: host.to_ascii_lowercase(),
                path: path.to_owned(),
            })?
    };
    // A dispatcher route answers itself, before any backend attempt.
    if let Some(route) = dispatch {
        return super::dispatch::answer(&upstream, route, conn.peer.ip(), &mut req);
    }
    // An HTTP/1.0 request may come without any; backends get one then.
    let missing_host = matches!(host, host::RequestHost::None);
    // In absolute-form the authority replaces the client's Host; the header
    // rules that follow never remove it (not even `Connection: Host`).
    if let host::RequestHost::Authority(authority) = host {
        req.headers_mut().insert(header::HOST, authority);
    }
    // Header rules, once, before the first attempt; they also tell whether
    // this is an upgrade request.
    let (offered, added) = headers::rewrite_request(
        req.headers_mut(),
        conn.peer,
        &conn.forwarded_for,
        conn.tls,
        &routes.trusted_proxies,
        id,
    );
    // The connection puts an `OnUpgrade` on requests that ask to upgrade.
    let upgrade = offered.and_then(|offered| {
        let client = req.extensions_mut().remove::<OnUpgrade>()?;
        Some(Upgrade { offered, client })
    });
    // An HTTP/1.x client's answer can keep the backend's field lines as
    // bytes; HTTP/2 (hyper) needs a map.
    let h1_client = req.version() <= Version::HTTP_11;
    let (mut parts, body) = req.into_parts();
    parts.version = Version::HTTP_11;
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    let idle = routing.server.client_body_timeout;
    let body = ReqBody::read(body, upstream.retry.max_body, length, idle).await?;
    let mut target =
        crate::path::origin_form(&parts.uri, normal.as_deref()).map_err(ProxyError::BadRequest)?;
    // `session_id` stickiness: a tagged session id pins the request, and the
    // backend gets its own id back.
    let session_pin = select::session_pin(&upstream, &mut target);
    let handshake = select::handshake(&upstream, &target);
    if upgrade.is_some() && handshake == Some(Handshake::EngineIoWebSocket) {
        // Its first frame is tagged: it must come uncompressed.
        ws_first::refuse_deflate(&mut parts.headers);
    }
    // The key borrows its path and query; a clone shares the bytes.
    let uri = target.clone();
    let mut key = select::request_key(
        &upstream,
        &mut parts.headers,
        conn.peer.ip(),
        uri.path(),
        uri.query(),
    );
    if let Some(i) = session_pin {
        key.pin = crate::balance::Pin::To(i);
        shared.metrics.session_id(&upstream.name, "pinned");
    }
    if upgrade.is_some() {
        // Upgrades are admitted by `max_upgrades_per_sec`, judged now.
        key.upgrade = Some(crate::backend::admission::now_ns());
    }
    let mut attempt = Attempts {
        shared,
        settings: &routing.server,
        upstream: &upstream,
        conn,
        parts,
        added,
        target,
        // Upgrades and session handshakes read the answer's fields.
        pass_fields: h1_client && upgrade.is_none() && handshake.is_none(),
        missing_host,
        upgrade,
        handshake,
        id,
    };
    attempt.run(&key, body).await
}

/// Seconds a throttled upgrade is told to wait (`Retry-After`), drawn
/// uniformly so that a storm's refused clients come back spread out.
const UPGRADE_RETRY_AFTER: std::ops::RangeInclusive<u32> = 1..=5;

/// The 503 for a request no server could take: for an upgrade turned away by
/// `max_upgrades_per_sec`, with a jittered `Retry-After`.
fn no_backend(up: &Upstream, key: &RequestKey<'_>, tried: &Tried, why: String) -> ProxyError {
    match key.upgrade {
        Some(now) if balance::upgrade_throttled(&up.backends, tried, now) => {
            ProxyError::UpgradeThrottled {
                why,
                retry_after: rand::random_range(UPGRADE_RETRY_AFTER),
            }
        }
        _ => ProxyError::NoBackend(why),
    }
}

/// One request's attempts.
struct Attempts<'a> {
    shared: &'a Shared,
    /// The routing table's server settings (pool sizes, access log).
    settings: &'a ServerSettings,
    upstream: &'a Arc<Upstream>,
    /// Shared, so a connection that sent a PROXY header can tell when its
    /// client connection is gone (`send_proxy`).
    conn: &'a Arc<ConnInfo>,
    /// Method, version and headers as rewritten for backends.
    parts: Parts,
    /// `X-Forwarded-*` and `X-Request-Id`, sent after `parts.headers`.
    added: headers::Added,
    /// The origin-form target sent to backends.
    target: Uri,
    upgrade: Option<Upgrade>,
    /// A session handshake whose answer gets a tagged session id.
    handshake: Option<Handshake>,
    /// The answer's fields go to the client as the backend's bytes
    /// ([`crate::http1::RawFields`]), not through a map.
    pass_fields: bool,
    /// The request has no `Host` (HTTP/1.0): each attempt adds its server's.
    missing_host: bool,
    /// `X-Request-Id`, for the tunnel's log line.
    id: &'a headers::RequestId,
}

/// What one attempt got back: the response head, and the connection its
/// body (or, after a `101`, the tunnel) is read from.
struct Answer {
    head: Head,
    conn: Conn,
    placed: Placed,
}

impl Attempts<'_> {
    /// The retry loop.
    async fn run(
        // By reference, as `finish`: the caller holds the attempts once.
        &mut self,
        key: &RequestKey<'_>,
        mut body: ReqBody,
    ) -> Result<(Response<Body>, Served), ProxyError> {
        let up = self.upstream;
        let retry = &up.retry;
        let idempotent = !matches!(self.parts.method.as_str(), "POST" | "PATCH" | "LOCK");
        // The clock is read only when there is a budget (nginx
        // `proxy_next_upstream_timeout`; none by default).
        let deadline = retry.timeout.map(|t| Instant::now() + t);
        let mut tried = Tried::default();
        // The last failure, answered if no further attempt can be made.
        let mut last: Option<Result<Answer, ProxyError>> = None;
        loop {
            let placed = match up.policy.place(&up.name, &up.backends, key, &tried) {
                Ok(p) => p,
                Err(why) => {
                    return match last {
                        Some(Ok(answer)) => self.finish(answer, tried.len()).await,
                        Some(Err(prev)) => Err(prev),
                        None => Err(no_backend(up, key, &tried, why)),
                    };
                }
            };
            tried.push(placed.index);
            let backend = up.backends[placed.index].clone();
            let result = self.exchange(&backend, &mut body).await;
            let more =
                body.replayable() && more_allowed(retry, tried.len(), deadline, up.backends.len());
            match result {
                Ok((head, conn)) => {
                    let status = head.response.status().as_u16();
                    let answer = Answer { head, conn, placed };
                    if !retry.retries_status(status) {
                        backend.condition.record_success();
                        return self.finish(answer, tried.len()).await;
                    }
                    backend.condition.record_failure();
                    if !(more && (idempotent || retry.non_idempotent)) {
                        return self.finish(answer, tried.len()).await;
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

    /// One attempt on `backend`: a pooled connection (or a new one), the
    /// request written, the response head read. The `read` timeout runs
    /// from the moment the request is completely sent until the response
    /// head arrives, so a slow upload is not mistaken for a slow backend.
    async fn exchange(
        &self,
        backend: &Backend,
        body: &mut ReqBody,
    ) -> Result<(Head, Conn), ProxyError> {
        let Some(out) = body.next_attempt() else {
            // Unreachable: a streamed body allows no second attempt.
            return Err(ProxyError::BadRequest("request body already sent"));
        };
        let max_idle = self.settings.pool_idle_timeout;
        let owner = self.upstream.send_proxy.map(|_| self.owner());
        let mut c = match backend.idle.checkout_for(max_idle, owner.as_ref()).await {
            Some(c) => c,
            None => self.open(backend).await?,
        };
        match self.once(backend, &mut c, out).await {
            Ok(head) => return Ok((head, c)),
            // The server closed a pooled connection just as the request went
            // out (a keep-alive timeout race, common with Node.js backends):
            // it never saw the request, so it is sent again on a fresh
            // connection, as browsers and nginx do, and not counted as a
            // failure. A body can be sent again only if it was kept.
            Err(Fail::Send(e)) if c.reused() && e.stale() && body.replayable() => {
                debug!(backend = %backend.addr, "pooled connection was closed ({e}); sending on a new one");
            }
            Err(e) => return Err(e.into_proxy(backend)),
        }
        let Some(out) = body.next_attempt() else {
            return Err(ProxyError::BadRequest("request body already sent"));
        };
        let mut fresh = self.open(backend).await?;
        match self.once(backend, &mut fresh, out).await {
            Ok(head) => Ok((head, fresh)),
            Err(e) => Err(e.into_proxy(backend)),
        }
    }

    /// A new connection to `backend`, with the PROXY header first when the
    /// upstream has `send_proxy`.
    async fn open(&self, backend: &Backend) -> Result<Conn, ProxyError> {
        let mut c = connect(backend, self.upstream.timeouts.connect).await?;
        if let Some((version, client)) = self.proxied() {
            c.send_proxy_header(version, client, self.owner())
                .await
                .map_err(|e| ProxyError::Connect(backend.addr, e.to_string()))?;
        }
        Ok(c)
    }

    /// The client connection, as the owner of the upstream connections
    /// that named it in a PROXY header.
    fn owner(&self) -> conn::Owner {
        let owner: Arc<ConnInfo> = self.conn.clone();
        let owner: Arc<dyn std::any::Any + Send + Sync> = owner;
        Arc::downgrade(&owner)
    }

    /// The PROXY header's version and addresses, when the upstream sends one.
    fn proxied(&self) -> Option<(crate::proxy_protocol::Version, Addrs)> {
        let version = self.upstream.send_proxy?;
        let src = self.conn.peer;
        // Not known only for connections made outside a listener; the
        // header still needs one, of the client's family.
        let dst = self.conn.local.unwrap_or_else(|| {
            let any = match src {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
            };
            std::net::SocketAddr::new(any, 0)
        });
        Some((version, Addrs { src, dst }))
    }

    /// Writes the request on `c` and reads the response head.
    async fn once(&self, backend: &Backend, c: &mut Conn, out: OutBody) -> Result<Head, Fail> {
        let method = &self.parts.method;
        let target = self.target.path_and_query().map_or("/", |pq| pq.as_str());
        let with_host;
        let headers = if !self.missing_host {
            &self.parts.headers
        } else {
            // An HTTP/1.0 client sent none; HTTP/1.1 needs one.
            let mut h = self.parts.headers.clone();
            if let Ok(v) = HeaderValue::from_str(&backend.addr.to_string()) {
                h.insert(header::HOST, v);
            }
            with_host = h;
            &with_host
        };
        c.write_request(method, target, headers, self.added.fields(), out)
            .await
            .map_err(Fail::Send)?;
        let read = self.upstream.timeouts.read;
        match c.read_head_within(method, read, self.pass_fields).await {
            Some(r) => r.map_err(Fail::Send),
            None => Err(Fail::Timeout(read)),
        }
    }

    /// The accepted answer, on its way to the client: a `101` becomes a
    /// tunnel, anything else streams back holding its backend slot until done.
    async fn finish(
        // By reference: `run` owns the attempts, and a copy of them here
        // would be carried twice in every request's future.
        &mut self,
        answer: Answer,
        attempts: usize,
    ) -> Result<(Response<Body>, Served), ProxyError> {
        let Answer { head, conn, placed } = answer;
        let Head {
            mut response,
            framing,
            keep_alive,
            fields,
        } = head;
        let up = self.upstream;
        let backend = &up.backends[placed.index];
        if let Some(c) =
            select::set_cookie(up, backend, placed.how).and_then(|c| HeaderValue::from_str(&c).ok())
        {
            response.headers_mut().append(header::SET_COOKIE, c);
        }
        let mut served = Served {
            upstream: up.clone(),
            index: placed.index,
            how: placed.how,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            fields: None,
        };
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            // Passed-through fields are filtered by the client's writer.
            match fields {
                Some(f) => served.fields = Some(f),
                None => response_headers(response.headers_mut()),
            }
            let max_idle = self.settings.pool_max_idle;
            let body = Streaming::new(conn, framing, keep_alive, placed.active, max_idle);
            let small = !matches!(framing, RespFraming::Length(n) if n > MAX_HANDSHAKE);
            if let Some(kind) = self
                .handshake
                .filter(|_| small && response.status() == StatusCode::OK)
            {
                let metrics = &self.shared.metrics;
                // Boxed: a rare path whose ~1 KiB future would otherwise
                // be part of every request's future, and of every move of it.
                let response = Box::pin(handshake::rewrite(
                    response,
                    body,
                    up.timeouts.read,
                    backend,
                    |b| {
                        let tagged = select::tag_handshake(up, kind, backend, b);
                        let event = if tagged.is_some() {
                            "tagged"
                        } else {
                            "not_tagged"
                        };
                        metrics.session_id(&up.name, event);
                        tagged
                    },
                ))
                .await?;
                return Ok((response, served));
            }
            // `timeouts.read` also bounds each wait for the body's next bytes
            // (nginx `proxy_read_timeout`).
            let body = IdleTimeout::new(body, up.timeouts.read, "the backend");
            return Ok((response.map(|()| body.boxed()), served));
        }
        let Some(upgrade) = self.upgrade.take() else {
            return Err(ProxyError::BadResponse(
                backend.addr,
                "101 to a request that did not ask to upgrade".into(),
            ));
        };
        if !headers::upgrade_matches(&upgrade.offered, response.headers().get(header::UPGRADE)) {
            return Err(ProxyError::BadResponse(
                backend.addr,
                "101 with an Upgrade the client did not offer".into(),
            ));
        }
        let websocket = response
            .headers()
            .get(header::UPGRADE)
            .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
        // `session_id`: a WebSocket-only Engine.IO open gets its first frame tagged.
        let open_frame = (websocket && self.handshake == Some(Handshake::EngineIoWebSocket))
            .then(|| ws_first::OpenFrame::new(up, placed.index, self.shared));
        self.spawn_tunnel(
            placed.active,
            upgrade.client,
            conn.into_upgraded(),
            websocket,
            open_frame,
        );
        let proto = response.headers().get(header::UPGRADE).cloned();
        headers::strip_hop_by_hop(response.headers_mut());
        if let Some(p) = proto {
            headers::keep_upgrade(response.headers_mut(), p);
        }
        let empty = http_body_util::Empty::new().map_err(|e| match e {}).boxed();
        Ok((response.map(|()| empty), served))
    }

    fn spawn_tunnel(
        &self,
        active: Active,
        client: OnUpgrade,
        backend: Upgraded,
        websocket: bool,
        open_frame: Option<Box<ws_first::OpenFrame>>,
    ) {
        let shared = self.shared;
        let guard = active.into_tunnel();
        let opts = tunnel::Options {
            idle: self.upstream.timeouts.tunnel_idle,
            websocket,
            spread: self.settings.close_spread,
        };
        let access_log = self.settings.access_log;
        let stop = shared.hard_stop.clone();
        let spreads = shared.stop_spreads.clone();
        let peer = self.conn.peer;
        let id = Some(self.id.clone());
        let metrics = shared.metrics.clone();
        shared.tunnels.spawn(async move {
            let server = guard.server();
            let addr = server.addr;
            let c = match client.await {
                Ok(c) => c,
                Err(e) => {
                    debug!(%peer, backend = %addr, "upgrade did not complete: {e}");
                    return;
                }
            };
            let started = tokio::time::Instant::now();
            let closed = server.tunnels_closed();
            let ending = async move {
                tokio::select! {
                    _ = stop.cancelled_owned() => {
                        if spreads.load(std::sync::atomic::Ordering::Acquire) {
                            tunnel::Ending::Stop
                        } else {
                            tunnel::Ending::StopNow
                        }
                    }
                    // The server was removed by a reload and its grace ran out.
                    _ = closed => tunnel::Ending::Removed,
                }
            };
            // The stop signal is polled only when it fires, not on every message.
            let ending = crate::woken::WokenOnly::new(ending);
            let moved = match open_frame {
                None => tunnel::run(c, backend, opts, ending).await,
                // `session_id`: the Engine.IO open packet tagged first (boxed:
                // other tunnels' state does not grow).
                Some(first) => Box::pin(first.then_tunnel(c, backend, opts, ending)).await,
            };
            let why = tunnel_why(&moved);
            let why = why.as_str();
            metrics.tunnel_ended(&moved);
            let secs = started.elapsed().as_secs_f64();
            let upstream = server.upstream.as_str();
            if access_log == AccessLog::Off {
                debug!(%peer, %upstream, backend = %addr, to_backend = moved.to_backend,
                    to_client = moved.to_client, secs, "tunnel {why}");
            } else {
                super::access::tunnel(
                    access_log,
                    peer,
                    upstream,
                    addr,
                    moved,
                    secs,
                    why,
                    id.as_ref(),
                );
            }
            drop(guard);
        });
    }
}

/// How a tunnel ended, for its log line: "closed", or who latch said goodbye
/// to and why.
fn tunnel_why(moved: &tunnel::Moved) -> String {
    match moved.goodbye {
        None => "closed".to_owned(),
        Some(g) if moved.close_sent => format!("closed: {} (sent close {})", g.reason(), g.code()),
        Some(g) => format!("closed: {} (no close frame to the client)", g.reason()),
    }
}

/// Why an attempt failed before a response head.
enum Fail {
    Send(SendError),
    Timeout(std::time::Duration),
}

impl Fail {
    fn into_proxy(self, backend: &Backend) -> ProxyError {
        match self {
            Fail::Timeout(read) => ProxyError::Timeout(backend.addr, read),
            Fail::Send(SendError::Head(e)) => {
                ProxyError::InvalidHeader(backend.addr, e.to_string())
            }
            Fail::Send(SendError::ClientBody(e)) => ProxyError::from_client_body(e),
            Fail::Send(e) => ProxyError::BadResponse(backend.addr, e.to_string()),
        }
    }
}

async fn connect(backend: &Backend, timeout: std::time::Duration) -> Result<Conn, ProxyError> {
    let c = conn::connect(backend.addr, timeout)
        .await
        .map_err(|e| connect_error(backend, e))?;
    backend.connection_opened();
    Ok(c)
}

fn connect_error(backend: &Backend, e: conn::ConnectError) -> ProxyError {
    match e {
        conn::ConnectError::Timeout => ProxyError::ConnectTimeout(backend.addr),
        conn::ConnectError::Io(e) => ProxyError::Connect(backend.addr, e.to_string()),
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
fn more_allowed(
    retry: &RetryConfig,
    attempts: usize,
    deadline: Option<Instant>,
    servers: usize,
) -> bool {
    (retry.tries == 0 || attempts < retry.tries as usize)
        && deadline.is_none_or(|d| Instant::now() < d)
        && attempts < servers
}

/// A response's headers as the client gets them: the ones `Connection`
/// lists removed, and a `Content-Length` that came with `Transfer-Encoding`
/// dropped (the body was de-chunked by its length-less framing; RFC 9112
/// §6.3). The standard hop-by-hop set is left to the connection's writer,
/// which frames the message itself and never copies those (`http1::write`):
/// removing them here would cost a hash and a shift each.
pub(super) fn response_headers(h: &mut http::HeaderMap) {
    if h.contains_key(header::TRANSFER_ENCODING) {
        h.remove(header::CONTENT_LENGTH);
    }
    headers::strip_connection_listed(h);
}
