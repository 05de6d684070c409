//! HTTP/1.1 on the wire toward a backend (RFC 9112): the request head as
//! bytes, and the response head parsed from bytes with `httparse`, with the
//! framing of the body that follows (§6.3).
//!
//! The backend is not trusted more than a client: a head that does not parse,
//! is larger than [`MAX_HEAD`], or frames its body ambiguously is an error
//! (`invalid_header` for retries), never a panic.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};

use crate::http1::RawFields;
use crate::http1::fields;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};

/// Largest response head accepted from a backend.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head (hyper's default too).
const MAX_HEADERS: usize = 100;

/// How the request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReqFraming {
    /// No body and no length header (GET and friends without a body).
    None,
    Length(u64),
    Chunked,
}

/// Appends the request head to `out`: `headers`, then `added`.
/// `Content-Length` and `Transfer-Encoding` from `headers` are replaced by
/// what `framing` says.
pub fn write_head<'a>(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    added: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    framing: ReqFraming,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        field(out, name, value);
    }
    for (name, value) in added {
        field(out, name, value);
    }
    match framing {
        ReqFraming::None => {}
        ReqFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(decimal(n, &mut [0u8; 20]));
            out.extend_from_slice(b"\r\n");
        }
        ReqFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, written into `buf` without allocating.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// How the response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespFraming {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the backend closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    pub response: Response<()>,
    pub framing: RespFraming,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
    /// The fields as the backend's bytes, when they were passed through
    /// (the response's map is then empty).
    pub fields: Option<RawFields>,
}

/// Why a response head was refused.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("malformed response head: {0}")]
    Parse(httparse::Error),
    #[error("response head larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("invalid header field in response: {0}")]
    Field(&'static str),
    #[error("ambiguous body length: {0}")]
    Framing(&'static str),
}

/// Parses a response head from the front of `buf`. `Ok(None)`: more bytes
/// are needed. On success the head's bytes are taken off `buf`; header
/// values share them (no copy). Informational (1xx other than 101) heads are
/// skipped, as they carry nothing the client needs here.
///
/// With `pass`, the fields of any answer but a `101` are not made into a
/// map: they stay the backend's bytes ([`Head::fields`]; the map is left
/// empty for what the proxy adds), for an HTTP/1.1 client's writer to copy
/// on. Framing and keep-alive are read from the parsed fields either way.
pub fn parse_head(
    buf: &mut BytesMut,
    request: &Method,
    pass: bool,
) -> Result<Option<Head>, HeadError> {
    loop {
        // One pass: httparse fills uninitialised slots; the fields' places
        // are kept as offsets until the head is split off the buffer, so
        // that header values are slices of its bytes (shared, not copied).
        let parsed =
            fields::with_scratch(|offsets| {
                let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
                let mut parsed = httparse::Response::new(&mut []);
                let len = match httparse::ParserConfig::default()
                    .parse_response_with_uninit_headers(&mut parsed, buf, &mut slots)
                {
                    Ok(httparse::Status::Complete(len)) => len,
                    Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                        return Err(HeadError::TooLarge);
                    }
                    Ok(httparse::Status::Partial) => return Ok(None),
                    Err(e) => return Err(HeadError::Parse(e)),
                };
                if len > MAX_HEAD {
                    return Err(HeadError::TooLarge);
                }
                let status = StatusCode::from_u16(parsed.code.unwrap_or(0))
                    .map_err(|_| HeadError::Field("status code"))?;
                if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                    buf.advance(len);
                    return Ok(Some(None));
                }
                let version = match parsed.version {
                    Some(0) => Version::HTTP_10,
                    _ => Version::HTTP_11,
                };
                let fields = &*parsed.headers;
                let facts = Facts::of(fields);
                let framing = framing(status, request, &facts)?;
                let keep_alive = keep_alive(version, &facts) && framing != RespFraming::Close;
                let mut response = Response::new(());
                *response.status_mut() = status;
                *response.version_mut() = version;
                // Passed: the field lines, from the first name to the end of the
                // last value (the writer splits them again), or none; a range
                // that is not inside the head (never, from httparse) falls back
                // to the map.
                let passed = match (fields.first(), fields.last()) {
                    _ if !pass || status == StatusCode::SWITCHING_PROTOCOLS => None,
                    (Some(first), Some(last)) => {
                        let start = fields::range_in(buf, first.name.as_bytes()).start;
                        let end = fields::range_in(buf, last.value).end;
                        (start <= end && end <= len).then_some(Some(start..end))
                    }
                    _ => Some(None),
                };
                let mut raw = None;
                if let Some(block) = passed {
                    let head = buf.split_to(len).freeze();
                    raw = block.map(|block| {
                        RawFields::new(
                            head.slice(block),
                            facts.coding.is_some(),
                            facts.lists_fields,
                        )
                    });
                } else {
                    fields::record(offsets, buf, fields);
                    let head = buf.split_to(len).freeze();
                    // Room for Set-Cookie.
                    let (headers, _) =
                        fields::header_map(&head, offsets, 1).map_err(HeadError::Field)?;
                    *response.headers_mut() = headers;
                }
                Ok(Some(Some(Head {
                    response,
                    framing,
                    keep_alive,
                    fields: raw,
                })))
            })?;
        match parsed {
            None => return Ok(None),
            // An informational head, skipped: the next one answers.
            Some(None) => continue,
            Some(Some(head)) => return Ok(Some(head)),
        }
    }
}

