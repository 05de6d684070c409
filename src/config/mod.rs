//! Configuration: a TOML file becomes a validated [`Config`] in two stages.
//!
//! Stage one (`file.rs`) is serde with `deny_unknown_fields`; stage two (here)
//! checks what serde cannot: addresses resolve, names refer to things that
//! exist, binds are unique, certificates load. Every error, from either stage,
//! is a [`ConfigError`] naming the file, line, column and key at fault, so
//! `latch check` and a refused reload say exactly what to fix.

mod cidr;
pub mod discover;
pub mod dispatch;
mod expect;
pub mod file;
pub mod h2;
mod resilience;
mod sticky;
mod summary;
mod tls;

/// Checks for `mode = "tcp"` listeners.
mod stream;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use cidr::Cidr;
pub use discover::{DiscoverConfig, RecordKind};
pub use dispatch::{LoadConfig, LoadFormat};

pub use expect::Expect;
pub use file::{AccessLog, Balance, ListenerMode, SameSite};
pub use h2::H2Settings;
pub use resilience::{AllDown, CheckConfig, CheckKind, Passive, RetryConfig};
pub use sticky::{CookieSettings, HashKey, MIN_SECRET, Sticky};
pub use summary::summary;
pub use tls::{TlsSettings, provider};

use file::{FileConfig, ListenerSection, UpstreamSection};
use toml::Spanned;

/// A configuration that passed every check; what `latch::start` runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages and for reload).
    pub source: PathBuf,
    pub server: ServerSettings,
    pub admin: Option<AdminSettings>,
    pub listeners: Vec<ListenerConfig>,
    pub upstreams: BTreeMap<String, UpstreamConfig>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub workers: usize,
    pub grace: Duration,
    /// WebSockets open at the end of `grace` get close frames at random
    /// moments over its last `close_spread` (at most `grace`).
    pub close_spread: Duration,
    pub header_timeout: Duration,
    /// Idle time allowed between a client's requests; zero = no keep-alive.
    pub keepalive_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    /// Longest gap in a request body while it is read; zero = none.
    pub client_body_timeout: Duration,
    pub max_header_size: usize,
    pub pool_max_idle: usize,
    pub pool_idle_timeout: Duration,
    pub access_log: AccessLog,
}

#[derive(Clone)]
pub struct AdminSettings {
    pub bind: SocketAddr,
    /// When set, every admin request but `/healthz` needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token.
        f.debug_struct("AdminSettings")
            .field("bind", &self.bind)
            .field("token", &self.token.is_some())
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub bind: SocketAddr,
    /// HTTP, or L4 stream mode (one upstream, no routes).
    pub mode: ListenerMode,
    /// Tried in order; the listener's own `upstream` is the last, catch-all route.
    pub routes: Vec<Route>,
    pub tls: Option<TlsSettings>,
    pub trusted_proxies: Vec<Cidr>,
    /// Client connections open at once; `None` = no limit.
    pub max_connections: Option<usize>,
    /// Connections open at once from one client address; `None` = no limit.
    pub max_connections_per_client: Option<usize>,
    /// `proxy_protocol = true`: the peers allowed to send the header (every
    /// connection must start with one). `None`: no header is read.
    pub proxy_protocol: Option<Vec<Cidr>>,
    /// HTTP/2 to clients (ALPN `h2` with TLS, h2c without); `None`: off.
    pub http2: Option<H2Settings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Lower-case host; `*.example.com` matches any subdomain. `None` matches all.
    pub host: Option<String>,
    pub path_prefix: String,
    /// The upstream proxied to, or (with `dispatch`) the one dispatched from.
    pub upstream: String,
    /// A dispatcher route: answers the best server instead of proxying.
    pub dispatch: Option<DispatchRoute>,
}

