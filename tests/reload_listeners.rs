//! Reload and its listeners, over real sockets: listeners that stay are kept
//! bound (their open connections served), removed ones stop by bind; new
//! TLS certificates apply to new handshakes only; and `SIGHUP` on the
//! binary reloads its file. The WebSocket, refused-reload, live-count and
//! draining cases are in `reload.rs`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::net::TcpStream;
use tokio::time::Instant;

use support::reload::*;
use support::*;

// === 5. listeners ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_kept_bound_and_stopped_by_bind() {
    let b0 = spawn_backend("b0").await;
    let plain = |bind: &str| format!("[[listener]]\nbind = \"{bind}\"\nupstream = \"app\"\n\n");
    let upstream = format!("[upstream.app]\n{}\n", servers(&[b0.addr]));
    let conf = ConfFile::new(&format!(
        "{}{}{upstream}",
        plain("127.0.0.1:0"),
        plain("127.0.0.1:0")
    ));
    let (_, _, cert_pem) = write_cert_files(conf.dir(), "tls", &["localhost"]);
    let handle = start(&conf).await;
    let before = handle.listener_addrs();
    let (first, second) = (before[0], before[1]);
    assert_ne!(first.port(), second.port());
    let mut on_first = HttpConn::connect(first).await;
    let mut on_second = HttpConn::connect(second).await;
    assert_eq!(on_first.get("localhost", "/name").await.0, StatusCode::OK);
    assert_eq!(on_second.get("localhost", "/name").await.0, StatusCode::OK);

    // New: a TLS listener (listed first), then the one `127.0.0.1:0`, which
    // matches the first of the old config; the second has no match.
    let tls = "[[listener]]\nbind = \"127.0.0.2:0\"\nupstream = \"app\"\n\
               tls = { cert = \"tls.crt\", key = \"tls.key\" }\n\n";
    reload_with(
        &handle,
        &conf,
        &format!("{tls}{}{upstream}", plain("127.0.0.1:0")),
    );
    let after = handle.listener_addrs();
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[1], first, "the matched listener kept its socket");
    assert_eq!(after[0].ip().to_string(), "127.0.0.2");

    // The kept listener serves old and new connections.
    assert_eq!(who(first).await, "b0");
    assert_eq!(on_first.get("localhost", "/name").await.0, StatusCode::OK);

    // The dropped one refuses new connections (its loop stops soon after).
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match within("connect", TcpStream::connect(second)).await {
            Err(_) => break,
            Ok(c) => drop(c),
        }
        assert!(
            Instant::now() < deadline,
            "{second} still accepts 3s after its listener was removed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The new one speaks TLS with the configured certificate.
    let conn = tls_connector(&[&cert_pem]);
    let (status, h, body) = https_get(after[0], "localhost", &conn, "/name").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"b0"[..]));
    assert_eq!(x_backend(&h), "b0");
    assert_eq!(
        tls_peer_cert(after[0], "localhost", &conn).await,
        cert_der(&cert_pem)
    );

    // A connection the dropped listener accepted before is not cut: its next
    // request is served like any other.
    assert!(
        !on_second.is_closed(),
        "the reload closed a client connection"
    );
    let (status, h, body) = on_second
        .try_request(
            Request::get("/name")
                .header("host", "localhost")
                .body(Full::default())
                .expect("request"),
        )
        .await
        .unwrap_or_else(|e| panic!("kept-alive connection on the removed listener: {e}"));
    assert_eq!(
        status,
        StatusCode::OK,
        "kept-alive connection on the removed listener: {:?} {body:?}",
        h.get("x-backend")
    );
    assert_eq!(&body[..], b"b0");
}

