use super::*;

fn headers(auth: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
    h
}

#[test]
fn bearer_scheme_is_case_insensitive_and_strict() {
    assert_eq!(bearer(&headers("Bearer s3cret")), Some(&b"s3cret"[..]));
    assert_eq!(bearer(&headers("bearer  s3cret ")), Some(&b"s3cret"[..]));
    assert_eq!(bearer(&headers("Basic czNjcmV0")), None);
    assert_eq!(bearer(&headers("Bearer")), None);
    assert_eq!(bearer(&headers("Bearers3cret")), None);
    assert_eq!(bearer(&HeaderMap::new()), None);
}

#[test]
fn secrets_compare_whole() {
    assert!(same_secret(b"s3cret", b"s3cret"));
    assert!(!same_secret(b"s3cre", b"s3cret"));
    assert!(!same_secret(b"s3cret!", b"s3cret"));
    assert!(!same_secret(b"", b"s3cret"));
}

#[test]
fn query_values_are_percent_decoded() {
    assert_eq!(percent_decode("a%2Fb+c"), b"a/b c");
    assert_eq!(percent_decode("%zz%4"), b"%zz%4");
    assert_eq!(percent_decode("%+1"), b"% 1");
    assert_eq!(percent_decode("%e2%9c%93"), "✓".as_bytes());
}

#[test]
fn the_query_token_opens_the_dashboard_only() {
    let s = Some("a b/c");
    let req = |uri: &str| Request::get(uri).body(()).unwrap();
    assert!(authorized(s, &req("/?token=a+b%2Fc")));
    assert!(authorized(s, &req("/?x=1&token=a%20b/c")));
    assert!(!authorized(s, &req("/?token=a+b")));
    assert!(!authorized(s, &req("/status?token=a+b%2Fc")));
    assert!(!authorized(s, &req("/")));
    let with_header = Request::get("/status")
        .header(AUTHORIZATION, "Bearer a b/c")
        .body(())
        .unwrap();
    assert!(authorized(s, &with_header));
    assert!(authorized(None, &req("/status")));
}
