//! Real HTTP/2 clients (issue 14 §3) against the latch binary running
//! `conf/http2.toml` (its addresses replaced by the test's): curl
//! `--http2` over TLS (the dev certificate, verified) and
//! `--http2-prior-knowledge` on the h2c listener, and nghttp (Debian's
//! `nghttp2-client`), which shows latch's SETTINGS (the limits of the
//! config, `SETTINGS_ENABLE_CONNECT_PROTOCOL`) and runs many streams on
//! one connection. The JSON access log says `"protocol":"HTTP/2.0"`, and
//! `/status` counts the connections and streams.
//!
//! Needs `curl` and `nghttp`; without them the test fails with the command
//! to install them (`.ci/run` installs nghttp2-client).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use support::h2::h2_status;
use support::*;
use tokio::process::Command;

/// Runs `program args` to completion within [`TIMEOUT`]; its stdout, or a
/// panic with its stderr (or how to install it).
async fn run(program: &str, args: &[&str], install: &str) -> String {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(TIMEOUT, child).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("cannot run {program}: {e}; install it: {install}"),
        Err(_) => panic!("{program} {args:?} did not finish within {TIMEOUT:?}"),
    };
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const CURL: &str = "apt-get install -y curl";
const NGHTTP: &str = "apt-get install -y nghttp2-client";

/// The latch binary on `conf/http2.toml` with `backends`; returns it, the
/// TLS, h2c and admin addresses, and the directory holding its config.
async fn latch_on_the_example(
    backends: [SocketAddr; 2],
) -> (Child, SocketAddr, SocketAddr, SocketAddr, tempfile::TempDir) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("conf/http2.toml")).expect("conf/http2.toml");
    let [tls, h2c, admin] = free_ports(3)[..] else {
        unreachable!("three ports")
    };
    let certs = root.join("certs");
    let replace = [
        ("127.0.0.1:8443".to_string(), format!("127.0.0.1:{tls}")),
        ("127.0.0.1:8080".to_string(), format!("127.0.0.1:{h2c}")),
        ("127.0.0.1:9090".to_string(), format!("127.0.0.1:{admin}")),
        ("127.0.0.1:9001".to_string(), backends[0].to_string()),
        ("127.0.0.1:9002".to_string(), backends[1].to_string()),
        ("../certs/".to_string(), format!("{}/", certs.display())),
    ];
    let mut text = text;
    for (from, to) in &replace {
        assert!(text.contains(from.as_str()), "conf/http2.toml lost {from}");
        text = text.replace(from.as_str(), to);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path: PathBuf = dir.path().join("http2.toml");
    std::fs::write(&path, text).expect("write config");
    let mut latch = Child::spawn(&["run", "--config", path.to_str().expect("UTF-8")]);
    latch
        .stderr
        .wait_for("the `listening` log line", |l| l.contains("listening"))
        .await;
    let at = |p| SocketAddr::from(([127, 0, 0, 1], p));
    (latch, at(tls), at(h2c), at(admin), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_nghttp_speak_h2_to_the_latch_binary() {
    let b1 = spawn_backend("b1").await;
    let b2 = spawn_backend("b2").await;
    let (mut latch, tls, h2c, admin, _dir) = latch_on_the_example([b1.addr, b2.addr]).await;
    let cacert = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/dev.pem");
    let cacert = cacert.to_str().expect("UTF-8");
    let resolve = format!("localhost:{}:127.0.0.1", tls.port());
    let https = format!("https://localhost:{}", tls.port());

    // curl over TLS, certificate verified, ALPN h2.
    let url = format!("{https}/echo");
    let curl_h2 = [
        "-sS",
        "--http2",
        "--cacert",
        cacert,
        "--resolve",
        &resolve,
        "-d",
        "posted by curl",
        "-w",
        "\n%{http_version}",
        &url,
    ];
    let out = run("curl", &curl_h2, CURL).await;
    let (body, version) = out.rsplit_once('\n').expect("body, then the version");
    assert_eq!(version, "2", "{out}");
    let echo = parse_echo(body.as_bytes());
    assert_eq!(echo.method, "POST");
    assert_eq!(
        echo.header_all("host"),
        [format!("localhost:{}", tls.port()).as_str()]
    );
    assert_eq!(&echo.body[..], b"posted by curl");
    // The same listener still speaks HTTP/1.1 to who asks for it.
    let url = format!("{https}/name");
    let curl_h1 = [
        "-sS",
        "--http1.1",
        "--cacert",
        cacert,
        "--resolve",
        &resolve,
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        &url,
    ];
    assert_eq!(run("curl", &curl_h1, CURL).await, "1.1");
    // h2c with prior knowledge on the plain listener.
    let url = format!("http://{h2c}/name");
    let prior = [
        "-sS",
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version}",
        &url,
    ];
    let out = run("curl", &prior, CURL).await;
    assert!(out == "b1\n2" || out == "b2\n2", "{out}");

    // nghttp: latch's SETTINGS as the config says, five streams on one
    // connection.
    let url = format!("{https}/name");
    let out = run("nghttp", &["-nv", "-m", "5", &url], NGHTTP).await;
    for setting in [
        "[SETTINGS_MAX_CONCURRENT_STREAMS(0x03):128]",
        "[SETTINGS_INITIAL_WINDOW_SIZE(0x04):262144]",
        "[SETTINGS_MAX_HEADER_LIST_SIZE(0x06):32768]",
        "[SETTINGS_ENABLE_CONNECT_PROTOCOL(0x08):1]",
    ] {
        assert!(out.contains(setting), "no {setting} in:\n{out}");
    }
    assert!(out.contains("The negotiated protocol: h2"), "{out}");
    assert_eq!(out.matches(":status: 200").count(), 5, "{out}");
    // And h2c with prior knowledge: the plain listener's own limit.
    let url = format!("http://{h2c}/name");
    let out = run("nghttp", &["-nv", &url], NGHTTP).await;
    assert!(
        out.contains("[SETTINGS_MAX_CONCURRENT_STREAMS(0x03):32]"),
        "{out}"
    );
    assert!(out.contains(":status: 200"), "{out}");

    // The access log names the protocol; /status counts what came.
    latch
        .stderr
        .wait_for("an HTTP/2 access line", |l| {
            l.contains("\"protocol\":\"HTTP/2.0\"") && l.contains("nghttp2")
        })
        .await;
    // (Written before the nghttp lines: already read.)
    let log = latch.stderr.text();
    assert!(
        log.lines()
            .any(|l| l.contains("\"protocol\":\"HTTP/1.1\"") && l.contains("curl")),
        "no HTTP/1.1 access line:\n{log}"
    );
    let st = h2_status(admin).await;
    // curl --http2, curl prior knowledge, two nghttp connections.
    assert_eq!(st["connections"], 4, "{st}");
    assert_eq!(st["streams"], 8, "{st}");
    latch.terminate().await;
    assert_eq!(
        latch
            .wait_exit(std::time::Duration::from_secs(10))
            .await
            .code(),
        Some(0)
    );
}
