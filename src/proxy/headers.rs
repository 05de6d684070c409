//! Header rewriting between client and backend (RFC 9110 §7.6.1): hop-by-hop
//! headers stay on their hop, `X-Forwarded-*` say who the client was, an
//! Upgrade request keeps exactly the two headers the upgrade needs, and every
//! request carries an `X-Request-Id` (kept from a trusted proxy, otherwise
//! made here) that the backend and the access log both see.
//!
//! Everything here is pure (no I/O, no clock; only a new request id draws
//! randomness), so [`rewrite_request`] can be fuzzed on arbitrary heads.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::Cidr;

/// Always hop-by-hop, whether or not `Connection` names them. Names, not
/// strings: removing by `&str` would parse the string on every call.
use crate::http1::{HOP_BY_HOP, is_hop_by_hop};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest `X-Request-Id` kept from a trusted proxy.
const MAX_REQUEST_ID: usize = 128;

/// A request's id, as sent to the backend in `X-Request-Id` and written in
/// its access-log line. Travels in the request's extensions from where it is
/// decided (before routing, so failed requests have one too) to the rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestId {
    /// Made here: kept inline, so copying it for the log costs nothing.
    Generated([u8; 32]),
    /// Kept from a trusted proxy.
    Given(HeaderValue),
}

impl RequestId {
    /// A new random 128-bit id, as 32 lowercase hex digits (like nginx's
    /// `$request_id`). No allocation.
    pub fn generate() -> RequestId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut n = rand::random::<u128>();
        let mut out = [0u8; 32];
        for b in out.iter_mut().rev() {
            *b = HEX[(n & 0xf) as usize];
            n >>= 4;
        }
        RequestId::Generated(out)
    }

    pub fn as_str(&self) -> &str {
        match self {
            RequestId::Generated(b) => std::str::from_utf8(b).unwrap_or("-"),
            RequestId::Given(v) => v.to_str().unwrap_or("-"),
        }
    }

    /// The id as the header value sent to backends.
    pub fn header_value(&self) -> HeaderValue {
        match self {
            RequestId::Generated(b) => {
                HeaderValue::from_bytes(b).unwrap_or(HeaderValue::from_static("-"))
            }
            RequestId::Given(v) => v.clone(),
        }
    }
}

/// The id of a request from `peer`: a trusted proxy's `X-Request-Id` when it
/// sent exactly one that is a sane token (1 to 128 visible ASCII characters,
/// no quote or backslash, so it is safe in a log line), otherwise a new one.
/// Anyone else's id is replaced, as `X-Forwarded-For` is.
pub fn request_id(headers: &HeaderMap, peer: SocketAddr, trusted: &[Cidr]) -> RequestId {
    if trusted.iter().any(|c| c.contains(peer.ip())) {
        let mut given = headers.get_all(&X_REQUEST_ID).iter();
        if let (Some(v), None) = (given.next(), given.next()) {
            let b = v.as_bytes();
            let sane = (1..=MAX_REQUEST_ID).contains(&b.len())
                && b.iter()
                    .all(|&c| c.is_ascii_graphic() && c != b'"' && c != b'\\');
            if sane {
                return RequestId::Given(v.clone());
            }
        }
    }
    RequestId::generate()
}

/// The fields latch adds to a request toward its backends: written after the
/// request's own fields (which no longer carry them) when the head is
/// serialised, not inserted into the map (four inserts cost more than the
/// rest of the rewrite).
#[derive(Debug, Clone)]
pub struct Added {
    forwarded_for: HeaderValue,
    /// `None`: a trusted proxy's, kept in the map.
    forwarded_proto: Option<HeaderValue>,
    /// `None`: a trusted proxy's (kept in the map), or no Host to copy.
    forwarded_host: Option<HeaderValue>,
    request_id: HeaderValue,
}

impl Added {
    /// The fields, in the order they are sent.
    pub fn fields(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        [
            Some((&X_FORWARDED_FOR, &self.forwarded_for)),
            self.forwarded_proto
                .as_ref()
                .map(|v| (&X_FORWARDED_PROTO, v)),
            self.forwarded_host.as_ref().map(|v| (&X_FORWARDED_HOST, v)),
            Some((&X_REQUEST_ID, &self.request_id)),
        ]
        .into_iter()
        .flatten()
    }

