//! Upgrade admission: `max_upgrades_per_sec` on a server, a token bucket
//! that caps how fast WebSocket upgrades reach it, so a restarted or newly
//! added backend is not hit by a whole reconnect storm at once.
//!
//! The bucket holds one tenth of the per-second rate (at least one token) and
//! refills continuously, so a storm is smoothed from its first second: a
//! server capped at 1000/s takes at most 100 upgrades at once, then one per
//! millisecond. It is kept as GCRA (the generic cell rate algorithm, RFC 2697's
//! single-rate bucket in one number): one atomic "theoretical arrival time",
//! moved by compare-and-swap, so admission takes no lock and two racing
//! upgrades cannot both take the last token.
//!
//! The state lives with the long-lived [`super::Server`], not the routing
//! table: a reload keeps the bucket as it is (it does not refill it), while
//! the rate itself is the config's and may change with a reload. Time is
//! passed in (nanoseconds of [`now_ns`]), so the bucket is tested without
//! clocks. Plain requests never touch any of this.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Nanoseconds on a monotonic clock since the first call in this process.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let ns = EPOCH.get_or_init(Instant::now).elapsed().as_nanos();
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// The bucket's shape for a rate of `per_sec` upgrades a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// As configured.
    per_sec: u32,
    /// Nanoseconds between two tokens.
    interval: u64,
    /// How far ahead of `now` the arrival time may run: burst − 1 intervals.
    tolerance: u64,
}

impl Rate {
    /// `per_sec` ≥ 1 (the config refuses 0); burst = `per_sec / 10`, at least 1.
    pub fn per_sec(configured: u32) -> Rate {
        let per_sec = u64::from(configured.max(1));
        let interval = (1_000_000_000 / per_sec).max(1);
        let burst = (per_sec / 10).max(1);
        Rate {
            per_sec: configured,
            interval,
            tolerance: (burst - 1) * interval,
        }
    }

    /// The configured rate (upgrades a second).
    pub fn per_second(&self) -> u32 {
        self.per_sec
    }

    /// Tokens the full bucket holds.
    pub fn burst(&self) -> u64 {
        self.tolerance / self.interval + 1
    }
}

/// One server's upgrade bucket and counts.
#[derive(Debug, Default)]
pub struct UpgradeGate {
    /// GCRA's theoretical arrival time (ns of [`now_ns`]): the bucket is
    /// full while it is at or before `now`.
    tat: AtomicU64,
    /// Upgrades placed on the server.
    admitted: AtomicU64,
    /// Upgrades that could not be placed on it for lack of a token (and went
    /// to another server, or were answered 503).
    deferred: AtomicU64,
}

impl UpgradeGate {
    /// Whether a token is there at `now` (no token is taken).
    pub fn has_room(&self, rate: Rate, now: u64) -> bool {
        self.tat.load(Ordering::Acquire) <= now.saturating_add(rate.tolerance)
    }

    /// Takes a token if one is there at `now`.
    pub fn try_take(&self, rate: Rate, now: u64) -> bool {
        let taken = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                (tat <= now.saturating_add(rate.tolerance))
                    .then(|| tat.max(now).saturating_add(rate.interval))
            })
            .is_ok();
        if taken {
            self.admit();
        }
        taken
    }

    /// Counts an upgrade placed on the server with no cap to check.
    pub fn admit(&self) {
        self.admitted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an upgrade turned away for lack of a token.
    pub fn defer(&self) {
        self.deferred.fetch_add(1, Ordering::Relaxed);
    }

    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }

    pub fn deferred(&self) -> u64 {
        self.deferred.load(Ordering::Relaxed)
    }

    /// Whole tokens in the bucket at `now` (for `/status`).
    pub fn tokens(&self, rate: Rate, now: u64) -> u64 {
        let tat = self.tat.load(Ordering::Acquire);
        let ahead = tat.saturating_sub(now);
        let used = ahead.div_ceil(rate.interval);
        rate.burst().saturating_sub(used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const SEC: u64 = 1_000 * MS;

    /// Tokens taken by `tries` upgrades all at time `now`.
    fn take(g: &UpgradeGate, r: Rate, now: u64, tries: usize) -> usize {
        (0..tries).filter(|_| g.try_take(r, now)).count()
    }

    #[test]
    fn burst_is_a_tenth_of_the_rate_and_at_least_one() {
        assert_eq!(Rate::per_sec(1000).burst(), 100);
        assert_eq!(Rate::per_sec(50).burst(), 5);
        assert_eq!(Rate::per_sec(9).burst(), 1);
        assert_eq!(Rate::per_sec(1).burst(), 1);
    }

    #[test]
    fn a_storm_gets_the_burst_then_the_rate() {
        let r = Rate::per_sec(1000);
        let g = UpgradeGate::default();
        let t0 = 5 * SEC;
        assert_eq!(g.tokens(r, t0), 100);
        assert_eq!(take(&g, r, t0, 5000), 100, "the full bucket at once");
        assert!(!g.has_room(r, t0));
        assert_eq!(g.tokens(r, t0), 0);
        // One token a millisecond after that.
        assert_eq!(take(&g, r, t0 + MS, 5000), 1);
        assert_eq!(take(&g, r, t0 + 11 * MS, 5000), 10);
        // Over a whole second of constant pressure (a try every 100 µs):
        // at most rate + burst.
        let mut got = 0;
        let start = t0 + 20 * MS;
        for step in 0..10_000 {
            got += take(&g, r, start + step * 100_000, 1);
        }
        assert!((1000..=1000 + 100).contains(&got), "{got} in one second");
        assert_eq!(g.admitted(), 100 + 1 + 10 + got as u64);
    }

    #[test]
    fn refills_to_the_burst_and_no_further() {
        let r = Rate::per_sec(100);
        let g = UpgradeGate::default();
        assert_eq!(take(&g, r, SEC, 100), 10);
        // An idle minute leaves a full bucket, not 6000 tokens.
        assert_eq!(g.tokens(r, 61 * SEC), 10);
        assert_eq!(take(&g, r, 61 * SEC, 100), 10);
        // Half refilled after half of burst/rate.
        assert_eq!(take(&g, r, 61 * SEC + 50 * MS, 100), 5);
    }

    #[test]
    fn racing_takers_never_exceed_the_bucket() {
        let r = Rate::per_sec(1000);
        let g = std::sync::Arc::new(UpgradeGate::default());
        let now = 3 * SEC;
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || take(&g, r, now, 1000))
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 100);
        assert_eq!(g.admitted(), 100);
    }

    #[test]
    fn a_new_rate_applies_to_the_bucket_as_it_is() {
        let g = UpgradeGate::default();
        assert_eq!(take(&g, Rate::per_sec(100), SEC, 100), 10);
        // A reload raising the rate does not refill the bucket at once...
        assert!(!g.has_room(Rate::per_sec(100), SEC));
        // ...and the higher rate's bucket is full once its burst time has passed.
        assert_eq!(take(&g, Rate::per_sec(1000), SEC, 1000), 0);
        assert_eq!(take(&g, Rate::per_sec(1000), SEC + 100 * MS, 1000), 100);
    }

    #[test]
    fn clock_at_its_limits_does_not_overflow() {
        let r = Rate::per_sec(u32::MAX);
        let g = UpgradeGate::default();
        assert!(g.try_take(r, u64::MAX));
        assert!(g.tokens(r, u64::MAX) <= r.burst());
        assert_eq!(g.admitted(), 1);
        assert!(UpgradeGate::default().has_room(Rate::per_sec(1), 0));
    }
}
