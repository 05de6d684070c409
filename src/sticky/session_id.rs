//! Session-id stickiness: the session id itself names the backend.
//!
//! Clients that keep no cookies (native socket.io and SignalR clients,
//! Node.js, devices) still send their session id on every request, so
//! `sticky.mode = "session_id"` puts the pin there. In the handshake
//! response the id the backend chose, `ID`, becomes `ID.V` where `V` is a
//! signed sticky cookie value ([`CookieCodec`]: backend token, issue time,
//! HMAC). Later requests carry `ID.V` in their query (`sid` for Engine.IO,
//! `id` for SignalR); latch verifies `V`, pins the request to that backend
//! and gives the backend back `ID`. Any instance with the same secret can do
//! this: nothing is stored. A value whose tag does not verify is left as it
//! is and the request is placed normally.
//!
//! Handshakes rewritten:
//! - Engine.IO v4 (`?EIO=4&transport=polling`, no `sid`): the open packet
//!   `0{"sid":...}`, the first packet of the payload (packets are separated
//!   by `\x1e`).
//! - SignalR negotiate (`…/negotiate`): `connectionToken` (negotiate
//!   version 1), or `connectionId` when there is no token (version 0).
//!
//! Everything here is pure and bounded; malformed input gives `None`.

use serde_json::{Map, Value};

use super::{BackendToken, CookieCodec};

/// Largest handshake body latch reads whole to rewrite.
pub const MAX_HANDSHAKE: u64 = 64 * 1024;
/// Engine.IO's packet separator in a polling payload.
const RECORD_SEP: u8 = 0x1e;

/// A handshake whose response names the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Engine.IO v4 polling open.
    EngineIo,
    /// SignalR `/negotiate`.
    SignalR,
}

/// Which handshake (if any) a request with this path and query is.
pub fn handshake(path: &str, query: Option<&str>) -> Option<Handshake> {
    let q = query.unwrap_or("");
    let param = |n: &str| query_param(q, n);
    if path.ends_with("/negotiate") && param("id").is_none() {
        return Some(Handshake::SignalR);
    }
    if param("EIO") == Some("4") && param("transport") == Some("polling") && param("sid").is_none()
    {
        return Some(Handshake::EngineIo);
    }
    None
}

/// `id` with a signed tag naming `backend_id`.
pub fn tag(codec: &CookieCodec, id: &str, backend_id: &str, now: u64) -> String {
    format!("{id}.{}", codec.encode(backend_id, now))
}

/// The original id and the backend token of a tagged id, if its tag verifies.
pub fn untag<'a>(
    codec: &CookieCodec,
    tagged: &'a str,
    now: u64,
) -> Option<(&'a str, BackendToken)> {
    // The tag is the last four dot-separated fields; the id may hold dots.
    let mut cut = tagged.len();
    for _ in 0..4 {
        cut = tagged[..cut].rfind('.')?;
    }
    let (id, value) = (&tagged[..cut], &tagged[cut + 1..]);
    if id.is_empty() {
        return None;
    }
    codec.decode(value, now).map(|t| (id, t))
}

/// The query with every tagged session parameter (`sid`, `id`) restored to
/// the original id, and the backend token of the first one; `None` when no
/// parameter carries a valid tag (the query is then left as it is).
pub fn restore_query(codec: &CookieCodec, query: &str, now: u64) -> Option<(String, BackendToken)> {
    let mut token = None;
    let mut out = String::with_capacity(query.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let untagged = pair.split_once('=').and_then(|(k, v)| {
            if k != "sid" && k != "id" {
                return None;
            }
            untag(codec, v, now).map(|(id, t)| (k, id, t))
        });
        match untagged {
            Some((k, id, t)) => {
                token.get_or_insert(t);
                out.push_str(k);
                out.push('=');
                out.push_str(id);
            }
            None => out.push_str(pair),
        }
    }
    token.map(|t| (out, t))
}

/// The handshake body with its session id tagged for `backend_id`; `None`
/// when it is not a handshake answer latch understands (it is then sent on
/// unchanged).
pub fn rewrite_body(
    kind: Handshake,
    body: &[u8],
    codec: &CookieCodec,
    backend_id: &str,
    now: u64,
) -> Option<Vec<u8>> {
    if body.len() as u64 > MAX_HANDSHAKE {
        return None;
    }
    match kind {
        Handshake::EngineIo => {
            let end = body
                .iter()
                .position(|&b| b == RECORD_SEP)
                .unwrap_or(body.len());
            let (open, rest) = body.split_at(end);
            let json = open.strip_prefix(b"0")?;
            let mut obj: Map<String, Value> = serde_json::from_slice(json).ok()?;
            retag(&mut obj, "sid", codec, backend_id, now)?;
            let mut out = b"0".to_vec();
            out.extend(serde_json::to_vec(&obj).ok()?);
            out.extend_from_slice(rest);
            Some(out)
        }
        Handshake::SignalR => {
            let mut obj: Map<String, Value> = serde_json::from_slice(body).ok()?;
            let field = if obj.contains_key("connectionToken") {
                "connectionToken"
            } else {
                "connectionId"
            };
            retag(&mut obj, field, codec, backend_id, now)?;
            serde_json::to_vec(&obj).ok()
        }
    }
}

