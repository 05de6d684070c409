//! Whether a backend may take new requests, as health checks see it, and how
//! much of its weight it has earned back after coming up again.
//!
//! Three writers, one reader: the active checker sets up/down, the proxy
//! records passive failures and successes, and selectors read
//! [`Condition::usable`] and [`Condition::weight_permille`]. Everything on the
//! read path is an atomic load (and a clock read only while something is
//! pending), so selection stays cheap.
//!
//! Passive checks follow nginx: `max_fails` failures within `fail_timeout`
//! take the server out for `fail_timeout`. Active checks end a passive time
//! out early, as HAProxy's `observe` + `on-error mark-down` does (a passive
//! out counts as a failed check; `rise` good checks bring the server back):
//!
//! - a check flipping the server up (down → up after `rise` good probes)
//!   clears the passive time out at once;
//! - a server the checker still sees up returns after `rise` good probes in
//!   a row, all made after the passive out;
//!
//! whichever comes first, or `fail_timeout`. Slow start follows nginx too: a
//! server that comes back (by a check, or after its passive time out) ramps
//! from 10% to 100% of its weight over `slow_start`. A server that is up at
//! start does not ramp.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::config::Passive;

/// Milliseconds on a process-wide monotonic clock; never 0 (0 means "unset").
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Where the ramp starts, as a share of the weight.
const RAMP_FLOOR_PERMILLE: u64 = 100;

#[derive(Debug)]
pub struct Condition {
    /// Passive-check settings; replaceable by a reload.
    passive: Mutex<Passive>,
    /// 0 = no slow start.
    slow_start_ms: AtomicU64,
    /// Last verdict of the active checker (true when there is none).
    active_up: AtomicBool,
    /// Out of rotation until this time (ms); 0 = never taken out.
    passive_until: AtomicU64,
    /// Good active probes in a row since the last passive out.
    checks_since_out: AtomicU32,
    /// Slow start began at this time (ms); 0 = not ramping.
    ramp_start: AtomicU64,
    /// A failure window is open; lets successes skip the lock otherwise.
    failing: AtomicBool,
    window: Mutex<FailWindow>,
    /// For status pages: the latest probe and the latest up/down flip.
    report: Mutex<Report>,
}

/// What an operator wants to know about a server's checks.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// `(passed, reason when not, when)` of the latest active probe.
    pub last_check: Option<(bool, String, SystemTime)>,
    /// When active or passive checks last changed the server's state.
    pub last_transition: Option<SystemTime>,
    /// Passive failures counted in the current window.
    pub passive_fails: u32,
    /// Times passive checks took the server out.
    pub passive_outs: u64,
}

#[derive(Debug, Default)]
struct FailWindow {
    started: u64,
    fails: u32,
}

impl Condition {
    pub fn new(passive: Passive, slow_start: Option<Duration>, start_up: bool) -> Condition {
        Condition {
            passive: Mutex::new(passive),
            slow_start_ms: AtomicU64::new(slow_start.map_or(0, |d| d.as_millis() as u64)),
            active_up: AtomicBool::new(start_up),
            passive_until: AtomicU64::new(0),
            checks_since_out: AtomicU32::new(0),
            ramp_start: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            window: Mutex::new(FailWindow::default()),
            report: Mutex::new(Report::default()),
        }
    }

    /// New settings from a reload; the state (health, window, ramp) stays.
    pub fn reconfigure(&self, passive: Passive, slow_start: Option<Duration>) {
        *self.passive.lock().unwrap_or_else(|p| p.into_inner()) = passive;
        let ms = slow_start.map_or(0, |d| d.as_millis() as u64);
        self.slow_start_ms.store(ms, Ordering::Release);
    }

    /// A server that just appeared (found by DNS discovery) starts its
    /// slow start now, if the upstream has one.
    pub fn start_ramp(&self) {
        if self.slow_start_ms() > 0 {
            self.ramp_start.store(now_ms(), Ordering::Release);
        }
    }

    fn slow_start_ms(&self) -> u64 {
        self.slow_start_ms.load(Ordering::Acquire)
    }

    /// Up by the active checks and not taken out by passive ones.
    pub fn usable(&self) -> bool {
        self.active_up() && !self.passive_down()
    }

    pub fn active_up(&self) -> bool {
        self.active_up.load(Ordering::Acquire)
    }

