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
//! - Engine.IO v4 over WebSocket from the start (`?EIO=4&transport=websocket`,
//!   no `sid`: clients with `transports: ["websocket"]`): the same open
//!   packet, carried by the backend's first WebSocket frame
//!   ([`first_frame`], [`rewrite_open_frame`]).
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
    /// Engine.IO v4 WebSocket open (no polling first): the open packet is
    /// the backend's first frame after the `101`.
    EngineIoWebSocket,
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
    if param("EIO") != Some("4") || param("sid").is_some() {
        return None;
    }
    match param("transport") {
        Some("polling") => Some(Handshake::EngineIo),
        Some("websocket") => Some(Handshake::EngineIoWebSocket),
        _ => None,
    }
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
        // A WebSocket frame holds one packet; the split below finds none.
        Handshake::EngineIo | Handshake::EngineIoWebSocket => {
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

/// What the first bytes a backend sent after its `101` to an Engine.IO
/// WebSocket open are, as far as latch's rewriting goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstFrame {
    /// Too few bytes to tell: read until there are this many (always more
    /// than there are).
    More(usize),
    /// Not a frame latch rewrites: everything goes on untouched.
    Pass,
    /// A whole candidate frame: header bytes `..header`, payload
    /// `header..end`.
    Open { header: usize, end: usize },
}

/// WebSocket frame bits (RFC 6455 §5.2).
const FIN: u8 = 0x80;
const OP_TEXT: u8 = 0x1;
const MASKED: u8 = 0x80;

/// Classifies the start of the backend's byte stream. Only a final,
/// unmasked, uncompressed text frame (first byte `0x81`: no RSV bit, so not
/// permessage-deflate) of at most [`MAX_HANDSHAKE`] bytes whose payload
/// starts with `0{` (an open packet) is a candidate; anything else is
/// [`FirstFrame::Pass`], decided from as few bytes as possible so that no
/// other frame is ever held back.
pub fn first_frame(buf: &[u8]) -> FirstFrame {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return FirstFrame::More(2);
    };
    if b0 != FIN | OP_TEXT || b1 & MASKED != 0 {
        return FirstFrame::Pass;
    }
    let (header, len) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (4, u64::from(u16::from_be_bytes([b[0], b[1]]))),
            None => return FirstFrame::More(4),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(b);
                (10, u64::from_be_bytes(n))
            }
            None => return FirstFrame::More(10),
        },
        n => (2, u64::from(n)),
    };
    if !(2..=MAX_HANDSHAKE).contains(&len) {
        return FirstFrame::Pass;
    }
    // Safe: len <= MAX_HANDSHAKE.
    let end = header + len as usize;
    match buf.get(header..header + 2) {
        None => FirstFrame::More(header + 2),
        Some(b"0{") if buf.len() >= end => FirstFrame::Open { header, end },
        Some(b"0{") => FirstFrame::More(end),
        Some(_) => FirstFrame::Pass,
    }
}

