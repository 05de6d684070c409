//! What latch does to a request head before forwarding it, on arbitrary
//! heads: the request id, hop-by-hop stripping, the upgrade headers,
//! `X-Forwarded-*`, and the sticky cookie lookup and removal. Nothing panics,
//! and the result keeps latch's promises to the backend.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use arbitrary::Arbitrary;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use latch::config::Cidr;
use latch::proxy::headers;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Head {
    method: Vec<u8>,
    uri: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    peer: [u8; 4],
    port: u16,
    tls: bool,
    /// Prefix length of the trusted range around the peer (`None`: no
    /// trusted proxies).
    trusted: Option<u8>,
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
];

fuzz_target!(|head: Head| {
    let Ok(method) = Method::from_bytes(&head.method) else {
        return;
    };
    let Ok(uri) = Uri::try_from(head.uri.as_slice()) else {
        return;
    };
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in &head.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            builder = builder.header(n, v);
        }
    }
    let Ok(mut req) = builder.body(()) else {
        return;
    };
    let ip = IpAddr::V4(Ipv4Addr::from(head.peer));
    let peer = SocketAddr::new(ip, head.port);
    let trusted: Vec<Cidr> = head
        .trusted
        .and_then(|p| format!("{ip}/{}", p % 33).parse().ok())
        .into_iter()
        .collect();
    let is_trusted = !trusted.is_empty();

    let h = req.headers_mut();
    let id = headers::request_id(h, peer, &trusted);
    let (upgrade, added) =
        headers::rewrite_request(h, peer, &headers::forwarded_for(peer), head.tls, &trusted, &id);
    // The client's own are gone from the map (latch's follow it on the wire)...
    assert!(!h.contains_key("x-request-id") && !h.contains_key("x-forwarded-for"));
    if !is_trusted {
        assert!(!h.contains_key("x-forwarded-proto") && !h.contains_key("x-forwarded-host"));
    }
    // ...and this is the request as the backend sees it.
    added.apply(h);

    // Hop-by-hop headers are gone, except the two an upgrade needs.
    for name in HOP_BY_HOP {
        let kept = upgrade.is_some() && (name == "connection" || name == "upgrade");
        assert_eq!(h.contains_key(name), kept, "{name} after rewrite: {h:?}");
    }
    // One request id: a trusted proxy's, or a new 32-hex-digit one.
    assert_eq!(h.get_all("x-request-id").iter().count(), 1);
    let sent = h["x-request-id"].to_str().expect("an id is text");
    assert_eq!(sent, id.as_str());
    let generated = sent.len() == 32 && sent.bytes().all(|b| b.is_ascii_hexdigit());
    assert!(is_trusted || generated, "untrusted id kept: {sent}");
    // One X-Forwarded-For that ends with the peer; only the peer's own
    // address when the peer is not trusted.
    assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    let xff = h["x-forwarded-for"].to_str().expect("XFF is text");
    assert!(xff.ends_with(&ip.to_string()), "{xff}");
    if !is_trusted {
        assert_eq!(xff, ip.to_string());
        let proto = if head.tls { "https" } else { "http" };
        assert_eq!(h["x-forwarded-proto"], proto);
    }

    // The sticky cookie: found values are decoded (forged ones refused), and
    // once stripped it is gone while other cookies stay.
    let others = h.get_all("cookie").iter().count();
    for v in latch::sticky::find_in_request(h, "LATCH") {
        let _ = codec().decode(&v, 0);
    }
    latch::sticky::strip_from_request(h, "LATCH");
    assert!(latch::sticky::find_in_request(h, "LATCH").is_empty());
    assert!(h.get_all("cookie").iter().count() <= others);
});

fn codec() -> &'static latch::sticky::CookieCodec {
    static C: std::sync::OnceLock<latch::sticky::CookieCodec> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        latch::sticky::CookieCodec::new(b"fuzzing-secret-of-32-bytes-long!", "LATCH", None)
            .expect("codec")
    })
}