/// Tags the string `obj[field]`; `None` if it is missing, not a string or empty.
fn retag(
    obj: &mut Map<String, Value>,
    field: &str,
    codec: &CookieCodec,
    backend_id: &str,
    now: u64,
) -> Option<()> {
    let Some(Value::String(id)) = obj.get_mut(field) else {
        return None;
    };
    if id.is_empty() {
        return None;
    }
    *id = tag(codec, id, backend_id, now);
    Some(())
}

/// The raw value of query parameter `name`.
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn codec() -> CookieCodec {
        CookieCodec::new(b"0123456789abcdef", "LATCH", None).unwrap()
    }

    #[test]
    fn handshakes_are_recognised() {
        let eio = Some("EIO=4&transport=polling&t=abc");
        assert_eq!(handshake("/socket.io/", eio), Some(Handshake::EngineIo));
        assert_eq!(
            handshake("/socket.io/", Some("EIO=4&transport=polling&sid=x")),
            None
        );
        assert_eq!(
            handshake("/socket.io/", Some("EIO=3&transport=polling")),
            None
        );
        assert_eq!(handshake("/socket.io/", None), None);
        assert_eq!(
            handshake("/chat/negotiate", Some("negotiateVersion=1")),
            Some(Handshake::SignalR)
        );
        assert_eq!(handshake("/chat", Some("id=abc")), None);
    }

    #[test]
    fn engineio_open_packet_round_trip() {
        let c = codec();
        let body = b"0{\"sid\":\"lv_VI97HAXpY6yYWAAAC\",\"upgrades\":[\"websocket\"],\"pingInterval\":25000}\x1e40";
        let out = rewrite_body(Handshake::EngineIo, body, &c, "s1", NOW).unwrap();
        assert!(out.starts_with(b"0{"));
        assert!(out.ends_with(b"\x1e40"));
        let json: Value = serde_json::from_slice(&out[1..out.len() - 3]).unwrap();
        let sid = json["sid"].as_str().unwrap();
        assert_eq!(json["pingInterval"], 25000);
        let (id, t) = untag(&c, sid, NOW).unwrap();
        assert_eq!(id, "lv_VI97HAXpY6yYWAAAC");
        assert_eq!(t, CookieCodec::token("s1"));
        let q = format!("EIO=4&transport=polling&t=x&sid={sid}");
        let (restored, t2) = restore_query(&c, &q, NOW).unwrap();
        assert_eq!(
            restored,
            "EIO=4&transport=polling&t=x&sid=lv_VI97HAXpY6yYWAAAC"
        );
        assert_eq!(t2, t);
    }

    #[test]
    fn signalr_negotiate() {
        let c = codec();
        let body = br#"{"negotiateVersion":1,"connectionId":"c1","connectionToken":"tok.with.dots","availableTransports":[]}"#;
        let out = rewrite_body(Handshake::SignalR, body, &c, "s2", NOW).unwrap();
        let json: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["connectionId"], "c1");
        let tok = json["connectionToken"].as_str().unwrap();
        assert_eq!(
            untag(&c, tok, NOW),
            Some(("tok.with.dots", CookieCodec::token("s2")))
        );
        let v0 = br#"{"connectionId":"c9","availableTransports":[]}"#;
        let out = rewrite_body(Handshake::SignalR, v0, &c, "s2", NOW).unwrap();
        let json: Value = serde_json::from_slice(&out).unwrap();
        assert!(untag(&c, json["connectionId"].as_str().unwrap(), NOW).is_some());
    }

    #[test]
    fn garbage_and_forgeries_are_left_alone() {
        let c = codec();
        for body in [
            &b""[..],
            b"0",
            b"0{",
            b"4hello",
            b"0{\"sid\":5}",
            b"0{\"sid\":\"\"}",
        ] {
            assert_eq!(rewrite_body(Handshake::EngineIo, body, &c, "s", NOW), None);
        }
        assert_eq!(rewrite_body(Handshake::SignalR, b"[1]", &c, "s", NOW), None);
        let big = vec![b' '; MAX_HANDSHAKE as usize + 1];
        assert_eq!(rewrite_body(Handshake::SignalR, &big, &c, "s", NOW), None);
        let good = tag(&c, "abc", "s1", NOW);
        let mut forged = good.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(untag(&c, &forged, NOW), None);
        assert_eq!(restore_query(&c, &format!("sid={forged}"), NOW), None);
        let other = CookieCodec::new(b"another-secret-0123", "LATCH", None).unwrap();
        assert_eq!(untag(&other, &good, NOW), None);
        assert_eq!(untag(&c, &good[3..], NOW), None, "no id before the tag");
        assert_eq!(untag(&c, "a.b.c", NOW), None);
        assert_eq!(restore_query(&c, "other=1&&=&id", NOW), None);
    }
}
