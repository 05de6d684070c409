//! The HTTP side of a dispatcher route (`[[listener.route]] dispatch =
//! "NAME"`): instead of proxying, answer which server of the upstream the
//! client should connect to, as JSON. The choice is `crate::dispatch`'s;
//! this file reads the request's stickiness (the signed cookie, or the
//! ip_hash key), writes the answer and its `Set-Cookie`, and counts it.
//! Every server full or down is [`ProxyError::Overloaded`]: a 503 with
//! `Retry-After` and a JSON body.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::access::Served;
use super::{Body, ProxyError, Upstream, select};
use crate::config::DispatchRoute;
use crate::dispatch::{self, Answer, Sticky};

/// The answer to `req`, a request on a dispatch route of `up`.
pub(super) fn answer(
    up: &Arc<Upstream>,
    route: DispatchRoute,
    client_ip: IpAddr,
    req: &mut Request<Body>,
) -> Result<(Response<Body>, Served), ProxyError> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Err(ProxyError::BadRequest("a dispatch route answers GET only"));
    }
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let key = select::request_key(up, req.headers_mut(), client_ip, &path, query.as_deref());
    let sticky = match key.pin {
        crate::balance::Pin::To(i) => Sticky::Pin(Some(i)),
        crate::balance::Pin::Invalid => Sticky::Pin(None),
        crate::balance::Pin::Absent if up.policy.hashed() => Sticky::Hash(key.hash),
        crate::balance::Pin::Absent => Sticky::None,
    };
    let Some((index, how)) = dispatch::choose(&up.backends, sticky) else {
        return Err(ProxyError::Overloaded {
            upstream: up.name.clone(),
            retry_after: route.retry_after,
        });
    };
    let backend = &up.backends[index];
    backend.count_dispatch();
    let json = serde_json::to_vec(&Answer::of(backend)).unwrap_or_default();
    let len = json.len();
    let body = if req.method() == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(json)
    };
    let mut resp = Response::new(Full::new(body).map_err(|e| match e {}).boxed());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(c) =
        select::set_cookie(up, backend, how).and_then(|c| HeaderValue::from_str(&c).ok())
    {
        h.append(header::SET_COOKIE, c);
    }
    let served = Served {
        upstream: up.clone(),
        index,
        how,
        // Nothing was sent to the server: the client connects to it itself.
        attempts: 0,
        fields: None,
    };
    Ok((resp, served))
}

/// The 503 body: `{"error": "...", "retry_after": N}`.
pub(super) fn overloaded(upstream: &str, retry_after: u64) -> Response<Body> {
    let body = serde_json::json!({
        "error": format!("every server of {upstream} is full or down"),
        "retry_after": retry_after,
    });
    let mut resp = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|e| match e {})
            .boxed(),
    );
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
