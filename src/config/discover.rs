//! Validation of `discover` and `resolver` on an upstream: servers taken from
//! DNS (A, AAAA or SRV records) and re-resolved at the records' TTL, clamped
//! between `min_interval` and `max_interval`. Nothing is resolved here, so
//! `latch check` validates a config without contacting any DNS server.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::file::{Dur, UpstreamSection};
use super::{ConfigError, MAX_WEIGHT, Reporter};

/// `discover = { name, port, type, ... }` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverSection {
    /// The name to resolve: `chat.internal` (A/AAAA) or `_chat._tcp.internal` (SRV).
    pub name: Spanned<String>,
    /// Port of every address found (A/AAAA); SRV records carry their own.
    pub port: Option<Spanned<u16>>,
    #[serde(rename = "type", default)]
    pub kind: RecordKind,
    /// Shortest time between two resolutions, whatever the TTL.
    #[serde(default = "default_min")]
    pub min_interval: Spanned<Dur>,
    /// Longest time between two resolutions, whatever the TTL.
    #[serde(default = "default_max")]
    pub max_interval: Spanned<Dur>,
    /// Time one resolution may take before it counts as failed.
    #[serde(default = "default_timeout")]
    pub timeout: Spanned<Dur>,
    /// Weight of every address found (A/AAAA); SRV records carry their own.
    #[serde(default = "default_weight")]
    pub weight: Spanned<u32>,
    /// `max_conns` of every server found; unset = no limit.
    pub max_conns: Option<Spanned<usize>>,
    /// `max_upgrades_per_sec` of every server found; unset = no cap.
    pub max_upgrades_per_sec: Option<Spanned<u32>>,
}

fn default_min() -> Spanned<Dur> {
    Spanned::new(0..0, Dur(Duration::from_secs(1)))
}
fn default_max() -> Spanned<Dur> {
    Spanned::new(0..0, Dur(Duration::from_secs(30)))
}
fn default_timeout() -> Spanned<Dur> {
    Spanned::new(0..0, Dur(Duration::from_secs(2)))
}
fn default_weight() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

/// Which records name the servers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum RecordKind {
    #[default]
    A,
    #[serde(rename = "AAAA")]
    Aaaa,
    #[serde(rename = "SRV")]
    Srv,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::A => "A",
            RecordKind::Aaaa => "AAAA",
            RecordKind::Srv => "SRV",
        }
    }
}

/// Servers of an upstream taken from DNS, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverConfig {
    pub name: String,
    pub kind: RecordKind,
    /// Set exactly for A and AAAA.
    pub port: Option<u16>,
    /// The DNS server to ask; `None` = the system's (`/etc/resolv.conf`).
    pub resolver: Option<SocketAddr>,
    pub min_interval: Duration,
    pub max_interval: Duration,
    pub timeout: Duration,
    pub weight: u32,
    pub max_conns: Option<usize>,
    pub max_upgrades_per_sec: Option<u32>,
}

/// The upstream's `discover` and `resolver`, checked; `None` without `discover`.
pub(super) fn discover(
    r: &dyn Reporter,
    key: &str,
    u: &UpstreamSection,
) -> Result<Option<DiscoverConfig>, ConfigError> {
    let Some(d) = &u.discover else {
        if let Some(res) = &u.resolver {
            return Err(r.report(
                res.span(),
                &format!("{key}.resolver"),
                "only used with `discover`".into(),
            ));
        }
        return Ok(None);
    };
    let dkey = format!("{key}.discover");
    let d = d.get_ref();
    let name = d.name.get_ref().trim();
    if name.is_empty() || name.len() > 253 || name.contains(char::is_whitespace) {
        return Err(r.report(
            d.name.span(),
            &format!("{dkey}.name"),
            format!("`{}` is not a DNS name", d.name.get_ref()),
        ));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(r.report(
            d.name.span(),
            &format!("{dkey}.name"),
            "is an address, not a name; list it in `servers` instead".into(),
        ));
    }
    let port = match (d.kind, &d.port) {
        (RecordKind::Srv, Some(p)) => {
            return Err(r.report(
                p.span(),
                &format!("{dkey}.port"),
                "SRV records carry their own port; leave `port` out".into(),
            ));
        }
        (RecordKind::Srv, None) => None,
        (_, None) => {
            return Err(r.report(
                d.name.span(),
                &format!("{dkey}.port"),
                format!("type = \"{}\" needs `port`", d.kind.as_str()),
            ));
        }
        (_, Some(p)) if *p.get_ref() == 0 => {
            return Err(r.report(
                p.span(),
                &format!("{dkey}.port"),
                "must be between 1 and 65535".into(),
            ));
        }
        (_, Some(p)) => Some(*p.get_ref()),
    };
    let min = d.min_interval.get_ref().0;
    let max = d.max_interval.get_ref().0;
    if min.is_zero() {
        return Err(r.report(
            d.min_interval.span(),
            &format!("{dkey}.min_interval"),
            "must be more than 0".into(),
        ));
    }
    if max < min {
        return Err(r.report(
            d.max_interval.span(),
            &format!("{dkey}.max_interval"),
            format!("is less than min_interval ({min:?})"),
        ));
    }
    let timeout = d.timeout.get_ref().0;
    if timeout.is_zero() {
        return Err(r.report(
            d.timeout.span(),
            &format!("{dkey}.timeout"),
            "must be more than 0".into(),
        ));
    }
    let weight = *d.weight.get_ref();
    if weight == 0 || weight > MAX_WEIGHT {
        return Err(r.report(
            d.weight.span(),
            &format!("{dkey}.weight"),
            format!("weight must be between 1 and {MAX_WEIGHT}"),
        ));
    }
    let max_conns = super::at_least_one(r, &dkey, "max_conns", &d.max_conns)?;
    let max_upgrades_per_sec =
        super::at_least_one(r, &dkey, "max_upgrades_per_sec", &d.max_upgrades_per_sec)?;
    let resolver = match &u.resolver {
        None => None,
        Some(res) => Some(
            resolver_addr(res.get_ref())
                .map_err(|why| r.report(res.span(), &format!("{key}.resolver"), why))?,
        ),
    };
    Ok(Some(DiscoverConfig {
        name: name.to_string(),
        kind: d.kind,
        port,
        resolver,
        min_interval: min,
        max_interval: max,
        timeout,
        weight,
        max_conns,
        max_upgrades_per_sec,
    }))
}

/// `"127.0.0.1:53"`, `"[::1]:5353"` or a bare address (port 53).
fn resolver_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| {
            format!("invalid resolver `{text}`: expected an address such as \"127.0.0.1:53\"")
        })
}