/// A final, unmasked text frame carrying `payload`, with the length in its
/// shortest form (RFC 6455 §5.2: "the minimal number of bytes MUST be used").
pub fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(FIN | OP_TEXT);
    match payload.len() {
        n @ 0..=125 => f.push(n as u8),
        n @ 126..=0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// `buf` with its first frame's open packet passed through `tag` (which
/// gives the new payload, or `None` to leave it) and the frame's length
/// rewritten; the bytes after that frame follow unchanged. `None` when
/// `buf` does not start with a whole candidate frame ([`first_frame`]) or
/// `tag` declined.
pub fn rewrite_open_frame(
    buf: &[u8],
    tag: impl FnOnce(&[u8]) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    let FirstFrame::Open { header, end } = first_frame(buf) else {
        return None;
    };
    let payload = tag(&buf[header..end])?;
    let mut out = text_frame(&payload);
    out.extend_from_slice(&buf[end..]);
    Some(out)
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
            handshake("/socket.io/", Some("EIO=4&transport=websocket")),
            Some(Handshake::EngineIoWebSocket)
        );
        assert_eq!(
            handshake("/socket.io/", Some("EIO=4&transport=websocket&sid=x")),
            None
        );
        assert_eq!(handshake("/socket.io/", Some("EIO=4&transport=x")), None);
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

    /// An unmasked frame with `b0` and `payload`, its length in `form`
    /// (2, 4 or 10 header bytes, whatever the length needs).
    fn frame(b0: u8, payload: &[u8], form: usize) -> Vec<u8> {
        let mut f = vec![b0];
        match form {
            2 => f.push(payload.len() as u8),
            4 => {
                f.push(126);
                f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            }
            _ => {
                f.push(127);
                f.extend_from_slice(&(payload.len() as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    /// An open packet of `len` bytes (padded inside a JSON field).
    fn open_packet(len: usize) -> Vec<u8> {
        let head = br#"0{"sid":"AbC-123_xyz","upgrades":[],"pad":""#;
        let mut p = head.to_vec();
        p.resize(len - 2, b'x');
        p.extend_from_slice(b"\"}");
        p
    }

    #[test]
    fn open_frames_in_every_length_form_are_tagged_and_the_rest_kept() {
        let c = codec();
        let tag = |p: &[u8]| rewrite_body(Handshake::EngineIoWebSocket, p, &c, "s1", NOW);
        for (len, form) in [(60, 2), (60, 4), (60, 10), (300, 4), (65_000, 10)] {
            let mut buf = frame(0x81, &open_packet(len), form);
            let whole = buf.len();
            buf.extend_from_slice(b"\x81\x0240"); // the next frame, "40"
            assert_eq!(
                first_frame(&buf),
                FirstFrame::Open {
                    header: form,
                    end: whole
                }
            );
            for cut in [0, 1, form - 1, form, form + 1, whole - 1] {
                assert!(
                    matches!(first_frame(&buf[..cut]), FirstFrame::More(n) if n > cut),
                    "{len} in form {form}, cut at {cut}"
                );
            }
            let out = rewrite_open_frame(&buf, tag).expect("tagged");
            assert!(out.ends_with(b"\x81\x0240"));
            let FirstFrame::Open { header, end } = first_frame(&out) else {
                panic!("the rewritten frame is a frame again: {:?}", &out[..12]);
            };
            assert_eq!(end, out.len() - 4);
            let want = match end - header {
                0..=125 => 2,
                126..=0xffff => 4,
                _ => 10,
            };
            assert_eq!(header, want, "shortest length form");
            let json: Value = serde_json::from_slice(&out[header + 1..end]).unwrap();
            let sid = json["sid"].as_str().unwrap();
            assert_eq!(
                untag(&c, sid, NOW),
                Some(("AbC-123_xyz", CookieCodec::token("s1")))
            );
        }
    }

    #[test]
    fn text_frames_use_the_shortest_length_form() {
        for (len, header) in [(0, 2), (125, 2), (126, 4), (0xffff, 4), (0x10000, 10)] {
            let f = text_frame(&vec![b'x'; len]);
            assert_eq!(f.len(), header + len, "{len}");
            assert_eq!(f[0], 0x81);
        }
        assert_eq!(
            &text_frame(&[b'x'; 0x10000])[..10],
            b"\x81\x7f\0\0\0\0\0\x01\0\0"
        );
    }

    #[test]
    fn other_first_frames_pass_from_their_first_bytes() {
        let open = open_packet(40);
        for (b0, why) in [
            (0xc1, "compressed (RSV1, permessage-deflate)"),
            (0x01, "fragmented (no FIN)"),
            (0x82, "binary"),
            (0x89, "ping"),
            (0x88, "close"),
            (0x91, "RSV3"),
        ] {
            let f = frame(b0, &open, 2);
            assert_eq!(first_frame(&f[..1]), FirstFrame::More(2), "{why}");
            assert_eq!(first_frame(&f[..2]), FirstFrame::Pass, "{why}");
        }
        let mut masked = frame(0x81, &open, 2);
        masked[1] |= 0x80;
        assert_eq!(first_frame(&masked), FirstFrame::Pass, "masked");
        // Not an open packet: decided on the first two payload bytes.
        for payload in [&b"40"[..], b"2probe", b"0x", b"0", b""] {
            let f = frame(0x81, payload, 2);
            assert_eq!(first_frame(&f), FirstFrame::Pass, "{payload:?}");
        }
        // Too large: decided from the header alone.
        let big = MAX_HANDSHAKE + 1;
        let mut f = vec![0x81, 127];
        f.extend_from_slice(&big.to_be_bytes());
        assert_eq!(first_frame(&f), FirstFrame::Pass);
        f[2] = 0xff; // 2^63 and more
        assert_eq!(first_frame(&f), FirstFrame::Pass);
        // A whole open frame whose JSON is not an open packet is left alone.
        let bad = frame(0x81, b"0{\"nosid\":1}", 2);
        let c = codec();
        let tag = |p: &[u8]| rewrite_body(Handshake::EngineIoWebSocket, p, &c, "s1", NOW);
        assert_eq!(rewrite_open_frame(&bad, tag), None);
    }
}
