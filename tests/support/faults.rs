//! Fault-injecting backends for the health-check and retry tests: a server
//! answering one fixed status to everything, a server that can be killed and
//! started again on the same port (with a switchable health endpoint), and
//! two broken WebSocket servers (200 to the handshake, 101 with a wrong
//! `Sec-WebSocket-Accept`). Plus [`wait_until`], a bounded poll for counters
//! and states that have no event to await.

use super::faulty::{drain, read_head};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::TIMEOUT;
use super::faulty::spawn_raw;
use super::pattern::{Checksum, RespBody, empty, text};

// === bounded polling ===

/// Polls `cond` every 10 ms until it holds; panics after `limit`. Only for
/// counters and states that have no event to await.
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// === task ownership ===

/// Every task of one fault server; aborted together on stop or drop, so the
/// listening socket and every connection close with the server.
#[derive(Clone)]
struct TaskSet(Arc<Mutex<Option<JoinSet<()>>>>);

impl TaskSet {
    fn new() -> Self {
        TaskSet(Arc::new(Mutex::new(Some(JoinSet::new()))))
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, fut: F) {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = guard.as_mut() {
            while set.try_join_next().is_some() {}
            set.spawn(fut);
        }
    }

    /// Aborts everything and waits (bounded) until it has ended.
    async fn stop(&self) {
        let set = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut set) = set {
            set.abort_all();
            let _ =
                tokio::time::timeout(TIMEOUT, async { while set.join_next().await.is_some() {} })
                    .await;
        }
    }

    fn abort(&self) {
        drop(self.0.lock().unwrap_or_else(|e| e.into_inner()).take());
    }
}

