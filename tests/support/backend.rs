//! Mock HTTP/WebSocket backend (hyper http1 server with upgrades).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::TIMEOUT;
use super::backend_ws::{self, WsRoute};
use super::pattern::{ChannelBody, Checksum, PatternBody, RespBody, text};

/// Every task a backend spawned; aborted all at once when the backend goes.
/// `None` once the backend is stopped, so late spawns are dropped, not leaked.
#[derive(Clone, Default)]
pub struct Tasks(Arc<Mutex<Option<JoinSet<()>>>>);

impl Tasks {
    fn new() -> Self {
        Tasks(Arc::new(Mutex::new(Some(JoinSet::new()))))
    }

    pub fn spawn<F: Future<Output = ()> + Send + 'static>(&self, fut: F) {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = guard.as_mut() {
            while set.try_join_next().is_some() {}
            set.spawn(fut);
        }
    }

    fn take(&self) -> Option<JoinSet<()>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// State shared by a backend's handlers.
pub struct Ctx {
    pub name: String,
    hits: AtomicUsize,
    last_headers: Mutex<HeaderMap>,
    last_uri: Mutex<Option<String>>,
    pub tasks: Tasks,
}

/// A running mock backend. Stops (aborting all of its tasks, including open
/// connections and WebSocket sessions) when dropped; [`Backend::stop`] does
/// the same and also waits until the listening socket is closed.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    ctx: Arc<Ctx>,
}

impl Backend {
    /// Requests received so far (counted on arrival, before answering; a
    /// WebSocket handshake counts as one request).
    pub fn hits(&self) -> usize {
        self.ctx.hits.load(Ordering::SeqCst)
    }

    /// Headers of the last request received (empty before any request).
    pub fn last_headers(&self) -> HeaderMap {
        self.ctx
            .last_headers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Request-target (path and query) of the last request received.
    pub fn last_uri(&self) -> Option<String> {
        self.ctx
            .last_uri
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `http://127.0.0.1:port`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the backend and waits until every task (the listener included)
    /// has ended, so new connections to `addr` are refused afterwards.
    pub async fn stop(self) {
        if let Some(mut set) = self.ctx.tasks.take() {
            set.abort_all();
            let _ =
                tokio::time::timeout(TIMEOUT, async { while set.join_next().await.is_some() {} })
                    .await;
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // Dropping a JoinSet aborts every task in it.
        drop(self.ctx.tasks.take());
    }
}

/// Starts a plain-TCP mock backend on `127.0.0.1:0`.
pub async fn spawn_backend(name: &str) -> Backend {
    start(name, None).await
}

/// Starts the same mock backend behind TLS (see `tls::tls_acceptor`).
pub async fn spawn_tls_backend(name: &str, acceptor: TlsAcceptor) -> Backend {
    start(name, Some(acceptor)).await
}

/// Starts the plain-TCP mock backend accepting on `listener` (e.g. one
/// bound on another loopback address such as `127.0.0.3`).
pub fn spawn_backend_on(name: &str, listener: TcpListener) -> Backend {
    start_on(name, listener, None)
}

async fn start(name: &str, tls: Option<TlsAcceptor>) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("backend: bind 127.0.0.1:0");
    start_on(name, listener, tls)
}

fn start_on(name: &str, listener: TcpListener, tls: Option<TlsAcceptor>) -> Backend {
    let addr = listener.local_addr().expect("backend: local_addr");
    let ctx = Arc::new(Ctx {
        name: name.to_string(),
        hits: AtomicUsize::new(0),
        last_headers: Mutex::new(HeaderMap::new()),
        last_uri: Mutex::new(None),
        tasks: Tasks::new(),
    });
    let accept_ctx = ctx.clone();
    ctx.tasks.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let conn_ctx = accept_ctx.clone();
            let tls = tls.clone();
            accept_ctx.tasks.spawn(async move {
                match tls {
                    None => serve(stream, conn_ctx).await,
                    Some(acceptor) => {
                        if let Ok(Ok(s)) =
                            tokio::time::timeout(TIMEOUT, acceptor.accept(stream)).await
                        {
                            serve(s, conn_ctx).await
                        }
                    }
                }
            });
        }
    });
    Backend {
        addr,
        name: name.to_string(),
        ctx,
    }
}

