//! DNS discovery as an operator sees it: the last resolution of every
//! upstream that takes servers from DNS (for `/status`), and a counter of
//! resolutions by result (for `/metrics`, `latch_dns_resolutions`).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use serde::Serialize;

/// The last resolution of one upstream's `discover` name.
#[derive(Debug, Clone, Serialize)]
pub struct DnsStatus {
    /// The name asked for.
    pub name: String,
    /// `A`, `AAAA` or `SRV`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The DNS server asked, or `system`.
    pub resolver: String,
    /// When the last resolution ended (Unix seconds); `None` before the first.
    pub last_unix: Option<u64>,
    /// Whether it found servers.
    pub ok: bool,
    /// `ok`, `nxdomain`, `empty` or `error`, with the reason after a failure.
    pub result: String,
    /// Servers in force from this name (the last good set).
    pub servers: usize,
    /// Failed resolutions in a row (0 after a success).
    pub failures_in_a_row: u64,
    /// Seconds until the next resolution, as decided after the last one.
    pub next_in_secs: f64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DnsLabels {
    pub upstream: String,
    pub result: &'static str,
}

/// Every discovering upstream's [`DnsStatus`], by upstream name.
#[derive(Debug, Default)]
pub(super) struct Statuses(Mutex<BTreeMap<String, DnsStatus>>);

impl Statuses {
    pub(super) fn set(&self, upstream: &str, status: DnsStatus) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.insert(upstream.to_string(), status);
    }

    pub(super) fn all(&self) -> Vec<(String, DnsStatus)> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub(super) fn retain(&self, keep: &dyn Fn(&str) -> bool) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|k, _| keep(k));
    }
}
