//! Validation of what keeps an upstream working when servers fail: active
//! checks (`[upstream.NAME.check]`), passive checks (`max_fails`,
//! `fail_timeout`), retries (`[upstream.NAME.retry]`) and `slow_start`.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

pub use super::file::{AllDown, CheckKind};
use super::file::{CheckSection, RetrySection, StartState, UpstreamSection};
use super::{ConfigError, Expect, Reporter};

/// Active health checking of every server of an upstream.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub port: Option<u16>,
    /// Whether servers count as up before their first probe answers.
    pub start_up: bool,
    pub method: Method,
    pub path: String,
    pub host: Option<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub send: Option<String>,
    /// Status classes or codes that pass; empty = 2xx/3xx.
    pub expect: Vec<Expect>,
    pub expect_body: Option<String>,
    pub sni: Option<String>,
    pub ca: Option<Vec<CertificateDer<'static>>>,
    /// The upstream's `send_proxy`: probes then open with a header naming
    /// no client (v2 LOCAL, v1 UNKNOWN), like HAProxy's `check-send-proxy`,
    /// so a server that requires the header accepts them.
    pub send_proxy: Option<crate::proxy_protocol::Version>,
}

/// Passive failure detection (nginx `max_fails` / `fail_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passive {
    /// 0 = off.
    pub max_fails: u32,
    pub fail_timeout: Duration,
}

/// When a failed attempt is tried again on the next server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    pub on_error: bool,
    pub on_timeout: bool,
    pub on_invalid_header: bool,
    pub non_idempotent: bool,
    /// Statuses that count as a failed attempt (`http_502` → 502).
    pub on_status: Vec<u16>,
    /// Attempts in all; 0 = until every server was tried.
    pub tries: u32,
    /// Budget for all attempts; `None` = no limit.
    pub timeout: Option<Duration>,
    pub max_body: usize,
}

impl RetryConfig {
    pub fn retries_status(&self, status: u16) -> bool {
        self.on_status.contains(&status)
    }
}

const STATUSES: [u16; 7] = [500, 502, 503, 504, 403, 404, 429];

pub(super) fn retry(
    r: &dyn Reporter,
    key: &str,
    s: &RetrySection,
) -> Result<RetryConfig, ConfigError> {
    let mut c = RetryConfig {
        on_error: false,
        on_timeout: false,
        on_invalid_header: false,
        non_idempotent: false,
        on_status: Vec::new(),
        tries: s.tries,
        timeout: (!s.timeout.0.is_zero()).then_some(s.timeout.0),
        max_body: s.max_body.0,
    };
    for (i, cond) in s.on.get_ref().iter().enumerate() {
        match cond.get_ref().as_str() {
            "error" => c.on_error = true,
            "timeout" => c.on_timeout = true,
            "invalid_header" => c.on_invalid_header = true,
            "non_idempotent" => c.non_idempotent = true,
            "off" => {}
            other => match other
                .strip_prefix("http_")
                .and_then(|n| n.parse::<u16>().ok())
            {
                Some(code) if STATUSES.contains(&code) => c.on_status.push(code),
                _ => {
                    return Err(r.report(
                        cond.span(),
                        &format!("{key}.on[{i}]"),
                        format!(
                            "unknown condition `{other}`: expected error, timeout, invalid_header, non_idempotent, off or http_500/502/503/504/403/404/429"
                        ),
                    ));
                }
            },
        }
    }
    Ok(c)
}

pub(super) fn passive(u: &UpstreamSection) -> Passive {
    Passive {
        max_fails: u.max_fails,
        fail_timeout: u.fail_timeout.0,
    }
}

pub(super) fn check(
    r: &dyn Reporter,
    key: &str,
    c: &CheckSection,
) -> Result<CheckConfig, ConfigError> {
    for (name, v, min) in [("rise", &c.rise, 1), ("fall", &c.fall, 1)] {
        if *v.get_ref() < min {
            return Err(r.report(
                v.span(),
                &format!("{key}.{name}"),
                "must be at least 1".into(),
            ));
        }
    }
    if c.interval.get_ref().0 < Duration::from_millis(10) {
        return Err(r.report(
            c.interval.span(),
            &format!("{key}.interval"),
            "must be at least 10ms".into(),
        ));
    }
    let method = match &c.method {
        Some(m) => Method::from_bytes(m.get_ref().as_bytes()).map_err(|_| {
            r.report(
                m.span(),
                &format!("{key}.method"),
                format!("invalid method `{}`", m.get_ref()),
            )
        })?,
        None => Method::GET,
    };
    let mut headers = Vec::new();
    for (name, value) in &c.headers {
        let hkey = format!("{key}.headers.{name}");
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| r.report(value.span(), &hkey, format!("invalid header name `{name}`")))?;
        let v = HeaderValue::from_str(value.get_ref())
            .map_err(|_| r.report(value.span(), &hkey, "invalid header value".into()))?;
        headers.push((n, v));
    }
    let mut expect = Vec::new();
    for (i, e) in c.expect.iter().enumerate() {
        let parsed: Expect = e
            .get_ref()
            .parse()
            .map_err(|why: String| r.report(e.span(), &format!("{key}.expect[{i}]"), why))?;
        expect.push(parsed);
    }
    if let Some(send) = c.send.as_ref().filter(|_| c.kind != CheckKind::Http) {
        return Err(r.report(
            send.span(),
            &format!("{key}.send"),
            "only used with type = \"http\"".into(),
        ));
    }
    let ca = match &c.ca {
        Some(path) => {
            let file = r.resolve(path.get_ref());
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&file)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| {
                    r.report(
                        path.span(),
                        &format!("{key}.ca"),
                        format!("cannot read {}: {e}", file.display()),
                    )
                })?;
            if certs.is_empty() {
                return Err(r.report(
                    path.span(),
                    &format!("{key}.ca"),
                    format!("no certificate in {}", file.display()),
                ));
            }
            Some(certs)
        }
        None => None,
    };
    Ok(CheckConfig {
        kind: c.kind,
        interval: c.interval.get_ref().0,
        timeout: c.timeout.0,
        rise: *c.rise.get_ref(),
        fall: *c.fall.get_ref(),
        port: c.port,
        start_up: c.start == StartState::Up,
        method,
        path: c.path.clone().unwrap_or_else(|| "/".to_string()),
        host: c.host.clone(),
        headers,
        send: c.send.as_ref().map(|s| s.get_ref().clone()),
        // Set from the upstream's key by the caller.
        send_proxy: None,
        expect,
        expect_body: c.expect_body.clone(),
        sni: c.sni.clone(),
        ca,
    })
}
