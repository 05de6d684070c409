//! HTTP/2 to clients (`h2/`): connections, streams and WebSockets over
//! HTTP/2 (RFC 8441), for `/metrics` and the `http2` object of `/status`.
//! WebSockets over HTTP/2 are also tunnels like any other (the servers'
//! `tunnels` gauge); these series tell which of them rode an HTTP/2 stream.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

/// The HTTP/2 counters; part of [`super::Metrics`].
#[derive(Debug, Default)]
pub struct H2Metrics {
    connections: Counter,
    connections_open: Gauge,
    /// Connections latch closed for a protocol error or abuse (a `GOAWAY`
    /// with an error code: rapid reset, CONTINUATION flood, bad frames).
    connection_errors: Counter,
    streams: Counter,
    websockets: Counter,
    websockets_open: Gauge,
}

/// Holds one unit of a gauge; gives it back when dropped.
#[derive(Debug)]
pub struct Held(Gauge);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn hold(g: &Gauge) -> Held {
    g.inc();
    Held(g.clone())
}

/// `/status`'s `http2` object.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct H2View {
    pub connections: u64,
    pub connections_open: i64,
    pub connection_errors: u64,
    pub streams: u64,
    /// WebSockets tunnelled over an HTTP/2 stream (extended CONNECT).
    pub websockets: u64,
    pub websockets_open: i64,
}

impl H2Metrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "latch_h2_connections",
            "Client connections that spoke HTTP/2",
            self.connections.clone(),
        );
        r.register(
            "latch_h2_connections_open",
            "Client HTTP/2 connections open now",
            self.connections_open.clone(),
        );
        r.register(
            "latch_h2_connection_errors",
            "HTTP/2 connections latch closed for a protocol error or abuse (GOAWAY with an error)",
            self.connection_errors.clone(),
        );
        r.register(
            "latch_h2_streams",
            "Requests received on HTTP/2 streams (WebSockets included)",
            self.streams.clone(),
        );
        r.register(
            "latch_h2_websockets",
            "WebSockets over HTTP/2 streams (RFC 8441) whose backend accepted the upgrade",
            self.websockets.clone(),
        );
        r.register(
            "latch_h2_websockets_open",
            "WebSockets over HTTP/2 streams open now",
            self.websockets_open.clone(),
        );
    }

    /// A connection starts speaking HTTP/2; counted open while held.
    pub fn connection(&self) -> Held {
        self.connections.inc();
        hold(&self.connections_open)
    }

    pub fn connection_error(&self) {
        self.connection_errors.inc();
    }

    pub fn stream(&self) {
        self.streams.inc();
    }

    /// A WebSocket rides a stream; counted open while held.
    pub fn websocket(&self) -> Held {
        self.websockets.inc();
        hold(&self.websockets_open)
    }

    pub fn view(&self) -> H2View {
        H2View {
            connections: self.connections.get(),
            connections_open: self.connections_open.get(),
            connection_errors: self.connection_errors.get(),
            streams: self.streams.get(),
            websockets: self.websockets.get(),
            websockets_open: self.websockets_open.get(),
        }
    }
}
