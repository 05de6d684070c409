//! Path normalisation, which decides routing: never panics on any path (a
//! request path as hyper gives it: starting with `/`); a normalised path
//! starts with `/`, has no dot segments or repeated slashes, and
//! normalising it again changes nothing.
#![no_main]

use latch::path::normalise;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|rest: &str| {
    let path = &format!("/{rest}");
    let Ok(once) = normalise(path) else {
        return;
    };
    assert!(once.starts_with('/'), "{path:?} -> {once:?}");
    assert!(!once.contains("//"), "{path:?} -> {once:?}");
    for seg in once.split('/') {
        assert!(seg != "." && seg != "..", "{path:?} -> {once:?}");
    }
    let twice = normalise(&once).expect("a normal path normalises");
    assert_eq!(once, twice, "not idempotent for {path:?}");
});
