//! Raw HTTP/1.1 for hostile-input tests: requests written as bytes (whole or
//! in small writes), and the response parsed back from the bytes that came,
//! so a test can send what no well-behaved client library would (two `Host`
//! headers, an absolute-form target, `Connection: Host`, dot segments).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use std::time::Duration;

use super::http_client::{Echo, parse_echo, raw_exchange_open};
use super::{TIMEOUT, within_for};

/// A response as it came over the wire.
#[derive(Clone)]
pub struct RawResponse {
    pub status: u16,
    /// In received order; names lower-cased.
    pub headers: Vec<(String, String)>,
    /// De-chunked when the response was chunked.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for RawResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

impl RawResponse {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The mock backend's `/echo` body, parsed (panics if it is not one).
    pub fn echo(&self) -> Echo {
        assert_eq!(self.status, 200, "not an /echo answer: {self:?}");
        parse_echo(&self.body)
    }
}

/// Parses the first response in `raw`. Panics, showing the bytes, when they
/// are not a response.
pub fn parse_response(raw: &[u8]) -> RawResponse {
    let shown = || String::from_utf8_lossy(raw).into_owned();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response head in {:?}", shown()));
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {status_line:?} in {:?}", shown()));
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap_or((l, ""));
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let rest = &raw[end + 4..];
    let find = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)
    } else if let Some(n) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        rest[..n.min(rest.len())].to_vec()
    } else {
        rest.to_vec()
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

/// The data of a chunked body (as much as arrived).
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        rest = &rest[eol + 2..];
        if size == 0 || rest.len() < size {
            out.extend_from_slice(&rest[..size.min(rest.len())]);
            break;
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
    out
}

/// Sends `head` (which must ask for `Connection: close`) and parses the answer.
pub async fn raw_request(addr: SocketAddr, head: &str) -> RawResponse {
    parse_response(&raw_exchange_open(addr, head.as_bytes()).await)
}

/// `GET target` with the given header lines (each without CRLF) and
/// `Connection: close`, sent raw; the parsed answer.
pub async fn raw_get(addr: SocketAddr, target: &str, headers: &[&str]) -> RawResponse {
    let mut head = format!("GET {target} HTTP/1.1\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    raw_request(addr, &head).await
}

/// Writes `bytes` in writes of at most `piece` bytes (each flushed on its
/// own), keeps the write side open, and reads until the server closes.
/// Write errors end the writing (the server may answer and close early);
/// a reset ends the reading, keeping what arrived.
pub async fn raw_in_pieces(addr: SocketAddr, bytes: &[u8], piece: usize) -> Vec<u8> {
    let work = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let (mut rd, mut wr) = s.split();
        let mut out = Vec::new();
        let write = async {
            for chunk in bytes.chunks(piece.max(1)) {
                if wr.write_all(chunk).await.is_err() || wr.flush().await.is_err() {
                    break;
                }
            }
        };
        let read = async {
            let mut buf = [0u8; 8192];
            while let Ok(n) = rd.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
        };
        tokio::join!(write, read);
        out
    };
    match tokio::time::timeout(TIMEOUT, work).await {
        Ok(out) => out,
        Err(_) => panic!("raw_in_pieces with {addr}: no EOF after {TIMEOUT:?}"),
    }
}

/// The status line of a raw HTTP response (empty when nothing came back).
pub fn status_line(raw: &[u8]) -> String {
    let end = raw
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Reads until EOF or a reset, bounded by `limit`; returns what arrived.
pub async fn read_until_closed(s: &mut TcpStream, limit: Duration, what: &str) -> Vec<u8> {
    within_for(limit, what, async {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
}
