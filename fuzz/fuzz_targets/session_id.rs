//! Session-id rewriting (`sticky.mode = "session_id"`): arbitrary handshake
//! bodies and queries never panic; a rewritten body always carries an id
//! that verifies to its backend and untags to the original; a restored
//! query only ever loses tags; a tag with one byte changed never verifies.
//! WebSocket first frames (websocket-only Engine.IO opens): classifying
//! arbitrary bytes never panics and asks only for more than it has; a
//! rewritten frame is a valid frame (shortest length form) whose open packet
//! carries a verifying sid, followed by the bytes after the original frame
//! unchanged.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use latch::sticky::CookieCodec;
use latch::sticky::session_id::{self, FirstFrame, Handshake};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    body: Vec<u8>,
    signalr: bool,
    query: String,
    path: String,
    id: String,
    backend_id: String,
    now: u64,
    at: usize,
    to: u8,
}

fn codec() -> &'static CookieCodec {
    static C: OnceLock<CookieCodec> = OnceLock::new();
    C.get_or_init(|| CookieCodec::new(b"fuzzing-secret-of-32-bytes-long!", "LATCH", None).expect("codec"))
}

/// The first-frame checks: `buf` as raw backend bytes, and `payload` as an
/// open packet in a frame followed by `rest`.
fn frames(c: &CookieCodec, buf: &[u8], payload: &[u8], rest: &[u8], backend_id: &str, now: u64) {
    match session_id::first_frame(buf) {
        FirstFrame::More(n) => assert!(n > buf.len(), "More({n}) with {} bytes", buf.len()),
        FirstFrame::Open { header, end } => {
            assert!([2, 4, 10].contains(&header) && header + 2 <= end && end <= buf.len());
            assert_eq!(&buf[header..header + 2], b"0{");
        }
        FirstFrame::Pass => {}
    }
    let mut framed = session_id::text_frame(payload);
    let whole = framed.len();
    framed.extend_from_slice(rest);
    let tag = |p: &[u8]| session_id::rewrite_body(Handshake::EngineIoWebSocket, p, c, backend_id, now);
    let Some(out) = session_id::rewrite_open_frame(&framed, tag) else {
        return;
    };
    assert!(out.ends_with(&framed[whole..]), "the bytes after the frame changed");
    let body = &out[..out.len() - rest.len()];
    let (header, len) = match body[1] {
        126 => (4, usize::from(u16::from_be_bytes([body[2], body[3]]))),
        127 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&body[2..10]);
            (10, usize::try_from(u64::from_be_bytes(n)).expect("length"))
        }
        n => (2, usize::from(n)),
    };
    assert_eq!(body[0], 0x81);
    assert_eq!(header + len, body.len(), "frame length");
    let shortest = match len {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    };
    assert_eq!(header, shortest, "shortest length form");
    // Packets after a record separator, if any, are kept as they were.
    let packet = &body[header..];
    let json_end = packet.iter().position(|&b| b == 0x1e).unwrap_or(packet.len());
    let v: serde_json::Value = serde_json::from_slice(&packet[1..json_end]).expect("JSON open packet");
    let sid = v["sid"].as_str().expect("sid");
    let (_, token) = session_id::untag(c, sid, now).expect("verifies");
    assert_eq!(token, CookieCodec::token(backend_id));
}

fuzz_target!(|input: Input| {
    let c = codec();
    let now = input.now;
    frames(c, &input.body, &input.body, input.query.as_bytes(), &input.backend_id, now);
    let _ = session_id::handshake(&input.path, Some(&input.query));
    let kind = if input.signalr {
        Handshake::SignalR
    } else {
        Handshake::EngineIo
    };
    if let Some(out) = session_id::rewrite_body(kind, &input.body, c, &input.backend_id, now) {
        // The rewritten body is still the same kind of JSON, with a tagged id.
        let json: &[u8] = match kind {
            Handshake::EngineIo | Handshake::EngineIoWebSocket => {
                let end = out.iter().position(|&b| b == 0x1e).unwrap_or(out.len());
                &out[1..end]
            }
            Handshake::SignalR => &out,
        };
        let v: serde_json::Value = serde_json::from_slice(json).expect("rewritten JSON parses");
        let id = ["sid", "connectionToken", "connectionId"]
            .iter()
            .find_map(|k| v.get(*k).and_then(|x| x.as_str()).filter(|s| session_id::untag(c, s, now).is_some()))
            .expect("a tagged id");
        let (_, token) = session_id::untag(c, id, now).expect("verifies");
        assert_eq!(token, CookieCodec::token(&input.backend_id));
    }
    if let Some((restored, _)) = session_id::restore_query(c, &input.query, now) {
        assert!(restored.len() < input.query.len(), "{restored} from {}", input.query);
    }
    if input.id.is_empty() {
        return;
    }
    let tagged = session_id::tag(c, &input.id, &input.backend_id, now);
    assert_eq!(
        session_id::untag(c, &tagged, now),
        Some((input.id.as_str(), CookieCodec::token(&input.backend_id)))
    );
    let mut changed = tagged.clone().into_bytes();
    // Change a byte of the tag (after the id), not of the id.
    let tag_len = changed.len() - input.id.len();
    let at = input.id.len() + input.at % tag_len;
    if changed[at] == input.to {
        return;
    }
    changed[at] = input.to;
    if let Ok(changed) = std::str::from_utf8(&changed) {
        if let Some((id, _)) = session_id::untag(c, changed, now) {
            // Only possible when the change moved the split into the id.
            assert_ne!(id, input.id, "{changed} (from {tagged}) verified");
        }
    }
});
