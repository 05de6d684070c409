//! Client connections: a `ws://` or `wss://` URL resolved once into a [`Target`], which
//! then opens WebSocket connections, and the one round trip both client modes use.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::{Bytes, Message, http::Uri};
use tokio_tungstenite::{WebSocketStream, client_async};
use tokio_util::either::Either;

pub type Ws = WebSocketStream<Either<TcpStream, TlsStream<TcpStream>>>;

/// The 64-byte message every client sends.
pub fn payload() -> Bytes {
    Bytes::from_static(&[b'x'; 64])
}

/// Where to connect and how: resolved once, so a connection costs no DNS lookup.
pub struct Target {
    url: String,
    addr: SocketAddr,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Target {
    pub async fn parse(url: &str) -> Result<Arc<Target>, String> {
        let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(format!("{url}: the scheme must be ws or wss")),
        };
        let host = uri.host().ok_or_else(|| format!("{url}: no host"))?;
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("{host}: {e}"))?
            .collect();
        addrs.sort_by_key(|a| !a.is_ipv4()); // the bench listens on 127.0.0.1
        let addr = *addrs.first().ok_or_else(|| format!("{host}: no address"))?;
        let tls = if secure {
            let name =
                ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
            Some((TlsConnector::from(crate::tls::client()?), name))
        } else {
            None
        };
        Ok(Arc::new(Target {
            url: url.to_string(),
            addr,
            tls,
        }))
    }

    /// TCP (no Nagle), then TLS if `wss`, then the WebSocket handshake.
    pub async fn connect(&self) -> Result<Ws, String> {
        Ok(self.connect_named().await?.0)
    }

    /// [`Target::connect`], also returning the `X-Backend` header of the `101`, if any
    /// (set by `wsload echo-server --name`).
    pub async fn connect_named(&self) -> Result<(Ws, Option<String>), String> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        let stream = match &self.tls {
            None => Either::Left(tcp),
            Some((connector, name)) => Either::Right(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("tls: {e}"))?,
            ),
        };
        let (ws, resp) = client_async(self.url.as_str(), stream)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let backend = resp
            .headers()
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((ws, backend))
    }
}

/// Sends `msg` and waits for its echo (pings in between are answered by tungstenite).
pub async fn round_trip(ws: &mut Ws, msg: &Bytes) -> Result<(), String> {
    ws.send(Message::Binary(msg.clone()))
        .await
        .map_err(|e| format!("send: {e}"))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) if b.len() == msg.len() => return Ok(()),
            Some(Ok(Message::Text(t))) if t.len() == msg.len() => return Ok(()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None => return Err("closed by peer".into()),
            Some(Ok(other)) => return Err(format!("unexpected reply of {} bytes", other.len())),
            Some(Err(e)) => return Err(format!("read: {e}")),
        }
    }
}
