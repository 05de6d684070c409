//! The start of a tunnel for an Engine.IO client that opens with a
//! WebSocket (`?EIO=4&transport=websocket`, no `sid`) under
//! `sticky.mode = "session_id"`: the backend's first frame is the Engine.IO
//! open packet `0{"sid":...}`, and its `sid` gets the signed backend tag, as
//! the polling open packet does (`sticky::session_id`). Later requests with
//! that `sid` (a reconnect, a polling request) then route to this backend.
//!
//! Before the byte tunnel starts, only the backend is read, and only until
//! its first frame is whole or known not to be an open packet
//! ([`session_id::first_frame`]: a compressed, fragmented, masked or binary
//! frame, one over [`MAX_HANDSHAKE`](crate::sticky::session_id::MAX_HANDSHAKE)
//! bytes, or a payload not starting with `0{` is passed as soon as its first
//! bytes tell). The rewritten frame, and every byte read after it, are put
//! in front of the backend's stream, so the tunnel sends them to the client
//! first, untouched. Nothing is written here.
//!
//! permessage-deflate: a compressed frame cannot be rewritten on its own
//! (with context takeover, the server's later messages refer back into the
//! bytes of the earlier ones, which the client's inflater must have seen
//! exactly), so for these handshakes latch takes `permessage-deflate` out of
//! the client's `Sec-WebSocket-Extensions` offer ([`refuse_deflate`]) and
//! the WebSocket runs uncompressed. Clients accept that (the server may
//! always decline an extension); socket.io servers have it off by default,
//! and clients that poll first (they have a `sid` when they upgrade) keep
//! theirs. A backend that compresses anyway gets its frame passed untagged.
//!
//! Never a wait the tunnel would not have had: if the client speaks first
//! (Engine.IO clients do not), latch stops waiting, keeps what it read from
//! either side and starts the tunnel with the frame as it is. The same when
//! the backend ends, latch stops, the server is removed, or no whole first
//! frame came within `timeouts.read` (the time a backend has for an answer).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderMap, HeaderValue, header};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::tunnel::{self, Ending, Moved};
use super::{Shared, Upstream, select};
use crate::backend::Backend;
use crate::http1::Rewind;
use crate::metrics::Metrics;
use crate::sticky::session_id::{self, FirstFrame, Handshake};

/// Bytes of a client that spoke first kept for the tunnel; more stay in its
/// socket for the tunnel to read.
const CLIENT_PEEK: usize = 1024;

/// Tagging of the first frame, made by the attempt that got the `101` and
/// run by the tunnel's task.
pub(super) struct OpenFrame {
    upstream: Arc<Upstream>,
    backend: Arc<Backend>,
    metrics: Arc<Metrics>,
    /// latch's hard stop: the wait ends with it.
    stop: CancellationToken,
}

/// How the first frame went, for the `latch_session_ids_total` metric and
/// the debug log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Tagged,
    /// Sent on as it came, and why.
    Passed(&'static str),
}

impl OpenFrame {
    /// Boxed: a tunnel task holds only a pointer for it (most hold `None`).
    pub(super) fn new(upstream: &Arc<Upstream>, index: usize, shared: &Shared) -> Box<Self> {
        Box::new(OpenFrame {
            upstream: upstream.clone(),
            backend: upstream.backends[index].clone(),
            metrics: shared.metrics.clone(),
            stop: shared.hard_stop.clone(),
        })
    }

    /// The first frame, then the tunnel ([`tunnel::run`]) with what was read
    /// in front of each side. The caller boxes this future, so that its
    /// wider sides and the wait's state cost other tunnels nothing.
    pub(super) async fn then_tunnel<C, B, S>(
        self: Box<Self>,
        client: C,
        backend: B,
        opts: tunnel::Options,
        ending: S,
    ) -> Moved
    where
        C: AsyncRead + AsyncWrite + Unpin,
        B: AsyncRead + AsyncWrite + Unpin,
        S: Future<Output = Ending>,
    {
        let stop = self.stop.clone();
        let closed = self.backend.tunnels_closed();
        let quit = async move {
            tokio::select! {
                () = stop.cancelled_owned() => {}
                () = closed => {}
            }
        };
        let (client, backend) = (*self).run(client, backend, quit).await;
        tunnel::run(client, backend, opts, ending).await
    }

