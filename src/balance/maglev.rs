//! Consistent hashing for `ip_hash` and `hash` balance modes: Maglev
//! (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
//! Balancer", NSDI 2016).
//!
//! A key's hash indexes a lookup table of prime size M. Each backend has its
//! own permutation of the table slots (an offset and a skip, both from
//! [`hash64`] of its id), and backends take turns claiming their next free
//! slot until the table is full. The result spreads keys almost exactly
//! evenly, and when a backend comes or goes most slots keep their owner, so
//! most clients keep their server.
//!
//! Weights: a backend's j-th turn comes at virtual time j / weight, so
//! turns interleave evenly and each backend ends up with slots in proportion
//! to its weight, whatever the weights' size (a heap of backends keyed by the
//! time of their next turn, in integers).
//!
//! The table depends only on the backends' ids and weights, never on their
//! order in the config: it is built from the backends sorted by id and then
//! stores the caller's indices. Together with [`hash64`]'s stability contract
//! (and the seeds below, which are part of it), two latch processes with the
//! same servers send the same key to the same server.
//!
//! When the slot's backend is not eligible (down, full, already tried), the
//! lookup walks forward through the table to the first eligible one. That
//! neighbour is effectively random per key, so the failed backend's clients
//! spread over the others — and the same key always lands on the same one.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use super::{Balancer, Request, hash64};
use crate::backend::Backend;

/// Seeds of the two permutation hashes and of request keys. Changing any of
/// them reshuffles every client: they are part of the stickiness contract.
const SEED_OFFSET: u64 = 0x6d61_676c_6576_2d6f; // "maglev-o"
const SEED_SKIP: u64 = 0x6d61_676c_6576_2d73; // "maglev-s"
const SEED_KEY: u64 = 0x6d61_676c_6576_2d6b; // "maglev-k"

/// Table sizes: the smallest that is at least 100 × the number of backends
/// (the paper's bound for near-even shares). Few and far apart, so that
/// adding or removing a server rarely changes M (which would remap everyone).
const PRIMES: [u64; 4] = [5_003, 65_537, 655_373, 6_553_577];

/// Marks a slot not yet claimed while building.
const EMPTY: u32 = u32::MAX;

pub struct Maglev {
    /// Slot → index into the backend list the table was built from.
    table: Vec<u32>,
    /// How many backends that list had.
    backends: usize,
}

impl fmt::Debug for Maglev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the table: it has thousands of entries.
        f.debug_struct("Maglev")
            .field("size", &self.table.len())
            .field("backends", &self.backends)
            .finish()
    }
}

/// When turn number `turn` (1, 2, …) of a backend of weight `weight` comes, in
/// units of 2^-64. Exact enough: two different ratios of numbers this size
/// differ by far more than one unit, so the order is that of the fractions.
fn turn_time(turn: u64, weight: u64) -> u128 {
    (u128::from(turn) << 64) / u128::from(weight)
}

impl Maglev {
    pub fn new(backends: &[Arc<Backend>]) -> Maglev {
        // With no backends the heap starts empty and every lookup is None.
        let n = backends.len();
        let m = PRIMES
            .iter()
            .copied()
            .find(|&p| p >= 100 * n as u64)
            .unwrap_or(PRIMES[PRIMES.len() - 1]);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            let (x, y) = (&backends[a], &backends[b]);
            (&x.id, x.weight, a).cmp(&(&y.id, y.weight, b))
        });
        // (offset, skip, permutation steps taken) per backend, in id order.
        let mut perm: Vec<(u64, u64, u64)> = order
            .iter()
            .map(|&i| {
                let id = backends[i].id.as_bytes();
                (
                    hash64(id, SEED_OFFSET) % m,
                    hash64(id, SEED_SKIP) % (m - 1) + 1,
                    0,
                )
            })
            .collect();
        // Weight 0 never gets a turn, unless every weight is 0.
        let all_zero = backends.iter().all(|b| b.weight == 0);
        let weights: Vec<u64> = order
            .iter()
            .map(|&i| u64::from(if all_zero { 1 } else { backends[i].weight }))
            .collect();
        // Min-heap of (time of next turn, position in id order, turn number);
        // the position breaks ties the same way on every build.
        let mut heap: BinaryHeap<Reverse<(u128, usize, u64)>> = (0..n)
            .filter(|&pos| weights[pos] > 0)
            .map(|pos| Reverse((turn_time(1, weights[pos]), pos, 1)))
            .collect();
        let mut table = vec![EMPTY; m as usize];
        let mut filled = 0;
        while filled < table.len() {
            let Some(Reverse((_, pos, turn))) = heap.pop() else {
                break;
            };
            let (offset, skip, next) = &mut perm[pos];
            // A full permutation (M prime, 0 < skip < M), so a free slot is
            // always found while any remains.
            loop {
                let slot = ((*offset + *next * *skip) % m) as usize;
                *next += 1;
                if table[slot] == EMPTY {
                    table[slot] = order[pos] as u32;
                    filled += 1;
                    break;
                }
            }
            heap.push(Reverse((turn_time(turn + 1, weights[pos]), pos, turn + 1)));
        }
        Maglev { table, backends: n }
    }

    /// The backend for a key hash: its slot's owner if eligible, else the
    /// first eligible owner walking forward from that slot. `None` when no
    /// backend is eligible.
    pub fn lookup(&self, key_hash: u64, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        // Check once, so an all-ineligible pool costs n calls, not M.
        if !(0..self.backends).any(eligible) {
            return None;
        }
        let m = self.table.len();
        let start = (key_hash % m as u64) as usize;
        (0..m)
            .map(|step| self.table[(start + step) % m] as usize)
            .find(|&i| eligible(i))
    }

    /// The backend for an arbitrary key (header, cookie, query parameter,
    /// masked address…), hashed with [`hash64`] under this module's key seed.
    pub fn pick_key(&self, key: &[u8], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        self.lookup(hash64(key, SEED_KEY), eligible)
    }
}

