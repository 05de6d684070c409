//! A client's request head, parsed from the connection's read buffer with
//! `httparse` in one pass: method, target, version and header fields become
//! an `http::Request<()>` whose header values are slices of the head's bytes
//! (shared, not copied), together with what the connection needs to know to
//! serve it: how its body is framed (RFC 9112 §6.3), whether the connection
//! stays open after it, and whether it asks to upgrade or for `100 Continue`.
//!
//! A client is never trusted: a head that does not parse, is larger than the
//! limit, or frames its body ambiguously is refused with the status to
//! answer, never a panic.

use std::mem::MaybeUninit;

use bytes::BytesMut;

use super::fields::{self, Seen};
use http::header::{self, HeaderMap};
use http::{Method, Request, StatusCode, Uri, Version};

/// Most header fields in a request head (hyper's default too).
pub const MAX_HEADERS: usize = 100;
/// Fields the proxy may add to a request, room made for at parse time.
const SPARE: usize = 6;

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    Length(u64),
    Chunked,
}

/// A request head ready to be served.
#[derive(Debug)]
pub struct Parsed {
    pub request: Request<()>,
    pub framing: Framing,
    /// The client allows another request on this connection after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// `Connection: upgrade` with an `Upgrade` field.
    pub upgrade: bool,
}

/// Why a head was refused, with the status the client is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub why: &'static str,
}

const fn bad(why: &'static str) -> Refused {
    Refused {
        status: StatusCode::BAD_REQUEST,
        why,
    }
}

pub const TOO_LARGE: Refused = Refused {
    status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    why: "request head too large",
};

/// Parses a request head from the front of `buf`. `Ok(None)`: more bytes are
/// needed (and fewer than `max` are buffered). On success the head's bytes
/// are taken off `buf`. Empty lines before a request line are skipped, as
/// RFC 9112 §2.2 asks of a server.
pub fn parse(buf: &mut BytesMut, max: usize) -> Result<Option<Parsed>, Refused> {
    let skip = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if skip > 0 {
        let _ = buf.split_to(skip);
    }
    let Some((method, uri, version, headers, seen)) = fields::with_scratch(|offsets| {
        let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut parsed,
            buf,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() >= max => return Err(TOO_LARGE),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(TOO_LARGE),
            Err(httparse::Error::Version) => return Err(bad("unsupported HTTP version")),
            Err(_) => return Err(bad("malformed request head")),
        };
        if len > max {
            return Err(TOO_LARGE);
        }
        let method = Method::from_bytes(parsed.method.unwrap_or("").as_bytes())
            .map_err(|_| bad("invalid method"))?;
        let target = fields::range_in(buf, parsed.path.unwrap_or("").as_bytes());
        let version = match parsed.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        fields::record(offsets, buf, parsed.headers);
        let head = buf.split_to(len).freeze();
        let uri = Uri::from_maybe_shared(head.slice(target)).map_err(|_| bad("invalid target"))?;
        // Room for what the proxy adds (X-Forwarded-*, X-Request-Id).
        let (headers, seen) = fields::header_map(&head, offsets, SPARE).map_err(bad)?;
        Ok(Some((method, uri, version, headers, seen)))
    })?
    else {
        return Ok(None);
    };
    let framing = framing(version, &headers, seen)?;
    let (keep_alive, upgrade) = connection(version, &headers, seen);
    let expect_continue = seen.has(Seen::EXPECT)
        && headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some(Parsed {
        request,
        framing,
        keep_alive,
        expect_continue,
        upgrade,
    }))
}

/// RFC 9112 §6.3 for requests. A request that is both chunked and has a
/// length, a transfer coding other than a final `chunked`, or conflicting
/// lengths is refused: a proxy that guessed could be made to read the body
/// differently from its backend (request smuggling).
fn framing(version: Version, headers: &HeaderMap, seen: Seen) -> Result<Framing, Refused> {
    if seen.has(Seen::TRANSFER_ENCODING) {
        let te = headers.get_all(header::TRANSFER_ENCODING).iter();
        if version == Version::HTTP_10 {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Err(bad("both Transfer-Encoding and Content-Length"));
        }
        let last = te
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .rfind(|c| !c.is_empty());
        return match last {
            Some(c) if c.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
            _ => Err(bad("request body not chunked last")),
        };
    }
    if !seen.has(Seen::CONTENT_LENGTH) {
        return Ok(Framing::None);
    }
    let mut length = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|&b| b == b',') {
            let n = decimal(part.trim_ascii()).ok_or(bad("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(bad("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        None | Some(0) => Framing::None,
        Some(n) => Framing::Length(n),
    })
}

