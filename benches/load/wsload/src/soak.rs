//! `soak` mode, for `benches/soak/run.sh`: CONNS long-lived connections, each sending one
//! numbered message a second and checking every echo, for SECS; optionally an HTTP GET
//! loop at RATE requests a second beside them (see [`crate::http`]).
//!
//! Life of a connection slot:
//! 1. it opens its first connection (at most [`IN_FLIGHT`] handshakes at once);
//! 2. once every slot has tried, the run starts: `OUTDIR/ready.json` gets the start time
//!    and the number opened, and every slot sends `SLOT:SEQ:` padded to 64 bytes, once a
//!    second (each slot at its own offset within the second);
//! 3. the echo (from `wsload echo-server --name NAME`) is `NAME SLOT:SEQ:...`: the slot
//!    must be its own and NAME the backend named by the `X-Backend` header of its `101`
//!    (else `misrouted`), and SEQ the oldest one outstanding (else `gaps`, or `dups`);
//! 4. if the connection closes or fails, the session is recorded, and the slot connects
//!    again after 0.5-5 s (backing off up to 8 s while connects fail) until the end;
//! 5. at the end it stops sending, waits up to [`DRAIN`] for the echoes still due,
//!    closes, and records the session as ended by `end`.
//!
//! A session's `lost` is sent - echoed. Output in OUTDIR:
//! - `ready.json`: `{t0_ms, opened, failed, errors}` (epoch milliseconds);
//! - `rate.tsv`: one line a second, from before the ramp to the end: open connections and
//!   the messages, sessions and HTTP answers of that second;
//! - `sessions.tsv`: one line per session (slot, backend, open and close times, counts,
//!   how it ended);
//! - `summary.json` (also printed): totals, per backend, and the HTTP loop's tally.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{Target, Ws};

const IN_FLIGHT: usize = 100;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the first connections may take in all before the run starts anyway.
const RAMP_MAX: Duration = Duration::from_secs(300);
/// After the end: how long a connection waits for the echoes still due.
const DRAIN: Duration = Duration::from_secs(5);
const PERIOD: Duration = Duration::from_secs(1);
/// An echo later than this counts as `late` (it is still an echo, not a loss).
const LATE: Duration = Duration::from_secs(1);
const MSG_LEN: usize = 64;

/// Process-wide counters, read once a second by the ticker (and by the HTTP loop).
#[derive(Default)]
pub struct Counters {
    open: AtomicI64,
    sent: AtomicU64,
    echoed: AtomicU64,
    opened: AtomicU64,
    closed: AtomicU64,
    connect_fail: AtomicU64,
    late: AtomicU64,
    rtt_max_us: AtomicU64,
    pub http_sent: AtomicU64,
    pub http_ok: AtomicU64,
    pub http_non2xx: AtomicU64,
    pub http_err: AtomicU64,
    pub http_max_us: AtomicU64,
}

pub fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One connection from open to close.
struct Session {
    slot: usize,
    backend: String,
    /// Opened before the start (part of the first CONNS), rather than a reconnection.
    initial: bool,
    opened_ms: u64,
    closed_ms: u64,
    sent: u64,
    echoed: u64,
    gaps: u64,
    dups: u64,
    misrouted: u64,
    rtt_max_us: u64,
    /// `end`, or why it closed before the end.
    end: String,
}

/// xorshift64*: jitter only, no crate needed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

