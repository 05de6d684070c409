//! A reload applies `[admin]` (issue 10, bug 3): a rotated token stops
//! working at once, on new and kept-alive connections alike; a new `bind`
//! moves the admin listener; a bind that cannot be had refuses the whole
//! reload and changes nothing. Each through `Handle::reload` (what SIGHUP
//! runs) and through `POST /reload`, against the real admin endpoint.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use latch::{Config, Handle, ReloadError};

use support::*;

/// A config file in a temporary folder, rewritten for each reload.
struct ConfFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ConfFile {
    fn new(text: &str) -> ConfFile {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("latch.toml");
        std::fs::write(&path, text).expect("write config");
        ConfFile { _dir: dir, path }
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.path, text).expect("rewrite config");
    }

    fn load(&self) -> Config {
        Config::load(&self.path).unwrap_or_else(|e| panic!("bad test config: {e}"))
    }
}

/// One upstream over `backend`, with `[admin]` at `bind` guarded by `token`.
fn config(backend: SocketAddr, bind: &str, token: &str) -> String {
    format!(
        "[admin]\nbind = \"{bind}\"\ntoken = \"{token}\"\n\n{}",
        simple_config(&[backend], "")
    )
}

async fn start(conf: &ConfFile) -> Handle {
    latch::start(conf.load())
        .await
        .unwrap_or_else(|e| panic!("latch did not start: {e}"))
}

fn admin_req(method: Method, path: &str, token: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Full::default()).expect("request")
}

/// `GET /status` on a fresh connection: its status.
async fn status_with(addr: SocketAddr, token: &str) -> StatusCode {
    http_request(addr, admin_req(Method::GET, "/status", Some(token)))
        .await
        .0
}

async fn post_reload(addr: SocketAddr, token: &str) -> (StatusCode, String) {
    let (status, _, body) =
        http_request(addr, admin_req(Method::POST, "/reload", Some(token))).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Waits (bounded) until nothing accepts connections at `addr`.
async fn wait_refused(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} still accepts connections"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

// === token ===

#[tokio::test]
async fn handle_reload_rotates_the_token_at_once() {
    let backend = spawn_backend("b1").await;
    let conf = ConfFile::new(&config(backend.addr, "127.0.0.1:0", "old-token"));
    let handle = start(&conf).await;
    let addr = handle.admin_addr().expect("admin bound");
    // A kept-alive connection opened with the old token.
    let mut kept = HttpConn::connect(addr).await;
    let (status, _, _) = kept
        .request(admin_req(Method::GET, "/status", Some("old-token")))
        .await;
    assert_eq!(status, StatusCode::OK);

    conf.write(&config(backend.addr, "127.0.0.1:0", "new-token"));
    handle.reload(conf.load()).expect("reload");
    assert_eq!(handle.admin_addr(), Some(addr), "same bind: same listener");
    assert_eq!(
        status_with(addr, "old-token").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status_with(addr, "new-token").await, StatusCode::OK);
    let (status, _, _) = kept
        .request(admin_req(Method::GET, "/status", Some("old-token")))
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "old token on a kept connection"
    );
    let (status, _, _) = kept
        .request(admin_req(Method::GET, "/status", Some("new-token")))
        .await;
    assert_eq!(status, StatusCode::OK);

    // The file route (SIGHUP's) applies it the same way.
    conf.write(&config(backend.addr, "127.0.0.1:0", "third-token"));
    handle.reload_file_async().await.expect("reload the file");
    assert_eq!(
        status_with(addr, "new-token").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status_with(addr, "third-token").await, StatusCode::OK);
}

#[tokio::test]
async fn post_reload_rotates_the_token_at_once() {
    let backend = spawn_backend("b1").await;
    let conf = ConfFile::new(&config(backend.addr, "127.0.0.1:0", "old-token"));
    let handle = start(&conf).await;
    let addr = handle.admin_addr().expect("admin bound");
    conf.write(&config(backend.addr, "127.0.0.1:0", "new-token"));
    assert_eq!(
        post_reload(addr, "new-token").await.0,
        StatusCode::UNAUTHORIZED,
        "the file alone changes nothing"
    );
    let (status, body) = post_reload(addr, "old-token").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "reloaded\n"));
    assert_eq!(
        status_with(addr, "old-token").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status_with(addr, "new-token").await, StatusCode::OK);
}

// === bind ===

#[tokio::test]
async fn reloads_move_the_admin_listener() {
    let backend = spawn_backend("b1").await;
    let conf = ConfFile::new(&config(backend.addr, "127.0.0.1:0", "t"));
    let handle = start(&conf).await;
    let first = handle.admin_addr().expect("admin bound");

    // Handle::reload (SIGHUP): the new address serves, the old one closes.
    let second: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    conf.write(&config(backend.addr, &second.to_string(), "t"));
    handle.reload(conf.load()).expect("reload");
    assert_eq!(handle.admin_addr(), Some(second));
    assert_eq!(status_with(second, "t").await, StatusCode::OK);
    wait_refused(first).await;

    // POST /reload on the listener being moved: answered there, then it closes.
    let third: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    conf.write(&config(backend.addr, &third.to_string(), "t"));
    let (status, body) = post_reload(second, "t").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        format!("reloaded; the admin listener moved to {third}\n")
    );
    assert_eq!(handle.admin_addr(), Some(third));
    assert_eq!(status_with(third, "t").await, StatusCode::OK);
    wait_refused(second).await;
}

#[tokio::test]
async fn an_admin_bind_that_fails_refuses_the_whole_reload() {
    let old_backend = spawn_backend("old").await;
    let new_backend = spawn_backend("new").await;
    let conf = ConfFile::new(&config(old_backend.addr, "127.0.0.1:0", "old-token"));
    let handle = start(&conf).await;
    let lb = handle.listener_addrs()[0];
    let admin = handle.admin_addr().expect("admin bound");
    // Someone else holds the address the admin listener should move to.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().unwrap();
    let next = config(new_backend.addr, &taken_addr.to_string(), "new-token");
    conf.write(&next);

    let unchanged = || async {
        assert_eq!(handle.admin_addr(), Some(admin));
        assert_eq!(status_with(admin, "old-token").await, StatusCode::OK);
        assert_eq!(
            status_with(admin, "new-token").await,
            StatusCode::UNAUTHORIZED
        );
        let (status, _, body) = http_get(lb, "localhost", "/name").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"old"[..]));
    };

    let err = handle.reload(conf.load()).expect_err("refused");
    assert!(matches!(err, ReloadError::AdminBind { addr, .. } if addr == taken_addr));
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("cannot move the admin listener to {taken_addr}"))
            && msg.contains("nothing changed"),
        "{msg}"
    );
    unchanged().await;

    let (status, body) = post_reload(admin, "old-token").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("cannot move the admin listener"), "{body}");
    unchanged().await;

    // Once the address is free the same file reloads.
    drop(taken);
    let (status, body) = post_reload(admin, "old-token").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(handle.admin_addr(), Some(taken_addr));
    assert_eq!(status_with(taken_addr, "new-token").await, StatusCode::OK);
    let (_, _, body) = http_get(lb, "localhost", "/name").await;
    assert_eq!(&body[..], b"new");
}
