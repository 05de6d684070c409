//! WebSocket routes of the mock backend.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION};
use http::header::{SET_COOKIE, UPGRADE};
use http::{HeaderValue, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::backend::Ctx;
use super::pattern::{RespBody, empty_response, text};
use super::ws_client::ws_config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsRoute {
    /// `/ws`: echo text and binary messages.
    Echo,
    /// `/ws-close`: send Close right after the 101, then close TCP.
    Close,
    /// `/ws-refuse`: 403 `refused by <name>`.
    Refuse,
    /// `/ws-wrong`: 101 with `Upgrade: h2c`.
    Wrong,
}

fn has_token(req: &Request<Incoming>, name: http::header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Checks the client handshake; returns the `Sec-WebSocket-Accept` value.
fn validate(req: &Request<Incoming>) -> Result<String, &'static str> {
    if req.version() != Version::HTTP_11 {
        return Err("not HTTP/1.1");
    }
    if !has_token(req, CONNECTION, "upgrade") {
        return Err("missing Connection: upgrade");
    }
    if !has_token(req, UPGRADE, "websocket") {
        return Err("missing Upgrade: websocket");
    }
    if req
        .headers()
        .get(SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err("Sec-WebSocket-Version is not 13");
    }
    let key = req
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .ok_or("missing Sec-WebSocket-Key")?
        .as_bytes();
    // base64 of 16 bytes: 22 significant characters then "==".
    let b64 = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
    if key.len() != 24 || !key[..22].iter().all(b64) || &key[22..] != b"==" {
        return Err("malformed Sec-WebSocket-Key");
    }
    Ok(derive_accept_key(key))
}

fn switching(accept: &str, upgrade: &'static str) -> Response<RespBody> {
    let mut resp = empty_response(StatusCode::SWITCHING_PROTOCOLS);
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static(upgrade));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(accept).expect("accept key is a valid header"),
    );
    resp
}

async fn server_ws(
    on_upgrade: OnUpgrade,
) -> Option<WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>> {
    let upgraded = on_upgrade.await.ok()?;
    Some(
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(ws_config()))
            .await,
    )
}

pub fn handle(ctx: &Arc<Ctx>, mut req: Request<Incoming>, route: WsRoute) -> Response<RespBody> {
    if route == WsRoute::Refuse {
        return text(StatusCode::FORBIDDEN, format!("refused by {}", ctx.name));
    }
    let accept = match validate(&req) {
        Ok(a) => a,
        Err(why) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("bad websocket handshake: {why}"),
            );
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    match route {
        WsRoute::Echo => {
            ctx.tasks.spawn(async move {
                let Some(mut ws) = server_ws(on_upgrade).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    let echo = matches!(msg, Message::Text(_) | Message::Binary(_));
                    if echo && ws.send(msg).await.is_err() {
                        break;
                    }
                    // Ping/Pong/Close replies are handled by tungstenite itself.
                }
            });
            let mut resp = switching(&accept, "websocket");
            let cookie = format!("backend={}; Path=/", ctx.name);
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(SET_COOKIE, v);
            }
            resp
        }
        WsRoute::Close => {
            ctx.tasks.spawn(async move {
                let Some(mut ws) = server_ws(on_upgrade).await else {
                    return;
                };
                let frame = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "bye".into(),
                };
                let _ = ws.close(Some(frame)).await;
                // FIN right away, then drain (bounded) so the peer's Close
                // reply does not turn our close into a reset.
                let _ = ws.get_mut().shutdown().await;
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
            });
            switching(&accept, "websocket")
        }
        WsRoute::Wrong => {
            ctx.tasks.spawn(async move {
                // Take the connection over and drop it: nothing speaks h2c here.
                drop(on_upgrade.await);
            });
            switching(&accept, "h2c")
        }
        WsRoute::Refuse => unreachable!(),
    }
}
