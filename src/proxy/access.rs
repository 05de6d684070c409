//! The access log: one line per request when its response has been sent
//! (or abandoned), with the client, the request, the answer, where it went,
//! how that server was chosen and how long it took. An upgrade gets a line
//! for its `101` and, when the tunnel closes, a tunnel line with the same
//! request id. `[server] access_log` picks `off`, `text` or `json`; lines go
//! to tracing under the target `access`, so `RUST_LOG` can route or silence
//! them.
//!
//! A JSON line is one object made by serde_json, with its own RFC 3339 UTC
//! `timestamp`, so a log shipper (Vector, Fluent Bit, Loki) takes it as is;
//! the `latch` binary writes such events without any prefix (see `log.rs`).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, StatusCode};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::{debug, info};

use super::Upstream;
use super::headers::RequestId;
use crate::balance::How;
use crate::config::AccessLog;

/// Where a request was sent, how that server was chosen, and in how many
/// attempts; the forwarder returns it with the response.
#[derive(Debug, Clone)]
pub struct Served {
    pub upstream: Arc<Upstream>,
    /// Position of the server in `upstream.backends`.
    pub index: usize,
    pub how: How,
    pub attempts: u32,
    /// The answer's fields as the backend's bytes, on their way to an
    /// HTTP/1.1 client's writer (taken off before the log line is kept).
    pub fields: Option<crate::http1::RawFields>,
}

impl Served {
    pub fn addr(&self) -> SocketAddr {
        self.upstream.backends[self.index].addr
    }
}

/// One request's line, waiting for its byte count.
pub struct Entry {
    pub format: AccessLog,
    pub peer: SocketAddr,
    pub method: Method,
    pub target: http::uri::PathAndQuery,
    /// The client's protocol: `HTTP/1.1`, or `HTTP/2.0` on an HTTP/2 stream.
    pub version: http::Version,
    pub status: StatusCode,
    pub served: Option<Served>,
    pub started: Instant,
    /// Seconds until the response head was ready (routing, request body,
    /// connects and every attempt included).
    pub head_secs: f64,
    pub request_id: RequestId,
    pub user_agent: Option<HeaderValue>,
}

/// A request's JSON line.
#[derive(Serialize)]
struct RequestLine<'a> {
    timestamp: &'a str,
    request_id: &'a str,
    client: SocketAddr,
    method: &'a str,
    target: &'a str,
    /// `HTTP/1.1`, `HTTP/1.0` or `HTTP/2.0`.
    protocol: &'a str,
    status: u16,
    bytes: u64,
    upstream: Option<&'a str>,
    server: Option<SocketAddr>,
    /// How the server was chosen: `pinned`, `new`, `repinned:<why>`, `hash`.
    chosen: Option<&'a str>,
    attempts: u32,
    /// Until the response head.
    response_secs: f64,
    /// Until the last byte of the response.
    secs: f64,
    user_agent: Option<Cow<'a, str>>,
}

/// A tunnel's JSON line.
#[derive(Serialize)]
struct TunnelLine<'a> {
    timestamp: &'a str,
    request_id: Option<&'a str>,
    client: SocketAddr,
    tunnel: bool,
    upstream: &'a str,
    server: SocketAddr,
    to_backend: u64,
    to_client: u64,
    secs: f64,
    end: &'a str,
}

/// Now, as RFC 3339 in UTC (`2025-01-31T12:00:00.123456789Z`).
pub(crate) fn timestamp() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Writes one JSON object as the event's whole message.
pub(crate) fn emit_json(line: &impl Serialize) {
    match serde_json::to_string(line) {
        Ok(json) => info!(target: "access", "{json}"),
        Err(e) => debug!("access line not written: {e}"),
    }
}

