//! The HTTP side of placement: builds a request's [`RequestKey`] once — its
//! verified cookie pin and the hash of its configured key — and makes the
//! `Set-Cookie` that pins a client. The decision itself is
//! [`crate::balance::Policy`]'s, which never sees a header.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Uri};

use super::Upstream;
use crate::backend::Backend;
use crate::balance::{self, How, Pin, RequestKey};
use crate::config::{CookieSettings, HashKey, SameSite};
use crate::sticky::session_id::{self, Handshake};
use crate::sticky::{self, BackendToken, CookieAttrs, CookieCodec};

/// An upstream's signed sticky cookie.
#[derive(Debug)]
pub struct StickyCookie {
    codec: CookieCodec,
    attrs: CookieAttrs,
    name: String,
    keep: bool,
    /// Cookie token → backend index.
    tokens: Vec<(BackendToken, usize)>,
    /// `mode = "session_id"`: the tag also rides in session ids.
    session_id: bool,
}

impl StickyCookie {
    pub fn new(
        c: &CookieSettings,
        backends: &[Arc<Backend>],
        session_id: bool,
    ) -> Result<StickyCookie, String> {
        Ok(StickyCookie {
            codec: CookieCodec::new(&c.secret, &c.name, c.max_age)?,
            attrs: CookieAttrs {
                path: c.path.clone(),
                domain: c.domain.clone(),
                max_age: c.max_age,
                secure: c.secure,
                http_only: c.http_only,
                same_site: c.same_site.map(|s| match s {
                    SameSite::Strict => sticky::SameSite::Strict,
                    SameSite::Lax => sticky::SameSite::Lax,
                    SameSite::None => sticky::SameSite::None,
                }),
            },
            name: c.name.clone(),
            keep: c.keep,
            tokens: backends
                .iter()
                .enumerate()
                .map(|(i, b)| (CookieCodec::token(&b.id), i))
                .collect(),
            session_id,
        })
    }
}

/// The request's key for `up`, built once before the first attempt. The
/// sticky cookie is verified here and, unless `keep` is set, removed from
/// the headers the backend will see.
pub fn request_key<'a>(
    up: &Upstream,
    headers: &mut HeaderMap,
    client_ip: IpAddr,
    path: &'a str,
    query: Option<&str>,
) -> RequestKey<'a> {
    let pin = match &up.cookie {
        None => Pin::Absent,
        Some(c) => {
            let values = sticky::find_in_request(headers, &c.name);
            if !c.keep && !values.is_empty() {
                sticky::strip_from_request(headers, &c.name);
            }
            let now = unix_now();
            let verified = values
                .iter()
                .filter_map(|v| c.codec.decode(v, now))
                .find_map(|t| c.tokens.iter().find(|(tok, _)| *tok == t).map(|(_, i)| *i));
            match (verified, values.is_empty()) {
                (Some(i), _) => Pin::To(i),
                (None, true) => Pin::Absent,
                (None, false) => Pin::Invalid,
            }
        }
    };
    let hash = if up.policy.hashed() {
        key_hash(&up.hash_key, up.prefixes, headers, client_ip, query)
    } else {
        0
    };
    RequestKey {
        client_ip,
        path,
        hash,
        pin,
        upgrade: None,
    }
}

/// In `session_id` mode: the backend a tagged session id in the query
/// (`sid`, `id`) names, with the original id put back into `target` for the
/// backend. `None` (and `target` untouched) without a verified tag.
pub fn session_pin(up: &Upstream, target: &mut Uri) -> Option<usize> {
    let c = up.cookie.as_ref().filter(|c| c.session_id)?;
    let pq = target.path_and_query()?;
    let (query, token) = session_id::restore_query(&c.codec, pq.query()?, unix_now())?;
    let restored = format!("{}?{query}", pq.path());
    // The restored query is a subset of the original's bytes: still valid.
    *target = Uri::try_from(restored).ok()?;
    c.tokens.iter().find(|(t, _)| *t == token).map(|(_, i)| *i)
}

/// In `session_id` mode: which handshake `target` is, if any.
pub fn handshake(up: &Upstream, target: &Uri) -> Option<Handshake> {
    up.cookie.as_ref().filter(|c| c.session_id)?;
    session_id::handshake(target.path(), target.query())
}

/// The handshake answer `body` with its session id tagged for `backend`.
pub fn tag_handshake(
    up: &Upstream,
    kind: Handshake,
    backend: &Backend,
    body: &[u8],
) -> Option<Vec<u8>> {
    let c = up.cookie.as_ref()?;
    session_id::rewrite_body(kind, body, &c.codec, &backend.id, unix_now())
}

/// The `Set-Cookie` value that pins the client to `backend`, when the
/// request was not already pinned there.
pub fn set_cookie(up: &Upstream, backend: &Backend, how: How) -> Option<String> {
    let c = up.cookie.as_ref()?;
    if how == How::Pinned {
        return None;
    }
    let value = c.codec.encode(&backend.id, unix_now());
    Some(c.codec.set_cookie_header(&value, &c.attrs))
}

/// The consistent-hash key of a request. A request without the configured key
/// is placed by its address, as nginx falls back when the hash key is empty.
fn key_hash(
    key: &HashKey,
    (v4, v6): (u8, u8),
    headers: &HeaderMap,
    client_ip: IpAddr,
    query: Option<&str>,
) -> u64 {
    let by_value = |v: &[u8]| balance::hash64(v, 1);
    let found = match key {
        HashKey::Ip => None,
        HashKey::Header(h) => headers.get(h).map(|v| by_value(v.as_bytes())),
        HashKey::Cookie(n) => sticky::find_in_request(headers, n)
            .first()
            .map(|v| by_value(v.as_bytes())),
        HashKey::Query(n) => query
            .and_then(|q| query_param(q, n))
            .map(|v| by_value(v.as_bytes())),
    };
    found.unwrap_or_else(|| balance::hash64(&sticky::ip_key(client_ip, v4, v6), 0))
}

/// The value of query parameter `name` (raw, not percent-decoded: it is only hashed).
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params() {
        assert_eq!(query_param("EIO=4&sid=abc&t=1", "sid"), Some("abc"));
        assert_eq!(query_param("flag&sid=", "flag"), Some(""));
        assert_eq!(query_param("a=1", "sid"), None);
    }
}