    /// Reads the backend's first frame and tags its open packet; the client
    /// and the backend to tunnel between come back with what was read from
    /// each in front. `quit` resolves when latch stops or the server is
    /// removed.
    pub(super) async fn run<C, B>(
        self,
        client: C,
        backend: B,
        quit: impl Future<Output = ()>,
    ) -> (Rewind<C>, Rewind<B>)
    where
        C: AsyncRead + Unpin,
        B: AsyncRead + Unpin,
    {
        let (up, server) = (&self.upstream, &self.backend);
        let tag = |payload: &[u8]| {
            select::tag_handshake(up, Handshake::EngineIoWebSocket, server, payload)
        };
        let wait = up.timeouts.read;
        let (client, backend, outcome) = tag_first_frame(client, backend, wait, quit, tag).await;
        match outcome {
            Outcome::Tagged => self.metrics.session_id(&up.name, "tagged"),
            Outcome::Passed(why) => {
                debug!(backend = %server.addr, "Engine.IO WebSocket open not tagged: {why}");
                self.metrics.session_id(&up.name, "not_tagged");
            }
        }
        (client, backend)
    }
}

/// Takes `permessage-deflate` out of the client's extension offer (RFC 7692
/// §5: one offer per element of `Sec-WebSocket-Extensions`, its parameters
/// after `;`); other extensions stay. Returns whether there was one.
pub(super) fn refuse_deflate(headers: &mut HeaderMap) -> bool {
    let name = header::SEC_WEBSOCKET_EXTENSIONS;
    let mut kept = Vec::new();
    let mut refused = false;
    for value in headers.get_all(&name) {
        // A value that is not text is dropped with the offer it garbles.
        let Ok(text) = value.to_str() else {
            refused = true;
            continue;
        };
        for offer in text.split(',') {
            let ext = offer.split(';').next().unwrap_or("").trim();
            if ext.eq_ignore_ascii_case("permessage-deflate") {
                refused = true;
            } else if !ext.is_empty() {
                kept.push(offer.trim().to_owned());
            }
        }
    }
    if refused {
        headers.remove(&name);
        if let Ok(v) = HeaderValue::from_str(&kept.join(", "))
            && !kept.is_empty()
        {
            headers.insert(name, v);
        }
    }
    refused
}

