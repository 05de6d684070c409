//! What a hostile client can send latch's HTTP/1.1 server: arbitrary bytes
//! as a request head and the body after it. Parsing never panics; a head
//! that parses has one unambiguous body framing (never both a length and
//! chunked, so latch and its backend cannot read the body differently); the
//! body decoder never panics, and never takes more bytes than it was given
//! nor returns more data than it took.
#![no_main]

use http::header;
use latch::http1::{ReqFraming, decode_whole, head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let mut buf = bytes::BytesMut::from(bytes);
    let Ok(Some(parsed)) = head::parse(&mut buf, 64 * 1024) else {
        return;
    };
    let h = parsed.request.headers();
    match parsed.framing {
        ReqFraming::Chunked => {
            assert!(h.contains_key(header::TRANSFER_ENCODING));
            assert!(!h.contains_key(header::CONTENT_LENGTH));
        }
        ReqFraming::Length(n) => {
            assert!(n > 0);
            assert!(!h.contains_key(header::TRANSFER_ENCODING));
        }
        ReqFraming::None => assert!(!h.contains_key(header::TRANSFER_ENCODING)),
    }
    if let Ok(Some((data, took))) = decode_whole(parsed.framing, &buf) {
        assert!(took <= buf.len());
        assert!(data.len() <= took);
    }
});
