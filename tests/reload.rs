//! Reloading a running latch: the snapshot swap under 200 echoing WebSockets
//! (nothing closed, lost or reordered; new sessions follow the new config;
//! removed servers drain), a refused reload that changes nothing, live
//! least-connections counts carried across generations, draining with a grace
//! period, listeners matched by bind, a TLS certificate swap, and SIGHUP on the
//! `latch` binary.
//!
//! Every config lives in a file of its own tempdir, so `reload_file` re-reads
//! it and relative certificate paths resolve next to it. Everything runs on
//! `127.0.0.1:0`; waits are bounded, and only counters are polled.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use http::StatusCode;
use latch::{Handle, ReloadError};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use support::reload::*;
use support::*;

// === config files ===

/// `servers = [...]` with weights.
fn weighted(list: &[(SocketAddr, u32)]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|(a, w)| format!("{{ addr = \"{a}\", weight = {w} }}"))
        .collect();
    format!("servers = [{}]", items.join(", "))
}

/// One plain listener on `127.0.0.1:0` in front of upstream `app`.
fn app_config(server: &str, balance: &str, servers: &str) -> String {
    format!(
        "[server]\n{server}\n\n[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\n\
         [upstream.app]\nbalance = \"{balance}\"\n{servers}\n"
    )
}

// === latch's view ===

fn lb_backends(handle: &Handle, upstream: &str) -> Vec<Arc<latch::backend::Backend>> {
    handle.snapshot().upstreams[upstream].backends.clone()
}

fn lb_backend(handle: &Handle, upstream: &str, addr: SocketAddr) -> Arc<latch::backend::Backend> {
    lb_backends(handle, upstream)
        .into_iter()
        .find(|b| b.addr == addr)
        .unwrap_or_else(|| panic!("upstream {upstream} has no backend {addr}"))
}

fn addrs_of(handle: &Handle, upstream: &str) -> Vec<SocketAddr> {
    lb_backends(handle, upstream)
        .iter()
        .map(|b| b.addr)
        .collect()
}

fn tunnels_of(handle: &Handle, upstream: &str) -> Vec<usize> {
    lb_backends(handle, upstream)
        .iter()
        .map(|b| b.tunnels())
        .collect()
}

// === WebSockets ===

type Ws = WebSocketStream<TcpStream>;

/// Opens `/ws` through latch (Host `host`); returns the socket and the backend
/// that took it, from `x-backend`, cross-checked with the 101's Set-Cookie.
async fn open_ws_at(addr: SocketAddr, host: &str) -> (Ws, String) {
    let (ws, resp) = ws_connect_with(addr, host, "/ws", &[]).await;
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let name = x_backend(resp.headers());
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert_eq!(cookie, format!("backend={name}; Path=/"), "101 from {name}");
    (ws, name)
}

async fn open_ws(addr: SocketAddr) -> (Ws, String) {
    open_ws_at(addr, "localhost").await
}

/// Closes from the client side and waits for the end of the stream.
async fn close_ws(mut ws: Ws) {
    let _ = within("sending Close", ws.close(None)).await;
    within("the end of a closed websocket", async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Waits, within `limit`, for the far side to end `ws` without the client
/// asking (a data message in between is a failure).
async fn wait_ws_ended(ws: &mut Ws, limit: Duration, what: &str) {
    within_for(limit, what, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(Message::Close(_))) => {}
                Some(Ok(m)) => panic!("{what}: unexpected {m:?}"),
            }
        }
    })
    .await;
}

// === 1. the headline ===

const CLIENTS: usize = 200;
/// Echoes every client completes before the reload is made.
const WARM: usize = 3;
/// Echoes every client completes after it saw the reload done.
const AFTER: usize = 10;
/// Safety stop for a client waiting for a reload that never comes.
const MAX_BEFORE: usize = 5_000;
const NEW_SESSIONS: usize = 20;

struct Chat {
    id: usize,
    backend: String,
    ws: Ws,
}