impl super::body::OnEnd for Entry {
    /// The response is done (or abandoned): write the line.
    fn ended(self, bytes: u64) {
        let secs = self.started.elapsed().as_secs_f64();
        let served = self.served.as_ref();
        let upstream = served.map(|s| s.upstream.name.as_str());
        let server = served.map(Served::addr);
        let chosen = served.map(|s| s.how.as_str());
        let attempts = served.map_or(0, |s| s.attempts);
        let user_agent = self
            .user_agent
            .as_ref()
            .map(|v| String::from_utf8_lossy(v.as_bytes()));
        // Text lines name the protocol only when it is not HTTP/1.x, so
        // they read as before for HTTP/1.1 clients.
        let h2 = match self.version {
            http::Version::HTTP_2 => " HTTP/2.0",
            _ => "",
        };
        match self.format {
            AccessLog::Off => {}
            AccessLog::Text => info!(
                target: "access",
                "{} \"{} {}{}\" {} {} {} {} {:.3} {} {} {} {:?}",
                self.peer,
                self.method,
                self.target,
                h2,
                self.status.as_u16(),
                bytes,
                upstream.unwrap_or("-"),
                server.map_or_else(|| "-".to_string(), |a| a.to_string()),
                secs,
                chosen.unwrap_or("-"),
                attempts,
                self.request_id.as_str(),
                user_agent.as_deref().unwrap_or("-"),
            ),
            AccessLog::Json => emit_json(&RequestLine {
                timestamp: &timestamp(),
                request_id: self.request_id.as_str(),
                client: self.peer,
                method: self.method.as_str(),
                target: self.target.as_str(),
                protocol: version_str(self.version),
                status: self.status.as_u16(),
                bytes,
                upstream,
                server,
                chosen,
                attempts,
                response_secs: self.head_secs,
                secs,
                user_agent,
            }),
        }
    }
}

/// The method and status a request's line gives: what the client sent and
/// got. A WebSocket over HTTP/2 came as an extended `CONNECT` and got `200`
/// (RFC 8441 §5), though its backend was asked `GET` and answered `101`.
pub fn as_client_saw(
    version: http::Version,
    method: Method,
    status: StatusCode,
) -> (Method, StatusCode) {
    if version == http::Version::HTTP_2 && status == StatusCode::SWITCHING_PROTOCOLS {
        (Method::CONNECT, StatusCode::OK)
    } else {
        (method, status)
    }
}

/// `HTTP/1.1` and the like, as request lines write it.
fn version_str(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// A tunnel's line, written when it closes: its lifetime and bytes each way.
#[allow(clippy::too_many_arguments)]
pub fn tunnel(
    format: AccessLog,
    peer: SocketAddr,
    upstream: &str,
    backend: SocketAddr,
    moved: super::tunnel::Moved,
    secs: f64,
    why: &str,
    request_id: Option<&RequestId>,
) {
    let id = request_id.map(RequestId::as_str);
    match format {
        AccessLog::Off => {}
        AccessLog::Text => info!(
            target: "access",
            "{peer} tunnel {upstream} {backend} {} {} {secs:.3} \"{why}\" {}",
            moved.to_backend, moved.to_client, id.unwrap_or("-")
        ),
        AccessLog::Json => emit_json(&TunnelLine {
            timestamp: &timestamp(),
            request_id: id,
            client: peer,
            tunnel: true,
            upstream,
            server: backend,
            to_backend: moved.to_backend,
            to_client: moved.to_client,
            secs,
            end: why,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = timestamp();
        let parsed = OffsetDateTime::parse(&t, &Rfc3339).expect("RFC 3339");
        assert!(t.ends_with('Z'), "{t}");
        assert_eq!(parsed.offset(), time::UtcOffset::UTC);
    }

    #[test]
    fn an_http2_websocket_is_logged_as_the_connect_its_client_sent() {
        use http::Version;
        let ok = StatusCode::OK;
        let switching = StatusCode::SWITCHING_PROTOCOLS;
        assert_eq!(
            as_client_saw(Version::HTTP_2, Method::GET, switching),
            (Method::CONNECT, ok)
        );
        // HTTP/1.1 upgrades and other HTTP/2 answers are what they were.
        assert_eq!(
            as_client_saw(Version::HTTP_11, Method::GET, switching),
            (Method::GET, switching)
        );
        let refused = StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(
            as_client_saw(Version::HTTP_2, Method::GET, refused),
            (Method::GET, refused)
        );
    }

    #[test]
    fn a_request_line_is_one_json_object() {
        let ua = "agent \"with\" quotes\\ and \u{7f}";
        let line = RequestLine {
            timestamp: "2025-01-31T12:00:00Z",
            request_id: "abc",
            client: "127.0.0.1:5000".parse().unwrap(),
            method: "GET",
            target: "/a?\"b\"",
            protocol: "HTTP/2.0",
            status: 200,
            bytes: 2,
            upstream: None,
            server: None,
            chosen: Some("repinned:down"),
            attempts: 2,
            response_secs: 0.5,
            secs: 1.0,
            user_agent: Some(Cow::Borrowed(ua)),
        };
        let text = serde_json::to_string(&line).unwrap();
        assert!(!text.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["user_agent"], ua);
        assert_eq!(v["target"], "/a?\"b\"");
        assert_eq!(v["client"], "127.0.0.1:5000");
        assert_eq!(v["upstream"], serde_json::Value::Null);
        assert_eq!(v["chosen"], "repinned:down");
    }
}
