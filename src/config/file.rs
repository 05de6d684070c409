//! Stage one of configuration: the TOML file as serde sees it.
//!
//! Every struct denies unknown fields so a typo is an error, not a silent default.
//! Values that stage two must check against other values (names, binds, paths)
//! are kept `Spanned` so its errors can point at the exact line and column.
//! Values that are checkable alone (durations, sizes) are parsed here, and toml
//! attaches the position to their errors for us.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    pub admin: Option<AdminSection>,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerSection>,
    #[serde(default, rename = "upstream")]
    pub upstreams: BTreeMap<String, Spanned<UpstreamSection>>,
}

/// `[server]`: process-wide settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Runtime worker threads; 0 = one per core.
    #[serde(default)]
    pub workers: usize,
    /// How long connections and tunnels may drain on stop.
    #[serde(default = "default_grace")]
    pub grace: Dur,
    /// WebSockets still open when the grace ends get their close frames
    /// spread over its last this-long; default 5 s or half of `grace`.
    #[serde(default)]
    pub close_spread: Option<Spanned<Dur>>,
    /// Time a client has to send a complete request head (slowloris guard).
    #[serde(default = "default_header_timeout")]
    pub header_timeout: Dur,
    /// How long a client connection may sit idle between requests (nginx
    /// `keepalive_timeout`, HAProxy `timeout http-keep-alive`); "0" turns
    /// keep-alive off.
    #[serde(default = "default_keepalive_timeout")]
    pub keepalive_timeout: Dur,
    /// Time a client has to complete a TLS handshake.
    #[serde(default = "default_handshake_timeout")]
    pub tls_handshake_timeout: Dur,
    /// Longest a client may go without sending request body bytes while the
    /// body is being read (nginx `client_body_timeout`); "0" turns it off.
    #[serde(default = "default_client_body_timeout")]
    pub client_body_timeout: Dur,
    /// Largest request head accepted (request line to blank line, exact);
    /// bigger gets 431.
    #[serde(default = "default_max_header_size")]
    pub max_header_size: Spanned<Size>,
    /// One line per request and per closed tunnel: "off", "text" or "json".
    #[serde(default)]
    pub access_log: AccessLog,
    /// Idle keep-alive connections to backends kept per backend.
    #[serde(default = "default_pool_idle_per_backend")]
    pub pool_max_idle: usize,
    /// How long an idle pooled backend connection is kept.
    #[serde(default = "default_pool_idle_timeout")]
    pub pool_idle_timeout: Dur,
    /// HTTP/2 to clients (`config/h2.rs`, README "HTTP/2"): on TLS
    /// listeners by ALPN (default on), on plain ones h2c with prior
    /// knowledge (default off). A listener's own keys win over `[server]`'s.
    pub http2: Option<Spanned<bool>>,
    pub h2_max_concurrent_streams: Option<Spanned<u32>>,
    pub h2_initial_window_size: Option<Spanned<Size>>,
    pub h2_connection_window_size: Option<Spanned<Size>>,
    pub h2_max_header_list_size: Option<Spanned<Size>>,
    pub h2_max_pending_accept_reset_streams: Option<Spanned<usize>>,
    pub h2_max_local_error_reset_streams: Option<Spanned<usize>>,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            workers: 0,
            grace: default_grace(),
            close_spread: None,
            header_timeout: default_header_timeout(),
            keepalive_timeout: default_keepalive_timeout(),
            tls_handshake_timeout: default_handshake_timeout(),
            client_body_timeout: default_client_body_timeout(),
            max_header_size: default_max_header_size(),
            access_log: AccessLog::default(),
            pool_max_idle: default_pool_idle_per_backend(),
            pool_idle_timeout: default_pool_idle_timeout(),
            http2: None,
            h2_max_concurrent_streams: None,
            h2_initial_window_size: None,
            h2_connection_window_size: None,
            h2_max_header_list_size: None,
            h2_max_pending_accept_reset_streams: None,
            h2_max_local_error_reset_streams: None,
        }
    }
}

fn default_grace() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_header_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
/// nginx's default.
fn default_keepalive_timeout() -> Dur {
    Dur(Duration::from_secs(75))
}
fn default_handshake_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
/// nginx's default; well above socket.io's 45 s worst gap on a long-poll.
fn default_client_body_timeout() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_max_header_size() -> Spanned<Size> {
    Spanned::new(0..0, Size(64 * 1024))
}
/// Above the requests in flight a backend usually has: a connection that
/// comes back to a full pool is closed, and the next request opens one.
/// With 64, 256 multiplexed HTTP/2 streams over two backends opened a new
/// connection for one request in five and cost about 1.5x the CPU per
/// request.
fn default_pool_idle_per_backend() -> usize {
    256
}
fn default_pool_idle_timeout() -> Dur {
    Dur(Duration::from_secs(60))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLog {
    #[default]
    Off,
    Text,
    Json,
}

/// `[admin]`: the operator's listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub bind: Spanned<String>,
    /// Bearer token required on every admin request (except `/healthz`).
    pub token: Option<Spanned<String>>,
    /// Name of an environment variable holding the token.
    pub token_env: Option<Spanned<String>>,
}

