//! The built-in demo backend used by `latch demo`.
//!
//! Each simulated backend is a tiny HTTP/1.1 + WebSocket server that names
//! itself in every response (an `x-backend` header plus JSON bodies), so the
//! effect of latch's routing and stickiness is visible from a browser:
//!
//! * `GET /` serves `page.html`, an inline page that exercises both transports;
//! * `GET /ws` is a WebSocket echo that greets with `{"backend":"<name>"}`;
//! * `GET|POST /poll` is a socket.io-like long-poll transport whose sessions
//!   live only in this backend's memory, so a non-sticky balancer produces
//!   socket.io's `Session ID unknown` error;
//! * `GET /health` answers `200 ok`; everything else is `404`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Message, Role, WebSocketConfig};

const PAGE: &str = include_str!("page.html");
const POLL_WAIT: Duration = Duration::from_secs(25);
const SESSION_IDLE: Duration = Duration::from_mins(5);
const MAX_BODY: usize = 64 * 1024;
const MAX_SESSIONS: usize = 10_000;
const MAX_QUEUED: usize = 1_000;
const MAX_WS_MESSAGE: usize = 1 << 20;
const UNKNOWN_SID: &str = r#"{"code":1,"message":"Session ID unknown"}"#;

type Resp = Response<Full<Bytes>>;

/// One long-poll session: queued messages and a wake-up for waiting GETs.
struct Session {
    messages: Vec<String>,
    notify: Arc<Notify>,
    last_seen: Instant,
}

struct Backend {
    name: String,
    header: HeaderValue,
    page: Bytes,
    sessions: Mutex<HashMap<String, Session>>,
    counter: AtomicU64,
    /// Never sent on; it resolves `changed()` with an error once the accept
    /// task (which owns the sender) is aborted, ending connections and sockets.
    shutdown: watch::Receiver<()>,
}

/// Serve one demo backend named `name` on an already-bound listener until the
/// returned task is aborted. Each accepted connection is served with hyper's
/// http1 server (with upgrades enabled).
pub fn spawn_backend(name: String, listener: TcpListener) -> JoinHandle<()> {
    let (shutdown_tx, shutdown) = watch::channel(());
    let header_name = name.replace(|c: char| !(c.is_ascii_graphic() || c == ' '), "_");
    let backend = Arc::new(Backend {
        header: HeaderValue::from_str(&header_name).unwrap_or(HeaderValue::from_static("demo")),
        page: Bytes::from(PAGE.replace("{{BACKEND}}", &html_escape(&name))),
        name,
        sessions: Mutex::new(HashMap::new()),
        counter: AtomicU64::new(0),
        shutdown,
    });
    tokio::spawn(async move {
        let _shutdown_tx = shutdown_tx;
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(backend = %backend.name, %err, "demo backend accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let backend = backend.clone();
            tokio::spawn(async move {
                let svc_backend = backend.clone();
                let svc = service_fn(move |req| {
                    let backend = svc_backend.clone();
                    async move { Ok::<_, Infallible>(backend.handle(req).await) }
                });
                let conn = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades();
                tokio::select! {
                    res = conn => if let Err(err) = res {
                        tracing::debug!(backend = %backend.name, %err, "demo connection error");
                    },
                    () = backend.stopped() => {}
                }
            });
        }
    })
}

impl Backend {
    async fn stopped(&self) {
        let mut rx = self.shutdown.clone();
        while rx.changed().await.is_ok() {}
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Resp {
        let mut resp = match (req.method(), req.uri().path()) {
            (&Method::GET, "/") => respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                self.page.clone(),
            ),
            (&Method::GET, "/health") => text(StatusCode::OK, "ok"),
            (_, "/ws") => self.websocket(req),
            (&Method::GET, "/poll") => match query_sid(&req) {
                None => self.create_session(),
                Some(sid) => self.poll_get(&sid).await,
            },
            (&Method::POST, "/poll") => self.poll_post(req).await,
            _ => text(StatusCode::NOT_FOUND, "not found"),
        };
        let headers = resp.headers_mut();
        headers.insert("x-backend", self.header.clone());
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }

