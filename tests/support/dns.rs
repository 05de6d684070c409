//! A real DNS server for discovery tests, and backends a name can point at.
//!
//! [`Dnsmasq`] runs Debian's dnsmasq on `127.0.0.1` and a free port, answering
//! only from a hosts file of its own (`--no-resolv --no-hosts --addn-hosts`)
//! with a TTL of 1 s, authoritative for `.test` (`--local=/test/`: unknown
//! names get NXDOMAIN). [`Dnsmasq::set_hosts`] rewrites the file, sends
//! SIGHUP, and waits until dnsmasq answers with the new set. SRV records are
//! given at start (`--srv-host`), as dnsmasq only reloads its hosts files.
//!
//! [`Fleet`] starts mock backends on `127.0.0.2`, `127.0.0.3`, … all on one
//! port, so that an A record (which has no port) can name each of them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use tokio::net::TcpListener;

use super::backend::{Backend, spawn_backend_on};
use super::{TIMEOUT, within};

/// How to get dnsmasq when it is missing (`.ci/run` does the same).
pub const INSTALL: &str = "apt-get install -y dnsmasq-base";

/// A running dnsmasq; killed (SIGKILL) when dropped.
pub struct Dnsmasq {
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    child: Option<tokio::process::Child>,
    dir: tempfile::TempDir,
    hosts: PathBuf,
    srv: Vec<String>,
}

impl Dnsmasq {
    /// Starts dnsmasq answering `hosts` (name, address) and `srv` records
    /// (`--srv-host` values, e.g. `_app._tcp.test,app1.test,8001`).
    pub async fn start(hosts: &[(&str, IpAddr)], srv: &[&str]) -> Dnsmasq {
        let dir = tempfile::tempdir().expect("tempdir for dnsmasq");
        // dnsmasq started as root reads its files as `nobody` after SIGHUP.
        set_mode(dir.path(), 0o755);
        let hosts_file = dir.path().join("hosts");
        write_hosts(&hosts_file, hosts);
        let mut d = Dnsmasq {
            addr: "127.0.0.1:0".parse().expect("address"),
            child: None,
            dir,
            hosts: hosts_file,
            srv: srv.iter().map(|s| s.to_string()).collect(),
        };
        // A port free a moment ago can be taken in between: a few tries.
        for _ in 0..5 {
            d.addr = SocketAddr::from(([127, 0, 0, 1], free_udp_tcp_port()));
            if d.spawn().await {
                return d;
            }
        }
        panic!("dnsmasq did not start on a free port after 5 tries");
    }