    /// Puts the fields into `headers`: the request as its backend sees it
    /// (for tests and the fuzzer; the forwarder writes them on the wire).
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in self.fields() {
            headers.insert(name, value.clone());
        }
    }
}

/// Everything latch does to a request's headers before the first attempt, in
/// the order `forward.rs` does it: hop-by-hop headers removed (an upgrade
/// request keeps its `Connection: upgrade` and `Upgrade`), then the client's
/// `X-Forwarded-*` and `X-Request-Id` taken out and latch's own made for
/// `peer` (whose [`forwarded_for`] value is `ip`), to be sent after the
/// rest. Returns the protocol(s) an upgrade request offered, and what is
/// added. Pure: the forwarder calls it, and so does the fuzzer.
pub fn rewrite_request(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    ip: &HeaderValue,
    tls: bool,
    trusted: &[Cidr],
    id: &RequestId,
) -> (Option<HeaderValue>, Added) {
    // Many requests carry no hop-by-hop field at all (HTTP/1.1 clients need
    // no `Connection`): one pass over the names then says that there is
    // nothing to strip and that it is no upgrade, with no lookup.
    let upgrade = if headers.keys().any(is_hop_by_hop) {
        let upgrade = upgrade_request(headers);
        strip_hop_by_hop(headers);
        if let Some(proto) = &upgrade {
            keep_upgrade(headers, proto.clone());
        }
        upgrade
    } else {
        None
    };
    let added = forwarded(headers, peer, ip, tls, trusted, id);
    (upgrade, added)
}

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

/// Removes hop-by-hop headers, including any that `Connection` lists,
/// except `Host`, which is never hop-by-hop.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none (or only `Connection`): one pass over the
    // names decides, with no hashing.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    strip_connection_listed(headers);
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

