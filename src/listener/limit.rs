//! A listener's connection limits (`max_connections`,
//! `max_connections_per_client`) and the slot each connection holds.
//!
//! Like mini-redis's semaphore, the accept loop waits for room before it
//! accepts, so a full listener leaves new clients in the kernel's backlog
//! instead of accepting and dropping them. Not a semaphore, though: a reload
//! may raise or lower the limit of a listener that stays, so the limit is an
//! atomic read at each accept and the count is the listener's open gauge
//! (`ListenerStats::open`); a closing connection wakes the loop.
//!
//! A [`Slot`] is freed when dropped. It travels with the client's socket
//! ([`WithSlot`]), not with the connection task: after an upgrade hyper hands
//! the socket to the tunnel, and the slot goes with it.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tracing::debug;

use crate::metrics::ListenerStats;

/// One listener's limits and counts; shared by its accept loop, its
/// connections' slots, and the reload that may change the limits.
#[derive(Debug)]
pub struct Limiter {
    stats: Arc<ListenerStats>,
    /// Notified when a connection closes or the limits change.
    freed: Notify,
    /// Open connections per client address, counted while a per-client cap
    /// is set (connections accepted while none was set are not in it).
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

impl Limiter {
    pub fn new(
        stats: Arc<ListenerStats>,
        max: Option<usize>,
        per_client: Option<usize>,
    ) -> Arc<Limiter> {
        let limiter = Arc::new(Limiter {
            stats,
            freed: Notify::new(),
            per_client: Mutex::new(HashMap::new()),
        });
        limiter.configure(max, per_client);
        limiter
    }

    /// Applies new limits (a reload); a raised limit lets a waiting accept
    /// loop go on at once.
    pub fn configure(&self, max: Option<usize>, per_client: Option<usize>) {
        let s = &self.stats;
        s.max_connections.store(max.unwrap_or(0), Ordering::Relaxed);
        s.max_per_client
            .store(per_client.unwrap_or(0), Ordering::Relaxed);
        self.freed.notify_one();
    }

    pub fn stats(&self) -> &Arc<ListenerStats> {
        &self.stats
    }

    /// Waits until the listener may take one more connection. Only the
    /// accept loop calls it, and only it adds connections, so there is
    /// still room when it accepts next.
    pub async fn room(&self) {
        let mut counted = false;
        loop {
            let notified = self.freed.notified();
            tokio::pin!(notified);
            // Registered before the check, so a close in between is seen.
            notified.as_mut().enable();
            let max = self.stats.max_connections.load(Ordering::Relaxed);
            if max == 0 || self.stats.open.load(Ordering::Acquire) < max {
                return;
            }
            if !counted {
                counted = true;
                self.stats.full.fetch_add(1, Ordering::Relaxed);
                debug!(listener = %self.stats.addr, max, "listener full; waiting for a connection to close");
            }
            notified.await;
        }
    }

    /// A slot for a connection just accepted from `ip`, or `None` when that
    /// address already has `max_connections_per_client` open.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut slot = self.admit_open();
        slot.claim(ip).then_some(slot)
    }

    /// A slot counted against `max_connections` only; [`Slot::claim`] adds
    /// the client's address once it is known (after a PROXY header).
    pub fn admit_open(self: &Arc<Self>) -> Slot {
        self.stats.open.fetch_add(1, Ordering::AcqRel);
        Slot {
            limiter: self.clone(),
            client: None,
        }
    }
}

/// One open connection's place on its listener; freed on drop.
#[derive(Debug)]
pub struct Slot {
    limiter: Arc<Limiter>,
    /// The address counted against the per-client cap, if it was.
    client: Option<IpAddr>,
}

impl Slot {
    /// The listener's counts.
    pub fn stats(&self) -> &Arc<ListenerStats> {
        self.limiter.stats()
    }

