//! The host a request is for (RFC 9112 §3.2), decided once per request and
//! used for both routing and forwarding, so the backend always gets the
//! `Host` its route was chosen by:
//!
//! - more than one `Host`, or an invalid one, is a 400 (§3.2: "MUST respond
//!   with a 400"), whatever the target's form;
//! - an absolute-form target (`GET http://a.example/x`) names the host: its
//!   authority replaces any `Host` (§3.2.2), and stands in for a missing one;
//!   userinfo in it is refused (RFC 9110 §4.2.4: it is used to disguise the
//!   authority);
//! - an HTTP/1.1 request with neither is a 400; HTTP/1.0 may omit both.
//!
//! `Host` is never hop-by-hop: `headers::strip_hop_by_hop` keeps it whatever
//! `Connection` lists.
//!
//! Pure: no I/O, and no allocation unless the target is absolute-form.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Uri, Version};

/// Where the forwarded `Host` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestHost {
    /// The client's one valid `Host`, forwarded as it is (not copied: a
    /// copy of a header value can cost an allocation).
    Given,
    /// The absolute-form target's authority, which replaces `Host`.
    Authority(HeaderValue),
    /// Neither (HTTP/1.0 only).
    None,
}

/// Decides the `Host` to forward: the absolute target's authority, else the
/// client's `Host`; neither is allowed for HTTP/1.0 only. `Err` says why
/// the request is a 400.
pub fn request_host(
    uri: &Uri,
    headers: &HeaderMap,
    version: Version,
) -> Result<RequestHost, &'static str> {
    let mut given = headers.get_all(header::HOST).iter();
    let host = given.next();
    if given.next().is_some() {
        return Err("more than one Host");
    }
    if let Some(h) = host
        && h.to_str().ok().and_then(host_of).is_none()
    {
        return Err("invalid Host");
    }
    if let Some(authority) = uri.authority() {
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err("absolute target is not http or https");
        }
        let text = authority.as_str();
        if text.contains('@') {
            return Err("userinfo in the request target");
        }
        if host_of(text).is_none() {
            return Err("invalid authority in the request target");
        }
        let value = HeaderValue::from_str(text).map_err(|_| "invalid authority")?;
        return Ok(RequestHost::Authority(value));
    }
    match host {
        Some(_) => Ok(RequestHost::Given),
        None if version == Version::HTTP_10 || version == Version::HTTP_09 => Ok(RequestHost::None),
        None => Err("missing Host"),
    }
}

/// The host part of the `Host` to forward (no port), as routes match it;
/// "" when there is none. `headers` are the request's.
pub fn route_host<'a>(host: &'a RequestHost, headers: &'a HeaderMap) -> &'a str {
    let value = match host {
        RequestHost::Given => headers.get(header::HOST),
        RequestHost::Authority(v) => Some(v),
        RequestHost::None => None,
    };
    value
        .and_then(|h| h.to_str().ok())
        .and_then(host_of)
        .unwrap_or("")
}

/// Bytes of a `reg-name` or IPv4 address: unreserved, sub-delims and `%`.
static NAME_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
            );
        b += 1;
    }
    t
};

/// The host part of a `Host` value (`name`, `name:port`, `[v6]:port`), if
/// it is a valid `uri-host [ ":" port ]` (RFC 9110 §7.2). No allocation.
pub fn host_of(value: &str) -> Option<&str> {
    let (host, port) = match value.strip_prefix('[') {
        Some(rest) => {
            let end = rest.find(']')?;
            let literal = &rest[..end];
            let ok = !literal.is_empty()
                && literal
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            if !ok {
                return None;
            }
            value.split_at(end + 2)
        }
        // By bytes: `str::rfind` with a char pattern costs several times more
        // for the short values Host has.
        None => match value.as_bytes().iter().rposition(|&b| b == b':') {
            Some(i) => value.split_at(i),
            None => (value, ""),
        },
    };
    let port_ok =
        port.is_empty() || (port.starts_with(':') && port[1..].bytes().all(|b| b.is_ascii_digit()));
    let name_ok = host.starts_with('[')
        || (!host.is_empty() && host.bytes().all(|b| NAME_BYTES[usize::from(b)]));
    (port_ok && name_ok).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(
        target: &str,
        hosts: &[&str],
        version: Version,
    ) -> Result<Option<String>, &'static str> {
        let uri: Uri = target.parse().unwrap();
        let mut headers = HeaderMap::new();
        for h in hosts {
            headers.append(header::HOST, HeaderValue::from_str(h).unwrap());
        }
        let text = |v: &HeaderValue| v.to_str().unwrap().to_string();
        // The Host that would be forwarded.
        request_host(&uri, &headers, version).map(|d| match d {
            RequestHost::Given => headers.get(header::HOST).map(text),
            RequestHost::Authority(v) => Some(text(&v)),
            RequestHost::None => None,
        })
    }

    const V11: Version = Version::HTTP_11;

    #[test]
    fn host_values() {
        assert_eq!(host_of("Example.COM:8080"), Some("Example.COM"));
        assert_eq!(host_of("[::1]:443"), Some("[::1]"));
        assert_eq!(host_of("a.test"), Some("a.test"));
        assert_eq!(host_of("a b"), None);
        assert_eq!(host_of("user@a.test"), None);
        assert_eq!(host_of("a.test:80:80"), None);
        assert_eq!(host_of("[zz]:1"), None);
        assert_eq!(host_of(""), None);
    }

    #[test]
    fn origin_form_uses_the_one_valid_host() {
        assert_eq!(
            decide("/x", &["a.test:81"], V11),
            Ok(Some("a.test:81".into()))
        );
        assert_eq!(
            decide("/x", &["a.test", "a.test"], V11),
            Err("more than one Host")
        );
        assert_eq!(
            decide("/x", &["a.test", "b.test"], V11),
            Err("more than one Host")
        );
        assert_eq!(decide("/x", &["u@a.test"], V11), Err("invalid Host"));
        assert_eq!(decide("/x", &[], V11), Err("missing Host"));
        assert_eq!(decide("/x", &[], Version::HTTP_10), Ok(None));
    }

    #[test]
    fn absolute_form_replaces_host_with_the_authority() {
        let got = |t, h: &[&str]| decide(t, h, V11);
        assert_eq!(
            got("http://a.test/x", &["b.test"]),
            Ok(Some("a.test".into()))
        );
        assert_eq!(
            got("http://a.test:8080/x", &[]),
            Ok(Some("a.test:8080".into()))
        );
        assert_eq!(
            got("https://[::1]:8443/", &["x"]),
            Ok(Some("[::1]:8443".into()))
        );
        assert_eq!(
            got("http://u:p@a.test/x", &["a.test"]),
            Err("userinfo in the request target")
        );
        assert_eq!(got("http://a.test/x", &["u@b.test"]), Err("invalid Host"));
        assert_eq!(
            got("http://a.test/x", &["b", "c"]),
            Err("more than one Host")
        );
        assert!(got("ftp://a.test/x", &["a.test"]).is_err());
    }

    #[test]
    fn routes_match_the_host_without_port() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("Chat.Example:443"));
        assert_eq!(route_host(&RequestHost::Given, &h), "Chat.Example");
        let v = HeaderValue::from_static("a.test:80");
        assert_eq!(route_host(&RequestHost::Authority(v), &h), "a.test");
        assert_eq!(route_host(&RequestHost::None, &h), "");
    }
}