/// What a response's fields say about its framing and connection, read in
/// one pass (each field's name is compared only when its length matches).
#[derive(Debug, Default)]
struct Facts {
    /// `Transfer-Encoding` given, and whether its last coding is chunked.
    coding: Option<bool>,
    /// `Content-Length` given: its one value, or why it is refused.
    length: Option<Result<u64, &'static str>>,
    /// `Connection` says `close`, `keep-alive`; names other fields.
    close: bool,
    keep_alive: bool,
    lists_fields: bool,
}

impl Facts {
    fn of(fields: &[httparse::Header<'_>]) -> Facts {
        let mut f = Facts::default();
        let mut last_coding: Option<&[u8]> = None;
        for h in fields {
            let name = h.name.as_bytes();
            match name.len() {
                17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                    let last = h
                        .value
                        .split(|&b| b == b',')
                        .map(<[u8]>::trim_ascii)
                        .rfind(|t| !t.is_empty());
                    last_coding = last.or(last_coding);
                    f.coding = Some(false);
                }
                14 if name.eq_ignore_ascii_case(b"content-length") => {
                    f.length = Some(content_length(h.value, f.length));
                }
                10 if name.eq_ignore_ascii_case(b"connection") => {
                    for t in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                        if t.eq_ignore_ascii_case(b"close") {
                            f.close = true;
                        } else if t.eq_ignore_ascii_case(b"keep-alive") {
                            f.keep_alive = true;
                        } else if !t.is_empty() && !t.eq_ignore_ascii_case(b"upgrade") {
                            f.lists_fields = true;
                        }
                    }
                }
                _ => {}
            }
        }
        if f.coding.is_some() {
            f.coding = Some(last_coding.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")));
        }
        f
    }
}

/// One `Content-Length` value on top of those before it: a list of
/// identical values is allowed (RFC 9112 §6.3 rule 5); anything else not.
fn content_length(
    value: &[u8],
    before: Option<Result<u64, &'static str>>,
) -> Result<u64, &'static str> {
    let mut length = match before {
        Some(Err(e)) => return Err(e),
        Some(Ok(n)) => Some(n),
        None => None,
    };
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err("invalid Content-Length");
        }
        let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if length.is_some_and(|l| l != n) {
            return Err("conflicting Content-Length values");
        }
        length = Some(n);
    }
    length.ok_or("invalid Content-Length")
}

/// RFC 9112 §6.3, in its order.
fn framing(status: StatusCode, request: &Method, facts: &Facts) -> Result<RespFraming, HeadError> {
    if request == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(RespFraming::Empty);
    }
    // Chunked must be the final coding; otherwise read until close.
    match (facts.coding, facts.length) {
        (Some(true), _) => Ok(RespFraming::Chunked),
        (Some(false), _) | (None, None) => Ok(RespFraming::Close),
        (None, Some(Err(why))) => Err(HeadError::Framing(why)),
        (None, Some(Ok(0))) => Ok(RespFraming::Empty),
        (None, Some(Ok(n))) => Ok(RespFraming::Length(n)),
    }
}

/// Whether the connection stays open after this response.
fn keep_alive(version: Version, facts: &Facts) -> bool {
    !facts.close && (version != Version::HTTP_10 || facts.keep_alive)
}

