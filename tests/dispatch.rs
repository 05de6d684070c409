//! The dispatcher route (issue 11 §3): `dispatch = "NAME"` answers the best
//! server of an upstream as JSON — healthy, not full, least loaded by what
//! the servers report — with `advertise` addresses, a 503 with Retry-After
//! when none can be named, stickiness by signed cookie or ip_hash, and
//! counts in `/status` and `/metrics`. Real sockets: latch on 127.0.0.1:0,
//! backends that report their load over HTTP.

mod support;

use std::net::SocketAddr;
use std::path::Path;

use serde_json::Value;
use support::dns::{metric, status_json};
use support::http_client::http_get_with;
use support::lb::spawn_lb;
use support::load_backend::{
    LoadAnswer, LoadBackend, spawn_load_backend, status_server, wait_reported,
};

fn fixed(body: &str) -> LoadAnswer {
    LoadAnswer::Fixed(200, body.to_string())
}

/// A listener whose `/dispatch` dispatches from `chat`, and an admin listener.
fn config(servers: &str, extra: &str) -> String {
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[[listener]]
bind = "127.0.0.1:0"
[[listener.route]]
path_prefix = "/dispatch"
dispatch = "chat"
retry_after = "7s"

[upstream.chat]
balance = "least_conn"
servers = [{servers}]

[upstream.chat.load]
interval = "50ms"
timeout = "1s"
{extra}
"#
    )
}

fn entry(id: &str, b: &LoadBackend, more: &str) -> String {
    format!("{{ id = \"{id}\", addr = \"{}\"{more} }}", b.addr)
}

async fn dispatch(lb: SocketAddr, headers: &[(&str, &str)]) -> (u16, http::HeaderMap, Value) {
    let (status, h, body) = http_get_with(lb, "chat.test", "/dispatch", headers).await;
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("dispatch answer is not JSON ({e}): {body:?}"));
    (status.as_u16(), h, json)
}

