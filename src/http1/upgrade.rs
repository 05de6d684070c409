//! The client's connection after a `101 Switching Protocols`: handed by the
//! connection task, once the `101` is written, to whoever asked for it (the
//! tunnel), with any bytes the client sent after its request head.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// What a client connection is: plain TCP or TLS, with its limit slot.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A connection after an upgrade: the bytes read past the handshake head
/// served first, then the socket. Both sides of a tunnel are one
/// (the client's, [`ClientIo`], and the backend's, `backend::conn::Upgraded`).
pub struct Rewind<T> {
    io: T,
    /// Read already, not yet consumed.
    pre: Bytes,
}

/// An upgraded client connection.
pub type ClientIo = Rewind<Box<dyn Io>>;

impl<T> Rewind<T> {
    /// `io` after `pre`, which is copied: the read buffer it comes from
    /// must not live as long as the tunnel (usually it is empty, and
    /// nothing is allocated).
    pub fn new(io: T, pre: &[u8]) -> Rewind<T> {
        Rewind {
            io,
            pre: Bytes::copy_from_slice(pre),
        }
    }
}

impl<T> std::fmt::Debug for Rewind<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewind")
            .field("pre", &self.pre.len())
            .finish_non_exhaustive()
    }
}

/// Resolves to the client's connection once the `101` went out; an error
/// when the connection ended first. Found in the request's extensions when
/// the request asked to upgrade (extensions must be `Clone`, hence the
/// shared slot; only upgrade requests pay for it).
#[derive(Debug, Clone)]
pub struct OnUpgrade(Arc<Mutex<Option<oneshot::Receiver<ClientIo>>>>);

impl OnUpgrade {
    pub fn new(rx: oneshot::Receiver<ClientIo>) -> OnUpgrade {
        OnUpgrade(Arc::new(Mutex::new(Some(rx))))
    }
}

/// The upgrade did not happen (the connection closed, or the answer was not
/// a `101`).
#[derive(Debug, thiserror::Error)]
#[error("the client connection was not upgraded")]
pub struct NotUpgraded;

impl Future for OnUpgrade {
    type Output = Result<ClientIo, NotUpgraded>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(rx) = slot.as_mut() else {
            return Poll::Ready(Err(NotUpgraded));
        };
        let r = ready!(Pin::new(rx).poll(cx));
        *slot = None;
        Poll::Ready(r.map_err(|_| NotUpgraded))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pre.is_empty() {
            let n = this.pre.len().min(buf.remaining());
            buf.put_slice(&this.pre[..n]);
            this.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
