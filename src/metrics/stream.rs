//! TCP mode's series (`stream/`): bytes each way per server, counted as
//! they move (so a connection that lives for hours shows its traffic while
//! it lives), and connections by outcome. Open TCP connections are the
//! servers' `tunnels` gauge (`metrics/pool.rs`), as they hold the same guard.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    upstream: String,
    server: String,
    /// `to_server` or `to_client`.
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnLabels {
    upstream: String,
    /// The server's id; "" when no server took the connection.
    server: String,
    /// `opened` (connected to a server), `connect_failed` (one attempt
    /// failed; the next server may be tried) or `refused` (no server could
    /// be reached; the client was closed).
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabels {
    upstream: String,
    /// How it ended, as the access log says it (`closed`, `idle timeout`, ...).
    end: &'static str,
}

/// The counters of one connection's two directions.
#[derive(Debug, Clone)]
pub struct ByteCounters {
    pub to_server: Counter,
    pub to_client: Counter,
}

/// TCP mode's families; part of [`super::Metrics`].
#[derive(Debug, Default)]
pub struct StreamMetrics {
    bytes: Family<BytesLabels, Counter>,
    connections: Family<ConnLabels, Counter>,
    closed: Family<EndLabels, Counter>,
}

impl StreamMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "latch_tcp_bytes",
            "Bytes moved by TCP-mode listeners, by server and direction",
            self.bytes.clone(),
        );
        r.register(
            "latch_tcp_connections",
            "TCP-mode connections by outcome: opened, connect_failed, refused",
            self.connections.clone(),
        );
        r.register(
            "latch_tcp_closed",
            "TCP-mode connections closed after they were joined, by how they ended",
            self.closed.clone(),
        );
    }

    fn count(&self, upstream: &str, server: &str, outcome: &'static str) {
        let labels = ConnLabels {
            upstream: upstream.to_owned(),
            server: server.to_owned(),
            outcome,
        };
        self.connections.get_or_create(&labels).inc();
    }

    /// A client connection now joined to `server`; the counters its bytes go to.
    pub fn opened(&self, upstream: &str, server: &str) -> ByteCounters {
        self.count(upstream, server, "opened");
        let get = |direction| {
            let labels = BytesLabels {
                upstream: upstream.to_owned(),
                server: server.to_owned(),
                direction,
            };
            self.bytes.get_or_create(&labels).clone()
        };
        ByteCounters {
            to_server: get("to_server"),
            to_client: get("to_client"),
        }
    }

    /// One connect attempt to `server` failed.
    pub fn connect_failed(&self, upstream: &str, server: &str) {
        self.count(upstream, server, "connect_failed");
    }

    /// A joined connection ended; `end` as the access log says it.
    pub fn closed(&self, upstream: &str, end: &'static str) {
        let labels = EndLabels {
            upstream: upstream.to_owned(),
            end,
        };
        self.closed.get_or_create(&labels).inc();
    }

    /// No server could be reached; the client was closed.
    pub fn refused(&self, upstream: &str) {
        self.count(upstream, "", "refused");
    }
}
