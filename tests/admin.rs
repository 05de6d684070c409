//! The admin listener through real sockets: `/healthz`, `/status` against the
//! pool's live counters (requests, an open WebSocket, a server failing its
//! checks, a server draining after a reload), `/metrics` read with a strict
//! parser of the text exposition, the bearer token, the dashboard page, and
//! the routes' methods and headers.
//!
//! Everything runs on `127.0.0.1:0`; waits are bounded (`within`,
//! `wait_until`), never slept on.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HOST, WWW_AUTHENTICATE};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;

use support::*;

// === helpers ===

/// Two backends in `app`; in `other`, a live one with an explicit id and a
/// backup nobody listens on, both probed by TCP checks.
struct Pool {
    lb: Lb,
    a: Backend,
    b: Backend,
    c: Backend,
    dead: SocketAddr,
}

async fn pool(admin_extra: &str) -> Pool {
    let (a, b, c) = (
        spawn_backend("alpha").await,
        spawn_backend("beta").await,
        spawn_backend("gamma").await,
    );
    let dead = spawn_refusing().await;
    let app = format!(
        "servers = [{{ addr = \"{}\" }}, {{ addr = \"{}\", weight = 2, max_conns = 50 }}]",
        a.addr, b.addr
    );
    let toml = pool_toml(admin_extra, &app, c.addr, dead);
    let lb = spawn_lb(&toml).await;
    Pool { lb, a, b, c, dead }
}

/// The config of [`pool`], with `app_servers` as `[upstream.app]`'s servers.
fn pool_toml(admin_extra: &str, app_servers: &str, c: SocketAddr, dead: SocketAddr) -> String {
    format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"
upstream = "app"
[[listener.route]]
path_prefix = "/other"
upstream = "other"

[admin]
bind = "127.0.0.1:0"
{admin_extra}

[upstream.other]
balance = "least_conn"
servers = [{{ addr = "{c}", id = "charlie" }}, {{ addr = "{dead}", backup = true }}]
[upstream.other.check]
type = "tcp"
interval = "50ms"
timeout = "200ms"
rise = 1
fall = 1

[upstream.app]
{app_servers}
"#
    )
}

impl Pool {
    fn admin(&self) -> SocketAddr {
        self.lb.handle.admin_addr().expect("admin listener bound")
    }

    fn backend(&self, upstream: &str, addr: SocketAddr) -> Arc<latch::backend::Backend> {
        let snapshot = self.lb.handle.snapshot();
        let up = &snapshot.upstreams[upstream];
        up.backends
            .iter()
            .find(|b| b.addr == addr)
            .cloned()
            .expect("server in pool")
    }

    /// Waits until the checks have probed both servers of `other`.
    async fn checked(&self) {
        let (c, dead) = (
            self.backend("other", self.c.addr),
            self.backend("other", self.dead),
        );
        wait_until("checks probed c and dead", TIMEOUT, || {
            c.condition.snapshot_report().last_check.is_some() && !dead.condition.active_up()
        })
        .await;
    }
}

/// `method path` on the admin listener, with `Authorization: Bearer token`.
async fn admin(addr: SocketAddr, method: Method, path: &str, token: Option<&str>) -> Got {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, "admin");
    if let Some(t) = token {
        req = req.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    let got = within(path, http_request(addr, req.body(Full::default()).unwrap())).await;
    assert_eq!(got.1[CACHE_CONTROL], "no-store", "{path}");
    got
}

async fn get(addr: SocketAddr, path: &str) -> Got {
    admin(addr, Method::GET, path, None).await
}

async fn status_json(addr: SocketAddr) -> Value {
    let (status, headers, body) = get(addr, "/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[CONTENT_TYPE], "application/json");
    serde_json::from_slice(&body).expect("/status is JSON")
}

/// The server of `up` at `addr` in a `/status` document.
fn server<'a>(status: &'a Value, up: &str, addr: SocketAddr) -> &'a Value {
    let ups = status["upstreams"].as_array().unwrap();
    let up = ups
        .iter()
        .find(|u| u["name"] == up)
        .expect("upstream listed");
    let servers = up["servers"].as_array().unwrap();
    servers
        .iter()
        .find(|s| s["addr"] == addr.to_string())
        .expect("server listed")
}

