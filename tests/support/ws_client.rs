//! WebSocket clients (tokio-tungstenite over streams connected here).

use std::io;
use std::net::SocketAddr;

use futures_util::StreamExt;
use http::HeaderValue;
use http::header::HeaderName;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use super::TIMEOUT;

/// Max message and frame size used by both the mock backend and the clients.
pub const WS_MAX_MESSAGE: usize = 16 << 20;

pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(WS_MAX_MESSAGE))
        .max_frame_size(Some(WS_MAX_MESSAGE))
}

fn timed_out(what: String) -> WsError {
    WsError::Io(io::Error::new(io::ErrorKind::TimedOut, what))
}

/// Client handshake over `stream` for `{scheme}://{host}{path}` plus `headers`.
async fn handshake<S>(
    stream: S,
    scheme: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(WebSocketStream<S>, Response), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut req = format!("{scheme}://{host}{path}").into_client_request()?;
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(http::Error::from)?;
        let value = HeaderValue::from_str(v).map_err(http::Error::from)?;
        req.headers_mut().append(name, value);
    }
    match tokio::time::timeout(
        TIMEOUT,
        client_async_with_config(req, stream, Some(ws_config())),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(timed_out(format!("websocket handshake for {path}"))),
    }
}

async fn connect_tcp(addr: SocketAddr) -> Result<TcpStream, WsError> {
    let tcp = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out(format!("connect {addr}")))??;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// WebSocket handshake to `addr` for `ws://{host}{path}` with extra request
/// headers (e.g. `("cookie", "backend=b1")`). A non-101 answer comes back as
/// `Err(WsError::Http(response))` with the body.
pub async fn try_ws_connect_with(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(WebSocketStream<TcpStream>, Response), WsError> {
    handshake(connect_tcp(addr).await?, "ws", host, path, headers).await
}

/// WebSocket handshake to `addr` for `ws://localhost{path}`.
pub async fn try_ws_connect(
    addr: SocketAddr,
    path: &str,
) -> Result<(WebSocketStream<TcpStream>, Response), WsError> {
    try_ws_connect_with(addr, "localhost", path, &[]).await
}

/// Like [`try_ws_connect`] but panics on failure.
pub async fn ws_connect(addr: SocketAddr, path: &str) -> (WebSocketStream<TcpStream>, Response) {
    try_ws_connect(addr, path)
        .await
        .unwrap_or_else(|e| panic!("ws_connect {path} to {addr}: {e}"))
}

/// Like [`try_ws_connect_with`] but panics on failure.
pub async fn ws_connect_with(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (WebSocketStream<TcpStream>, Response) {
    try_ws_connect_with(addr, host, path, headers)
        .await
        .unwrap_or_else(|e| panic!("ws_connect {host}{path} to {addr}: {e}"))
}

/// TLS (SNI `server_name`) then a WebSocket handshake for
/// `wss://{server_name}{path}` plus `headers`. TLS failures are `WsError::Io`.
pub async fn try_wss_connect(
    addr: SocketAddr,
    server_name: &str,
    connector: &TlsConnector,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(WebSocketStream<TlsStream<TcpStream>>, Response), WsError> {
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| WsError::Io(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let tcp = connect_tcp(addr).await?;
    let tls = tokio::time::timeout(TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| timed_out(format!("TLS handshake with {addr}")))??;
    handshake(tls, "wss", server_name, path, headers).await
}

/// Like [`try_wss_connect`] without extra headers; panics on failure.
pub async fn wss_connect(
    addr: SocketAddr,
    server_name: &str,
    connector: &TlsConnector,
    path: &str,
) -> (WebSocketStream<TlsStream<TcpStream>>, Response) {
    try_wss_connect(addr, server_name, connector, path, &[])
        .await
        .unwrap_or_else(|e| panic!("wss_connect {server_name}{path} to {addr}: {e}"))
}

/// Next message, bounded by [`TIMEOUT`] (panics on timeout). `None` means
/// the stream ended.
pub async fn next_msg<S>(ws: &mut WebSocketStream<S>) -> Option<Result<Message, WsError>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    super::within("next websocket message", ws.next()).await
}
