//! What `latch check` prints after "ok": one screen saying what the config
//! will do — listeners and their routes, upstreams with their servers,
//! balance, stickiness, checks and DNS discovery — so an operator sees a
//! typo'd upstream or a forgotten server before traffic does.

use std::fmt::Write;

use super::{Balance, CheckKind, Config, Sticky, UpstreamConfig};

/// The summary of `config`, one line per listener, route, upstream and server.
pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    for l in &config.listeners {
        let mut traits = Vec::new();
        match &l.tls {
            Some(t) if !t.sni.is_empty() => {
                traits.push(format!("TLS, {} SNI certificates", t.sni.len()))
            }
            Some(_) => traits.push("TLS".to_string()),
            None => {}
        }
        if let Some(m) = l.max_connections {
            traits.push(format!("max {m} connections"));
        }
        if let Some(m) = l.max_connections_per_client {
            traits.push(format!("{m} per client"));
        }
        let traits = if traits.is_empty() {
            String::new()
        } else {
            format!(" ({})", traits.join(", "))
        };
        let _ = writeln!(out, "listener {}{traits}", l.bind);
        for r in &l.routes {
            let host = r.host.as_deref().unwrap_or("*");
            let kind = if r.dispatch.is_some() {
                "dispatch "
            } else {
                ""
            };
            let _ = writeln!(out, "  {host} {} -> {kind}{}", r.path_prefix, r.upstream);
        }
    }
    for (name, up) in &config.upstreams {
        upstream(&mut out, config, name, up);
    }
    if let Some(a) = &config.admin {
        let token = if a.token.is_some() {
            "token required"
        } else {
            "no token"
        };
        let _ = writeln!(out, "admin {} ({token})", a.bind);
    }
    out
}

fn upstream(out: &mut String, config: &Config, name: &str, up: &UpstreamConfig) {
    let routed = config
        .listeners
        .iter()
        .any(|l| l.routes.iter().any(|r| r.upstream == name));
    let mut traits = vec![balance(up.balance).to_string()];
    traits.push(match &up.sticky {
        Sticky::None => "no stickiness".to_string(),
        Sticky::Cookie(c) => format!("sticky cookie {}", c.name),
        Sticky::IpHash => "sticky by ip hash".to_string(),
        Sticky::SessionId(c) => format!("sticky by session id and cookie {}", c.name),
    });
    if let Some(c) = &up.check {
        traits.push(format!("{} check every {:?}", check(c.kind), c.interval));
    }
    if let Some(s) = up.slow_start {
        traits.push(format!("slow start {s:?}"));
    }
    let unused = if routed {
        ""
    } else {
        "  <- no listener routes here"
    };
    let _ = writeln!(out, "upstream {name}: {}{unused}", traits.join(", "));
    for s in &up.servers {
        let mut line = format!("  {} {}", s.id, s.addr);
        if s.id == s.addr.to_string() {
            line = format!("  {}", s.addr);
        }
        let _ = write!(line, " weight {}", s.weight);
        if let Some(m) = s.max_conns {
            let _ = write!(line, " max_conns {m}");
        }
        if let Some(r) = s.max_upgrades_per_sec {
            let _ = write!(line, " max_upgrades_per_sec {r}");
        }
        if s.backup {
            line.push_str(" backup");
        }
        let _ = writeln!(out, "{line}");
    }
    if let Some(d) = &up.discover {
        let port = d.port.map_or(String::new(), |p| format!(" port {p}"));
        let via = d
            .resolver
            .map_or_else(|| "the system's resolver".to_string(), |a| a.to_string());
        let mut each = String::new();
        if let Some(m) = d.max_conns {
            let _ = write!(each, " max_conns {m}");
        }
        if let Some(r) = d.max_upgrades_per_sec {
            let _ = write!(each, " max_upgrades_per_sec {r}");
        }
        if !each.is_empty() {
            each = format!(", each{each}");
        }
        let _ = writeln!(
            out,
            "  + servers from DNS: {} {}{port} via {via}, every TTL within {:?}..{:?}{each} (not resolved by check)",
            d.kind.as_str(),
            d.name,
            d.min_interval,
            d.max_interval
        );
    }
}

fn balance(b: Balance) -> &'static str {
    match b {
        Balance::RoundRobin => "round_robin",
        Balance::LeastConn => "least_conn",
        Balance::Random => "random",
        Balance::IpHash => "ip_hash",
        Balance::Hash => "hash",
    }
}

fn check(k: CheckKind) -> &'static str {
    match k {
        CheckKind::Tcp => "tcp",
        CheckKind::Http => "http",
        CheckKind::Ws => "ws",
        CheckKind::Tls => "tls",
    }
}
