//! The PROXY protocol (HAProxy's, versions 1 and 2): the few bytes an L4
//! balancer puts in front of a connection to say whose it is. Pure code, no
//! sockets: [`parse`] reads a header from the front of a buffer, the
//! `encode_*` functions write one. The listener's accept hook
//! (`listener/proxy_protocol.rs`) and the upstream side (`send_proxy`) use it.
//!
//! The parser is bounded and never reads past the header: when the buffer
//! holds only part of one it answers [`Parsed::Need`] with a number of bytes
//! the header needs *at least*, so a reader can ask for exactly that many and
//! the bytes after the header (a TLS ClientHello, an HTTP request) stay in
//! the socket. It rejects a wrong byte as soon as it sees it, so a client
//! that speaks something else is refused at once rather than at a timeout.
//!
//! Spec: <https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt>.
//! - v1 is one text line of at most 107 bytes, CRLF included:
//!   `PROXY TCP4 1.2.3.4 5.6.7.8 1234 443\r\n`, `TCP6`, or `UNKNOWN` (then
//!   anything up to CRLF, and the connection's own addresses are used).
//! - v2 is binary: a 12-byte signature, version/command, family/transport,
//!   a 16-bit length, then the addresses and optional TLVs (skipped here).
//!   The LOCAL command (a balancer's own health check) and the UNSPEC and
//!   UNIX families carry no client; latch then uses the TCP peer. The length
//!   is capped at [`MAX_V2`] bytes in all; a longer header is refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature.
pub const V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 line, CRLF included (the spec's bound).
pub const MAX_V1: usize = 107;
/// Longest v2 header latch accepts, fixed part and TLVs included. HAProxy
/// itself sends far less (addresses plus a few small TLVs).
pub const MAX_V2: usize = 4096;
/// The bytes asked for first: the shortest header of either version
/// (`PROXY UNKNOWN\r\n` is 15).
const MIN_HEADER: usize = 15;

/// Which version to send (`send_proxy = "v1" | "v2"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The two ends of the client's original connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Addrs {
    /// The client.
    pub src: SocketAddr,
    /// The address the client connected to.
    pub dst: SocketAddr,
}

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A proxied connection from `src` to `dst`.
    Proxy(Addrs),
    /// No client named (v2 LOCAL, UNSPEC or UNIX; v1 UNKNOWN): the
    /// connection's own peer is the client.
    Local,
}

/// The result of looking at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A header, and its length: the bytes after it belong to the stream.
    Done(Header, usize),
    /// Not complete yet; at least this many more bytes (always > 0) are
    /// part of the header.
    Need(usize),
}

/// Why the bytes are not a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The connection does not start with either signature.
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    /// It starts like one but breaks the format.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    /// Longer than [`MAX_V1`] (v1) or [`MAX_V2`] (v2).
    #[error("PROXY protocol header longer than the limit")]
    Oversized,
}

impl Error {
    /// A short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Missing => "missing",
            Error::Malformed(_) => "malformed",
            Error::Oversized => "oversized",
        }
    }
}

/// Parses a header from the front of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, Error> {
    if buf.is_empty() {
        return Ok(Parsed::Need(MIN_HEADER));
    }
    if buf[0] == b'P' {
        v1(buf)
    } else if buf[0] == b'\r' {
        v2(buf)
    } else {
        Err(Error::Missing)
    }
}

// === v1 ===

const V1_TOKENS_TCP: usize = 6; // PROXY TCPx src dst sport dport

fn v1(buf: &[u8]) -> Result<Parsed, Error> {
    let window = &buf[..buf.len().min(MAX_V1)];
    if let Some(end) = window.iter().position(|&b| b == b'\n') {
        if end == 0 || window[end - 1] != b'\r' {
            return Err(Error::Malformed("line feed without carriage return"));
        }
        let line = &window[..end - 1];
        return v1_line(line).map(|h| Parsed::Done(h, end + 1));
    }
    if buf.len() >= MAX_V1 {
        // 107 bytes and no end of line: a v1 header never is this long.
        return Err(Error::Oversized);
    }
    v1_need(buf).map(Parsed::Need)
}

