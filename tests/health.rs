//! Health of backends through real sockets: active checks of every type
//! (tcp, http with expected status and body, ws, tls with and without a CA)
//! taking servers out and bringing them back, `start = "down"`, passive checks
//! (`max_fails` / `fail_timeout`), `all_down`, and slow start after a server
//! comes back.
//!
//! Everything runs on `127.0.0.1:0`; waits are bounded, and states and
//! counters are polled in bounded loops (10 ms steps), never slept on.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use http::header::RETRY_AFTER;
use tokio::time::Instant;

use support::*;

// === helpers ===

/// latch's backends of upstream `app`, in config order.
fn lb_backends(lb: &Lb) -> Vec<Arc<latch::backend::Backend>> {
    lb.handle.snapshot().upstreams["app"].backends.clone()
}

/// latch's view of the backend at `addr` in upstream `app`.
fn lb_backend(lb: &Lb, addr: SocketAddr) -> Arc<latch::backend::Backend> {
    lb_backends(lb)
        .into_iter()
        .find(|b| b.addr == addr)
        .unwrap_or_else(|| panic!("latch has no backend {addr}"))
}

fn active_up(lb: &Lb, addr: SocketAddr) -> bool {
    lb_backend(lb, addr).condition.active_up()
}

/// `GET /name` through latch: `(status, name of the backend that answered)`.
async fn get_name(lb: &Lb) -> (StatusCode, String) {
    let (status, headers, body) =
        within("GET /name", http_get(lb.addr(), "localhost", "/name")).await;
    let name = headers
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if status == StatusCode::OK {
        assert_eq!(body, name.as_bytes(), "body and x-backend disagree");
    }
    (status, name)
}

/// `n` sequential `GET /name`; every one must succeed. Counts per backend.
async fn spread(lb: &Lb, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for i in 0..n {
        let (status, name) = get_name(lb).await;
        assert_eq!(status, StatusCode::OK, "request {i} of {n} failed");
        *seen.entry(name).or_insert(0) += 1;
    }
    seen
}

/// `[upstream.app.check]` with these lines.
fn check(lines: &str) -> String {
    format!("[upstream.app.check]\n{lines}\n")
}

// === active checks ===

#[tokio::test]
async fn http_check_takes_a_dead_server_out_and_brings_it_back() {
    let a = spawn_named("a").await;
    let b = spawn_named("b").await;
    let c = spawn_named("c").await;
    let cfg = simple_config(
        &[a.addr, b.addr, c.addr],
        &check(
            "type = \"http\"\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 2",
        ),
    );
    let lb = spawn_lb(&cfg).await;

    // The checkers run: every server gets probes and stays up.
    wait_until("two probes on every server", Duration::from_secs(3), || {
        a.probes() >= 2 && b.probes() >= 2 && c.probes() >= 2
    })
    .await;
    for s in [&a, &b, &c] {
        assert!(active_up(&lb, s.addr), "{} is down but answers", s.name);
    }
    let first = spread(&lb, 30).await;
    assert_eq!(
        first.get("b"),
        Some(&10),
        "round robin before the kill: {first:?}"
    );

    // Kill b: down within interval × fall + timeout, plus slack.
    let dead = b.stop().await;
    let killed = Instant::now();
    wait_until(
        "b marked down by the http check",
        Duration::from_secs(2),
        || !active_up(&lb, dead),
    )
    .await;
    let took = killed.elapsed();
    assert!(
        !lb_backend(&lb, dead).condition.usable(),
        "down by checks but usable"
    );

    // While it is down, nothing is even attempted on it.
    let attempts = lb_backend(&lb, dead).total();
    let during = spread(&lb, 30).await;
    assert_eq!(during.get("b"), None, "{during:?}");
    assert_eq!(
        lb_backend(&lb, dead).total(),
        attempts,
        "requests were attempted on a server the checks marked down"
    );
    assert!(active_up(&lb, a.addr) && active_up(&lb, c.addr));

    // Back on the same port: up within interval × rise, plus slack.
    let b2 = spawn_named_at("b", dead).await;
    let restarted = Instant::now();
    wait_until("b back up", Duration::from_secs(2), || active_up(&lb, dead)).await;
    let back = restarted.elapsed();
    assert!(
        b2.probes() >= 2,
        "up after {} probes, rise is 2",
        b2.probes()
    );
    let after = spread(&lb, 30).await;
    let to_b = after.get("b").copied().unwrap_or(0);
    assert!(to_b >= 5, "b gets traffic again: {after:?}");
    assert_eq!(b2.hits(), to_b);
    eprintln!("down after {took:?}, up again after {back:?}");
}

