//! The access log: one line per request when its response has been sent
//! (or abandoned), with the client, the request, the answer, where it went
//! and how long it took. Tunnels log their own line when they close.
//! `[server] access_log` picks `off`, `text` or `json`; lines go to tracing
//! under the target `access`, so `RUST_LOG` can route or silence them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, StatusCode};
use tracing::info;

use super::Upstream;
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
    pub status: StatusCode,
    pub served: Option<Served>,
    pub started: Instant,
}

impl super::body::OnEnd for Entry {
    /// The response is done (or abandoned): write the line.
    fn ended(self, bytes: u64) {
        let secs = self.started.elapsed().as_secs_f64();
        let (upstream, backend, how, attempts) = match &self.served {
            Some(s) => (
                s.upstream.name.as_str(),
                s.addr().to_string(),
                s.how.as_str(),
                s.attempts,
            ),
            None => ("-", "-".to_string(), "-", 0),
        };
        match self.format {
            AccessLog::Off => {}
            AccessLog::Text => info!(
                target: "access",
                "{} \"{} {}\" {} {} {} {} {:.3} {} {}",
                self.peer, self.method, self.target, self.status.as_u16(), bytes, upstream, backend, secs, how, attempts
            ),
            AccessLog::Json => info!(
                target: "access",
                "{{\"client\":{},\"method\":{},\"target\":{},\"status\":{},\"bytes\":{},\"upstream\":{},\"server\":{},\"secs\":{:.6},\"chosen\":{},\"attempts\":{}}}",
                json(&self.peer.to_string()),
                json(self.method.as_str()),
                json(self.target.as_str()),
                self.status.as_u16(),
                bytes,
                json(upstream),
                json(&backend),
                secs,
                json(how),
                attempts
            ),
        }
    }
}

/// A tunnel's line, written when it closes: its lifetime and bytes each way.
pub fn tunnel(
    format: AccessLog,
    peer: SocketAddr,
    upstream: &str,
    backend: SocketAddr,
    moved: super::tunnel::Moved,
    secs: f64,
    why: &str,
) {
    match format {
        AccessLog::Off => {}
        AccessLog::Text => info!(
            target: "access",
            "{peer} tunnel {upstream} {backend} {} {} {secs:.3} \"{why}\"",
            moved.to_backend, moved.to_client
        ),
        AccessLog::Json => info!(
            target: "access",
            "{{\"client\":{},\"tunnel\":true,\"upstream\":{},\"server\":{},\"to_backend\":{},\"to_client\":{},\"secs\":{secs:.6},\"end\":{}}}",
            json(&peer.to_string()),
            json(upstream),
            json(&backend.to_string()),
            moved.to_backend,
            moved.to_client,
            json(why)
        ),
    }
}

/// A JSON string literal.
fn json(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(super::json("a\"b\\c\nd"), "\"a\\\"b\\\\c\\u000ad\"");
    }
}
