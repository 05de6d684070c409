//! The HTTP probe. A composed request goes through hyper's client connection,
//! so status, Content-Length and chunked bodies are parsed by the same code
//! that proxies real traffic. A raw `send` request is written as it is and
//! its answer parsed by hand here, since the bytes may not be a request hyper
//! would send.

use std::net::SocketAddr;
use std::pin::pin;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, USER_AGENT};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::spec::{HttpProbe, MAX_BODY, body_contains, io_reason, status_ok};

/// The most of a raw answer read while looking for the end of its head.
const MAX_HEAD: usize = 16 * 1024;

pub(super) async fn check(h: &HttpProbe, tcp: TcpStream, addr: SocketAddr) -> Result<(), String> {
    match &h.send {
        Some(raw) => raw_exchange(h, raw.as_bytes(), tcp).await,
        None => hyper_exchange(h, tcp, addr).await,
    }
}

/// The headers every composed probe request carries: the configured ones,
/// then Host (the configured host, else any Host header given, else the
/// backend's address) and `User-Agent: latch-health` unless one is given.
pub(super) fn base_headers(h: &HttpProbe, addr: SocketAddr) -> Result<HeaderMap, String> {
    if !h.path.starts_with('/') {
        return Err(format!(
            "invalid request: path {:?} must start with /",
            h.path
        ));
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &h.headers {
        headers.append(name.clone(), value.clone());
    }
    let host = match &h.host {
        Some(host) => Some(host.clone()),
        None if headers.contains_key(HOST) => None,
        None => Some(addr.to_string()),
    };
    if let Some(host) = host {
        let value = HeaderValue::try_from(host)
            .map_err(|_| "invalid request: bad Host header".to_string())?;
        headers.insert(HOST, value);
    }
    if !headers.contains_key(USER_AGENT) {
        headers.insert(USER_AGENT, HeaderValue::from_static("latch-health"));
    }
    Ok(headers)
}

async fn hyper_exchange(h: &HttpProbe, tcp: TcpStream, addr: SocketAddr) -> Result<(), String> {
    let mut req = Request::builder()
        .method(h.method.clone())
        .uri(h.path.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("invalid request: {e}"))?;
    *req.headers_mut() = base_headers(h, addr)?;
    req.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));

    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| hyper_reason(&e))?;
    let exchange = async move {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| hyper_reason(&e))?;
        let status = resp.status();
        if !status_ok(&h.expect, status) {
            return Err(format!("status {}", status.as_u16()));
        }
        match &h.expect_body {
            Some(needle) if !body_has(resp.into_body(), needle).await? => {
                Err(format!("body does not contain {needle:?}"))
            }
            _ => Ok(()),
        }
    };
    // The connection must be driven while the exchange waits on it. When it
    // ends first, hyper fails whatever the exchange still waits for, so the
    // exchange always finishes; when the exchange is done, the connection is
    // dropped with it.
    let mut conn = pin!(conn);
    let mut exchange = pin!(exchange);
    tokio::select! {
        r = &mut exchange => r,
        _ = &mut conn => exchange.await,
    }
}

/// Reads the body until `needle` shows up, the body ends, or [`MAX_BODY`]
/// bytes have been read.
async fn body_has(mut body: Incoming, needle: &str) -> Result<bool, String> {
    let mut buf: Vec<u8> = Vec::new();
    while buf.len() < MAX_BODY {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame.map_err(|e| format!("body: {}", hyper_reason(&e)))?;
        if let Ok(data) = frame.into_data() {
            let take = data.len().min(MAX_BODY - buf.len());
            // Only the new bytes and the needle's length before them can
            // hold a match that was not there already.
            let from = buf.len().saturating_sub(needle.len());
            buf.extend_from_slice(&data[..take]);
            if body_contains(&buf[from..], needle) {
                return Ok(true);
            }
        }
    }
    Ok(body_contains(&buf, needle))
}

/// A hyper error as a short reason, with its cause when it has one.
fn hyper_reason(e: &hyper::Error) -> String {
    let cause = std::error::Error::source(e).map(|s| match s.downcast_ref::<std::io::Error>() {
        Some(io) => io_reason(io),
        None => s.to_string(),
    });
    let what = if e.is_parse() || e.is_parse_status() {
        "invalid response"
    } else if e.is_incomplete_message() {
        return "connection closed before a complete response".into();
    } else {
        "http"
    };
    match cause {
        Some(c) => format!("{what}: {e}: {c}"),
        None => format!("{what}: {e}"),
    }
}

