//! Helpers for the reload tests: a config file latch is started from and
//! reloaded with, which backend answered, and WebSocket echoes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, StatusCode};
use latch::{Config, Handle};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::*;

/// A config file in a tempdir of its own.
pub struct ConfFile {
    dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl ConfFile {
    pub fn new(text: &str) -> ConfFile {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("latch.toml");
        let f = ConfFile { dir, path };
        f.write(text);
        f
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, text: &str) {
        std::fs::write(&self.path, text)
            .unwrap_or_else(|e| panic!("write {}: {e}", self.path.display()));
    }

    pub fn load(&self) -> Config {
        Config::load(&self.path).unwrap_or_else(|e| panic!("bad test config: {e}"))
    }
}

/// Starts latch from the file.
pub async fn start(conf: &ConfFile) -> Handle {
    latch::start(conf.load())
        .await
        .unwrap_or_else(|e| panic!("latch did not start: {e}"))
}

/// Writes `text` over the config file and reloads it; panics if refused.
pub fn reload_with(handle: &Handle, conf: &ConfFile, text: &str) {
    conf.write(text);
    if let Err(e) = handle.reload_file() {
        panic!("reload refused: {e}\n{text}");
    }
}

pub fn x_backend(headers: &HeaderMap) -> String {
    headers
        .get("x-backend")
        .expect("x-backend header")
        .to_str()
        .expect("x-backend is text")
        .to_string()
}

/// `GET /name` on a fresh connection: which backend answered.
pub async fn who(addr: SocketAddr) -> String {
    let (status, h, body) = http_get(addr, "localhost", "/name").await;
    assert_eq!(status, StatusCode::OK, "GET /name via {addr}: {body:?}");
    let name = x_backend(&h);
    assert_eq!(&body[..], name.as_bytes());
    name
}

/// Sends `text`, waits (bounded) for its echo; the error says what came instead.
pub async fn try_echo<S>(ws: &mut WebSocketStream<S>, text: &str) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(TIMEOUT, ws.send(Message::text(text))).await {
        Err(_) => return Err(format!("sending {text:?} timed out")),
        Ok(Err(e)) => return Err(format!("sending {text:?} failed: {e}")),
        Ok(Ok(())) => {}
    }
    match tokio::time::timeout(TIMEOUT, ws.next()).await {
        Err(_) => Err(format!("no echo of {text:?} within {TIMEOUT:?}")),
        Ok(None) => Err(format!("closed before the echo of {text:?}")),
        Ok(Some(Err(e))) => Err(format!("error instead of the echo of {text:?}: {e}")),
        Ok(Some(Ok(Message::Text(t)))) if t.as_str() == text => Ok(()),
        Ok(Some(Ok(other))) => Err(format!("{other:?} instead of the echo of {text:?}")),
    }
}

pub async fn echo<S>(ws: &mut WebSocketStream<S>, text: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    try_echo(ws, text).await.unwrap_or_else(|e| panic!("{e}"));
}
