//! `deploy/latch.service`, the systemd unit: it has what running latch as a
//! service needs (reload by SIGHUP, a stop that outlasts the drain, enough
//! descriptors, a sandbox), and `systemd-analyze verify` accepts it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn unit() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/latch.service");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every value of `key=` in the unit, in order.
fn values(unit: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

fn one(unit: &str, key: &str) -> String {
    let v = values(unit, key);
    assert_eq!(v.len(), 1, "{key}= must be set once, got {v:?}");
    v[0].clone()
}

#[test]
fn the_unit_reloads_by_sighup_drains_on_stop_and_is_sandboxed() {
    let u = unit();
    assert_eq!(one(&u, "ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one(&u, "KillSignal"), "SIGTERM");
    assert!(one(&u, "ExecStart").contains("latch run --config"));
    // systemd's stop timeout must outlast latch's drain (`grace`, 30 s by
    // default), or it kills tunnels the drain would have let finish.
    let stop = latch::config::file::parse_duration(&one(&u, "TimeoutStopSec"))
        .expect("TimeoutStopSec as a duration");
    let grace = latch::Config::parse(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"a\"\n\
         [upstream.a]\nservers = [{ addr = \"127.0.0.1:1\" }]\n",
        Path::new("t.toml"),
    )
    .expect("minimal config")
    .server
    .grace;
    assert!(
        stop > grace + Duration::from_secs(5),
        "TimeoutStopSec {stop:?} vs grace {grace:?}"
    );
    let nofile: u64 = one(&u, "LimitNOFILE").parse().expect("a number");
    assert!(nofile >= 65_536, "LimitNOFILE {nofile}");
    assert_eq!(one(&u, "NoNewPrivileges"), "yes");
    assert_eq!(one(&u, "ProtectSystem"), "strict");
    assert_eq!(one(&u, "AmbientCapabilities"), "CAP_NET_BIND_SERVICE");
    assert_eq!(one(&u, "CapabilityBoundingSet"), "CAP_NET_BIND_SERVICE");
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    // systemd-analyze checks that ExecStart's program exists, so the unit is
    // verified with its /usr/local/bin/latch replaced by the latch just built;
    // every other line is verified as shipped.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED: systemd-analyze is not installed, so the unit was not verified \
             (install systemd to run this check: apt-get install -y systemd)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit().replace("/usr/local/bin/latch", env!("CARGO_BIN_EXE_latch"));
    let path = dir.path().join("latch.service");
    std::fs::write(&path, unit).expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{said}"
    );
    assert!(
        !said.contains("latch.service"),
        "systemd-analyze has something to say about the unit:\n{said}"
    );
    eprintln!("systemd-analyze verify: the unit is valid");
}

#[test]
fn latch_check_prints_what_the_config_will_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("latch.toml");
    std::fs::write(
        &path,
        r#"[[listener]]
bind = "127.0.0.1:8080"
upstream = "chat"

[[listener.route]]
path_prefix = "/api/"
upstream = "chat"

[upstream.chat]
balance = "least_conn"
servers = [{ addr = "127.0.0.1:9001", id = "c1", max_conns = 10 }, { addr = "127.0.0.1:9002", backup = true }]
discover = { name = "chat.internal", port = 8001, max_upgrades_per_sec = 50 }
resolver = "127.0.0.1:9"

[upstream.chat.sticky]
secret = "0123456789abcdef0123456789abcdef"

[upstream.chta]
servers = [{ addr = "127.0.0.1:9003" }]
"#,
    )
    .expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_latch"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run latch check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = [
        "listener 127.0.0.1:8080",
        "  * /api/ -> chat",
        "  * / -> chat",
        "upstream chat: least_conn, sticky cookie LATCH",
        "  c1 127.0.0.1:9001 weight 1 max_conns 10",
        "  127.0.0.1:9002 weight 1 backup",
        "  + servers from DNS: A chat.internal port 8001 via 127.0.0.1:9, every TTL within 1s..30s, each max_upgrades_per_sec 50 (not resolved by check)",
        // The typo'd upstream that nothing routes to stands out.
        "upstream chta: round_robin, no stickiness  <- no listener routes here",
    ];
    for line in want {
        assert!(
            stdout.lines().any(|l| l.starts_with(line)),
            "no line {line:?} in:\n{stdout}"
        );
    }
    assert!(stdout.lines().count() < 25, "one screen:\n{stdout}");
}
