//! Helpers for the stickiness and balancing tests: config snippets, latch's
//! `LATCH` cookie (read, checked, forged independently of latch's code),
//! requests, and WebSockets through latch.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, KeyInit, Mac};
use http::header::{HOST, SET_COOKIE};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::Full;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::*;

// === config helpers ===

/// `{ addr = "..", <extra> }`
pub fn entry(addr: SocketAddr, extra: &str) -> String {
    if extra.is_empty() {
        format!("{{ addr = \"{addr}\" }}")
    } else {
        format!("{{ addr = \"{addr}\", {extra} }}")
    }
}

/// `servers = [ .. ]` from entries.
pub fn server_list(entries: &[String]) -> String {
    format!("servers = [{}]", entries.join(", "))
}

/// Plain servers (id = address, weight 1) for these backends.
pub fn plain(backends: &[&Backend]) -> String {
    server_list(
        &backends
            .iter()
            .map(|b| entry(b.addr, ""))
            .collect::<Vec<_>>(),
    )
}

/// One listener → upstream `app` with `upstream` lines (balance, hash_key…),
/// `servers`, and a `[upstream.app.sticky]` table when `sticky` is not empty.
pub fn lb_config(servers: &str, upstream: &str, sticky: &str) -> String {
    let mut t = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\n[upstream.app]\n{upstream}\n{servers}\n"
    );
    if !sticky.is_empty() {
        t.push_str(&format!("\n[upstream.app.sticky]\n{sticky}\n"));
    }
    t
}

/// Cookie stickiness with cookie `LATCH` signed with `secret`, plus `extra` lines.
pub fn cookie_sticky(secret: &str, extra: &str) -> String {
    format!("mode = \"cookie\"\ncookie = \"LATCH\"\nsecret = \"{secret}\"\n{extra}")
}

/// Cookie mode, round robin, over plain servers.
pub fn cookie_config(backends: &[&Backend], secret: &str, extra: &str) -> String {
    lb_config(
        &plain(backends),
        "balance = \"round_robin\"",
        &cookie_sticky(secret, extra),
    )
}

// === cookie helpers ===

/// Every `Set-Cookie` value in `h` that sets cookie `LATCH`.
pub fn latch_set_cookies(h: &HeaderMap) -> Vec<String> {
    h.get_all(SET_COOKIE)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .filter(|v| v.starts_with("LATCH="))
        .collect()
}

/// The value latch pinned the client with, if this response pins it. Errors
/// on more than one `LATCH` cookie or on other attributes than the defaults
/// (`LATCH=<value>; HttpOnly; Path=/`).
pub fn try_pin_of(h: &HeaderMap) -> Result<Option<String>, String> {
    let all = latch_set_cookies(h);
    match all.as_slice() {
        [] => Ok(None),
        [one] => {
            let value = one["LATCH=".len()..]
                .split(';')
                .next()
                .unwrap_or_default()
                .to_string();
            let want = format!("LATCH={value}; HttpOnly; Path=/");
            if *one != want || value.is_empty() {
                return Err(format!("Set-Cookie {one:?}, want {want:?}"));
            }
            Ok(Some(value))
        }
        many => Err(format!("several LATCH Set-Cookie headers: {many:?}")),
    }
}

pub fn pin_of(h: &HeaderMap) -> Option<String> {
    try_pin_of(h).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`pin_of`] but the response must pin.
pub fn must_pin(h: &HeaderMap, what: &str) -> String {
    pin_of(h).unwrap_or_else(|| {
        panic!(
            "{what}: no LATCH Set-Cookie; Set-Cookie headers: {:?}",
            h.get_all(SET_COOKIE).iter().collect::<Vec<_>>()
        )
    })
}

/// The mock backend's name from a response (`x-backend`).
pub fn backend_of(h: &HeaderMap) -> String {
    h.get("x-backend")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_else(|| panic!("response without x-backend: {h:?}"))
}

pub fn cookie_header(value: &str) -> String {
    format!("LATCH={value}")
}

/// `GET path` on a fresh connection with extra headers; bounded.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    within(
        &format!("GET {path} via {addr}"),
        http_get_with(addr, "localhost", path, headers),
    )
    .await
}

/// `GET path` that must succeed; returns (backend name, pin set by latch).
pub async fn get_ok(
    addr: SocketAddr,
    path: &str,
    cookie: Option<&str>,
) -> (String, Option<String>) {
    let c = cookie.map(cookie_header);
    let headers: Vec<(&str, &str)> = c.iter().map(|c| ("cookie", c.as_str())).collect();
    let (status, h, body) = get(addr, path, &headers).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "GET {path} via {addr} with cookie {cookie:?}: {body:?}"
    );
    (backend_of(&h), pin_of(&h))
}

pub fn get_request(path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::get(path).header(HOST, "localhost");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::default()).expect("valid GET request")
}

pub fn lower_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A cookie value as the module documentation of `sticky::cookie` specifies
/// it, computed independently: `1.<token>.<issued>.<mac>` with token = first
/// 8 bytes of SHA-256(id), mac = first 16 bytes of HMAC-SHA256(secret,
/// "latch-v1|" name "|" token "|" issued), all lower-case hex.
pub fn forge_cookie(secret: &str, name: &str, id: &str, issued: u64) -> String {
    let token = lower_hex(&Sha256::digest(id.as_bytes())[..8]);
    let issued = format!("{issued:x}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key size");
    for part in ["latch-v1|", name, "|", &token, "|", &issued] {
        mac.update(part.as_bytes());
    }
    let tag = mac.finalize().into_bytes();
    format!("1.{token}.{issued}.{}", lower_hex(&tag[..16]))
}

// === websocket helpers ===

pub type Ws = WebSocketStream<TcpStream>;

/// Opens `/ws` (with the `LATCH` cookie when given); returns the socket, the
/// backend's name and the 101's headers.
pub async fn open_ws(addr: SocketAddr, cookie: Option<&str>) -> (Ws, String, HeaderMap) {
    let c = cookie.map(cookie_header);
    let headers: Vec<(&str, &str)> = c.iter().map(|c| ("cookie", c.as_str())).collect();
    let (ws, resp) = within(
        "websocket upgrade through latch",
        ws_connect_with(addr, "localhost", "/ws", &headers),
    )
    .await;
    let h = resp.headers().clone();
    (ws, backend_of(&h), h)
}

/// One message there and back, proving the tunnel works.
pub async fn ws_roundtrip(ws: &mut Ws, text: &str) {
    within("sending a websocket message", ws.send(Message::text(text)))
        .await
        .expect("send websocket message");
    let got = next_msg(ws)
        .await
        .expect("websocket ended before the echo")
        .expect("websocket error before the echo");
    assert_eq!(got, Message::text(text), "echo");
}

/// Closes from the client side and waits for the end of the stream.
pub async fn close_ws(mut ws: Ws) {
    let _ = within("sending a websocket close", ws.close(None)).await;
    within("websocket end after close", async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}
