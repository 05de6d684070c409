//! Plain-TCP HTTP/1.1 clients, raw exchanges and the `/echo` parser.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::{BoxError, LONG_TIMEOUT, TIMEOUT};

/// Response parts with the whole body.
pub type Got = (StatusCode, HeaderMap, Bytes);

async fn bounded<T, E: Into<BoxError>>(
    what: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, BoxError> {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(r) => r.map_err(|e| format!("{what}: {}", e.into()).into()),
        Err(_) => Err(format!("{what}: timed out after {TIMEOUT:?}").into()),
    }
}

/// Adds `Host` (from the URI's authority, else `localhost`) if missing.
fn ensure_host<B>(req: &mut Request<B>) {
    if !req.headers().contains_key(HOST) {
        let host = req.uri().authority().map_or("localhost", |a| a.as_str());
        let v = HeaderValue::from_str(host).expect("authority is a valid header value");
        req.headers_mut().insert(HOST, v);
    }
}

/// HTTP/1.1 handshake over any stream; the connection task is spawned.
pub async fn handshake_on<IO, B>(
    io: IO,
) -> Result<(SendRequest<B>, JoinHandle<Result<(), hyper::Error>>), BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (sender, conn) = bounded("http1 handshake", http1::handshake(TokioIo::new(io))).await?;
    Ok((sender, tokio::spawn(conn)))
}

/// Sends one request on a fresh connection and returns the response with
/// its body unread (for streaming). Adds `Host: localhost` if none is set.
pub async fn send_request<B>(
    addr: SocketAddr,
    mut req: Request<B>,
) -> Result<Response<Incoming>, BoxError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    ensure_host(&mut req);
    let stream = bounded(&format!("connect {addr}"), TcpStream::connect(addr)).await?;
    let (mut sender, _conn) = handshake_on(stream).await?;
    bounded("send request", sender.send_request(req)).await
}

/// Reads a whole body, bounded by [`LONG_TIMEOUT`].
pub async fn read_body(body: Incoming) -> Result<Bytes, BoxError> {
    match tokio::time::timeout(LONG_TIMEOUT, body.collect()).await {
        Ok(r) => Ok(r?.to_bytes()),
        Err(_) => Err(format!("reading body: timed out after {LONG_TIMEOUT:?}").into()),
    }
}

async fn collect(resp: Response<Incoming>) -> Result<Got, BoxError> {
    let (parts, body) = resp.into_parts();
    Ok((parts.status, parts.headers, read_body(body).await?))
}

/// One request on a fresh connection; errors instead of panicking.
pub async fn try_http_request(
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
) -> Result<Got, BoxError> {
    collect(send_request(addr, req).await?).await
}

/// One request on a fresh connection. Adds `Host: localhost` if none is set.
pub async fn http_request(addr: SocketAddr, req: Request<Full<Bytes>>) -> Got {
    let what = format!("{} {}", req.method(), req.uri());
    try_http_request(addr, req)
        .await
        .unwrap_or_else(|e| panic!("http_request {what} to {addr}: {e}"))
}

fn get_request(host: &str, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::get(path).header(HOST, host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::default()).expect("valid GET request")
}

/// `GET path` with `Host: host` on a fresh connection.
pub async fn http_get(addr: SocketAddr, host: &str, path: &str) -> Got {
    http_request(addr, get_request(host, path, &[])).await
}

/// `GET path` with `Host: host` plus extra headers (e.g. `("cookie", "a=b")`).
pub async fn http_get_with(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Got {
    http_request(addr, get_request(host, path, headers)).await
}

/// A kept-alive client connection for several sequential requests.
pub struct HttpConn {
    pub addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
    conn: JoinHandle<Result<(), hyper::Error>>,
}

impl HttpConn {
    pub async fn connect(addr: SocketAddr) -> HttpConn {
        let stream = bounded(&format!("connect {addr}"), TcpStream::connect(addr))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (sender, conn) = handshake_on(stream)
            .await
            .unwrap_or_else(|e| panic!("HttpConn to {addr}: {e}"));
        HttpConn { addr, sender, conn }
    }

    pub async fn try_request(&mut self, mut req: Request<Full<Bytes>>) -> Result<Got, BoxError> {
        ensure_host(&mut req);
        bounded("connection ready", self.sender.ready()).await?;
        collect(bounded("send request", self.sender.send_request(req)).await?).await
    }

    pub async fn request(&mut self, req: Request<Full<Bytes>>) -> Got {
        let what = format!("{} {}", req.method(), req.uri());
        let addr = self.addr;
        self.try_request(req)
            .await
            .unwrap_or_else(|e| panic!("HttpConn {what} to {addr}: {e}"))
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Got {
        self.request(get_request(host, path, &[])).await
    }

    /// True once the connection is known to be closed.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed() || self.conn.is_finished()
    }

    /// Waits (bounded by [`TIMEOUT`], else panics) for the server to close.
    pub async fn wait_closed(&mut self) {
        let addr = self.addr;
        super::within(
            &format!("server {addr} closing the connection"),
            &mut self.conn,
        )
        .await
        .ok();
    }
}

/// Writes `bytes`, half-closes, and reads until EOF (a reset ends the read
/// too, keeping what arrived). Panics after [`TIMEOUT`] without EOF.
///
/// Note: a hyper server with default settings (`half_close(false)`) gives up
/// on an in-flight request when it sees the client's EOF (the mock backend
/// cuts `/slow-stream` after `first`); a proxy that must ask a backend first
/// may answer nothing. Use [`raw_exchange_open`] for requests that need a
/// real answer; `raw_exchange` suits requests rejected at parse time.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    raw(addr, bytes, true).await
}

/// Like [`raw_exchange`] but keeps the write side open: the server must close
/// (send `Connection: close`, or expect a protocol error).
pub async fn raw_exchange_open(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    raw(addr, bytes, false).await
}

async fn raw(addr: SocketAddr, bytes: &[u8], half_close: bool) -> Vec<u8> {
    let mut s = bounded(&format!("connect {addr}"), TcpStream::connect(addr))
        .await
        .unwrap_or_else(|e| panic!("raw_exchange: {e}"));
    s.write_all(bytes)
        .await
        .unwrap_or_else(|e| panic!("raw_exchange: write to {addr}: {e}"));
    if half_close {
        let _ = s.shutdown().await;
    }
    let mut out = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, async {
        let mut buf = [0u8; 8192];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    if read.is_err() {
        panic!(
            "raw_exchange with {addr}: no EOF after {TIMEOUT:?}; got so far: {:?}",
            String::from_utf8_lossy(&out)
        );
    }
    out
}

/// A parsed `/echo` response body.
#[derive(Debug, Clone)]
pub struct Echo {
    pub method: String,
    /// Path and query as the backend received them.
    pub target: String,
    /// Headers in received order; names are lower-case.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Echo {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Parses the body produced by the backend's `/echo` route.
pub fn parse_echo(body: &[u8]) -> Echo {
    let split = body
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or_else(|| panic!("not an /echo body: {:?}", String::from_utf8_lossy(body)));
    let head = String::from_utf8_lossy(&body[..split]);
    let mut lines = head.split('\n');
    let first = lines.next().unwrap_or_default();
    let (method, target) = first.split_once(' ').unwrap_or((first, ""));
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    Echo {
        method: method.to_string(),
        target: target.to_string(),
        headers,
        body: Bytes::copy_from_slice(&body[split + 2..]),
    }
}
