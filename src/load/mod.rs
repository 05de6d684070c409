//! Load pulled from the servers (issue 11 §4): with `[upstream.NAME.load]`,
//! one task per server asks `GET path` every `interval` and stores the
//! answer — a number of sessions, or `{"load": N, "max": M}` — in the
//! server's [`Reported`](crate::backend::Reported). least_conn, random (P2C)
//! and the dispatcher then compare the larger of latch's own count and that
//! report, so several latch instances balance on the servers' true load
//! rather than each on its own share.
//!
//! A failed poll (refused, timed out, not 2xx, unreadable) drops the report
//! at once, and a report older than [`LoadConfig::fresh_for`] is ignored:
//! both fall back to latch's own count. A poll never marks a server down —
//! that is the health checks' job. Only changes between answering and
//! failing are logged.

mod parse;
mod poll;

use std::sync::Arc;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use parse::parse;

use crate::backend::{Backend, now_ms};
use crate::config::LoadConfig;

/// Starts one poller per backend of an upstream; they stop on `stop`.
pub fn spawn_all(
    upstream: &str,
    backends: &[Arc<Backend>],
    cfg: &LoadConfig,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) {
    for b in backends {
        let job = Poller {
            upstream: upstream.to_owned(),
            backend: b.clone(),
            cfg: cfg.clone(),
        };
        tasks.spawn(job.run(stop.clone()));
    }
}

struct Poller {
    upstream: String,
    backend: Arc<Backend>,
    cfg: LoadConfig,
}

impl Poller {
    async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let fresh_ms = self.cfg.fresh_for().as_millis() as u64;
        let b = &self.backend;
        // Whether the last poll answered; `None` before the first.
        let mut answering: Option<bool> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = poll::fetch(b.addr, &self.cfg) => r,
            };
            match result {
                Ok(report) => {
                    b.set_reported(report, now_ms() + fresh_ms);
                    if answering != Some(true) {
                        info!(upstream = %self.upstream, backend = %b.addr, load = report.load,
                            "load poll: server reports its load");
                    }
                    answering = Some(true);
                }
                Err(why) => {
                    b.reported.clear();
                    if answering != Some(false) {
                        warn!(upstream = %self.upstream, backend = %b.addr, %why,
                            "load poll failed; using latch's own count for this server");
                    }
                    answering = Some(false);
                }
            }
        }
    }
}