// === 6. TLS certificates ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_certificate_serves_new_handshakes_old_connections_stay() {
    let b0 = spawn_backend("b0").await;
    let (a_cert, a_key) = self_signed(&["localhost"]);
    let (b_cert, b_key) = self_signed(&["localhost"]);
    let conf = ConfFile::new(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\
         tls = {{ cert = \"tls.crt\", key = \"tls.key\" }}\n\n[upstream.app]\n{}\n",
        servers(&[b0.addr])
    ));
    let put = |cert: &str, key: &str| {
        std::fs::write(conf.dir().join("tls.crt"), cert).expect("write cert");
        std::fs::write(conf.dir().join("tls.key"), key).expect("write key");
    };
    put(&a_cert, &a_key);
    let handle = start(&conf).await;
    let addr = handle.listener_addrs()[0];
    let both = tls_connector(&[&a_cert, &b_cert]);
    let only_a = tls_connector(&[&a_cert]);
    assert_eq!(
        tls_peer_cert(addr, "localhost", &both).await,
        cert_der(&a_cert)
    );

    // Before the reload: a kept-alive HTTPS connection and a WSS socket.
    let tls = tls_connect(addr, "localhost", &only_a)
        .await
        .expect("TLS with cert A");
    let (mut sender, _conn) = support::http_client::handshake_on::<_, Full<bytes::Bytes>>(tls)
        .await
        .expect("HTTP/1.1 over TLS");
    let get = || {
        Request::get("/name")
            .header("host", "localhost")
            .body(Full::default())
            .expect("request")
    };
    let resp = within("GET over TLS", sender.send_request(get()))
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(&read_body(resp.into_body()).await.expect("body")[..], b"b0");
    let (mut wss, _) = wss_connect(addr, "localhost", &only_a, "/ws").await;
    echo(&mut wss, "before").await;

    // Same paths, new files (a renewal), then reload.
    put(&b_cert, &b_key);
    let text = std::fs::read_to_string(&conf.path).expect("read config");
    reload_with(&handle, &conf, &text);
    assert_eq!(handle.listener_addrs(), [addr]);

    // New handshakes get B; a client trusting only A now fails.
    assert_eq!(
        tls_peer_cert(addr, "localhost", &both).await,
        cert_der(&b_cert)
    );
    let (status, _, body) = https_get(addr, "localhost", &both, "/name").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"b0"[..]));
    assert!(
        tls_connect(addr, "localhost", &only_a).await.is_err(),
        "a new handshake still used certificate A"
    );

    // Connections made with A keep working.
    within("connection ready", sender.ready())
        .await
        .expect("the TLS connection made before the reload is still open");
    let resp = within(
        "GET over the old TLS connection",
        sender.send_request(get()),
    )
    .await
    .expect("response on the old TLS connection");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(&read_body(resp.into_body()).await.expect("body")[..], b"b0");
    echo(&mut wss, "after").await;
}

// === 7. SIGHUP on the binary ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_file_and_refuses_a_broken_one() {
    let b1 = spawn_backend("b1").await;
    let b2 = spawn_backend("b2").await;
    let port = free_port();
    let config = |upstream: &str, server: SocketAddr| {
        format!(
            "[[listener]]\nbind = \"127.0.0.1:{port}\"\nupstream = \"{upstream}\"\n\n\
             [upstream.app]\n{}\n",
            servers(&[server])
        )
    };
    let conf = ConfFile::new(&config("app", b1.addr));
    let path = conf.path.to_str().expect("UTF-8 path").to_string();
    let mut latch = Child::spawn(&["run", "--config", &path]);
    latch
        .stderr
        .wait_for("the `listening` log line", |l| l.contains("listening"))
        .await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(who(addr).await, "b1");

    // Point the upstream at b2 and send SIGHUP.
    conf.write(&config("app", b2.addr));
    latch.signal("HUP").await;
    latch
        .stderr
        .wait_for("the `reloaded` log line", |l| l.contains("reloaded"))
        .await;
    for _ in 0..3 {
        assert_eq!(who(addr).await, "b2", "after the reload");
    }

    // A broken file: refused, logged, and b2 still serves.
    conf.write(&config("nope", b1.addr));
    latch.signal("HUP").await;
    let line = latch
        .stderr
        .wait_for("the `reload refused` log line", |l| {
            l.contains("reload refused") || l.contains("reloaded")
        })
        .await;
    assert!(
        line.contains("reload refused, the running config stays"),
        "{line}"
    );
    assert!(line.contains(&format!("{path}:3:12")), "{line}");
    assert!(line.contains("no upstream named `nope`"), "{line}");
    for _ in 0..3 {
        assert_eq!(who(addr).await, "b2", "after the refused reload");
    }
    assert!(
        latch.child.try_wait().expect("child status").is_none(),
        "latch exited:\n{}",
        latch.stderr.text()
    );
}
