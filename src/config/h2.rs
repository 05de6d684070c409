//! HTTP/2 to clients: the `http2` and `h2_*` keys, given in `[server]` (for
//! every listener) or in a `[[listener]]` (which wins), checked into one
//! [`H2Settings`] per listener.
//!
//! `http2` defaults to on for TLS listeners (ALPN `h2`, then `http/1.1`) and
//! off for plain ones, where `true` means h2c with prior knowledge (RFC 9113
//! §3.3). The limits bound what one connection may cost: streams at once,
//! what a client may send ahead of latch's reading (per stream and for the
//! whole connection), the header list, and the resets a client may cause
//! before the connection is closed with `GOAWAY` (CVE-2023-44487 and the
//! CONTINUATION flood of 2024, as far as hyper and h2 allow).

use toml::Spanned;

use super::file::{ListenerSection, ServerSection, Size};
use super::{ConfigError, Validator};

/// Streams a client may have open at once (RFC 9113 suggests at least 100).
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;
/// What a client may send on one stream before latch reads it.
pub const DEFAULT_INITIAL_WINDOW_SIZE: u32 = 256 * 1024;
/// What a client may send on all its streams together before latch reads
/// it: 16 stalled streams' worth, so one stalled stream never stops the
/// others (a stalled stream holds its whole window of the connection's).
pub const DEFAULT_CONNECTION_WINDOW_SIZE: u32 = 4 * 1024 * 1024;
/// Streams a client may reset before latch has accepted them (hyper's
/// default; the rapid-reset guard).
pub const DEFAULT_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams latch may reset for a client's errors (hyper's default).
pub const DEFAULT_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// The largest flow-control window (RFC 9113 §6.9.1).
const MAX_WINDOW: usize = (1 << 31) - 1;
/// The initial connection window every HTTP/2 connection starts with; it
/// can only be raised (RFC 9113 §6.9.2).
const MIN_CONNECTION_WINDOW: usize = 65_535;

/// One listener's HTTP/2 settings (present only when HTTP/2 is on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Settings {
    pub max_concurrent_streams: u32,
    pub initial_window_size: u32,
    pub connection_window_size: u32,
    /// `SETTINGS_MAX_HEADER_LIST_SIZE`; also bounds what a header block
    /// spread over CONTINUATION frames may hold.
    pub max_header_list_size: u32,
    pub max_pending_accept_reset_streams: usize,
    pub max_local_error_reset_streams: usize,
}

impl H2Settings {
    /// The defaults, with `max_header_list_size` following the HTTP/1.1
    /// head limit.
    pub fn defaults(max_header_size: usize) -> H2Settings {
        H2Settings {
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            initial_window_size: DEFAULT_INITIAL_WINDOW_SIZE,
            connection_window_size: DEFAULT_CONNECTION_WINDOW_SIZE,
            max_header_list_size: u32::try_from(max_header_size).unwrap_or(u32::MAX),
            max_pending_accept_reset_streams: DEFAULT_MAX_PENDING_ACCEPT_RESET_STREAMS,
            max_local_error_reset_streams: DEFAULT_MAX_LOCAL_ERROR_RESET_STREAMS,
        }
    }
}

/// The listener's key if given, else the server's, with the key's full name.
fn pick<'a, T>(
    key: &str,
    name: &str,
    listener: &'a Option<Spanned<T>>,
    server: &'a Option<Spanned<T>>,
) -> Option<(&'a Spanned<T>, String)> {
    match (listener, server) {
        (Some(v), _) => Some((v, format!("{key}.{name}"))),
        (None, Some(v)) => Some((v, format!("server.{name}"))),
        (None, None) => None,
    }
}

impl Validator<'_> {
    /// The listener's HTTP/2 settings; `None` when HTTP/2 is off.
    pub(super) fn http2(
        &self,
        key: &str,
        l: &ListenerSection,
        s: &ServerSection,
        tls: bool,
        tcp: bool,
        max_header_size: usize,
    ) -> Result<Option<H2Settings>, ConfigError> {
        let on = pick(key, "http2", &l.http2, &s.http2);
        if tcp {
            // A `[server]` default does not reach TCP listeners.
            if let Some(v) = l.http2.as_ref().filter(|v| *v.get_ref()) {
                return Err(self.err(
                    v.span(),
                    format!("{key}.http2"),
                    "does not apply to a `mode = \"tcp\"` listener (it speaks no HTTP)",
                ));
            }
            return Ok(None);
        }
        if !on.map_or(tls, |(v, _)| *v.get_ref()) {
            return Ok(None);
        }
        let mut h = H2Settings::defaults(max_header_size);
        if let Some((v, k)) = pick(
            key,
            "h2_max_concurrent_streams",
            &l.h2_max_concurrent_streams,
            &s.h2_max_concurrent_streams,
        ) {
            if *v.get_ref() == 0 {
                return Err(self.err(v.span(), k, "must be at least 1"));
            }
            h.max_concurrent_streams = *v.get_ref();
        }
        let size = |v: &Spanned<Size>, k: String, min: usize, max: usize| {
            let n = v.get_ref().0;
            if n < min || n > max {
                return Err(self.err(
                    v.span(),
                    k,
                    format!("must be between {min} and {max} bytes"),
                ));
            }
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        };
        if let Some((v, k)) = pick(
            key,
            "h2_initial_window_size",
            &l.h2_initial_window_size,
            &s.h2_initial_window_size,
        ) {
            h.initial_window_size = size(v, k, 1024, MAX_WINDOW)?;
        }
        let conn = pick(
            key,
            "h2_connection_window_size",
            &l.h2_connection_window_size,
            &s.h2_connection_window_size,
        );
        match conn {
            Some((v, k)) => {
                let n = size(v, k.clone(), MIN_CONNECTION_WINDOW, MAX_WINDOW)?;
                if n < h.initial_window_size {
                    return Err(self.err(
                        v.span(),
                        k,
                        format!(
                            "must be at least h2_initial_window_size ({}): one stream \
                             could otherwise stall the whole connection",
                            h.initial_window_size
                        ),
                    ));
                }
                h.connection_window_size = n;
            }
            // Keep the default's headroom over a raised stream window.
            None => {
                h.connection_window_size = h.connection_window_size.max(
                    h.initial_window_size
                        .saturating_mul(16)
                        .min(MAX_WINDOW as u32),
                )
            }
        }
        if let Some((v, k)) = pick(
            key,
            "h2_max_header_list_size",
            &l.h2_max_header_list_size,
            &s.h2_max_header_list_size,
        ) {
            h.max_header_list_size = size(v, k, 1024, 16 * 1024 * 1024)?;
        }
        let count = |v: &Spanned<usize>, k: String| {
            if *v.get_ref() == 0 {
                return Err(self.err(v.span(), k, "must be at least 1"));
            }
            Ok(*v.get_ref())
        };
        if let Some((v, k)) = pick(
            key,
            "h2_max_pending_accept_reset_streams",
            &l.h2_max_pending_accept_reset_streams,
            &s.h2_max_pending_accept_reset_streams,
        ) {
            h.max_pending_accept_reset_streams = count(v, k)?;
        }
        if let Some((v, k)) = pick(
            key,
            "h2_max_local_error_reset_streams",
            &l.h2_max_local_error_reset_streams,
            &s.h2_max_local_error_reset_streams,
        ) {
            h.max_local_error_reset_streams = count(v, k)?;
        }
        Ok(Some(h))
    }
}