pub async fn run(
    url: &str,
    conns: usize,
    secs: Duration,
    out: &Path,
    http: Option<(String, f64)>,
) -> Result<(), String> {
    let target = Target::parse(url).await?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let counters = Arc::new(Counters::default());
    let sessions = Arc::new(Mutex::new(Vec::<Session>::with_capacity(conns * 2)));
    let (done_tx, done_rx) = watch::channel(false);
    let ticker = tokio::spawn(ticker(out.join("rate.tsv"), counters.clone(), done_rx));

    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let (start_tx, start_rx) = watch::channel(None::<(Instant, Instant)>);
    let (init_tx, mut init_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let seed = epoch_ms() | 1;
    let mut slots = JoinSet::new();
    for slot in 0..conns {
        slots.spawn(run_slot(
            slot,
            target.clone(),
            gate.clone(),
            start_rx.clone(),
            init_tx.clone(),
            counters.clone(),
            sessions.clone(),
            Rng(seed.wrapping_mul(slot as u64 + 1) | 1),
        ));
    }
    drop(init_tx);

    // The ramp: wait for every slot's first attempt (bounded).
    let (mut opened, mut failed, mut errors) = (0usize, 0usize, Vec::<String>::new());
    let ramp_end = Instant::now() + RAMP_MAX;
    while opened + failed < conns {
        match timeout_at_opt(ramp_end, init_rx.recv()).await {
            Some(Some(Ok(()))) => opened += 1,
            Some(Some(Err(e))) => {
                failed += 1;
                if errors.len() < 3 && !errors.contains(&e) {
                    errors.push(e);
                }
            }
            Some(None) | None => break,
        }
    }
    let start = Instant::now();
    let end = start + secs;
    let t0_ms = epoch_ms();
    let ready = json!({ "t0_ms": t0_ms, "opened": opened, "failed": failed, "errors": errors });
    std::fs::write(out.join("ready.json"), format!("{ready}\n"))
        .map_err(|e| format!("ready.json: {e}"))?;
    let _ = start_tx.send(Some((start, end)));

    let http_task = http.map(|(u, rate)| {
        let c = counters.clone();
        tokio::spawn(async move { crate::http::run(&u, rate, start, end, c).await })
    });

    // Every slot ends by itself soon after `end`; the bound is for a stuck close.
    let hard_end = end + DRAIN + Duration::from_secs(10);
    while let Some(Some(_)) = timeout_at_opt(hard_end, slots.join_next()).await {}
    let stuck = slots.len();
    slots.abort_all();
    let http_tally = match http_task {
        Some(t) => Some(t.await.map_err(|e| format!("http task: {e}"))??),
        None => None,
    };
    let _ = done_tx.send(true);
    let _ = ticker.await;

    let sessions = std::mem::take(&mut *sessions.lock().unwrap_or_else(|p| p.into_inner()));
    write_sessions(&out.join("sessions.tsv"), &sessions)?;
    let summary = summarize(
        &sessions,
        json!({
            "t0_ms": t0_ms,
            "end_ms": t0_ms + secs.as_millis() as u64,
            "secs": secs.as_secs_f64(),
            "conns": conns,
            "initial_opened": opened,
            "initial_failed": failed,
            "initial_errors": errors,
            "stuck_slots": stuck,
            "connect_failures": counters.connect_fail.load(Relaxed),
        }),
        http_tally,
    );
    let text = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
    std::fs::write(out.join("summary.json"), format!("{text}\n"))
        .map_err(|e| format!("summary.json: {e}"))?;
    println!("{text}");
    Ok(())
}

async fn timeout_at_opt<F: std::future::Future>(at: Instant, f: F) -> Option<F::Output> {
    tokio::time::timeout_at(at, f).await.ok()
}

#[allow(clippy::too_many_arguments)]
async fn run_slot(
    slot: usize,
    target: Arc<Target>,
    gate: Arc<Semaphore>,
    mut start_rx: watch::Receiver<Option<(Instant, Instant)>>,
    init_tx: mpsc::UnboundedSender<Result<(), String>>,
    counters: Arc<Counters>,
    sessions: Arc<Mutex<Vec<Session>>>,
    mut rng: Rng,
) {
    let first = {
        let _permit = gate.acquire().await;
        connect(&target).await
    };
    let mut pending = match first {
        Ok(c) => {
            let _ = init_tx.send(Ok(()));
            Some(c)
        }
        Err(e) => {
            counters.connect_fail.fetch_add(1, Relaxed);
            let _ = init_tx.send(Err(e));
            None
        }
    };
    drop(init_tx);
    let end = match start_rx.wait_for(Option::is_some).await {
        Ok(r) => match *r {
            Some((_, end)) => end,
            None => return,
        },
        Err(_) => return,
    };
    let mut initial = pending.is_some();
    let mut backoff = Duration::from_millis(500);
    loop {
        let (ws, backend, opened_ms) = match pending.take() {
            Some(c) => c,
            None => {
                if Instant::now() >= end {
                    return;
                }
                match connect(&target).await {
                    Ok(c) => {
                        counters.opened.fetch_add(1, Relaxed);
                        backoff = Duration::from_millis(500);
                        c
                    }
                    Err(_) => {
                        counters.connect_fail.fetch_add(1, Relaxed);
                        let wait = rng.millis(backoff.as_millis() as u64 / 2, backoff.as_millis() as u64);
                        sleep_until((Instant::now() + wait).min(end)).await;
                        backoff = (backoff * 2).min(Duration::from_secs(8));
                        continue;
                    }
                }
            }
        };
        counters.open.fetch_add(1, Relaxed);
        let s = session(slot, ws, backend, initial, opened_ms, end, &counters, &mut rng).await;
        counters.open.fetch_sub(1, Relaxed);
        initial = false;
        let clean = s.end == "end";
        sessions.lock().unwrap_or_else(|p| p.into_inner()).push(s);
        if clean {
            return;
        }
        counters.closed.fetch_add(1, Relaxed);
        sleep_until((Instant::now() + rng.millis(500, 5000)).min(end)).await;
    }
}

async fn connect(target: &Target) -> Result<(Ws, Option<String>, u64), String> {
    match timeout(CONNECT_TIMEOUT, target.connect_named()).await {
        Ok(Ok((ws, backend))) => Ok((ws, backend, epoch_ms())),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("connect timed out".into()),
    }
}

fn payload(slot: usize, seq: u64) -> String {
    let mut s = format!("{slot}:{seq}:");
    while s.len() < MSG_LEN {
        s.push('x');
    }
    s
}

#[allow(clippy::too_many_arguments)]
async fn session(
    slot: usize,
    mut ws: Ws,
    backend: Option<String>,
    initial: bool,
    opened_ms: u64,
    end: Instant,
    counters: &Counters,
    rng: &mut Rng,
) -> Session {
    let mut s = Session {
        slot,
        backend: backend.unwrap_or_else(|| "?".into()),
        initial,
        opened_ms,
        closed_ms: 0,
        sent: 0,
        echoed: 0,
        gaps: 0,
        dups: 0,
        misrouted: 0,
        rtt_max_us: 0,
        end: String::new(),
    };
    // Skip, not Delay: a tick served late does not shift the ones after it, so a busy
    // machine lowers the rate only when a whole period is missed.
    let mut tick = interval_at(Instant::now() + rng.millis(0, 999), PERIOD);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut outstanding: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut seq = 0u64;
    let mut stop_at: Option<Instant> = None;
    let reason: String = loop {
        if stop_at.is_some() && outstanding.is_empty() {
            break "end".into();
        }
        tokio::select! {
            _ = tick.tick(), if stop_at.is_none() => {
                if Instant::now() >= end {
                    stop_at = Some(end + DRAIN);
                    continue;
                }
                seq += 1;
                if let Err(e) = ws.send(Message::text(payload(slot, seq))).await {
                    break format!("send: {e}");
                }
                outstanding.push_back((seq, Instant::now()));
                s.sent += 1;
                counters.sent.fetch_add(1, Relaxed);
            }
            () = sleep_until(end), if stop_at.is_none() => stop_at = Some(end + DRAIN),
            () = sleep_until(stop_at.unwrap_or(end)), if stop_at.is_some() => break "end".into(),
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => on_echo(&mut s, &mut outstanding, t.as_str(), counters),
                Some(Ok(Message::Binary(b))) => {
                    on_echo(&mut s, &mut outstanding, &String::from_utf8_lossy(&b), counters)
                }
                Some(Ok(Message::Close(f))) => {
                    break match f {
                        Some(f) => format!("close frame {} {}", u16::from(f.code), f.reason),
                        None => "close frame".into(),
                    };
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break format!("read: {e}"),
                None => break "closed".into(),
            },
        }
    };
    if reason == "end" {
        let _ = timeout(Duration::from_secs(1), ws.close(None)).await;
    }
    s.closed_ms = epoch_ms();
    s.end = reason;
    s
}

fn on_echo(s: &mut Session, outstanding: &mut VecDeque<(u64, Instant)>, text: &str, c: &Counters) {
    let Some((name, rest)) = text.split_once(' ') else {
        s.misrouted += 1;
        return;
    };
    if s.backend == "?" {
        s.backend = name.to_string();
    } else if name != s.backend {
        s.misrouted += 1;
    }
    let mut parts = rest.splitn(3, ':');
    let (Some(Ok(slot)), Some(Ok(seq))) = (
        parts.next().map(str::parse::<usize>),
        parts.next().map(str::parse::<u64>),
    ) else {
        s.misrouted += 1;
        return;
    };
    if slot != s.slot {
        s.misrouted += 1;
        return;
    }
    while let Some(&(q, at)) = outstanding.front() {
        if q < seq {
            // Never echoed, and TCP keeps order: it is lost.
            outstanding.pop_front();
            s.gaps += 1;
            continue;
        }
        if q == seq {
            outstanding.pop_front();
            let rtt = at.elapsed();
            let us = rtt.as_micros() as u64;
            s.echoed += 1;
            s.rtt_max_us = s.rtt_max_us.max(us);
            c.echoed.fetch_add(1, Relaxed);
            c.rtt_max_us.fetch_max(us, Relaxed);
            if rtt > LATE {
                c.late.fetch_add(1, Relaxed);
            }
            return;
        }
        break;
    }
    s.dups += 1;
}

async fn ticker(path: std::path::PathBuf, c: Arc<Counters>, mut done: watch::Receiver<bool>) {
    let Ok(mut f) = std::fs::File::create(&path) else {
        eprintln!("wsload: cannot write {}", path.display());
        return;
    };
    let _ = writeln!(
        f,
        "epoch_ms\topen\tsent\techoed\topened\tclosed\tconnect_fail\tlate\trtt_max_ms\thttp_sent\thttp_ok\thttp_non2xx\thttp_err\thttp_max_ms"
    );
    let mut tick = interval_at(Instant::now() + PERIOD, PERIOD);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut prev = [0u64; 10];
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = done.wait_for(|d| *d) => true,
        };
        let now = [
            c.sent.load(Relaxed),
            c.echoed.load(Relaxed),
            c.opened.load(Relaxed),
            c.closed.load(Relaxed),
            c.connect_fail.load(Relaxed),
            c.late.load(Relaxed),
            c.http_sent.load(Relaxed),
            c.http_ok.load(Relaxed),
            c.http_non2xx.load(Relaxed),
            c.http_err.load(Relaxed),
        ];
        let d: Vec<u64> = now.iter().zip(prev).map(|(a, b)| a - b).collect();
        prev = now;
        let _ = writeln!(
            f,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.1}\t{}\t{}\t{}\t{}\t{:.1}",
            epoch_ms(),
            c.open.load(Relaxed),
            d[0],
            d[1],
            d[2],
            d[3],
            d[4],
            d[5],
            c.rtt_max_us.swap(0, Relaxed) as f64 / 1000.0,
            d[6],
            d[7],
            d[8],
            d[9],
            c.http_max_us.swap(0, Relaxed) as f64 / 1000.0,
        );
        if last {
            return;
        }
    }
}

