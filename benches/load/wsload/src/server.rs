//! `echo-server` mode: a WebSocket echo backend on 127.0.0.1:PORT, with TLS when given a
//! certificate and key. Every data message goes back as it came; pings are answered by
//! tungstenite. The process leaves after `max` at the latest.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::accept_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::either::Either;

const BACKLOG: u32 = 4096;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(port: u16, tls: Option<(&&str, &&str)>, max: Duration) -> Result<(), String> {
    let acceptor = match tls {
        Some((cert, key)) => Some(TlsAcceptor::from(crate::tls::server(cert, key)?)),
        None => None,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket.set_reuseaddr(true).map_err(|e| e.to_string())?;
    socket.bind(addr).map_err(|e| format!("{addr}: {e}"))?;
    let listener = socket.listen(BACKLOG).map_err(|e| format!("{addr}: {e}"))?;
    let serve = async {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                // Out of descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            tokio::spawn(serve_one(tcp, acceptor.clone()));
        }
    };
    tokio::select! {
        () = serve => Ok(()),
        () = tokio::time::sleep(max) => Ok(()),
    }
}

async fn serve_one(tcp: TcpStream, acceptor: Option<TlsAcceptor>) {
    let _ = tcp.set_nodelay(true);
    let handshake = async {
        let stream = match acceptor {
            None => Either::Left(tcp),
            Some(a) => Either::Right(a.accept(tcp).await.ok()?),
        };
        accept_async(stream).await.ok()
    };
    let Ok(Some(mut ws)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        let reply = match msg {
            Message::Binary(_) | Message::Text(_) => msg,
            Message::Close(_) => break,
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
}