/// Checks an incomplete line so far and says how many bytes it needs at
/// least: CRLF, plus a separator and one character per field not started.
fn v1_need(buf: &[u8]) -> Result<usize, Error> {
    if buf.ends_with(b"\r") {
        // Only LF may follow; everything before it is checked then.
        v1_prefix_ok(&buf[..buf.len() - 1])?;
        return Ok(1);
    }
    v1_prefix_ok(buf)?;
    let done = buf.iter().filter(|&&b| b == b' ').count(); // tokens ended
    let current = buf.rsplit(|&b| b == b' ').next().unwrap_or_default();
    let proto = buf.split(|&b| b == b' ').nth(1);
    let need = match done {
        0 => (b"PROXY ".len() - current.len()) + b"UNKNOWN".len(),
        // `UNKNOWN` is the shortest ending; until a byte rules it out it
        // is the one counted.
        1 if b"UNKNOWN".starts_with(current) => b"UNKNOWN".len() - current.len(),
        1 => {
            let kw = 4usize.saturating_sub(current.len()); // TCP4 / TCP6
            kw + (V1_TOKENS_TCP - 2) * 2
        }
        _ if proto == Some(b"UNKNOWN") => 0,
        n => {
            let empty = usize::from(current.is_empty());
            empty + (V1_TOKENS_TCP - 1 - n) * 2
        }
    };
    Ok(need + 2)
}

/// Rejects an incomplete line as soon as one byte is wrong.
fn v1_prefix_ok(buf: &[u8]) -> Result<(), Error> {
    let mut tokens = buf.split(|&b| b == b' ');
    let first = tokens.next().unwrap_or_default();
    let complete = buf.contains(&b' ');
    if !(if complete {
        first == b"PROXY"
    } else {
        b"PROXY".starts_with(first)
    }) {
        return Err(if first.len() < 2 {
            Error::Missing
        } else {
            Error::Malformed("v1 line does not start with `PROXY `")
        });
    }
    let Some(proto) = tokens.next() else {
        return Ok(());
    };
    let proto_complete = buf.iter().filter(|&&b| b == b' ').count() >= 2;
    let known = [&b"TCP4"[..], b"TCP6", b"UNKNOWN"];
    let ok = if proto_complete {
        known.contains(&proto)
    } else {
        known.iter().any(|k| k.starts_with(proto))
    };
    if !ok {
        return Err(Error::Malformed("v1 protocol is not TCP4, TCP6 or UNKNOWN"));
    }
    if proto == b"UNKNOWN" {
        // Anything printable may follow; it is ignored.
        return match buf.iter().all(|&b| (0x20..0x7f).contains(&b)) {
            true => Ok(()),
            false => Err(Error::Malformed("v1 line has a control character")),
        };
    }
    for (i, t) in tokens.enumerate() {
        let ok = match i {
            0 | 1 => t
                .iter()
                .all(|b| b.is_ascii_hexdigit() || *b == b'.' || *b == b':'),
            2 | 3 => t.len() <= 5 && t.iter().all(u8::is_ascii_digit),
            _ => false,
        };
        if !ok {
            return Err(Error::Malformed("v1 address or port has a wrong character"));
        }
    }
    Ok(())
}

