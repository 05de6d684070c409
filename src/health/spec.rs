//! What an HTTP or WebSocket probe sends and what counts as a good answer,
//! with the small checks the exchanges share. A leaf: `probe.rs` and the
//! per-kind exchanges import it, never the other way round.

use http::{HeaderName, HeaderValue, Method, StatusCode};

use crate::config::Expect;

/// The request of an HTTP or WebSocket probe and what counts as a good answer.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    /// Request method; GET by default.
    pub method: Method,
    /// Path and query of the request; "/" by default.
    pub path: String,
    /// Host header; the backend's address when absent.
    pub host: Option<String>,
    /// Extra request headers, sent as given.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Raw request bytes, sent as they are (like nginx's `check_http_send`);
    /// when set, `method`, `path`, `host` and `headers` are not used.
    pub send: Option<String>,
    /// Healthy if the status matches any of these; empty means 2xx or 3xx.
    pub expect: Vec<Expect>,
    /// Healthy only if the body (its first [`MAX_BODY`] bytes) contains this.
    pub expect_body: Option<String>,
}

impl Default for HttpProbe {
    fn default() -> Self {
        HttpProbe {
            method: Method::GET,
            path: "/".into(),
            host: None,
            headers: Vec::new(),
            send: None,
            expect: Vec::new(),
            expect_body: None,
        }
    }
}

/// The most of a response body a probe reads when looking for `expect_body`.
pub const MAX_BODY: usize = 64 * 1024;

/// Whether `status` is healthy under `expect` (empty: 2xx or 3xx).
pub(super) fn status_ok(expect: &[Expect], status: StatusCode) -> bool {
    if expect.is_empty() {
        status.is_success() || status.is_redirection()
    } else {
        expect.iter().any(|e| e.matches(status))
    }
}

/// Whether `needle` occurs in `body`; the empty needle occurs everywhere.
pub(super) fn body_contains(body: &[u8], needle: &str) -> bool {
    let needle = needle.as_bytes();
    needle.is_empty() || body.windows(needle.len()).any(|w| w == needle)
}

/// The usual socket errors as short lower-case words ("connection refused"),
/// anything else as the OS says it.
pub(super) fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused | ConnectionReset | ConnectionAborted | TimedOut | HostUnreachable
        | NetworkUnreachable | AddrNotAvailable | BrokenPipe | UnexpectedEof => {
            e.kind().to_string()
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_matching() {
        let s = |c| StatusCode::from_u16(c).unwrap();
        assert!(status_ok(&[], s(200)) && status_ok(&[], s(302)));
        assert!(!status_ok(&[], s(404)) && !status_ok(&[], s(101)));
        let e = [Expect::Class(2), Expect::Code(404)];
        assert!(status_ok(&e, s(204)) && status_ok(&e, s(404)));
        assert!(!status_ok(&e, s(302)) && !status_ok(&e, s(403)));
    }

    #[test]
    fn body_search() {
        assert!(body_contains(b"all is ok here", "ok"));
        assert!(!body_contains(b"all is fine", "ok"));
        assert!(!body_contains(b"o", "ok"));
        assert!(body_contains(b"", ""));
    }
}