#[tokio::test]
async fn fall_and_rise_count_probes_in_a_row() {
    let a = spawn_named("a").await;
    let b = spawn_named("b").await;
    let cfg = simple_config(
        &[a.addr, b.addr],
        &check(
            "type = \"http\"\npath = \"/health\"\ninterval = \"50ms\"\ntimeout = \"500ms\"\nrise = 3\nfall = 3",
        ),
    );
    let lb = spawn_lb(&cfg).await;
    wait_until("a probed", Duration::from_secs(2), || a.probes() >= 1).await;

    // Every probe counted after `p0` saw the failing answer; at most one
    // failing probe before it can have gone uncounted.
    a.set_healthy(false);
    let p0 = a.probes();
    wait_until("a down", Duration::from_secs(3), || !active_up(&lb, a.addr)).await;
    let failed = a.probes() - p0;
    assert!(failed >= 2, "down after {failed} failed probes, fall is 3");

    a.set_healthy(true);
    let p1 = a.probes();
    wait_until("a up", Duration::from_secs(3), || active_up(&lb, a.addr)).await;
    let passed = a.probes() - p1;
    assert!(passed >= 2, "up after {passed} good probes, rise is 3");
    assert!(active_up(&lb, b.addr), "b never failed a probe");
}

#[tokio::test]
async fn tcp_check_detects_a_refused_port() {
    let good = spawn_named("good").await;
    let refusing = spawn_refusing().await;
    let cfg = simple_config(
        &[good.addr, refusing],
        &check("type = \"tcp\"\ninterval = \"50ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 1"),
    );
    let lb = spawn_lb(&cfg).await;
    wait_until("refused port marked down", Duration::from_secs(2), || {
        !active_up(&lb, refusing)
    })
    .await;
    // Several more probes of the good one (each a TCP connection) change nothing.
    let seen = good.connections();
    wait_until("three more tcp probes", Duration::from_secs(2), || {
        good.connections() >= seen + 3
    })
    .await;
    assert!(
        active_up(&lb, good.addr),
        "a listening port failed the tcp check"
    );
    assert!(!active_up(&lb, refusing));
    let got = spread(&lb, 10).await;
    assert_eq!(got.get("good"), Some(&10));
}

#[tokio::test]
async fn ws_check_needs_a_real_handshake() {
    let answers_200 = spawn_ws_answers_200().await;
    let bad_accept = spawn_ws_bad_accept().await;
    let good = spawn_backend("good").await;
    let cfg = simple_config(
        &[answers_200, bad_accept, good.addr],
        &check(
            "type = \"ws\"\npath = \"/ws\"\ninterval = \"50ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1",
        ),
    );
    let lb = spawn_lb(&cfg).await;
    wait_until(
        "200 to the handshake marked down",
        Duration::from_secs(3),
        || !active_up(&lb, answers_200),
    )
    .await;
    wait_until(
        "wrong Sec-WebSocket-Accept marked down",
        Duration::from_secs(3),
        || !active_up(&lb, bad_accept),
    )
    .await;
    // The mock backend's /ws passes probe after probe (each is one request).
    let seen = good.hits();
    wait_until(
        "three more ws probes of the good server",
        Duration::from_secs(3),
        || good.hits() >= seen + 3,
    )
    .await;
    assert!(
        active_up(&lb, good.addr),
        "a real WebSocket endpoint failed the ws check"
    );
    assert!(!active_up(&lb, answers_200) && !active_up(&lb, bad_accept));
    let h = good.last_headers();
    assert_eq!(
        h.get("upgrade").and_then(|v| v.to_str().ok()),
        Some("websocket"),
        "the ws probe is a WebSocket handshake: {h:?}"
    );
}