/// One `[[listener]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    pub bind: Spanned<String>,
    /// `"http"` (the default) or `"tcp"`: L4 stream mode (`stream/`).
    pub mode: Option<Spanned<ListenerMode>>,
    /// The upstream for every request, unless routes are given.
    pub upstream: Option<Spanned<String>>,
    #[serde(default)]
    pub route: Vec<RouteSection>,
    pub tls: Option<TlsSection>,
    /// Peers (CIDRs) whose `X-Forwarded-*` headers are believed and extended.
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// Most client connections open at once; at the limit the listener
    /// stops accepting until one closes. Unset = no limit.
    pub max_connections: Option<Spanned<usize>>,
    /// Most connections open at once from one client address; more are
    /// closed at once. Unset = no limit.
    pub max_connections_per_client: Option<Spanned<usize>>,
    /// Every connection starts with a PROXY protocol header (v1 or v2) from
    /// an L4 balancer, naming the real client.
    pub proxy_protocol: Option<Spanned<bool>>,
    /// Peers (CIDRs) allowed to send that header; required with it.
    #[serde(default)]
    pub proxy_protocol_from: Vec<Spanned<String>>,
    /// HTTP/2 to clients (`config/h2.rs`, README "HTTP/2"): on TLS
    /// listeners by ALPN (default on), on plain ones h2c with prior
    /// knowledge (default off). A listener's own keys win over `[server]`'s.
    pub http2: Option<Spanned<bool>>,
    pub h2_max_concurrent_streams: Option<Spanned<u32>>,
    pub h2_initial_window_size: Option<Spanned<Size>>,
    pub h2_connection_window_size: Option<Spanned<Size>>,
    pub h2_max_header_list_size: Option<Spanned<Size>>,
    pub h2_max_pending_accept_reset_streams: Option<Spanned<usize>>,
    pub h2_max_local_error_reset_streams: Option<Spanned<usize>>,
}

/// What a listener speaks to its clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerMode {
    /// HTTP/1.1 (and WebSocket upgrades), routed by host and path.
    #[default]
    Http,
    /// Raw TCP (nginx `stream`, HAProxy `mode tcp`): each connection's bytes go
    /// to one server of the listener's `upstream`, after TLS if `tls` is set.
    Tcp,
}

/// One `[[listener.route]]`: first match wins, in file order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// Exact host (`chat.example.com`) or a leading wildcard (`*.example.com`).
    pub host: Option<String>,
    pub path_prefix: Option<Spanned<String>>,
    /// Where matching requests are proxied; or else `dispatch`.
    pub upstream: Option<Spanned<String>>,
    /// Answer with the best server of this upstream as JSON instead of
    /// proxying (the dispatcher, `dispatch/`).
    pub dispatch: Option<Spanned<String>>,
    /// `dispatch` only: the `Retry-After` of its 503 when every server is
    /// full or down (default 5 s).
    pub retry_after: Option<Spanned<Dur>>,
}

/// `tls = { cert, key }` plus optional per-SNI certificates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
    #[serde(default)]
    pub sni: Vec<SniSection>,
}

/// `[[listener.tls.sni]]`: a certificate served to clients asking for `names`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniSection {
    pub names: Spanned<Vec<String>>,
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

