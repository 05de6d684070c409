//! Config for the dispatcher (issue 11 §3) and for load pulled from the
//! servers (§4): the `[upstream.NAME.load]` table, a server's `advertise`
//! list, and a route's `dispatch` target. Stage one (serde) and stage two
//! (checks that name the key) live together here so `file.rs` and `mod.rs`
//! only gain a line each.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::file::Dur;
use super::{ConfigError, Reporter};

/// `[upstream.NAME.load]`: poll every server for the load it carries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSection {
    /// Asked with `GET`; answers a number or `{"load": N, "max": M}`.
    #[serde(default = "default_path")]
    pub path: Spanned<String>,
    #[serde(default = "default_interval")]
    pub interval: Spanned<Dur>,
    /// For connect, request and answer together.
    #[serde(default = "default_timeout")]
    pub timeout: Spanned<Dur>,
    #[serde(default)]
    pub format: LoadFormat,
}

fn default_path() -> Spanned<String> {
    Spanned::new(0..0, "/load".to_string())
}
fn default_interval() -> Spanned<Dur> {
    Spanned::new(0..0, Dur(Duration::from_secs(1)))
}
fn default_timeout() -> Spanned<Dur> {
    Spanned::new(0..0, Dur(Duration::from_secs(1)))
}

/// What a load answer looks like.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadFormat {
    /// A bare number, or else a JSON object.
    #[default]
    Auto,
    /// A bare number of sessions.
    Number,
    /// `{"load": N}` with an optional `"max": M`.
    Json,
}

/// `[upstream.NAME.load]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub format: LoadFormat,
}

impl LoadConfig {
    /// How long a report counts after it arrived: three intervals (at least
    /// one interval plus the timeout), so one slow poll does not drop it,
    /// and a server that stops answering falls back to latch's own count.
    pub fn fresh_for(&self) -> Duration {
        (self.interval * 3).max(self.interval + self.timeout)
    }
}

pub(super) fn load(
    r: &impl Reporter,
    key: &str,
    s: &LoadSection,
) -> Result<LoadConfig, ConfigError> {
    let path = s.path.get_ref();
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(r.report(
            s.path.span(),
            &format!("{key}.path"),
            "must start with `/` and hold no spaces or control characters".into(),
        ));
    }
    for (name, d) in [("interval", &s.interval), ("timeout", &s.timeout)] {
        if d.get_ref().0.is_zero() {
            return Err(r.report(
                d.span(),
                &format!("{key}.{name}"),
                "must be more than 0".into(),
            ));
        }
    }
    Ok(LoadConfig {
        path: path.clone(),
        interval: s.interval.get_ref().0,
        timeout: s.timeout.get_ref().0,
        format: s.format,
    })
}

/// A server's `advertise = ["host:port", ...]`: each entry checked, the text
/// kept as written (clients resolve the host, not latch).
pub(super) fn advertise(
    r: &impl Reporter,
    key: &str,
    list: &[Spanned<String>],
) -> Result<Vec<String>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, a)| {
            split_host_port(a.get_ref())
                .map(|_| a.get_ref().clone())
                .map_err(|why| r.report(a.span(), &format!("{key}.advertise[{i}]"), why))
        })
        .collect()
}

/// `host:port` or `[v6]:port` → (host without brackets, port).
pub fn split_host_port(s: &str) -> Result<(&str, u16), String> {
    let bad = || format!("`{s}` is not \"host:port\" (an IPv6 host goes in brackets)");
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
            h.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
            (h, p)
        }
        None => {
            let (h, p) = s.rsplit_once(':').ok_or_else(bad)?;
            if h.contains(':') {
                return Err(bad());
            }
            (h, p)
        }
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    let port: u16 = p_nonzero(port).ok_or_else(bad)?;
    if !host_ok {
        return Err(bad());
    }
    Ok((host, port))
}

fn p_nonzero(p: &str) -> Option<u16> {
    p.parse::<u16>().ok().filter(|&p| p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("chat1.example.com:443"),
            Ok(("chat1.example.com", 443))
        );
        assert_eq!(
            split_host_port("203.0.113.7:8000"),
            Ok(("203.0.113.7", 8000))
        );
        assert_eq!(split_host_port("[2001:db8::1]:9"), Ok(("2001:db8::1", 9)));
        for bad in [
            "",
            "host",
            "host:",
            ":80",
            "host:0",
            "host:70000",
            "a b:1",
            "::1:80",
            "[zz]:1",
        ] {
            assert!(split_host_port(bad).is_err(), "{bad:?} accepted");
        }
    }
}
