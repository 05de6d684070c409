//! Session-id rewriting (`sticky.mode = "session_id"`): arbitrary handshake
//! bodies and queries never panic; a rewritten body always carries an id
//! that verifies to its backend and untags to the original; a restored
//! query only ever loses tags; a tag with one byte changed never verifies.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use latch::sticky::CookieCodec;
use latch::sticky::session_id::{self, Handshake};
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

fuzz_target!(|input: Input| {
    let c = codec();
    let now = input.now;
    let _ = session_id::handshake(&input.path, Some(&input.query));
    let kind = if input.signalr {
        Handshake::SignalR
    } else {
        Handshake::EngineIo
    };
    if let Some(out) = session_id::rewrite_body(kind, &input.body, c, &input.backend_id, now) {
        // The rewritten body is still the same kind of JSON, with a tagged id.
        let json: &[u8] = match kind {
            Handshake::EngineIo => {
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
