//! `echo` mode: CONNS connections, each sending a 64-byte message and waiting for its echo
//! as fast as it can. After all connections are open, 1 s of warm-up, then SECS measured.
//!
//! `msgs` counts round trips that started and ended inside the measured window (they give
//! `msgs_per_s` and the latencies); `msgs_total` counts every round trip the process made,
//! warm-up included, so that a CPU reading taken around the whole process divides by the
//! work actually done.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout, timeout_at};

use crate::conn::{Target, Ws, payload, round_trip};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const WARM_UP: Duration = Duration::from_secs(1);
/// How long a round trip still in flight at the end of the window may take to finish.
const GRACE: Duration = Duration::from_secs(2);

/// What one connection did.
#[derive(Default)]
struct Tally {
    msgs: u64,
    msgs_total: u64,
    /// Round-trip times in the window, in microseconds.
    lat_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    fn merge(&mut self, other: Tally) {
        self.msgs += other.msgs;
        self.msgs_total += other.msgs_total;
        self.lat_us.extend(other.lat_us);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

pub async fn run(url: &str, conns: usize, secs: Duration) -> Result<(), String> {
    let target = Target::parse(url).await?;
    let (streams, mut all) = open(&target, conns).await;
    if streams.is_empty() {
        return Err(format!(
            "no connection opened: {}",
            all.first_error.unwrap_or_default()
        ));
    }
    let opened = streams.len();
    let start = Instant::now() + WARM_UP;
    let end = start + secs;
    let mut tasks = JoinSet::new();
    for ws in streams {
        tasks.spawn(ping_pong(ws, start, end));
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(t) => all.merge(t),
            Err(e) => all.error(format!("task: {e}")),
        }
    }
    let (p50, p99) = (
        percentile_ms(&mut all.lat_us, 0.50),
        percentile_ms(&mut all.lat_us, 0.99),
    );
    let out = json!({
        "msgs": all.msgs,
        "msgs_per_s": all.msgs as f64 / secs.as_secs_f64(),
        "p50_ms": p50,
        "p99_ms": p99,
        "errors": all.errors,
        "conns": opened,
        "msgs_total": all.msgs_total,
        "first_error": all.first_error,
    });
    println!("{out}");
    Ok(())
}

/// Opens `conns` connections at once; the failures are counted in the tally.
async fn open(target: &Arc<Target>, conns: usize) -> (Vec<Ws>, Tally) {
    let mut tasks = JoinSet::new();
    for _ in 0..conns {
        let target = target.clone();
        tasks.spawn(async move {
            timeout(CONNECT_TIMEOUT, target.connect())
                .await
                .unwrap_or_else(|_| Err("connect timed out".into()))
        });
    }
    let (mut streams, mut tally) = (Vec::with_capacity(conns), Tally::default());
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(ws)) => streams.push(ws),
            Ok(Err(e)) => tally.error(e),
            Err(e) => tally.error(format!("task: {e}")),
        }
    }
    (streams, tally)
}

async fn ping_pong(mut ws: Ws, start: Instant, end: Instant) -> Tally {
    let msg = payload();
    let mut t = Tally::default();
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        match timeout_at(end + GRACE, round_trip(&mut ws, &msg)).await {
            Ok(Ok(())) => {
                let now = Instant::now();
                t.msgs_total += 1;
                if sent >= start && now <= end {
                    t.msgs += 1;
                    t.lat_us
                        .push((now - sent).as_micros().min(u32::MAX as u128) as u32);
                }
            }
            Ok(Err(e)) => {
                t.error(e);
                return t;
            }
            Err(_) => {
                t.error("no echo within 2 s after the end".into());
                return t;
            }
        }
    }
    let _ = timeout(Duration::from_millis(500), ws.close(None)).await;
    t
}

fn percentile_ms(lat_us: &mut [u32], q: f64) -> Option<f64> {
    if lat_us.is_empty() {
        return None;
    }
    let i = ((lat_us.len() as f64 * q) as usize).min(lat_us.len() - 1);
    let (_, v, _) = lat_us.select_nth_unstable(i);
    Some(*v as f64 / 1000.0)
}