#[tokio::test]
async fn http_check_expect_status_code() {
    let no_content = spawn_status("nc", 204).await;
    let ok = spawn_backend("ok").await;
    let cfg = simple_config(
        &[no_content.addr, ok.addr],
        &check(
            "type = \"http\"\npath = \"/name\"\nexpect = [\"204\"]\ninterval = \"50ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1",
        ),
    );
    let lb = spawn_lb(&cfg).await;
    wait_until(
        "200 fails expect = [\"204\"]",
        Duration::from_secs(2),
        || !active_up(&lb, ok.addr),
    )
    .await;
    let seen = no_content.hits();
    wait_until(
        "three more probes of the 204 server",
        Duration::from_secs(2),
        || no_content.hits() >= seen + 3,
    )
    .await;
    assert!(
        active_up(&lb, no_content.addr),
        "204 failed expect = [\"204\"]"
    );
    assert!(!active_up(&lb, ok.addr));
}

#[tokio::test]
async fn http_check_expect_body() {
    let alpha = spawn_backend("alpha").await;
    let beta = spawn_backend("beta").await;
    let cfg = simple_config(
        &[alpha.addr, beta.addr],
        &check(
            "type = \"http\"\npath = \"/name\"\nexpect_body = \"alpha\"\ninterval = \"50ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1",
        ),
    );
    let lb = spawn_lb(&cfg).await;
    wait_until(
        "body without \"alpha\" marked down",
        Duration::from_secs(2),
        || !active_up(&lb, beta.addr),
    )
    .await;
    let seen = alpha.hits();
    wait_until("three more probes of alpha", Duration::from_secs(2), || {
        alpha.hits() >= seen + 3
    })
    .await;
    assert!(active_up(&lb, alpha.addr), "body with \"alpha\" failed");
    assert_eq!(alpha.last_uri().as_deref(), Some("/name"));
    let got = spread(&lb, 6).await;
    assert_eq!(got.get("alpha"), Some(&6), "{got:?}");
}

#[tokio::test]
async fn tls_check_passes_a_tls_backend_and_fails_plain_http() {
    let (cert, key) = self_signed(&["localhost"]);
    let tls = spawn_tls_backend("tls", tls_acceptor(&cert, &key)).await;
    let plain = spawn_named("plain").await;
    // Start down, come up after one good probe: coming up is the proof of a pass.
    let cfg = simple_config(
        &[tls.addr, plain.addr],
        &check(
            "type = \"tls\"\nsni = \"localhost\"\nstart = \"down\"\ninterval = \"50ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1",
        ),
    );
    let lb = spawn_lb(&cfg).await;
    wait_until("TLS backend up", Duration::from_secs(2), || {
        active_up(&lb, tls.addr)
    })
    .await;
    let seen = plain.connections();
    wait_until(
        "three tls probes of the plain server",
        Duration::from_secs(2),
        || plain.connections() >= seen + 3,
    )
    .await;
    assert!(!active_up(&lb, plain.addr), "plain HTTP passed a tls check");
    assert!(active_up(&lb, tls.addr), "TLS backend went down again");
}

#[tokio::test]
async fn tls_check_with_ca_verifies_the_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_a, key_a) = self_signed(&["localhost"]);
    let (cert_b, key_b) = self_signed(&["localhost"]);
    std::fs::write(dir.path().join("ca.pem"), &cert_a).expect("write ca.pem");
    let trusted = spawn_tls_handshaker(tls_acceptor(&cert_a, &key_a)).await;
    let untrusted = spawn_tls_handshaker(tls_acceptor(&cert_b, &key_b)).await;
    let cfg = simple_config(
        &[trusted.addr, untrusted.addr],
        &check(
            "type = \"tls\"\nsni = \"localhost\"\nca = \"ca.pem\"\nstart = \"down\"\ninterval = \"50ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1",
        ),
    );
    let lb = spawn_lb_in(&cfg, Some(dir.path())).await;
    wait_until(
        "certificate signed by the CA: up",
        Duration::from_secs(2),
        || active_up(&lb, trusted.addr),
    )
    .await;
    let seen = untrusted.connections();
    wait_until(
        "three probes of the untrusted server",
        Duration::from_secs(2),
        || untrusted.connections() >= seen + 3,
    )
    .await;
    assert!(
        !active_up(&lb, untrusted.addr),
        "a certificate the CA did not sign passed"
    );
    assert!(active_up(&lb, trusted.addr));
}

