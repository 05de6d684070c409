//! What an accept loop does when `accept` fails. Almost always the process
//! (EMFILE) or the system (ENFILE) is out of file descriptors, or the kernel
//! out of memory: retrying at once would spin, and logging every failure
//! would flood the log while it lasts. So: wait 5 ms, doubling up to 1 s
//! (Go's net/http does the same), warn once when an episode starts, log the
//! retries at debug, and say when accepting works again.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

const FIRST: Duration = Duration::from_millis(5);
const MAX: Duration = Duration::from_secs(1);

/// The state of one accept loop's current episode of failures.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    /// Failures in a row; 0 when accepting works.
    failures: u32,
    since: Option<Instant>,
    next: Duration,
}

impl AcceptBackoff {
    /// Records a failed accept on the listener at `addr`; returns how long
    /// to wait before the next one.
    pub fn failed(&mut self, addr: SocketAddr, e: &std::io::Error) -> Duration {
        let delay = self.delay();
        if self.failures == 1 {
            self.since = Some(Instant::now());
            warn!(%addr, "accept failed: {e}; backing off (up to {MAX:?} between tries) until it works again");
        } else {
            debug!(%addr, failures = self.failures, retry_in = ?delay, "accept failed again: {e}");
        }
        delay
    }

    /// Records a successful accept, ending an episode of failures.
    pub fn succeeded(&mut self, addr: SocketAddr) {
        if self.failures > 0 {
            let lasted = self.since.map(|t| t.elapsed()).unwrap_or_default();
            info!(%addr, failures = self.failures, ?lasted, "accepting again");
            *self = AcceptBackoff::default();
        }
    }

    /// Counts a failure and returns the wait before the next try.
    fn delay(&mut self) -> Duration {
        self.failures += 1;
        let delay = if self.failures == 1 { FIRST } else { self.next };
        self.next = (delay * 2).min(MAX);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_5ms_to_1s_and_reset_on_success() {
        let mut b = AcceptBackoff::default();
        let waits: Vec<u64> = (0..10).map(|_| b.delay().as_millis() as u64).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.succeeded("127.0.0.1:1".parse().unwrap());
        assert_eq!(b.delay(), FIRST, "a new episode starts over");
    }
}
