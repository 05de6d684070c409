//! Every config mistake is reported with file, line, column and key; every
//! example in conf/ is valid; `latch check` exits 0/1 accordingly.

use std::path::{Path, PathBuf};
use std::process::Command;

use latch::{Config, ConfigError};

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/nonexistent/latch.toml"))
}

fn err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(_) => panic!("accepted a bad config:\n{text}"),
        Err(e) => e,
    }
}

/// Asserts the error points at `line`:`column` and names `key`, and the
/// message mentions `words`.
fn assert_err(text: &str, line: usize, column: usize, key: &str, words: &str) {
    let e = err(text);
    assert_eq!((e.line, e.column), (line, column), "position of {e}");
    assert_eq!(e.key, key, "key of {e}");
    assert!(e.message.contains(words), "message of {e} lacks {words:?}");
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("/nonexistent/latch.toml:{line}:{column}: `{key}`")),
        "{shown}"
    );
}

const UPSTREAM: &str = "[upstream.app]\nservers = [{ addr = \"127.0.0.1:9001\" }]\n";

fn with_upstream(listener: &str) -> String {
    format!("{listener}{UPSTREAM}")
}

#[test]
fn unknown_keys_are_rejected_with_their_place() {
    assert_err(
        &with_upstream("[[listener]]\nbind = \"127.0.0.1:0\"\nupstraem = \"app\"\n"),
        3,
        1,
        "listener.upstraem",
        "unknown field `upstraem`",
    );
    assert_err(
        "[server]\ngrase = \"1s\"\n",
        2,
        1,
        "server.grase",
        "unknown field",
    );
    assert_err(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n[upstream.app]\nservers = [{ addr = \"127.0.0.1:1\", wieght = 2 }]\n",
        5,
        36,
        "upstream.app.servers.wieght",
        "unknown field `wieght`",
    );
}

#[test]
fn bad_values_are_rejected_with_their_place() {
    assert_err(
        &with_upstream("[[listener]]\nbind = \"127.0.0.1:notaport\"\nupstream = \"app\"\n"),
        2,
        8,
        "listener[0].bind",
        "invalid address",
    );
    assert_err(
        &with_upstream("[[listener]]\nbind = \"nocolon\"\nupstream = \"app\"\n"),
        2,
        8,
        "listener[0].bind",
        "expected host:port",
    );
    assert_err(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n[upstream.app]\nservers = [{ addr = \"127.0.0.1:1\" }]\n[upstream.app.timeouts]\nread = \"3x\"\n",
        7,
        8,
        "upstream.app.timeouts.read",
        "invalid duration `3x`",
    );
    assert_err(
        "[server]\nclient_body_timeout = \"forever\"\n",
        2,
        23,
        "server.client_body_timeout",
        "invalid duration `forever`",
    );
    assert_err(
        "[server]\nmax_header_size = 100\n[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n",
        2,
        19,
        "server.max_header_size",
        "at least 8192",
    );
    assert_err(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n[upstream.app]\nservers = [{ addr = \"127.0.0.1:1\", weight = 0 }]\n",
        5,
        45,
        "upstream.app.servers[0].weight",
        "weight must be between",
    );
    assert_err(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n[upstream.app]\nbalance = \"fastest\"\nservers = [{ addr = \"127.0.0.1:1\" }]\n",
        5,
        11,
        "upstream.app.balance",
        "unknown variant `fastest`",
    );
    assert_err(
        &with_upstream(
            "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\nmax_connections = 0\n",
        ),
        4,
        19,
        "listener[0].max_connections",
        "at least 1",
    );
    assert_err(
        &with_upstream(
            "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\nmax_connections = 10\nmax_connections_per_client = 20\n",
        ),
        5,
        30,
        "listener[0].max_connections_per_client",
        "more than max_connections (10)",
    );
    assert_err(
        &with_upstream(
            "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\nmax_connections = \"many\"\n",
        ),
        4,
        19,
        "listener.max_connections",
        "invalid type",
    );
    assert_err(
        &with_upstream(
            "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\ntrusted_proxies = [\"10.0.0.0/40\"]\n",
        ),
        4,
        20,
        "listener[0].trusted_proxies[0]",
        "invalid address range",
    );
}

#[test]
fn references_and_duplicates_are_checked() {
    assert_err(
        &with_upstream("[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"chat\"\n"),
        3,
        12,
        "listener[0].upstream",
        "no upstream named `chat`",
    );
    assert_err(
        &with_upstream(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[[listener.route]]\npath_prefix = \"/x\"\nupstream = \"nope\"\n",
        ),
        5,
        12,
        "listener[0].route[0].upstream",
        "no upstream named `nope`",
    );
    assert_err(
        &with_upstream(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[[listener.route]]\npath_prefix = \"x\"\nupstream = \"app\"\n",
        ),
        4,
        15,
        "listener[0].route[0].path_prefix",
        "must start with `/`",
    );
    // Requests are routed by their normalised path: a prefix that is not
    // normal would never match.
    for (prefix, words) in [
        ("/%61dmin", "write `/admin`"),
        ("/api//v1", "write `/api/v1`"),
        ("/x/../admin", "write `/admin`"),
        ("/../x", "climbs above /"),
        ("/%zz", "malformed percent-encoding"),
    ] {
        assert_err(
            &with_upstream(&format!(
                "[[listener]]\nbind = \"127.0.0.1:0\"\n[[listener.route]]\npath_prefix = \"{prefix}\"\nupstream = \"app\"\n"
            )),
            4,
            15,
            "listener[0].route[0].path_prefix",
            words,
        );
    }
    assert_err(
        &with_upstream(
            "[[listener]]\nbind = \"127.0.0.1:7001\"\nupstream = \"app\"\n[[listener]]\nbind = \"127.0.0.1:7001\"\nupstream = \"app\"\n",
        ),
        5,
        8,
        "listener[1].bind",
        "bound twice",
    );
    assert_err(
        &with_upstream(
            "[admin]\nbind = \"127.0.0.1:7002\"\n[[listener]]\nbind = \"127.0.0.1:7002\"\nupstream = \"app\"\n",
        ),
        4,
        8,
        "listener[0].bind",
        "bound twice",
    );
    assert_err(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n[upstream.app]\nservers = [{ addr = \"127.0.0.1:1\" }, { addr = \"127.0.0.1:1\" }]\n",
        5,
        47,
        "upstream.app.servers[1].addr",
        "listed twice",
    );
    assert_err(
        &with_upstream("[[listener]]\nbind = \"127.0.0.1:0\"\n"),
        2,
        8,
        "listener[0]",
        "needs `upstream",
    );
    assert_err(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n[upstream.app]\nservers = []\n",
        5,
        11,
        "upstream.app.servers",
        "at least one server",
    );
    let e = err(UPSTREAM);
    assert!(e.message.contains("[[listener]]"), "{e}");
}

#[test]
fn tls_files_are_loaded_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let origin = dir.path().join("latch.toml");
    let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
    let good_cert = certs.join("dev.pem");
    let good_key = certs.join("dev-key.pem");
    std::fs::write(dir.path().join("garbage.pem"), "this is not PEM\n").unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["other".to_string()]).unwrap();
    std::fs::write(
        dir.path().join("other-key.pem"),
        other.signing_key.serialize_pem(),
    )
    .unwrap();

    let cfg = |cert: &Path, key: &Path| {
        with_upstream(&format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\ntls = {{ cert = {:?}, key = {:?} }}\n",
            cert.display().to_string(),
            key.display().to_string()
        ))
    };
    let e = Config::parse(&cfg(Path::new("missing.pem"), &good_key), &origin).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (4, "listener[0].tls.cert"), "{e}");
    assert!(
        e.message.contains("cannot read certificate") && e.message.contains("missing.pem"),
        "{e}"
    );

    let e = Config::parse(&cfg(Path::new("garbage.pem"), &good_key), &origin).unwrap_err();
    assert_eq!(e.key, "listener[0].tls.cert", "{e}");
    assert!(e.message.contains("no certificate found"), "{e}");

    let e = Config::parse(&cfg(&good_cert, Path::new("garbage.pem")), &origin).unwrap_err();
    assert_eq!(e.key, "listener[0].tls.key", "{e}");
    assert!(e.message.contains("cannot read private key"), "{e}");

    let e = Config::parse(&cfg(&good_cert, Path::new("other-key.pem")), &origin).unwrap_err();
    assert_eq!(e.key, "listener[0].tls.key", "{e}");
    assert!(e.message.contains("unusable key"), "{e}");

    // Relative paths resolve against the config file's folder.
    std::fs::copy(&good_cert, dir.path().join("c.pem")).unwrap();
    std::fs::copy(&good_key, dir.path().join("k.pem")).unwrap();
    let ok = Config::parse(&cfg(Path::new("c.pem"), Path::new("k.pem")), &origin).unwrap();
    assert!(ok.listeners[0].tls.is_some());
}

#[test]
fn syntax_errors_have_a_position_too() {
    let e = err("[[listener]\nbind = 1\n");
    assert_eq!(e.line, 1, "{e}");
    let e = err("[server]\nworkers = \"two\"\n");
    assert_eq!((e.line, e.key.as_str()), (2, "server.workers"), "{e}");
}

fn conf_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_in_conf_is_valid() {
    let files = conf_files();
    assert!(files.len() >= 3, "examples missing: {files:?}");
    for f in files {
        let cfg = Config::load(&f).unwrap_or_else(|e| panic!("{e}"));
        assert!(!cfg.listeners.is_empty(), "{}", f.display());
    }
}

#[test]
fn check_command_exits_zero_or_one_with_the_error() {
    let bin = env!("CARGO_BIN_EXE_latch");
    for f in conf_files() {
        let out = Command::new(bin)
            .args(["check", "--config"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        with_upstream("[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"chat\"\n"),
    )
    .unwrap();
    let out = Command::new(bin)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:3:12: `listener[0].upstream`: no upstream named `chat`"),
        "{stderr}"
    );
    let out = Command::new(bin)
        .args(["check", "--config"])
        .arg(dir.path().join("absent.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

// === issue 3: stickiness, hashing, limits ===

fn upstream_with(extra_server: &str, tail: &str) -> String {
    format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n[upstream.app]\nservers = [{{ addr = \"127.0.0.1:1\"{extra_server} }}]\n{tail}"
    )
}

#[test]
fn sticky_cookie_needs_a_strong_shared_secret() {
    let e = err(&upstream_with(
        "",
        "[upstream.app.sticky]\nmode = \"cookie\"\n",
    ));
    assert_eq!(e.key, "upstream.app.sticky", "{e}");
    assert!(e.message.contains("secret_env"), "{e}");

    assert_err(
        &upstream_with("", "[upstream.app.sticky]\nsecret = \"short\"\n"),
        7,
        10,
        "upstream.app.sticky.secret",
        "at least 16 bytes",
    );
    assert_err(
        &upstream_with(
            "",
            "[upstream.app.sticky]\nsecret_env = \"LATCH_TEST_SURELY_UNSET_VAR\"\n",
        ),
        7,
        14,
        "upstream.app.sticky.secret_env",
        "LATCH_TEST_SURELY_UNSET_VAR is not set",
    );
    assert_err(
        &upstream_with(
            "",
            "[upstream.app.sticky]\nsecret = \"0123456789abcdef\"\ncookie = \"bad name\"\n",
        ),
        8,
        10,
        "upstream.app.sticky.cookie",
        "not a valid cookie name",
    );
    assert_err(
        &upstream_with(
            "",
            "[upstream.app.sticky]\nsecret = \"0123456789abcdef\"\nsame_site = \"none\"\n",
        ),
        8,
        13,
        "upstream.app.sticky.same_site",
        "requires secure = true",
    );
    assert_err(
        &upstream_with("", "[upstream.app.sticky]\nmode = \"sometimes\"\n"),
        7,
        8,
        "upstream.app.sticky.mode",
        "unknown variant",
    );
    let ok = parse(&upstream_with(
        "",
        "[upstream.app.sticky]\nsecret = \"0123456789abcdef\"\nmax_age = \"1h\"\nsecure = true\nsame_site = \"none\"\n",
    ))
    .unwrap();
    match &ok.upstreams["app"].sticky {
        latch::config::Sticky::Cookie(c) => {
            assert_eq!(
                (c.name.as_str(), c.max_age),
                ("LATCH", Some(std::time::Duration::from_secs(3600)))
            );
            assert!(
                !format!("{c:?}").contains("0123456789abcdef"),
                "secret leaks into Debug"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn hash_keys_limits_and_backups_are_checked() {
    assert_err(
        &upstream_with("", "").replace("servers = [", "balance = \"hash\"\nservers = ["),
        4,
        1,
        "upstream.app.hash_key",
        "needs hash_key",
    );
    assert_err(
        &upstream_with("", "").replace("servers = [", "hash_key = \"header:X-User\"\nservers = ["),
        5,
        12,
        "upstream.app.hash_key",
        "only used with balance = \"hash\"",
    );
    assert_err(
        &upstream_with("", "").replace(
            "servers = [",
            "balance = \"hash\"\nhash_key = \"body:x\"\nservers = [",
        ),
        6,
        12,
        "upstream.app.hash_key",
        "expected \"ip\"",
    );
    assert_err(
        &upstream_with("", "").replace("servers = [", "ip_prefix_v4 = 33\nservers = ["),
        5,
        16,
        "upstream.app.ip_prefix_v4",
        "0..=32",
    );
    assert_err(
        &upstream_with(", max_conns = 0", ""),
        5,
        48,
        "upstream.app.servers[0].max_conns",
        "at least 1",
    );
    assert_err(
        &upstream_with(", max_upgrades_per_sec = 0", ""),
        5,
        59,
        "upstream.app.servers[0].max_upgrades_per_sec",
        "at least 1",
    );
    assert_err(
        &upstream_with(", backup = true", ""),
        5,
        11,
        "upstream.app.servers",
        "every server is a backup",
    );
    assert_err(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n[upstream.app]\nservers = [{ addr = \"127.0.0.1:1\", id = \"a\" }, { addr = \"127.0.0.1:2\", id = \"a\" }]\n",
        5,
        77,
        "upstream.app.servers[1].id",
        "already used by 127.0.0.1:1",
    );
    let ok = parse(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n[upstream.app]\nbalance = \"hash\"\nhash_key = \"query:sid\"\nservers = [{ addr = \"127.0.0.1:1\", id = \"web1\", max_conns = 5 }, { addr = \"127.0.0.1:2\", backup = true }]\n",
    )
    .unwrap();
    let s = &ok.upstreams["app"].servers;
    assert_eq!(
        (s[0].id.as_str(), s[0].max_conns, s[0].backup),
        ("web1", Some(5), false)
    );
    assert_eq!((s[1].id.as_str(), s[1].backup), ("127.0.0.1:2", true));
    assert_eq!(
        ok.upstreams["app"].hash_key,
        Some(latch::config::HashKey::Query("sid".into()))
    );
}

// === issue 4: checks, retries, passive checks, slow start ===

fn with_tail(tail: &str) -> String {
    upstream_with("", tail)
}

#[test]
fn check_and_retry_sections_are_validated() {
    assert_err(
        &with_tail("[upstream.app.check]\ntype = \"smtp\"\n"),
        7,
        8,
        "upstream.app.check.type",
        "unknown variant `smtp`",
    );
    assert_err(
        &with_tail("[upstream.app.check]\ntype = \"http\"\nrise = 0\n"),
        8,
        8,
        "upstream.app.check.rise",
        "at least 1",
    );
    assert_err(
        &with_tail("[upstream.app.check]\ntype = \"http\"\ninterval = \"1ms\"\n"),
        8,
        12,
        "upstream.app.check.interval",
        "at least 10ms",
    );
    assert_err(
        &with_tail("[upstream.app.check]\ntype = \"http\"\nexpect = [\"2xx\", \"9xx\"]\n"),
        8,
        18,
        "upstream.app.check.expect[1]",
        "9xx",
    );
    assert_err(
        &with_tail("[upstream.app.check]\ntype = \"tcp\"\nsend = \"PING\"\n"),
        8,
        8,
        "upstream.app.check.send",
        "only used with type = \"http\"",
    );
    assert_err(
        &with_tail("[upstream.app.check]\ntype = \"http\"\nmethod = \"GE T\"\n"),
        8,
        10,
        "upstream.app.check.method",
        "invalid method",
    );
    let e = err(&with_tail(
        "[upstream.app.check]\ntype = \"tls\"\nca = \"missing-ca.pem\"\n",
    ));
    assert_eq!(
        (e.line, e.key.as_str()),
        (8, "upstream.app.check.ca"),
        "{e}"
    );
    assert_err(
        &with_tail("[upstream.app.retry]\non = [\"error\", \"http_418\"]\n"),
        7,
        16,
        "upstream.app.retry.on[1]",
        "unknown condition `http_418`",
    );
    assert_err(
        &with_tail("[upstream.app.retry]\ntimeout = \"soon\"\n"),
        7,
        11,
        "upstream.app.retry.timeout",
        "invalid duration",
    );
    assert_err(
        &with_tail("").replace("servers = [", "all_down = \"panic\"\nservers = ["),
        5,
        12,
        "upstream.app.all_down",
        "unknown variant",
    );

    let ok = parse(&with_tail(
        "[upstream.app.check]\ntype = \"ws\"\npath = \"/ws\"\ninterval = \"100ms\"\nstart = \"down\"\nexpect = [\"101\"]\nheaders = { \"X-Probe\" = \"1\" }\n[upstream.app.retry]\non = [\"error\", \"http_502\", \"non_idempotent\"]\ntries = 2\ntimeout = \"5s\"\nmax_body = \"16k\"\n",
    ).replace("servers = [", "max_fails = 3\nfail_timeout = \"30s\"\nslow_start = \"1m\"\nall_down = \"503\"\nservers = ["))
    .unwrap();
    let u = &ok.upstreams["app"];
    let c = u.check.as_ref().unwrap();
    assert_eq!(
        (c.kind, c.interval, c.start_up),
        (
            latch::config::CheckKind::Ws,
            std::time::Duration::from_millis(100),
            false
        )
    );
    assert_eq!(c.headers.len(), 1);
    assert!(u.retry.on_error && !u.retry.on_timeout && u.retry.non_idempotent);
    assert_eq!(
        (
            u.retry.on_status.as_slice(),
            u.retry.tries,
            u.retry.max_body
        ),
        (&[502][..], 2, 16 * 1024)
    );
    assert_eq!(u.retry.timeout, Some(std::time::Duration::from_secs(5)));
    assert_eq!(
        (u.passive.max_fails, u.passive.fail_timeout),
        (3, std::time::Duration::from_secs(30))
    );
    assert_eq!(u.slow_start, Some(std::time::Duration::from_secs(60)));
    assert_eq!(u.all_down, latch::config::AllDown::Reject);

    // nginx defaults: retry on error and timeout, max_fails 1 in 10 s.
    let d = parse(&with_tail("")).unwrap();
    let u = &d.upstreams["app"];
    assert!(
        u.retry.on_error
            && u.retry.on_timeout
            && !u.retry.non_idempotent
            && u.retry.on_status.is_empty()
    );
    assert_eq!(
        (u.passive.max_fails, u.retry.tries, u.retry.timeout),
        (1, 0, None)
    );
    assert!(u.check.is_none() && u.slow_start.is_none());
}
