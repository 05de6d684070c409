//! TLS for listeners: rustls with TLS 1.2 and 1.3 only, ALPN `h2` (when the
//! listener speaks HTTP/2) then `http/1.1`, and a
//! certificate chosen by the SNI name the client sends (exact name first, then
//! a `*.suffix` wildcard, then the listener's default certificate).

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use tokio_rustls::TlsAcceptor;

use crate::config::{TlsSettings, provider};

#[derive(Debug)]
struct SniResolver(TlsSettings);

impl SniResolver {
    fn lookup(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name.map(str::to_ascii_lowercase) else {
            return self.0.default.clone();
        };
        let exact = self.0.sni.iter().find(|(n, _)| *n == name);
        let wildcard = || {
            let parent = name.split_once('.')?.1;
            self.0
                .sni
                .iter()
                .find(|(n, _)| n.strip_prefix("*.") == Some(parent))
        };
        exact
            .or_else(wildcard)
            .map_or_else(|| self.0.default.clone(), |(_, k)| k.clone())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.lookup(hello.server_name()))
    }
}

/// A TLS acceptor serving `settings`, offering `h2` first when `http2`.
pub fn acceptor(settings: &TlsSettings, http2: bool) -> Result<TlsAcceptor, rustls::Error> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver(settings.clone())));
    cfg.alpn_protocols = match http2 {
        true => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        false => vec![b"http/1.1".to_vec()],
    };
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}
