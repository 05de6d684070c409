//! The WebSocket probe: a real opening handshake (RFC 6455 §4.1), then a
//! clean close. A backend that answers 200 to everything, or that a proxy in
//! front of it does not let upgrade, fails here even though an HTTP probe of
//! the same path would pass, which is the point of probing WebSockets apart.

use std::net::SocketAddr;

use futures_util::StreamExt;
use http::header::{CONNECTION, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use http::{HeaderValue, Method, Request};
use tokio::net::TcpStream;
use tokio_tungstenite::client_async_with_config;
use tokio_tungstenite::tungstenite::error::{Error, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::protocol::{Message, WebSocketConfig};

use super::probe_http::base_headers;
use super::spec::{HttpProbe, MAX_BODY, io_reason};

/// Handshakes with GET `h.path`, `h.host` and `h.headers`; healthy when the
/// answer is 101 with `Upgrade: websocket`, `Connection: Upgrade` and the
/// `Sec-WebSocket-Accept` that matches our random key (tungstenite checks all
/// three), and the peer then answers our Close frame with its own or with EOF.
pub(super) async fn check(h: &HttpProbe, tcp: TcpStream, addr: SocketAddr) -> Result<(), String> {
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(format!("ws://{addr}{}", h.path))
        .body(())
        .map_err(|e| format!("invalid request: {e}"))?;
    let mut headers = base_headers(h, addr)?;
    let key =
        HeaderValue::try_from(generate_key()).map_err(|e| format!("invalid request: key: {e}"))?;
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    headers.insert(SEC_WEBSOCKET_KEY, key);
    *req.headers_mut() = headers;

    // The probe never reads messages it cares about; keep whatever the peer
    // sends before its Close small.
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_BODY))
        .max_frame_size(Some(MAX_BODY));
    let (mut ws, _) = client_async_with_config(req, tcp, Some(config))
        .await
        .map_err(|e| handshake_reason(&e))?;

    match ws.close(None).await {
        Ok(()) => {}
        Err(e) if closed(&e) => return Ok(()),
        Err(e) => return Err(format!("close: {}", reason(&e))),
    }
    // Skip anything the peer sent before it saw our Close.
    loop {
        match ws.next().await {
            None | Some(Ok(Message::Close(_))) => return Ok(()),
            Some(Ok(_)) => continue,
            Some(Err(e)) if closed(&e) => return Ok(()),
            Some(Err(e)) => return Err(format!("close: {}", reason(&e))),
        }
    }
}

/// Whether `e` only says that the connection is over, which after our Close
/// is the expected end.
fn closed(e: &Error) -> bool {
    matches!(
        e,
        Error::ConnectionClosed
            | Error::AlreadyClosed
            | Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)
    )
}

fn handshake_reason(e: &Error) -> String {
    match e {
        Error::Http(resp) => format!("answered {}, not 101", resp.status().as_u16()),
        Error::Protocol(ProtocolError::SecWebSocketAcceptKeyMismatch) => {
            "bad Sec-WebSocket-Accept".into()
        }
        Error::Protocol(ProtocolError::MissingUpgradeWebSocketHeader) => {
            "answered 101 without Upgrade: websocket".into()
        }
        Error::Protocol(ProtocolError::MissingConnectionUpgradeHeader) => {
            "answered 101 without Connection: Upgrade".into()
        }
        Error::Protocol(ProtocolError::HandshakeIncomplete) => {
            "connection closed before a complete response".into()
        }
        Error::Protocol(ProtocolError::HttparseError(p)) => format!("invalid response: {p}"),
        Error::Protocol(ProtocolError::WrongHttpVersion) => "invalid response: HTTP/1.0".into(),
        Error::HttpFormat(f) => format!("invalid response: {f}"),
        _ => reason(e),
    }
}

fn reason(e: &Error) -> String {
    match e {
        Error::Io(io) => io_reason(io),
        _ => format!("websocket: {e}"),
    }
}
