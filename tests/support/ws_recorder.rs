//! A WebSocket echo backend that reports the close frame each connection got
//! (tokio-tungstenite's server on a raw `127.0.0.1:0` listener), and can be
//! killed: every connection dropped without a close frame, as when its
//! process dies. A connection to `/die` is dropped that way after its first
//! echo.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What one connection saw at its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// A close frame with this code and reason.
    Close(u16, String),
    /// The stream ended or broke with no close frame.
    Cut,
}

pub struct WsRecorder {
    pub addr: SocketAddr,
    /// One entry per connection, when it ends.
    pub ended: mpsc::UnboundedReceiver<Ended>,
    kill: CancellationToken,
    tasks: TaskTracker,
}

impl WsRecorder {
    /// Drops the listener and every connection at once, with no close frame.
    pub async fn kill(&self) {
        self.kill.cancel();
        self.tasks.close();
        super::within("recorder connections dropped", self.tasks.wait()).await;
    }

    /// The next connection's end, bounded by [`super::TIMEOUT`].
    pub async fn next_end(&mut self) -> Ended {
        super::within("a backend connection to end", self.ended.recv())
            .await
            .expect("recorder gone")
    }
}

impl Drop for WsRecorder {
    fn drop(&mut self) {
        self.kill.cancel();
    }
}

/// Starts a recorder on `127.0.0.1:0`.
pub async fn spawn_ws_recorder() -> WsRecorder {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (tx, ended) = mpsc::unbounded_channel();
    let kill = CancellationToken::new();
    let tasks = TaskTracker::new();
    let (k, t) = (kill.clone(), tasks.clone());
    tasks.spawn(async move {
        loop {
            let tcp = tokio::select! {
                _ = k.cancelled() => return,
                a = listener.accept() => match a {
                    Ok((tcp, _)) => tcp,
                    Err(_) => continue,
                },
            };
            let (tx, k) = (tx.clone(), k.clone());
            t.spawn(async move {
                tokio::select! {
                    _ = k.cancelled() => {}
                    end = serve(tcp) => { let _ = tx.send(end); }
                }
            });
        }
    });
    WsRecorder {
        addr,
        ended,
        kill,
        tasks,
    }
}

/// Echoes until the connection ends; tungstenite answers a close frame itself.
// The handshake callback's error type is tungstenite's, not ours.
#[allow(clippy::result_large_err)]
async fn serve(tcp: tokio::net::TcpStream) -> Ended {
    let mut die = false;
    let see_path = |req: &Request, resp: Response| {
        die = req.uri().path() == "/die";
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, see_path).await else {
        return Ended::Cut;
    };
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Close(frame)) => {
                // Let tungstenite send its reply before the stream is dropped.
                while let Some(Ok(_)) = ws.next().await {}
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                return Ended::Close(code, reason);
            }
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(m).await.is_err() || die {
                    return Ended::Cut;
                }
            }
            Ok(_) => {}
            Err(_) => return Ended::Cut,
        }
    }
    Ended::Cut
}