    /// Counts this connection against `ip`'s `max_connections_per_client`;
    /// false (and counted as refused) when that address has its share open.
    /// A slot counted already stays with its address.
    pub fn claim(&mut self, ip: IpAddr) -> bool {
        let l = &self.limiter;
        let cap = l.stats.max_per_client.load(Ordering::Relaxed);
        if cap == 0 || self.client.is_some() {
            return true;
        }
        let ip = ip.to_canonical();
        let mut map = l.per_client.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(ip).or_insert(0);
        if *n >= cap {
            drop(map);
            l.stats.refused_per_client.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        *n += 1;
        self.client = Some(ip);
        true
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let l = &self.limiter;
        if let Some(ip) = self.client {
            let mut map = l.per_client.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
        l.stats.open.fetch_sub(1, Ordering::AcqRel);
        l.freed.notify_one();
    }
}

// === impl WithSlot ===

/// A client's stream carrying its [`Slot`]: the slot is freed when the
/// stream is, whoever owns it by then.
pub struct WithSlot<I> {
    io: I,
    _slot: Slot,
}

impl<I> WithSlot<I> {
    pub fn new(io: I, slot: Slot) -> Self {
        WithSlot { io, _slot: slot }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WithSlot<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WithSlot<I> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limiter(max: Option<usize>, per_client: Option<usize>) -> Arc<Limiter> {
        let stats = Arc::new(ListenerStats::new("127.0.0.1:1".parse().unwrap()));
        Limiter::new(stats, max, per_client)
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    async fn has_room(l: &Limiter) -> bool {
        tokio::time::timeout(Duration::from_millis(10), l.room())
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_listener_waits_until_a_slot_is_freed() {
        let l = limiter(Some(2), None);
        let a = l.admit(A).unwrap();
        assert!(has_room(&l).await);
        let _b = l.admit(B).unwrap();
        assert!(!has_room(&l).await);
        assert_eq!(l.stats().full.load(Ordering::Relaxed), 1);
        let waiting = tokio::spawn({
            let l = l.clone();
            async move { l.room().await }
        });
        drop(a);
        waiting.await.unwrap();
        assert_eq!(l.stats().open(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn raising_the_limit_wakes_the_waiting_loop() {
        let l = limiter(Some(1), None);
        let _a = l.admit(A).unwrap();
        let waiting = tokio::spawn({
            let l = l.clone();
            async move { l.room().await }
        });
        tokio::task::yield_now().await;
        l.configure(Some(2), None);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken")
            .unwrap();
        l.configure(None, None);
        assert!(has_room(&l).await, "no limit");
    }

    #[test]
    fn each_address_gets_its_share() {
        let l = limiter(None, Some(2));
        let a1 = l.admit(A).unwrap();
        let _a2 = l.admit(A).unwrap();
        assert!(l.admit(A).is_none());
        // IPv4-mapped IPv6 is the same client.
        assert!(l.admit("::ffff:10.0.0.1".parse().unwrap()).is_none());
        let _b = l.admit(B).unwrap();
        assert_eq!(l.stats().refused_per_client.load(Ordering::Relaxed), 2);
        assert_eq!(l.stats().open(), 3);
        drop(a1);
        let _a3 = l.admit(A).expect("room again once one closed");
        assert_eq!(l.per_client.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_slot_counted_later_takes_its_address_share() {
        // Behind a PROXY header: counted as open first, by address once the
        // header names the client.
        let l = limiter(Some(10), Some(1));
        let mut first = l.admit_open();
        let mut second = l.admit_open();
        assert_eq!(l.stats().open(), 2);
        assert!(first.claim(A));
        assert!(first.claim(B), "a counted slot keeps its address");
        assert!(!second.claim(A));
        assert!(second.claim(B));
        assert_eq!(l.stats().refused_per_client.load(Ordering::Relaxed), 1);
        drop(first);
        assert!(l.admit_open().claim(A), "A's share is free again");
    }

    #[test]
    fn freed_addresses_leave_the_table() {
        let l = limiter(None, Some(1));
        drop(l.admit(A).unwrap());
        drop(l.admit(B).unwrap());
        assert!(l.per_client.lock().unwrap().is_empty());
        assert_eq!(l.stats().open(), 0);
    }
}
