//! Which host and path a request is for, decided once and used alike by
//! routing and by what the backend receives (issue 10, bugs 1 and 8). Every
//! request here is written raw, because the point is what a client library
//! would never send: two `Host` headers, an absolute-form target that
//! disagrees with `Host`, `Connection: Host`, dot segments, percent-encoded
//! letters, repeated slashes.

mod support;

use support::*;

/// latch with two routed upstreams, each with its own backend:
/// `host = "public.example"` → `public`, `host = "internal.example"` →
/// `internal`, and `path_prefix = "/admin"` → `admin` (any host). Anything
/// else goes to `public`.
async fn routed() -> (Lb, [Backend; 3]) {
    let public = spawn_backend("public").await;
    let internal = spawn_backend("internal").await;
    let admin = spawn_backend("admin").await;
    let toml = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"public\"\n\
         [[listener.route]]\nhost = \"internal.example\"\nupstream = \"internal\"\n\
         [[listener.route]]\npath_prefix = \"/admin\"\nupstream = \"admin\"\n\
         [[listener.route]]\nhost = \"public.example\"\nupstream = \"public\"\n\n\
         [upstream.public]\n{}\n[upstream.internal]\n{}\n[upstream.admin]\n{}\n",
        servers(&[public.addr]),
        servers(&[internal.addr]),
        servers(&[admin.addr]),
    );
    (spawn_lb(&toml).await, [public, internal, admin])
}

fn hits(backends: &[Backend; 3]) -> [usize; 3] {
    backends.each_ref().map(|b| b.hits())
}

// === Host (RFC 9112 §3.2) ===

#[tokio::test]
async fn absolute_form_routes_and_forwards_the_uris_authority() {
    let (lb, _b) = routed().await;
    let addr = lb.addr();
    // The URI says public, Host says internal: the URI wins, for the route
    // *and* for the Host the backend sees.
    let r = raw_get(
        addr,
        "http://public.example/echo?q=1",
        &["Host: internal.example"],
    )
    .await;
    assert_eq!(r.header("x-backend"), Some("public"), "{r:?}");
    let echo = r.echo();
    assert_eq!(echo.target, "/echo?q=1", "backend gets origin-form");
    assert_eq!(echo.header_all("host"), vec!["public.example"]);
    assert_eq!(echo.header_all("x-forwarded-host"), vec!["public.example"]);

    // The other way round lands on internal, with internal's name.
    let r = raw_get(
        addr,
        "http://internal.example/echo",
        &["Host: public.example"],
    )
    .await;
    assert_eq!(r.header("x-backend"), Some("internal"), "{r:?}");
    assert_eq!(r.echo().header_all("host"), vec!["internal.example"]);

    // A port in the authority is kept in Host; routing ignores it.
    let r = raw_get(addr, "http://internal.example:8080/echo", &["Host: x"]).await;
    assert_eq!(r.header("x-backend"), Some("internal"), "{r:?}");
    assert_eq!(r.echo().header_all("host"), vec!["internal.example:8080"]);
}

#[tokio::test]
async fn absolute_form_without_host_gets_the_authority_as_host() {
    let (lb, b) = routed().await;
    let r = raw_get(lb.addr(), "http://internal.example/echo", &[]).await;
    assert_eq!(r.header("x-backend"), Some("internal"), "{r:?}");
    let echo = r.echo();
    assert_eq!(echo.header_all("host"), vec!["internal.example"]);
    assert_ne!(
        echo.header("host"),
        Some(b[1].addr.to_string().as_str()),
        "the backend got its own address as Host"
    );
}

