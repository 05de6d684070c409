//! Response heads from a hostile backend: parsing arbitrary bytes never
//! panics, and a head that parses has one unambiguous body framing.
#![no_main]

use http::{Method, header};
use latch::backend::conn::{RespFraming, parse_response_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (bool, &[u8])| {
    let (head_request, bytes) = input;
    let method = if head_request { Method::HEAD } else { Method::GET };
    let Ok(Some(head)) = parse_response_head(bytes, &method) else {
        return;
    };
    let h = head.response.headers();
    match head.framing {
        RespFraming::Length(n) => {
            assert!(n > 0);
            assert!(!h.contains_key(header::TRANSFER_ENCODING));
            assert!(h.contains_key(header::CONTENT_LENGTH));
        }
        RespFraming::Chunked => assert!(h.contains_key(header::TRANSFER_ENCODING)),
        RespFraming::Close => assert!(!head.keep_alive),
        RespFraming::Empty => {}
    }
    if head_request {
        assert_eq!(head.framing, RespFraming::Empty);
    }
});
