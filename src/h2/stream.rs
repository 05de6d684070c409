//! One HTTP/2 stream: its request converted and handed to
//! [`proxy::handle`], its answer converted back, and for a WebSocket the
//! upgraded stream handed to the tunnel the forwarder opened.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::convert::{self, Kind, WsAnswer};
use super::{Ctx, StreamGuard};
use crate::body::{Body, BoxError};
use crate::http1::ClientIo;
use crate::metrics::h2::Held;
use crate::proxy;

/// A response body that holds its stream's place in the connection's
/// activity until it ends (or is dropped).
pub(super) struct Tracked {
    inner: Body,
    _guard: Option<StreamGuard>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer latch makes itself (no backend was asked).
fn own(status: StatusCode, why: &'static str, guard: Option<StreamGuard>) -> Response<Tracked> {
    let body = Full::new(Bytes::from(format!("{why}\n")))
        .map_err(|e| match e {})
        .boxed();
    let mut resp = Response::new(Tracked {
        inner: body,
        _guard: guard,
    });
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    resp
}

/// Serves one stream; never fails (every error is an answer).
pub(super) async fn serve(ctx: Arc<Ctx>, mut req: Request<Incoming>) -> Response<Tracked> {
    let guard = StreamGuard::new(&ctx.activity);
    let metrics = &ctx.shared.metrics;
    metrics.h2.stream();
    let protocol = req
        .extensions()
        .get::<hyper::ext::Protocol>()
        .map(|p| p.as_str().to_owned());
    let kind = convert::kind(req.method(), protocol.as_deref());
    // A refusal still goes through `proxy::handle`, so that it is counted
    // and has its access-log line like any other answer.
    let refuse = match kind {
        Kind::Refused(status, why) => Some(proxy::Refuse(status, why)),
        _ => convert::request(&mut req, kind)
            .err()
            .map(|why| proxy::Refuse(StatusCode::BAD_REQUEST, why)),
    };
    if kind == Kind::Plain || refuse.is_some() {
        let mut req = req.map(|b| b.map_err(BoxError::from).boxed());
        if let Some(refuse) = refuse {
            req.extensions_mut().insert(refuse);
        }
        let resp = proxy::handle(ctx.shared.clone(), ctx.info.clone(), req).await;
        let (mut parts, body) = resp.into_parts();
        convert::response_headers(&mut parts.headers);
        return Response::from_parts(
            parts,
            Tracked {
                inner: body,
                _guard: Some(guard),
            },
        );
    }
    // A WebSocket: the tunnel gets the stream once hyper has sent the 200.
    let upgraded = hyper::upgrade::on(&mut req);
    let (tx, on_upgrade) = super::upgrade_slot();
    let mut req = req.map(|b| b.map_err(BoxError::from).boxed());
    req.extensions_mut().insert(on_upgrade);
    let mut resp = proxy::handle(ctx.shared.clone(), ctx.info.clone(), req).await;
    match convert::websocket_response(&mut resp) {
        WsAnswer::Tunnel => {
            let held = metrics.h2.websocket();
            tokio::spawn(async move {
                // An error: the client reset the stream or left first; the
                // tunnel then ends unstarted (its sender is dropped).
                if let Ok(up) = upgraded.await {
                    let io = Stream {
                        io: TokioIo::new(up),
                        _guard: guard,
                        _held: held,
                    };
                    let _ = tx.send(ClientIo::new(Box::new(io), &[]));
                }
            });
            resp.map(|inner| Tracked {
                inner,
                _guard: None,
            })
        }
        WsAnswer::Refused => resp.map(|inner| Tracked {
            inner,
            _guard: Some(guard),
        }),
        WsAnswer::NotUpgraded => own(
            StatusCode::BAD_GATEWAY,
            "the backend answered the WebSocket handshake without switching protocols",
            Some(guard),
        ),
    }
}

/// An upgraded stream, holding its place in the connection's activity and
/// the open WebSockets gauge for as long as the tunnel has it.
struct Stream {
    io: TokioIo<hyper::upgrade::Upgraded>,
    _guard: StreamGuard,
    _held: Held,
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
