//! Shared helpers for latch's integration tests.
//!
//! Use from a test file with `mod support;`. Every server binds `127.0.0.1:0`,
//! nothing sleeps to synchronise and every wait is bounded by a timeout: the
//! helpers panic with a message naming what timed out instead of hanging.
#![allow(dead_code, unused_imports)]

pub mod backend;
mod backend_ws;
pub mod child;
pub mod cluster;
pub mod dns;
pub mod faults;
pub mod faulty;
pub mod h2;
pub mod haproxy;
pub mod http_client;
pub mod lb;
pub mod load_backend;
pub mod node;
pub mod pattern;
pub mod raw_http;
pub mod redis;
pub mod reload;
pub mod sticky;
pub mod storm;
pub mod tls;
pub mod ws_client;
pub mod ws_recorder;
pub mod ws_scripted;

use std::future::Future;
use std::time::Duration;

pub use backend::{Backend, spawn_backend, spawn_backend_on, spawn_tls_backend};
#[allow(unused_imports)] // re-exports; each test file uses a subset
pub use child::{Child, Lines, free_port, free_ports};
#[allow(unused_imports)]
pub use faults::{
    Handshaker, Named, StatusServer, spawn_named, spawn_named_at, spawn_named_on, spawn_status,
    spawn_tls_handshaker, spawn_ws_answers_200, spawn_ws_bad_accept, wait_until,
};
#[allow(unused_imports)]
pub use faulty::{
    KeepAlive, spawn_blackhole, spawn_garbage, spawn_keepalive, spawn_keepalive_limited,
    spawn_refusing,
};
#[allow(unused_imports)]
pub use http_client::{
    Echo, Got, HttpConn, http_get, http_get_with, http_request, parse_echo, raw_exchange,
    raw_exchange_open, read_body, send_request, try_http_request,
};
pub use lb::{
    Lb, all_backends, assert_all_idle, counts, lb_backend, lb_backends, servers, simple_config,
    spawn_lb, spawn_lb_in, wait_all_idle,
};
#[allow(unused_imports)]
pub use pattern::{Checksum, PatternBody, checksum, pattern_byte, pattern_bytes, pattern_checksum};
#[allow(unused_imports)]
pub use raw_http::{
    RawResponse, parse_response, raw_get, raw_in_pieces, raw_request, read_until_closed,
    status_line,
};
#[allow(unused_imports)]
pub use tls::{
    cert_der, https_get, https_request, self_signed, tls_acceptor, tls_connect, tls_connector,
    tls_peer_cert, write_cert_files,
};
#[allow(unused_imports)]
pub use ws_client::{
    WS_MAX_MESSAGE, next_msg, try_ws_connect, try_ws_connect_with, try_wss_connect, ws_config,
    ws_connect, ws_connect_with, wss_connect,
};

/// Error type returned by the fallible helpers.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bound for a single step (connect, handshake, one response, one message).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Bound for reading a whole (possibly large) body.
pub const LONG_TIMEOUT: Duration = Duration::from_secs(60);

/// Awaits `fut`, panicking with `what` if it takes longer than [`TIMEOUT`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    within_for(TIMEOUT, what, fut).await
}

/// Awaits `fut`, panicking with `what` if it takes longer than `limit`.
pub async fn within_for<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}