#[tokio::test]
async fn names_the_least_loaded_server_with_its_advertised_addresses() {
    let a = spawn_load_backend("a", fixed("50")).await;
    let b = spawn_load_backend("b", fixed(r#"{"load": 10, "max": 1000}"#)).await;
    let c = spawn_load_backend("c", fixed("30\n")).await;
    let servers = [
        entry("a", &a, ""),
        entry(
            "b",
            &b,
            r#", advertise = ["chat-b.example.net:5222", "[2001:db8::b]:5222"]"#,
        ),
        entry("c", &c, ""),
    ]
    .join(", ");
    let lb = spawn_lb(&config(&servers, "")).await;
    let admin = lb.handle.admin_addr().expect("admin listener");
    for (id, load) in [("a", 50), ("b", 10), ("c", 30)] {
        wait_reported(admin, "chat", id, Some(load)).await;
    }

    let (status, headers, json) = dispatch(lb.addr(), &[]).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        json,
        serde_json::json!({
            "id": "b",
            "host": "chat-b.example.net",
            "port": 5222,
            "addrs": ["chat-b.example.net:5222", "[2001:db8::b]:5222"],
        })
    );
    // Make b the busiest: c is named, by its `addr`.
    b.set_answer(fixed("60"));
    wait_reported(admin, "chat", "b", Some(60)).await;
    let (_, _, json) = dispatch(lb.addr(), &[]).await;
    assert_eq!(json["id"], "c");
    assert_eq!(json["host"], "127.0.0.1");
    assert_eq!(json["port"], c.addr.port());
    assert_eq!(json["addrs"], serde_json::json!([c.addr.to_string()]));

    // Nothing was proxied: the servers only saw load polls and no sessions.
    assert_eq!((a.sessions(), b.sessions(), c.sessions()), (0, 0, 0));
    // Only GET (and HEAD) are answered.
    let post = http::Request::post("/dispatch")
        .header("host", "chat.test")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let (st, _, _) = support::http_client::http_request(lb.addr(), post).await;
    assert_eq!(st.as_u16(), 400);
    let head = http::Request::head("/dispatch")
        .header("host", "chat.test")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let (st, h, body) = support::http_client::http_request(lb.addr(), head).await;
    assert_eq!((st.as_u16(), body.len()), (200, 0));
    assert_eq!(h["content-type"], "application/json");

    // Counted per server in /status and /metrics.
    let status = status_json(admin).await;
    assert_eq!(status_server(&status, "chat", "b")["dispatches"], 1);
    assert_eq!(
        status_server(&status, "chat", "c")["dispatches"],
        2,
        "GET and HEAD"
    );
    assert_eq!(status_server(&status, "chat", "a")["dispatches"], 0);
    let series = r#"latch_server_dispatches_total{upstream="chat",server="c"}"#;
    assert_eq!(metric(admin, series).await, 2.0);
    let series = r#"latch_server_reported_load{upstream="chat",server="a"}"#;
    assert_eq!(metric(admin, series).await, 50.0);
}

#[tokio::test]
async fn full_or_down_servers_are_never_named_and_none_left_is_a_503() {
    let a = spawn_load_backend("a", fixed(r#"{"load": 5, "max": 5}"#)).await;
    let b = spawn_load_backend("b", fixed("9")).await;
    // A server that is down by its health check: nothing listens there,
    // and its failed load poll leaves it the "least loaded".
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let servers = format!(
        "{}, {}, {{ id = \"dead\", addr = \"{dead}\" }}",
        entry("a", &a, ""),
        entry("b", &b, ", max_conns = 9"),
    );
    let check =
        "[upstream.chat.check]\ntype = \"tcp\"\ninterval = \"50ms\"\nrise = 1\nstart = \"down\"\n";
    let lb = spawn_lb(&config(&servers, check)).await;
    let admin = lb.handle.admin_addr().expect("admin listener");
    wait_reported(admin, "chat", "a", Some(5)).await;
    wait_reported(admin, "chat", "b", Some(9)).await;
    // a and b pass their checks (the 503 below is for being full).
    support::load_backend::wait_status(admin, "a and b up", |s| {
        ["a", "b"]
            .iter()
            .all(|id| status_server(s, "chat", id)["state"] == "up")
    })
    .await;

    let (status, headers, json) = dispatch(lb.addr(), &[]).await;
    assert_eq!(status, 503, "{json}");
    assert_eq!(headers["retry-after"], "7");
    assert_eq!(json["retry_after"], 7);
    assert!(
        json["error"].as_str().is_some_and(|e| e.contains("chat")),
        "{json}"
    );

    // b drops below its max_conns: named at once, and never `dead`.
    b.set_answer(fixed("3"));
    wait_reported(admin, "chat", "b", Some(3)).await;
    for _ in 0..5 {
        let (status, _, json) = dispatch(lb.addr(), &[]).await;
        assert_eq!((status, json["id"].as_str()), (200, Some("b")), "{json}");
    }
    let status = status_json(admin).await;
    assert_eq!(status_server(&status, "chat", "dead")["dispatches"], 0);
    assert_eq!(status_server(&status, "chat", "dead")["state"], "down");
}

#[tokio::test]
async fn a_signed_cookie_keeps_a_client_on_its_server_while_it_can_be_named() {
    let a = spawn_load_backend("a", fixed("0")).await;
    let b = spawn_load_backend("b", fixed("5")).await;
    let servers = format!("{}, {}", entry("a", &a, ""), entry("b", &b, ""));
    let sticky = "[upstream.chat.sticky]\nmode = \"cookie\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n";
    let lb = spawn_lb(&config(&servers, sticky)).await;
    let admin = lb.handle.admin_addr().expect("admin listener");
    wait_reported(admin, "chat", "a", Some(0)).await;
    wait_reported(admin, "chat", "b", Some(5)).await;

    let (_, headers, json) = dispatch(lb.addr(), &[]).await;
    assert_eq!(json["id"], "a");
    let cookie = cookie_pair(&headers);

    // a becomes the busier one: a new client goes to b, the pinned one stays.
    a.set_answer(fixed("100"));
    wait_reported(admin, "chat", "a", Some(100)).await;
    let (_, headers, json) = dispatch(lb.addr(), &[("cookie", &cookie)]).await;
    assert_eq!(json["id"], "a", "pinned");
    assert!(headers.get("set-cookie").is_none(), "no new pin");
    let (_, _, json) = dispatch(lb.addr(), &[]).await;
    assert_eq!(json["id"], "b");

    // a full: the pinned client is re-pinned to b.
    a.set_answer(fixed(r#"{"load": 100, "max": 100}"#));
    support::load_backend::wait_status(admin, "a reports its max", |s| {
        status_server(s, "chat", "a")["reported_max"] == 100
    })
    .await;
    let (_, headers, json) = dispatch(lb.addr(), &[("cookie", &cookie)]).await;
    assert_eq!(json["id"], "b");
    assert_ne!(cookie_pair(&headers), cookie, "re-pinned");

    // A forged cookie is ignored.
    let (status, _, _) = dispatch(lb.addr(), &[("cookie", "LATCH=forged")]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn ip_hash_keeps_a_client_on_one_server_until_it_cannot_be_named() {
    let backends = [
        spawn_load_backend("a", fixed("0")).await,
        spawn_load_backend("b", fixed("0")).await,
        spawn_load_backend("c", fixed("0")).await,
    ];
    let ids = ["a", "b", "c"];
    let servers: Vec<String> = ids
        .iter()
        .zip(&backends)
        .map(|(id, b)| entry(id, b, ""))
        .collect();
    let lb = spawn_lb(&config(
        &servers.join(", "),
        "[upstream.chat.sticky]\nmode = \"ip_hash\"\n",
    ))
    .await;
    let admin = lb.handle.admin_addr().expect("admin listener");
    let (_, _, json) = dispatch(lb.addr(), &[]).await;
    let mine = json["id"].as_str().unwrap().to_string();
    let i = ids.iter().position(|id| *id == mine).unwrap();
    // Load elsewhere, or on it, does not move the client...
    backends[i].set_answer(fixed("40"));
    wait_reported(admin, "chat", &mine, Some(40)).await;
    for _ in 0..5 {
        assert_eq!(dispatch(lb.addr(), &[]).await.2["id"], mine.as_str());
    }
    // ...its server being full does, and it comes back after.
    backends[i].set_answer(fixed(r#"{"load": 40, "max": 40}"#));
    support::load_backend::wait_status(admin, "full", |s| {
        status_server(s, "chat", &mine)["reported_max"] == 40
    })
    .await;
    assert_ne!(dispatch(lb.addr(), &[]).await.2["id"], mine.as_str());
    backends[i].set_answer(fixed("40"));
    wait_reported(admin, "chat", &mine, Some(40)).await;
    support::load_backend::wait_status(admin, "not full", |s| {
        status_server(s, "chat", &mine)["reported_max"].is_null()
    })
    .await;
    assert_eq!(dispatch(lb.addr(), &[]).await.2["id"], mine.as_str());
}

fn cookie_pair(h: &http::HeaderMap) -> String {
    let v = h
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no Set-Cookie in {h:?}"));
    v.split(';').next().unwrap_or_default().to_string()
}

// === config ===

fn parse(text: &str) -> Result<latch::Config, latch::config::ConfigError> {
    latch::Config::parse(text, Path::new("/nonexistent/latch.toml"))
}

fn assert_err(text: &str, key: &str, message: &str) {
    let e = parse(text).expect_err("accepted a bad config");
    assert_eq!(e.key, key, "{e}");
    assert!(e.message.contains(message), "{e}");
}

#[test]
fn bad_dispatch_and_load_config_names_the_key() {
    let up = "[upstream.chat]\nservers = [{ addr = \"127.0.0.1:9\" }]\n";
    let route =
        |r: &str| format!("[[listener]]\nbind = \"127.0.0.1:0\"\n[[listener.route]]\n{r}\n{up}");
    assert_err(
        &route("upstream = \"chat\"\ndispatch = \"chat\""),
        "listener[0].route[0].dispatch",
        "not both",
    );
    assert_err(
        &route("path_prefix = \"/x\""),
        "listener[0].route[0]",
        "dispatch",
    );
    assert_err(
        &route("dispatch = \"nope\""),
        "listener[0].route[0].dispatch",
        "no upstream",
    );
    assert_err(
        &route("upstream = \"chat\"\nretry_after = \"3s\""),
        "listener[0].route[0].retry_after",
        "only used with `dispatch`",
    );
    let base = "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"chat\"\n";
    assert_err(
        &format!(
            "{base}[upstream.chat]\nservers = [{{ addr = \"127.0.0.1:9\", advertise = [\"nohost\"] }}]\n"
        ),
        "upstream.chat.servers[0].advertise[0]",
        "host:port",
    );
    assert_err(
        &format!("{base}{up}[upstream.chat.load]\ninterval = \"0s\"\n"),
        "upstream.chat.load.interval",
        "more than 0",
    );
    assert_err(
        &format!("{base}{up}[upstream.chat.load]\npath = \"load\"\n"),
        "upstream.chat.load.path",
        "start with `/`",
    );
    let e = parse(&format!(
        "{base}{up}[upstream.chat.load]\nformat = \"xml\"\n"
    ))
    .unwrap_err();
    assert!(e.key.contains("format") || e.message.contains("xml"), "{e}");
    let e = parse(&format!("{base}{up}[upstream.chat.load]\nevery = \"1s\"\n")).unwrap_err();
    assert!(e.message.contains("every"), "{e}");
}