    fn websocket(self: &Arc<Self>, mut req: Request<Incoming>) -> Resp {
        let accept = match handshake_key(&req) {
            Ok(key) => derive_accept_key(key.as_bytes()),
            Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
        };
        let Ok(accept) = HeaderValue::from_str(&accept) else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "bad accept key");
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        let backend = self.clone();
        tokio::spawn(async move {
            let session = async {
                match on_upgrade.await {
                    Ok(upgraded) => backend.echo(upgraded).await,
                    Err(err) => tracing::debug!(%err, "demo websocket upgrade failed"),
                }
            };
            tokio::select! {
                () = session => {}
                () = backend.stopped() => {}
            }
        });
        let mut resp = Response::new(Full::default());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = resp.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        resp
    }

    /// Greet with the backend name, then echo text and binary frames until
    /// Close. tungstenite queues pong and close replies and writes them on flush.
    async fn echo(&self, upgraded: Upgraded) {
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_WS_MESSAGE))
            .max_frame_size(Some(MAX_WS_MESSAGE));
        let io = TokioIo::new(upgraded);
        let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        let hello = format!("{{\"backend\":{}}}", json_str(&self.name));
        if ws.send(Message::text(hello)).await.is_err() {
            return;
        }
        // Close is flushed like pings; the stream then ends with `None`.
        while let Some(Ok(msg)) = ws.next().await {
            let res = if msg.is_text() || msg.is_binary() {
                ws.send(msg).await
            } else {
                ws.flush().await
            };
            if res.is_err() {
                break;
            }
        }
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn create_session(&self) -> Resp {
        let mut sessions = self.sessions();
        sessions.retain(|_, s| s.last_seen.elapsed() < SESSION_IDLE);
        if sessions.len() >= MAX_SESSIONS {
            return text(StatusCode::SERVICE_UNAVAILABLE, "too many sessions");
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // RandomState is seeded randomly per process, so ids are not guessable.
        let hash = |salt: u8| RandomState::new().hash_one((n, nanos, salt));
        let sid = format!("{:016x}{:016x}", hash(0), hash(1));
        let session = Session {
            messages: Vec::new(),
            notify: Arc::new(Notify::new()),
            last_seen: Instant::now(),
        };
        sessions.insert(sid.clone(), session);
        let (sid, name) = (json_str(&sid), json_str(&self.name));
        json(
            StatusCode::OK,
            format!("{{\"sid\":{sid},\"backend\":{name}}}"),
        )
    }

    /// Wait (up to [`POLL_WAIT`]) until session `sid` has queued messages.
    async fn poll_get(&self, sid: &str) -> Resp {
        let deadline = Instant::now() + POLL_WAIT;
        loop {
            let notified = {
                let mut sessions = self.sessions();
                let Some(session) = live_session(&mut sessions, sid) else {
                    return json(StatusCode::BAD_REQUEST, UNKNOWN_SID);
                };
                if !session.messages.is_empty() || Instant::now() >= deadline {
                    let messages: Vec<String> =
                        session.messages.drain(..).map(|m| json_str(&m)).collect();
                    let name = json_str(&self.name);
                    let body = format!(
                        "{{\"backend\":{name},\"messages\":[{}]}}",
                        messages.join(",")
                    );
                    return json(StatusCode::OK, body);
                }
                // Register interest while still holding the lock so a POST
                // that lands before we start awaiting still wakes us.
                let mut notified = Box::pin(session.notify.clone().notified_owned());
                notified.as_mut().enable();
                notified
            };
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    async fn poll_post(&self, req: Request<Incoming>) -> Resp {
        let sid = query_sid(&req).unwrap_or_default();
        if live_session(&mut self.sessions(), &sid).is_none() {
            return json(StatusCode::BAD_REQUEST, UNKNOWN_SID);
        }
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
                return text(StatusCode::PAYLOAD_TOO_LARGE, "message too large");
            }
            Err(_) => return text(StatusCode::BAD_REQUEST, "could not read body"),
        };
        let Ok(message) = String::from_utf8(body.into()) else {
            return text(StatusCode::BAD_REQUEST, "message must be UTF-8 text");
        };
        let mut sessions = self.sessions();
        let Some(session) = live_session(&mut sessions, &sid) else {
            return json(StatusCode::BAD_REQUEST, UNKNOWN_SID);
        };
        if session.messages.len() >= MAX_QUEUED {
            return text(StatusCode::TOO_MANY_REQUESTS, "too many queued messages");
        }
        session.messages.push(message);
        session.notify.notify_waiters();
        let name = json_str(&self.name);
        json(
            StatusCode::OK,
            format!("{{\"backend\":{name},\"ok\":true}}"),
        )
    }
}

