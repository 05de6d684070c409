//! The PROXY protocol parser, which reads the first bytes of every connection
//! to a `proxy_protocol` listener: never panics; a header it accepts is no
//! longer than the cap of its version; when it asks for more bytes, a reader
//! that gives it exactly that many never reads past the header; and what
//! the encoder writes for the addresses it found parses back to them.
#![no_main]

use latch::proxy_protocol::{Header, MAX_V1, MAX_V2, Parsed, encode, parse};
use latch::proxy_protocol::Version;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As a socket reader feeds it: grow the buffer by what it needs.
    let mut have = 0;
    let outcome = loop {
        match parse(&data[..have]) {
            Ok(Parsed::Need(n)) => {
                assert!(n > 0, "asked for nothing at {have}");
                if have + n > data.len() {
                    break None;
                }
                have += n;
            }
            Ok(Parsed::Done(h, len)) => {
                assert_eq!(len, have, "the reader read past the header");
                break Some(h);
            }
            Err(_) => break None,
        }
    };
    // The whole input at once agrees with the reader.
    match (parse(data), outcome) {
        (Ok(Parsed::Done(h, len)), Some(seen)) => {
            assert_eq!((h, len), (seen, have));
            let cap = if data[0] == b'P' { MAX_V1 } else { MAX_V2 };
            assert!(len <= cap, "{len} bytes accepted");
        }
        (Ok(Parsed::Done(h, len)), None) => panic!("whole: {h:?} ({len}), piecewise: refused"),
        (_, Some(seen)) => panic!("piecewise: {seen:?}, whole: not done"),
        _ => {}
    }
    if let Some(Header::Proxy(a)) = outcome {
        for v in [Version::V1, Version::V2] {
            let again = encode(v, Some(a));
            match parse(&again) {
                Ok(Parsed::Done(Header::Proxy(b), n)) => {
                    assert_eq!(n, again.len());
                    let same = |x: std::net::SocketAddr, y: std::net::SocketAddr| {
                        x.port() == y.port() && x.ip().to_canonical() == y.ip().to_canonical()
                    };
                    assert!(same(a.src, b.src) && same(a.dst, b.dst), "{a:?} -> {b:?}");
                }
                other => panic!("{a:?} encoded as {v:?} parses as {other:?}"),
            }
        }
    }
});