/// Echoes numbered messages one after another (each checked for content,
/// hence order) until `AFTER` of them went through after the reload; returns
/// the still open socket and how many messages it echoed.
async fn chat(
    mut c: Chat,
    warm: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    reloaded: Arc<AtomicBool>,
) -> Result<(Chat, usize), String> {
    let mut seq = 0;
    let mut from = None;
    loop {
        if from.is_none() && reloaded.load(Ordering::Acquire) {
            from = Some(seq);
        }
        if from.is_some_and(|f| seq >= f + AFTER) {
            return Ok((c, seq));
        }
        if from.is_none() && seq >= MAX_BEFORE {
            failed.fetch_add(1, Ordering::AcqRel);
            return Err(format!("client {}: no reload after {seq} echoes", c.id));
        }
        let text = format!("client {} message {seq}", c.id);
        if let Err(e) = try_echo(&mut c.ws, &text).await {
            failed.fetch_add(1, Ordering::AcqRel);
            let when = if from.is_some() { "after" } else { "before" };
            return Err(format!(
                "client {} on {} ({when} the reload): {e}",
                c.id, c.backend
            ));
        }
        seq += 1;
        if seq == WARM {
            warm.fetch_add(1, Ordering::AcqRel);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_under_200_echoing_websockets_drops_nothing() {
    let bs = [
        spawn_backend("b0").await,
        spawn_backend("b1").await,
        spawn_backend("b2").await,
        spawn_backend("b3").await,
    ];
    let a: Vec<SocketAddr> = bs.iter().map(|b| b.addr).collect();
    let grace = "grace = \"30s\"";
    let conf = ConfFile::new(&app_config(
        grace,
        "least_conn",
        &weighted(&[(a[0], 1), (a[1], 1), (a[2], 1)]),
    ));
    let handle = start(&conf).await;
    let addr = handle.listener_addrs()[0];

    // 200 WebSockets, opened concurrently.
    let mut opening = JoinSet::new();
    for id in 0..CLIENTS {
        opening.spawn(async move {
            let (ws, backend) = open_ws(addr).await;
            Chat { id, backend, ws }
        });
    }
    let mut chats = Vec::new();
    while let Some(c) =
        within_for(LONG_TIMEOUT, "opening 200 websockets", opening.join_next()).await
    {
        chats.push(c.expect("open task"));
    }
    let on = |chats: &[Chat], name: &str| chats.iter().filter(|c| c.backend == name).count();
    let initial: Vec<usize> = ["b0", "b1", "b2"].iter().map(|n| on(&chats, n)).collect();
    assert_eq!(initial.iter().sum::<usize>(), CLIENTS, "{initial:?}");
    assert_eq!(tunnels_of(&handle, "app"), initial, "tunnels per backend");
    assert!(
        initial.iter().all(|&n| n >= 30),
        "least_conn spread 200 sockets as {initial:?}"
    );

    // Every client echoes continuously; the reload happens once all are warm.
    let warm = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let reloaded = Arc::new(AtomicBool::new(false));
    let mut running = JoinSet::new();
    for c in chats {
        running.spawn(chat(c, warm.clone(), failed.clone(), reloaded.clone()));
    }
    wait_until("every client echoed a few messages", LONG_TIMEOUT, || {
        warm.load(Ordering::Acquire) == CLIENTS || failed.load(Ordering::Acquire) > 0
    })
    .await;
    let old = handle.snapshot();
    let old_app = &old.upstreams["app"];
    let old_b1 = old_app.backends[1].clone();
    assert_eq!(old_b1.addr, a[1]);

    // Weights change, b3 joins, b1 leaves.
    reload_with(
        &handle,
        &conf,
        &app_config(
            grace,
            "least_conn",
            &weighted(&[(a[0], 3), (a[2], 1), (a[3], 2)]),
        ),
    );
    reloaded.store(true, Ordering::Release);

    // New sessions while the others keep echoing: weighted least_conn sends
    // them all to b3 (k/2 stays below b0's ~67/3 and b2's ~67/1).
    let snap = handle.snapshot();
    let app = &snap.upstreams["app"];
    let (l0, l2) = (app.backends[0].tunnels(), app.backends[1].tunnels());
    assert!(l0 >= 30 && l2 >= 10, "loads after the reload: {l0}, {l2}");
    let b1_hits = bs[1].hits();
    let mut fresh = Vec::new();
    for i in 0..NEW_SESSIONS {
        let (mut ws, name) = open_ws(addr).await;
        assert_ne!(name, "b1", "new session {i} went to the removed server");
        assert_eq!(name, "b3", "new session {i} (loads b0 {l0}/3, b2 {l2}/1)");
        echo(&mut ws, &format!("fresh {i}")).await;
        fresh.push((ws, name));
    }
    assert_eq!(bs[1].hits(), b1_hits, "the removed server got requests");

    // Nothing closed, lost or reordered, before, during or after.
    let mut errors = Vec::new();
    let mut chats = Vec::new();
    let mut echoed = 0;
    while let Some(r) = within_for(LONG_TIMEOUT, "the echoing clients", running.join_next()).await {
        match r.expect("client task") {
            Ok((c, n)) => {
                echoed += n;
                chats.push(c);
            }
            Err(e) => errors.push(e),
        }
    }
    assert!(
        errors.is_empty(),
        "{} of {CLIENTS} clients failed; first ones:\n{}",
        errors.len(),
        errors[..errors.len().min(10)].join("\n")
    );
    assert!(echoed >= CLIENTS * (WARM + AFTER), "{echoed} echoes");

    // The removed server's tunnels still echo after the new sessions opened.
    for c in chats.iter_mut().filter(|c| c.backend == "b1") {
        echo(&mut c.ws, &format!("client {} still there", c.id)).await;
    }

    // The new snapshot: b0 and b2 are the same servers, b3 is new, b1 drains.
    let snap = handle.snapshot();
    let app = &snap.upstreams["app"];
    let addrs: Vec<SocketAddr> = app.backends.iter().map(|b| b.addr).collect();
    assert_eq!(addrs, [a[0], a[2], a[3]]);
    let weights: Vec<u32> = app.backends.iter().map(|b| b.weight).collect();
    assert_eq!(weights, [3, 1, 2]);
    assert!(app.backends[0].same_server(&old_app.backends[0]));
    assert!(app.backends[1].same_server(&old_app.backends[2]));
    assert!(
        old_app
            .backends
            .iter()
            .all(|o| !app.backends[2].same_server(o))
    );
    assert!(old_b1.draining(), "the removed server is not draining");
    assert!(!app.backends.iter().any(|b| b.draining()));

    // Tunnel counts: every open socket counted once, on its own server.
    let fresh_on = |name: &str| fresh.iter().filter(|(_, n)| n == name).count();
    for (b, name) in app.backends.iter().zip(["b0", "b2", "b3"]) {
        let want = on(&chats, name) + fresh_on(name);
        assert_eq!(b.tunnels(), want, "tunnels of {name}");
    }
    assert_eq!(old_b1.tunnels(), on(&chats, "b1"), "tunnels of removed b1");
    let counted: usize = app.backends.iter().map(|b| b.tunnels()).sum::<usize>() + old_b1.tunnels();
    assert_eq!(counted, CLIENTS + NEW_SESSIONS);

    // Closing everything releases every count, the draining server's too.
    let mut closing = JoinSet::new();
    for c in chats {
        closing.spawn(close_ws(c.ws));
    }
    for (ws, _) in fresh {
        closing.spawn(close_ws(ws));
    }
    while let Some(r) = within_for(LONG_TIMEOUT, "closing", closing.join_next()).await {
        r.expect("close task");
    }
    let mut all = app.backends.clone();
    all.push(old_b1);
    wait_until(
        "every tunnel count back to 0",
        Duration::from_secs(5),
        || all.iter().all(|b| b.tunnels() == 0 && b.active() == 0),
    )
    .await;
}

// === 2. refused reloads ===

fn two_servers_config(listener_upstream: &str, server: SocketAddr, extra: &str) -> String {
    format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"{listener_upstream}\"\n{extra}\n\
         [upstream.app]\n{}\n",
        servers(&[server])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_reload_changes_nothing() {
    let b1 = spawn_backend("b1").await;
    let b2 = spawn_backend("b2").await;
    let conf = ConfFile::new(&two_servers_config("app", b1.addr, ""));
    let handle = start(&conf).await;
    let listeners = handle.listener_addrs();
    let addr = listeners[0];
    assert_eq!(who(addr).await, "b1");
    let mut kept = HttpConn::connect(addr).await;
    assert_eq!(kept.get("localhost", "/name").await.2, "b1");

    // An unknown upstream name: refused with file, line, column and key.
    let bad = two_servers_config("nope", b2.addr, "");
    conf.write(&bad);
    let err = handle.reload_file().expect_err("a bad file was accepted");
    let ReloadError::Config(ref e) = err else {
        panic!("not a config error: {err:?}");
    };
    let shown = err.to_string();
    let at = format!("{}:3:12: `listener[0].upstream`", conf.path.display());
    assert!(
        shown.starts_with(&at),
        "{shown:?} does not start with {at:?}"
    );
    assert!(shown.contains("no upstream named `nope`"), "{shown}");
    assert_eq!((e.line, e.column), (3, 12));
    // Word for word what `latch check` says about the same file.
    let check = within(
        "latch check",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_latch"))
            .arg("check")
            .arg("--config")
            .arg(&conf.path)
            .output(),
    )
    .await
    .expect("run latch check");
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&check.stderr).trim(), shown);

    // The old config still runs: same listener, same server, same traffic.
    assert_eq!(handle.listener_addrs(), listeners);
    assert_eq!(addrs_of(&handle, "app"), [b1.addr]);
    assert_eq!(who(addr).await, "b1");
    assert_eq!(kept.get("localhost", "/name").await.2, "b1");

    // Valid, but a listener cannot be bound: also refused before any change.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("local addr").port();
    let extra = format!("\n[[listener]]\nbind = \"127.0.0.1:{port}\"\nupstream = \"app\"\n");
    conf.write(&two_servers_config("app", b2.addr, &extra));
    match handle.reload_file() {
        Err(ReloadError::Start(e)) => {
            assert!(e.to_string().contains(&port.to_string()), "{e}")
        }
        other => panic!("binding a taken port: {other:?}"),
    }
    assert_eq!(handle.listener_addrs(), listeners);
    assert_eq!(addrs_of(&handle, "app"), [b1.addr]);
    assert_eq!(who(addr).await, "b1");
    drop(taken);

    // A good file is read again and applied.
    reload_with(&handle, &conf, &two_servers_config("app", b2.addr, ""));
    assert_eq!(handle.listener_addrs(), listeners);
    assert_eq!(who(addr).await, "b2");
    assert_eq!(kept.get("localhost", "/name").await.2, "b2");
    assert_eq!(
        b1.hits(),
        5,
        "b1 served every request before the good reload"
    );
}

// === 3. live counts ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_counts_survive_a_reload() {
    let b0 = spawn_backend("b0").await;
    let b1 = spawn_backend("b1").await;
    let (a0, a1) = (b0.addr, b1.addr);
    // `route` goes into the listener, `after` after the server list.
    let config = |w0: u32, route: &str, after: &str| {
        format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n{route}\n\
             [upstream.app]\nbalance = \"least_conn\"\n{}\n{after}",
            weighted(&[(a0, w0), (a1, 1)])
        )
    };
    let conf = ConfFile::new(&config(1, "", ""));
    let handle = start(&conf).await;
    let addr = handle.listener_addrs()[0];

    // Six sockets opened one by one alternate: 3 and 3.
    let mut socks: Vec<(Ws, String)> = Vec::new();
    for _ in 0..6 {
        socks.push(open_ws(addr).await);
    }
    let count = |socks: &[(Ws, String)], n: &str| socks.iter().filter(|(_, b)| b == n).count();
    assert_eq!((count(&socks, "b0"), count(&socks, "b1")), (3, 3));
    assert_eq!(tunnels_of(&handle, "app"), [3, 3]);
    let old = lb_backends(&handle, "app");

    // An unrelated change: a route and a timeout.
    let route = "[[listener.route]]\npath_prefix = \"/other\"\nupstream = \"app\"\n";
    let timeouts = "[upstream.app.timeouts]\nread = \"30s\"\n";
    reload_with(&handle, &conf, &config(1, route, timeouts));
    let new = lb_backends(&handle, "app");
    assert_eq!(new[0].addr, a0);
    assert_eq!(
        handle.snapshot().upstreams["app"].timeouts.read,
        Duration::from_secs(30),
        "the reload was applied"
    );
    assert!(new[0].same_server(&old[0]) && new[1].same_server(&old[1]));
    assert_eq!(
        tunnels_of(&handle, "app"),
        [3, 3],
        "counts after the reload"
    );
    for (i, (ws, b)) in socks.iter_mut().enumerate() {
        echo(ws, &format!("still {i} on {b}")).await;
    }

    // One of b1's sockets closes: b1 is least loaded, so the next goes there.
    let i = socks
        .iter()
        .position(|(_, b)| b == "b1")
        .expect("one on b1");
    close_ws(socks.remove(i).0).await;
    wait_until("b1 down to 2 tunnels", Duration::from_secs(5), || {
        tunnels_of(&handle, "app") == [3, 2]
    })
    .await;
    let (ws, b) = open_ws(addr).await;
    assert_eq!(
        b, "b1",
        "least_conn with loads 3/3 carried over, one closed"
    );
    socks.push((ws, b));

    // Weight 2 for b0: 3/2 < 3/1, 4/2 < 3/1, 5/2 < 3/1, so three go to b0.
    reload_with(&handle, &conf, &config(2, "", ""));
    assert_eq!(tunnels_of(&handle, "app"), [3, 3]);
    for k in 0..3 {
        let (ws, b) = open_ws(addr).await;
        assert_eq!(b, "b0", "pick {k} after b0's weight became 2");
        socks.push((ws, b));
    }
    assert_eq!(tunnels_of(&handle, "app"), [6, 3]);
    for (ws, _) in socks {
        close_ws(ws).await;
    }
    wait_until("all tunnels closed", Duration::from_secs(5), || {
        tunnels_of(&handle, "app") == [0, 0]
    })
    .await;
}