/// A whole line, CRLF removed.
fn v1_line(line: &[u8]) -> Result<Header, Error> {
    let text = std::str::from_utf8(line).map_err(|_| Error::Malformed("v1 line is not ASCII"))?;
    let mut parts = text.split(' ');
    if parts.next() != Some("PROXY") {
        return Err(Error::Malformed("v1 line does not start with `PROXY `"));
    }
    let proto = parts.next().unwrap_or("");
    if proto == "UNKNOWN" {
        if text.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
            return Err(Error::Malformed("v1 line has a control character"));
        }
        return Ok(Header::Local);
    }
    let v6 = match proto {
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(Error::Malformed("v1 protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let mut field = || parts.next();
    let (Some(src), Some(dst), Some(sport), Some(dport), None) =
        (field(), field(), field(), field(), field())
    else {
        return Err(Error::Malformed(
            "v1 line needs 4 fields after the protocol",
        ));
    };
    let ip = |s: &str| -> Result<IpAddr, Error> {
        let ip = if v6 {
            s.parse::<Ipv6Addr>().map(IpAddr::V6)
        } else {
            s.parse::<Ipv4Addr>().map(IpAddr::V4)
        };
        ip.map_err(|_| Error::Malformed("v1 address does not match its protocol"))
    };
    let port = |s: &str| -> Result<u16, Error> {
        let leading_zero = s.len() > 1 && s.starts_with('0');
        match s.parse::<u16>() {
            Ok(p) if !leading_zero && s.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
            _ => Err(Error::Malformed("v1 port is not a number from 0 to 65535")),
        }
    };
    Ok(Header::Proxy(Addrs {
        src: SocketAddr::new(ip(src)?, port(sport)?),
        dst: SocketAddr::new(ip(dst)?, port(dport)?),
    }))
}

// === v2 ===

const CMD_LOCAL: u8 = 0x20;
const CMD_PROXY: u8 = 0x21;
const AF_UNSPEC: u8 = 0x0;
const AF_INET: u8 = 0x1;
const AF_INET6: u8 = 0x2;
const AF_UNIX: u8 = 0x3;
const STREAM: u8 = 0x1;

fn v2(buf: &[u8]) -> Result<Parsed, Error> {
    let sig = buf.len().min(V2_SIG.len());
    if buf[..sig] != V2_SIG[..sig] {
        return Err(if sig < 4 {
            Error::Missing
        } else {
            Error::Malformed("v2 signature is wrong")
        });
    }
    if buf.len() > 12 && buf[12] != CMD_LOCAL && buf[12] != CMD_PROXY {
        return Err(Error::Malformed(
            "v2 version/command is not 2 with LOCAL or PROXY",
        ));
    }
    if buf.len() < 16 {
        return Ok(Parsed::Need(16 - buf.len()));
    }
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > MAX_V2 {
        return Err(Error::Oversized);
    }
    if buf.len() < len {
        return Ok(Parsed::Need(len - buf.len()));
    }
    let body = &buf[16..len];
    let family = buf[13] >> 4;
    let transport = buf[13] & 0x0f;
    if buf[12] == CMD_LOCAL {
        // A balancer's own connection (a health check): whatever the
        // addresses block says is ignored, as the spec asks.
        return Ok(Parsed::Done(Header::Local, len));
    }
    let header = match family {
        AF_UNSPEC | AF_UNIX => Header::Local,
        AF_INET | AF_INET6 if transport != STREAM => {
            return Err(Error::Malformed("v2 transport is not STREAM"));
        }
        AF_INET => {
            let a = body
                .get(..12)
                .ok_or(Error::Malformed("v2 IPv4 addresses are cut short"))?;
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
            Header::Proxy(Addrs {
                src: SocketAddr::new(ip(0), port(a, 8)),
                dst: SocketAddr::new(ip(4), port(a, 10)),
            })
        }
        AF_INET6 => {
            let a = body
                .get(..36)
                .ok_or(Error::Malformed("v2 IPv6 addresses are cut short"))?;
            let ip = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&a[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            };
            Header::Proxy(Addrs {
                src: SocketAddr::new(ip(0), port(a, 32)),
                dst: SocketAddr::new(ip(16), port(a, 34)),
            })
        }
        _ => return Err(Error::Malformed("v2 address family is unknown")),
    };
    Ok(Parsed::Done(header, len))
}

fn port(a: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([a[o], a[o + 1]])
}

// === encoding ===

/// The header `version` puts in front of a connection for `addrs`; `None`
/// sends one naming no client (v2 LOCAL, v1 UNKNOWN), as a health check does.
pub fn encode(version: Version, addrs: Option<Addrs>) -> Vec<u8> {
    match (version, addrs) {
        (Version::V1, Some(a)) => encode_v1(a),
        (Version::V1, None) => b"PROXY UNKNOWN\r\n".to_vec(),
        (Version::V2, Some(a)) => encode_v2(a),
        (Version::V2, None) => {
            let mut out = V2_SIG.to_vec();
            out.extend_from_slice(&[CMD_LOCAL, 0, 0, 0]);
            out
        }
    }
}

/// Both ends in one family: IPv4 when both are (IPv4-mapped IPv6 counts),
/// otherwise IPv6 with IPv4 mapped.
fn same_family(a: Addrs) -> (SocketAddr, SocketAddr) {
    let canon = |s: SocketAddr| SocketAddr::new(s.ip().to_canonical(), s.port());
    let (src, dst) = (canon(a.src), canon(a.dst));
    if src.is_ipv4() == dst.is_ipv4() {
        return (src, dst);
    }
    let v6 = |s: SocketAddr| match s.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), s.port()),
        IpAddr::V6(_) => s,
    };
    (v6(src), v6(dst))
}

fn encode_v1(a: Addrs) -> Vec<u8> {
    let (src, dst) = same_family(a);
    let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {proto} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

fn encode_v2(a: Addrs) -> Vec<u8> {
    let (src, dst) = same_family(a);
    let mut out = V2_SIG.to_vec();
    out.push(CMD_PROXY);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(&[AF_INET << 4 | STREAM, 0, 12]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V6(v6) => v6,
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            };
            out.extend_from_slice(&[AF_INET6 << 4 | STREAM, 0, 36]);
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests;
