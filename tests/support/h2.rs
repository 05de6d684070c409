//! HTTP/2 clients for the h2 tests: hyper's HTTP/2 client over TLS (ALPN
//! `h2`) or h2c, WebSockets over HTTP/2 streams (RFC 8441 extended
//! CONNECT), and hand-built frames for what no well-behaved client sends
//! (rapid resets, CONTINUATION floods).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::Full;
use hyper::client::conn::http2::{self, SendRequest};
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::http_client::{Got, read_body};
use super::{BoxError, TIMEOUT, within, ws_config};

/// A sender of requests on one HTTP/2 connection.
pub type H2 = SendRequest<Full<Bytes>>;

/// A WebSocket over an HTTP/2 stream.
pub type H2Ws = WebSocketStream<TokioIo<Upgraded>>;

/// A TLS client trusting `cert_pem`, offering `alpn` in order.
pub fn connector_alpn(cert_pem: &str, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots
            .add(cert.expect("PEM certificate"))
            .expect("trust anchor");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// TLS to `addr` as `localhost` offering `alpn`; returns the stream and the
/// protocol the server chose.
pub async fn tls_alpn(
    addr: SocketAddr,
    cert_pem: &str,
    alpn: &[&[u8]],
) -> (tokio_rustls::client::TlsStream<TcpStream>, Option<Vec<u8>>) {
    let connector = connector_alpn(cert_pem, alpn);
    let tcp = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect to latch");
    let name = ServerName::try_from("localhost").expect("server name");
    let tls = within("TLS handshake", connector.connect(name, tcp))
        .await
        .expect("TLS handshake");
    let chosen = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    (tls, chosen)
}

/// hyper's HTTP/2 client handshake on `io`, its connection task spawned.
/// The client's windows are small (64 KiB per stream, 1 MiB in all), so a
/// stream it does not read stalls soon.
pub async fn handshake<IO>(io: IO) -> Result<H2, BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(1024 * 1024);
    let (sender, conn) = within("h2 handshake", b.handshake(TokioIo::new(io))).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// An HTTP/2 connection to a TLS listener (ALPN `h2` only).
pub async fn h2_tls(addr: SocketAddr, cert_pem: &str) -> H2 {
    let (tls, chosen) = tls_alpn(addr, cert_pem, &[b"h2"]).await;
    assert_eq!(
        chosen.as_deref(),
        Some(&b"h2"[..]),
        "ALPN did not choose h2"
    );
    handshake(tls).await.expect("h2 handshake over TLS")
}

/// An h2c connection with prior knowledge to a plain listener.
pub async fn h2c(addr: SocketAddr) -> H2 {
    let tcp = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect to latch");
    handshake(tcp).await.expect("h2c handshake")
}

/// One request on `h2`; the whole answer.
pub async fn h2_request(h2: &mut H2, req: Request<Full<Bytes>>) -> Result<Got, BoxError> {
    within("h2 ready", h2.ready()).await?;
    let resp = within("h2 response", h2.send_request(req)).await?;
    assert_eq!(resp.version(), Version::HTTP_2);
    let (parts, body) = resp.into_parts();
    Ok((parts.status, parts.headers, read_body(body).await?))
}

/// `GET https://authority/path` on `h2`.
pub async fn h2_get(h2: &mut H2, authority: &str, path: &str) -> Got {
    let req = Request::get(format!("https://{authority}{path}"))
        .body(Full::default())
        .expect("request");
    h2_request(h2, req)
        .await
        .unwrap_or_else(|e| panic!("h2 GET {path}: {e}"))
}

/// Opens a WebSocket on a new stream of `h2` (extended CONNECT,
/// `:protocol = websocket`, RFC 8441 §4). `Err` carries the status and
/// headers of a refusal.
pub async fn h2_ws(
    h2: &mut H2,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(HeaderMap, H2Ws), (StatusCode, HeaderMap)> {
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("https://{authority}{path}"))
        .version(Version::HTTP_2)
        .header("sec-websocket-version", "13");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let mut req = req.body(Full::default()).expect("request");
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    // hyper's client refuses an extended CONNECT unless the server sent
    // SETTINGS_ENABLE_CONNECT_PROTOCOL.
    within("h2 ready", h2.ready()).await.expect("h2 ready");
    let mut resp = within("extended CONNECT", h2.send_request(req))
        .await
        .expect("extended CONNECT sent");
    if resp.status() != StatusCode::OK {
        return Err((resp.status(), resp.headers().clone()));
    }
    let headers = resp.headers().clone();
    let upgraded = within("h2 upgrade", hyper::upgrade::on(&mut resp))
        .await
        .expect("upgraded stream");
    let ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, Some(ws_config()))
            .await;
    Ok((headers, ws))
}

// === hand-built frames (RFC 9113 §4, §6) ===

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const ACK: u8 = 0x1;
/// GOAWAY error codes (RFC 9113 §7).
pub const NO_ERROR: u32 = 0x0;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// The client preface and an empty SETTINGS frame.
pub fn preface() -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out
}

/// One frame: 9-byte header, then `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK string literal, no Huffman (lengths below 127 only).
fn hpack_str(out: &mut Vec<u8>, s: &[u8]) {
    assert!(s.len() < 127, "short literals only");
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

/// The header block of `GET http://authority/` from the static table
/// (RFC 7541 Appendix A) and literals without indexing.
pub fn get_block(authority: &str) -> Vec<u8> {
    // :method GET, :scheme http, :path /
    let mut out = vec![0x82, 0x86, 0x84];
    // :authority (static index 1), literal without indexing.
    out.push(0x01);
    hpack_str(&mut out, authority.as_bytes());
    out
}

/// A literal header field without indexing, new name, value of `len` bytes
/// (HPACK integer with a 7-bit prefix, no Huffman).
pub fn big_field(name: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0x00];
    hpack_str(&mut out, name.as_bytes());
    if len < 127 {
        out.push(len as u8);
    } else {
        out.push(127);
        let mut rest = len - 127;
        while rest >= 128 {
            out.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        out.push(rest as u8);
    }
    out.resize(out.len() + len, b'a');
    out
}

/// Reads one frame: `(type, flags, stream, payload)`; `None` at the end.
pub async fn read_frame<R: AsyncRead + Unpin>(io: &mut R) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    io.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], stream, payload))
}

/// Reads frames from `io` until a GOAWAY, returning its error code; `None`
/// if the connection ended first. Bounded by [`TIMEOUT`].
pub async fn read_until_goaway<R: AsyncRead + Unpin>(io: &mut R) -> Option<u32> {
    let read = async {
        loop {
            let (kind, _, _, payload) = read_frame(io).await?;
            if kind == GOAWAY && payload.len() >= 8 {
                return Some(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
            }
        }
    };
    tokio::time::timeout(TIMEOUT, read)
        .await
        .expect("GOAWAY or the end of the connection, in time")
}

/// `/status`'s `http2` object from the admin listener at `admin`.
pub async fn h2_status(admin: SocketAddr) -> serde_json::Value {
    let (status, _, body) = super::http_get(admin, "localhost", "/status").await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("/status is JSON");
    v["http2"].clone()
}

/// The value of the un-labelled series `name` in `/metrics` at `admin`.
pub async fn metric(admin: SocketAddr, name: &str) -> f64 {
    let (status, _, body) = super::http_get(admin, "localhost", "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}
