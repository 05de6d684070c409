//! The operator's listener (`[admin]`), kept apart from client traffic:
//!
//! * `GET /healthz`: `ok`, always open, so orchestrators can tell the process
//!   is alive without holding the token;
//! * `GET /status`: every server of every upstream as JSON (`status.rs`);
//! * `GET /metrics`: the Prometheus exposition ([`Metrics::encode`]);
//! * `GET /`: the dashboard, a page that renders `/status` (`dashboard.rs`);
//! * `POST /reload`: re-reads the config, when the process gave a way to.
//!
//! With `[admin] token`, every route but `/healthz` needs
//! `Authorization: Bearer <token>` (compared in constant time). The dashboard
//! also takes `?token=` because a browser cannot send the header when opening
//! a page. Nothing here is cached (`Cache-Control: no-store`).
//!
//! A reload applies `[admin]` too: the token is swapped at once (a rotated
//! token stops working on the next request, keep-alive or not), and a new
//! `bind` moves the listener (see `reload.rs`).

mod dashboard;
pub mod status;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::backend::Backend;
use crate::listener::backoff::AcceptBackoff;
use crate::metrics::{self, Metrics};
use crate::proxy::Shared;
use status::Status;

/// Runs a reload: `Ok(what changed)` or `Err(why nothing did)`, both as text
/// for the operator.
pub type ReloadFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// What the admin routes read.
pub struct AdminState {
    pub shared: Arc<Shared>,
    pub metrics: Arc<Metrics>,
    /// Bearer token every route but `/healthz` requires, when set; a reload
    /// swaps it.
    pub token: ArcSwapOption<String>,
    /// What `POST /reload` runs; without it the route does not exist.
    pub reload: Option<ReloadFn>,
    /// When the process started, for the uptime.
    pub started: Instant,
}

type Resp = Response<Full<Bytes>>;

pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    stop: CancellationToken,
    conns: TaskTracker,
) {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff.succeeded(addr);
                pair
            }
            // Out of descriptors, usually: retrying at once would spin.
            Err(e) => {
                let wait = backoff.failed(addr, &e);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        let stop = stop.clone();
        let state = state.clone();
        conns.spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let r = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => { conn.as_mut().graceful_shutdown(); conn.await }
            };
            if let Err(e) = r {
                debug!(%peer, "admin connection ended: {e}");
            }
        });
    }
}

async fn route(state: &AdminState, req: Request<Incoming>) -> Resp {
    let path = req.uri().path();
    let read: &[Method] = &[Method::GET, Method::HEAD];
    let allowed = match path {
        "/healthz" | "/status" | "/metrics" | "/" => read,
        "/reload" if state.reload.is_some() => &[Method::POST],
        _ => return text(StatusCode::NOT_FOUND, "not found\n"),
    };
    if path != "/healthz" && !authorized(state.token.load().as_deref().map(String::as_str), &req) {
        let mut resp = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
        let challenge = HeaderValue::from_static("Bearer realm=\"latch admin\"");
        resp.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        return resp;
    }
    if !allowed.contains(req.method()) {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        let allow = if allowed == read { "GET, HEAD" } else { "POST" };
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
        return resp;
    }
    let uptime = state.started.elapsed().as_secs();
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/status" => {
            let status = Status::collect(&state.shared, uptime);
            match serde_json::to_vec_pretty(&status) {
                Ok(mut json) => {
                    json.push(b'\n');
                    respond(StatusCode::OK, "application/json", json)
                }
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }
        "/metrics" => {
            let routing = state.shared.routing.load_full();
            let mut upstreams: Vec<(&str, &[Arc<Backend>])> = routing
                .upstreams
                .iter()
                .map(|(name, up)| (name.as_str(), up.backends.as_slice()))
                .collect();
            upstreams.sort_by_key(|(name, _)| *name);
            let draining = state.shared.pool.draining.servers();
            let body = state.metrics.encode(&upstreams, &draining);
            respond(StatusCode::OK, metrics::CONTENT_TYPE, body)
        }
        "/" => {
            let page = dashboard::page(&Status::collect(&state.shared, uptime));
            let mut resp = respond(StatusCode::OK, "text/html; charset=utf-8", page);
            let csp = "default-src 'none'; style-src 'unsafe-inline'; \
                       script-src 'unsafe-inline'; connect-src 'self'";
            let h = resp.headers_mut();
            h.insert("content-security-policy", HeaderValue::from_static(csp));
            h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
            resp
        }
        _ => reload(state).await,
    }
}

async fn reload(state: &AdminState) -> Resp {
    let Some(run) = &state.reload else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    match run().await {
        Ok(msg) => {
            info!("reload from the admin listener: {msg}");
            text(StatusCode::OK, with_newline(msg))
        }
        Err(msg) => {
            warn!("reload from the admin listener refused: {msg}");
            text(StatusCode::BAD_REQUEST, with_newline(msg))
        }
    }
}

/// Whether the request carries the token: in `Authorization: Bearer` (any
/// route), or in `?token=` (the dashboard only). True when there is none.
fn authorized<B>(token: Option<&str>, req: &Request<B>) -> bool {
    let Some(token) = token else {
        return true;
    };
    if let Some(given) = bearer(req.headers()) {
        return same_secret(given, token.as_bytes());
    }
    if req.uri().path() == "/" {
        let query = req.uri().query().unwrap_or("");
        return query
            .split('&')
            .filter_map(|pair| pair.strip_prefix("token="))
            .any(|given| same_secret(&percent_decode(given), token.as_bytes()));
    }
    false
}

/// The credentials of `Authorization: Bearer <credentials>` (the scheme is
/// case-insensitive, as RFC 9110 says).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

/// Compares digests, in time that depends on neither secret's content nor
/// its length.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(given), Sha256::digest(expected));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// `%XX` escapes and `+` of a query value; bad escapes stay as they are.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = match b.get(i + 1..i + 3) {
            Some(&[hi, lo]) => hex(hi).zip(hex(lo)).map(|(hi, lo)| hi << 4 | lo),
            _ => None,
        };
        match (b[i], escaped) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn with_newline(mut s: String) -> String {
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    respond(status, "text/plain; charset=utf-8", body)
}

/// A response that no cache keeps.
fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests;
