//! A backend that carries sessions and reports its load, for the dispatcher
//! and pulled-load tests: `GET /load` answers how many WebSocket sessions it
//! holds plus `elsewhere` (sessions "from other balancers"), or whatever
//! answer the test sets; `GET /ws` upgrades and holds one session until the
//! client closes it; every answer names the backend in `x-backend`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use tokio::task::JoinSet;

/// Every task of one backend; dropping the set aborts them all.
#[derive(Clone)]
struct Tasks(Arc<Mutex<Option<JoinSet<()>>>>);

impl Tasks {
    fn new() -> Tasks {
        Tasks(Arc::new(Mutex::new(Some(JoinSet::new()))))
    }

    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = guard.as_mut() {
            while set.try_join_next().is_some() {}
            set.spawn(fut);
        }
    }

    fn take_all(&self) -> Option<JoinSet<()>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// What `GET /load` answers.
#[derive(Debug, Clone)]
pub enum LoadAnswer {
    /// Open sessions plus this many, as a bare number.
    Sessions { elsewhere: usize },
    /// `{"load": sessions + elsewhere, "max": max}`.
    Json { elsewhere: usize, max: usize },
    /// This status and body as they are.
    Fixed(u16, String),
}

struct State {
    name: String,
    sessions: AtomicUsize,
    polls: AtomicUsize,
    answer: Mutex<LoadAnswer>,
}

pub struct LoadBackend {
    pub addr: SocketAddr,
    pub name: String,
    state: Arc<State>,
    tasks: Tasks,
}

impl LoadBackend {
    /// WebSocket sessions open on it now.
    pub fn sessions(&self) -> usize {
        self.state.sessions.load(Ordering::SeqCst)
    }

    /// `GET /load` requests answered so far.
    pub fn polls(&self) -> usize {
        self.state.polls.load(Ordering::SeqCst)
    }

    pub fn set_answer(&self, a: LoadAnswer) {
        *self.state.answer.lock().unwrap_or_else(|e| e.into_inner()) = a;
    }
}

impl Drop for LoadBackend {
    fn drop(&mut self) {
        drop(self.tasks.take_all());
    }
}

/// Starts one on `127.0.0.1:0`.
pub async fn spawn_load_backend(name: &str, answer: LoadAnswer) -> LoadBackend {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("load backend: bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("load backend: local_addr");
    let state = Arc::new(State {
        name: name.to_owned(),
        sessions: AtomicUsize::new(0),
        polls: AtomicUsize::new(0),
        answer: Mutex::new(answer),
    });
    let tasks = Tasks::new();
    let (st, t) = (state.clone(), tasks.clone());
    tasks.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (st, t2) = (st.clone(), t.clone());
            t.spawn(async move {
                let svc = service_fn(move |req| {
                    let (st, t3) = (st.clone(), t2.clone());
                    async move { Ok::<_, Infallible>(handle(&st, &t3, req)) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    LoadBackend {
        addr,
        name: name.to_owned(),
        state,
        tasks,
    }
}

fn reply(st: &State, status: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("x-backend", st.name.as_str())
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn handle(st: &Arc<State>, tasks: &Tasks, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/load" => {
            st.polls.fetch_add(1, Ordering::SeqCst);
            let n = st.sessions.load(Ordering::SeqCst);
            let answer = st.answer.lock().unwrap_or_else(|e| e.into_inner()).clone();
            match answer {
                LoadAnswer::Sessions { elsewhere } => {
                    reply(st, 200, format!("{}\n", n + elsewhere))
                }
                LoadAnswer::Json { elsewhere, max } => reply(
                    st,
                    200,
                    format!("{{\"load\": {}, \"max\": {max}}}", n + elsewhere),
                ),
                LoadAnswer::Fixed(status, body) => reply(st, status, body),
            }
        }
        "/ws" => {
            let Some(key) = req.headers().get("sec-websocket-key") else {
                return reply(st, 400, "not a websocket handshake".into());
            };
            let accept = derive_accept_key(key.as_bytes());
            let on_upgrade = hyper::upgrade::on(&mut req);
            let held = st.clone();
            tasks.spawn(async move {
                let st = held;
                let Ok(up) = on_upgrade.await else { return };
                st.sessions.fetch_add(1, Ordering::SeqCst);
                // Hold the session until the client's side closes.
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                while matches!(io.read(&mut buf).await, Ok(n) if n > 0) {}
                st.sessions.fetch_sub(1, Ordering::SeqCst);
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("upgrade", "websocket")
                .header("connection", "Upgrade")
                .header("sec-websocket-accept", accept)
                .header("x-backend", st.name.as_str())
                .body(Full::new(Bytes::new()))
                .unwrap_or_default()
        }
        _ => reply(st, 200, st.name.clone()),
    }
}

/// The server `id` of `upstream` in a `/status` document.
pub fn status_server<'a>(
    status: &'a serde_json::Value,
    upstream: &str,
    id: &str,
) -> &'a serde_json::Value {
    status["upstreams"]
        .as_array()
        .and_then(|ups| ups.iter().find(|u| u["name"] == upstream))
        .and_then(|u| u["servers"].as_array())
        .and_then(|s| s.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("/status has no server {id} in {upstream}: {status}"))
}

/// Polls `/status` on `admin` (every 20 ms, for at most 10 s) until `pred`
/// holds; the load reports it waits for have no event to await.
pub async fn wait_status(
    admin: SocketAddr,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let limit = std::time::Duration::from_secs(10);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let status = super::dns::status_json(admin).await;
        if pred(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {limit:?}: {what}; last /status: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits until `/status` on `admin` shows server `id` of `upstream`
/// reporting exactly `load` (a fresh report), and returns it.
pub async fn wait_reported(admin: SocketAddr, upstream: &str, id: &str, load: Option<u64>) {
    wait_status(admin, &format!("{upstream}/{id} reports {load:?}"), |s| {
        status_server(s, upstream, id)["reported_load"].as_u64() == load
    })
    .await;
}
