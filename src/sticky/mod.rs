//! Stickiness: keeping a client session on one backend.
//!
//! Session state often lives in one backend's memory (a login, a socket.io
//! long-poll session, a WebSocket's reconnect), so every request of a session
//! must reach the backend that started it — on any latch instance, since
//! several run behind DNS round-robin and share nothing but the config.
//!
//! Two ways, chosen per upstream:
//! - **cookie** ([`CookieCodec`]): the balancer places the first request, the
//!   response sets a signed cookie naming that backend, and later requests
//!   carrying it go there. The value is stateless (backend token, issue time,
//!   HMAC with the shared secret), so any instance can check it; a bad or
//!   stale one is ignored and the request is balanced afresh. Survives client
//!   address changes (mobile, NAT) but needs a client that keeps cookies.
//! - **ip_hash** ([`ip_key`]): the client address, masked to a prefix, is
//!   hashed onto the backends. Works for any client, but moves sessions when
//!   the address or the set of backends changes.
//!
//! This module is pure: encoding, checking and header editing, no I/O. The
//! HTTP side of the cookie (`Set-Cookie`, finding and removing it in `Cookie`
//! headers) lives here; signing lives in `cookie`, addresses in `client_key`.

mod client_key;
mod cookie;
pub mod session_id;

use std::time::Duration;

use http::HeaderMap;
use http::header::{COOKIE, HeaderValue};

pub use client_key::{DEFAULT_PREFIX_V4, DEFAULT_PREFIX_V6, ip_key};
pub use cookie::{BackendToken, CookieCodec};

impl CookieCodec {
    /// The `Set-Cookie` header value carrying `value` with `attrs`.
    pub fn set_cookie_header(&self, value: &str, attrs: &CookieAttrs) -> String {
        let mut b = ::cookie::Cookie::build((self.name(), value))
            .path(attrs.path.as_str())
            .http_only(attrs.http_only);
        if attrs.secure {
            b = b.secure(true);
        }
        if let Some(domain) = &attrs.domain {
            b = b.domain(domain.as_str());
        }
        if let Some(age) = attrs.max_age {
            let secs = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
            b = b.max_age(::cookie::time::Duration::seconds(secs));
        }
        if let Some(s) = attrs.same_site {
            b = b.same_site(match s {
                SameSite::Strict => ::cookie::SameSite::Strict,
                SameSite::Lax => ::cookie::SameSite::Lax,
                SameSite::None => ::cookie::SameSite::None,
            });
        }
        b.build().to_string()
    }
}

/// Attributes of the `Set-Cookie` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieAttrs {
    pub path: String,
    pub domain: Option<String>,
    /// Browser-side lifetime (`Max-Age`); `None` makes a session cookie.
    pub max_age: Option<Duration>,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: Option<SameSite>,
}

impl Default for CookieAttrs {
    fn default() -> Self {
        CookieAttrs {
            path: "/".to_string(),
            domain: None,
            max_age: None,
            secure: false,
            http_only: true,
            same_site: None,
        }
    }
}

/// The `SameSite` attribute. `None` makes the cookie crate add `Secure`, as browsers require.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

/// All values of cookie `name` across all `Cookie` headers, in order.
pub fn find_in_request(headers: &HeaderMap, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for h in headers.get_all(COOKIE) {
        for pair in h.as_bytes().split(|&b| b == b';') {
            if let Some(v) = value_if_named(pair, name) {
                out.extend(std::str::from_utf8(v).ok().map(str::to_string));
            }
        }
    }
    out
}

/// Removes cookie `name` from the `Cookie` headers, dropping any left empty.
/// Headers without it stay untouched; in the others every remaining pair
/// keeps its bytes and order (pairs are rejoined with `"; "`).
pub fn strip_from_request(headers: &mut HeaderMap, name: &str) {
    let present = |h: &HeaderValue| {
        h.as_bytes()
            .split(|&b| b == b';')
            .any(|p| value_if_named(p, name).is_some())
    };
    if !headers.get_all(COOKIE).iter().any(present) {
        return;
    }
    let mut kept = Vec::new();
    for h in headers.get_all(COOKIE) {
        if !present(h) {
            kept.push(h.clone());
            continue;
        }
        let pairs: Vec<&[u8]> = h
            .as_bytes()
            .split(|&b| b == b';')
            .map(<[u8]>::trim_ascii)
            .filter(|p| !p.is_empty() && value_if_named(p, name).is_none())
            .collect();
        if !pairs.is_empty() {
            // A subset of a valid value's bytes plus "; " is still valid.
            kept.extend(HeaderValue::from_bytes(&pairs.join(&b"; "[..])).ok());
        }
    }
    headers.remove(COOKIE);
    for h in kept {
        headers.append(COOKIE, h);
    }
}

/// The value of one `name=value` pair if its name is `name` (quotes removed).
fn value_if_named<'a>(pair: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let pair = pair.trim_ascii();
    let eq = pair.iter().position(|&b| b == b'=')?;
    if pair[..eq].trim_ascii() != name.as_bytes() {
        return None;
    }
    let v = pair[eq + 1..].trim_ascii();
    match v {
        [b'"', inner @ .., b'"'] => Some(inner),
        _ => Some(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> CookieCodec {
        CookieCodec::new(b"0123456789abcdef", "LATCH", None).unwrap()
    }

    #[test]
    fn set_cookie_has_every_attribute() {
        let attrs = CookieAttrs {
            path: "/app".into(),
            domain: Some("example.com".into()),
            max_age: Some(Duration::from_secs(3600)),
            secure: true,
            http_only: true,
            same_site: Some(SameSite::Lax),
        };
        let h = codec().set_cookie_header("1.ab", &attrs);
        assert!(h.starts_with("LATCH=1.ab;"), "{h}");
        for a in [
            "Path=/app",
            "Domain=example.com",
            "Max-Age=3600",
            "Secure",
            "HttpOnly",
            "SameSite=Lax",
        ] {
            assert!(h.contains(a), "{a} missing from {h}");
        }
        let h = codec().set_cookie_header("v", &CookieAttrs::default());
        assert_eq!(h, "LATCH=v; HttpOnly; Path=/");
    }

    #[test]
    fn find_and_strip() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; LATCH=x;b=\"2\" ;LATCH = \"y\""),
        );
        h.append(COOKIE, HeaderValue::from_static("junk; c=3;;LATCHX=n"));
        h.append(COOKIE, HeaderValue::from_static("LATCH=z"));
        h.append(COOKIE, HeaderValue::from_bytes(b"d=\xff; LATCH=w").unwrap());
        assert_eq!(find_in_request(&h, "LATCH"), ["x", "y", "z", "w"]);
        strip_from_request(&mut h, "LATCH");
        let left: Vec<&[u8]> = h.get_all(COOKIE).iter().map(|v| v.as_bytes()).collect();
        let want: [&[u8]; 3] = [b"a=1; b=\"2\"", b"junk; c=3;;LATCHX=n", b"d=\xff"];
        assert_eq!(left, want);
        assert!(find_in_request(&h, "LATCH").is_empty());
        strip_from_request(&mut h, "a");
        strip_from_request(&mut h, "junk");
        assert_eq!(h.get_all(COOKIE).iter().count(), 3);
    }
}
