//! A cheap monotonic clock for deadlines and ages counted in seconds.
//!
//! `Instant::now()` reads `CLOCK_MONOTONIC` through the vDSO: about 24 ns
//! here (the TSC read and its scaling), and a keep-alive request used to
//! make nine such reads of its own. `CLOCK_MONOTONIC_COARSE` is the same
//! clock as of the kernel's last tick (1–4 ms behind): about 5 ns. nginx and
//! HAProxy likewise read the time once per event-loop turn and let every
//! timeout use that reading.
//!
//! [`coarse`] is an `Instant` of the same clock, off by at most a tick: right
//! for an idle connection's age, a keep-alive or header deadline, never for
//! a duration that is reported (the access log's and metrics' request time
//! read the precise clock). A deadline built on it must not be checked
//! against it right after its timer fired (the coarse reading can still be
//! behind the deadline): check with `Instant::now()` there.

use std::time::Instant;

/// Now, to within a clock tick.
#[cfg(target_os = "linux")]
pub fn coarse() -> Instant {
    use std::sync::LazyLock;
    use std::time::Duration;
    // A precise instant and the coarse clock's reading at the same moment:
    // later readings are placed relative to it.
    static BASE: LazyLock<(Instant, Duration)> = LazyLock::new(|| (Instant::now(), raw()));
    fn raw() -> Duration {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
        Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_nsec).unwrap_or(0),
        )
    }
    let (at, then) = *BASE;
    at + raw().saturating_sub(then)
}

/// Now (no coarse clock on this system).
#[cfg(not(target_os = "linux"))]
pub fn coarse() -> Instant {
    Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Within a few ticks of the precise clock, and never going back.
    #[test]
    fn coarse_follows_the_precise_clock() {
        let mut last = coarse();
        for _ in 0..1000 {
            let before = Instant::now();
            let c = coarse();
            let after = Instant::now();
            assert!(c >= last, "the coarse clock went back");
            assert!(
                c + Duration::from_millis(20) >= before,
                "{:?} behind",
                before - c
            );
            assert!(
                c <= after + Duration::from_millis(20),
                "{:?} ahead",
                c - after
            );
            last = c;
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            coarse() >= last + Duration::from_millis(20),
            "the coarse clock did not move"
        );
    }
}
