//! Certificates for TLS listeners, loaded and checked while the config is
//! validated, so an unreadable file or a key that does not match its
//! certificate is a config error with a line number, not a failed handshake.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use toml::Spanned;

use super::file::TlsSection;
use super::{ConfigError, Reporter};

/// The certificates of one listener: a default plus any chosen by SNI name.
#[derive(Clone)]
pub struct TlsSettings {
    /// Served when the client sends no SNI or a name nobody claims.
    pub default: Arc<CertifiedKey>,
    /// `(lower-case name or *.suffix, certificate)`, in file order.
    pub sni: Vec<(String, Arc<CertifiedKey>)>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.sni.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("TlsSettings")
            .field("sni", &names)
            .finish_non_exhaustive()
    }
}

impl TlsSettings {
    pub fn single(key: Arc<CertifiedKey>) -> Self {
        TlsSettings {
            default: key,
            sni: Vec::new(),
        }
    }
}

/// The crypto provider every TLS object in latch uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(super) fn load(
    r: &dyn Reporter,
    key: &str,
    t: &TlsSection,
) -> Result<TlsSettings, ConfigError> {
    let default = pair(r, key, &t.cert, &t.key)?;
    let mut sni = Vec::new();
    for (i, s) in t.sni.iter().enumerate() {
        let skey = format!("{key}.sni[{i}]");
        let ck = pair(r, &skey, &s.cert, &s.key)?;
        if s.names.get_ref().is_empty() {
            return Err(r.report(
                s.names.span(),
                &format!("{skey}.names"),
                "needs at least one name".into(),
            ));
        }
        for name in s.names.get_ref() {
            sni.push((name.to_ascii_lowercase(), ck.clone()));
        }
    }
    Ok(TlsSettings { default, sni })
}

fn pair(
    r: &dyn Reporter,
    key: &str,
    cert: &Spanned<String>,
    pkey: &Spanned<String>,
) -> Result<Arc<CertifiedKey>, ConfigError> {
    let cert_path = r.resolve(cert.get_ref());
    let ckey = format!("{key}.cert");
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| {
            r.report(
                cert.span(),
                &ckey,
                format!("cannot read certificate {}: {e}", cert_path.display()),
            )
        })?;
    if chain.is_empty() {
        return Err(r.report(
            cert.span(),
            &ckey,
            format!("no certificate found in {}", cert_path.display()),
        ));
    }
    let key_path = r.resolve(pkey.get_ref());
    let kkey = format!("{key}.key");
    let der = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
        r.report(
            pkey.span(),
            &kkey,
            format!("cannot read private key {}: {e}", key_path.display()),
        )
    })?;
    let ck = CertifiedKey::from_der(chain, der, &provider()).map_err(|e| {
        r.report(
            pkey.span(),
            &kkey,
            format!("unusable key {}: {e}", key_path.display()),
        )
    })?;
    Ok(Arc::new(ck))
}