// === start = "down" ===

#[tokio::test]
async fn start_down_serves_nothing_before_good_probes() {
    let a = spawn_named("a").await;
    let b = spawn_named("b").await;
    b.set_healthy(false);
    let cfg = simple_config(
        &[a.addr, b.addr],
        &format!(
            "all_down = \"503\"\n{}",
            check(
                "type = \"http\"\npath = \"/health\"\nstart = \"down\"\ninterval = \"400ms\"\ntimeout = \"500ms\"\nrise = 2\nfall = 1"
            )
        ),
    );
    let started = Instant::now();
    let lb = spawn_lb(&cfg).await;

    // Before any server had `rise` good probes (≥ 1 interval), nothing is up.
    assert!(!active_up(&lb, a.addr) && !active_up(&lb, b.addr));
    let (status, headers, _) = within(
        "GET before probes",
        http_get(lb.addr(), "localhost", "/name"),
    )
    .await;
    let early = started.elapsed();
    assert!(
        early < Duration::from_millis(400),
        "test too slow to observe the start state ({early:?})"
    );
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "served before any probe"
    );
    assert!(headers.contains_key(RETRY_AFTER));
    assert_eq!((a.hits(), b.hits()), (0, 0));

    // a comes up; b, failing its probes, takes nothing.
    wait_until(
        "a up after rise good probes",
        Duration::from_secs(3),
        || active_up(&lb, a.addr),
    )
    .await;
    assert!(a.probes() >= 2, "up after {} probes, rise is 2", a.probes());
    let got = spread(&lb, 20).await;
    assert_eq!(got.get("a"), Some(&20), "{got:?}");
    assert_eq!(lb_backend(&lb, b.addr).total(), 0, "b attempted while down");
    assert!(b.probes() >= 1, "b is probed too");

    // b's probes start passing: up, and it takes traffic.
    b.set_healthy(true);
    wait_until("b up", Duration::from_secs(3), || active_up(&lb, b.addr)).await;
    let got = spread(&lb, 20).await;
    assert_eq!(got.get("b"), Some(&10), "{got:?}");
}

// === passive checks ===

/// `n` sequential `GET /name`; statuses in order.
async fn statuses(lb: &Lb, n: usize) -> Vec<StatusCode> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get_name(lb).await.0);
    }
    out
}

#[tokio::test]
async fn passive_checks_take_a_failing_server_out_for_fail_timeout() {
    let a = spawn_backend("a").await;
    let c = spawn_backend("c").await;
    let refusing = spawn_refusing().await;
    let cfg = simple_config(
        &[a.addr, refusing, c.addr],
        "max_fails = 2\nfail_timeout = \"1s\"\n[upstream.app.retry]\non = [\"off\"]\n",
    );
    let lb = spawn_lb(&cfg).await;
    let r = lb_backend(&lb, refusing);

    // Round robin: every third request goes to the refusing server and, with
    // retries off, fails. The second failure takes it out.
    let mut failures = 0;
    let mut sent = 0;
    while !r.condition.passive_down() {
        let (status, _) = get_name(&lb).await;
        sent += 1;
        if status == StatusCode::BAD_GATEWAY {
            failures += 1;
        } else {
            assert_eq!(status, StatusCode::OK);
        }
        assert!(sent <= 9, "not taken out after {failures} failures");
    }
    let out_at = Instant::now();
    assert_eq!(failures, 2, "max_fails = 2");
    assert_eq!(r.total(), 2, "attempts on the refusing server");
    assert!(r.condition.active_up(), "passive, not active, took it out");

    // While out (well inside the 1 s), it gets no attempt at all.
    let mut during = 0;
    while out_at.elapsed() < Duration::from_millis(600) {
        let (status, _) = get_name(&lb).await;
        assert_eq!(status, StatusCode::OK, "attempted while passively down");
        during += 1;
    }
    assert!(during >= 5, "only {during} requests in 600 ms");
    assert_eq!(r.total(), 2, "attempted while passively down");

    // After fail_timeout it is tried again.
    wait_until("back after fail_timeout", Duration::from_secs(3), || {
        !r.condition.passive_down()
    })
    .await;
    let out_for = out_at.elapsed();
    assert!(
        out_for >= Duration::from_millis(900),
        "out for only {out_for:?} with fail_timeout = 1s"
    );
    let again = statuses(&lb, 6).await;
    assert!(
        again.contains(&StatusCode::BAD_GATEWAY),
        "not tried again after fail_timeout: {again:?}"
    );
    assert!(r.total() > 2);
}

