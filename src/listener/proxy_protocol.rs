//! The accept side of the PROXY protocol: on a listener with
//! `proxy_protocol = true`, every connection must start with a header from a
//! peer in `proxy_protocol_from`, read here before TLS and before HTTP.
//!
//! [`read_proxy_header`] reads exactly the header's bytes (the parser says
//! how many it needs at least, so nothing after the header is consumed) under
//! one timeout, and answers the client it names. Anything else is a
//! [`Refusal`]: the caller closes the connection and counts it by
//! [`Refusal::reason`]. [`admit`] does that counting and logging for a
//! listener; TCP mode can call it (or [`read_proxy_header`]) the same way.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::{debug, info, warn};

use crate::config::Cidr;
use crate::metrics::ListenerStats;
use crate::proxy_protocol::{self, Addrs, Header, Parsed};

/// Why a connection was closed before its header was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("peer is not in proxy_protocol_from")]
    Untrusted,
    #[error(transparent)]
    Header(proxy_protocol::Error),
    #[error("connection closed inside the PROXY protocol header")]
    Truncated,
    #[error("connection closed before sending a PROXY protocol header")]
    Closed,
    #[error("no complete PROXY protocol header within {0:?}")]
    Timeout(Duration),
    #[error("reading the PROXY protocol header: {0}")]
    Io(std::io::ErrorKind),
}

impl Refusal {
    /// The `reason` label of `latch_proxy_protocol_rejected_total`; one of
    /// [`crate::metrics::PROXY_REFUSALS`].
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Untrusted => "untrusted",
            Refusal::Header(e) => e.reason(),
            Refusal::Truncated => "truncated",
            Refusal::Closed => "closed",
            Refusal::Timeout(_) => "timeout",
            Refusal::Io(_) => "error",
        }
    }
}

/// [`read_proxy_header`] for a listener: a refusal is counted in `stats`
/// and logged (a warning for a trusted peer's missing or broken header, info
/// for an untrusted peer, debug for closes and timeouts); the caller then
/// closes the connection.
pub async fn admit<S: AsyncRead + Unpin>(
    io: &mut S,
    peer: SocketAddr,
    from: &[Cidr],
    timeout: Duration,
    stats: &ListenerStats,
) -> Result<Option<Addrs>, Refusal> {
    let result = read_proxy_header(io, peer, from, timeout).await;
    if let Err(refusal) = &result {
        stats.proxy_refused(refusal.reason());
        let listener = stats.addr;
        match refusal {
            Refusal::Untrusted => info!(%peer, %listener, "closed: {refusal}"),
            Refusal::Header(_) => warn!(%peer, %listener, "closed: {refusal}"),
            _ => debug!(%peer, %listener, "closed: {refusal}"),
        }
    }
    result
}

/// Reads the PROXY header at the start of `io`, from `peer`, within
/// `timeout`. `Ok(Some)`: the client and the address it connected to, as the
/// balancer saw them. `Ok(None)`: a header naming no client (the balancer's
/// own health check, v2 LOCAL or v1 UNKNOWN); the TCP peer is the client.
pub async fn read_proxy_header<S: AsyncRead + Unpin>(
    io: &mut S,
    peer: SocketAddr,
    from: &[Cidr],
    timeout: Duration,
) -> Result<Option<Addrs>, Refusal> {
    if !from.iter().any(|c| c.contains(peer.ip())) {
        return Err(Refusal::Untrusted);
    }
    match tokio::time::timeout(timeout, read(io)).await {
        Err(_) => Err(Refusal::Timeout(timeout)),
        Ok(Err(r)) => Err(r),
        Ok(Ok(Header::Local)) => Ok(None),
        Ok(Ok(Header::Proxy(a))) => Ok(Some(a)),
    }
}