/// What a `dispatch` route adds to a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchRoute {
    /// Seconds a client waits after a 503 (every server full or down).
    pub retry_after: u64,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub balance: Balance,
    pub servers: Vec<ServerConfig>,
    pub timeouts: Timeouts,
    pub sticky: Sticky,
    /// Set exactly when `balance = "hash"`.
    pub hash_key: Option<HashKey>,
    /// Prefix lengths that group client addresses for ip_hash.
    pub ip_prefix_v4: u8,
    pub ip_prefix_v6: u8,
    pub passive: Passive,
    pub slow_start: Option<Duration>,
    pub all_down: AllDown,
    pub check: Option<CheckConfig>,
    pub retry: RetryConfig,
    /// Servers taken from DNS, beside `servers`.
    pub discover: Option<DiscoverConfig>,
    /// PROXY protocol header sent first on each new server connection.
    pub send_proxy: Option<crate::proxy_protocol::Version>,
    /// Load polled from the servers (`load/`).
    pub load: Option<LoadConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub weight: u32,
    /// Stable identity (cookie pins refer to it); the address unless given.
    pub id: String,
    pub max_conns: Option<usize>,
    /// WebSocket upgrades a second the server takes (a token bucket with a
    /// tenth of it as burst); unset = no cap.
    pub max_upgrades_per_sec: Option<u32>,
    pub backup: bool,
    /// The DNS name it was found under; `None` for a server of `servers`.
    pub origin: Option<Arc<str>>,
    /// `"host:port"` addresses the dispatcher hands out; empty = `addr`.
    pub advertise: Vec<String>,
}

impl ServerConfig {
    /// A plain server: id = address, no limit, not a backup.
    pub fn new(addr: SocketAddr, weight: u32) -> ServerConfig {
        ServerConfig {
            addr,
            weight,
            id: addr.to_string(),
            max_conns: None,
            max_upgrades_per_sec: None,
            backup: false,
            origin: None,
            advertise: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// To the response head, then between response body reads.
    pub read: Duration,
    pub tunnel_idle: Duration,
}

/// Largest weight accepted; keeps weighted arithmetic far from overflow.
pub const MAX_WEIGHT: u32 = 10_000;
/// hyper refuses a read buffer smaller than this.
const MIN_HEADER_SIZE: usize = 8192;
/// `server.close_spread` when unset (and half of `grace` is longer).
const DEFAULT_CLOSE_SPREAD: Duration = Duration::from_secs(5);

/// What is wrong with a config file, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: `{key}`: {message}", file.display())]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the error has no position (e.g. the file is unreadable).
    pub line: usize,
    pub column: usize,
    /// Dotted path of the key at fault, e.g. `upstream.chat.servers[1].addr`.
    pub key: String,
    pub message: String,
}

impl Config {
    /// Reads and validates `path`. Relative paths inside resolve against its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read config file: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Validates `text` as if read from `origin` (used for messages and for
    /// resolving relative certificate paths).
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let v = Validator { text, origin };
        let file: FileConfig = toml::from_str(text).map_err(|e| v.toml_error(e))?;
        v.config(file)
    }
}

/// Stage two: turns the serde structs into a [`Config`], one check at a time.
struct Validator<'a> {
    text: &'a str,
    origin: &'a Path,
}