#[tokio::test]
async fn max_fails_zero_never_takes_a_server_out() {
    let a = spawn_backend("a").await;
    let c = spawn_backend("c").await;
    let refusing = spawn_refusing().await;
    let cfg = simple_config(
        &[a.addr, refusing, c.addr],
        "max_fails = 0\nfail_timeout = \"1s\"\n[upstream.app.retry]\non = [\"off\"]\n",
    );
    let lb = spawn_lb(&cfg).await;
    let got = statuses(&lb, 30).await;
    let failed = got
        .iter()
        .filter(|s| **s == StatusCode::BAD_GATEWAY)
        .count();
    assert_eq!(
        failed, 10,
        "every third request goes to the refusing server: {got:?}"
    );
    let r = lb_backend(&lb, refusing);
    assert_eq!(r.total(), 10);
    assert!(r.condition.usable() && !r.condition.passive_down());
}

#[tokio::test]
async fn passive_checks_count_errors_and_only_listed_statuses() {
    let read = "[upstream.app.timeouts]\nread = \"200ms\"\n";
    // (what, retry.on, taken out after one failure)
    let cases: [(&str, &str, bool); 5] = [
        ("502", "[\"off\"]", false),
        ("502", "[\"http_502\"]", true),
        ("refused", "[\"off\"]", true),
        ("garbage", "[\"off\"]", true),
        ("blackhole", "[\"off\"]", true),
    ];
    for (what, on, counted) in cases {
        let good = spawn_backend("good").await;
        let status = spawn_status("s502", 502).await;
        let bad = match what {
            "502" => status.addr,
            "refused" => spawn_refusing().await,
            "garbage" => spawn_garbage().await,
            _ => spawn_blackhole().await,
        };
        let cfg = simple_config(
            &[bad, good.addr],
            &format!(
                "max_fails = 1\nfail_timeout = \"10s\"\n{read}[upstream.app.retry]\non = {on}\n"
            ),
        );
        let lb = spawn_lb(&cfg).await;
        // Fresh latch, round robin: the first request goes to `bad`.
        let (got, _) = get_name(&lb).await;
        // Only a listed status is retried (to the good server).
        let retried = on.contains("http_502");
        assert_eq!(
            got == StatusCode::OK,
            retried,
            "{what} with on = {on}: {got}"
        );
        let b = lb_backend(&lb, bad);
        assert_eq!(b.total(), 1, "{what}: first attempt not on the bad server");
        assert_eq!(
            b.condition.passive_down(),
            counted,
            "{what} with on = {on}: counted as a failure?"
        );
    }
}

// === all_down ===

#[tokio::test]
async fn all_down_serve_still_attempts_the_servers() {
    let r1 = spawn_refusing().await;
    let r2 = spawn_refusing().await;
    let lb = spawn_lb(&simple_config(&[r1, r2], "")).await;
    for i in 0..3 {
        let (status, _) = get_name(&lb).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "request {i}");
    }
    // Passive checks took both out, yet they were still attempted.
    let b = lb_backends(&lb);
    assert!(b.iter().all(|b| b.condition.passive_down()));
    let attempts: u64 = b.iter().map(|b| b.total()).sum();
    assert!(
        attempts >= 4,
        "{attempts} attempts for 3 requests over 2 servers"
    );
}

