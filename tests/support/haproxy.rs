//! Debian's HAProxy as a test peer (PROXY protocol: `send-proxy`,
//! `accept-proxy`), started from a generated config and stopped (by its PID,
//! through `kill_on_drop`) when dropped; and clients that connect from a
//! chosen loopback address, so a PROXY header's client differs from the TCP
//! peer latch sees (HAProxy connects from 127.0.0.1).
//!
//! HAProxy refuses `bind ...:0`, so its ports are picked free (bound on
//! 127.0.0.1:0 and released) just before it starts; if one was taken in
//! between, HAProxy exits at once and is started again on new ports
//! (bounded). It is ready when its extra `ready` frontend accepts and every
//! port of the config listens.

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

use super::child::{Lines, free_ports};
use super::{TIMEOUT, within};

/// A running HAProxy; killed when dropped.
pub struct Haproxy {
    child: tokio::process::Child,
    /// The ports given to the config function, in order.
    pub ports: Vec<u16>,
    pub stderr: Lines,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// `127.0.0.1:ports[i]`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[i]))
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The installed `haproxy`, or a failure that says how to install it.
fn haproxy_bin() -> &'static str {
    let found = std::process::Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "haproxy is not installed; these tests need Debian's: apt-get install -y haproxy"
    );
    "haproxy"
}

/// The `global` and `defaults` sections every test config starts with.
/// `noreuseport`: a port another process holds is an error at start, not
/// silently shared.
const PREAMBLE: &str = "global\n  maxconn 256\n  noreuseport\n\
     defaults\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  \
     timeout tunnel 60s\n\n";

/// A frontend that answers 200, for [`spawn_haproxy`] to wait for.
fn ready_frontend(port: u16) -> String {
    format!(
        "\nfrontend ready\n  mode http\n  bind 127.0.0.1:{port}\n  \
         http-request return status 200\n"
    )
}

/// Starts HAProxy with `sections(ports)` (frontends and backends; the
/// `global`/`defaults` part is added) on `n` free ports, and waits until it
/// accepts connections.
pub async fn spawn_haproxy(n: usize, sections: impl Fn(&[u16]) -> String) -> Haproxy {
    let bin = haproxy_bin();
    for _attempt in 0..5 {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ports = free_ports(n + 1);
        let ready = ports.pop().expect("n + 1 ports");
        let config = dir.path().join("haproxy.cfg");
        let text = format!("{PREAMBLE}{}{}", sections(&ports), ready_frontend(ready));
        std::fs::write(&config, text).expect("write haproxy.cfg");
        let mut child = tokio::process::Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start haproxy: {e}"));
        let stderr = Lines::new(child.stderr.take().expect("piped stderr"));
        let ready_addr = SocketAddr::from(([127, 0, 0, 1], ready));
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("haproxy status") {
                let text = stderr.text();
                // A port taken since it was picked: try again on others.
                if text.contains("cannot bind") || text.contains("Address already in use") {
                    break;
                }
                panic!("haproxy exited ({status}):\n{text}");
            }
            if TcpStream::connect(ready_addr).await.is_ok() && ports.iter().all(|p| listening(*p)) {
                return Haproxy {
                    child,
                    ports,
                    stderr,
                    _dir: dir,
                };
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "haproxy not ready within {TIMEOUT:?}:\n{}",
                stderr.text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    panic!("haproxy could not bind free ports in 5 attempts");
}

/// Whether something listens on 127.0.0.1:`port` (from `/proc/net/tcp`, so
/// no connection is made to a frontend that would pass it on).
fn listening(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // Field 1 is the local address, field 3 the state (0A = LISTEN).
        f.len() > 3 && f[1] == local && f[3] == "0A"
    })
}

/// A TCP connection to `to` from the loopback address `from` (any port).
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let what = format!("connect {to} from {from}");
    within(&what, async {
        let socket = match from {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .expect("socket");
        socket
            .bind(SocketAddr::new(from, 0))
            .unwrap_or_else(|e| panic!("bind {from}: {e}"));
        socket
            .connect(to)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    })
    .await
}
