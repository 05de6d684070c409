//! The config loader on arbitrary text: `Config::parse` returns a config or
//! an error that names a place in the text, and never panics.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A folder that does not exist: relative certificate paths fail to
    // read instead of touching real files.
    let origin = Path::new("/nonexistent/latch-fuzz/latch.toml");
    match latch::Config::parse(text, origin) {
        Ok(config) => {
            // What a reload or `latch check` would do next.
            let _ = format!("{config:?}");
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            // A line of 0 means "no place" (file errors); otherwise the
            // place is inside the text.
            assert!(
                e.line <= text.lines().count() + 1,
                "line {} of {msg}",
                e.line
            );
        }
    }
});