impl Validator<'_> {
    fn err(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = position(self.text, span.start);
        ConfigError {
            file: self.origin.to_path_buf(),
            line,
            column,
            key: key.into(),
            message: msg.into(),
        }
    }

    fn toml_error(&self, e: toml::de::Error) -> ConfigError {
        // toml only prints the key path when it has no source text to show.
        let mut bare = e.clone();
        bare.set_input(None);
        let rendered = bare.to_string();
        let key = rendered
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("in `")?.strip_suffix('`'))
            .unwrap_or("")
            .to_string();
        let span = e.span().unwrap_or(0..0);
        let mut key = if key.is_empty() {
            key_at(self.text, span.start)
        } else {
            key
        };
        let message = e.message().trim().to_string();
        // serde names an unknown field only in the message; put it in the key too.
        if let Some(field) = message
            .strip_prefix("unknown field `")
            .and_then(|m| m.split('`').next())
        {
            key = if key.is_empty() {
                field.to_string()
            } else {
                format!("{key}.{field}")
            };
        }
        self.err(span, key, message)
    }

    fn config(&self, f: FileConfig) -> Result<Config, ConfigError> {
        let s = &f.server;
        if s.max_header_size.get_ref().0 < MIN_HEADER_SIZE {
            return Err(self.err(
                s.max_header_size.span(),
                "server.max_header_size",
                format!("must be at least {MIN_HEADER_SIZE} bytes"),
            ));
        }
        let close_spread = match &s.close_spread {
            // Tunnels keep at least half the grace undisturbed.
            None => DEFAULT_CLOSE_SPREAD.min(s.grace.0 / 2),
            Some(c) if c.get_ref().0 > s.grace.0 => {
                return Err(self.err(
                    c.span(),
                    "server.close_spread",
                    format!("must not exceed server.grace ({:?})", s.grace.0),
                ));
            }
            Some(c) => c.get_ref().0,
        };
        let server = ServerSettings {
            workers: s.workers,
            grace: s.grace.0,
            close_spread,
            header_timeout: s.header_timeout.0,
            keepalive_timeout: s.keepalive_timeout.0,
            tls_handshake_timeout: s.tls_handshake_timeout.0,
            client_body_timeout: s.client_body_timeout.0,
            max_header_size: s.max_header_size.get_ref().0,
            pool_max_idle: s.pool_max_idle,
            pool_idle_timeout: s.pool_idle_timeout.0,
            access_log: s.access_log,
        };

        let mut upstreams = BTreeMap::new();
        for (name, up) in &f.upstreams {
            upstreams.insert(name.clone(), self.upstream(name, up)?);
        }

        let mut binds: HashSet<SocketAddr> = HashSet::new();
        let mut claim = |addr: SocketAddr, span: Range<usize>, key: &str| {
            // Port 0 asks the OS for a fresh port each time, so it never collides.
            if addr.port() != 0 && !binds.insert(addr) {
                return Err(self.err(span, key, format!("{addr} is bound twice")));
            }
            Ok(())
        };

        let admin = match &f.admin {
            Some(a) => {
                let bind = self.addr(&a.bind, "admin.bind")?;
                claim(bind, a.bind.span(), "admin.bind")?;
                let token = match (&a.token, &a.token_env) {
                    (Some(_), Some(e)) => {
                        return Err(self.err(
                            e.span(),
                            "admin.token_env",
                            "give `token` or `token_env`, not both",
                        ));
                    }
                    (Some(t), None) => Some(t.get_ref().clone()),
                    (None, Some(e)) => Some(std::env::var(e.get_ref()).map_err(|_| {
                        self.err(
                            e.span(),
                            "admin.token_env",
                            format!("environment variable {} is not set", e.get_ref()),
                        )
                    })?),
                    (None, None) => None,
                };
                if let Some(t) = a.token.as_ref().filter(|t| t.get_ref().is_empty()) {
                    return Err(self.err(t.span(), "admin.token", "must not be empty"));
                }
                Some(AdminSettings { bind, token })
            }
            None => None,
        };

        if f.listeners.is_empty() {
            return Err(self.err(0..0, "listener", "at least one [[listener]] is required"));
        }
        let mut listeners = Vec::new();
        for (i, l) in f.listeners.iter().enumerate() {
            let key = format!("listener[{i}]");
            let mut lc = self.listener(&key, l, &upstreams)?;
            let tcp = lc.mode == ListenerMode::Tcp;
            let tls = lc.tls.is_some();
            lc.http2 = self.http2(&key, l, &f.server, tls, tcp, server.max_header_size)?;
            claim(lc.bind, l.bind.span(), &format!("{key}.bind"))?;
            listeners.push(lc);
        }

        Ok(Config {
            source: self.origin.to_path_buf(),
            server,
            admin,
            listeners,
            upstreams,
        })
    }

    fn upstream(
        &self,
        name: &str,
        up: &Spanned<UpstreamSection>,
    ) -> Result<UpstreamConfig, ConfigError> {
        let key = format!("upstream.{name}");
        let u = up.get_ref();
        let discover = discover::discover(self, &key, u)?;
        if u.servers.get_ref().is_empty() && discover.is_none() {
            let span = if u.servers.span().is_empty() {
                up.span()
            } else {
                u.servers.span()
            };
            return Err(self.err(
                span,
                format!("{key}.servers"),
                "needs at least one server, or `discover`",
            ));
        }
        let mut servers: Vec<ServerConfig> = Vec::new();
        for (i, s) in u.servers.get_ref().iter().enumerate() {
            let skey = format!("{key}.servers[{i}]");
            let addr = self.addr(&s.addr, &format!("{skey}.addr"))?;
            if servers.iter().any(|o| o.addr == addr) {
                return Err(self.err(
                    s.addr.span(),
                    format!("{skey}.addr"),
                    format!("{addr} is listed twice"),
                ));
            }
            let weight = *s.weight.get_ref();
            if weight == 0 || weight > MAX_WEIGHT {
                return Err(self.err(
                    s.weight.span(),
                    format!("{skey}.weight"),
                    format!("weight must be between 1 and {MAX_WEIGHT}"),
                ));
            }
            let id =
                s.id.as_ref()
                    .map_or_else(|| addr.to_string(), |i| i.get_ref().clone());
            if let Some(other) = servers.iter().find(|o| o.id == id) {
                let span = s.id.as_ref().map_or(s.addr.span(), |i| i.span());
                return Err(self.err(
                    span,
                    format!("{skey}.id"),
                    format!("id `{id}` is already used by {}", other.addr),
                ));
            }
            let max_conns = at_least_one(self, &skey, "max_conns", &s.max_conns)?;
            let max_upgrades_per_sec =
                at_least_one(self, &skey, "max_upgrades_per_sec", &s.max_upgrades_per_sec)?;
            servers.push(ServerConfig {
                addr,
                weight,
                id,
                max_conns,
                max_upgrades_per_sec,
                backup: s.backup,
                origin: None,
                advertise: dispatch::advertise(self, &skey, &s.advertise)?,
            });
        }
        let t = &u.timeouts;
        let sticky = match &u.sticky {
            Some(s) => sticky::sticky(self, &format!("{key}.sticky"), s)?,
            None => Sticky::None,
        };
        let hash_key = sticky::hash_key(self, &key, u)?;
        match (&u.hash_key, u.balance) {
            (None, Balance::Hash) => {
                return Err(self.err(
                    up.span(),
                    format!("{key}.hash_key"),
                    "balance = \"hash\" needs hash_key, e.g. \"header:X-User\"",
                ));
            }
            (Some(h), b) if b != Balance::Hash => {
                return Err(self.err(
                    h.span(),
                    format!("{key}.hash_key"),
                    "only used with balance = \"hash\"",
                ));
            }
            _ => {}
        }
        if !servers.is_empty() && discover.is_none() && servers.iter().all(|s| s.backup) {
            return Err(self.err(
                u.servers.span(),
                format!("{key}.servers"),
                "every server is a backup; at least one must be a primary",
            ));
        }
        let (ip_prefix_v4, ip_prefix_v6) = sticky::prefixes(self, &key, u)?;
        let send_proxy = u.send_proxy.map(|v| match v {
            file::SendProxy::V1 => crate::proxy_protocol::Version::V1,
            file::SendProxy::V2 => crate::proxy_protocol::Version::V2,
        });
        Ok(UpstreamConfig {
            name: name.to_string(),
            balance: u.balance,
            servers,
            timeouts: Timeouts {
                connect: t.connect.0,
                read: t.read.0,
                tunnel_idle: t.tunnel_idle.0,
            },
            sticky,
            hash_key,
            ip_prefix_v4,
            ip_prefix_v6,
            passive: resilience::passive(u),
            slow_start: u.slow_start.map(|d| d.0).filter(|d| !d.is_zero()),
            all_down: u.all_down,
            check: match &u.check {
                Some(c) => Some(CheckConfig {
                    send_proxy,
                    ..resilience::check(self, &format!("{key}.check"), c)?
                }),
                None => None,
            },
            retry: resilience::retry(self, &format!("{key}.retry"), &u.retry)?,
            discover,
            send_proxy,
            load: match &u.load {
                Some(l) => Some(dispatch::load(self, &format!("{key}.load"), l)?),
                None => None,
            },
        })
    }

    fn listener(
        &self,
        key: &str,
        l: &ListenerSection,
        upstreams: &BTreeMap<String, UpstreamConfig>,
    ) -> Result<ListenerConfig, ConfigError> {
        let bind = self.addr(&l.bind, &format!("{key}.bind"))?;
        let mode = self.listener_mode(key, l, upstreams)?;
        let known = |name: &Spanned<String>, k: String| {
            if upstreams.contains_key(name.get_ref()) {
                Ok(name.get_ref().clone())
            } else {
                Err(self.err(
                    name.span(),
                    k,
                    format!("no upstream named `{}`", name.get_ref()),
                ))
            }
        };
        let mut routes = Vec::new();
        for (i, r) in l.route.iter().enumerate() {
            let rkey = format!("{key}.route[{i}]");
            let path_prefix = match &r.path_prefix {
                Some(p) if !p.get_ref().starts_with('/') => {
                    return Err(self.err(
                        p.span(),
                        format!("{rkey}.path_prefix"),
                        "must start with `/`",
                    ));
                }
                // Requests are matched in normal form; a prefix that is not
                // could never match.
                Some(p) => match crate::path::normalise(p.get_ref()) {
                    Ok(std::borrow::Cow::Borrowed(_)) => p.get_ref().clone(),
                    Ok(std::borrow::Cow::Owned(normal)) => {
                        return Err(self.err(
                            p.span(),
                            format!("{rkey}.path_prefix"),
                            format!(
                                "requests are routed by their normalised path, so this \
                                 prefix never matches; write `{normal}`"
                            ),
                        ));
                    }
                    Err(why) => {
                        return Err(self.err(p.span(), format!("{rkey}.path_prefix"), why));
                    }
                },
                None => "/".to_string(),
            };
            let (target, dispatch) = match (&r.upstream, &r.dispatch) {
                (Some(u), None) => (known(u, format!("{rkey}.upstream"))?, None),
                (None, Some(d)) => {
                    let secs = r
                        .retry_after
                        .as_ref()
                        .map_or(5, |d| d.get_ref().0.as_secs());
                    let retry_after = secs.max(1);
                    let name = known(d, format!("{rkey}.dispatch"))?;
                    (name, Some(DispatchRoute { retry_after }))
                }
                (Some(_), Some(d)) => {
                    return Err(self.err(
                        d.span(),
                        format!("{rkey}.dispatch"),
                        "a route either proxies (`upstream`) or dispatches (`dispatch`), not both",
                    ));
                }
                (None, None) => {
                    return Err(self.err(
                        l.bind.span(),
                        rkey,
                        "needs `upstream = \"NAME\"` or `dispatch = \"NAME\"`",
                    ));
                }
            };
            if let (Some(ra), None) = (&r.retry_after, &r.dispatch) {
                return Err(self.err(
                    ra.span(),
                    format!("{rkey}.retry_after"),
                    "only used with `dispatch`",
                ));
            }
            routes.push(Route {
                host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                path_prefix,
                upstream: target,
                dispatch,
            });
        }
        if let Some(u) = &l.upstream {
            routes.push(Route {
                host: None,
                path_prefix: "/".to_string(),
                upstream: known(u, format!("{key}.upstream"))?,
                dispatch: None,
            });
        }
        if routes.is_empty() {
            return Err(self.err(
                l.bind.span(),
                key,
                "needs `upstream = \"NAME\"` or at least one [[listener.route]]",
            ));
        }
        let tls = match &l.tls {
            Some(t) => Some(tls::load(self, &format!("{key}.tls"), t)?),
            None => None,
        };
        let mut trusted_proxies = Vec::new();
        for (i, c) in l.trusted_proxies.iter().enumerate() {
            let cidr = c.get_ref().parse().map_err(|e: String| {
                self.err(c.span(), format!("{key}.trusted_proxies[{i}]"), e)
            })?;
            trusted_proxies.push(cidr);
        }
        let at_least_one = |v: &Option<Spanned<usize>>, name: &str| match v {
            Some(m) if *m.get_ref() == 0 => Err(self.err(
                m.span(),
                format!("{key}.{name}"),
                "must be at least 1 (leave it out for no limit)",
            )),
            Some(m) => Ok(Some(*m.get_ref())),
            None => Ok(None),
        };
        let max_connections = at_least_one(&l.max_connections, "max_connections")?;
        let max_connections_per_client =
            at_least_one(&l.max_connections_per_client, "max_connections_per_client")?;
        if let (Some(max), Some(per), Some(span)) = (
            max_connections,
            max_connections_per_client,
            l.max_connections_per_client.as_ref().map(|s| s.span()),
        ) && per > max
        {
            return Err(self.err(
                span,
                format!("{key}.max_connections_per_client"),
                format!("is more than max_connections ({max}), so it would never apply"),
            ));
        }
        let proxy_protocol = self.proxy_protocol(key, l)?;
        Ok(ListenerConfig {
            bind,
            mode,
            routes,
            tls,
            trusted_proxies,
            max_connections,
            max_connections_per_client,
            proxy_protocol,
            http2: None,
        })
    }

    /// `proxy_protocol` and `proxy_protocol_from`: both or neither, so a
    /// listener never trusts headers from anyone by accident.
    fn proxy_protocol(
        &self,
        key: &str,
        l: &ListenerSection,
    ) -> Result<Option<Vec<Cidr>>, ConfigError> {
        let mut from = Vec::new();
        for (i, c) in l.proxy_protocol_from.iter().enumerate() {
            let cidr = c.get_ref().parse().map_err(|e: String| {
                self.err(c.span(), format!("{key}.proxy_protocol_from[{i}]"), e)
            })?;
            from.push(cidr);
        }
        match &l.proxy_protocol {
            Some(on) if *on.get_ref() => {
                if from.is_empty() {
                    return Err(self.err(
                        on.span(),
                        format!("{key}.proxy_protocol_from"),
                        "proxy_protocol = true needs the balancers' addresses, e.g. \
                         proxy_protocol_from = [\"10.0.0.0/8\"] ([\"0.0.0.0/0\", \"::/0\"] trusts anyone)",
                    ));
                }
                Ok(Some(from))
            }
            _ if !l.proxy_protocol_from.is_empty() => Err(self.err(
                l.proxy_protocol_from[0].span(),
                format!("{key}.proxy_protocol_from"),
                "only used with proxy_protocol = true",
            )),
            _ => Ok(None),
        }
    }

    /// `host:port` → one socket address (names are resolved once, here).
    fn addr(&self, s: &Spanned<String>, key: &str) -> Result<SocketAddr, ConfigError> {
        let text = s.get_ref();
        if let Ok(a) = text.parse() {
            return Ok(a);
        }
        let bad = |why: String| self.err(s.span(), key, format!("invalid address `{text}`: {why}"));
        if !text.contains(':') {
            return Err(bad("expected host:port, e.g. 127.0.0.1:8080".into()));
        }
        match text.to_socket_addrs() {
            Ok(mut it) => it
                .next()
                .ok_or_else(|| bad("name resolves to no address".into())),
            Err(e) => Err(bad(e.to_string())),
        }
    }

    /// A path from the file, relative to the file's folder.
    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        match self.origin.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Best-effort dotted key for a byte offset: the nearest table header above
