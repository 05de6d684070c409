//! The `latch` binary as a child process: started with piped output, its
//! lines read in the background so tests wait for log lines instead of
//! sleeping, and killed when dropped.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

use super::{TIMEOUT, within};

/// Lines of one output stream of a child, read by a background task.
pub struct Lines {
    rx: mpsc::UnboundedReceiver<String>,
    /// Everything read so far, for failure messages.
    seen: Arc<Mutex<Vec<String>>>,
}

impl Lines {
    pub fn new<R: AsyncRead + Unpin + Send + 'static>(r: R) -> Lines {
        let (tx, rx) = mpsc::unbounded_channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Lines { rx, seen }
    }

    pub fn text(&self) -> String {
        self.seen.lock().unwrap().join("\n")
    }

    /// The next line matching `pred` (earlier lines are skipped), within
    /// [`TIMEOUT`]; panics if the stream ends first.
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let found = tokio::time::timeout(TIMEOUT, async {
            while let Some(line) = self.rx.recv().await {
                if pred(&line) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            Ok(None) => panic!("output ended before {what}:\n{}", self.text()),
            Err(_) => panic!("no {what} within {TIMEOUT:?}:\n{}", self.text()),
        }
    }

    /// Waits until the stream ends (the child closed it), within [`TIMEOUT`].
    pub async fn wait_end(&mut self) -> String {
        let ended =
            tokio::time::timeout(TIMEOUT, async { while self.rx.recv().await.is_some() {} }).await;
        assert!(ended.is_ok(), "output did not end:\n{}", self.text());
        self.text()
    }
}

/// A running `latch` child process; killed when dropped.
pub struct Child {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub stdout: Lines,
    pub stderr: Lines,
}

impl Child {
    /// Starts the `latch` binary with `args`, logging at `info` without colours.
    pub fn spawn(args: &[&str]) -> Child {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_latch"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start latch {args:?}: {e}"));
        let pid = child.id().expect("a running child has a pid");
        let stdout = Lines::new(child.stdout.take().expect("piped stdout"));
        let stderr = Lines::new(child.stderr.take().expect("piped stderr"));
        Child {
            child,
            pid,
            stdout,
            stderr,
        }
    }

    /// Starts the `latch` binary with `args` and its stderr written to
    /// `stderr` (a file), as a service manager would; `NO_COLOR` is not set,
    /// so colours depend on latch's own terminal check. Its `stderr` lines
    /// are empty: read the file.
    pub fn spawn_to_file(args: &[&str], stderr: std::fs::File) -> Child {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_latch"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start latch {args:?}: {e}"));
        let pid = child.id().expect("a running child has a pid");
        let stdout = Lines::new(child.stdout.take().expect("piped stdout"));
        Child {
            child,
            pid,
            stdout,
            stderr: Lines::new(tokio::io::empty()),
        }
    }

    /// Waits for the process to exit, within `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("waiting for latch"),
            Err(_) => panic!(
                "latch did not exit within {limit:?}\nstderr:\n{}",
                self.stderr.text()
            ),
        }
    }

    /// Sends SIGTERM with `kill(1)` (no libc here).
    pub async fn terminate(&self) {
        self.signal("TERM").await
    }

    /// Sends signal `name` (e.g. `"HUP"`) with `kill(1)`.
    pub async fn signal(&self, name: &str) {
        let status = within(
            "kill",
            tokio::process::Command::new("kill")
                .arg(format!("-{name}"))
                .arg(self.pid.to_string())
                .status(),
        )
        .await
        .expect("run kill");
        assert!(
            status.success(),
            "kill -{name} {} failed: {status}",
            self.pid
        );
    }

    /// Like [`Child::spawn`], with `env` set for the child (e.g. a
    /// `RUST_LOG` of its own).
    pub fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Child {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_latch"));
        cmd.args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start latch {args:?}: {e}"));
        let pid = child.id().expect("a running child has a pid");
        let stdout = Lines::new(child.stdout.take().expect("piped stdout"));
        let stderr = Lines::new(child.stderr.take().expect("piped stderr"));
        Child {
            child,
            pid,
            stdout,
            stderr,
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // Already exited is fine; otherwise SIGKILL (tokio reaps it).
        let _ = self.child.start_kill();
    }
}

/// A port that was free a moment ago (bind `127.0.0.1:0`, read, release).
/// Only for a child process whose listener address must be known up front.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` different ports that were free a moment ago. All are held until every
/// one is known: released one by one, the kernel may hand the same port out
/// twice (it did, for the TLS and h2c listeners of one config).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}
