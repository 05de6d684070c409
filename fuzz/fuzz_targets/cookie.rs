//! The sticky cookie codec: decoding arbitrary values never panics, every
//! encoded value decodes to its backend, and no value with one byte changed
//! verifies.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use latch::sticky::CookieCodec;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Decoded as is.
    value: String,
    /// Encoded, decoded, then changed at one byte.
    backend_id: String,
    now: u64,
    /// Seconds later than `now` that the value is decoded (past `MAX_AGE`
    /// sometimes, so expiry is checked too).
    later: u16,
    at: usize,
    to: u8,
    with_max_age: bool,
}

/// The second codec's `max_age`, in seconds.
const MAX_AGE: u64 = 3600;

fn codecs() -> &'static [CookieCodec; 2] {
    static C: OnceLock<[CookieCodec; 2]> = OnceLock::new();
    C.get_or_init(|| {
        let secret = b"fuzzing-secret-of-32-bytes-long!";
        [
            CookieCodec::new(secret, "LATCH", None).expect("codec"),
            CookieCodec::new(secret, "LATCH", Some(Duration::from_secs(MAX_AGE))).expect("codec"),
        ]
    })
}

fuzz_target!(|input: Input| {
    let codec = &codecs()[usize::from(input.with_max_age)];
    let now = input.now;
    let _ = codec.decode(&input.value, now);

    let value = codec.encode(&input.backend_id, now);
    let later = now.saturating_add(u64::from(input.later));
    // With a max_age, a value older than it is refused; otherwise any age.
    let fresh = !input.with_max_age || later - now <= MAX_AGE;
    let want = fresh.then(|| CookieCodec::token(&input.backend_id));
    assert_eq!(
        codec.decode(&value, later),
        want,
        "{value} issued at {now}, decoded at {later}"
    );

    let mut changed = value.clone().into_bytes();
    let at = input.at % changed.len();
    if changed[at] == input.to {
        return;
    }
    changed[at] = input.to;
    if let Ok(changed) = std::str::from_utf8(&changed) {
        assert_eq!(
            codec.decode(changed, now),
            None,
            "{changed} (from {value}) verified"
        );
    }
});
