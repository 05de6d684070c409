//! The checker task of one backend: probe every `interval` (plus a little
//! jitter), feed the result to the backend's [`RiseFall`], and write each
//! flip into the backend's condition. Only flips are logged, once each; an
//! upstream whose last server goes down is logged as an error.

use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::{Health, HttpProbe, Probe, RiseFall, probe_after};
use crate::backend::Backend;
use crate::config::{CheckConfig, CheckKind};
use crate::metrics::Metrics;

/// Starts one checker per backend of an upstream; they stop on `stop`.
pub fn spawn_all(
    upstream: &str,
    backends: &[Arc<Backend>],
    check: &CheckConfig,
    metrics: Arc<Metrics>,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) {
    let probe = probe_for(check);
    for (i, b) in backends.iter().enumerate() {
        let job = Checker {
            upstream: upstream.to_string(),
            backend: b.clone(),
            siblings: backends.to_vec(),
            probe: probe.clone(),
            preface: check
                .send_proxy
                .map(|v| crate::proxy_protocol::encode(v, None))
                .unwrap_or_default(),
            addr: check
                .port
                .map_or(b.addr, |p| SocketAddr::new(b.addr.ip(), p)),
            interval: check.interval,
            timeout: check.timeout,
            rise: check.rise.max(1),
            machine: RiseFall::new(
                if b.condition.active_up() {
                    Health::Up
                } else {
                    Health::Down
                },
                check.rise,
                check.fall,
            ),
            jitter: RandomState::new(),
            seq: i as u64,
            metrics: metrics.clone(),
        };
        tasks.spawn(job.run(stop.clone()));
    }
}

fn probe_for(c: &CheckConfig) -> Probe {
    let http = || HttpProbe {
        method: c.method.clone(),
        path: c.path.clone(),
        host: c.host.clone(),
        headers: c.headers.clone(),
        send: c.send.clone(),
        expect: c.expect.clone(),
        expect_body: c.expect_body.clone(),
    };
    match c.kind {
        CheckKind::Tcp => Probe::Tcp,
        CheckKind::Http => Probe::Http(http()),
        CheckKind::Ws => Probe::Ws(http()),
        CheckKind::Tls => Probe::Tls {
            sni: c.sni.clone(),
            ca: c.ca.clone(),
        },
    }
}

struct Checker {
    upstream: String,
    backend: Arc<Backend>,
    /// The upstream's backends, to notice when none is left up.
    siblings: Vec<Arc<Backend>>,
    probe: Probe,
    /// Sent first on each probe's connection: a PROXY header naming no
    /// client when the upstream has `send_proxy` (HAProxy's
    /// `check-send-proxy`); empty otherwise.
    preface: Vec<u8>,
    addr: SocketAddr,
    interval: Duration,
    timeout: Duration,
    /// Good probes in a row that end a passive time out (`check.rise`).
    rise: u32,
    machine: RiseFall,
    /// Randomness for jitter (seeded by the OS, per checker).
    jitter: RandomState,
    seq: u64,
    metrics: Arc<Metrics>,
}

impl Checker {
    async fn run(mut self, stop: CancellationToken) {
        // Spread the first probes over the first interval, then keep each
        // checker's period slightly irregular (up to +10%).
        let mut delay = self.fraction(self.interval);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            let started = std::time::Instant::now();
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = probe_after(&self.probe, self.addr, self.timeout, &self.preface) => r,
            };
            self.metrics
                .check(&self.upstream, result.is_ok(), started.elapsed());
            let b = &self.backend;
            b.condition.record_check(&result);
            let ok = result.is_ok();
            if let Some(t) = self.machine.record(ok) {
                self.flip(t.to, result.err());
            }
            if b.condition.record_active_probe(ok, self.rise) {
                info!(upstream = %self.upstream, backend = %b.addr, rise = self.rise,
                    "health check: server passed {} probes since passive checks took it out; back in", self.rise);
            }
            delay = self.interval + self.fraction(self.interval / 10);
        }
    }

    fn flip(&self, to: Health, reason: Option<String>) {
        let b = &self.backend;
        b.condition.set_active(to == Health::Up);
        match to {
            Health::Up => {
                info!(upstream = %self.upstream, backend = %b.addr, "health check: server is up")
            }
            Health::Down => {
                let reason = reason.unwrap_or_default();
                warn!(upstream = %self.upstream, backend = %b.addr, %reason, "health check: server is down");
                if self.siblings.iter().all(|s| !s.condition.usable()) {
                    error!(upstream = %self.upstream, "health check: every server of the upstream is down");
                }
            }
        }
    }

    /// A pseudo-random duration in `[0, max)`.
    fn fraction(&mut self, max: Duration) -> Duration {
        self.seq = self.seq.wrapping_add(1);
        let r = self.jitter.hash_one(self.seq) % 1_000_000;
        max.mul_f64(r as f64 / 1_000_000.0)
    }
}