/// `[upstream.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    #[serde(default)]
    pub balance: Balance,
    /// Static servers; may be left out when `discover` is given.
    #[serde(default = "no_servers")]
    pub servers: Spanned<Vec<ServerEntry>>,
    /// Servers taken from DNS, beside or instead of `servers`.
    pub discover: Option<Spanned<super::discover::DiscoverSection>>,
    /// The DNS server `discover` asks ("ip:port"); default: resolv.conf's.
    pub resolver: Option<Spanned<String>>,
    #[serde(default)]
    pub timeouts: TimeoutsSection,
    pub sticky: Option<StickySection>,
    /// For `balance = "hash"`: `"ip"`, `"header:NAME"`, `"cookie:NAME"` or `"query:NAME"`.
    pub hash_key: Option<Spanned<String>>,
    /// Client addresses are grouped by this prefix for `ip_hash` (32 = each address alone).
    #[serde(default = "default_prefix_v4")]
    pub ip_prefix_v4: Spanned<u8>,
    #[serde(default = "default_prefix_v6")]
    pub ip_prefix_v6: Spanned<u8>,
    /// Passive checks: this many failures within `fail_timeout` mark a server
    /// down for `fail_timeout` (nginx semantics; 0 disables).
    #[serde(default = "default_max_fails")]
    pub max_fails: u32,
    #[serde(default = "default_fail_timeout")]
    pub fail_timeout: Dur,
    /// A server coming back up ramps its weight from ~10% to 100% over this.
    pub slow_start: Option<Dur>,
    /// What to do when every server is down.
    #[serde(default)]
    pub all_down: AllDown,
    pub check: Option<CheckSection>,
    #[serde(default)]
    pub retry: RetrySection,
    /// Put a PROXY protocol header naming the client in front of every new
    /// connection to the servers (HAProxy `send-proxy`/`send-proxy-v2`).
    pub send_proxy: Option<SendProxy>,
    /// Poll every server for the load it carries (`load/`).
    pub load: Option<super::dispatch::LoadSection>,
}

/// `send_proxy = "v1" | "v2"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendProxy {
    V1,
    V2,
}

fn no_servers() -> Spanned<Vec<ServerEntry>> {
    Spanned::new(0..0, Vec::new())
}

fn default_max_fails() -> u32 {
    1
}
fn default_fail_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

/// Behaviour when no server is up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum AllDown {
    /// Keep serving, best effort, through the servers anyway (HAProxy, Pingora).
    #[default]
    #[serde(rename = "serve")]
    Serve,
    /// Answer 503 at once.
    #[serde(rename = "503")]
    Reject,
}

/// `[upstream.NAME.check]`: active health checks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSection {
    #[serde(rename = "type")]
    pub kind: CheckKind,
    #[serde(default = "default_interval")]
    pub interval: Spanned<Dur>,
    #[serde(default = "default_check_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_rise")]
    pub rise: Spanned<u32>,
    #[serde(default = "default_fall")]
    pub fall: Spanned<u32>,
    /// Probe this port instead of the server's.
    pub port: Option<u16>,
    /// State before the first probe answers.
    #[serde(default)]
    pub start: StartState,
    pub path: Option<String>,
    pub method: Option<Spanned<String>>,
    pub host: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
    /// Raw request bytes for `http` (like nginx's `check_http_send`).
    pub send: Option<Spanned<String>>,
    #[serde(default)]
    pub expect: Vec<Spanned<String>>,
    pub expect_body: Option<String>,
    /// `tls`: server name to send.
    pub sni: Option<String>,
    /// `tls`: verify the server's chain against these PEM certificates.
    pub ca: Option<Spanned<String>>,
}

fn default_interval() -> Spanned<Dur> {
    Spanned::new(0..0, Dur(Duration::from_secs(3)))
}
fn default_check_timeout() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_rise() -> Spanned<u32> {
    Spanned::new(0..0, 2)
}
fn default_fall() -> Spanned<u32> {
    Spanned::new(0..0, 3)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    Tcp,
    Http,
    Ws,
    Tls,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartState {
    #[default]
    Up,
    Down,
}

/// `[upstream.NAME.retry]`: nginx `proxy_next_upstream`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    #[serde(default = "default_retry_on")]
    pub on: Spanned<Vec<Spanned<String>>>,
    /// Attempts in all, first included; 0 = until every server was tried.
    #[serde(default)]
    pub tries: u32,
    /// Time budget for all attempts; "0" = none.
    #[serde(default = "zero_duration")]
    pub timeout: Dur,
    /// Largest request body kept for replay; a bigger one is streamed once.
    #[serde(default = "default_max_body")]
    pub max_body: Size,
}

impl Default for RetrySection {
    fn default() -> Self {
        RetrySection {
            on: default_retry_on(),
            tries: 0,
            timeout: zero_duration(),
            max_body: default_max_body(),
        }
    }
}

fn default_retry_on() -> Spanned<Vec<Spanned<String>>> {
    let v = ["error", "timeout"].map(|s| Spanned::new(0..0, s.to_string()));
    Spanned::new(0..0, v.into())
}
fn zero_duration() -> Dur {
    Dur(Duration::ZERO)
}
fn default_max_body() -> Size {
    Size(64 * 1024)
}

fn default_prefix_v4() -> Spanned<u8> {
    Spanned::new(0..0, 32)
}
fn default_prefix_v6() -> Spanned<u8> {
    Spanned::new(0..0, 128)
}

