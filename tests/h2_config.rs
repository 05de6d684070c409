//! The HTTP/2 keys (issue 14): `conf/http2.toml` loads as written, the
//! defaults, a listener's key over `[server]`'s, and every mistake named by
//! its key and place.

use std::path::Path;

use latch::config::H2Settings;
use latch::{Config, ConfigError};

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/nonexistent/latch.toml"))
}

const UPSTREAM: &str = "[upstream.app]\nservers = [{ addr = \"127.0.0.1:9001\" }]\n";

/// A plain listener with `listener` lines, `[server]` with `server` lines.
fn plain(server: &str, listener: &str) -> String {
    format!(
        "[server]\n{server}\n[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n{listener}\n{UPSTREAM}"
    )
}

fn err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(_) => panic!("accepted a bad config:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn the_example_loads_as_written() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/http2.toml");
    let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let server = H2Settings {
        max_concurrent_streams: 128,
        initial_window_size: 256 * 1024,
        connection_window_size: 8 << 20,
        max_header_list_size: 32 * 1024,
        max_pending_accept_reset_streams: 20,
        max_local_error_reset_streams: 256,
    };
    assert!(cfg.listeners[0].tls.is_some());
    assert_eq!(cfg.listeners[0].http2, Some(server));
    assert_eq!(
        cfg.listeners[1].http2,
        Some(H2Settings {
            max_concurrent_streams: 32,
            ..server
        })
    );
}

#[test]
fn defaults_on_for_tls_off_for_plain() {
    let cfg = parse(&plain("", "")).expect("valid");
    assert_eq!(cfg.listeners[0].http2, None);
    let cfg = parse(&plain("", "http2 = true")).expect("valid");
    let h = cfg.listeners[0].http2.expect("h2c on");
    assert_eq!(h, H2Settings::defaults(64 * 1024));
    assert_eq!(h.max_concurrent_streams, 100);
    // A raised stream window keeps 16 streams' worth of connection window.
    let cfg = parse(&plain("h2_initial_window_size = \"1m\"", "http2 = true")).expect("valid");
    assert_eq!(
        cfg.listeners[0].http2.unwrap().connection_window_size,
        16 << 20
    );
    // `[server] http2 = true` reaches plain listeners, a listener's `false` wins.
    let cfg = parse(&plain("http2 = true", "http2 = false")).expect("valid");
    assert_eq!(cfg.listeners[0].http2, None);
    let cfg = parse(&plain("http2 = true", "")).expect("valid");
    assert!(cfg.listeners[0].http2.is_some());
}

#[test]
fn mistakes_name_their_key() {
    let cases = [
        (
            plain("", "http2 = true\nh2_max_concurrent_streams = 0"),
            "listener[0].h2_max_concurrent_streams",
            "at least 1",
        ),
        (
            plain("h2_initial_window_size = \"4096m\"", "http2 = true"),
            "server.h2_initial_window_size",
            "between",
        ),
        (
            plain("", "http2 = true\nh2_initial_window_size = 10"),
            "listener[0].h2_initial_window_size",
            "between",
        ),
        (
            plain(
                "h2_initial_window_size = \"1m\"\nh2_connection_window_size = \"512k\"",
                "http2 = true",
            ),
            "server.h2_connection_window_size",
            "h2_initial_window_size",
        ),
        (
            plain("", "http2 = true\nh2_max_header_list_size = 100"),
            "listener[0].h2_max_header_list_size",
            "between",
        ),
        (
            plain("h2_max_pending_accept_reset_streams = 0", "http2 = true"),
            "server.h2_max_pending_accept_reset_streams",
            "at least 1",
        ),
        (
            plain("", "http2 = true\nh2_max_local_error_reset_streams = 0"),
            "listener[0].h2_max_local_error_reset_streams",
            "at least 1",
        ),
        (
            plain("", "mode = \"tcp\"\nhttp2 = true"),
            "listener[0].http2",
            "tcp",
        ),
        (
            plain("", "h2_max_streams = 5"),
            "listener.h2_max_streams",
            "unknown field",
        ),
        (
            plain("", "http2 = \"yes\""),
            "listener.http2",
            "invalid type",
        ),
    ];
    for (text, key, words) in cases {
        let e = err(&text);
        assert_eq!(e.key, key, "{e}\n{text}");
        assert!(e.message.contains(words), "{e} lacks {words:?}");
        assert!(e.line > 1, "no place: {e}");
    }
}
