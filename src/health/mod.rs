//! Active health checking: latch probes each backend on its own and stops
//! sending it traffic when it stops answering, instead of learning about it
//! from failed client requests.
//!
//! Two pieces live here, both free of scheduling. [`probe()`] runs one probe of
//! one backend — a TCP connect, an HTTP request, a WebSocket handshake or a
//! TLS handshake — under one timeout, and says healthy or why not.
//! [`RiseFall`] turns the stream of probe results into an up/down state the
//! HAProxy way: `fall` failures in a row take a backend down, `rise`
//! successes in a row bring it back, so one lost probe changes nothing.
//!
//! A checker task per backend (`checker.rs`) runs the probe every interval,
//! with jitter so that backends are not all probed at the same instant, feeds
//! each result to the backend's
//! [`RiseFall`], and writes the resulting state into the backend. Selectors
//! only read that state; the checker is the one writer of active health.

mod checker;
mod machine;
mod probe;
mod probe_http;
#[cfg(test)]
mod probe_tests;
#[cfg(test)]
mod probe_tests_ws;
mod probe_tls;
mod probe_ws;
mod spec;

pub use crate::config::Expect;
pub use checker::spawn_all as spawn_checkers;
pub use machine::{Health, RiseFall, Transition};
pub use probe::{Probe, run as probe, run_after as probe_after};
pub use spec::{HttpProbe, MAX_BODY};