/// `[upstream.NAME.sticky]`: how a client session stays on one backend.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickySection {
    #[serde(default)]
    pub mode: StickyMode,
    #[serde(default = "default_cookie_name")]
    pub cookie: Spanned<String>,
    /// HMAC key, inline (prefer `secret_env`, which keeps it out of the file).
    pub secret: Option<Spanned<String>>,
    /// Name of the environment variable holding the HMAC key.
    pub secret_env: Option<Spanned<String>>,
    #[serde(default = "default_cookie_path")]
    pub path: String,
    pub domain: Option<String>,
    /// Cookie lifetime for the browser *and* the oldest cookie latch accepts.
    pub max_age: Option<Dur>,
    #[serde(default)]
    pub secure: bool,
    #[serde(default = "yes")]
    pub http_only: bool,
    pub same_site: Option<Spanned<SameSite>>,
    /// Forward latch's cookie to the backend too (default: removed, like HAProxy `indirect`).
    #[serde(default)]
    pub keep_cookie: bool,
}

fn default_cookie_name() -> Spanned<String> {
    Spanned::new(0..0, "LATCH".to_string())
}
fn default_cookie_path() -> String {
    "/".to_string()
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StickyMode {
    #[default]
    Cookie,
    IpHash,
    None,
    /// The signed cookie, and the same signed tag in the Engine.IO `sid` /
    /// SignalR connection token (clients without a cookie jar).
    SessionId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

/// How an upstream picks a server for a new request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Smooth weighted round robin, as nginx does it.
    #[default]
    RoundRobin,
    /// Fewest requests in flight plus open tunnels, relative to weight.
    LeastConn,
    /// Two random servers (by weight), the less loaded wins.
    Random,
    /// Consistent hash (Maglev) of the client address.
    IpHash,
    /// Consistent hash (Maglev) of `hash_key`.
    Hash,
}

/// One entry of `servers = [...]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerEntry {
    pub addr: Spanned<String>,
    #[serde(default = "default_weight")]
    pub weight: Spanned<u32>,
    /// Stable name for sticky cookies; defaults to `addr`. Set it to keep
    /// sessions pinned when a server moves to another address.
    pub id: Option<Spanned<String>>,
    /// Most requests + tunnels at once; unset = no limit.
    pub max_conns: Option<Spanned<usize>>,
    /// Most WebSocket upgrades a second (burst: a tenth); unset = no cap.
    pub max_upgrades_per_sec: Option<Spanned<u32>>,
    /// Takes traffic only while no primary server can.
    #[serde(default)]
    pub backup: bool,
    /// The addresses the dispatcher hands to clients (`"host:port"`); the
    /// first is the answer's `host`/`port`. Default: `addr`.
    #[serde(default)]
    pub advertise: Vec<Spanned<String>>,
}

fn default_weight() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

/// `[upstream.NAME.timeouts]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSection {
    #[serde(default = "default_connect")]
    pub connect: Dur,
    /// Time from sending the request to the response head, and then
    /// between two reads of the response body (nginx `proxy_read_timeout`).
    #[serde(default = "default_read")]
    pub read: Dur,
    /// A tunnel with no bytes either way for this long is closed.
    #[serde(default = "default_tunnel_idle")]
    pub tunnel_idle: Dur,
}

impl Default for TimeoutsSection {
    fn default() -> Self {
        TimeoutsSection {
            connect: default_connect(),
            read: default_read(),
            tunnel_idle: default_tunnel_idle(),
        }
    }
}

fn default_connect() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_read() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_tunnel_idle() -> Dur {
    Dur(Duration::from_secs(3600))
}

// === impl Dur ===

/// A duration written as `"500ms"`, `"3s"`, `"1m30s"`, `"2h"` or `"1d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map(Dur).map_err(de::Error::custom)
    }
}

/// Parses a sequence of `<number><unit>` parts; units ms, s, m, h, d.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad =
        || format!("invalid duration `{text}`: expected e.g. \"500ms\", \"3s\", \"1m30s\", \"2h\"");
    let mut rest = text.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86400)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(unit);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

// === impl Size ===

/// A byte count written as an integer or `"64k"`, `"1m"` (KiB/MiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub usize);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a byte size such as 65536 or \"64k\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                usize::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = t.strip_suffix('k') {
        (n, 1024)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 1024 * 1024)
    } else {
        (t.as_str(), 1)
    };
    num.trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("invalid size `{text}`: expected e.g. 65536, \"64k\" or \"1m\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        for bad in ["", "3x", "s", "3", "-1s", "1.5s", "3 s x"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert!(parse_size("lots").is_err());
    }
}
