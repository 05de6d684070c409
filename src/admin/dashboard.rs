//! `GET /`: the dashboard, one self-contained page (`dashboard.html`, inline
//! CSS and JS, nothing fetched from elsewhere). The tables are rendered here
//! into the page, so it shows the pool even with scripts off; the page's
//! script then re-renders them from `/status` every 2 s with the same markup.
//!
//! Everything that comes from the config or from the network (upstream names,
//! server ids, check failure reasons) is HTML-escaped.

use std::fmt::Write;

use super::status::{ServerView, Status};

const TEMPLATE: &str = include_str!("dashboard.html");

/// The page for `status`.
pub fn page(status: &Status) -> String {
    let mut tables = String::new();
    for up in &status.upstreams {
        let mut servers: Vec<&ServerView> = up.servers.iter().collect();
        let draining = status.draining.iter().filter(|d| d.upstream == up.name);
        servers.extend(draining.map(|d| &d.server));
        section(&mut tables, &up.name, up.balance, &servers, status.now_unix);
    }
    // Draining servers of upstreams that a reload removed altogether.
    let mut gone: Vec<&str> = status
        .draining
        .iter()
        .map(|d| d.upstream.as_str())
        .filter(|name| !status.upstreams.iter().any(|u| u.name == *name))
        .collect();
    gone.sort_unstable();
    gone.dedup();
    for name in gone {
        let servers: Vec<&ServerView> = status
            .draining
            .iter()
            .filter(|d| d.upstream == name)
            .map(|d| &d.server)
            .collect();
        section(&mut tables, name, "removed", &servers, status.now_unix);
    }
    TEMPLATE
        .replacen("{{UPTIME}}", &age(status.uptime_secs), 1)
        .replacen("{{UPSTREAMS}}", &tables, 1)
}

fn section(out: &mut String, name: &str, balance: &str, servers: &[&ServerView], now: u64) {
    let max_active = servers.iter().map(|s| s.active).max().unwrap_or(0);
    let max_tunnels = servers.iter().map(|s| s.tunnels).max().unwrap_or(0);
    let _ = write!(
        out,
        "<section class=\"upstream\" data-upstream=\"{name}\"><h2>{name} <small>{balance}</small></h2>\
         <table><thead><tr><th>Server</th><th>State</th><th>Weight</th><th>Active</th>\
         <th>Tunnels</th><th>Total</th><th>Last check</th><th>Since change</th><th>Passive</th>\
         </tr></thead><tbody>",
        name = esc(name),
        balance = esc(balance),
    );
    for s in servers {
        row(out, s, now, max_active, max_tunnels);
    }
    out.push_str("</tbody></table></section>\n");
}

fn row(out: &mut String, s: &ServerView, now: u64, max_active: usize, max_tunnels: usize) {
    let addr = esc(&s.addr);
    let _ = write!(
        out,
        "<tr data-server=\"{addr}\"><td class=\"server\">{addr}"
    );
    if s.id != s.addr {
        let _ = write!(out, " <small>{}</small>", esc(&s.id));
    }
    if s.backup {
        out.push_str(" <span class=\"tag\">backup</span>");
    }
    if let Some(name) = s.origin.strip_prefix("dns:") {
        let _ = write!(
            out,
            " <span class=\"tag\" title=\"{}\">dns</span>",
            esc(name)
        );
    }
    let _ = write!(
        out,
        "</td><td class=\"state\"><span class=\"pill s-{st}\">{st}</span></td><td class=\"weight\">{w}",
        st = s.state,
        w = s.weight,
    );
    if s.weight_permille < 1000 {
        let _ = write!(out, " <small>{}%</small>", s.weight_permille / 10);
    }
    out.push_str("</td>");
    bar(out, "active", s.active, s.max_conns, max_active);
    bar(out, "tunnels", s.tunnels, s.max_conns, max_tunnels);
    let _ = write!(
        out,
        "<td class=\"total\">{}</td><td class=\"check\">",
        s.total
    );
    match &s.last_check {
        None => out.push('—'),
        Some(c) => {
            let (class, mark) = if c.ok { ("ok", "✓") } else { ("fail", "✗") };
            let _ = write!(out, "<span class=\"{class}\">{mark}</span> ");
            if !c.reason.is_empty() {
                let _ = write!(out, "{} ", esc(&c.reason));
            }
            let _ = write!(
                out,
                "<small>{} ago</small>",
                age(now.saturating_sub(c.at_unix))
            );
        }
    }
    out.push_str("</td><td class=\"since\">");
    match s.last_transition_unix {
        None => out.push('—'),
        Some(t) => out.push_str(&age(now.saturating_sub(t))),
    }
    let _ = write!(
        out,
        "</td><td class=\"passive\">{} / {}</td></tr>",
        s.passive_fails, s.passive_outs
    );
}

/// A cell with `n` and a bar filled to `n / limit` (`max_conns`), or to
/// `n / most` (the busiest server of the upstream) when there is no limit.
fn bar(out: &mut String, class: &str, n: usize, limit: Option<usize>, most: usize) {
    let of = limit.unwrap_or(most);
    let pct = n.saturating_mul(100).checked_div(of).unwrap_or(0).min(100);
    let _ = write!(
        out,
        "<td class=\"{class}\"><span class=\"bar\"><i style=\"width:{pct}%\"></i></span> {n}"
    );
    if let Some(limit) = limit {
        let _ = write!(out, " <small>/ {limit}</small>");
    }
    out.push_str("</td>");
}

/// "42s", "3m 4s", "5h 6m", "7d 8h".
pub fn age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// Text made safe for HTML content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(61), "1m 1s");
        assert_eq!(age(3 * 3600 + 120), "3h 2m");
        assert_eq!(age(2 * 86400 + 3600), "2d 1h");
    }
}
