//! Checks for `mode = "tcp"` listeners (L4 stream mode). A TCP listener has
//! one `upstream` and nothing HTTP: no routes, no trusted proxies (there are
//! no `X-Forwarded-*` headers to believe), and its upstream must place by
//! something a TCP connection has, so no sticky cookie and no hash of a
//! header, cookie or query parameter.

use std::collections::BTreeMap;

use super::file::{ListenerMode, ListenerSection};
use super::{ConfigError, HashKey, Sticky, UpstreamConfig, Validator};

impl Validator<'_> {
    /// The listener's mode, after the checks a TCP listener needs.
    pub(super) fn listener_mode(
        &self,
        key: &str,
        l: &ListenerSection,
        upstreams: &BTreeMap<String, UpstreamConfig>,
    ) -> Result<ListenerMode, ConfigError> {
        let Some(mode) = &l.mode else {
            return Ok(ListenerMode::Http);
        };
        if *mode.get_ref() == ListenerMode::Http {
            return Ok(ListenerMode::Http);
        }
        if let Some(r) = l.route.first() {
            return Err(self.err(
                r.upstream
                    .as_ref()
                    .or(r.dispatch.as_ref())
                    .map_or(mode.span(), |u| u.span()),
                format!("{key}.route"),
                "routes do not apply to a `mode = \"tcp\"` listener; give it one `upstream`",
            ));
        }
        if let Some(c) = l.trusted_proxies.first() {
            return Err(self.err(
                c.span(),
                format!("{key}.trusted_proxies"),
                "does not apply to a `mode = \"tcp\"` listener (it reads no headers)",
            ));
        }
        let Some(name) = &l.upstream else {
            return Err(self.err(
                l.bind.span(),
                format!("{key}.upstream"),
                "a `mode = \"tcp\"` listener needs `upstream = \"NAME\"`",
            ));
        };
        // An unknown name is reported by the listener's own checks.
        if let Some(up) = upstreams.get(name.get_ref()) {
            let why = match (&up.sticky, &up.hash_key) {
                (Sticky::Cookie(_), _) => Some("sticky cookies"),
                (Sticky::SessionId(_), _) => Some("session id stickiness"),
                (_, Some(HashKey::Header(_) | HashKey::Cookie(_) | HashKey::Query(_))) => {
                    Some("a hash_key other than \"ip\"")
                }
                _ => None,
            };
            if let Some(why) = why {
                return Err(self.err(
                    name.span(),
                    format!("{key}.upstream"),
                    format!(
                        "upstream `{}` uses {why}, which a TCP connection cannot carry; \
                         use balance = \"ip_hash\" or a balancer",
                        name.get_ref()
                    ),
                ));
            }
        }
        Ok(ListenerMode::Tcp)
    }
}
