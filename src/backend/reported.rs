//! The load a server reports about itself (polled by `load/`), and how long
//! that report counts. Read on every placement, so it is two atomics and no
//! lock: the report (load and max packed in one word) and the moment it
//! stops being fresh. A stale or missing report reads as none, and placement
//! falls back to latch's own count.

use std::sync::atomic::{AtomicU64, Ordering};

/// The last report and until when it holds.
#[derive(Debug, Default)]
pub struct Reported {
    /// `max + 1` in the high half (0 = no max), `load` in the low half.
    word: AtomicU64,
    /// [`super::now_ms`] after which the report is stale; 0 = none yet.
    until: AtomicU64,
}

/// One report as the server gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Sessions the server carries, from every balancer and client.
    pub load: u32,
    /// The most it will take, when it says.
    pub max: Option<u32>,
}

impl Reported {
    /// Stores `report`, fresh until `until_ms`.
    pub fn set(&self, report: Report, until_ms: u64) {
        // One less than u32::MAX fits beside the "no max" zero; a max that
        // large is no limit in practice.
        let max = report.max.map_or(0, |m| u64::from(m.min(u32::MAX - 1)) + 1);
        self.word
            .store(max << 32 | u64::from(report.load), Ordering::Relaxed);
        self.until.store(until_ms, Ordering::Release);
    }

    /// Forgets the report (a failed poll).
    pub fn clear(&self) {
        self.until.store(0, Ordering::Release);
    }

    /// The report, if one is fresh at `now_ms`.
    pub fn get(&self, now_ms: u64) -> Option<Report> {
        let until = self.until.load(Ordering::Acquire);
        if until == 0 || now_ms > until {
            return None;
        }
        let w = self.word.load(Ordering::Relaxed);
        Some(Report {
            load: w as u32,
            max: match w >> 32 {
                0 => None,
                m => Some((m - 1) as u32),
            },
        })
    }

    /// Whether any report was ever stored and not cleared (the clock is
    /// read only then, so servers without polling pay nothing).
    pub fn maybe(&self) -> bool {
        self.until.load(Ordering::Relaxed) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_holds_until_it_is_stale_or_cleared() {
        let r = Reported::default();
        assert_eq!(r.get(1), None);
        let rep = Report {
            load: 100,
            max: Some(0),
        };
        r.set(rep, 50);
        assert_eq!(r.get(50), Some(rep));
        assert_eq!(r.get(51), None, "stale");
        r.set(
            Report {
                load: u32::MAX,
                max: Some(u32::MAX),
            },
            60,
        );
        assert_eq!(
            r.get(10).map(|r| (r.load, r.max)),
            Some((u32::MAX, Some(u32::MAX - 1)))
        );
        r.set(Report { load: 3, max: None }, 60);
        assert_eq!(r.get(10).map(|r| r.max), Some(None));
        r.clear();
        assert_eq!(r.get(10), None);
        assert!(!r.maybe());
    }
}
