use std::net::SocketAddr;

use super::*;
use crate::config::ServerConfig;

fn backend(addr: &str) -> Arc<Backend> {
    let addr: SocketAddr = addr.parse().unwrap();
    Arc::new(Backend::new(&ServerConfig::new(addr, 1)))
}

/// The value of the one sample line that starts with `series ` exactly.
fn value(text: &str, series: &str) -> Option<f64> {
    let mut found = text
        .lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '));
    let v = found.next()?.parse().ok();
    assert!(found.next().is_none(), "{series} twice in\n{text}");
    v
}

#[test]
fn requests_are_counted_by_class_with_durations() {
    let m = Metrics::new();
    m.request("app", "127.0.0.1:1", 200, Duration::from_millis(3));
    m.request("app", "127.0.0.1:1", 204, Duration::from_millis(40));
    m.request("app", "", 503, Duration::from_secs(100));
    m.request("app", "127.0.0.1:1", 101, Duration::ZERO);
    let text = m.encode(&[], &[]);
    let s = |labels: &str| value(&text, &format!("latch_requests_total{{{labels}}}"));
    assert_eq!(
        s(r#"upstream="app",server="127.0.0.1:1",class="2xx""#),
        Some(2.0)
    );
    assert_eq!(s(r#"upstream="app",server="",class="5xx""#), Some(1.0));
    assert_eq!(
        s(r#"upstream="app",server="127.0.0.1:1",class="1xx""#),
        Some(1.0)
    );
    let h = |suffix: &str| value(&text, &format!("latch_request_duration_seconds_{suffix}"));
    assert_eq!(h(r#"count{upstream="app"}"#), Some(4.0));
    assert_eq!(h(r#"bucket{le="0.005",upstream="app"}"#), Some(2.0));
    assert_eq!(h(r#"bucket{le="30.0",upstream="app"}"#), Some(3.0));
    assert_eq!(h(r#"bucket{le="+Inf",upstream="app"}"#), Some(4.0));
    assert!(text.contains("# TYPE latch_requests counter\n"), "{text}");
    assert!(text.ends_with("# EOF\n"));
    assert_eq!(text.matches("# EOF").count(), 1);
}

#[test]
fn retries_checks_reloads_and_tls_failures() {
    let m = Metrics::new();
    m.retry("app", "timeout");
    m.retry("app", "timeout");
    m.retry("app", "http_502");
    m.check("app", true, Duration::from_millis(2));
    m.check("app", false, Duration::from_secs(1));
    m.reload(true);
    m.reload(false);
    m.reload(false);
    m.tls_handshake_failure();
    let text = m.encode(&[], &[]);
    for (series, want) in [
        (
            r#"latch_retries_total{upstream="app",reason="timeout"}"#,
            2.0,
        ),
        (
            r#"latch_retries_total{upstream="app",reason="http_502"}"#,
            1.0,
        ),
        (r#"latch_checks_total{upstream="app",result="ok"}"#, 1.0),
        (r#"latch_checks_total{upstream="app",result="fail"}"#, 1.0),
        (r#"latch_check_duration_seconds_count{upstream="app"}"#, 2.0),
        (r#"latch_reloads_total{outcome="ok"}"#, 1.0),
        (r#"latch_reloads_total{outcome="error"}"#, 2.0),
        ("latch_tls_handshake_failures_total", 1.0),
    ] {
        assert_eq!(value(&text, series), Some(want), "{series} in\n{text}");
    }
}

#[test]
fn status_classes() {
    for (status, class) in [
        (0, "other"),
        (101, "1xx"),
        (200, "2xx"),
        (399, "3xx"),
        (404, "4xx"),
        (599, "5xx"),
        (600, "other"),
        (u16::MAX, "other"),
    ] {
        assert_eq!(status_class(status), class, "{status}");
    }
}

#[test]
fn pool_gauges_follow_the_servers_given() {
    let m = Metrics::new();
    let (a, b) = (backend("127.0.0.1:1"), backend("127.0.0.1:2"));
    let r1 = a.start_request();
    let _tunnel = a.start_request().into_tunnel();
    b.condition.set_active(false);
    let gone = Backend::standalone("app", &ServerConfig::new("127.0.0.1:3".parse().unwrap(), 1));
    gone.start_draining();
    let _held = gone.start_request().into_tunnel();
    a.connection_opened();
    a.connection_opened();
    let servers = [a.clone(), b.clone()];
    let text = m.encode(&[("app", &servers)], &[gone.server().clone()]);
    let v = |name: &str, server: &str| {
        value(
            &text,
            &format!(r#"{name}{{upstream="app",server="{server}"}}"#),
        )
    };
    assert_eq!(v("latch_server_active_requests", "127.0.0.1:1"), Some(1.0));
    assert_eq!(v("latch_server_open_tunnels", "127.0.0.1:1"), Some(1.0));
    assert_eq!(v("latch_server_open_tunnels", "127.0.0.1:3"), Some(1.0));
    assert_eq!(v("latch_server_requests_total", "127.0.0.1:1"), Some(2.0));
    assert_eq!(
        v("latch_server_connections_opened_total", "127.0.0.1:1"),
        Some(2.0)
    );
    assert_eq!(
        v("latch_server_connections_opened_total", "127.0.0.1:2"),
        Some(0.0)
    );
    assert_eq!(v("latch_server_idle_connections", "127.0.0.1:1"), Some(0.0));
    assert_eq!(v("latch_server_up", "127.0.0.1:1"), Some(1.0));
    assert_eq!(v("latch_server_up", "127.0.0.1:2"), Some(0.0));
    assert_eq!(v("latch_server_up", "127.0.0.1:3"), Some(0.0));
    assert_eq!(
        v("latch_server_weight_permille", "127.0.0.1:1"),
        Some(1000.0)
    );
    let state = |s: &str| {
        value(
            &text,
            &format!(r#"latch_upstream_servers{{upstream="app",state="{s}"}}"#),
        )
    };
    assert_eq!(state("up"), Some(1.0));
    assert_eq!(state("down"), Some(1.0));
    assert_eq!(state("draining"), Some(1.0));
    assert_eq!(state("out"), Some(0.0));
    assert_eq!(state("slow_start"), Some(0.0));

    // The next scrape no longer has server 2 nor the drained one.
    drop(r1);
    let text = m.encode(&[("app", &servers[..1])], &[]);
    assert!(
        !text.contains("127.0.0.1:2") && !text.contains("127.0.0.1:3"),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"latch_server_active_requests{upstream="app",server="127.0.0.1:1"}"#
        ),
        Some(0.0)
    );
}

#[test]
fn label_values_are_escaped() {
    let m = Metrics::new();
    m.retry("a\"b\\c\nd", "error");
    let text = m.encode(&[], &[]);
    assert!(
        text.contains(r#"latch_retries_total{upstream="a\"b\\c\nd",reason="error"} 1"#),
        "{text}"
    );
}

#[test]
fn listeners_are_read_at_each_scrape_and_leave_with_their_last_handle() {
    use std::sync::atomic::Ordering;
    let m = Metrics::new();
    let stats = m.listener("127.0.0.1:8443".parse().unwrap());
    stats.open.store(3, Ordering::Relaxed);
    stats.full.store(2, Ordering::Relaxed);
    stats.refused_per_client.store(1, Ordering::Relaxed);
    let text = m.encode(&[], &[]);
    let l = r#"listener="127.0.0.1:8443""#;
    assert_eq!(
        value(&text, &format!("latch_listener_connections{{{l}}}")),
        Some(3.0)
    );
    assert_eq!(
        value(&text, &format!("latch_listener_full_total{{{l}}}")),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"latch_listener_refused_total{{{l},reason="per_client"}}"#)
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, &format!("latch_listener_accept_errors_total{{{l}}}")),
        Some(0.0)
    );
    assert_eq!(m.listeners().len(), 1);
    drop(stats);
    assert!(!m.encode(&[], &[]).contains("8443"));
    assert!(m.listeners().is_empty());
}
