//! Weighted least connections: the eligible backend with the lowest
//! `load() / weight` takes the request.
//!
//! Load counts requests in flight *and* open tunnels, which is what matters
//! for WebSockets: a server holding 500 long-lived sockets is busy even if no
//! request is in flight right now. Ratios are compared by cross-multiplying in
//! `u128` (`a.load * b.weight < b.load * a.weight`), so there are no floats and
//! no overflow.
//!
//! Ties are common (every idle server has load 0). Always taking the first
//! would pile every quiet moment onto server 0, so each pick starts its scan at
//! a rotating offset and keeps the first *strictly* lower candidate: among
//! equals, the one nearest after the offset wins, and the offset moves on.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Balancer, Request};
use crate::backend::Backend;

#[derive(Debug, Default)]
pub struct LeastConn {
    /// Where the next scan starts (taken modulo the number of backends);
    /// advances by one per pick so that ties rotate.
    next: AtomicUsize,
}

impl LeastConn {
    pub fn new() -> Self {
        LeastConn::default()
    }
}

impl Balancer for LeastConn {
    fn pick(
        &self,
        backends: &[Arc<Backend>],
        _req: &Request<'_>,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        // (index, load, weight) of the best so far.
        let mut best: Option<(usize, u128, u128)> = None;
        for step in 0..n {
            let i = (start + step) % n;
            if !eligible(i) {
                continue;
            }
            let load = backends[i].balance_load() as u128;
            let weight = u128::from(backends[i].effective_weight());
            // load/weight < best_load/best_weight, without dividing.
            if best.is_none_or(|(_, bl, bw)| load * bw < bl * weight) {
                best = Some((i, load, weight));
            }
        }
        best.map(|(i, _, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Active;
    use crate::balance::test_util::{pool, req};

    fn loads(b: &[Arc<Backend>]) -> Vec<usize> {
        b.iter().map(|b| b.load()).collect()
    }

    #[test]
    fn picks_the_least_loaded() {
        let b = pool(&[1, 1, 1]);
        let lc = LeastConn::new();
        let _g: Vec<Active> = [0, 0, 0, 1, 2, 2]
            .iter()
            .map(|&i| b[i].start_request())
            .collect();
        // Loads 3/1/2; whatever the rotation, server 1 wins.
        for _ in 0..5 {
            assert_eq!(lc.pick(&b, &req(), &|_| true), Some(1));
        }
        // Tunnels count as load too.
        let _t = b[1].start_request().into_tunnel();
        let _t2 = b[1].start_request().into_tunnel();
        assert_eq!(loads(&b), [3, 3, 2]);
        assert_eq!(lc.pick(&b, &req(), &|_| true), Some(2));
    }

    #[test]
    fn long_lived_connections_fill_by_weight() {
        let b = pool(&[1, 1, 2]);
        let lc = LeastConn::new();
        let mut held: Vec<Vec<Active>> = vec![Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..60 {
            let i = lc.pick(&b, &req(), &|_| true).unwrap();
            held[i].push(b[i].start_request());
        }
        // Deterministic (the rotation starts at 0), so exact.
        assert_eq!(loads(&b), [15, 15, 30]);
        // Twenty of server 2's connections close: it is now far below its
        // share, so it takes every one of the next twenty.
        let keep = held[2].len() - 20;
        held[2].truncate(keep);
        for _ in 0..20 {
            let i = lc.pick(&b, &req(), &|_| true).unwrap();
            assert_eq!(i, 2, "loads {:?}", loads(&b));
            held[i].push(b[i].start_request());
        }
    }

    #[test]
    fn ties_rotate() {
        let b = pool(&[3, 3, 3, 3]);
        let lc = LeastConn::new();
        let mut seen: Vec<usize> = (0..4)
            .map(|_| lc.pick(&b, &req(), &|_| true).unwrap())
            .collect();
        seen.sort();
        assert_eq!(seen, [0, 1, 2, 3]);
    }

    #[test]
    fn weight_scales_load() {
        // 4/1 vs 9/3: 4 > 3, so the heavier-loaded but heavier-weighted wins.
        let b = pool(&[1, 3]);
        let _g: Vec<Active> = (0..4)
            .map(|_| b[0].start_request())
            .chain((0..9).map(|_| b[1].start_request()))
            .collect();
        let lc = LeastConn::new();
        for _ in 0..3 {
            assert_eq!(lc.pick(&b, &req(), &|_| true), Some(1));
        }
    }

    #[test]
    fn skips_ineligible_and_none_when_none_eligible() {
        let b = pool(&[1, 1, 1]);
        let _g = b[2].start_request();
        let lc = LeastConn::new();
        // 0 and 1 are idle but excluded; busy 2 is the only choice.
        for _ in 0..6 {
            assert_eq!(lc.pick(&b, &req(), &|i| i == 2), Some(2));
            assert_ne!(lc.pick(&b, &req(), &|i| i != 0), Some(0));
        }
        assert_eq!(lc.pick(&b, &req(), &|_| false), None);
        assert_eq!(lc.pick(&[], &req(), &|_| true), None);
    }
}
