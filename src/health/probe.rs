//! One probe of one backend: the kinds of probe and the single entry point
//! [`run`]. What an HTTP probe sends and accepts is in `spec.rs` (a leaf the
//! exchanges share); the exchanges live next door, one file per kind
//! (`probe_http`, `probe_ws`, `probe_tls`), so each stays short.
//!
//! A probe talks to a server that may be broken in any way, so nothing here
//! panics on what comes back: every failure becomes a short reason for the
//! logs and the status page, and the whole probe runs under one timeout.

use std::net::SocketAddr;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;

use super::spec::{HttpProbe, io_reason};
use super::{probe_http, probe_tls, probe_ws};

/// What a probe does after connecting.
#[derive(Debug, Clone)]
pub enum Probe {
    /// Healthy when a TCP connection opens.
    Tcp,
    /// Healthy when an HTTP/1.1 request gets an expected answer.
    Http(HttpProbe),
    /// Healthy when a WebSocket handshake succeeds and the connection closes
    /// cleanly. Uses `path`, `host` and `headers` of the [`HttpProbe`]; the
    /// method is always GET and the answer must be 101, so `method`, `send`,
    /// `expect` and `expect_body` are ignored.
    Ws(HttpProbe),
    /// Healthy when a TLS handshake completes.
    Tls {
        /// Server name sent in SNI and checked against the certificate;
        /// "localhost" when absent.
        sni: Option<String>,
        /// Trust roots for the backend's certificate. `None` accepts any
        /// certificate: the probe then only proves that the backend speaks
        /// TLS, which is what a health check needs when latch itself does
        /// not verify backends.
        ca: Option<Vec<CertificateDer<'static>>>,
    },
}

/// Probes `addr` once. `Ok(())` means healthy; `Err` carries a short reason
/// ("connect: connection refused", "timeout after 1s", "status 503", ...).
/// The whole probe, connect included, is bounded by `timeout`.
pub async fn run(probe: &Probe, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    run_after(probe, addr, timeout, &[]).await
}

/// Like [`run`], with `preface` sent first on the new connection: the PROXY
/// protocol header naming no client that a `send_proxy` server expects.
pub async fn run_after(
    probe: &Probe,
    addr: SocketAddr,
    timeout: Duration,
    preface: &[u8],
) -> Result<(), String> {
    let once = async {
        let mut tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {}", io_reason(&e)))?;
        // Probes are small request/response exchanges; do not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        if !preface.is_empty() {
            tokio::io::AsyncWriteExt::write_all(&mut tcp, preface)
                .await
                .map_err(|e| format!("sending the PROXY header: {}", io_reason(&e)))?;
        }
        match probe {
            Probe::Tcp => Ok(()),
            Probe::Http(h) => probe_http::check(h, tcp, addr).await,
            Probe::Ws(h) => probe_ws::check(h, tcp, addr).await,
            Probe::Tls { sni, ca } => probe_tls::check(sni.as_deref(), ca.as_deref(), tcp).await,
        }
    };
    tokio::time::timeout(timeout, once)
        .await
        .unwrap_or_else(|_| Err(format!("timeout after {timeout:?}")))
}