/// A `Content-Length` value: digits only, no sign, no overflow.
fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// Whether the connection stays open after this request, and whether it
/// asks to upgrade, from `Connection` and `Upgrade` (RFC 9112 §9.3).
fn connection(version: Version, headers: &HeaderMap, seen: Seen) -> (bool, bool) {
    let (mut close, mut keep, mut upgrade) = (false, false, false);
    if !seen.has(Seen::CONNECTION) {
        return (version == Version::HTTP_11, false);
    }
    for v in headers.get_all(header::CONNECTION) {
        for token in v.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                keep = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                upgrade = true;
            }
        }
    }
    let keep_alive = !close && (version == Version::HTTP_11 || keep);
    (keep_alive, upgrade && seen.has(Seen::UPGRADE))
}

/// The bytes of a head for tests and fuzzing: parses `raw` as one request.
pub fn parse_bytes(raw: &[u8], max: usize) -> Result<Option<Parsed>, Refused> {
    let mut buf = BytesMut::from(raw);
    parse(&mut buf, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(raw: &str) -> Result<Parsed, Refused> {
        parse_bytes(raw.as_bytes(), 64 * 1024).map(|p| p.expect("complete"))
    }

    #[test]
    fn a_simple_get() {
        let p = one("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2\r\n\r\n").unwrap();
        assert_eq!(p.request.method(), Method::GET);
        assert_eq!(p.request.uri().path(), "/a");
        assert_eq!(p.request.uri().query(), Some("b=1"));
        assert_eq!(p.request.headers()["host"], "x");
        assert_eq!(p.request.headers().get_all("x-a").iter().count(), 2);
        assert_eq!(p.framing, Framing::None);
        assert!(p.keep_alive && !p.upgrade && !p.expect_continue);
    }

    #[test]
    fn partial_then_complete_and_the_rest_stays() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n"[..]);
        assert!(parse(&mut buf, 1024).unwrap().is_none());
        buf.extend_from_slice(b"\r\nGET /2 HTTP/1.1\r\n");
        let p = parse(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(p.request.uri().path(), "/");
        assert_eq!(&buf[..], b"GET /2 HTTP/1.1\r\n");
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let p = one("\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(p.request.uri().path(), "/");
    }

    #[test]
    fn keep_alive_by_version_and_connection() {
        assert!(!one("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(
            one("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(
            !one("GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n")
                .unwrap()
                .keep_alive
        );
    }

    #[test]
    fn upgrade_needs_both_fields() {
        let up = "GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert!(one(up).unwrap().upgrade);
        assert!(
            !one("GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n")
                .unwrap()
                .upgrade
        );
        assert!(
            !one("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")
                .unwrap()
                .upgrade
        );
    }

    #[test]
    fn body_framing() {
        let f = |raw: &str| one(raw).map(|p| p.framing);
        assert_eq!(
            f("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            Ok(Framing::None)
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n"),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Ok(Framing::Chunked)
        );
        for refused in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(
                f(refused).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{refused:?}"
            );
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(one("NOT A REQUEST\r\n\r\n").unwrap_err().status, 400);
        assert_eq!(one("GET / HTTP/2.0\r\n\r\n").unwrap_err().status, 400);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(one(&raw).unwrap_err().status, 431);
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nx: aaaaaaaaaaaaaaaaaaaa"[..]);
        assert_eq!(parse(&mut buf, 20).unwrap_err().status, 431);
        let raw = b"GET / HTTP/1.1\r\nx: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        assert_eq!(parse_bytes(raw, 20).unwrap_err().status, 431);
    }
}