/// Sends `raw` and judges the answer: status line and head up to the blank
/// line, then, for `expect_body`, the body up to its Content-Length, EOF or
/// [`MAX_BODY`]. A chunked body is searched as it comes, chunk sizes and all.
async fn raw_exchange(h: &HttpProbe, raw: &[u8], mut tcp: TcpStream) -> Result<(), String> {
    tcp.write_all(raw)
        .await
        .map_err(|e| format!("send: {}", io_reason(&e)))?;
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let prefix = &buf[..buf.len().min(5)];
        if !b"HTTP/".starts_with(prefix) {
            return Err(garbage(&buf));
        }
        if buf.len() > MAX_HEAD {
            return Err("invalid response: head longer than 16 KiB".into());
        }
        if read_more(&mut tcp, &mut buf).await? == 0 {
            return Err(match buf.is_empty() {
                true => "connection closed before a response".into(),
                false => "invalid response: connection closed inside the head".into(),
            });
        }
    };
    let head = &buf[..head_end];
    let status = status_line(head).ok_or_else(|| garbage(head))?;
    if !status_ok(&h.expect, status) {
        return Err(format!("status {}", status.as_u16()));
    }
    let Some(needle) = &h.expect_body else {
        return Ok(());
    };
    let want = content_length(head).unwrap_or(MAX_BODY).min(MAX_BODY);
    let mut body = buf.split_off(head_end);
    while body.len() < want && !body_contains(&body, needle) {
        if read_more(&mut tcp, &mut body).await? == 0 {
            break;
        }
    }
    body.truncate(want);
    match body_contains(&body, needle) {
        true => Ok(()),
        false => Err(format!("body does not contain {needle:?}")),
    }
}

async fn read_more(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, String> {
    buf.reserve(4096);
    tcp.read_buf(buf)
        .await
        .map_err(|e| format!("read: {}", io_reason(&e)))
}

/// The status of a head that starts `HTTP/1.x NNN`.
fn status_line(head: &[u8]) -> Option<StatusCode> {
    let line = head.split(|&b| b == b'\n').next()?;
    let mut parts = line
        .strip_suffix(b"\r")
        .unwrap_or(line)
        .splitn(3, |&b| b == b' ');
    let version = parts.next()?;
    let code = parts.next()?;
    if !version.starts_with(b"HTTP/1.") || code.len() != 3 {
        return None;
    }
    StatusCode::from_bytes(code).ok()
}

/// The Content-Length of a head, if it has one that parses.
fn content_length(head: &[u8]) -> Option<usize> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = line.split_at(colon);
        if !name.eq_ignore_ascii_case(b"content-length") {
            return None;
        }
        std::str::from_utf8(&value[1..]).ok()?.trim().parse().ok()
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// "invalid response: " and the start of what came, escaped for a log line.
fn garbage(got: &[u8]) -> String {
    let shown = &got[..got.len().min(32)];
    format!("invalid response: {:?}", String::from_utf8_lossy(shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        let s = |h: &[u8]| status_line(h).map(|s| s.as_u16());
        assert_eq!(s(b"HTTP/1.1 200 OK\r\n\r\n"), Some(200));
        assert_eq!(s(b"HTTP/1.0 503\r\n\r\n"), Some(503));
        assert_eq!(s(b"HTTP/1.1 204 No Content here\r\n"), Some(204));
        for bad in [
            &b"HTTP/2 200\r\n"[..],
            b"HTTP/1.1 20 OK\r\n",
            b"HTTP/1.1 abc\r\n",
            b"",
        ] {
            assert_eq!(s(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn finds_content_length() {
        let head = b"HTTP/1.1 200 OK\r\nX: y\r\ncontent-LENGTH:  12 \r\n\r\n";
        assert_eq!(content_length(head), Some(12));
        assert_eq!(content_length(b"HTTP/1.1 200 OK\r\n\r\n"), None);
        assert_eq!(
            content_length(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            None
        );
    }

    #[test]
    fn base_headers_defaults_and_overrides() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let h = HttpProbe::default();
        let m = base_headers(&h, addr).unwrap();
        assert_eq!(m[HOST], "127.0.0.1:8080");
        assert_eq!(m[USER_AGENT], "latch-health");
        let h = HttpProbe {
            headers: vec![(USER_AGENT, HeaderValue::from_static("me"))],
            host: Some("example.com".into()),
            ..HttpProbe::default()
        };
        let m = base_headers(&h, addr).unwrap();
        assert_eq!(m[HOST], "example.com");
        assert_eq!(m[USER_AGENT], "me");
        let h = HttpProbe {
            path: "health".into(),
            ..HttpProbe::default()
        };
        assert!(
            base_headers(&h, addr)
                .unwrap_err()
                .contains("must start with /")
        );
    }
}
