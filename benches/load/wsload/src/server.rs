//! `echo-server` mode: a WebSocket echo backend on 127.0.0.1:PORT, with TLS when given a
//! certificate and key. Every data message goes back as it came; pings are answered by
//! tungstenite. The process leaves after `max` at the latest.
//!
//! With a name (`--name NAME`, used by `benches/soak/run.sh`) the server says who it is,
//! so a client behind a balancer can tell which backend its tunnel reached:
//! - the `101` carries `X-Backend: NAME`;
//! - every echo is prefixed with `NAME ` (text messages and binary ones alike).
//!
//! Requests that are not a WebSocket upgrade get `200` with the body `NAME` (or `ok`),
//! on a keep-alive connection, so the same process can also be an HTTP backend.
//!
//! The handshake is done here (head parsed with httparse, `Sec-WebSocket-Accept` derived
//! by tungstenite) rather than by `tokio_tungstenite::accept_async`, which cannot answer
//! a plain HTTP request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_util::either::Either;

const BACKLOG: u32 = 4096;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a plain HTTP connection may sit idle between requests.
const HTTP_IDLE: Duration = Duration::from_secs(120);
const MAX_HEAD: usize = 16 * 1024;

pub async fn run(
    port: u16,
    tls: Option<(&str, &str)>,
    name: Option<String>,
    max: Duration,
) -> Result<(), String> {
    let acceptor = match tls {
        Some((cert, key)) => Some(TlsAcceptor::from(crate::tls::server(cert, key)?)),
        None => None,
    };
    let name: Option<Arc<str>> = name.map(Arc::from);
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
            tokio::spawn(serve_one(tcp, acceptor.clone(), name.clone()));
        }
    };
    tokio::select! {
        () = serve => Ok(()),
        () = tokio::time::sleep(max) => Ok(()),
    }
}

async fn serve_one(tcp: TcpStream, acceptor: Option<TlsAcceptor>, name: Option<Arc<str>>) {
    let _ = tcp.set_nodelay(true);
    let stream = match acceptor {
        None => Either::Left(tcp),
        Some(a) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, a.accept(tcp)).await {
            Ok(Ok(s)) => Either::Right(s),
            _ => return,
        },
    };
    let _ = serve_stream(stream, name).await;
}

/// Plain HTTP requests until an upgrade (then echo until closed) or the end.
async fn serve_stream<S>(mut stream: S, name: Option<Arc<str>>) -> Result<(), ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut first = true;
    loop {
        let wait = if first { HANDSHAKE_TIMEOUT } else { HTTP_IDLE };
        first = false;
        let head = tokio::time::timeout(wait, read_head(&mut stream, &mut buf))
            .await
            .map_err(drop)??;
        if let Some(key) = head.ws_key {
            let mut resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
                derive_accept_key(key.as_bytes())
            );
            if let Some(n) = &name {
                resp.push_str(&format!("X-Backend: {n}\r\n"));
            }
            resp.push_str("\r\n");
            stream.write_all(resp.as_bytes()).await.map_err(drop)?;
            let rest = buf.split_off(head.len);
            let ws = WebSocketStream::from_partially_read(stream, rest, Role::Server, None).await;
            echo(ws, name).await;
            return Ok(());
        }
        // Plain HTTP: skip a body if one was sent, answer, keep the connection.
        buf.drain(..head.len);
        let mut body_left = head.content_length;
        while body_left > 0 {
            if buf.is_empty() && read_more(&mut stream, &mut buf).await? == 0 {
                return Err(());
            }
            let n = body_left.min(buf.len());
            buf.drain(..n);
            body_left -= n;
        }
        let body = name.as_deref().unwrap_or("ok");
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if head.close { "Connection: close\r\n" } else { "" }
        );
        stream.write_all(resp.as_bytes()).await.map_err(drop)?;
        if head.close {
            let _ = stream.shutdown().await;
            return Ok(());
        }
    }
}

/// What the server needs from a request head.
struct Head {
    /// Bytes of the head in the buffer, blank line included.
    len: usize,
    ws_key: Option<String>,
    content_length: usize,
    close: bool,
}

async fn read_more<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> Result<usize, ()> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await.map_err(drop)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

async fn read_head<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> Result<Head, ()> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                let get = |n: &str| {
                    req.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(n))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
                };
                let upgrade = get("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
                let connection = get("connection").unwrap_or_default().to_ascii_lowercase();
                let ws_key = if upgrade {
                    Some(get("sec-websocket-key").ok_or(())?)
                } else {
                    None
                };
                return Ok(Head {
                    len,
                    ws_key,
                    content_length: get("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    close: connection.split(',').any(|t| t.trim() == "close")
                        || req.version == Some(0),
                });
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {
                if read_more(stream, buf).await? == 0 {
                    return Err(());
                }
            }
            _ => return Err(()),
        }
    }
}

async fn echo<S>(mut ws: WebSocketStream<S>, name: Option<Arc<str>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(Ok(msg)) = ws.next().await {
        let reply = match (msg, &name) {
            (m @ (Message::Binary(_) | Message::Text(_)), None) => m,
            (Message::Text(t), Some(n)) => Message::text(format!("{n} {}", t.as_str())),
            (Message::Binary(b), Some(n)) => {
                let mut v = Vec::with_capacity(n.len() + 1 + b.len());
                v.extend_from_slice(n.as_bytes());
                v.push(b' ');
                v.extend_from_slice(&b);
                Message::Binary(Bytes::from(v))
            }
            (Message::Close(_), _) => break,
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
}
