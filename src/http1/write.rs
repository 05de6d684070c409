//! A response head on the wire (RFC 9112 §4–6), and how its body is framed
//! for this client: the length it declares or is known to have, else chunked
//! for an HTTP/1.1 client, else until the connection closes.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::response::Parts;
use http::{StatusCode, Version};
use hyper::body::SizeHint;

/// Fields that describe one connection, not the message (RFC 9110 §7.6.1,
/// and the older `Keep-Alive`, `Proxy-Connection`, `Proxy-Authenticate`):
/// the writer frames the message and decides the connection itself, so it
/// never copies these from the response it is given (but a `101`'s
/// `Connection` and `Upgrade`). The proxy removes them from requests.
pub static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
];

/// Whether `name` is one of [`HOP_BY_HOP`]: by length first, so the usual
/// field costs one comparison of its length, not eight of names.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    hop_by_hop(name.as_str().as_bytes())
}

/// [`is_hop_by_hop`] for a name as it came on the wire (any case).
fn hop_by_hop(s: &[u8]) -> bool {
    let is = |name: &str| s.eq_ignore_ascii_case(name.as_bytes());
    match s.len() {
        2 => is("te"),
        7 => is("trailer") || is("upgrade"),
        10 => is("connection") || is("keep-alive"),
        16 => is("proxy-connection"),
        17 => is("transfer-encoding"),
        18 => is("proxy-authenticate"),
        _ => false,
    }
}

/// A backend response's field lines as it sent them (parsed by the backend
/// connection, handed to [`serve`](super::serve) beside the response), for
/// a client writer to copy on without a map built and read back per field
/// (what HAProxy and nginx do). The lines are the ones httparse accepted: `name: value`,
/// ended by CRLF or LF. What the proxy adds (`Set-Cookie`) is in the
/// response's map and written after them.
///
/// Copied on, they lose what an HTTP/1.1 hop must not pass: the hop-by-hop
/// fields, the fields the backend's `Connection` lists, and
/// `Content-Length` beside a `Transfer-Encoding` (the writer frames the
/// body itself).
#[derive(Debug, Clone)]
pub struct RawFields {
    lines: Bytes,
    /// A `Transfer-Encoding` is among them (a `Content-Length` is void).
    coded: bool,
    /// `Connection` names other fields (rare: then each name is checked).
    listed: bool,
}

impl RawFields {
    /// `lines`, with what the parser noted of them: whether there is a
    /// `Transfer-Encoding`, and whether `Connection` names other fields.
    pub fn new(lines: Bytes, coded: bool, listed: bool) -> RawFields {
        RawFields {
            lines,
            coded,
            listed,
        }
    }

    /// Each field as (name, value), the value without surrounding spaces.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.lines.split(|&b| b == b'\n').filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':')?;
            Some((&line[..colon], line[colon + 1..].trim_ascii()))
        })
    }

    /// Writes the fields a client may get, in one pass; notes the
    /// `Content-Length` value, whether there is a `Date`, and whether
    /// `Connection` says `close` (as for a map's fields, the client's
    /// connection then closes too). Runs of kept lines ended by CRLF are
    /// copied whole; a line ended by a bare LF (or the last one, which has
    /// no ending here) is written again with CRLF.
    fn write(&self, out: &mut Vec<u8>, length: &mut Option<u64>, date: &mut bool) -> bool {
        let b = &self.lines[..];
        let mut close = false;
        // Kept bytes from `run` to `at` are not copied yet.
        let (mut run, mut at) = (0, 0);
        while at < b.len() {
            let (line, next) = match memchr::memchr(b'\n', &b[at..]) {
                Some(i) => (&b[at..at + i], at + i + 1),
                None => (&b[at..], b.len()),
            };
            let (line, crlf) = match line.strip_suffix(b"\r") {
                Some(l) => (l, next > at + l.len() + 1),
                None => (line, false),
            };
            let Some(colon) = memchr::memchr(b':', line) else {
                // Not a field line (none reach here from httparse).
                out.extend_from_slice(&b[run..at]);
                (run, at) = (next, next);
                continue;
            };
            let name = &line[..colon];
            let value = || line[colon + 1..].trim_ascii();
            let keep = match name.len() {
                14 if name.eq_ignore_ascii_case(b"content-length") => {
                    if !self.coded {
                        *length = decimal(value());
                    }
                    !self.coded
                }
                4 if name.eq_ignore_ascii_case(b"date") => {
                    *date = true;
                    true
                }
                10 if name.eq_ignore_ascii_case(b"connection") => {
                    close |= has_token(value(), b"close");
                    false
                }
                _ => !(hop_by_hop(name) || self.listed && self.lists(name)),
            };
            if !keep || !crlf {
                out.extend_from_slice(&b[run..at]);
                if keep {
                    field(out, name, value());
                }
                run = next;
            }
            at = next;
        }
        out.extend_from_slice(&b[run..]);
        close
    }

    /// Appends the fields to `headers` as they came (those that make a
    /// valid name and value), for a writer that needs a map.
    pub fn append_to(&self, headers: &mut http::HeaderMap) {
        for (name, value) in self.iter() {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name),
                http::HeaderValue::from_bytes(value),
            ) {
                headers.append(n, v);
            }
        }
    }

    /// Whether the backend's `Connection` names `name`.
    fn lists(&self, name: &[u8]) -> bool {
        self.iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
            .flat_map(|(_, v)| v.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(name))
    }
}