/// The work of [`OpenFrame::run`], with the tagging passed in.
pub(super) async fn tag_first_frame<C, B>(
    mut client: C,
    mut backend: B,
    wait: Duration,
    quit: impl Future<Output = ()>,
    tag: impl FnOnce(&[u8]) -> Option<Vec<u8>>,
) -> (Rewind<C>, Rewind<B>, Outcome)
where
    C: AsyncRead + Unpin,
    B: AsyncRead + Unpin,
{
    let mut from_backend = BytesMut::new();
    let mut from_client = [0u8; CLIENT_PEEK];
    let mut client_read = 0;
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline, quit);
    let mut tag = Some(tag);
    let outcome = loop {
        let need = match session_id::first_frame(&from_backend) {
            FirstFrame::More(n) => n,
            FirstFrame::Pass => break Outcome::Passed("not an open packet"),
            FirstFrame::Open { .. } => {
                let rewritten = tag
                    .take()
                    .and_then(|t| session_id::rewrite_open_frame(&from_backend, t));
                match rewritten {
                    Some(frame) => {
                        from_backend = BytesMut::from(&frame[..]);
                        break Outcome::Tagged;
                    }
                    None => break Outcome::Passed("no session id in the open packet"),
                }
            }
        };
        // `need` is more than is buffered: read at least up to it (a read
        // may bring more, which is kept as it is).
        from_backend.reserve(need.saturating_sub(from_backend.len()));
        tokio::select! {
            biased;
            () = &mut quit => break Outcome::Passed("stopping"),
            () = &mut deadline => break Outcome::Passed("no whole first frame in time"),
            r = backend.read_buf(&mut from_backend) => match r {
                Ok(0) => break Outcome::Passed("the backend closed"),
                Err(_) => break Outcome::Passed("the backend failed"),
                Ok(_) => {}
            },
            r = client.read(&mut from_client) => {
                // Bytes to keep for the backend; an end or an error is the
                // tunnel's to find again.
                client_read = r.unwrap_or(0);
                break Outcome::Passed("the client spoke first");
            }
        }
    };
    (
        Rewind::new(client, &from_client[..client_read]),
        Rewind::new(backend, &from_backend),
        outcome,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::pending;
    use tokio::io::AsyncWriteExt;

    fn upper(p: &[u8]) -> Option<Vec<u8>> {
        Some(p.to_ascii_uppercase())
    }

    async fn all<R: AsyncRead + Unpin>(mut r: R) -> Vec<u8> {
        let mut v = Vec::new();
        r.read_to_end(&mut v).await.expect("read");
        v
    }

    #[test]
    fn deflate_offers_are_refused_other_extensions_kept() {
        let mut h = HeaderMap::new();
        let ext = header::SEC_WEBSOCKET_EXTENSIONS;
        h.append(
            &ext,
            HeaderValue::from_static("permessage-deflate; client_max_window_bits, x-other; a=1"),
        );
        h.append(&ext, HeaderValue::from_static("PerMessage-Deflate"));
        assert!(refuse_deflate(&mut h));
        let left: Vec<_> = h.get_all(&ext).iter().collect();
        assert_eq!(left, ["x-other; a=1"]);
        let mut h = HeaderMap::new();
        h.insert(&ext, HeaderValue::from_static("permessage-deflate"));
        assert!(refuse_deflate(&mut h));
        assert!(!h.contains_key(&ext));
        let mut h = HeaderMap::new();
        h.insert(&ext, HeaderValue::from_static("x-webkit-other"));
        assert!(!refuse_deflate(&mut h));
        assert_eq!(h[&ext], "x-webkit-other");
        assert!(!refuse_deflate(&mut HeaderMap::new()));
    }

    #[tokio::test]
    async fn frame_split_over_reads_is_rewritten_and_the_rest_kept() {
        let (client, _c) = tokio::io::duplex(64);
        let (backend, mut b) = tokio::io::duplex(64);
        let sent = tokio::spawn(async move {
            for part in [&b"\x81"[..], b"\x05", b"0{", b"ab}\x81\x0240", b"more"] {
                b.write_all(part).await.expect("write");
                tokio::task::yield_now().await;
            }
        });
        let wait = Duration::from_secs(5);
        let (_, backend, outcome) = tag_first_frame(client, backend, wait, pending(), upper).await;
        assert_eq!(outcome, Outcome::Tagged);
        sent.await.expect("writer");
        let got = all(backend).await;
        assert!(got.starts_with(b"\x81\x050{AB}\x81\x0240"), "{got:?}");
    }

    #[tokio::test]
    async fn a_client_that_speaks_first_ends_the_wait_and_keeps_its_bytes() {
        let (client, mut c) = tokio::io::duplex(64);
        let (backend, mut b) = tokio::io::duplex(64);
        b.write_all(b"\x81\x05").await.expect("write");
        c.write_all(b"hello").await.expect("write");
        drop(c);
        let wait = Duration::from_secs(5);
        let (client, backend, outcome) =
            tag_first_frame(client, backend, wait, pending(), upper).await;
        assert_eq!(outcome, Outcome::Passed("the client spoke first"));
        drop(b);
        assert_eq!(all(client).await, b"hello");
        assert_eq!(all(backend).await, b"\x81\x05");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_backend_is_waited_for_only_so_long() {
        let (client, _c) = tokio::io::duplex(64);
        let (backend, _b) = tokio::io::duplex(64);
        let wait = Duration::from_secs(30);
        let (_, _, outcome) = tag_first_frame(client, backend, wait, pending(), upper).await;
        assert_eq!(outcome, Outcome::Passed("no whole first frame in time"));
        let (client, _c) = tokio::io::duplex(64);
        let (backend, _b) = tokio::io::duplex(64);
        let quit = async {};
        let (_, _, outcome) = tag_first_frame(client, backend, wait, quit, upper).await;
        assert_eq!(outcome, Outcome::Passed("stopping"));
    }
}
