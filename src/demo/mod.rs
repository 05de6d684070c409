//! `latch demo`: the embedded default. Three built-in backends (an HTTP page,
//! a WebSocket echo and a socket.io-style long-poll, each naming itself) behind
//! a TLS listener with a certificate made at start, plus a plain listener.
//! Nothing is read from disk, so it works on a fresh machine with one command.
//! Browsers are pinned to a backend by latch's signed cookie, so the page's
//! long-poll session keeps working; a client that ignores cookies is placed
//! by round robin on every request.
//! `conf/demo.toml` describes the same setup against external backends.

mod backend;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use backend::spawn_backend;

use crate::config::{self, Config};
use crate::{Handle, StartError};

/// Where the demo listens unless told otherwise.
pub const HTTPS: &str = "127.0.0.1:8443";
pub const HTTP: &str = "127.0.0.1:8080";

/// A running demo.
pub struct Demo {
    pub handle: Handle,
    /// `(name, address)` of each built-in backend.
    pub backends: Vec<(String, SocketAddr)>,
    /// The self-signed certificate the TLS listener serves (PEM), for clients
    /// that want to trust it.
    pub cert_pem: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start demo backend: {0}")]
    Backend(std::io::Error),
    #[error("cannot make the demo certificate: {0}")]
    Cert(String),
    #[error("demo config: {0}")]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
}

/// Starts the backends and latch in front of them on `https` and `http`.
pub async fn start(https: SocketAddr, http: SocketAddr) -> Result<Demo, DemoError> {
    let mut backends = Vec::new();
    let mut tasks = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(DemoError::Backend)?;
        let addr = l.local_addr().map_err(DemoError::Backend)?;
        tasks.push(spawn_backend(name.to_string(), l));
        backends.push((name.to_string(), addr));
    }
    let servers: Vec<String> = backends
        .iter()
        .map(|(_, a)| format!("{{ addr = \"{a}\" }}"))
        .collect();
    let text = format!(
        r#"
[[listener]]
bind = "{https}"
upstream = "demo"

[[listener]]
bind = "{http}"
upstream = "demo"

[upstream.demo]
balance = "round_robin"
servers = [{}]

[upstream.demo.check]
type = "http"
path = "/health"
interval = "2s"

# Long-poll sessions live in one backend's memory: pin each browser to it.
[upstream.demo.sticky]
mode = "cookie"
cookie = "LATCH"
secret = "{}"
"#,
        servers.join(", "),
        demo_secret()
    );
    let mut config = Config::parse(&text, Path::new("<demo>"))?;
    let (key, cert_pem) = self_signed(&["localhost", "127.0.0.1"])?;
    config.listeners[0].tls = Some(config::tls_from_key(key));
    // A TLS listener speaks HTTP/2 by default (ALPN h2), WebSockets included.
    config.listeners[0].http2 = Some(config::H2Settings::defaults(config.server.max_header_size));
    let handle = crate::start(config).await?;
    Ok(Demo {
        handle,
        backends,
        cert_pem,
        tasks,
    })
}

/// A random HMAC key for this run of the demo (one instance, so nothing to share).
fn demo_secret() -> String {
    use std::hash::{BuildHasher, RandomState};
    // `RandomState` is seeded from the OS; four draws give 256 bits.
    let state = RandomState::new();
    (0..4u64)
        .map(|i| format!("{:016x}", state.hash_one(i)))
        .collect()
}

/// A fresh self-signed certificate for `names`, as rustls wants it and as PEM.
pub fn self_signed(names: &[&str]) -> Result<(Arc<rustls::sign::CertifiedKey>, String), DemoError> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let made =
        rcgen::generate_simple_self_signed(names).map_err(|e| DemoError::Cert(e.to_string()))?;
    let cert: CertificateDer<'static> = made.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
    let ck = rustls::sign::CertifiedKey::from_der(vec![cert], key, &config::provider())
        .map_err(|e| DemoError::Cert(e.to_string()))?;
    Ok((Arc::new(ck), made.cert.pem()))
}