/// Look up a session, dropping it if it has been idle too long, and mark it used.
fn live_session<'a>(
    sessions: &'a mut HashMap<String, Session>,
    sid: &str,
) -> Option<&'a mut Session> {
    if sessions.get(sid)?.last_seen.elapsed() >= SESSION_IDLE {
        sessions.remove(sid);
        return None;
    }
    let session = sessions.get_mut(sid)?;
    session.last_seen = Instant::now();
    Some(session)
}

/// The `sid` query parameter, if present (ids are hex, so no decoding needed).
fn query_sid<B>(req: &Request<B>) -> Option<String> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("sid="))
        .map(str::to_owned)
}

/// Validate a WebSocket upgrade request and return its `Sec-WebSocket-Key`.
fn handshake_key<B>(req: &Request<B>) -> Result<&HeaderValue, &'static str> {
    let headers = req.headers();
    if req.method() != Method::GET {
        return Err("websocket handshake must use GET");
    }
    if !has_token(headers, header::UPGRADE, "websocket") {
        return Err("expected Upgrade: websocket");
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err("expected Connection: upgrade");
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        return Err("expected Sec-WebSocket-Version: 13");
    }
    match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if !key.is_empty() => Ok(key),
        _ => Err("missing Sec-WebSocket-Key"),
    }
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn text(status: StatusCode, body: &'static str) -> Resp {
    respond(status, "text/plain; charset=utf-8", body)
}

fn json(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    respond(status, "application/json", body)
}

