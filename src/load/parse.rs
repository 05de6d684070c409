//! Reading a load answer: a bare number of sessions, or a JSON object
//! `{"load": N, "max": M}` (`max` optional). Pure, and total: anything else
//! is an error naming what was wrong, never a panic.

use serde::Deserialize;

use crate::backend::LoadReport;
use crate::config::LoadFormat;

#[derive(Deserialize)]
struct Json {
    load: u32,
    #[serde(default)]
    max: Option<u32>,
}

/// The report in `body`, read as `format` says.
pub fn parse(body: &[u8], format: LoadFormat) -> Result<LoadReport, String> {
    let text = std::str::from_utf8(body).map_err(|_| "answer is not UTF-8".to_string())?;
    let text = text.trim();
    let number = || {
        text.parse::<u32>()
            .map(|load| LoadReport { load, max: None })
            .map_err(|_| format!("answer {:?} is not a whole number", short(text)))
    };
    let json = || {
        serde_json::from_str::<Json>(text)
            .map(|j| LoadReport {
                load: j.load,
                max: j.max,
            })
            .map_err(|e| {
                format!(
                    "answer {:?} is not {{\"load\": N, \"max\": M}}: {e}",
                    short(text)
                )
            })
    };
    match format {
        LoadFormat::Number => number(),
        LoadFormat::Json => json(),
        LoadFormat::Auto if text.starts_with('{') => json(),
        LoadFormat::Auto => number(),
    }
}

fn short(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str, f: LoadFormat) -> (u32, Option<u32>) {
        let r = parse(body.as_bytes(), f).unwrap_or_else(|e| panic!("{body:?}: {e}"));
        (r.load, r.max)
    }

    #[test]
    fn numbers_and_objects() {
        assert_eq!(ok("42\n", LoadFormat::Auto), (42, None));
        assert_eq!(ok(" 0 ", LoadFormat::Number), (0, None));
        assert_eq!(
            ok(r#"{"load": 7, "max": 10}"#, LoadFormat::Auto),
            (7, Some(10))
        );
        assert_eq!(ok(r#"{"load":7,"extra":"x"}"#, LoadFormat::Json), (7, None));
    }

    #[test]
    fn anything_else_is_an_error() {
        for (body, f) in [
            ("", LoadFormat::Auto),
            ("-1", LoadFormat::Auto),
            ("1.5", LoadFormat::Number),
            ("99999999999", LoadFormat::Auto),
            ("{\"load\": -3}", LoadFormat::Auto),
            ("{\"max\": 3}", LoadFormat::Json),
            ("{\"load\": 1", LoadFormat::Json),
            ("{\"load\": 1}", LoadFormat::Number),
            ("12", LoadFormat::Json),
            ("\u{0}\u{ff}", LoadFormat::Auto),
        ] {
            assert!(
                parse(body.as_bytes(), f).is_err(),
                "{body:?} as {f:?} accepted"
            );
        }
        assert!(parse(&[0xff, 0xfe], LoadFormat::Auto).is_err());
    }
}