fn write_sessions(path: &Path, sessions: &[Session]) -> Result<(), String> {
    let mut out = String::from(
        "slot\tbackend\tinitial\topened_ms\tclosed_ms\tsent\techoed\tlost\tgaps\tdups\tmisrouted\trtt_max_ms\tend\n",
    );
    for s in sessions {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.1}\t{}\n",
            s.slot,
            s.backend,
            u8::from(s.initial),
            s.opened_ms,
            s.closed_ms,
            s.sent,
            s.echoed,
            s.sent - s.echoed.min(s.sent),
            s.gaps,
            s.dups,
            s.misrouted,
            s.rtt_max_us as f64 / 1000.0,
            s.end.replace(['\t', '\n'], " "),
        ));
    }
    std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))
}

fn summarize(sessions: &[Session], mut run: Value, http: Option<crate::http::HttpTally>) -> Value {
    #[derive(Default)]
    struct Agg {
        sessions: u64,
        initial: u64,
        sent: u64,
        echoed: u64,
        lost: u64,
        gaps: u64,
        dups: u64,
        misrouted: u64,
        closed_early: u64,
        lost_on_closed_early: u64,
        first_close_ms: Option<u64>,
        last_close_ms: Option<u64>,
        rtt_max_us: u64,
    }
    let mut total = Agg::default();
    let mut per: BTreeMap<&str, Agg> = BTreeMap::new();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for s in sessions {
        let lost = s.sent - s.echoed.min(s.sent);
        let early = s.end != "end";
        for a in [&mut total, per.entry(s.backend.as_str()).or_default()] {
            a.sessions += 1;
            a.initial += u64::from(s.initial);
            a.sent += s.sent;
            a.echoed += s.echoed;
            a.lost += lost;
            a.gaps += s.gaps;
            a.dups += s.dups;
            a.misrouted += s.misrouted;
            a.rtt_max_us = a.rtt_max_us.max(s.rtt_max_us);
            if early {
                a.closed_early += 1;
                a.lost_on_closed_early += lost;
                a.first_close_ms = Some(a.first_close_ms.map_or(s.closed_ms, |m| m.min(s.closed_ms)));
                a.last_close_ms = Some(a.last_close_ms.map_or(s.closed_ms, |m| m.max(s.closed_ms)));
            }
        }
        if early {
            let mut r = s.end.clone();
            r.truncate(100);
            *reasons.entry(r).or_default() += 1;
        }
    }
    let agg = |a: &Agg| {
        json!({
            "sessions": a.sessions,
            "initial_sessions": a.initial,
            "sent": a.sent,
            "echoed": a.echoed,
            "lost": a.lost,
            "gaps": a.gaps,
            "dups": a.dups,
            "misrouted": a.misrouted,
            "closed_early": a.closed_early,
            "lost_on_closed_early": a.lost_on_closed_early,
            "lost_on_sessions_to_the_end": a.lost - a.lost_on_closed_early,
            "first_close_ms": a.first_close_ms,
            "last_close_ms": a.last_close_ms,
            "rtt_max_ms": a.rtt_max_us as f64 / 1000.0,
        })
    };
    run["total"] = agg(&total);
    run["per_backend"] = per.iter().map(|(k, a)| ((*k).to_string(), agg(a))).collect();
    run["close_reasons"] = reasons.into_iter().map(|(k, v)| (k, json!(v))).collect();
    if let Some(h) = http {
        run["http"] = json!({
            "sent": h.sent,
            "ok": h.ok,
            "non2xx": h.non2xx,
            "errors": h.errors,
            "statuses": h.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "by_backend": h.by_backend,
            "first_errors": h.first_errors,
            "stale_retried": h.stale_retried,
            "stale_errors": h.stale_errors,
            "failures": h.failures.iter().map(|(t, e)| json!([t, e])).collect::<Vec<_>>(),
        });
    }
    run
}
