//! Why a request could not be proxied, and the one place that maps it to a
//! status code: 502 for a backend that failed or answered badly, 504 for one
//! that was too slow, 503 when no backend can take the request, 404 when no
//! route matches, 400 for a request we cannot forward, 408 for a request
//! body the client stopped sending.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::Body;
use super::body::{BodyTimeout, BoxError};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route for host {host:?}, path {path:?}")]
    NoRoute { host: String, path: String },
    #[error("no backend available: {0}")]
    NoBackend(String),
    #[error("backend {0}: connect failed: {1}")]
    Connect(SocketAddr, String),
    #[error("backend {0}: connect timed out")]
    ConnectTimeout(SocketAddr),
    #[error("backend {0}: no response head within {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("backend {0}: bad response: {1}")]
    BadResponse(SocketAddr, String),
    #[error("backend {0}: invalid response head: {1}")]
    InvalidHeader(SocketAddr, String),
    #[error("request body from the client failed: {0}")]
    ClientBody(String),
    #[error("the client sent no request body bytes for {0:?}")]
    ClientTimeout(Duration),
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// Refused before routing by the protocol layer (an HTTP/2 `CONNECT`
    /// latch does not tunnel, say), with the status it chose.
    #[error("refused: {1}")]
    Refused(StatusCode, &'static str),
    /// A dispatch route found every server full or down.
    #[error("dispatch: every server of {upstream} is full or down")]
    Overloaded { upstream: String, retry_after: u64 },
    /// An upgrade found every server it could use out of upgrade tokens
    /// (`max_upgrades_per_sec`); the client is asked to come back after a
    /// jittered delay, so a storm spreads out.
    #[error("{why}; upgrade deferred, Retry-After {retry_after}")]
    UpgradeThrottled { why: String, retry_after: u32 },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::NoBackend(_)
            | ProxyError::Overloaded { .. }
            | ProxyError::UpgradeThrottled { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect(..)
            | ProxyError::BadResponse(..)
            | ProxyError::InvalidHeader(..) => StatusCode::BAD_GATEWAY,
            ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::ClientTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::ConnectTimeout(_) | ProxyError::Timeout(..) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::Refused(status, _) => *status,
        }
    }

    /// The answer the client gets: the status, its reason as a short text
    /// body, and no detail about backends (that goes to the log).
    pub fn response(&self) -> Response<Body> {
        if let ProxyError::Overloaded {
            upstream,
            retry_after,
        } = self
        {
            return super::dispatch::overloaded(upstream, *retry_after);
        }
        let status = self.status();
        let text = format!(
            "{} {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let mut resp = Response::new(Full::new(Bytes::from(text)).map_err(|e| match e {}).boxed());
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let ProxyError::UpgradeThrottled { retry_after, .. } = self {
            h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }

    /// An error reading the client's request body: 408 when it went quiet.
    pub fn from_client_body(e: BoxError) -> ProxyError {
        ProxyError::client_body(e.as_ref())
    }

    fn client_body(e: &(dyn std::error::Error + 'static)) -> ProxyError {
        match e.downcast_ref::<BodyTimeout>() {
            Some(t) => ProxyError::ClientTimeout(t.idle),
            None => ProxyError::ClientBody(e.to_string()),
        }
    }

    /// The client, not the backend, failed: not a backend failure for
    /// passive checks, and no reason to try another backend.
    pub fn client_fault(&self) -> bool {
        matches!(
            self,
            ProxyError::ClientBody(_)
                | ProxyError::ClientTimeout(_)
                | ProxyError::BadRequest(_)
                | ProxyError::Refused(..)
        )
    }

    /// The `retry.on` condition this failure is (nginx names), if any.
    pub fn condition(&self) -> Option<Condition> {
        match self {
            ProxyError::Connect(..) => Some(Condition::ConnectError),
            ProxyError::ConnectTimeout(_) => Some(Condition::ConnectTimeout),
            ProxyError::Timeout(..) => Some(Condition::Timeout),
            ProxyError::BadResponse(..) => Some(Condition::Error),
            ProxyError::InvalidHeader(..) => Some(Condition::InvalidHeader),
            _ => None,
        }
    }
}

/// A failed attempt on a backend, as `retry.on` and passive checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Could not connect: nothing was sent, so even a POST may go elsewhere.
    ConnectError,
    ConnectTimeout,
    /// Connected, but the exchange broke before a response head.
    Error,
    /// No response head within `timeouts.read`.
    Timeout,
    InvalidHeader,
}

impl Condition {
    /// The `retry.on` word for it.
    pub fn name(self) -> &'static str {
        match self {
            Condition::ConnectError | Condition::Error => "error",
            Condition::ConnectTimeout | Condition::Timeout => "timeout",
            Condition::InvalidHeader => "invalid_header",
        }
    }

    /// Whether the request never reached the backend.
    pub fn unsent(self) -> bool {
        matches!(self, Condition::ConnectError | Condition::ConnectTimeout)
    }
}