/// Removes the headers that `Connection` names as hop-by-hop, except `Host`;
/// the standard hop-by-hop set stays (an HTTP/1.1 writer drops it: see
/// `http1::HOP_BY_HOP`). Cheap when `Connection` names only the usual
/// `keep-alive`, `close` or `upgrade`: one lookup, no removal.
pub fn strip_connection_listed(headers: &mut HeaderMap) {
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
        // Never Host, whatever `Connection` says (RFC 9112 §3.2): the
        // backend would get no Host, or its own address.
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(tokens)
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .filter(|n| n != header::HOST)
            .collect();
        for name in listed {
            headers.remove(name);
        }
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

/// Takes the client's `X-Forwarded-For/-Proto/-Host` and `X-Request-Id` out
/// of `headers` and makes latch's. A peer inside `trusted` is another proxy:
/// its `X-Forwarded-For` is extended and its `-Proto`/`-Host` kept. Anyone
/// else's claims are replaced, so a client cannot forge its address. `ip` is
/// [`forwarded_for`] of `peer`; `id` is the request's id.
pub fn forwarded(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    ip: &HeaderValue,
    tls: bool,
    trusted: &[Cidr],
    id: &RequestId,
) -> Added {
    let is_trusted = !trusted.is_empty() && trusted.iter().any(|c| c.contains(peer.ip()));
    // Which of them the client sent: one pass over the names, no hashing
    // (most requests carry none, and removing an absent field hashes too).
    let (mut sent_for, mut sent_proto, mut sent_host, mut sent_id) = (false, false, false, false);
    for name in headers.keys() {
        match name.as_str() {
            "x-forwarded-for" => sent_for = true,
            "x-forwarded-proto" => sent_proto = true,
            "x-forwarded-host" => sent_host = true,
            "x-request-id" => sent_id = true,
            _ => {}
        }
    }
    let forwarded_for = if is_trusted && sent_for {
        let prior: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let ip = ip.to_str().unwrap_or("unknown");
        match prior.is_empty() {
            true => ip_value(ip),
            false => HeaderValue::from_str(&format!("{}, {ip}", prior.join(", ")))
                .unwrap_or_else(|_| ip_value(ip)),
        }
    } else {
        ip.clone()
    };
    if sent_for {
        headers.remove(&X_FORWARDED_FOR);
    }
    let forwarded_proto = if is_trusted && sent_proto {
        None
    } else {
        if sent_proto {
            headers.remove(&X_FORWARDED_PROTO);
        }
        Some(HeaderValue::from_static(if tls { "https" } else { "http" }))
    };
    let forwarded_host = if is_trusted && sent_host {
        None
    } else {
        if sent_host {
            headers.remove(&X_FORWARDED_HOST);
        }
        headers.get(header::HOST).cloned()
    };
    if sent_id {
        headers.remove(&X_REQUEST_ID);
    }
    Added {
        forwarded_for,
        forwarded_proto,
        forwarded_host,
        request_id: id.header_value(),
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
    fn host_is_never_hop_by_hop() {
        let mut h = map(&[
            ("connection", "Host, x-a"),
            ("host", "a.test"),
            ("x-a", "1"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["host"], "a.test");
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
        let id = RequestId::generate();
        let mut h = forged();
        forwarded(&mut h, peer, &ip, false, &[], &id).apply(&mut h);
        assert_eq!(h["x-forwarded-for"], "10.0.0.5");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "a.test");
        let mut h = forged();
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let added = forwarded(&mut h, peer, &ip, false, &trusted, &id);
        // Sent after the request's own fields, which no longer have them.
        assert!(!h.contains_key("x-forwarded-for"));
        added.apply(&mut h);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.5");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h.get_all("x-forwarded-proto").iter().count(), 1);
    }

    fn is_generated(id: &RequestId) -> bool {
        let s = id.as_str();
        s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    }

    #[test]
    fn request_ids_are_new_unless_a_trusted_proxy_sent_one() {
        let peer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let given = map(&[("x-request-id", "lb1-abc.123")]);
        // Trusted: kept as is.
        assert_eq!(request_id(&given, peer, &trusted).as_str(), "lb1-abc.123");
        // Untrusted: replaced by a new one.
        let id = request_id(&given, peer, &[]);
        assert!(is_generated(&id), "{id:?}");
        // Absent: new, and two new ids differ.
        let a = request_id(&HeaderMap::new(), peer, &trusted);
        let b = request_id(&HeaderMap::new(), peer, &trusted);
        assert!(is_generated(&a) && is_generated(&b) && a != b);
    }

    #[test]
    fn a_trusted_proxys_id_must_be_one_sane_token() {
        let peer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let trusted: Vec<Cidr> = vec!["10.0.0.5".parse().unwrap()];
        let long = "a".repeat(MAX_REQUEST_ID + 1);
        for bad in [
            map(&[("x-request-id", "")]),
            map(&[("x-request-id", "has space")]),
            map(&[("x-request-id", "quo\"te")]),
            map(&[("x-request-id", "back\\slash")]),
            map(&[("x-request-id", &long)]),
            map(&[("x-request-id", "one"), ("x-request-id", "two")]),
        ] {
            let id = request_id(&bad, peer, &trusted);
            assert!(is_generated(&id), "{bad:?} gave {id:?}");
        }
        let max = "b".repeat(MAX_REQUEST_ID);
        let ok = map(&[("x-request-id", &max)]);
        assert_eq!(request_id(&ok, peer, &trusted).as_str(), max);
    }

    #[test]
    fn the_request_id_replaces_the_clients() {
        let peer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let mut h = map(&[("x-request-id", "forged"), ("x-request-id", "again")]);
        let id = RequestId::Given(HeaderValue::from_static("abc"));
        let added = forwarded(&mut h, peer, &forwarded_for(peer), false, &[], &id);
        assert!(!h.contains_key("x-request-id"));
        added.apply(&mut h);
        assert_eq!(h.get_all("x-request-id").iter().count(), 1);
        assert_eq!(h["x-request-id"], "abc");
    }

    #[test]
    fn rewrite_request_keeps_the_id_through_a_connection_listing() {
        // A client listing X-Request-Id in Connection cannot make the
        // backend lose the id.
        let peer: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let mut h = map(&[
            ("connection", "Upgrade, x-request-id"),
            ("upgrade", "websocket"),
            ("x-request-id", "mine"),
            ("host", "a.test"),
        ]);
        let id = RequestId::Given(HeaderValue::from_static("0123"));
        let (up, added) = rewrite_request(&mut h, peer, &forwarded_for(peer), true, &[], &id);
        added.apply(&mut h);
        assert_eq!(up.unwrap(), "websocket");
        assert_eq!(h["x-request-id"], "0123");
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["x-forwarded-for"], "192.0.2.1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }
}
