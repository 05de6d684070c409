//! A response head on the wire (RFC 9112 §4–6), and how its body is framed
//! for this client: the length it declares or is known to have, else chunked
//! for an HTTP/1.1 client, else until the connection closes.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

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
    let s = name.as_str();
    match s.len() {
        2 => s == "te",
        7 => s == "trailer" || s == "upgrade",
        10 => s == "connection" || s == "keep-alive",
        16 => s == "proxy-connection",
        17 => s == "transfer-encoding",
        18 => s == "proxy-authenticate",
        _ => false,
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

/// Appends the head of `parts` to `out`. `Connection` and
/// `Transfer-Encoding` are the connection's to decide and are written from
/// `keep_alive` and the framing; `Date` is added when missing.
pub fn head(
    out: &mut Vec<u8>,
    parts: &Parts,
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
        let w = super::head(&mut out, &parts, &hint, head, v, ka);
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