#[tokio::test]
async fn an_http10_request_without_host_gets_its_servers_address() {
    let (lb, b) = routed().await;
    // HTTP/1.0 may omit Host; HTTP/1.1, which backends are spoken to in,
    // needs one: the server's own address stands in, on every attempt.
    let r = raw_request(lb.addr(), "GET /echo HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.header("x-backend"), Some("public"), "{r:?}");
    let echo = r.echo();
    assert_eq!(echo.header_all("host"), vec![b[0].addr.to_string()]);
    // With a Host, that Host and only it.
    let r = raw_request(
        lb.addr(),
        "GET /echo HTTP/1.0\r\nHost: public.example\r\n\r\n",
    )
    .await;
    assert_eq!(r.echo().header_all("host"), vec!["public.example"], "{r:?}");
}

#[tokio::test]
async fn more_than_one_host_or_an_invalid_one_is_400() {
    let (lb, b) = routed().await;
    let addr = lb.addr();
    let before = hits(&b);
    let cases: [(&str, &[&str]); 7] = [
        ("/echo", &["Host: public.example", "Host: internal.example"]),
        ("/echo", &["Host: public.example", "Host: public.example"]),
        ("/echo", &["Host: user@internal.example"]),
        ("/echo", &["Host: internal.example:80:80"]),
        ("/echo", &["Host: a b"]),
        // In absolute-form Host is replaced, but an invalid or repeated one
        // is still an error (RFC 9112 §3.2: "MUST respond with 400").
        (
            "http://public.example/echo",
            &["Host: user@internal.example"],
        ),
        ("http://public.example/echo", &["Host: a", "Host: b"]),
    ];
    for (target, headers) in cases {
        let r = raw_get(addr, target, headers).await;
        assert_eq!(r.status, 400, "{target} {headers:?}: {r:?}");
    }
    // Userinfo in the target obscures the authority (RFC 9110 §4.2.4).
    let r = raw_get(addr, "http://user@public.example/echo", &["Host: x"]).await;
    assert_eq!(r.status, 400, "userinfo in the target: {r:?}");
    assert_eq!(hits(&b), before, "a bad request reached a backend");
}

#[tokio::test]
async fn connection_cannot_make_host_hop_by_hop() {
    let (lb, b) = routed().await;
    for listing in ["Connection: Host", "Connection: keep-alive, host"] {
        let r = raw_get(lb.addr(), "/echo", &["Host: internal.example", listing]).await;
        assert_eq!(r.header("x-backend"), Some("internal"), "{listing}: {r:?}");
        let echo = r.echo();
        assert_eq!(
            echo.header_all("host"),
            vec!["internal.example"],
            "{listing}"
        );
        assert_ne!(echo.header("host"), Some(b[1].addr.to_string().as_str()));
        assert_eq!(
            echo.header_all("x-forwarded-host"),
            vec!["internal.example"]
        );
    }
}

// === Path (RFC 3986 §5.2.4, §6.2.2) ===

#[tokio::test]
async fn routes_match_the_normalised_path_and_the_backend_gets_it() {
    let (lb, b) = routed().await;
    let addr = lb.addr();
    let [public, _, admin] = &b;
    // (sent, backend that must answer, target the backend must receive)
    let cases = [
        ("/x/../admin/echo", admin, "/admin/echo"),
        ("/%61dmin/echo", admin, "/admin/echo"),
        ("/%61%64%6D%69%6e/echo", admin, "/admin/echo"),
        ("//admin/echo", admin, "/admin/echo"),
        ("/./admin//./echo", admin, "/admin/echo"),
        ("/admin/x/%2e%2e/echo", admin, "/admin/echo"),
        // The query is passed as sent.
        (
            "/x/./y/../../admin/echo?a=/../b&c=%61",
            admin,
            "/admin/echo?a=/../b&c=%61",
        ),
        // Reserved characters stay encoded (an encoded slash is not a slash);
        // their hex digits are upper-cased.
        ("/admin/echo%2f..", admin, "/admin/echo%2F.."),
        ("/admin/../echo", public, "/echo"),
        ("/public/../echo?x", public, "/echo?x"),
    ];
    for (sent, backend, got) in cases {
        let r = raw_get(addr, sent, &["Host: any.example"]).await;
        assert_eq!(
            r.header("x-backend"),
            Some(backend.name.as_str()),
            "{sent}: {r:?}"
        );
        assert_eq!(backend.last_uri().as_deref(), Some(got), "{sent}");
    }
    // The case the issue names, end to end: a backend that normalises the
    // path itself would otherwise serve /admin to the public route.
    let r = raw_get(addr, "/x/../admin/echo", &["Host: public.example"]).await;
    assert_eq!(r.header("x-backend"), Some("admin"), "{r:?}");
    assert_eq!(admin.last_uri().as_deref(), Some("/admin/echo"));
}

#[tokio::test]
async fn a_path_that_climbs_above_the_root_or_is_badly_escaped_is_400() {
    let (lb, b) = routed().await;
    let before = hits(&b);
    for sent in [
        "/../admin/echo",
        "/x/../../admin/echo",
        "/%2e%2e/admin/echo",
        "/x/%2E%2E/%2e%2e/echo",
        "/..",
        "/admin/%zz",
        "/admin/%4",
    ] {
        let r = raw_get(lb.addr(), sent, &["Host: public.example"]).await;
        assert_eq!(r.status, 400, "{sent}: {r:?}");
    }
    assert_eq!(hits(&b), before, "a bad path reached a backend");
}