    pub fn passive_down(&self) -> bool {
        let until = self.passive_until.load(Ordering::Acquire);
        until != 0 && now_ms() < until
    }

    /// The active checker's verdict. A flip to up clears any passive time
    /// out (the checker has just seen `rise` good probes) and starts slow
    /// start.
    pub fn set_active(&self, up: bool) {
        let was = self.active_up.swap(up, Ordering::AcqRel);
        if up && !was {
            self.clear_passive();
            if self.slow_start_ms() > 0 {
                self.ramp_start.store(now_ms(), Ordering::Release);
            }
        }
        if up != was {
            self.report().last_transition = Some(SystemTime::now());
        }
    }

    /// One active probe's result, for the passive side: `rise` good probes
    /// in a row after a passive out end it, even when the checker never saw
    /// the server down. Returns true when this probe brought it back.
    pub fn record_active_probe(&self, ok: bool, rise: u32) -> bool {
        if !ok {
            self.checks_since_out.store(0, Ordering::Release);
            return false;
        }
        let n = self
            .checks_since_out
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if n < rise.max(1) || !self.passive_down() || !self.active_up() {
            return false;
        }
        self.clear_passive();
        if self.slow_start_ms() > 0 {
            self.ramp_start.store(now_ms(), Ordering::Release);
        }
        self.report().last_transition = Some(SystemTime::now());
        true
    }

    /// Ends a passive time out and its failure window.
    fn clear_passive(&self) {
        if self.passive_until.swap(0, Ordering::AcqRel) == 0
            && !self.failing.load(Ordering::Acquire)
        {
            return;
        }
        *self.window.lock().unwrap_or_else(|p| p.into_inner()) = FailWindow::default();
        self.failing.store(false, Ordering::Release);
        self.report().passive_fails = 0;
    }

    /// A failed attempt (error, timeout, bad header, or a status listed in
    /// `retry.on`). Returns true when this failure took the server out.
    pub fn record_failure(&self) -> bool {
        let Passive {
            max_fails,
            fail_timeout,
        } = *self.passive.lock().unwrap_or_else(|p| p.into_inner());
        if max_fails == 0 {
            return false;
        }
        let now = now_ms();
        let timeout = fail_timeout.as_millis() as u64;
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.fails == 0 || now.saturating_sub(w.started) > timeout {
            *w = FailWindow {
                started: now,
                fails: 0,
            };
        }
        w.fails += 1;
        self.failing.store(true, Ordering::Release);
        if w.fails < max_fails {
            self.report().passive_fails = w.fails;
            return false;
        }
        {
            let mut r = self.report();
            r.passive_fails = 0;
            r.passive_outs += 1;
            r.last_transition = Some(SystemTime::now());
        }
        *w = FailWindow::default();
        self.failing.store(false, Ordering::Release);
        let until = now + timeout;
        self.checks_since_out.store(0, Ordering::Release);
        self.passive_until.store(until, Ordering::Release);
        if self.slow_start_ms() > 0 {
            self.ramp_start.store(until, Ordering::Release);
        }
        true
    }

    /// A successful attempt closes the failure window.
    pub fn record_success(&self) {
        if self.failing.load(Ordering::Acquire) {
            let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
            *w = FailWindow::default();
            self.failing.store(false, Ordering::Release);
            self.report().passive_fails = 0;
        }
    }

    /// Notes the latest active probe (the checker calls this every probe).
    pub fn record_check(&self, result: &Result<(), String>) {
        let (ok, why) = match result {
            Ok(()) => (true, String::new()),
            Err(e) => (false, e.clone()),
        };
        self.report().last_check = Some((ok, why, SystemTime::now()));
    }

    /// A copy of the operator-facing report.
    pub fn snapshot_report(&self) -> Report {
        self.report().clone()
    }

    fn report(&self) -> std::sync::MutexGuard<'_, Report> {
        self.report.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Share of the configured weight earned so far, in ‰ (100..=1000).
    pub fn weight_permille(&self) -> u64 {
        let start = self.ramp_start.load(Ordering::Acquire);
        if start == 0 {
            return 1000;
        }
        let now = now_ms();
        if now < start {
            return RAMP_FLOOR_PERMILLE;
        }
        let elapsed = now - start;
        let ramp = self.slow_start_ms();
        if elapsed >= ramp {
            // Ramp done: later reads skip the clock.
            let _ = self
                .ramp_start
                .compare_exchange(start, 0, Ordering::AcqRel, Ordering::Relaxed);
            return 1000;
        }
        (elapsed * 1000 / ramp).max(RAMP_FLOOR_PERMILLE)
    }

