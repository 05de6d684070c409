//! TCP mode's access-log lines: one when a connection closes (client,
//! server, how the server was chosen, attempts, bytes each way, duration,
//! how it ended), and one when no server could take it. Same `access`
//! target and formats as HTTP's lines (`proxy/access.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tracing::{debug, info};

use super::copy::{End, Moved};
use crate::config::AccessLog;
use crate::proxy::access::{emit_json, timestamp};

/// A closed connection.
pub(super) struct Line<'a> {
    pub peer: SocketAddr,
    pub upstream: &'a str,
    pub server: SocketAddr,
    pub server_id: &'a str,
    pub how: &'static str,
    pub attempts: u32,
    pub moved: Moved,
    pub elapsed: Duration,
    pub end: End,
}

#[derive(Serialize)]
struct Json<'a> {
    timestamp: &'a str,
    client: SocketAddr,
    tcp: bool,
    upstream: &'a str,
    server: Option<SocketAddr>,
    chosen: Option<&'a str>,
    attempts: u32,
    to_server: u64,
    to_client: u64,
    secs: f64,
    end: &'a str,
}

pub(super) fn closed(format: AccessLog, l: Line<'_>) {
    let secs = l.elapsed.as_secs_f64();
    let (peer, upstream, server, end) = (l.peer, l.upstream, l.server, l.end.as_str());
    let (up, down) = (l.moved.to_server, l.moved.to_client);
    match format {
        AccessLog::Off => debug!(%peer, %upstream, %server, server_id = l.server_id,
            to_server = up, to_client = down, secs, end, "TCP connection closed"),
        AccessLog::Text => info!(
            target: "access",
            "{peer} tcp {upstream} {server} {} {} {up} {down} {secs:.3} \"{end}\"",
            l.how, l.attempts
        ),
        AccessLog::Json => emit_json(&Json {
            timestamp: &timestamp(),
            client: peer,
            tcp: true,
            upstream,
            server: Some(server),
            chosen: Some(l.how),
            attempts: l.attempts,
            to_server: up,
            to_client: down,
            secs,
            end,
        }),
    }
}

/// A connection no server could take (closed at once).
pub(super) fn refused(
    format: AccessLog,
    peer: SocketAddr,
    upstream: &str,
    attempts: u32,
    elapsed: Duration,
    why: &str,
) {
    let secs = elapsed.as_secs_f64();
    match format {
        AccessLog::Off => {}
        AccessLog::Text => info!(
            target: "access",
            "{peer} tcp {upstream} - - {attempts} 0 0 {secs:.3} \"refused: {why}\""
        ),
        AccessLog::Json => emit_json(&Json {
            timestamp: &timestamp(),
            client: peer,
            tcp: true,
            upstream,
            server: None,
            chosen: None,
            attempts,
            to_server: 0,
            to_client: 0,
            secs,
            end: &format!("refused: {why}"),
        }),
    }
}
