//! The rise/fall state machine of one backend, as HAProxy's `rise` and `fall`:
//! a backend that is up goes down after `fall` failed probes in a row, and one
//! that is down comes back after `rise` good probes in a row. One flaky probe
//! therefore changes nothing. Pure: no I/O and no clock, so the checker task
//! owns the timing and this file owns only the counting.

/// Whether a backend takes traffic, as far as health checks know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
}

/// A change of [`Health`], reported once, on the probe that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Health,
    pub to: Health,
}

/// Counts consecutive probe results and decides when the state flips.
#[derive(Debug, Clone)]
pub struct RiseFall {
    /// The state now in force.
    state: Health,
    /// Good probes in a row while down; reset by any failure.
    successes: u32,
    /// Failed probes in a row while up; reset by any success.
    failures: u32,
    /// Good probes in a row that bring a down backend up (at least 1).
    rise: u32,
    /// Failed probes in a row that take an up backend down (at least 1).
    fall: u32,
}

impl RiseFall {
    /// A machine in state `start`. A `rise` or `fall` of 0 means 1: a single
    /// probe is the least that can change anything.
    pub fn new(start: Health, rise: u32, fall: u32) -> Self {
        RiseFall {
            state: start,
            successes: 0,
            failures: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    pub fn state(&self) -> Health {
        self.state
    }

    /// Feed one probe result; `Some(transition)` exactly when the state flips.
    pub fn record(&mut self, ok: bool) -> Option<Transition> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
        }
        let to = match self.state {
            Health::Up if self.failures >= self.fall => Health::Down,
            Health::Down if self.successes >= self.rise => Health::Up,
            _ => return None,
        };
        let from = self.state;
        self.state = to;
        // A fresh streak starts in the new state: flipping back needs the full
        // count again.
        self.successes = 0;
        self.failures = 0;
        Some(Transition { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOWN: Option<Transition> = Some(Transition {
        from: Health::Up,
        to: Health::Down,
    });
    const UP: Option<Transition> = Some(Transition {
        from: Health::Down,
        to: Health::Up,
    });

    fn feed(m: &mut RiseFall, results: &[bool]) -> Vec<Option<Transition>> {
        results.iter().map(|&ok| m.record(ok)).collect()
    }

    #[test]
    fn flips_exactly_at_rise_and_fall() {
        let mut m = RiseFall::new(Health::Up, 2, 3);
        assert_eq!(feed(&mut m, &[false, false]), [None, None]);
        assert_eq!(m.state(), Health::Up);
        assert_eq!(m.record(false), DOWN);
        assert_eq!(m.state(), Health::Down);
        assert_eq!(m.record(true), None);
        assert_eq!(m.state(), Health::Down);
        assert_eq!(m.record(true), UP);
        assert_eq!(m.state(), Health::Up);
    }

    #[test]
    fn a_success_resets_the_failure_streak() {
        let mut m = RiseFall::new(Health::Up, 2, 3);
        let got = feed(&mut m, &[false, false, true, false, false]);
        assert!(got.iter().all(Option::is_none));
        assert_eq!(m.state(), Health::Up);
        assert_eq!(m.record(false), DOWN);
    }

    #[test]
    fn a_failure_resets_the_success_streak() {
        let mut m = RiseFall::new(Health::Down, 3, 1);
        let got = feed(&mut m, &[true, true, false, true, true]);
        assert!(got.iter().all(Option::is_none));
        assert_eq!(m.record(true), UP);
    }

    #[test]
    fn alternating_results_never_flip() {
        for start in [Health::Up, Health::Down] {
            let mut m = RiseFall::new(start, 2, 2);
            for i in 0..100 {
                assert_eq!(m.record(i % 2 == 0), None);
            }
            assert_eq!(m.state(), start);
        }
    }

    #[test]
    fn starting_down_needs_rise_successes() {
        let mut m = RiseFall::new(Health::Down, 4, 1);
        assert_eq!(feed(&mut m, &[true, true, true]), [None, None, None]);
        assert_eq!(m.record(true), UP);
    }

    #[test]
    fn each_transition_is_reported_once() {
        let mut m = RiseFall::new(Health::Up, 2, 3);
        let got = feed(&mut m, &[false; 10]);
        assert_eq!(got.iter().filter(|t| t.is_some()).count(), 1);
        assert_eq!(got[2], DOWN);
        let got = feed(&mut m, &[true; 10]);
        assert_eq!(got.iter().filter(|t| t.is_some()).count(), 1);
        assert_eq!(got[1], UP);
    }

    #[test]
    fn transitions_alternate_direction() {
        let mut m = RiseFall::new(Health::Up, 1, 1);
        let mut last: Option<Transition> = None;
        for i in 0..50 {
            if let Some(t) = m.record(i % 3 != 0) {
                assert_ne!(Some(t), last, "same transition twice in a row");
                assert_eq!(t.from, last.map_or(Health::Up, |l| l.to));
                last = Some(t);
            }
        }
        assert!(last.is_some());
    }

    #[test]
    fn zero_rise_and_fall_mean_one() {
        let mut m = RiseFall::new(Health::Up, 0, 0);
        assert_eq!(m.record(false), DOWN);
        assert_eq!(m.record(true), UP);
    }
}