/// Reads no more than the parser says the header still needs, so the
/// stream's next byte is the first one after the header. Each turn reads at
/// least one byte or ends, and the parser refuses a header past its cap, so
/// the loop is bounded.
async fn read<S: AsyncRead + Unpin>(io: &mut S) -> Result<Header, Refusal> {
    let mut buf = Vec::with_capacity(64);
    loop {
        let need = match proxy_protocol::parse(&buf).map_err(Refusal::Header)? {
            Parsed::Done(h, _) => return Ok(h),
            Parsed::Need(n) => n,
        };
        let have = buf.len();
        buf.resize(have + need, 0);
        let n = io
            .read(&mut buf[have..])
            .await
            .map_err(|e| Refusal::Io(e.kind()))?;
        buf.truncate(have + n);
        if n == 0 {
            return Err(if have == 0 {
                Refusal::Closed
            } else {
                Refusal::Truncated
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy_protocol::{Version, encode};
    use tokio::io::AsyncWriteExt;

    const T: Duration = Duration::from_secs(5);

    fn trusted() -> Vec<Cidr> {
        vec!["127.0.0.0/8".parse().unwrap()]
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    async fn feed(chunks: &[&[u8]], close: bool) -> (Result<Option<Addrs>, Refusal>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(4096);
        for c in chunks {
            client.write_all(c).await.unwrap();
        }
        if close {
            drop(client);
            let r = read_proxy_header(&mut server, peer(), &trusted(), T).await;
            let mut rest = Vec::new();
            let _ = server.read_to_end(&mut rest).await;
            return (r, rest);
        }
        let r = read_proxy_header(&mut server, peer(), &trusted(), T).await;
        drop(client);
        let mut rest = Vec::new();
        let _ = server.read_to_end(&mut rest).await;
        (r, rest)
    }

    #[tokio::test]
    async fn the_bytes_after_the_header_stay_in_the_stream() {
        let a = Addrs {
            src: "198.51.100.7:41000".parse().unwrap(),
            dst: "127.0.0.1:443".parse().unwrap(),
        };
        for v in [Version::V1, Version::V2] {
            let mut bytes = encode(v, Some(a));
            bytes.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            let (r, rest) = feed(&[&bytes], false).await;
            assert_eq!(r, Ok(Some(a)));
            assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");
        }
        let (r, rest) = feed(&[&encode(Version::V2, None), b"x"], false).await;
        assert_eq!((r, rest), (Ok(None), b"x".to_vec()));
    }

    #[tokio::test]
    async fn a_header_in_pieces_is_read_whole() {
        let bytes = b"PROXY TCP4 10.1.2.3 10.0.0.1 1111 80\r\n";
        let pieces: Vec<&[u8]> = bytes.chunks(3).collect();
        let (r, _) = feed(&pieces, false).await;
        assert_eq!(r.unwrap().unwrap().src, "10.1.2.3:1111".parse().unwrap());
    }

    #[tokio::test]
    async fn refusals_say_why() {
        let (r, _) = feed(&[b"PROXY TCP4 10.1."], true).await;
        assert_eq!(r, Err(Refusal::Truncated));
        let (r, _) = feed(&[], true).await;
        assert_eq!(r, Err(Refusal::Closed));
        let (r, _) = feed(&[b"GET / HTTP/1.1\r\n\r\n"], false).await;
        assert_eq!(r.unwrap_err().reason(), "missing");
        let untrusted = read_proxy_header(
            &mut tokio::io::empty(),
            "192.0.2.1:1".parse().unwrap(),
            &trusted(),
            T,
        )
        .await;
        assert_eq!(untrusted, Err(Refusal::Untrusted));
    }

    #[test]
    fn every_reason_is_a_metric_label() {
        use crate::proxy_protocol::Error;
        let all = [
            Refusal::Untrusted,
            Refusal::Header(Error::Missing),
            Refusal::Header(Error::Malformed("x")),
            Refusal::Header(Error::Oversized),
            Refusal::Truncated,
            Refusal::Closed,
            Refusal::Timeout(T),
            Refusal::Io(std::io::ErrorKind::ConnectionReset),
        ];
        let reasons: Vec<&str> = all.iter().map(Refusal::reason).collect();
        assert_eq!(reasons, crate::metrics::PROXY_REFUSALS);
    }

    #[tokio::test]
    async fn admit_counts_a_refusal_by_reason() {
        let stats = ListenerStats::new("127.0.0.1:1".parse().unwrap());
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        let r = admit(&mut server, peer(), &trusted(), T, &stats).await;
        assert_eq!(r, Err(Refusal::Closed));
        assert_eq!(
            stats.proxy_refused[5].load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(stats.proxy_refused_total(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out() {
        let (_client, mut server) = tokio::io::duplex(64);
        let r = read_proxy_header(&mut server, peer(), &trusted(), T).await;
        assert_eq!(r, Err(Refusal::Timeout(T)));
        assert_eq!(r.unwrap_err().reason(), "timeout");
    }
}
