//! WebSocket and TLS probes against tiny real servers on 127.0.0.1. The
//! plain-HTTP helpers come from `probe_tests`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use super::probe_tests::{T, server, silent_server};
use super::{HttpProbe, Probe, probe};
use crate::config::provider;

/// A WebSocket server built on tungstenite's own accept: a correct handshake,
/// then it reads until the client closes (tungstenite answers the Close).
/// The request path and Host come out of the receiver.
async fn ws_server() -> (SocketAddr, mpsc::UnboundedReceiver<(String, String)>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                // The shape of the result is tungstenite's callback type.
                #[allow(clippy::result_large_err)]
                let seen = |req: &Request, resp: Response| {
                    let host = req.headers().get("host").and_then(|h| h.to_str().ok());
                    let _ = tx.send((req.uri().to_string(), host.unwrap_or("").to_string()));
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(s, seen).await else {
                    return;
                };
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });
    (addr, rx)
}

fn ws() -> Probe {
    Probe::Ws(HttpProbe {
        path: "/socket".into(),
        host: Some("chat.example".into()),
        ..HttpProbe::default()
    })
}

#[tokio::test]
async fn ws_handshake_and_clean_close_pass() {
    let (addr, mut seen) = ws_server().await;
    assert_eq!(probe(&ws(), addr, T).await, Ok(()));
    let (path, host) = seen.recv().await.unwrap();
    assert_eq!((path.as_str(), host.as_str()), ("/socket", "chat.example"));
}

#[tokio::test]
async fn ws_answered_200_fails() {
    let (addr, _) = server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let e = probe(&ws(), addr, T).await;
    assert_eq!(e, Err("answered 200, not 101".into()));
}

#[tokio::test]
async fn ws_wrong_accept_key_fails() {
    let (addr, _) = server(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    )
    .await;
    let e = probe(&ws(), addr, T).await;
    assert_eq!(e, Err("bad Sec-WebSocket-Accept".into()));
}

#[tokio::test]
async fn ws_silent_or_garbage_fails() {
    let timeout = Duration::from_millis(300);
    let e = probe(&ws(), silent_server().await, timeout).await;
    assert_eq!(e, Err("timeout after 300ms".into()));
    let (addr, _) = server(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
    let e = probe(&ws(), addr, T).await.unwrap_err();
    assert!(e.starts_with("invalid response"), "{e}");
}

/// A self-signed certificate for "localhost", as DER, with its key.
fn cert() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
    (ck.cert.der().clone(), key.into())
}

/// A TLS server with `cert`: handshakes, then reads until the client is done.
async fn tls_server(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> SocketAddr {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(s).await {
                    let mut sink = Vec::new();
                    let _ = tls.read_to_end(&mut sink).await;
                }
            });
        }
    });
    addr
}

fn tls(sni: Option<&str>, ca: Option<CertificateDer<'static>>) -> Probe {
    Probe::Tls {
        sni: sni.map(str::to_string),
        ca: ca.map(|c| vec![c]),
    }
}

#[tokio::test]
async fn tls_without_roots_accepts_any_certificate() {
    let (c, k) = cert();
    let addr = tls_server(c, k).await;
    assert_eq!(probe(&tls(None, None), addr, T).await, Ok(()));
    assert_eq!(
        probe(&tls(Some("other.example"), None), addr, T).await,
        Ok(())
    );
}

#[tokio::test]
async fn tls_with_roots_verifies_chain_and_name() {
    let (c, k) = cert();
    let addr = tls_server(c.clone(), k).await;
    assert_eq!(probe(&tls(None, Some(c.clone())), addr, T).await, Ok(()));
    let (other, _) = cert();
    let e = probe(&tls(None, Some(other)), addr, T).await.unwrap_err();
    assert!(e.starts_with("tls: invalid peer certificate"), "{e}");
    let e = probe(&tls(Some("other.example"), Some(c)), addr, T)
        .await
        .unwrap_err();
    assert!(e.starts_with("tls: invalid peer certificate"), "{e}");
}

#[tokio::test]
async fn tls_against_plain_tcp_fails() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\nnot tls")
                .await;
        }
    });
    let e = probe(&tls(None, None), addr, T).await.unwrap_err();
    assert!(e.starts_with("tls: "), "{e}");
    let e = probe(
        &tls(None, None),
        silent_server().await,
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(e, Err("timeout after 300ms".into()));
}
