//! Self-signed certificates and TLS clients/servers (rustls + ring).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::header::HOST;
use http::{Request, StatusCode};
use http_body_util::Full;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::http_client::{Got, handshake_on, read_body};
use super::{BoxError, TIMEOUT};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A fresh self-signed certificate for `names` (DNS names or IP literals):
/// `(cert_pem, key_pem)`.
pub fn self_signed(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names).expect("rcgen self-signed certificate");
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

/// DER of the first certificate in `cert_pem` (compare with [`tls_peer_cert`]).
pub fn cert_der(cert_pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .expect("PEM certificate")
        .to_vec()
}

/// Writes `<dir>/<stem>.crt` and `<dir>/<stem>.key` for a new self-signed
/// certificate; returns `(cert_path, key_path, cert_pem)`.
pub fn write_cert_files(dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf, String) {
    let (cert, key) = self_signed(names);
    let cert_path = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    std::fs::write(&cert_path, &cert)
        .unwrap_or_else(|e| panic!("write {}: {e}", cert_path.display()));
    std::fs::write(&key_path, &key).unwrap_or_else(|e| panic!("write {}: {e}", key_path.display()));
    (cert_path, key_path, cert)
}

/// A client trusting exactly `trusted_cert_pems`, offering ALPN `http/1.1`.
pub fn tls_connector(trusted_cert_pems: &[&str]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for pem in trusted_cert_pems {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots
                .add(cert.expect("PEM certificate"))
                .expect("trust anchor");
        }
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// A server presenting `cert_pem` (whole chain) with `key_pem`, ALPN `http/1.1`.
pub fn tls_acceptor(cert_pem: &str, key_pem: &str) -> TlsAcceptor {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM certificate chain");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("PEM private key");
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate and key");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// TCP connect plus TLS handshake with SNI `server_name`, bounded by
/// [`TIMEOUT`]. Errors (untrusted cert, no cert for that name...) are returned.
pub async fn tls_connect(
    addr: SocketAddr,
    server_name: &str,
    connector: &TlsConnector,
) -> Result<TlsStream<TcpStream>, BoxError> {
    let name = ServerName::try_from(server_name.to_string())?;
    let fut = async {
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        connector.connect(name, tcp).await
    };
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(r) => r.map_err(|e| format!("TLS to {addr} as {server_name}: {e}").into()),
        Err(_) => Err(format!("TLS to {addr} as {server_name}: timed out").into()),
    }
}

/// One request over TLS on a fresh connection. Adds `Host: server_name`
/// if none is set.
pub async fn https_request(
    addr: SocketAddr,
    server_name: &str,
    connector: &TlsConnector,
    mut req: Request<Full<Bytes>>,
) -> Result<Got, BoxError> {
    if !req.headers().contains_key(HOST) {
        req.headers_mut().insert(HOST, server_name.parse()?);
    }
    let tls = tls_connect(addr, server_name, connector).await?;
    let (mut sender, _conn) = handshake_on(tls).await?;
    let resp = match tokio::time::timeout(TIMEOUT, sender.send_request(req)).await {
        Ok(r) => r?,
        Err(_) => return Err(format!("https request to {addr}: timed out").into()),
    };
    let (parts, body) = resp.into_parts();
    Ok((parts.status, parts.headers, read_body(body).await?))
}

/// `GET path` over TLS with SNI and `Host` set to `server_name`.
pub async fn https_get(
    addr: SocketAddr,
    server_name: &str,
    connector: &TlsConnector,
    path: &str,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let req = Request::get(path)
        .body(Full::default())
        .expect("valid GET request");
    https_request(addr, server_name, connector, req)
        .await
        .unwrap_or_else(|e| panic!("https_get {path} from {addr} as {server_name}: {e}"))
}

/// DER of the leaf certificate the server presents for SNI `server_name`.
pub async fn tls_peer_cert(
    addr: SocketAddr,
    server_name: &str,
    connector: &TlsConnector,
) -> Vec<u8> {
    let tls = tls_connect(addr, server_name, connector)
        .await
        .unwrap_or_else(|e| panic!("tls_peer_cert: {e}"));
    let (_, conn) = tls.get_ref();
    conn.peer_certificates()
        .and_then(|c| c.first())
        .expect("server presented no certificate")
        .to_vec()
}