/// it, plus the key on its line (used when toml does not name the key).
fn key_at(text: &str, offset: usize) -> String {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let local = line.split_once('=').map(|(k, _)| k.trim()).unwrap_or("");
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        .unwrap_or_default();
    match (table.is_empty(), local.is_empty() || local.starts_with('[')) {
        (true, _) => local.to_string(),
        (false, true) => table,
        (false, false) => format!("{table}.{local}"),
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{} -> {}",
            self.host.as_deref().unwrap_or("*"),
            self.path_prefix,
            self.upstream
        )?;
        if self.dispatch.is_some() {
            f.write_str(" (dispatch)")?;
        }
        Ok(())
    }
}

/// Shared with `tls.rs`, which reports certificate problems the same way.
pub(crate) trait Reporter {
    fn report(&self, span: Range<usize>, key: &str, msg: String) -> ConfigError;
    fn resolve(&self, p: &str) -> PathBuf;
}

/// A server limit that, when set, must be at least 1 (`key` under `at`):
/// left out, there is none.
pub(super) fn at_least_one<T: Copy + Default + PartialEq>(
    r: &dyn Reporter,
    at: &str,
    key: &str,
    value: &Option<Spanned<T>>,
) -> Result<Option<T>, ConfigError> {
    match value {
        Some(v) if *v.get_ref() == T::default() => Err(r.report(
            v.span(),
            &format!("{at}.{key}"),
            "must be at least 1 (leave it out for no limit)".into(),
        )),
        Some(v) => Ok(Some(*v.get_ref())),
        None => Ok(None),
    }
}

impl Reporter for Validator<'_> {
    fn report(&self, span: Range<usize>, key: &str, msg: String) -> ConfigError {
        self.err(span, key, msg)
    }
    fn resolve(&self, p: &str) -> PathBuf {
        self.path(p)
    }
}

/// Used by `latch demo`, whose certificate exists only in memory.
pub fn tls_from_key(key: Arc<rustls::sign::CertifiedKey>) -> TlsSettings {
    TlsSettings::single(key)
}