/// Accepts on `listener` and serves each connection with hyper (http1,
/// keep-alive) and `handler`, all inside `tasks`; counts accepted
/// connections in `accepted`.
fn serve_http<H, Fut>(
    listener: TcpListener,
    tasks: &TaskSet,
    accepted: Arc<AtomicUsize>,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<RespBody>> + Send + 'static,
{
    let conn_tasks = tasks.clone();
    tasks.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            accepted.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            conn_tasks.spawn(async move {
                let svc = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

fn with_backend_header(mut resp: Response<RespBody>, name: &str) -> Response<RespBody> {
    if let Ok(v) = HeaderValue::from_str(name) {
        resp.headers_mut().insert("x-backend", v);
    }
    resp
}

/// Reads a whole request body: `(length, FNV-1a checksum)`, or `None` if the
/// body broke off.
async fn body_checksum(body: Incoming) -> Option<(u64, u64)> {
    let mut body = body;
    let mut sum = Checksum::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.ok()?;
        if let Some(data) = frame.data_ref() {
            sum.update(data);
        }
    }
    Some((sum.len(), sum.finish()))
}

// === fixed-status server ===

struct StatusCtx {
    name: String,
    status: StatusCode,
    hits: AtomicUsize,
    last_hit: Mutex<Option<Instant>>,
}

/// A server answering every request with one fixed status. It reads the
/// whole request body first and answers `"{len} {checksum}"` (as the mock
/// backend's `/upload` does), with `x-backend: <name>`; a body-less status
/// (204, 304) gets an empty body. Requests for `/probe` (point health checks
/// there) are answered the same but not counted.
pub struct StatusServer {
    pub addr: SocketAddr,
    pub name: String,
    ctx: Arc<StatusCtx>,
    tasks: TaskSet,
}

impl StatusServer {
    /// Requests received (counted on arrival), except for `/probe`.
    pub fn hits(&self) -> usize {
        self.ctx.hits.load(Ordering::SeqCst)
    }

    /// When the last request (except for `/probe`) arrived.
    pub fn last_hit(&self) -> Option<Instant> {
        *self.ctx.last_hit.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.tasks.abort();
    }
}

/// Starts a [`StatusServer`] answering `status` on `127.0.0.1:0`.
pub async fn spawn_status(name: &str, status: u16) -> StatusServer {
    let status = StatusCode::from_u16(status).expect("valid status code");
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("status server: bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("status server: local_addr");
    let ctx = Arc::new(StatusCtx {
        name: name.to_string(),
        status,
        hits: AtomicUsize::new(0),
        last_hit: Mutex::new(None),
    });
    let tasks = TaskSet::new();
    let handler_ctx = ctx.clone();
    let accepted = Arc::new(AtomicUsize::new(0));
    serve_http(listener, &tasks, accepted, move |req: Request<Incoming>| {
        let ctx = handler_ctx.clone();
        async move {
            if req.uri().path() != "/probe" {
                ctx.hits.fetch_add(1, Ordering::SeqCst);
                *ctx.last_hit.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            }
            let sum = body_checksum(req.into_body()).await;
            let bodyless = ctx.status == StatusCode::NO_CONTENT
                || ctx.status == StatusCode::NOT_MODIFIED
                || ctx.status.is_informational();
            let resp = if bodyless {
                let mut r = Response::new(empty());
                *r.status_mut() = ctx.status;
                r
            } else {
                let body = match sum {
                    Some((len, sum)) => format!("{len} {sum}"),
                    None => "body error".to_string(),
                };
                text(ctx.status, body)
            };
            with_backend_header(resp, &ctx.name)
        }
    });
    StatusServer {
        addr,
        name: name.to_string(),
        ctx,
        tasks,
    }
}

// === restartable named server ===

struct NamedCtx {
    name: String,
    /// Requests other than `/health` (what latch forwarded).
    hits: AtomicUsize,
    /// `/health` requests (what the health checker sent).
    probes: AtomicUsize,
    healthy: AtomicBool,
    /// TCP connections accepted (probes of any type included).
    accepted: Arc<AtomicUsize>,
}

/// A small HTTP server that can be stopped and started again on the same
/// port. `GET /name` answers the name, `GET /health` answers 200 `ok` while
/// healthy and 503 otherwise, `POST /upload` answers `"{len} {checksum}"`;
/// every answer carries `x-backend: <name>`.
pub struct Named {
    pub addr: SocketAddr,
    pub name: String,
    ctx: Arc<NamedCtx>,
    tasks: TaskSet,
}

impl Named {
    /// Requests received other than health probes (`/health`).
    pub fn hits(&self) -> usize {
        self.ctx.hits.load(Ordering::SeqCst)
    }

    /// Health probes (`GET /health`) received.
    pub fn probes(&self) -> usize {
        self.ctx.probes.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far (a tcp or tls probe is one each).
    pub fn connections(&self) -> usize {
        self.ctx.accepted.load(Ordering::SeqCst)
    }

    /// Whether `/health` answers 200 (true) or 503 (false) from now on.
    pub fn set_healthy(&self, healthy: bool) {
        self.ctx.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Kills the server: the listener and every open connection close. Returns
    /// the address, to start another server on it with [`spawn_named_at`].
    pub async fn stop(self) -> SocketAddr {
        self.tasks.stop().await;
        self.addr
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        self.tasks.abort();
    }
}

/// Starts a [`Named`] server on `127.0.0.1:0`, healthy.
pub async fn spawn_named(name: &str) -> Named {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("named server: bind 127.0.0.1:0");
    spawn_named_on(name, listener)
}

/// Starts a [`Named`] server on `addr` (the port of a stopped one). Binding
/// is retried for a bounded time in case the old socket is still closing.
pub async fn spawn_named_at(name: &str, addr: SocketAddr) -> Named {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return spawn_named_on(name, listener),
            Err(e) => {
                assert!(Instant::now() < deadline, "rebinding {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Starts a [`Named`] server, healthy, accepting on `listener`.
pub fn spawn_named_on(name: &str, listener: TcpListener) -> Named {
    let addr = listener.local_addr().expect("named server: local_addr");
    let ctx = Arc::new(NamedCtx {
        name: name.to_string(),
        hits: AtomicUsize::new(0),
        probes: AtomicUsize::new(0),
        healthy: AtomicBool::new(true),
        accepted: Arc::new(AtomicUsize::new(0)),
    });
    let tasks = TaskSet::new();
    let handler_ctx = ctx.clone();
    serve_http(
        listener,
        &tasks,
        ctx.accepted.clone(),
        move |req: Request<Incoming>| {
            let ctx = handler_ctx.clone();
            async move {
                let resp = match (req.method().clone(), req.uri().path()) {
                    (Method::GET, "/health") => {
                        ctx.probes.fetch_add(1, Ordering::SeqCst);
                        if ctx.healthy.load(Ordering::SeqCst) {
                            text(StatusCode::OK, "ok")
                        } else {
                            text(StatusCode::SERVICE_UNAVAILABLE, "not ready")
                        }
                    }
                    (Method::GET, "/name") => {
                        ctx.hits.fetch_add(1, Ordering::SeqCst);
                        text(StatusCode::OK, ctx.name.clone())
                    }
                    (Method::POST, "/upload") => {
                        ctx.hits.fetch_add(1, Ordering::SeqCst);
                        match body_checksum(req.into_body()).await {
                            Some((len, sum)) => text(StatusCode::OK, format!("{len} {sum}")),
                            None => text(StatusCode::BAD_REQUEST, "body error"),
                        }
                    }
                    (_, path) => {
                        ctx.hits.fetch_add(1, Ordering::SeqCst);
                        text(StatusCode::NOT_FOUND, format!("not found: {path}"))
                    }
                };
                with_backend_header(resp, &ctx.name)
            }
        },
    );
    Named {
        addr,
        name: name.to_string(),
        ctx,
        tasks,
    }
}

// === broken WebSocket servers ===

/// Answers every request, WebSocket handshakes included, with `200 OK` and
/// body `ok`, then closes.
pub async fn spawn_ws_answers_200() -> SocketAddr {
    spawn_raw("ws-200", |mut s| async move {
        read_head(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .await;
        let _ = s.shutdown().await;
        drain(&mut s, Duration::from_secs(5)).await;
    })
    .await
}

/// Answers every request with `101 Switching Protocols`, `Upgrade: websocket`
/// and `Connection: Upgrade`, but a `Sec-WebSocket-Accept` that matches no
/// key; then keeps the connection until the peer closes it (bounded).
pub async fn spawn_ws_bad_accept() -> SocketAddr {
    spawn_raw("ws-bad-accept", |mut s| async move {
        read_head(&mut s).await;
        let _ = s
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
                  sec-websocket-accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
            )
            .await;
        drain(&mut s, Duration::from_secs(5)).await;
    })
    .await
}

// === TLS handshake server ===

/// A TLS server that completes handshakes and then waits for the peer to
/// close; it never answers anything. Counts accepted TCP connections.
pub struct Handshaker {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Handshaker {
    /// TCP connections accepted so far (one per tls probe).
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Starts a [`Handshaker`] presenting `acceptor`'s certificate.
pub async fn spawn_tls_handshaker(acceptor: TlsAcceptor) -> Handshaker {
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let addr = spawn_raw("tls-handshaker", move |s| {
        count.fetch_add(1, Ordering::SeqCst);
        let acceptor = acceptor.clone();
        async move {
            if let Ok(Ok(mut tls)) = tokio::time::timeout(TIMEOUT, acceptor.accept(s)).await {
                let mut buf = [0u8; 1024];
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    while let Ok(n) = tls.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
            }
        }
    })
    .await;
    Handshaker { addr, accepted }
}
