//! One probe of one backend: what to send, what counts as healthy, and the
//! single entry point [`run`]. The exchanges themselves live next door, one
//! file per kind (`probe_http`, `probe_ws`, `probe_tls`), so each stays short.
//!
//! A probe talks to a server that may be broken in any way, so nothing here
//! panics on what comes back: every failure becomes a short reason for the
//! logs and the status page, and the whole probe runs under one timeout.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;

use super::{probe_http, probe_tls, probe_ws};

/// What a probe does after connecting.
#[derive(Debug, Clone)]
pub enum Probe {
    /// Healthy when a TCP connection opens.
    Tcp,
    /// Healthy when an HTTP/1.1 request gets an expected answer.
    Http(HttpProbe),
    /// Healthy when a WebSocket handshake succeeds and the connection closes
    /// cleanly. Uses `path`, `host` and `headers` of the [`HttpProbe`]; the
    /// method is always GET and the answer must be 101, so `method`, `send`,
    /// `expect` and `expect_body` are ignored.
    Ws(HttpProbe),
    /// Healthy when a TLS handshake completes.
    Tls {
        /// Server name sent in SNI and checked against the certificate;
        /// "localhost" when absent.
        sni: Option<String>,
        /// Trust roots for the backend's certificate. `None` accepts any
        /// certificate: the probe then only proves that the backend speaks
        /// TLS, which is what a health check needs when latch itself does
        /// not verify backends.
        ca: Option<Vec<CertificateDer<'static>>>,
    },
}

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

/// One acceptable status: a class (`2xx`) or an exact code (`204`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The first digit: 2 for 2xx.
    Class(u8),
    Code(u16),
}

impl Expect {
    pub fn matches(self, status: StatusCode) -> bool {
        let code = status.as_u16();
        match self {
            Expect::Class(c) => code / 100 == u16::from(c),
            Expect::Code(c) => code == c,
        }
    }
}

impl std::str::FromStr for Expect {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected a status like 200 or a class like 2xx, got {s:?}");
        let b = s.trim().as_bytes();
        match b {
            [d @ b'1'..=b'5', x, y]
                if x.eq_ignore_ascii_case(&b'x') && y.eq_ignore_ascii_case(&b'x') =>
            {
                Ok(Expect::Class(d - b'0'))
            }
            [b'1'..=b'5', b'0'..=b'9', b'0'..=b'9'] => {
                let code = b.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
                Ok(Expect::Code(code))
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Class(c) => write!(f, "{c}xx"),
            Expect::Code(c) => write!(f, "{c}"),
        }
    }
}

/// Probes `addr` once. `Ok(())` means healthy; `Err` carries a short reason
/// ("connect: connection refused", "timeout after 1s", "status 503", ...).
/// The whole probe, connect included, is bounded by `timeout`.
pub async fn run(probe: &Probe, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let once = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {}", io_reason(&e)))?;
        // Probes are small request/response exchanges; do not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        match probe {
            Probe::Tcp => Ok(()),
            Probe::Http(h) => probe_http::check(h, tcp, addr).await,
            Probe::Ws(h) => probe_ws::check(h, tcp, addr).await,
            Probe::Tls { sni, ca } => probe_tls::check(sni.as_deref(), ca.as_deref(), tcp).await,
        }
    };
    tokio::time::timeout(timeout, once)
        .await
        .unwrap_or_else(|_| Err(format!("timeout after {timeout:?}")))
}

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
    fn expect_parses_classes_and_codes() {
        assert_eq!("2xx".parse(), Ok(Expect::Class(2)));
        assert_eq!("3XX".parse(), Ok(Expect::Class(3)));
        assert_eq!("5xX".parse(), Ok(Expect::Class(5)));
        assert_eq!(" 204 ".parse(), Ok(Expect::Code(204)));
        assert_eq!("599".parse(), Ok(Expect::Code(599)));
        for bad in ["", "2x", "6xx", "0xx", "20", "2000", "600", "abc", "x2x"] {
            let e = bad.parse::<Expect>().unwrap_err();
            assert!(e.contains("like 2xx"), "{bad:?}: {e}");
        }
        assert_eq!(Expect::Class(2).to_string(), "2xx");
        assert_eq!(Expect::Code(204).to_string(), "204");
    }

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
