//! The one hash that placement by key depends on.
//!
//! Consistent hashing ([`Maglev`](super::Maglev)) only keeps a client on the
//! same server if every latch process — this one, its neighbour behind the
//! same DNS name, the one started after the next upgrade — maps a key to the
//! same number. So this is a hash we own, spelled out here: FNV-1a over the
//! bytes, started from a seed-dependent state, then murmur3's `fmix64`
//! finalizer, because FNV alone mixes its high input bits poorly and its low
//! output bits poorly. Never std's `DefaultHasher` (its algorithm is allowed
//! to change between Rust releases) and nothing seeded per process.
//!
//! **Stability contract:** the output of [`hash64`] for a given `(bytes,
//! seed)` is part of latch's stickiness behaviour and must never change
//! between releases. The golden values in the tests pin it; if one of them
//! fails, the change is the bug.
//!
//! It is not a cryptographic hash: a client that controls the key can pick
//! which server it lands on, which is fine for load placement.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A stable, well-mixed 64-bit hash of `bytes`; different `seed`s give
/// unrelated functions. Its output must never change (see the module doc).
pub fn hash64(bytes: &[u8], seed: u64) -> u64 {
    // fmix64(0) == 0, so seed 0 starts from plain FNV-1a's offset basis.
    fmix64(fnv1a(bytes, FNV_OFFSET ^ fmix64(seed)))
}

/// FNV-1a, 64-bit, from the given starting state.
fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// MurmurHash3's 64-bit finalizer: every input bit affects every output bit.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_core_matches_the_published_vectors() {
        // From the FNV reference test suite (fnv-1a, 64-bit).
        assert_eq!(fnv1a(b"", FNV_OFFSET), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a", FNV_OFFSET), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar", FNV_OFFSET), 0x8594_4171_f739_67e8);
        assert_eq!(fmix64(0), 0);
    }

    /// Golden values: these must never change (the stickiness contract).
    #[test]
    fn golden_values() {
        let cases: [(&[u8], u64, u64); 6] = [
            (b"", 0, GOLDEN[0]),
            (b"a", 0, GOLDEN[1]),
            (b"127.0.0.1:9001", 0, GOLDEN[2]),
            (b"127.0.0.1:9001", 1, GOLDEN[3]),
            (&[10, 0, 0, 1], 0x9e37_79b9_7f4a_7c15, GOLDEN[4]),
            (b"user-42", u64::MAX, GOLDEN[5]),
        ];
        for (bytes, seed, want) in cases {
            assert_eq!(hash64(bytes, seed), want, "{bytes:?} seed {seed:#x}");
        }
    }

    const GOLDEN: [u64; 6] = [
        0xefd0_1f60_ba99_2926,
        0x82a2_a958_a9be_ce5b,
        0x33ac_4f5a_f5b0_6ee4,
        0x19f5_1a47_be1a_17aa,
        0xa593_55ff_4806_9d51,
        0xa463_9814_6fc3_9276,
    ];

    #[test]
    fn seeds_give_different_functions() {
        assert_ne!(hash64(b"x", 0), hash64(b"x", 1));
        assert_ne!(hash64(b"", 0), hash64(b"", 1));
        // A trailing zero byte is still a different key.
        assert_ne!(hash64(b"ab", 0), hash64(b"ab\0", 0));
    }

    #[test]
    fn flipping_one_input_bit_flips_about_half_the_output() {
        let mut flips = 0u64;
        let mut trials = 0u64;
        for k in 0u64..500 {
            // Keys of varied length and content: 1..=16 bytes.
            let len = 1 + (k % 16) as usize;
            let mut key: Vec<u8> = (0..len)
                .map(|j| (k.wrapping_mul(31).wrapping_add(j as u64 * 7)) as u8)
                .collect();
            let base = hash64(&key, k);
            for bit in 0..len * 8 {
                key[bit / 8] ^= 1 << (bit % 8);
                flips += u64::from((hash64(&key, k) ^ base).count_ones());
                trials += 1;
                key[bit / 8] ^= 1 << (bit % 8);
            }
            // The seed too.
            let bit = k % 64;
            flips += u64::from((hash64(&key, k ^ (1 << bit)) ^ base).count_ones());
            trials += 1;
        }
        let mean = flips as f64 / trials as f64;
        assert!((24.0..=40.0).contains(&mean), "mean {mean}");
        // Not just on average: each position should be near 32, too.
        let worst = (0..64)
            .map(|bit| {
                let n = (0u64..2000)
                    .filter(|&k| {
                        let a = hash64(&k.to_le_bytes(), 0);
                        let b = hash64(&(k ^ 1).to_le_bytes(), 0);
                        (a ^ b) >> bit & 1 == 1
                    })
                    .count();
                (n as f64 / 2000.0 - 0.5).abs()
            })
            .fold(0.0, f64::max);
        assert!(worst < 0.06, "an output bit is biased by {worst}");
    }
}