/// The framing of a request body of `len` bytes sent whole; `had_length`:
/// the client sent a `Content-Length` (kept even when it is 0).
pub fn framing_for(method: &Method, len: u64, had_length: bool) -> ReqFraming {
    let bodyless = matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    if len == 0 && bodyless && !had_length {
        ReqFraming::None
    } else {
        ReqFraming::Length(len)
    }
}

/// A chunk's size line, for a body sent chunked.
pub fn chunk_header(len: usize) -> Bytes {
    Bytes::from(format!("{len:x}\r\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn parse(raw: &[u8], method: Method) -> Result<Option<Head>, HeadError> {
        let mut buf = BytesMut::from(raw);
        parse_head(&mut buf, &method, false)
    }

    /// Passed through, the fields stay bytes (the map is left for what the
    /// proxy adds) and frame the body as the map would; a `101` still gets
    /// its map (the upgrade is checked against it).
    #[test]
    fn passed_fields_stay_bytes_and_frame_the_same() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"[..],
            b"HTTP/1.1 200 OK\nServer: x\nContent-Length: 2\nConnection: close\n\nok",
        ] {
            let mut buf = BytesMut::from(raw);
            let head = parse_head(&mut buf, &Method::GET, true).unwrap().unwrap();
            let mapped = parse(raw, Method::GET).unwrap().unwrap();
            assert!(head.response.headers().is_empty());
            let fields: Vec<_> = head
                .fields
                .as_ref()
                .expect("the fields as bytes")
                .iter()
                .map(|(n, v)| (n.to_vec(), v.to_vec()))
                .collect();
            let want: Vec<(Vec<u8>, Vec<u8>)> = mapped
                .response
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect();
            let lower: Vec<_> = fields
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                .collect();
            assert_eq!(lower, want);
            assert_eq!(head.framing, RespFraming::Length(2));
            assert_eq!(head.framing, mapped.framing);
            assert!(!head.keep_alive && !mapped.keep_alive);
            assert_eq!(&buf[..], b"ok", "the body stays in the buffer");
        }
        let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        let head = parse_head(&mut BytesMut::from(&raw[..]), &Method::GET, true)
            .unwrap()
            .unwrap();
        assert_eq!(head.response.headers()["upgrade"], "websocket");
        assert!(head.fields.is_none());
    }

    #[test]
    fn writes_a_head_with_its_framing() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("a.test"));
        h.insert("content-length", HeaderValue::from_static("999"));
        let mut out = Vec::new();
        write_head(
            &mut out,
            &Method::POST,
            "/x?y=1",
            &h,
            [],
            ReqFraming::Length(12345),
        );
        assert_eq!(
            out,
            b"POST /x?y=1 HTTP/1.1\r\nhost: a.test\r\ncontent-length: 12345\r\n\r\n"
        );
        out.clear();
        let id = HeaderName::from_static("x-request-id");
        let added = [(&id, &HeaderValue::from_static("7"))];
        write_head(&mut out, &Method::GET, "/", &h, added, ReqFraming::None);
        assert_eq!(
            out,
            b"GET / HTTP/1.1\r\nhost: a.test\r\nx-request-id: 7\r\n\r\n"
        );
        out.clear();
        write_head(
            &mut out,
            &Method::PUT,
            "/",
            &HeaderMap::new(),
            [],
            ReqFraming::Length(0),
        );
        assert_eq!(out, b"PUT / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    }

    #[test]
    fn parses_heads_and_their_framing() {
        let h = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhello",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.response.status(), 200);
        assert_eq!(h.framing, RespFraming::Length(5));
        assert!(h.keep_alive);
        assert_eq!(h.response.headers()["x"], "y");
        let h = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, RespFraming::Chunked);
        let h = parse(b"HTTP/1.0 200 OK\r\n\r\n", Method::GET)
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (RespFraming::Close, false));
        let h = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
            Method::HEAD,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, RespFraming::Empty);
        let h = parse(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.response.status(), 204);
        assert!(!h.keep_alive);
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Le", Method::GET)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn refuses_ambiguous_or_broken_heads() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"garbage\r\n\r\n",
            b"HTTP/1.1 999999 X\r\n\r\n",
        ] {
            assert!(
                parse(raw, Method::GET).is_err(),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        let h = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, RespFraming::Length(5));
        let mut big = b"HTTP/1.1 200 OK\r\nX-Pad: ".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        assert!(matches!(parse(&big, Method::GET), Err(HeadError::TooLarge)));
    }
}