    /// Starts dnsmasq on `self.addr`; false if it exited (port taken).
    async fn spawn(&mut self) -> bool {
        let mut args = vec![
            "--keep-in-foreground".to_string(),
            "--conf-file=/dev/null".to_string(),
            "--no-resolv".to_string(),
            "--no-hosts".to_string(),
            format!("--addn-hosts={}", self.hosts.display()),
            "--local=/test/".to_string(),
            "--local-ttl=1".to_string(),
            format!("--port={}", self.addr.port()),
            "--listen-address=127.0.0.1".to_string(),
            "--bind-interfaces".to_string(),
            format!("--pid-file={}", self.dir.path().join("pid").display()),
        ];
        args.extend(self.srv.iter().map(|s| format!("--srv-host={s}")));
        // Debian puts it in /usr/sbin, which a non-root PATH may lack.
        let spawn = |program: &str| {
            tokio::process::Command::new(program)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
        };
        let spawned = match spawn("dnsmasq") {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => spawn("/usr/sbin/dnsmasq"),
            other => other,
        };
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("dnsmasq is not installed; install it with `{INSTALL}`")
            }
            Err(e) => panic!("cannot start dnsmasq: {e}"),
        };
        // Ready once it accepts TCP on its port, or failed if it exits.
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    let _ = e.read_to_string(&mut err).await;
                }
                eprintln!("dnsmasq on {} exited ({status}): {err}", self.addr);
                return false;
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                self.child = Some(child);
                return true;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "dnsmasq did not listen on {} within {TIMEOUT:?}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Replaces the hosts file, makes dnsmasq re-read it (SIGHUP), and waits
    /// until `check` answers with the addresses the new file gives it.
    pub async fn set_hosts(&self, hosts: &[(&str, IpAddr)], check: &str) {
        write_hosts(&self.hosts, hosts);
        let pid = self
            .child
            .as_ref()
            .and_then(|c| c.id())
            .expect("dnsmasq runs");
        let status = within(
            "kill -HUP dnsmasq",
            tokio::process::Command::new("kill")
                .arg("-HUP")
                .arg(pid.to_string())
                .status(),
        )
        .await
        .expect("run kill");
        assert!(status.success(), "kill -HUP {pid}: {status}");
        let mut want: Vec<IpAddr> = hosts
            .iter()
            .filter(|(n, _)| *n == check)
            .map(|(_, ip)| *ip)
            .collect();
        want.sort();
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let got = self.lookup_a(check).await;
            if got == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "dnsmasq still answers {got:?} for {check}, not {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Replaces the hosts file only (for a dnsmasq that is down: it reads
    /// the file when [`Dnsmasq::restart`] starts it).
    pub fn set_hosts_offline(&self, hosts: &[(&str, IpAddr)]) {
        write_hosts(&self.hosts, hosts);
    }

    /// The A records dnsmasq gives `name` now, sorted (empty on NXDOMAIN).
    pub async fn lookup_a(&self, name: &str) -> Vec<IpAddr> {
        let mut tcp = ConnectionConfig::tcp();
        tcp.port = self.addr.port();
        let server = NameServerConfig::new(self.addr.ip(), true, vec![tcp]);
        let resolver = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(vec![server]),
            TokioRuntimeProvider::default(),
        )
        .build()
        .expect("test resolver");
        let mut out: Vec<IpAddr> =
            match within("DNS query", resolver.lookup(name, RecordType::A)).await {
                Ok(l) => l
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        _ => None,
                    })
                    .collect(),
                Err(_) => Vec::new(),
            };
        out.sort();
        out
    }

    /// Kills dnsmasq (SIGKILL) and waits until it is gone.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = within("dnsmasq exit", c.wait()).await;
        }
    }

    /// Starts dnsmasq again on the same address, with the same files.
    pub async fn restart(&mut self) {
        self.kill().await;
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while !self.spawn().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "dnsmasq could not take {} again",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn write_hosts(path: &std::path::Path, hosts: &[(&str, IpAddr)]) {
    let text: String = hosts.iter().map(|(n, ip)| format!("{ip} {n}\n")).collect();
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).expect("write hosts file");
    set_mode(&tmp, 0o644);
    std::fs::rename(&tmp, path).expect("replace hosts file");
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A port free on 127.0.0.1 for both UDP and TCP a moment ago, below
/// Linux's ephemeral range (32768-60999): a test kills and restarts dnsmasq
/// on the same port, and a port inside that range can meanwhile become the
/// source port of some other socket on this busy machine (seen: "Address
/// already in use" on restart). Ports below it are only taken on purpose.
fn free_udp_tcp_port() -> u16 {
    for _ in 0..200 {
        let port = rand::random_range(20_000..32_000u16);
        let Ok(_udp) = std::net::UdpSocket::bind(("127.0.0.1", port)) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1 in 20000-32000");
}

/// Mock backends on `127.0.0.<first>`, `127.0.0.<first+1>`, …, one port.
pub struct Fleet {
    pub port: u16,
    /// By host number: `backends[i]` is on `127.0.0.<first + i>`.
    pub backends: Vec<Backend>,
    first: u8,
}

impl Fleet {
    /// `n` backends named `b2`, `b3`, … (after their address's last byte).
    pub async fn start(first: u8, n: u8) -> Fleet {
        for _ in 0..20 {
            let l0 = TcpListener::bind((fleet_ip(first), 0))
                .await
                .expect("bind fleet");
            let port = l0.local_addr().expect("local_addr").port();
            let mut listeners = vec![l0];
            for i in 1..n {
                match TcpListener::bind((fleet_ip(first + i), port)).await {
                    Ok(l) => listeners.push(l),
                    Err(_) => break,
                }
            }
            if listeners.len() == usize::from(n) {
                let backends = listeners
                    .into_iter()
                    .enumerate()
                    .map(|(i, l)| spawn_backend_on(&format!("b{}", usize::from(first) + i), l))
                    .collect();
                return Fleet {
                    port,
                    backends,
                    first,
                };
            }
        }
        panic!("no port free on {n} loopback addresses from 127.0.0.{first}");
    }

    /// The address of backend `i`.
    pub fn ip(&self, i: usize) -> IpAddr {
        IpAddr::V4(fleet_ip(self.first + u8::try_from(i).expect("small fleet")))
    }

    /// Hosts-file lines naming backends `range` as `name`.
    pub fn hosts<'a>(
        &self,
        name: &'a str,
        range: std::ops::Range<usize>,
    ) -> Vec<(&'a str, IpAddr)> {
        range.map(|i| (name, self.ip(i))).collect()
    }

    /// `127.0.0.<n>:port` of backend `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::new(self.ip(i), self.port)
    }
}

fn fleet_ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// `GET path` on latch's admin listener: the body as text.
pub async fn admin_text(admin: SocketAddr, path: &str) -> String {
    let (status, _, body) = super::http_get(admin, "localhost", path).await;
    assert!(
        status.is_success(),
        "GET {path} on the admin listener: {status}"
    );
    String::from_utf8_lossy(&body).into_owned()
}

/// `GET /status` as JSON.
pub async fn status_json(admin: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&admin_text(admin, "/status").await).expect("/status is JSON")
}

/// The value of the `/metrics` series `series` (name with its labels, as
/// printed), or 0 when it is not there.
pub async fn metric(admin: SocketAddr, series: &str) -> f64 {
    let text = admin_text(admin, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}
