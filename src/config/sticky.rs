//! Validation of stickiness and hash keys: `[upstream.NAME.sticky]`,
//! `hash_key` and the ip_hash prefixes. The cookie secret is read here (from
//! the file or the environment) so a missing or weak secret stops the config,
//! not the first request.

use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::file::{SameSite, StickyMode, StickySection, UpstreamSection};
use super::{ConfigError, Reporter};

/// Shortest accepted HMAC key.
pub const MIN_SECRET: usize = 16;

/// How requests of one client session find their backend again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Sticky {
    #[default]
    None,
    /// A signed cookie naming the backend (stateless; any instance decodes it).
    Cookie(CookieSettings),
    /// A consistent hash of the client address.
    IpHash,
    /// The cookie, plus a signed backend tag in the session id of Engine.IO
    /// and SignalR handshakes (`sticky::session_id`).
    SessionId(CookieSettings),
}

#[derive(Clone, PartialEq, Eq)]
pub struct CookieSettings {
    pub name: String,
    pub secret: Vec<u8>,
    pub path: String,
    pub domain: Option<String>,
    pub max_age: Option<Duration>,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: Option<SameSite>,
    /// Forward the cookie to the backend as well.
    pub keep: bool,
}

impl std::fmt::Debug for CookieSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("CookieSettings")
            .field("name", &self.name)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

/// What `balance = "hash"` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client address, masked by the ip_prefix settings.
    Ip,
    Header(HeaderName),
    Cookie(String),
    Query(String),
}

pub(super) fn sticky(
    r: &dyn Reporter,
    key: &str,
    s: &StickySection,
) -> Result<Sticky, ConfigError> {
    match s.mode {
        StickyMode::None => Ok(Sticky::None),
        StickyMode::IpHash => Ok(Sticky::IpHash),
        StickyMode::Cookie => cookie(r, key, s).map(Sticky::Cookie),
        StickyMode::SessionId => cookie(r, key, s).map(Sticky::SessionId),
    }
}

fn cookie(r: &dyn Reporter, key: &str, s: &StickySection) -> Result<CookieSettings, ConfigError> {
    let name = s.cookie.get_ref();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        return Err(r.report(
            s.cookie.span(),
            &format!("{key}.cookie"),
            format!("`{name}` is not a valid cookie name"),
        ));
    }
    let secret = match (&s.secret, &s.secret_env) {
        (Some(_), Some(env)) => {
            return Err(r.report(
                env.span(),
                &format!("{key}.secret_env"),
                "give `secret` or `secret_env`, not both".into(),
            ));
        }
        (Some(sec), None) => secret_len(r, sec, &format!("{key}.secret"), sec.get_ref().clone())?,
        (None, Some(env)) => {
            let var = env.get_ref();
            let value = std::env::var(var).map_err(|_| {
                r.report(
                    env.span(),
                    &format!("{key}.secret_env"),
                    format!("environment variable {var} is not set"),
                )
            })?;
            secret_len(r, env, &format!("{key}.secret_env"), value)?
        }
        (None, None) => {
            return Err(r.report(
                s.cookie.span(),
                key,
                "cookie mode needs `secret_env = \"VAR\"` (or `secret`): the HMAC key all instances share".into(),
            ));
        }
    };
    if let Some(ss) = s
        .same_site
        .as_ref()
        .filter(|ss| *ss.get_ref() == SameSite::None && !s.secure)
    {
        return Err(r.report(
            ss.span(),
            &format!("{key}.same_site"),
            "same_site = \"none\" requires secure = true (browsers drop it otherwise)".into(),
        ));
    }
    Ok(CookieSettings {
        name: name.clone(),
        secret,
        path: s.path.clone(),
        domain: s.domain.clone(),
        max_age: s.max_age.map(|d| d.0),
        secure: s.secure,
        http_only: s.http_only,
        same_site: s.same_site.as_ref().map(|s| *s.get_ref()),
        keep: s.keep_cookie,
    })
}

fn secret_len(
    r: &dyn Reporter,
    at: &Spanned<String>,
    key: &str,
    value: String,
) -> Result<Vec<u8>, ConfigError> {
    if value.len() < MIN_SECRET {
        return Err(r.report(
            at.span(),
            key,
            format!("the secret must be at least {MIN_SECRET} bytes"),
        ));
    }
    Ok(value.into_bytes())
}

pub(super) fn hash_key(
    r: &dyn Reporter,
    key: &str,
    u: &UpstreamSection,
) -> Result<Option<HashKey>, ConfigError> {
    let Some(spec) = &u.hash_key else {
        return Ok(None);
    };
    let bad = |why: &str| r.report(spec.span(), &format!("{key}.hash_key"), why.to_string());
    let text = spec.get_ref();
    let parsed = match text.split_once(':') {
        None if text == "ip" => HashKey::Ip,
        Some(("header", n)) => HashKey::Header(
            HeaderName::from_bytes(n.as_bytes()).map_err(|_| bad("invalid header name"))?,
        ),
        Some(("cookie", n)) if !n.is_empty() => HashKey::Cookie(n.to_string()),
        Some(("query", n)) if !n.is_empty() => HashKey::Query(n.to_string()),
        _ => {
            return Err(bad(
                "expected \"ip\", \"header:NAME\", \"cookie:NAME\" or \"query:NAME\"",
            ));
        }
    };
    Ok(Some(parsed))
}

pub(super) fn prefixes(
    r: &dyn Reporter,
    key: &str,
    u: &UpstreamSection,
) -> Result<(u8, u8), ConfigError> {
    let (v4, v6) = (&u.ip_prefix_v4, &u.ip_prefix_v6);
    if *v4.get_ref() > 32 {
        return Err(r.report(
            v4.span(),
            &format!("{key}.ip_prefix_v4"),
            "must be 0..=32".into(),
        ));
    }
    if *v6.get_ref() > 128 {
        return Err(r.report(
            v6.span(),
            &format!("{key}.ip_prefix_v6"),
            "must be 0..=128".into(),
        ));
    }
    Ok((*v4.get_ref(), *v6.get_ref()))
}
