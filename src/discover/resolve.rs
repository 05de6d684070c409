//! One DNS resolution of a `discover` spec with hickory-resolver: the name's
//! A, AAAA or SRV records become [`ServerConfig`]s, with the TTL that says
//! when to ask again. Failures are sorted into what an operator needs to
//! tell apart (`nxdomain`, `empty`, `error`); the caller decides what a
//! failure does (it keeps the last good set).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};

use crate::config::{DiscoverConfig, MAX_WEIGHT, RecordKind, ServerConfig};

/// What one resolution found.
#[derive(Debug)]
pub enum Outcome {
    /// At least one server, sorted by id; `ttl` is the smallest record TTL.
    Found {
        servers: Vec<ServerConfig>,
        ttl: Duration,
    },
    /// Nothing usable: the last good set stays.
    Failed { kind: FailKind, why: String },
}

/// Why a resolution found no server, as the metric labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    /// The name does not exist.
    NxDomain,
    /// The name exists but has no record of the type (or none usable).
    Empty,
    /// No answer: timeout, refused, network error.
    Error,
}

impl FailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailKind::NxDomain => "nxdomain",
            FailKind::Empty => "empty",
            FailKind::Error => "error",
        }
    }
}

/// A resolver for one spec, with the DNS server it names (or the system's).
pub struct Resolver {
    inner: TokioResolver,
    spec: DiscoverConfig,
    origin: Arc<str>,
}

impl Resolver {
    /// Fails only when the system's resolver configuration cannot be read.
    pub fn new(spec: &DiscoverConfig) -> Result<Resolver, String> {
        let mut builder = match spec.resolver {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![server]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio()
                .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?,
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = spec.timeout;
        opts.attempts = 1;
        opts.try_tcp_on_error = true;
        let inner = builder
            .build()
            .map_err(|e| format!("cannot set up the resolver: {e}"))?;
        Ok(Resolver {
            inner,
            spec: spec.clone(),
            origin: Arc::from(spec.name.as_str()),
        })
    }

    /// Asks the DNS server now (never from cache), within the spec's timeout.
    pub async fn resolve(&self) -> Outcome {
        // Re-resolution is timed by latch, so an answer cached by the
        // resolver would only hide a change.
        self.inner.clear_cache();
        let budget = self.spec.timeout * 2;
        match tokio::time::timeout(budget, self.lookup()).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Failed {
                kind: FailKind::Error,
                why: format!("no answer within {budget:?}"),
            },
        }
    }

    async fn lookup(&self) -> Outcome {
        let found = match self.spec.kind {
            RecordKind::A => self.addresses(RecordType::A).await,
            RecordKind::Aaaa => self.addresses(RecordType::AAAA).await,
            RecordKind::Srv => self.srv().await,
        };
        let (servers, ttl) = match found {
            Ok(found) => found,
            Err(e) => return failed(&e),
        };
        if servers.is_empty() {
            return Outcome::Failed {
                kind: FailKind::Empty,
                why: "the answer has no usable record".into(),
            };
        }
        Outcome::Found { servers, ttl }
    }

    async fn addresses(
        &self,
        rtype: RecordType,
    ) -> Result<(Vec<ServerConfig>, Duration), NetError> {
        let port = self.spec.port.unwrap_or(0);
        let lookup = self.inner.lookup(self.spec.name.as_str(), rtype).await?;
        let mut ttl = u32::MAX;
        let mut servers = Vec::new();
        for r in lookup.answers() {
            let ip: IpAddr = match &r.data {
                RData::A(a) if rtype == RecordType::A => IpAddr::V4(a.0),
                RData::AAAA(a) if rtype == RecordType::AAAA => IpAddr::V6(a.0),
                _ => continue,
            };
            ttl = ttl.min(r.ttl);
            let mut s = ServerConfig::new(SocketAddr::new(ip, port), self.spec.weight);
            s.max_conns = self.spec.max_conns;
            s.max_upgrades_per_sec = self.spec.max_upgrades_per_sec;
            s.origin = Some(self.origin.clone());
            servers.push(s);
        }
        Ok((sorted(servers), secs(ttl)))
    }

    /// SRV: each target is resolved to its addresses; the id is
    /// `target:port`, so a target that moves keeps its cookie pins. Targets
    /// of the lowest priority are primaries, the others backups (RFC 2782).
    async fn srv(&self) -> Result<(Vec<ServerConfig>, Duration), NetError> {
        let lookup = self
            .inner
            .lookup(self.spec.name.as_str(), RecordType::SRV)
            .await?;
        let mut ttl = u32::MAX;
        let mut records = Vec::new();
        for r in lookup.answers() {
            if let RData::SRV(srv) = &r.data {
                ttl = ttl.min(r.ttl);
                records.push(srv.clone());
            }
        }
        let best = records.iter().map(|s| s.priority).min().unwrap_or(0);
        let mut servers: Vec<ServerConfig> = Vec::new();
        for srv in records {
            // A target of "." means the service is not offered (RFC 2782).
            if srv.target.is_root() || srv.port == 0 {
                continue;
            }
            let target = srv.target.to_utf8();
            let target = target.strip_suffix('.').unwrap_or(&target).to_string();
            let ips = match self.inner.lookup_ip(srv.target.clone()).await {
                Ok(ips) => ips,
                // One target that does not resolve leaves the others usable.
                Err(e) if e.is_no_records_found() => continue,
                Err(e) => return Err(e),
            };
            for r in ips.as_lookup().answers() {
                ttl = ttl.min(r.ttl);
            }
            // One server per target: its first address (sorted, so every
            // instance picks the same one).
            let Some(ip) = ips.iter().min() else { continue };
            let id = format!("{target}:{}", srv.port);
            if servers.iter().any(|s| s.id == id) {
                continue;
            }
            let weight = u32::from(srv.weight).clamp(1, MAX_WEIGHT);
            let mut s = ServerConfig::new(SocketAddr::new(ip, srv.port), weight);
            s.id = id;
            s.max_conns = self.spec.max_conns;
            s.max_upgrades_per_sec = self.spec.max_upgrades_per_sec;
            s.backup = srv.priority > best;
            s.origin = Some(self.origin.clone());
            servers.push(s);
        }
        Ok((sorted(servers), secs(ttl)))
    }
}

/// Most servers taken from one name; the rest of a larger answer is left
/// out (the first by id, so every instance keeps the same ones).
pub const MAX_SERVERS: usize = 1024;

/// By id, without duplicates: the same answer in any order is the same set.
fn sorted(mut servers: Vec<ServerConfig>) -> Vec<ServerConfig> {
    servers.sort_by(|a, b| a.id.cmp(&b.id));
    servers.dedup_by(|a, b| a.id == b.id);
    servers.truncate(MAX_SERVERS);
    servers
}

fn secs(ttl: u32) -> Duration {
    Duration::from_secs(u64::from(if ttl == u32::MAX { 0 } else { ttl }))
}

fn failed(e: &NetError) -> Outcome {
    let kind = if e.is_nx_domain() {
        FailKind::NxDomain
    } else if e.is_no_records_found() {
        FailKind::Empty
    } else {
        FailKind::Error
    };
    Outcome::Failed {
        kind,
        why: e.to_string(),
    }
}
