//! Smooth weighted round robin, as nginx's `ngx_http_upstream_round_robin`:
//! each pick adds every eligible server's weight to its running score, takes
//! the highest score, and subtracts the total from the winner. Weights 5/1/1
//! give `a a b a c a a` rather than `a a a a a b c`.

use std::sync::Arc;
use std::sync::Mutex;

use super::{Balancer, Request};
use crate::backend::Backend;

#[derive(Debug)]
pub struct SmoothRoundRobin {
    current: Mutex<Vec<i64>>,
}

impl SmoothRoundRobin {
    pub fn new(n: usize) -> Self {
        SmoothRoundRobin {
            current: Mutex::new(vec![0; n]),
        }
    }
}

impl Balancer for SmoothRoundRobin {
    fn pick(
        &self,
        backends: &[Arc<Backend>],
        _req: &Request<'_>,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        // A poisoned lock only means another pick panicked mid-update; the
        // scores are still numbers, so keep going.
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.resize(backends.len(), 0);
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, b) in backends.iter().enumerate() {
            if !eligible(i) {
                continue;
            }
            // Thousandths of the weight, so slow start can ramp it smoothly.
            let w = b.effective_weight() as i64;
            current[i] += w;
            total += w;
            if best.is_none_or(|j| current[i] > current[j]) {
                best = Some(i);
            }
        }
        if let Some(i) = best {
            current[i] -= total;
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_util::{pool, req};

    #[test]
    fn smooth_sequence_matches_nginx() {
        let b = pool(&[5, 1, 1]);
        let rr = SmoothRoundRobin::new(3);
        let seq: Vec<usize> = (0..7)
            .map(|_| rr.pick(&b, &req(), &|_| true).unwrap())
            .collect();
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn proportional_and_skips_ineligible() {
        let b = pool(&[1, 2, 3]);
        let rr = SmoothRoundRobin::new(3);
        let mut n = [0; 3];
        for _ in 0..600 {
            n[rr.pick(&b, &req(), &|_| true).unwrap()] += 1;
        }
        assert_eq!(n, [100, 200, 300]);
        let mut n = [0; 3];
        for _ in 0..300 {
            n[rr.pick(&b, &req(), &|i| i != 2).unwrap()] += 1;
        }
        assert_eq!(n, [100, 200, 0]);
        assert_eq!(rr.pick(&b, &req(), &|_| false), None);
    }
}