impl Balancer for Maglev {
    fn pick(
        &self,
        backends: &[Arc<Backend>],
        req: &Request<'_>,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        // A table built for a longer list must not hand out stale indices.
        let eligible = &|i| i < backends.len() && eligible(i);
        // The client's octets; IPv4-mapped IPv6 (`::ffff:a.b.c.d`, as
        // dual-stack sockets report v4 clients) counts as plain v4.
        match req.client_ip.to_canonical() {
            IpAddr::V4(ip) => self.pick_key(&ip.octets(), eligible),
            IpAddr::V6(ip) => self.pick_key(&ip.octets(), eligible),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;

    fn pool(specs: &[(u16, u32)]) -> Vec<Arc<Backend>> {
        specs
            .iter()
            .map(|&(port, weight)| {
                let addr = format!("10.0.0.1:{port}").parse().unwrap();
                Arc::new(Backend::new(&ServerConfig::new(addr, weight)))
            })
            .collect()
    }

    fn equal(ports: std::ops::Range<u16>) -> Vec<Arc<Backend>> {
        pool(&ports.map(|p| (p, 1)).collect::<Vec<_>>())
    }

    const KEYS: u64 = 30_000;

    /// The backend id each of the test keys lands on.
    fn place(b: &[Arc<Backend>], eligible: &dyn Fn(usize) -> bool) -> Vec<String> {
        let mg = Maglev::new(b);
        (0..KEYS)
            .map(|k| mg.pick_key(&k.to_le_bytes(), eligible).unwrap())
            .map(|i| b[i].id.clone())
            .collect()
    }

    fn shares(placed: &[String], b: &[Arc<Backend>]) -> Vec<f64> {
        let n = |id: &String| placed.iter().filter(|p| *p == id).count();
        b.iter().map(|b| n(&b.id) as f64 / KEYS as f64).collect()
    }

    fn moved(a: &[String], b: &[String]) -> f64 {
        a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / KEYS as f64
    }

    #[test]
    fn same_key_same_backend_whatever_the_order() {
        let b = pool(&[(9001, 1), (9002, 3), (9003, 1), (9004, 2)]);
        let mut rev = b.clone();
        rev.reverse();
        let placed = place(&b, &|_| true);
        assert_eq!(placed, place(&b, &|_| true));
        assert_eq!(placed, place(&rev, &|_| true));
        // pick() is pick_key() of the client's octets; mapped v6 is v4.
        let mg = Maglev::new(&b);
        for ip in ["192.0.2.7", "::ffff:192.0.2.7"] {
            let req = Request {
                client_ip: ip.parse().unwrap(),
                path: "/",
            };
            let want = mg.pick_key(&[192, 0, 2, 7], &|_| true);
            assert_eq!(mg.pick(&b, &req, &|_| true), want);
        }
    }

    #[test]
    fn shares_follow_weights() {
        let b = equal(9001..9004);
        for s in shares(&place(&b, &|_| true), &b) {
            assert!((s - 1.0 / 3.0).abs() < 0.05 / 3.0, "share {s}");
        }
        let b = pool(&[(9001, 1), (9002, 2)]);
        let s = shares(&place(&b, &|_| true), &b);
        assert!((s[0] - 1.0 / 3.0).abs() < 0.05 / 3.0, "shares {s:?}");
        assert!((s[1] - 2.0 / 3.0).abs() < 0.10 / 3.0, "shares {s:?}");
    }

    #[test]
    fn membership_changes_move_few_keys() {
        let five = equal(9001..9006);
        let before = place(&five, &|_| true);
        // Remove 9003: its keys must move; others should mostly stay.
        let four: Vec<_> = five
            .iter()
            .filter(|b| b.id != "10.0.0.1:9003")
            .cloned()
            .collect();
        let after = place(&four, &|_| true);
        let lost = shares(&before, &five)[2];
        let extra = moved(&before, &after) - lost;
        println!("remove 1 of 5: share {lost:.4}, extra moved {extra:.4}");
        assert!(extra <= 0.05, "extra {extra}");
        let six = equal(9001..9007);
        let grown = moved(&before, &place(&six, &|_| true));
        println!("add a 6th: moved {grown:.4}");
        assert!((0.10..=0.25).contains(&grown), "moved {grown}");
    }

    #[test]
    fn ineligible_falls_through_consistently() {
        let b = equal(9001..9006);
        let before = place(&b, &|_| true);
        let down = |i: usize| i != 1;
        let after = place(&b, &down);
        assert_eq!(after, place(&b, &down));
        let mut spread = std::collections::HashSet::new();
        for (x, y) in before.iter().zip(&after) {
            if *x == b[1].id {
                assert_ne!(*y, b[1].id);
                spread.insert(y.clone());
            } else {
                assert_eq!(x, y);
            }
        }
        // Its clients spread over all the others, not onto one neighbour.
        assert_eq!(spread.len(), 4);
        let mg = Maglev::new(&b);
        assert_eq!(mg.pick_key(b"k", &|_| false), None);
        assert_eq!(mg.pick_key(b"k", &|i| i == 4), Some(4));
        assert_eq!(Maglev::new(&[]).pick_key(b"k", &|_| true), None);
        // A table built for 5 never returns an index past a shorter list.
        let req = Request {
            client_ip: "192.0.2.1".parse().unwrap(),
            path: "/",
        };
        assert_eq!(mg.pick(&b[..2], &req, &|_| true).map(|i| i < 2), Some(true));
    }
}