// === /healthz and /status ===

#[tokio::test]
async fn healthz_is_ok_and_open() {
    let p = pool("token = \"s3cret\"").await;
    let (status, headers, body) = get(p.admin(), "/healthz").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok\n"[..]));
    assert!(
        headers[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
}

#[tokio::test]
async fn status_lists_every_server_with_live_counts() {
    let p = pool("").await;
    p.checked().await;
    for _ in 0..6 {
        let (s, _, _) = within("GET /name", http_get(p.lb.addr(), "localhost", "/name")).await;
        assert_eq!(s, StatusCode::OK);
    }
    let (mut ws, resp) = within("ws", ws_connect(p.lb.addr(), "/ws")).await;
    let ws_backend = if resp.headers()["x-backend"] == "alpha" {
        &p.a
    } else {
        &p.b
    };
    let tunnel_on = p.backend("app", ws_backend.addr);
    wait_until("tunnel counted", TIMEOUT, || tunnel_on.tunnels() == 1).await;
    // A request counts as active until latch has seen its body end, which
    // may come just after the client has read the last byte.
    let (la, lb) = (p.backend("app", p.a.addr), p.backend("app", p.b.addr));
    wait_until("requests done", TIMEOUT, || la.active() + lb.active() == 0).await;

    let st = status_json(p.admin()).await;
    assert!(st["uptime_secs"].is_u64());
    assert_eq!(st["draining"], Value::Array(vec![]));
    let names: Vec<&str> = st["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app", "other"], "sorted by name");
    assert_eq!(st["upstreams"][0]["balance"], "round_robin");
    assert_eq!(st["upstreams"][1]["balance"], "least_conn");

    let mut sum = 0;
    for mock in [&p.a, &p.b] {
        let s = server(&st, "app", mock.addr);
        assert_eq!(
            s["total"],
            mock.hits() as u64,
            "{} total = requests it got",
            mock.name
        );
        assert_eq!(s["tunnels"], u64::from(std::ptr::eq(mock, ws_backend)));
        assert_eq!(s["active"], 0);
        assert_eq!(
            (&s["state"], &s["weight_permille"]),
            (&"up".into(), &1000.into())
        );
        assert_eq!(
            (&s["last_check"], &s["last_transition_unix"]),
            (&Value::Null, &Value::Null)
        );
        assert_eq!(
            (&s["passive_fails"], &s["passive_outs"]),
            (&0.into(), &0.into())
        );
        assert_eq!(s["id"], mock.addr.to_string());
        sum += s["total"].as_u64().unwrap();
    }
    assert_eq!(sum, 7, "6 requests and 1 upgrade");
    let b = server(&st, "app", p.b.addr);
    assert_eq!(
        (&b["weight"], &b["max_conns"], &b["backup"]),
        (&2.into(), &50.into(), &false.into())
    );
    assert_eq!(server(&st, "app", p.a.addr)["max_conns"], Value::Null);

    let c = server(&st, "other", p.c.addr);
    assert_eq!((&c["id"], &c["state"]), (&"charlie".into(), &"up".into()));
    assert_eq!(
        (&c["last_check"]["ok"], &c["last_check"]["reason"]),
        (&true.into(), &"".into())
    );
    let now = st["now_unix"].as_u64().unwrap();
    assert!(c["last_check"]["at_unix"].as_u64().unwrap().abs_diff(now) < 60);
    let dead = server(&st, "other", p.dead);
    assert_eq!(
        (&dead["state"], &dead["backup"]),
        (&"down".into(), &true.into())
    );
    assert_eq!(dead["last_check"]["ok"], false);
    assert!(!dead["last_check"]["reason"].as_str().unwrap().is_empty());
    assert!(dead["last_transition_unix"].is_u64());

    // The tunnel closes; the count follows.
    ws.close(None).await.unwrap();
    drop(ws);
    wait_until("tunnel gone", TIMEOUT, || tunnel_on.tunnels() == 0).await;
    let st = status_json(p.admin()).await;
    assert_eq!(server(&st, "app", ws_backend.addr)["tunnels"], 0);
}

#[tokio::test]
async fn a_removed_server_with_a_tunnel_is_listed_as_draining() {
    let p = pool("").await;
    let (ws, resp) = within("ws", ws_connect(p.lb.addr(), "/ws")).await;
    let (held, kept) = if resp.headers()["x-backend"] == "alpha" {
        (&p.a, &p.b)
    } else {
        (&p.b, &p.a)
    };
    let tunnel_on = p.backend("app", held.addr);
    wait_until("tunnel counted", TIMEOUT, || tunnel_on.tunnels() == 1).await;
    // Reload without the server that holds the tunnel.
    let toml = pool_toml("", &servers(&[kept.addr]), p.c.addr, p.dead);
    let origin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test.toml");
    p.lb.handle
        .reload(latch::Config::parse(&toml, &origin).unwrap())
        .expect("reload");

    let st = status_json(p.admin()).await;
    let draining = st["draining"].as_array().unwrap();
    assert_eq!(draining.len(), 1, "{st}");
    let d = &draining[0];
    let id = held.addr.to_string();
    assert_eq!(
        (&d["upstream"], &d["id"], &d["addr"]),
        (&"app".into(), &id.as_str().into(), &id.as_str().into())
    );
    assert_eq!(
        (&d["state"], &d["tunnels"]),
        (&"draining".into(), &1.into())
    );
    assert_eq!(st["upstreams"][0]["servers"].as_array().unwrap().len(), 1);
    let (_, _, body) = get(p.admin(), "/metrics").await;
    let m = parse_exposition(std::str::from_utf8(&body).unwrap());
    let state = |s: &str| {
        m.value(
            "latch_upstream_servers",
            &[("upstream", "app"), ("state", s)],
        )
    };
    assert_eq!((state("draining"), state("up")), (Some(1.0), Some(1.0)));
    let labels = [("upstream", "app"), ("server", id.as_str())];
    assert_eq!(m.value("latch_server_open_tunnels", &labels), Some(1.0));
    assert_eq!(m.value("latch_server_up", &labels), Some(0.0));
    assert_eq!(
        m.value("latch_server_weight_permille", &labels),
        None,
        "only servers in rotation have a weight"
    );

    // Once its tunnel ends, the drained server leaves /status and the pool's
    // gauges (event counters such as latch_requests_total keep their series).
    drop(ws);
    wait_until("tunnel gone", TIMEOUT, || tunnel_on.tunnels() == 0).await;
    let mut left = false;
    for _ in 0..500 {
        let (_, _, body) = get(p.admin(), "/metrics").await;
        let m = parse_exposition(std::str::from_utf8(&body).unwrap());
        let pool_series = |s: &&Sample| s.name.starts_with("latch_server_");
        if !m
            .samples
            .iter()
            .filter(pool_series)
            .any(|s| s.labels["server"] == id)
        {
            left = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(left, "{id} still in /metrics after its tunnel closed");
    assert_eq!(
        status_json(p.admin()).await["draining"],
        Value::Array(vec![])
    );
}

// === /metrics ===

#[tokio::test]
async fn metrics_parse_and_match_the_pool() {
    let p = pool("").await;
    p.checked().await;
    let (_ws, _) = within("ws", ws_connect(p.lb.addr(), "/ws")).await;
    let all = [
        ("app", p.a.addr),
        ("app", p.b.addr),
        ("other", p.c.addr),
        ("other", p.dead),
    ];
    wait_until("tunnel counted", TIMEOUT, || {
        all.iter()
            .map(|(u, a)| p.backend(u, *a).tunnels())
            .sum::<usize>()
            == 1
    })
    .await;

    let (status, headers, body) = get(p.admin(), "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let ct = headers[CONTENT_TYPE].to_str().unwrap();
    assert!(
        ct.starts_with("application/openmetrics-text; version=1.0.0"),
        "{ct}"
    );
    let m = parse_exposition(std::str::from_utf8(&body).expect("UTF-8"));
    assert_eq!(m.types["latch_server_open_tunnels"], "gauge");
    assert_eq!(m.types["latch_server_up"], "gauge");
    assert_eq!(m.types["latch_requests"], "counter");
    assert_eq!(m.types["latch_request_duration_seconds"], "histogram");
    for (up, addr) in all {
        let b = p.backend(up, addr);
        let labels = [("upstream", up), ("server", b.id.as_str())];
        let tunnels = m.value("latch_server_open_tunnels", &labels);
        assert_eq!(tunnels, Some(b.tunnels() as f64), "{up} {addr}");
        let usable = m.value("latch_server_up", &labels);
        assert_eq!(
            usable,
            Some(f64::from(u8::from(b.condition.usable()))),
            "{up} {addr}"
        );
        let total = m.value("latch_server_requests_total", &labels);
        assert_eq!(total, Some(b.total() as f64), "{up} {addr}");
    }
    assert_eq!(
        m.value(
            "latch_server_up",
            &[("upstream", "other"), ("server", &p.dead.to_string())]
        ),
        Some(0.0)
    );
    let state =
        |up: &str, s: &str| m.value("latch_upstream_servers", &[("upstream", up), ("state", s)]);
    assert_eq!(
        (
            state("app", "up"),
            state("other", "up"),
            state("other", "down")
        ),
        (Some(2.0), Some(1.0), Some(1.0))
    );
    assert_eq!(state("app", "draining"), Some(0.0));
}

/// The request counters and the latency histogram count exactly the traffic
/// sent through latch, by upstream and status class.
#[tokio::test]
async fn request_metrics_count_the_traffic_sent() {
    let p = pool("").await;
    for _ in 0..12 {
        let (status, _, _) = http_get(p.lb.addr(), "localhost", "/name").await;
        assert_eq!(status, StatusCode::OK);
    }
    for _ in 0..3 {
        // Answered 404 by the backend itself.
        let (status, _, _) = http_get(p.lb.addr(), "localhost", "/no-such-page").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (ws, _) = within("ws", ws_connect(p.lb.addr(), "/ws")).await;
    drop(ws);
    let (_, _, body) = get(p.admin(), "/metrics").await;
    let m = parse_exposition(std::str::from_utf8(&body).expect("UTF-8"));
    let sum = |class: &str| -> f64 {
        m.samples
            .iter()
            .filter(|s| s.name == "latch_requests_total")
            .filter(|s| s.labels.get("upstream").map(String::as_str) == Some("app"))
            .filter(|s| s.labels.get("class").map(String::as_str) == Some(class))
            .map(|s| s.value)
            .sum()
    };
    assert_eq!(
        (sum("2xx"), sum("4xx"), sum("1xx"), sum("5xx")),
        (12.0, 3.0, 1.0, 0.0)
    );
    let count = m.value(
        "latch_request_duration_seconds_count",
        &[("upstream", "app")],
    );
    assert_eq!(count, Some(16.0));
    // Both servers of `app` show up under their ids, splitting the 2xx.
    let per_server: Vec<f64> = [&p.a, &p.b]
        .iter()
        .map(|b| {
            let id = b.addr.to_string();
            m.value(
                "latch_requests_total",
                &[
                    ("upstream", "app"),
                    ("server", id.as_str()),
                    ("class", "2xx"),
                ],
            )
            .unwrap_or(0.0)
        })
        .collect();
    assert_eq!(per_server.iter().sum::<f64>(), 12.0, "{per_server:?}");
    assert!(per_server.iter().all(|n| *n > 0.0), "{per_server:?}");
}

// === token ===

#[tokio::test]
async fn the_token_guards_everything_but_healthz() {
    let p = pool("token = \"s3cret\"").await;
    let addr = p.admin();
    for path in ["/status", "/metrics", "/"] {
        let (status, headers, _) = get(addr, path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} without a token");
        assert!(
            headers[WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let (status, _, _) = admin(addr, Method::GET, path, Some("s3cre")).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{path} with a wrong token"
        );
        let (status, _, _) = admin(addr, Method::GET, path, Some("s3cret")).await;
        assert_eq!(status, StatusCode::OK, "{path} with the token");
    }
    let (status, _, _) = get(addr, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    // The dashboard also takes it from the query (a browser opening the page).
    assert_eq!(get(addr, "/?token=s3cret").await.0, StatusCode::OK);
    assert_eq!(
        get(addr, "/status?token=s3cret").await.0,
        StatusCode::UNAUTHORIZED
    );
}

// === dashboard ===

#[tokio::test]
async fn the_dashboard_is_one_self_contained_page() {
    let p = pool("").await;
    p.checked().await;
    let (status, headers, body) = get(p.admin(), "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = std::str::from_utf8(&body).unwrap();
    for addr in [p.a.addr, p.b.addr, p.c.addr, p.dead] {
        assert!(
            html.contains(&format!("data-server=\"{addr}\"")),
            "row for {addr}"
        );
    }
    assert!(html.contains(r#"<td class="state"><span class="pill s-down">down</span>"#));
    assert!(html.contains("fetch(\"status\""), "refreshes from /status");
    for attr in ["src=", "href="] {
        for (i, _) in html.match_indices(attr) {
            let value = html[i + attr.len()..]
                .trim_start_matches(['"', '\''])
                .to_ascii_lowercase();
            assert!(
                !value.starts_with("http") && !value.starts_with("//"),
                "external {attr} at {i}"
            );
        }
    }
    assert!(!html.contains("{{"), "every placeholder filled");
}

// === routes ===

#[tokio::test]
async fn routes_methods_and_a_refused_reload() {
    let p = pool("").await;
    let addr = p.admin();
    // The pool's config was parsed from text: its file does not exist, so a
    // reload is refused with the config error and the running config stays.
    let (status, _, body) = admin(addr, Method::POST, "/reload", None).await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("cannot read config file"), "{body}");
    let (status, _, _) = get(addr, "/reload").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (_, _, metrics) = get(addr, "/metrics").await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("latch_reloads_total{outcome=\"error\"} 1"),
        "{metrics}"
    );
    assert_eq!(get(addr, "/nope").await.0, StatusCode::NOT_FOUND);
    let (status, headers, _) = admin(addr, Method::POST, "/status", None).await;
    assert_eq!(
        (status, headers[ALLOW].to_str().unwrap()),
        (StatusCode::METHOD_NOT_ALLOWED, "GET, HEAD")
    );
    let (status, _, body) = admin(addr, Method::HEAD, "/metrics", None).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 0));
}

#[tokio::test]
async fn post_reload_runs_the_reload_fn() {
    let answers = Arc::new(std::sync::Mutex::new(vec![
        Err("bad config".to_string()),
        Ok("reloaded".to_string()),
    ]));
    let reload: latch::admin::ReloadFn = Arc::new(move || {
        let next = answers.lock().unwrap().pop().unwrap_or(Ok("again".into()));
        Box::pin(async move { next })
    });
    let (addr, stop) = serve_admin(Some(reload)).await;
    let (status, _, body) = admin(addr, Method::POST, "/reload", None).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"reloaded\n"[..]));
    let (status, _, body) = admin(addr, Method::POST, "/reload", None).await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::BAD_REQUEST, &b"bad config\n"[..])
    );
    let (status, headers, _) = get(addr, "/reload").await;
    assert_eq!(
        (status, headers[ALLOW].to_str().unwrap()),
        (StatusCode::METHOD_NOT_ALLOWED, "POST")
    );
    stop.cancel();
}

/// `admin::serve` on its own, over a one-upstream pool, with `reload`.
async fn serve_admin(
    reload: Option<latch::admin::ReloadFn>,
) -> (SocketAddr, tokio_util::sync::CancellationToken) {
    let text = simple_config(&[spawn_refusing().await], "");
    let config = latch::Config::parse(&text, std::path::Path::new("test.toml")).unwrap();
    let metrics = Arc::new(latch::metrics::Metrics::new());
    let pool = latch::backend::Pool::default();
    let routing = latch::proxy::Routing::build(&config, &[], &pool, &metrics).unwrap();
    let shared = Arc::new(latch::proxy::Shared {
        routing: arc_swap::ArcSwap::from_pointee(routing),
        pool,
        tunnels: Default::default(),
        hard_stop: Default::default(),
        stop_spreads: Default::default(),
        metrics: metrics.clone(),
    });
    let state = latch::admin::AdminState {
        shared,
        metrics,
        token: Default::default(),
        reload,
        started: Instant::now(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let serve = latch::admin::serve(listener, Arc::new(state), stop.clone(), Default::default());
    tokio::spawn(serve);
    (addr, stop)
}

// === a strict reader of the text exposition ===

struct Exposition {
    /// Family name → type, from `# TYPE`.
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Exposition {
    /// The value of the sample `name` whose labels are exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }
}

/// Parses OpenMetrics/Prometheus text; panics on anything malformed: bad
/// names, labels or values, a sample of an undeclared family, a duplicate
/// series, a missing or early `# EOF`.
fn parse_exposition(text: &str) -> Exposition {
    let body = text.strip_suffix("# EOF\n").expect("ends with # EOF");
    let mut m = Exposition {
        types: HashMap::new(),
        samples: Vec::new(),
    };
    let mut seen = std::collections::HashSet::new();
    for line in body.lines() {
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kind, name, rest) = (
                parts.next().unwrap(),
                parts.next().expect("name"),
                parts.next().unwrap_or(""),
            );
            assert!(valid_name(name), "bad name in {line:?}");
            match kind {
                "TYPE" => {
                    let known = [
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "info",
                        "stateset",
                        "unknown",
                        "gaugehistogram",
                    ];
                    assert!(known.contains(&rest), "bad type in {line:?}");
                    assert!(
                        m.types.insert(name.into(), rest.into()).is_none(),
                        "TYPE twice: {line:?}"
                    );
                }
                "HELP" | "UNIT" => {}
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((n, l)) => (
                n,
                parse_labels(
                    l.strip_suffix('}')
                        .unwrap_or_else(|| panic!("unclosed {{ in {line:?}")),
                ),
            ),
        };
        assert!(valid_name(name), "bad name in {line:?}");
        let declared = [
            "", "_total", "_bucket", "_count", "_sum", "_created", "_info",
        ]
        .iter()
        .any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|f| m.types.contains_key(f))
        });
        assert!(declared, "sample of an undeclared family: {line:?}");
        assert!(seen.insert(series.to_string()), "duplicate series {series}");
        m.samples.push(Sample {
            name: name.into(),
            labels,
            value,
        });
    }
    m
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `a="x",b="y\"z"` (no closing brace).
fn parse_labels(mut s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    while !s.is_empty() {
        let (name, rest) = s
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad label in {s:?}"));
        assert!(valid_name(name), "bad label name {name:?}");
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => panic!("bad escape {other:?} in {s:?}"),
                },
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {s:?}"),
            }
        };
        assert!(
            out.insert(name.to_string(), value).is_none(),
            "label {name} twice"
        );
        s = &rest[end + 1..];
        s = s.strip_prefix(',').unwrap_or_else(|| {
            assert!(s.is_empty(), "junk after label: {s:?}");
            s
        });
    }
    out
}

#[test]
fn the_exposition_reader_is_strict() {
    let ok = "# TYPE x counter\nx_total{a=\"q\\\"\\n\"} 1\n# EOF\n";
    assert_eq!(parse_exposition(ok).samples[0].labels["a"], "q\"\n");
    for bad in [
        "x 1\n# EOF\n",                                 // undeclared family
        "# TYPE x gauge\nx 1\n",                        // no EOF
        "# TYPE x gauge\nx{a=\"1} 1\n# EOF\n",          // unterminated value
        "# TYPE x gauge\nx one\n# EOF\n",               // bad value
        "# TYPE x gauge\nx 1\nx 2\n# EOF\n",            // duplicate
        "# TYPE x gauge\n# EOF\nx 1\n# EOF\n",          // early EOF (unknown comment)
        "# TYPE x gauge\nx{a=\"1\"b=\"2\"} 1\n# EOF\n", // missing comma
    ] {
        let r = std::panic::catch_unwind(|| parse_exposition(bad));
        assert!(r.is_err(), "accepted {bad:?}");
    }
}
