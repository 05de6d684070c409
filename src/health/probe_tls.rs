//! The TLS probe: a full handshake with rustls, then close_notify.
//!
//! Without configured roots the probe accepts any certificate. That is on
//! purpose and not a security hole: no request or secret is ever sent on
//! this connection, and the question asked is only "does the backend
//! complete a TLS handshake", which a self-signed or expired certificate does
//! not change. With roots, the chain and the SNI name are verified as a
//! client would, so an expired or wrong certificate marks the backend down.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::provider;

pub(super) async fn check(
    sni: Option<&str>,
    ca: Option<&[CertificateDer<'static>]>,
    tcp: TcpStream,
) -> Result<(), String> {
    let name = sni.unwrap_or("localhost");
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|e| format!("tls: bad server name {name:?}: {e}"))?;
    let connector = TlsConnector::from(Arc::new(client_config(ca)?));
    let mut tls = connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    // The handshake is the answer; close_notify is courtesy, so its failure
    // (a peer that already hung up) changes nothing.
    let _ = tls.shutdown().await;
    Ok(())
}

/// A client config that verifies against `ca`, or accepts any certificate
/// when there is none. Built per probe: probes are seconds apart, and the
/// roots are few.
fn client_config(ca: Option<&[CertificateDer<'static>]>) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let config = match ca {
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(
                provider.signature_verification_algorithms,
            ))),
        Some(certs) => {
            let mut roots = RootCertStore::empty();
            for cert in certs {
                roots
                    .add(cert.clone())
                    .map_err(|e| format!("tls: unusable CA certificate: {e}"))?;
            }
            let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("tls: {e}"))?;
            builder.with_webpki_verifier(verifier)
        }
    };
    Ok(config.with_no_client_auth())
}

/// Takes any certificate, but still checks that the server holds its key:
/// the handshake signatures are verified with the provider's algorithms, so
/// the handshake is a real one.
#[derive(Debug)]
struct AcceptAnyCert(
    /// The signature algorithms of latch's crypto provider.
    WebPkiSupportedAlgorithms,
);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
