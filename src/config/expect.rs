//! `expect` of an HTTP health check: which statuses count as healthy. A
//! config type (parsed and shown here), read by the health checker.

use std::fmt;

use http::StatusCode;

/// One acceptable status: a class (`2xx`) or an exact code (`204`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The first digit: 2 for 2xx.
    Class(u8),
    Code(u16),
}

impl Expect {
    pub fn matches(self, status: StatusCode) -> bool {
        let code = status.as_u16();
        match self {
            Expect::Class(c) => code / 100 == u16::from(c),
            Expect::Code(c) => code == c,
        }
    }
}

impl std::str::FromStr for Expect {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected a status like 200 or a class like 2xx, got {s:?}");
        let b = s.trim().as_bytes();
        match b {
            [d @ b'1'..=b'5', x, y]
                if x.eq_ignore_ascii_case(&b'x') && y.eq_ignore_ascii_case(&b'x') =>
            {
                Ok(Expect::Class(d - b'0'))
            }
            [b'1'..=b'5', b'0'..=b'9', b'0'..=b'9'] => {
                let code = b.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
                Ok(Expect::Code(code))
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Class(c) => write!(f, "{c}xx"),
            Expect::Code(c) => write!(f, "{c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expect_parses_classes_and_codes() {
        assert_eq!("2xx".parse(), Ok(Expect::Class(2)));
        assert_eq!("3XX".parse(), Ok(Expect::Class(3)));
        assert_eq!("5xX".parse(), Ok(Expect::Class(5)));
        assert_eq!(" 204 ".parse(), Ok(Expect::Code(204)));
        assert_eq!("599".parse(), Ok(Expect::Code(599)));
        for bad in ["", "2x", "6xx", "0xx", "20", "2000", "600", "abc", "x2x"] {
            let e = bad.parse::<Expect>().unwrap_err();
            assert!(e.contains("like 2xx"), "{bad:?}: {e}");
        }
        assert_eq!(Expect::Class(2).to_string(), "2xx");
        assert_eq!(Expect::Code(204).to_string(), "204");
    }
}