/// Same address, another `id`: another server. Its tunnels stay with the old
/// one (now draining); the new one starts from zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_id_makes_a_new_server() {
    let b0 = spawn_backend("b0").await;
    let config = |id: &str| {
        format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\n\
             [upstream.app]\nservers = [{{ addr = \"{}\", id = \"{id}\" }}]\n",
            b0.addr
        )
    };
    let conf = ConfFile::new(&config("one"));
    let handle = start(&conf).await;
    let addr = handle.listener_addrs()[0];
    let (mut ws, _) = open_ws(addr).await;
    let old = lb_backend(&handle, "app", b0.addr);
    assert_eq!(old.tunnels(), 1);

    reload_with(&handle, &conf, &config("two"));
    let new = lb_backend(&handle, "app", b0.addr);
    assert_eq!(new.id, "two");
    assert!(!new.same_server(&old));
    assert_eq!((new.tunnels(), old.tunnels()), (0, 1));
    assert!(old.draining() && !new.draining());
    echo(&mut ws, "across an id change").await;
    let (ws2, _) = open_ws(addr).await;
    assert_eq!((new.tunnels(), old.tunnels()), (1, 1));
    close_ws(ws).await;
    close_ws(ws2).await;
    wait_until("tunnels closed", Duration::from_secs(5), || {
        new.tunnels() == 0 && old.tunnels() == 0
    })
    .await;
}

// === 4. draining ===

/// Listener in front of `app` = [`app_server`], plus host routes to one
/// upstream per `(host, name, server)` in `others`. `close_spread = "0s"`:
/// drained tunnels all close when the grace ends, as these tests time it.
fn routed_config(
    grace: &str,
    app_server: SocketAddr,
    others: &[(&str, &str, SocketAddr)],
) -> String {
    let mut text = format!(
        "[server]\ngrace = \"{grace}\"\nclose_spread = \"0s\"\n\n[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n"
    );
    for (host, name, _) in others {
        text += &format!("[[listener.route]]\nhost = \"{host}\"\nupstream = \"{name}\"\n");
    }
    text += &format!("\n[upstream.app]\n{}\n", servers(&[app_server]));
    for (_, name, server) in others {
        text += &format!("\n[upstream.{name}]\n{}\n", servers(&[*server]));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_server_keeps_its_tunnels_for_grace_then_they_close() {
    let b0 = spawn_backend("b0").await;
    let b1 = spawn_backend("b1").await;
    let b2 = spawn_backend("b2").await;
    let conf = ConfFile::new(&routed_config(
        "30s",
        b1.addr,
        &[("idle.test", "idle", b2.addr)],
    ));
    let handle = start(&conf).await;
    let addr = handle.listener_addrs()[0];
    let (mut w1, n1) = open_ws(addr).await;
    let (mut w2, n2) = open_ws(addr).await;
    assert_eq!((n1.as_str(), n2.as_str()), ("b1", "b1"));
    let (status, h, _) = http_get(addr, "idle.test", "/name").await;
    assert_eq!((status, x_backend(&h)), (StatusCode::OK, "b2".to_string()));
    let old_b1 = lb_backend(&handle, "app", b1.addr);
    assert_eq!(old_b1.tunnels(), 2);

    // b1 and the whole `idle` upstream go; the new config's grace is 1 s.
    reload_with(&handle, &conf, &routed_config("1s", b0.addr, &[]));
    let reloaded = Instant::now();
    assert!(old_b1.draining());
    echo(&mut w1, "right after the reload 1").await;
    echo(&mut w2, "right after the reload 2").await;
    let (mut w0, n0) = open_ws(addr).await;
    assert_eq!(n0, "b0", "a new session after the reload");
    assert_eq!(
        http_get(addr, "idle.test", "/name").await.1["x-backend"],
        "b0",
        "the removed route"
    );

    // latch closes both within the grace plus a little.
    wait_ws_ended(&mut w1, Duration::from_secs(6), "latch closing tunnel 1").await;
    wait_ws_ended(&mut w2, Duration::from_secs(6), "latch closing tunnel 2").await;
    let took = reloaded.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_secs(4),
        "the draining tunnels closed {took:?} after the reload (grace 1s)"
    );
    wait_until(
        "b1's tunnel count back to 0",
        Duration::from_secs(3),
        || old_b1.tunnels() == 0,
    )
    .await;

    // The server that stays is not touched by the drain.
    echo(&mut w0, "b0 after the drain").await;
    assert_eq!(lb_backend(&handle, "app", b0.addr).tunnels(), 1);
    close_ws(w0).await;
}

/// A removed server without tunnels is not waited for: with a 30 s grace,
/// a stop right after the reload has nothing to wait for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_idle_server_is_not_waited_for() {
    let b0 = spawn_backend("b0").await;
    let b1 = spawn_backend("b1").await;
    let conf = ConfFile::new(&routed_config(
        "30s",
        b0.addr,
        &[("gone.test", "gone", b1.addr)],
    ));
    let handle = start(&conf).await;
    let addr = handle.listener_addrs()[0];
    let (_, h, _) = http_get(addr, "gone.test", "/name").await;
    assert_eq!(x_backend(&h), "b1");
    let (ws, _) = open_ws_at(addr, "gone.test").await;
    close_ws(ws).await;
    let old_b1 = lb_backend(&handle, "gone", b1.addr);
    wait_until("b1 idle", Duration::from_secs(5), || old_b1.load() == 0).await;

    reload_with(&handle, &conf, &routed_config("30s", b0.addr, &[]));
    let asked = Instant::now();
    within_for(
        Duration::from_secs(5),
        "shutdown after removing an idle server (grace 30s)",
        handle.clone().shutdown(),
    )
    .await;
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
}

/// A removed server whose tunnels all ended before the grace did is not
/// waited for either: nothing is left, so a stop is immediate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_server_whose_tunnels_ended_is_not_waited_for() {
    let b0 = spawn_backend("b0").await;
    let b1 = spawn_backend("b1").await;
    let conf = ConfFile::new(&routed_config(
        "30s",
        b0.addr,
        &[("gone.test", "gone", b1.addr)],
    ));
    let handle = start(&conf).await;
    let addr = handle.listener_addrs()[0];
    let (mut ws, name) = open_ws_at(addr, "gone.test").await;
    assert_eq!(name, "b1");
    let old_b1 = lb_backend(&handle, "gone", b1.addr);

    reload_with(&handle, &conf, &routed_config("30s", b0.addr, &[]));
    assert!(old_b1.draining());
    echo(&mut ws, "draining").await;
    close_ws(ws).await;
    wait_until(
        "the drained tunnel released",
        Duration::from_secs(5),
        || old_b1.load() == 0,
    )
    .await;

    let asked = Instant::now();
    within_for(
        Duration::from_secs(5),
        "shutdown with no tunnel left (grace 30s)",
        handle.clone().shutdown(),
    )
    .await;
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
}
