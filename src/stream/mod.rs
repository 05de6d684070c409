//! L4 stream mode (`[[listener]] mode = "tcp"`): nginx `stream`, HAProxy
//! `mode tcp`. A TCP listener's connection (after TLS, if the listener
//! terminates it) is joined to one server of the listener's upstream, and
//! bytes are copied both ways until it ends (`copy.rs`).
//!
//! Nothing here is new machinery: the server is placed by the upstream's
//! [`Policy`](crate::balance::Policy) over the pool's long-lived servers, so
//! weights, `max_conns`, backups, health (active and passive) and slow start
//! apply as for HTTP, and `ip_hash` places by the client address on the same
//! Maglev ring. The connection holds the same RAII guard as a WebSocket
//! tunnel, so `least_conn` counts it, `/status` and `latch_server_tunnels`
//! show it, and a reload that removes its server drains it within `grace`.
//!
//! A failed connect counts against the server (passive checks) and is
//! retried on the next one within `retry.tries` and `retry.timeout`, when
//! `retry.on` lists `error` (refused, reset) or `timeout` (no answer within
//! `timeouts.connect`). `timeouts.tunnel_idle` closes a connection that
//! carried no byte either way for that long.

pub mod copy;
mod log;

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::warn;

use crate::balance::{self, Pin, Placed, RequestKey, Tried};
use crate::config::ListenerMode;
use crate::proxy::{ListenerRoutes, Shared, Upstream};
use crate::proxy_protocol;
use copy::End;

/// The upstream of a `tcp` listener; `None` for an HTTP one.
pub fn upstream_of(routes: &ListenerRoutes) -> Option<&str> {
    match routes.mode {
        ListenerMode::Tcp => routes.routes.first().map(|r| r.upstream.as_str()),
        ListenerMode::Http => None,
    }
}

/// Serves one client of a TCP listener: connects it to a server of
/// `upstream` and copies bytes both ways until either side is done.
pub async fn serve<I>(
    shared: &Shared,
    client: I,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    upstream: &str,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let routing = shared.routing.load();
    let format = routing.server.access_log;
    let Some(up) = routing.upstreams.get(upstream).cloned() else {
        // Config validation makes this unreachable; close, do not panic.
        warn!(%peer, %upstream, "TCP listener's upstream is gone; closing");
        return;
    };
    drop(routing);
    let started = Instant::now();
    // PROXY protocol: the accept path read the client's header before this
    // call (`peer` is the client it named); `connect` writes one to the
    // server when the upstream has `send_proxy`.
    let (placed, server, attempts) = match connect(shared, &up, peer, local).await {
        Ok(c) => c,
        Err((why, attempts)) => {
            shared.metrics.stream.refused(&up.name);
            warn!(%peer, upstream = %up.name, attempts, "TCP connection closed: {why}");
            log::refused(format, peer, &up.name, attempts, started.elapsed(), &why);
            return;
        }
    };
    let backend = up.backends[placed.index].clone();
    let counters = shared.metrics.stream.opened(&up.name, &backend.id);
    // From here the connection counts as an open tunnel of its server.
    let tunnel = placed.active.into_tunnel();
    let closed = tunnel.server().tunnels_closed();
    // Polled only when it fires, not on every copy.
    let stop = crate::woken::WokenOnly::new(async {
        tokio::select! {
            _ = shared.hard_stop.cancelled() => End::Stopped,
            _ = closed => End::ServerRemoved,
        }
    });
    let (moved, end) = copy::run(
        client,
        server,
        up.timeouts.tunnel_idle,
        (counters.to_server, counters.to_client),
        stop,
    )
    .await;
    drop(tunnel);
    shared.metrics.stream.closed(&up.name, end.as_str());
    log::closed(
        format,
        log::Line {
            peer,
            upstream: &up.name,
            server: backend.addr,
            server_id: &backend.id,
            how: placed.how.as_str(),
            attempts,
            moved,
            elapsed: started.elapsed(),
            end,
        },
    );
}

/// Places the client and connects to its server, trying the next server on
/// failure as `retry` allows. On success: the claimed slot, the socket and
/// the number of attempts; on failure: why, and the attempts made.
async fn connect(
    shared: &Shared,
    up: &Upstream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) -> Result<(Placed, TcpStream, u32), (String, u32)> {
    // The header, made once for every attempt.
    let header = up.send_proxy.map(|v| {
        let dst = local.unwrap_or_else(|| SocketAddr::new(unspecified(peer), 0));
        proxy_protocol::encode(v, Some(proxy_protocol::Addrs { src: peer, dst }))
    });
    let ip = peer.ip();
    let hash = if up.policy.hashed() {
        let (v4, v6) = up.prefixes;
        // The same key HTTP's ip_hash uses, so both place a client alike.
        balance::hash64(&crate::sticky::ip_key(ip, v4, v6), 0)
    } else {
        0
    };
    let key = RequestKey {
        client_ip: ip,
        path: "",
        hash,
        pin: Pin::Absent,
        upgrade: None,
    };
    let retry = &up.retry;
    let started = Instant::now();
    let mut tried = Tried::default();
    loop {
        let attempts = u32::try_from(tried.len()).unwrap_or(u32::MAX);
        let placed = up
            .policy
            .place(&up.name, &up.backends, &key, &tried)
            .map_err(|why| (why, attempts))?;
        tried.push(placed.index);
        let attempts = attempts.saturating_add(1);
        let backend = &up.backends[placed.index];
        let wait = up.timeouts.connect;
        let open = async {
            let mut s = TcpStream::connect(backend.addr).await?;
            let _ = s.set_nodelay(true);
            if let Some(h) = &header {
                s.write_all(h).await?;
            }
            Ok::<_, std::io::Error>(s)
        };
        let (reason, why) = match tokio::time::timeout(wait, open).await {
            Ok(Ok(s)) => {
                backend.condition.record_success();
                return Ok((placed, s, attempts));
            }
            Ok(Err(e)) => ("error", format!("connect to {} failed: {e}", backend.addr)),
            Err(_) => (
                "timeout",
                format!("connect to {} timed out after {wait:?}", backend.addr),
            ),
        };
        drop(placed);
        backend.condition.record_failure();
        shared.metrics.stream.connect_failed(&up.name, &backend.id);
        let listed = if reason == "error" {
            retry.on_error
        } else {
            retry.on_timeout
        };
        let more = listed
            && (retry.tries == 0 || tried.len() < retry.tries as usize)
            && retry.timeout.is_none_or(|t| started.elapsed() < t)
            && tried.len() < up.backends.len();
        if !more {
            return Err((why, attempts));
        }
        warn!(%peer, upstream = %up.name, "{why}; trying the next server");
        shared.metrics.retry(&up.name, reason);
    }
}

/// The unspecified address of `peer`'s family (a PROXY header's destination
/// when the listener's own address is not known).
fn unspecified(peer: SocketAddr) -> std::net::IpAddr {
    match peer {
        SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    }
}