#[tokio::test]
async fn all_down_by_active_checks() {
    let tcp = "type = \"tcp\"\ninterval = \"50ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 1";
    for (all_down, expect) in [
        ("all_down = \"503\"\n", StatusCode::SERVICE_UNAVAILABLE),
        ("", StatusCode::BAD_GATEWAY),
    ] {
        let r1 = spawn_refusing().await;
        let r2 = spawn_refusing().await;
        let cfg = simple_config(&[r1, r2], &format!("{all_down}{}", check(tcp)));
        let lb = spawn_lb(&cfg).await;
        wait_until("both marked down", Duration::from_secs(2), || {
            !active_up(&lb, r1) && !active_up(&lb, r2)
        })
        .await;
        let (status, headers, _) =
            within("GET, all down", http_get(lb.addr(), "localhost", "/name")).await;
        assert_eq!(status, expect, "{all_down:?}");
        let attempts: u64 = lb_backends(&lb).iter().map(|b| b.total()).sum();
        if expect == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(
                headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()),
                Some("1")
            );
            assert_eq!(attempts, 0, "all_down = 503 still attempted");
        } else {
            assert!(attempts >= 1, "all_down = serve made no attempt");
        }
        lb.handle.shutdown_within(Duration::from_millis(100)).await;
    }
}

// === slow start ===

#[tokio::test]
async fn slow_start_ramps_a_returning_server() {
    let a = spawn_named("a").await;
    let b = spawn_named("b").await;
    let cfg = simple_config(
        &[a.addr, b.addr],
        &format!(
            "max_fails = 0\nslow_start = \"2s\"\n{}",
            check(
                "type = \"http\"\npath = \"/health\"\ninterval = \"50ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 1"
            )
        ),
    );
    let lb = spawn_lb(&cfg).await;
    // Up at start: no ramp.
    assert_eq!(lb_backend(&lb, b.addr).condition.weight_permille(), 1000);
    let first = spread(&lb, 20).await;
    assert_eq!(first.get("b"), Some(&10), "{first:?}");

    let addr = b.stop().await;
    wait_until("b down", Duration::from_secs(2), || !active_up(&lb, addr)).await;
    let b2 = spawn_named_at("b", addr).await;
    wait_until("b up again", Duration::from_secs(2), || {
        active_up(&lb, addr)
    })
    .await;
    let back = lb_backend(&lb, addr);
    let w0 = back.condition.weight_permille();
    assert!(w0 < 300, "just back, weight {w0}‰");

    // Right after: well below half of the traffic.
    let n = 40;
    let early = spread(&lb, n).await;
    let to_b = early.get("b").copied().unwrap_or(0);
    assert!(
        to_b * 100 < n * 30,
        "b took {to_b} of {n} right after coming back (weight {w0}‰ → {}‰)",
        back.condition.weight_permille()
    );
    assert_eq!(b2.hits(), to_b);

    // The weight grows, never shrinks, and reaches 100%.
    let mut samples = vec![w0];
    wait_until("ramp complete", Duration::from_secs(5), || {
        let w = back.condition.weight_permille();
        samples.push(w);
        w == 1000
    })
    .await;
    assert!(
        samples.windows(2).all(|w| w[0] <= w[1]),
        "weight went down while ramping: {samples:?}"
    );
    let mid = samples.iter().filter(|w| (300..900).contains(*w)).count();
    assert!(mid >= 3, "no gradual ramp: {samples:?}");

    // After the ramp: half again.
    let late = spread(&lb, n).await;
    let to_b = late.get("b").copied().unwrap_or(0);
    assert!(
        (n * 4 / 10..=n * 6 / 10).contains(&to_b),
        "b took {to_b} of {n} after the ramp"
    );
}

#[tokio::test]
async fn slow_start_after_a_passive_time_out() {
    let good = spawn_backend("good").await;
    let refusing = spawn_refusing().await;
    let cfg = simple_config(
        &[refusing, good.addr],
        "max_fails = 1\nfail_timeout = \"300ms\"\nslow_start = \"2s\"\n[upstream.app.retry]\non = [\"off\"]\n",
    );
    let lb = spawn_lb(&cfg).await;
    let r = lb_backend(&lb, refusing);
    assert_eq!(r.condition.weight_permille(), 1000, "no ramp at start");
    let (status, _) = get_name(&lb).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(r.condition.passive_down());
    wait_until("passive time-out over", Duration::from_secs(3), || {
        !r.condition.passive_down()
    })
    .await;
    let w0 = r.condition.weight_permille();
    assert!(
        w0 < 300,
        "back from a passive time-out at {w0}‰, not ramping"
    );
    wait_until("ramp growing", Duration::from_secs(3), || {
        r.condition.weight_permille() > w0 + 100
    })
    .await;
    assert!(r.condition.weight_permille() < 1000);
}