    /// Whether slow start is still ramping (for status pages).
    pub fn ramping(&self) -> bool {
        self.weight_permille() < 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passive(max_fails: u32, ms: u64) -> Passive {
        Passive {
            max_fails,
            fail_timeout: Duration::from_millis(ms),
        }
    }

    #[test]
    fn max_fails_within_the_window_takes_the_server_out() {
        let c = Condition::new(passive(3, 60_000), None, true);
        assert!(!c.record_failure());
        assert!(!c.record_failure());
        c.record_success(); // closes the window
        assert!(!c.record_failure());
        assert!(!c.record_failure());
        assert!(c.usable());
        assert!(c.record_failure());
        assert!(!c.usable() && c.passive_down() && c.active_up());
    }

    #[test]
    fn passive_down_ends_after_fail_timeout() {
        let c = Condition::new(passive(1, 30), None, true);
        assert!(c.record_failure());
        assert!(!c.usable());
        let deadline = Instant::now() + Duration::from_secs(5);
        while !c.usable() {
            assert!(Instant::now() < deadline, "still down after fail_timeout");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn zero_max_fails_disables_passive_checks() {
        let c = Condition::new(passive(0, 10_000), None, true);
        for _ in 0..100 {
            assert!(!c.record_failure());
        }
        assert!(c.usable());
    }

    #[test]
    fn slow_start_ramps_only_after_coming_back() {
        let c = Condition::new(passive(1, 10_000), Some(Duration::from_secs(100)), false);
        assert!(!c.usable());
        assert_eq!(c.weight_permille(), 1000, "no ramp before ever being up");
        c.set_active(true);
        assert!(c.usable());
        let w = c.weight_permille();
        assert!((100..200).contains(&w), "starts near 10%: {w}");
        assert!(c.ramping());
        let up_at_start = Condition::new(passive(1, 10_000), Some(Duration::from_secs(100)), true);
        assert_eq!(up_at_start.weight_permille(), 1000);
        up_at_start.set_active(true); // already up: no ramp
        assert_eq!(up_at_start.weight_permille(), 1000);
    }

    #[test]
    fn a_check_flipping_the_server_up_ends_its_passive_time_out() {
        let c = Condition::new(passive(1, 3_600_000), Some(Duration::from_secs(100)), true);
        assert!(c.record_failure());
        c.set_active(false); // the checker saw it die too
        assert!(!c.usable() && c.passive_down());
        c.set_active(true); // and saw it come back
        assert!(c.usable(), "back at once, not after fail_timeout");
        assert!(!c.passive_down());
        let w = c.weight_permille();
        assert!((100..200).contains(&w), "slow start begins now: {w}");
        assert!(c.record_failure(), "a new failure takes it out again");
    }

    #[test]
    fn rise_good_probes_after_a_passive_out_bring_the_server_back() {
        let c = Condition::new(passive(1, 3_600_000), None, true);
        // Good probes before the out do not count.
        assert!(!c.record_active_probe(true, 2));
        assert!(!c.record_active_probe(true, 2));
        assert!(c.record_failure());
        assert!(!c.record_active_probe(true, 2));
        assert!(!c.usable());
        assert!(
            !c.record_active_probe(false, 2),
            "a failed probe restarts the count"
        );
        assert!(!c.record_active_probe(true, 2));
        assert!(!c.usable());
        assert!(c.record_active_probe(true, 2));
        assert!(c.usable() && !c.passive_down());
        // Up and not out: nothing more to end.
        assert!(!c.record_active_probe(true, 2));
    }

    #[test]
    fn probes_do_not_end_a_passive_out_while_the_checker_sees_it_down() {
        let c = Condition::new(passive(1, 3_600_000), None, true);
        assert!(c.record_failure());
        c.set_active(false);
        for _ in 0..5 {
            assert!(!c.record_active_probe(true, 2));
        }
        assert!(
            c.passive_down(),
            "only the flip up (set_active) ends it then"
        );
    }

    #[test]
    fn ramp_completes() {
        let c = Condition::new(passive(1, 10_000), Some(Duration::from_millis(20)), false);
        c.set_active(true);
        let deadline = Instant::now() + Duration::from_secs(5);
        while c.weight_permille() < 1000 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!c.ramping());
    }
}
