//! Header rewriting between client and backend (RFC 9110 §7.6.1): hop-by-hop
//! headers stay on their hop, `X-Forwarded-*` say who the client was, and an
//! Upgrade request keeps exactly the two headers the upgrade needs.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::Cidr;

/// Always hop-by-hop, whether or not `Connection` names them. Names, not
/// strings: removing by `&str` would parse the string on every call.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The protocol(s) a request asks to upgrade to, when it is a real upgrade
/// request: an `Upgrade` header *and* `upgrade` among the `Connection` tokens.
pub fn upgrade_request(headers: &HeaderMap) -> Option<HeaderValue> {
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case("upgrade")));
    if wants {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Whether a 101's `Upgrade` names one of the protocols the client offered.
pub fn upgrade_matches(offered: &HeaderValue, answered: Option<&HeaderValue>) -> bool {
    let Some(answered) = answered else {
        return false;
    };
    let proto = |t: &str| {
        t.split('/')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    };
    tokens(answered).all(|a| tokens(offered).any(|o| proto(o) == proto(a)))
        && tokens(answered).next().is_some()
}

/// Removes hop-by-hop headers, including any that `Connection` lists.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none (or only `Connection`): one pass over the
    // names decides, with no hashing.
    if !headers.keys().any(|n| HOP_BY_HOP.contains(n)) {
        return;
    }
    // `Connection: keep-alive` / `close` / `upgrade` name no other header.
    let lists_others = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(tokens)
        .any(|t| {
            !["keep-alive", "close", "upgrade"]
                .iter()
                .any(|k| t.eq_ignore_ascii_case(k))
        });
    if lists_others {
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(tokens)
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    // Remove only what is there: each removal hashes.
    let mut present = [false; 8];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
}

/// Restores the two headers an upgrade needs after `strip_hop_by_hop`.
pub fn keep_upgrade(headers: &mut HeaderMap, proto: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, proto);
}

/// The client address as an `X-Forwarded-For` value; made once per
/// connection, then shared by its requests.
pub fn forwarded_for(peer: SocketAddr) -> HeaderValue {
    let ip = peer.ip().to_canonical().to_string();
    HeaderValue::from_str(&ip).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Sets `X-Forwarded-For/-Proto/-Host`. A peer inside `trusted` is another
/// proxy: its `X-Forwarded-For` is extended and its `-Proto`/`-Host` kept.
/// Anyone else's claims are replaced, so a client cannot forge its address.
/// `ip` is [`forwarded_for`] of `peer`.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    ip: &HeaderValue,
    tls: bool,
    trusted: &[Cidr],
) {
    let is_trusted = !trusted.is_empty() && trusted.iter().any(|c| c.contains(peer.ip()));
    let prior: Vec<&str> = if is_trusted {
        headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    } else {
        Vec::new()
    };
    let xff = if prior.is_empty() {
        ip.clone()
    } else {
        let ip = ip.to_str().unwrap_or("unknown");
        HeaderValue::from_str(&format!("{}, {ip}", prior.join(", ")))
            .unwrap_or_else(|_| ip_value(ip))
    };
    headers.insert(&X_FORWARDED_FOR, xff);
    if !(is_trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(
            &X_FORWARDED_PROTO,
            HeaderValue::from_static(if tls { "https" } else { "http" }),
        );
    }
    if !(is_trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match headers.get(header::HOST).cloned() {
            Some(host) => headers.insert(&X_FORWARDED_HOST, host),
            None => headers.remove(&X_FORWARDED_HOST),
        };
    }
}

fn ip_value(ip: &str) -> HeaderValue {
    HeaderValue::from_str(ip).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

fn tokens(v: &HeaderValue) -> impl Iterator<Item = &str> {
    v.to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn detects_upgrade_only_with_connection_token() {
        let h = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(upgrade_request(&h).unwrap(), "websocket");
        assert!(upgrade_request(&map(&[("upgrade", "websocket")])).is_none());
        assert!(upgrade_request(&map(&[("connection", "upgrade")])).is_none());
    }

    #[test]
    fn upgrade_answer_must_match_offer() {
        let offer = HeaderValue::from_static("websocket");
        assert!(upgrade_matches(
            &offer,
            Some(&HeaderValue::from_static("WebSocket"))
        ));
        assert!(!upgrade_matches(
            &offer,
            Some(&HeaderValue::from_static("h2c"))
        ));
        assert!(!upgrade_matches(&offer, None));
    }

    #[test]
    fn strips_listed_and_standard_hop_headers() {
        let mut h = map(&[
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn forwarded_headers_trust_only_configured_peers() {
        let peer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let forged = || {
            map(&[
                ("x-forwarded-for", "1.2.3.4"),
                ("x-forwarded-proto", "https"),
                ("host", "a.test"),
            ])
        };
        let ip = forwarded_for(peer);
        let mut h = forged();
        set_forwarded(&mut h, peer, &ip, false, &[]);
        assert_eq!(h["x-forwarded-for"], "10.0.0.5");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "a.test");
        let mut h = forged();
        set_forwarded(&mut h, peer, &ip, false, &["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.5");
        assert_eq!(h["x-forwarded-proto"], "https");
    }
}
