//! Selection: which backend of an upstream takes a new request.
//!
//! Pure code — no sockets, no hyper. A [`Balancer`] sees the upstream's
//! backends (with their live counters) and a predicate saying which of them may
//! be used right now, so each algorithm only has to be fair among the
//! eligible. [`Policy`] (`policy.rs`) is the one place that decides placement:
//! it is fed a [`RequestKey`] built once per request and decides usability
//! (pins, health, limits, backups, servers already tried).

pub mod hash;
mod least_conn;
mod maglev;
mod policy;
mod random;
mod round_robin;

use std::net::IpAddr;
use std::sync::Arc;

use crate::backend::Backend;
use crate::config::Balance;

pub use hash::hash64;
pub use least_conn::LeastConn;
pub use maglev::Maglev;
pub use policy::{
    How, Pin, Placed, Placement, Policy, Repin, RequestKey, Tried, upgrade_throttled,
};
pub use random::PowerOfTwo;
pub use round_robin::SmoothRoundRobin;

/// What a selector may know about the request being placed.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub client_ip: IpAddr,
    pub path: &'a str,
}

/// A selection algorithm over one upstream's backends.
pub trait Balancer: Send + Sync + std::fmt::Debug {
    /// Index of the backend to use among those where `eligible(i)` is true, or
    /// `None` when none is.
    fn pick(
        &self,
        backends: &[Arc<Backend>],
        req: &Request<'_>,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize>;
}

/// The balancer a config asks for.
pub fn for_config(balance: Balance, backends: &[Arc<Backend>]) -> Box<dyn Balancer> {
    match balance {
        Balance::RoundRobin => Box::new(SmoothRoundRobin::new(backends.len())),
        Balance::LeastConn => Box::new(LeastConn::new()),
        Balance::Random => Box::new(PowerOfTwo::new()),
        // The proxy hashes its own key with a Maglev ring; this is the same
        // table, for callers that only have the client address.
        Balance::IpHash | Balance::Hash => Box::new(Maglev::new(backends)),
    }
}

/// Pools and requests for the algorithms' unit tests.
#[cfg(test)]
pub(crate) mod test_util {
    use std::sync::Arc;

    use super::Request;
    use crate::backend::Backend;
    use crate::config::ServerConfig;

    /// Backends on 127.0.0.1:1000, :1001, … with these weights.
    pub fn pool(weights: &[u32]) -> Vec<Arc<Backend>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| {
                let addr = format!("127.0.0.1:{}", 1000 + i).parse().unwrap();
                Arc::new(Backend::new(&ServerConfig::new(addr, weight)))
            })
            .collect()
    }

    pub fn req() -> Request<'static> {
        Request {
            client_ip: "127.0.0.1".parse().unwrap(),
            path: "/",
        }
    }
}
