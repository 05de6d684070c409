//! `sticky.mode = "session_id"`: the answer to a session handshake
//! (Engine.IO polling open, SignalR negotiate) is read whole, up to
//! [`MAX_HANDSHAKE`] bytes, so the session id in it can be tagged with its
//! backend (`sticky::session_id`). A larger or unreadable answer is not
//! rewritten: what was read goes out first and the rest streams after it.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, stream};
use http::{HeaderValue, Response, header};
use http_body_util::{BodyExt, BodyStream, Full, StreamBody};
use hyper::body::Frame;

use super::body::{Body, IdleTimeout};
use super::error::ProxyError;
use crate::backend::Backend;
use crate::backend::conn::Streaming;
use crate::sticky::session_id::MAX_HANDSHAKE;

/// The handshake answer `response` with its body `body` passed through
/// `tag` (which returns `None` to leave it as it is); `idle` bounds each read.
pub(super) async fn rewrite(
    mut response: Response<()>,
    mut body: Streaming,
    idle: Duration,
    backend: &Backend,
    tag: impl FnOnce(&[u8]) -> Option<Vec<u8>>,
) -> Result<Response<Body>, ProxyError> {
    let limit = usize::try_from(MAX_HANDSHAKE).unwrap_or(usize::MAX);
    let mut buf = BytesMut::new();
    let bad = |why: String| ProxyError::BadResponse(backend.addr, why);
    loop {
        let frame = tokio::time::timeout(idle, body.frame())
            .await
            .map_err(|_| bad(format!("handshake body not read within {idle:?}")))?;
        match frame {
            None => break,
            Some(Err(e)) => return Err(bad(format!("handshake body: {e}"))),
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
        }
        if buf.len() > limit {
            // Too large to be a handshake latch rewrites: stream it as it is.
            let head = stream::once(async move { Ok(Frame::data(buf.freeze())) });
            let rest = BodyStream::new(IdleTimeout::new(body, idle, "the backend"));
            let all = StreamBody::new(head.chain(rest));
            return Ok(response.map(|()| BodyExt::boxed(all)));
        }
    }
    let bytes = match tag(&buf) {
        Some(tagged) => Bytes::from(tagged),
        None => buf.freeze(),
    };
    let h = response.headers_mut();
    h.remove(header::TRANSFER_ENCODING);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    let full = Full::new(bytes).map_err(|e| match e {}).boxed();
    Ok(response.map(|()| full))
}
