//! "random" balance: power of two choices. Draw two distinct eligible
//! backends at random, each with probability proportional to its weight, and
//! send the request to the one with the lower `load() / weight`.
//!
//! Pure random placement lets a server drift far above the others by bad luck;
//! comparing just two random candidates removes almost all of that drift
//! (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing")
//! while needing no shared order between pickers, so many latch processes can
//! front the same servers without herding onto the same "least loaded" one.
//! When the two are equally loaded the first draw wins, so idle servers are
//! chosen exactly in proportion to their weights.
//!
//! The randomness is a splitmix64 sequence on one atomic counter, seeded per
//! instance from std's random hasher state: placement here is meant to differ
//! between processes, unlike [`hash64`](super::hash64).

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Balancer, Request};
use crate::backend::Backend;

/// splitmix64's increment (2^64 / golden ratio).
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

#[derive(Debug)]
pub struct PowerOfTwo {
    /// splitmix64 state; each draw adds [`GAMMA`] and mixes the result, so
    /// concurrent pickers each get a distinct number without a lock.
    state: AtomicU64,
}

impl Default for PowerOfTwo {
    fn default() -> Self {
        PowerOfTwo::new()
    }
}

impl PowerOfTwo {
    /// Seeded from the process's random hasher keys.
    pub fn new() -> Self {
        PowerOfTwo::with_seed(RandomState::new().hash_one(0x006c_6174_6368_u64))
    }

    /// A reproducible sequence, for tests and benchmarks.
    pub fn with_seed(seed: u64) -> Self {
        PowerOfTwo {
            state: AtomicU64::new(seed),
        }
    }

    fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift; the bias is at most
    /// n / 2^64, far below anything measurable here.
    fn below(&self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A weighted draw among the eligible backends other than `skip`, given
    /// their total weight (> 0).
    fn draw(
        &self,
        backends: &[Arc<Backend>],
        eligible: &dyn Fn(usize) -> bool,
        skip: Option<usize>,
        total: u64,
    ) -> Option<usize> {
        let mut r = self.below(total);
        for (i, b) in backends.iter().enumerate() {
            if Some(i) == skip || !eligible(i) {
                continue;
            }
            let w = b.effective_weight();
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        None
    }
}

impl Balancer for PowerOfTwo {
    fn pick(
        &self,
        backends: &[Arc<Backend>],
        _req: &Request<'_>,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut count = 0usize;
        let mut total = 0u64;
        let mut only = None;
        for (i, b) in backends.iter().enumerate() {
            if eligible(i) {
                count += 1;
                total += b.effective_weight();
                only = Some(i);
            }
        }
        if count <= 1 || total == 0 {
            // No choice to make (or, with zero weights, nothing to weigh by).
            return only;
        }
        // Slow start may move a weight between reads: fall back rather than fail.
        let a = self.draw(backends, eligible, None, total).or(only)?;
        let rest = total.saturating_sub(backends[a].effective_weight());
        if rest == 0 {
            return Some(a);
        }
        let Some(b) = self.draw(backends, eligible, Some(a), rest) else {
            return Some(a);
        };
        let (la, wa) = (
            backends[a].balance_load() as u128,
            u128::from(backends[a].effective_weight()),
        );
        let (lb, wb) = (
            backends[b].balance_load() as u128,
            u128::from(backends[b].effective_weight()),
        );
        // lb/wb < la/wa, cross-multiplied; equal loads keep the first draw.
        Some(if lb * wa < la * wb { b } else { a })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Active;
    use crate::balance::test_util::{pool, req};

    #[test]
    fn idle_backends_share_by_weight() {
        let b = pool(&[1, 1, 2]);
        let p2 = PowerOfTwo::with_seed(7);
        let mut n = [0u32; 3];
        for _ in 0..20_000 {
            n[p2.pick(&b, &req(), &|_| true).unwrap()] += 1;
        }
        for (got, want) in n.iter().zip([5_000.0, 5_000.0, 10_000.0]) {
            let err = (f64::from(*got) - want).abs() / want;
            assert!(err < 0.10, "counts {n:?}");
        }
    }

    #[test]
    fn strongly_prefers_the_lightly_loaded() {
        let b = pool(&[1, 1, 1, 1]);
        let _g: Vec<Active> = (0..3)
            .flat_map(|i| (0..50).map(move |_| i))
            .map(|i| b[i].start_request())
            .collect();
        // 50/50/50/0: server 3 loses only when it is not drawn at all,
        // which for two distinct draws of four is half the time.
        let p2 = PowerOfTwo::with_seed(1);
        let hits = (0..4_000)
            .filter(|_| p2.pick(&b, &req(), &|_| true) == Some(3))
            .count();
        assert!((1_800..=2_200).contains(&hits), "hits {hits}");
        // With two servers, the idle one is always one of the two and wins.
        let two = &b[2..];
        for _ in 0..100 {
            assert_eq!(p2.pick(two, &req(), &|_| true), Some(1));
        }
    }

    #[test]
    fn never_picks_ineligible() {
        let b = pool(&[5, 1, 1, 3]);
        let p2 = PowerOfTwo::new();
        let mut n = [0u32; 4];
        for _ in 0..2_000 {
            n[p2.pick(&b, &req(), &|i| i % 2 == 1).unwrap()] += 1;
        }
        assert_eq!((n[0], n[2]), (0, 0));
        assert!(n[1] > 0 && n[3] > 0, "counts {n:?}");
        // One eligible: it, whatever its load.
        let _g = b[2].start_request();
        assert_eq!(p2.pick(&b, &req(), &|i| i == 2), Some(2));
        assert_eq!(p2.pick(&b, &req(), &|_| false), None);
        assert_eq!(p2.pick(&[], &req(), &|_| true), None);
    }
}
