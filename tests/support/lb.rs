//! Starting latch itself in a test: from TOML text, on 127.0.0.1:0 listeners.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use latch::{Config, Handle};

/// A running latch and its listener addresses (config order).
pub struct Lb {
    pub handle: Handle,
    pub addrs: Vec<SocketAddr>,
}

impl Lb {
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }
}

/// Starts latch from `toml`. Relative paths resolve against `dir` (or the
/// crate root when `None`). Panics with the config error when invalid.
pub async fn spawn_lb_in(toml: &str, dir: Option<&Path>) -> Lb {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let origin = dir.unwrap_or(root).join("test.toml");
    let config =
        Config::parse(toml, &origin).unwrap_or_else(|e| panic!("bad test config: {e}\n{toml}"));
    let handle = latch::start(config)
        .await
        .unwrap_or_else(|e| panic!("latch did not start: {e}"));
    let addrs = handle.listener_addrs();
    Lb { handle, addrs }
}

pub async fn spawn_lb(toml: &str) -> Lb {
    spawn_lb_in(toml, None).await
}

/// `servers = [...]` text for these backends, each with weight 1.
pub fn servers(addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    format!("servers = [{}]", list.join(", "))
}

/// One plain listener in front of one upstream `app` over `addrs`, plus `extra`
/// lines appended to `[upstream.app]`'s sections (e.g. a timeouts table).
pub fn simple_config(addrs: &[SocketAddr], extra: &str) -> String {
    format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\n[upstream.app]\n{}\n{extra}\n",
        servers(addrs)
    )
}

/// The backends latch knows for upstream `app`, in config order.
pub fn lb_backends(lb: &Lb) -> Vec<Arc<latch::backend::Backend>> {
    lb.handle.snapshot().upstreams["app"].backends.clone()
}

/// latch's view of the backend at `addr`.
pub fn lb_backend(lb: &Lb, addr: SocketAddr) -> Arc<latch::backend::Backend> {
    lb_backends(lb)
        .into_iter()
        .find(|b| b.addr == addr)
        .unwrap_or_else(|| panic!("latch has no backend {addr}"))
}

/// `(active, tunnels)` of every backend of `app`, in config order.
pub fn counts(lb: &Lb) -> Vec<(usize, usize)> {
    lb_backends(lb)
        .iter()
        .map(|b| (b.active(), b.tunnels()))
        .collect()
}

/// Waits (polling, bounded) until no backend of `app` counts a request or a tunnel.
pub async fn wait_all_idle(lb: &Lb) {
    let limit = Duration::from_secs(5);
    let what = || format!("(active, tunnels) per backend back to 0: {:?}", counts(lb));
    let deadline = tokio::time::Instant::now() + limit;
    while !counts(lb).iter().all(|&c| c == (0, 0)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {limit:?}: {}",
            what()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every backend of every upstream, with its upstream's name.
pub fn all_backends(lb: &Lb) -> Vec<(String, Arc<latch::backend::Backend>)> {
    let snap = lb.handle.snapshot();
    let mut out = Vec::new();
    for (name, up) in &snap.upstreams {
        for b in &up.backends {
            out.push((name.clone(), b.clone()));
        }
    }
    out
}

/// Asserts that no backend of `lb` counts a request or tunnel in flight.
pub fn assert_all_idle(lb: &Lb, when: &str) {
    for (up, b) in all_backends(lb) {
        assert_eq!(
            (b.active(), b.tunnels()),
            (0, 0),
            "{when}: backend {} of upstream `{up}` still counts (active, tunnels)",
            b.addr
        );
    }
}
