//! Response heads from a hostile backend: parsing arbitrary bytes never
//! panics, and a head that parses has one unambiguous body framing. Parsed
//! with its fields kept as bytes (as for an HTTP/1.1 client), it frames the
//! same, and its fields split back into exactly the map's.
#![no_main]

use http::{Method, header};
use latch::backend::conn::{RespFraming, parse_response_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (bool, &[u8])| {
    let (head_request, bytes) = input;
    let method = if head_request { Method::HEAD } else { Method::GET };
    let Ok(Some(head)) = parse_response_head(bytes, &method, false) else {
        return;
    };
    let passed = match parse_response_head(bytes, &method, true) {
        Ok(Some(p)) => p,
        other => panic!("parsed as a map, not passed: {other:?}"),
    };
    assert_eq!(passed.framing, head.framing);
    assert_eq!(passed.keep_alive, head.keep_alive);
    if let Some(fields) = &passed.fields {
        assert!(passed.response.headers().is_empty());
        // As multisets: a map groups repeated names together.
        let mut split: Vec<(Vec<u8>, Vec<u8>)> = fields
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_vec()))
            .collect();
        let mut mapped: Vec<(Vec<u8>, Vec<u8>)> = head
            .response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().trim_ascii().to_vec()))
            .collect();
        split.sort();
        mapped.sort();
        assert_eq!(split, mapped);
    } else {
        assert_eq!(passed.response.headers(), head.response.headers());
    }
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
