//! Node.js programs in tests: `npm ci` of a committed lock file, servers
//! that print `ready <port>` (killed when dropped, and exiting when their
//! stdin closes), and client scripts that print one JSON line.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use super::child::Lines;

/// `tests/<name>` in the crate.
pub fn node_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

/// Checks that `node` runs and installs `dir`'s lock file with `npm ci` when
/// one of `packages` is missing. Panics with how to fix it; never skips.
pub fn ensure_npm_ci(dir: &Path, packages: &[&str]) {
    static DONE: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if done.get_or_insert_with(HashSet::new).contains(dir) {
        return;
    }
    let hint = "install Node.js (>= 18) and npm: apt-get install -y nodejs npm";
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!("`node --version` failed ({}); {hint}", out.status),
        Err(e) => panic!("`node` could not be run ({e}); {hint}"),
    }
    let missing = packages.iter().any(|p| {
        !dir.join("node_modules")
            .join(p)
            .join("package.json")
            .is_file()
    });
    if missing {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("`npm` could not be run ({e}); {hint}"));
        assert!(
            out.status.success(),
            "`npm ci` in {} failed ({}):\n{}\n{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    done.get_or_insert_with(HashSet::new)
        .insert(dir.to_path_buf());
}

/// A `node <script> 0 <args...>` server that printed `ready <port>`; killed
/// when dropped. Its later stdout lines are kept.
pub struct NodeServer {
    child: tokio::process::Child,
    pub port: u16,
    pub name: String,
    pub lines: Lines,
}

impl NodeServer {
    pub async fn spawn(dir: &Path, script: &str, name: &str, extra: &[&str]) -> NodeServer {
        let mut child = tokio::process::Command::new("node")
            .arg(script)
            .arg("0")
            .arg(name)
            .args(extra)
            .current_dir(dir)
            .stdin(Stdio::piped()) // kept open: the server exits when it closes
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start `node {script}` ({name}): {e}"));
        let mut lines = Lines::new(child.stdout.take().expect("piped stdout"));
        let ready = lines
            .wait_for(&format!("`ready <port>` from {name}"), |l| {
                l.starts_with("ready ")
            })
            .await;
        let port = ready[6..]
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name} printed a bad port ({e}): {ready}"));
        NodeServer {
            child,
            port,
            name: name.to_owned(),
            lines,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Lines printed so far that contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.lines
            .text()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Runs `node <script> '<config>'` in `dir` (killed if it overruns `limit`)
/// and parses the last JSON line it printed.
pub async fn run_node_json(
    dir: &Path,
    script: &str,
    config: &serde_json::Value,
    limit: Duration,
) -> serde_json::Value {
    let child = tokio::process::Command::new("node")
        .arg(script)
        .arg(config.to_string())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("could not start `node {script}`: {e}"));
    let out = super::within_for(limit, script, child.wait_with_output())
        .await
        .unwrap_or_else(|e| panic!("node {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "node {script} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line from {script}:\n{stdout}\n{stderr}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON from {script}: {e}\n{line}"))
}
