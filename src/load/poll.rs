//! One load poll: connect, `GET path` with `Connection: close`, read at most
//! [`MAX_BODY`] bytes of a 2xx answer, parse it — all within the timeout.
//! The request goes through hyper's client, as the HTTP health probe does.

use std::net::SocketAddr;
use std::pin::pin;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, USER_AGENT};
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::backend::LoadReport;
use crate::config::LoadConfig;

/// The most of an answer read: a load report is a few bytes.
const MAX_BODY: usize = 4096;

/// Asks the server at `addr` for its load.
pub(super) async fn fetch(addr: SocketAddr, cfg: &LoadConfig) -> Result<LoadReport, String> {
    match tokio::time::timeout(cfg.timeout, exchange(addr, cfg)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", cfg.timeout)),
    }
}

async fn exchange(addr: SocketAddr, cfg: &LoadConfig) -> Result<LoadReport, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut req = Request::get(cfg.path.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("invalid request: {e}"))?;
    let h = req.headers_mut();
    if let Ok(host) = HeaderValue::try_from(addr.to_string()) {
        h.insert(HOST, host);
    }
    h.insert(USER_AGENT, HeaderValue::from_static("latch-load"));
    h.insert(CONNECTION, HeaderValue::from_static("close"));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("http: {e}"))?;
    let exchange = async move {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("http: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("status {}", status.as_u16()));
        }
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        super::parse(&body, cfg.format)
    };
    // Drive the connection while the exchange waits on it (see the HTTP
    // health probe): whichever ends first, the exchange finishes.
    let mut conn = pin!(conn);
    let mut exchange = pin!(exchange);
    tokio::select! {
        r = &mut exchange => r,
        _ = &mut conn => exchange.await,
    }
}
