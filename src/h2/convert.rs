//! What an HTTP/2 request becomes on its way to an HTTP/1.1 backend, and
//! what the backend's answer becomes on its way back (RFC 9113 §8.2.2 and
//! §8.3, RFC 8441 §4–5). Pure: no I/O.
//!
//! A request:
//! - `:authority` becomes `Host` (replacing a `Host` the client also sent;
//!   §8.3.1), and the target its origin form (`:path`);
//! - several `cookie` fields are joined with `"; "` into one (§8.2.3), so
//!   the sticky cookie is found as in HTTP/1.1;
//! - `te` goes (only `trailers` is allowed in HTTP/2, and it is hop-by-hop);
//! - an extended CONNECT with `:protocol = websocket` becomes the HTTP/1.1
//!   handshake: `GET`, `Connection: Upgrade`, `Upgrade: websocket`, a fresh
//!   `Sec-WebSocket-Key`, `Sec-WebSocket-Version` (13 when missing) and the
//!   client's `-Protocol` and `-Extensions` kept.
//!
//! The version stays `HTTP/2.0` (the access log says so); the forwarder
//! writes HTTP/1.1 whatever it is.
//!
//! An answer: the connection-specific fields HTTP/2 forbids (§8.2.2) go,
//! and the backend's `101` to a WebSocket becomes `200` without `Upgrade`,
//! `Connection` and `Sec-WebSocket-Accept` (RFC 8441 §5), its `Set-Cookie`
//! and `Sec-WebSocket-Protocol`/`-Extensions` kept.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};

/// The connection-specific fields HTTP/2 forbids (RFC 9113 §8.2.2).
static CONNECTION_SPECIFIC: [header::HeaderName; 6] = [
    header::CONNECTION,
    header::HeaderName::from_static("keep-alive"),
    header::HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// What a request asks of latch, judged from its method and `:protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An ordinary request.
    Plain,
    /// Extended CONNECT with `:protocol = websocket`.
    WebSocket,
    /// CONNECT without `:protocol`, or with another protocol: latch is not
    /// a forward proxy, nor a tunnel for anything but WebSockets.
    Refused(StatusCode, &'static str),
}

/// Judges `method` and the `:protocol` pseudo-header.
pub fn kind(method: &Method, protocol: Option<&str>) -> Kind {
    match (method == Method::CONNECT, protocol) {
        (false, _) => Kind::Plain,
        (true, Some(p)) if p.eq_ignore_ascii_case("websocket") => Kind::WebSocket,
        (true, Some(_)) => Kind::Refused(
            StatusCode::NOT_IMPLEMENTED,
            "only the websocket protocol can be tunnelled",
        ),
        (true, None) => Kind::Refused(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported (latch is not a forward proxy)",
        ),
    }
}

/// Rewrites the head of an HTTP/2 request as an HTTP/1.1 backend needs it.
/// `Err` says why it is a 400.
pub fn request<B>(req: &mut Request<B>, kind: Kind) -> Result<(), &'static str> {
    let uri = req.uri().clone();
    let headers = req.headers_mut();
    if let Some(authority) = uri.authority() {
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| "invalid :authority")?;
        headers.insert(header::HOST, host);
    }
    join_cookies(headers);
    headers.remove(header::TE);
    if kind == Kind::WebSocket {
        websocket_handshake(headers);
        *req.method_mut() = Method::GET;
    }
    let target = uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    *req.uri_mut() = Uri::try_from(target).map_err(|_| "invalid :path")?;
    Ok(())
}

/// Joins several `cookie` fields into one (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    let mut all = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (all.next(), all.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// The HTTP/1.1 handshake fields of RFC 6455 §4.1 for an RFC 8441 request.
fn websocket_handshake(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    if let Ok(key) = HeaderValue::from_str(&key) {
        headers.insert(header::SEC_WEBSOCKET_KEY, key);
    }
    headers
        .entry(header::SEC_WEBSOCKET_VERSION)
        .or_insert(HeaderValue::from_static("13"));
}

/// Removes what HTTP/2 forbids in a response (RFC 9113 §8.2.2).
pub fn response_headers(headers: &mut HeaderMap) {
    // Most answers carry none, or only `Connection`: one pass over the names
    // finds which, and only those are removed (a removal is a lookup).
    let mut present = [false; CONNECTION_SPECIFIC.len()];
    for name in headers.keys() {
        // By text: a `match` on it is a length test and at most one
        // comparison, where comparing `HeaderName`s is one per name listed.
        let i = match name.as_str() {
            "connection" => 0,
            "keep-alive" => 1,
            "proxy-connection" => 2,
            "te" => 3,
            "transfer-encoding" => 4,
            "upgrade" => 5,
            _ => continue,
        };
        present[i] = true;
    }
    for (name, _) in CONNECTION_SPECIFIC.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
}

/// What the backend's answer to a WebSocket handshake means for the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsAnswer {
    /// A `101`, now a `200`: the stream is the tunnel from here on.
    Tunnel,
    /// An error to pass on as it is (`503`, `403`, ...).
    Refused,
    /// A `2xx` that is not a `101`: as a `2xx` to an extended CONNECT it
    /// would make the stream a tunnel to nothing, so the client gets a `502`.
    NotUpgraded,
}