async fn serve<IO>(io: IO, ctx: Arc<Ctx>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(ctx, req).await) }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades()
        .await;
}

async fn handle(ctx: Arc<Ctx>, req: Request<Incoming>) -> Response<RespBody> {
    ctx.hits.fetch_add(1, Ordering::SeqCst);
    *ctx.last_headers.lock().unwrap_or_else(|e| e.into_inner()) = req.headers().clone();
    *ctx.last_uri.lock().unwrap_or_else(|e| e.into_inner()) = Some(target(&req));

    let path = req.uri().path().to_string();
    let mut resp = match (req.method().clone(), path.as_str()) {
        (Method::GET, "/name") => text(StatusCode::OK, ctx.name.clone()),
        (_, "/echo") => echo(req).await,
        (Method::GET, "/slow-stream") => slow_stream(&ctx, &req),
        (Method::GET, "/hang") => std::future::pending().await,
        (Method::GET, "/big") => big(&req),
        (Method::POST, "/upload") => upload(req).await,
        (Method::GET, "/ws") => backend_ws::handle(&ctx, req, WsRoute::Echo),
        (Method::GET, "/ws-close") => backend_ws::handle(&ctx, req, WsRoute::Close),
        (Method::GET, "/ws-refuse") => backend_ws::handle(&ctx, req, WsRoute::Refuse),
        (Method::GET, "/ws-wrong") => backend_ws::handle(&ctx, req, WsRoute::Wrong),
        (_, "/name" | "/slow-stream" | "/hang" | "/big" | "/upload") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => text(StatusCode::NOT_FOUND, format!("not found: {path}")),
    };
    if let Ok(v) = HeaderValue::from_str(&ctx.name) {
        resp.headers_mut().insert("x-backend", v);
    }
    resp
}

fn target(req: &Request<Incoming>) -> String {
    req.uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().to_string())
}

fn query_param<'a>(req: &'a Request<Incoming>, key: &str) -> Option<&'a str> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

async fn echo(req: Request<Incoming>) -> Response<RespBody> {
    let mut out = format!("{} {}\n", req.method(), target(&req));
    for (name, value) in req.headers() {
        out.push_str(&format!(
            "{}: {}\n",
            name,
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    out.push('\n');
    let mut out = out.into_bytes();
    match req.into_body().collect().await {
        Ok(body) => out.extend_from_slice(&body.to_bytes()),
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("echo: body error: {e}")),
    }
    text(StatusCode::OK, out)
}

fn slow_stream(ctx: &Ctx, req: &Request<Incoming>) -> Response<RespBody> {
    let ms = query_param(req, "ms")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1000);
    let (tx, body) = ChannelBody::new(2);
    tx.try_send(Bytes::from_static(b"first\n"))
        .expect("fresh channel has room");
    ctx.tasks.spawn(async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let _ = tx.send(Bytes::from_static(b"last\n")).await;
    });
    Response::new(body.boxed())
}

fn big(req: &Request<Incoming>) -> Response<RespBody> {
    let Some(n) = query_param(req, "bytes").and_then(|v| v.parse::<u64>().ok()) else {
        return text(StatusCode::BAD_REQUEST, "big: need ?bytes=N");
    };
    // `chunked=1` hides the length so the body goes out chunk-encoded.
    let body = if query_param(req, "chunked") == Some("1") {
        PatternBody::chunked(n)
    } else {
        PatternBody::new(n)
    };
    Response::new(body.boxed())
}

async fn upload(req: Request<Incoming>) -> Response<RespBody> {
    let mut body = req.into_body();
    let mut sum = Checksum::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    sum.update(data);
                }
            }
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("upload: body error: {e}")),
        }
    }
    text(StatusCode::OK, format!("{} {}", sum.len(), sum.finish()))
}