/// A JSON string literal (with quotes) for `s`.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::time::timeout;

    async fn within<F: Future>(fut: F) -> F::Output {
        timeout(Duration::from_secs(10), fut)
            .await
            .expect("timed out")
    }

    async fn start(name: &str) -> (std::net::SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (addr, spawn_backend(name.to_owned(), listener))
    }

    /// Send one HTTP/1.1 request over a fresh connection; return (status, head, body).
    async fn http(
        addr: std::net::SocketAddr,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, String, String) {
        within(async {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let req = format!(
                "{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(req.as_bytes()).await.unwrap();
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.unwrap();
            let raw = String::from_utf8(raw).unwrap();
            let (head, body) = raw.split_once("\r\n\r\n").unwrap();
            let status = head[9..12].parse().unwrap();
            (status, head.to_ascii_lowercase(), body.to_owned())
        })
        .await
    }

    fn sid_of(body: &str) -> String {
        let rest = body.split_once("\"sid\":\"").unwrap().1;
        rest.split_once('"').unwrap().0.to_owned()
    }

    #[tokio::test]
    async fn page_health_and_errors() {
        let (addr, task) = start("b<1>").await;
        let (status, head, body) = http(addr, "GET", "/", "").await;
        assert_eq!(status, 200);
        assert!(head.contains("content-type: text/html; charset=utf-8"));
        assert!(head.contains("x-backend: b<1>"));
        assert!(body.contains("Served by backend <strong id=\"backend\">b&lt;1&gt;</strong>"));
        assert!(!body.contains("{{BACKEND}}"));
        assert_eq!(http(addr, "GET", "/health", "").await.2, "ok");
        let (status, head, _) = http(addr, "GET", "/nope", "").await;
        assert_eq!(status, 404);
        assert!(head.contains("x-backend: b<1>"));
        assert_eq!(http(addr, "GET", "/ws", "").await.0, 400);
        task.abort();
    }

    #[tokio::test]
    async fn websocket_hello_and_echo() {
        let (addr, task) = start("ws-b").await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut ws, resp) = within(tokio_tungstenite::client_async(
            format!("ws://{addr}/ws"),
            tcp,
        ))
        .await
        .unwrap();
        assert_eq!(resp.headers().get("x-backend").unwrap(), "ws-b");
        let hello = within(ws.next()).await.unwrap().unwrap();
        assert_eq!(hello, Message::text(r#"{"backend":"ws-b"}"#));
        for msg in [
            Message::text("hi there"),
            Message::binary(vec![0u8, 1, 2, 255]),
        ] {
            within(ws.send(msg.clone())).await.unwrap();
            assert_eq!(within(ws.next()).await.unwrap().unwrap(), msg);
        }
        within(ws.send(Message::Ping(Bytes::from_static(b"p"))))
            .await
            .unwrap();
        assert_eq!(
            within(ws.next()).await.unwrap().unwrap(),
            Message::Pong(Bytes::from_static(b"p"))
        );
        within(ws.close(None)).await.unwrap();
        while let Some(Ok(_)) = within(ws.next()).await {}
        task.abort();
    }

    #[tokio::test]
    async fn abort_closes_open_websockets() {
        let (addr, task) = start("gone").await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut ws, _) = within(tokio_tungstenite::client_async(
            format!("ws://{addr}/ws"),
            tcp,
        ))
        .await
        .unwrap();
        assert!(within(ws.next()).await.unwrap().is_ok());
        task.abort();
        while let Some(Ok(_)) = within(ws.next()).await {}
    }

    #[tokio::test]
    async fn long_poll_exchange() {
        let (addr, task) = start("poll-b").await;
        let (status, head, body) = http(addr, "GET", "/poll", "").await;
        assert_eq!(status, 200);
        assert!(head.contains("content-type: application/json"));
        assert!(body.ends_with(r#","backend":"poll-b"}"#), "{body}");
        let sid = sid_of(&body);
        assert_eq!(sid.len(), 32);
        assert_ne!(sid, sid_of(&http(addr, "GET", "/poll", "").await.2));

        let url = format!("/poll?EIO=4&sid={sid}");
        let mut poll =
            tokio::spawn(async move { http(addr, "GET", &format!("/poll?sid={sid}"), "").await });
        // The GET must still be waiting: nothing has been posted yet.
        assert!(
            timeout(Duration::from_millis(200), &mut poll)
                .await
                .is_err()
        );
        let posted = http(addr, "POST", &url, "hi \"there\"\n").await;
        assert_eq!(
            (posted.0, posted.2.as_str()),
            (200, r#"{"backend":"poll-b","ok":true}"#)
        );
        let (status, _, body) = within(poll).await.unwrap();
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"backend":"poll-b","messages":["hi \"there\"\n"]}"#)
        );

        // Messages posted before the GET are returned immediately, in order.
        http(addr, "POST", &url, "a").await;
        http(addr, "POST", &url, "b").await;
        let (_, _, body) = http(addr, "GET", &url, "").await;
        assert_eq!(body, r#"{"backend":"poll-b","messages":["a","b"]}"#);

        let big = "x".repeat(MAX_BODY + 1);
        assert_eq!(http(addr, "POST", &url, &big).await.0, 413);
        task.abort();
    }

    #[tokio::test]
    async fn unknown_sid_is_socket_io_error() {
        let (a, task_a) = start("a").await;
        let (b, task_b) = start("b").await;
        let sid = sid_of(&http(a, "GET", "/poll", "").await.2);
        // A session from backend a is unknown to backend b (what a non-sticky balancer hits).
        for (method, body) in [("GET", ""), ("POST", "msg")] {
            let (status, head, resp) = http(b, method, &format!("/poll?sid={sid}"), body).await;
            assert_eq!(status, 400);
            assert!(head.contains("content-type: application/json"));
            assert_eq!(resp, r#"{"code":1,"message":"Session ID unknown"}"#);
        }
        assert_eq!(http(a, "POST", "/poll", "no sid").await.0, 400);
        task_a.abort();
        task_b.abort();
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n\u{1}é"), r#""a\"b\\c\n\u0001é""#);
    }
}