/// The backend's answer to a WebSocket handshake, as the HTTP/2 client
/// gets it (RFC 8441 §5): a `101` becomes a `200` without the fields of
/// the HTTP/1.1 handshake.
pub fn websocket_response<B>(resp: &mut Response<B>) -> WsAnswer {
    let status = resp.status();
    let headers = resp.headers_mut();
    response_headers(headers);
    if status == StatusCode::SWITCHING_PROTOCOLS {
        headers.remove(header::SEC_WEBSOCKET_ACCEPT);
        headers.remove(header::CONTENT_LENGTH);
        *resp.status_mut() = StatusCode::OK;
        WsAnswer::Tunnel
    } else if status.is_success() {
        WsAnswer::NotUpgraded
    } else {
        WsAnswer::Refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h2_request(method: Method, uri: &str, fields: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .version(http::Version::HTTP_2);
        for (n, v) in fields {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn authority_becomes_host_and_the_target_origin_form() {
        let mut r = h2_request(
            Method::GET,
            "https://chat.test:8443/a/b?c=d",
            &[("host", "other.test"), ("te", "trailers")],
        );
        request(&mut r, Kind::Plain).unwrap();
        assert_eq!(r.headers()[header::HOST], "chat.test:8443");
        assert_eq!(r.headers().get_all(header::HOST).iter().count(), 1);
        assert_eq!(r.uri(), "/a/b?c=d");
        assert!(r.uri().authority().is_none());
        assert!(r.headers().get(header::TE).is_none());
        assert_eq!(r.version(), http::Version::HTTP_2);
    }

    #[test]
    fn cookies_are_joined_into_one_field() {
        let mut r = h2_request(
            Method::GET,
            "https://a.test/",
            &[
                ("cookie", "a=1"),
                ("cookie", "LATCH=x.y"),
                ("cookie", "b=2"),
            ],
        );
        request(&mut r, Kind::Plain).unwrap();
        let all: Vec<_> = r.headers().get_all(header::COOKIE).iter().collect();
        assert_eq!(all, ["a=1; LATCH=x.y; b=2"]);
    }

    #[test]
    fn extended_connect_becomes_an_upgrade_handshake() {
        assert_eq!(kind(&Method::CONNECT, Some("websocket")), Kind::WebSocket);
        assert!(matches!(
            kind(&Method::CONNECT, None),
            Kind::Refused(StatusCode::METHOD_NOT_ALLOWED, _)
        ));
        assert!(matches!(
            kind(&Method::CONNECT, Some("connect-udp")),
            Kind::Refused(StatusCode::NOT_IMPLEMENTED, _)
        ));
        let mut r = h2_request(
            Method::CONNECT,
            "https://a.test/ws?x=1",
            &[
                ("sec-websocket-protocol", "chat"),
                ("sec-websocket-extensions", "permessage-deflate"),
            ],
        );
        request(&mut r, Kind::WebSocket).unwrap();
        let h = r.headers();
        assert_eq!(r.method(), Method::GET);
        assert_eq!(r.uri(), "/ws?x=1");
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::SEC_WEBSOCKET_VERSION], "13");
        assert_eq!(h[header::SEC_WEBSOCKET_PROTOCOL], "chat");
        assert_eq!(h[header::SEC_WEBSOCKET_EXTENSIONS], "permessage-deflate");
        // 16 random bytes in base64.
        assert_eq!(h[header::SEC_WEBSOCKET_KEY].len(), 24);
        let mut again = h2_request(Method::CONNECT, "https://a.test/ws", &[]);
        request(&mut again, Kind::WebSocket).unwrap();
        assert_ne!(
            again.headers()[header::SEC_WEBSOCKET_KEY],
            h[header::SEC_WEBSOCKET_KEY]
        );
    }

    #[test]
    fn a_101_becomes_200_keeping_the_pin_and_the_subprotocol() {
        let mut resp = Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-accept", "abc")
            .header("sec-websocket-protocol", "chat")
            .header("set-cookie", "LATCH=pin; Path=/")
            .body(())
            .unwrap();
        assert_eq!(websocket_response(&mut resp), WsAnswer::Tunnel);
        let h = resp.headers();
        assert_eq!(resp.status(), StatusCode::OK);
        for gone in ["upgrade", "connection", "sec-websocket-accept"] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
        assert_eq!(h["sec-websocket-protocol"], "chat");
        assert_eq!(h["set-cookie"], "LATCH=pin; Path=/");
    }

    #[test]
    fn a_2xx_without_upgrade_is_no_tunnel_and_errors_pass() {
        let mut ok = Response::builder().status(200).body(()).unwrap();
        assert_eq!(websocket_response(&mut ok), WsAnswer::NotUpgraded);
        let mut busy = Response::builder().status(503).body(()).unwrap();
        assert_eq!(websocket_response(&mut busy), WsAnswer::Refused);
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn connection_specific_response_fields_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        response_headers(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
        // Every one of them, every value of each; nothing else.
        let mut h = HeaderMap::new();
        for name in &CONNECTION_SPECIFIC {
            h.append(name, HeaderValue::from_static("a"));
            h.append(name, HeaderValue::from_static("b"));
        }
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("set-cookie", HeaderValue::from_static("b=2"));
        response_headers(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h.get_all("set-cookie").iter().count(), 2);
        // Only `connection`: the rest untouched.
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close"));
        h.insert("server", HeaderValue::from_static("x"));
        response_headers(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["server"]);
    }
}