/// How the body goes to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body is written (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client, length unknown).
    Close,
}

/// What the head said to the client.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub framing: Framing,
    /// The connection stays open after this response.
    pub keep_alive: bool,
}

/// Appends the head of `parts` to `out`: `fields` (a backend's, passed as
/// bytes) first, then the map's. `Connection` and
/// `Transfer-Encoding` are the connection's to decide and are written from
/// `keep_alive` and the framing; `Date` is added when missing.
pub fn head(
    out: &mut Vec<u8>,
    parts: &Parts,
    fields: Option<&RawFields>,
    hint: &SizeHint,
    head_request: bool,
    client: Version,
    mut keep_alive: bool,
) -> Written {
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let (mut length, mut date) = (None, false);
    if let Some(raw) = fields
        && raw.write(out, &mut length, &mut date)
    {
        keep_alive = false;
    }
    for (name, value) in &parts.headers {
        if is_hop_by_hop(name) {
            // A 101 keeps the two fields that say what it switches to.
            if switching && (name == header::CONNECTION || name == header::UPGRADE) {
                field(out, name.as_str().as_bytes(), value.as_bytes());
            } else if name == header::CONNECTION && has_token(value.as_bytes(), b"close") {
                keep_alive = false;
            }
            continue;
        }
        if name == header::CONTENT_LENGTH {
            length = decimal(value.as_bytes());
        } else if name == header::DATE {
            date = true;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let bodyless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodyless || head_request {
        Framing::None
    } else if let Some(n) = length {
        Framing::Length(n)
    } else if let Some(n) = hint.exact() {
        field(out, b"content-length", decimal_str(n, &mut [0; 20]));
        Framing::Length(n)
    } else if client == Version::HTTP_11 {
        field(out, b"transfer-encoding", b"chunked");
        Framing::Chunked
    } else {
        keep_alive = false;
        Framing::Close
    };
    if !date {
        DATE.with_borrow_mut(|d| field(out, b"date", d.now()));
    }
    if !switching {
        if !keep_alive && client == Version::HTTP_11 {
            field(out, b"connection", b"close");
        } else if keep_alive && client == Version::HTTP_10 {
            field(out, b"connection", b"keep-alive");
        }
    }
    out.extend_from_slice(b"\r\n");
    Written {
        framing,
        keep_alive: keep_alive && !switching,
    }
}

/// A short answer that ends the connection (a refused head, a timeout).
pub fn refusal(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-length: 0\r\nconnection: close\r\n");
    DATE.with_borrow_mut(|d| field(out, b"date", d.now()));
    out.extend_from_slice(b"\r\n");
}

/// The size line that opens a chunk of `n` bytes.
pub fn chunk_line(out: &mut Vec<u8>, n: usize) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

fn decimal(s: &[u8]) -> Option<u64> {
    let s = s.trim_ascii();
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

fn decimal_str(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
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

/// The `Date` value, formatted once a second per thread.
struct DateCache {
    second: u64,
    text: Vec<u8>,
}

thread_local! {
    static DATE: RefCell<DateCache> = const {
        RefCell::new(DateCache { second: u64::MAX, text: Vec::new() })
    };
}

impl DateCache {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second {
            self.second = second;
            self.text = httpdate::fmt_http_date(now).into_bytes();
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_test_matches_the_list() {
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop(name), "{name}");
        }
        for name in [
            "host",
            "date",
            "content-length",
            "tee",
            "upgrades",
            "x-connection",
        ] {
            assert!(!is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
    }
    use http::Response;

    fn written(
        resp: Response<()>,
        hint: SizeHint,
        head: bool,
        v: Version,
        ka: bool,
    ) -> (String, Written) {
        let (parts, ()) = resp.into_parts();
        let mut out = Vec::new();
        // Tests put a backend's fields in the extensions.
        let fields = parts.extensions.get::<RawFields>();
        let w = super::head(&mut out, &parts, fields, &hint, head, v, ka);
        (String::from_utf8(out).unwrap(), w)
    }

    #[test]
    fn framing_by_length_hint_version() {
        let r = || Response::builder().status(200).body(()).unwrap();
        let (s, w) = written(r(), SizeHint::with_exact(5), false, Version::HTTP_11, true);
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"), "{s}");
        assert!(
            s.contains("content-length: 5\r\n") && s.contains("date: "),
            "{s}"
        );
        assert_eq!(w.framing, Framing::Length(5));
        assert!(w.keep_alive && !s.contains("connection"));
        let (s, w) = written(r(), SizeHint::default(), false, Version::HTTP_11, true);
        assert!(s.contains("transfer-encoding: chunked\r\n"), "{s}");
        assert_eq!(w.framing, Framing::Chunked);
        let (s, w) = written(r(), SizeHint::default(), false, Version::HTTP_10, true);
        assert_eq!((w.framing, w.keep_alive), (Framing::Close, false));
        assert!(!s.contains("connection"), "{s}");
        let (s, w) = written(r(), SizeHint::with_exact(2), false, Version::HTTP_10, true);
        assert!(
            w.keep_alive && s.contains("connection: keep-alive\r\n"),
            "{s}"
        );
        let (s, w) = written(r(), SizeHint::with_exact(2), false, Version::HTTP_11, false);
        assert!(!w.keep_alive && s.contains("connection: close\r\n"), "{s}");
    }

    #[test]
    fn declared_length_head_and_bodyless() {
        let r = Response::builder()
            .status(200)
            .header("content-length", "10")
            .header("transfer-encoding", "chunked")
            .body(())
            .unwrap();
        let (s, w) = written(r, SizeHint::default(), true, Version::HTTP_11, true);
        assert_eq!(w.framing, Framing::None);
        assert!(
            s.contains("content-length: 10\r\n") && !s.contains("transfer-encoding"),
            "{s}"
        );
        let r = Response::builder().status(304).body(()).unwrap();
        let (s, w) = written(r, SizeHint::default(), false, Version::HTTP_11, true);
        assert_eq!(w.framing, Framing::None);
        assert!(!s.contains("transfer-encoding"), "{s}");
    }

    #[test]
    fn switching_protocols_keeps_its_connection_field() {
        let r = Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        let (s, w) = written(r, SizeHint::default(), false, Version::HTTP_11, true);
        assert!(s.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{s}");
        assert!(s.contains("connection: upgrade\r\n"), "{s}");
        assert!(!w.keep_alive);
    }

    /// A backend's field lines passed as bytes come out as a map's would:
    /// hop-by-hop fields, the ones `Connection` lists, and `Content-Length`
    /// beside `Transfer-Encoding` dropped; names keep their case; what the
    /// proxy added follows.
    #[test]
    fn raw_fields_are_filtered_like_a_map() {
        let lines = "Server: t\r\nKeep-Alive: timeout=5\r\nX-Secret: s\r\n\
            Connection: keep-alive, X-Secret\r\nDate: Mon, 30 Nov 2026 00:00:00 GMT\r\n\
            Content-Length: 7\r\nX-Kept:  spaced  \nUpgrade: h2c";
        let mut r = Response::builder()
            .status(200)
            .header("set-cookie", "L=1")
            .body(())
            .unwrap();
        r.extensions_mut()
            .insert(RawFields::new(Bytes::from(lines.to_string()), false, true));
        let (s, w) = written(r, SizeHint::default(), false, Version::HTTP_11, true);
        assert_eq!(
            s.split("\r\n").skip(1).collect::<Vec<_>>(),
            [
                "Server: t",
                "Date: Mon, 30 Nov 2026 00:00:00 GMT",
                "Content-Length: 7",
                "X-Kept: spaced",
                "set-cookie: L=1",
                "",
                ""
            ],
            "{s}"
        );
        assert_eq!(w.framing, Framing::Length(7));
        assert!(w.keep_alive);

        // Chunked from the backend: its length is void; `close` closes.
        let lines = "Transfer-Encoding: chunked\r\nContent-Length: 3\r\nConnection: close";
        let mut r = Response::builder().status(200).body(()).unwrap();
        r.extensions_mut()
            .insert(RawFields::new(Bytes::from(lines.to_string()), true, false));
        let (s, w) = written(r, SizeHint::default(), false, Version::HTTP_11, true);
        assert!(
            !s.contains("Content-Length") && !s.contains("Transfer-Encoding:"),
            "{s}"
        );
        assert!(s.contains("transfer-encoding: chunked\r\n"), "{s}");
        assert_eq!(w.framing, Framing::Chunked);
        assert!(!w.keep_alive && s.contains("connection: close\r\n"), "{s}");
    }

    #[test]
    fn hop_by_hop_fields_are_never_copied() {
        let r = Response::builder()
            .status(200)
            .header("keep-alive", "timeout=5")
            .header("proxy-connection", "keep-alive")
            .header("te", "trailers")
            .header("trailer", "x-t")
            .header("upgrade", "h2c")
            .header("connection", "keep-alive")
            .header("x-kept", "1")
            .body(())
            .unwrap();
        let (s, w) = written(r, SizeHint::with_exact(0), false, Version::HTTP_11, true);
        for gone in [
            "keep-alive:",
            "proxy-connection:",
            "te:",
            "trailer:",
            "upgrade:",
            "connection:",
        ] {
            assert!(!s.contains(&format!("\n{gone}")), "{gone} in {s}");
        }
        assert!(s.contains("x-kept: 1\r\n") && w.keep_alive, "{s}");
    }

    #[test]
    fn chunk_lines() {
        let mut out = Vec::new();
        chunk_line(&mut out, 0x1a2b);
        chunk_line(&mut out, 0);
        assert_eq!(out, b"1a2b\r\n0\r\n");
    }
}
