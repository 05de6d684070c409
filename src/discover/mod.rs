//! DNS discovery: upstreams that take their servers from a name.
//!
//! For each upstream with `discover`, a task resolves the name
//! (`resolve.rs`, hickory-resolver), waits the records' TTL clamped to
//! `[min_interval, max_interval]`, and resolves again. When the set of
//! servers changes, it takes the generation lock — the one a reload holds
//! from preparing to committing, so the two take turns — records the new
//! set in the [`Registry`], and swaps in a new routing table in which that
//! upstream is rebuilt from the config in force plus its discovered servers
//! (the other upstreams are kept as they are). The pool side is a reload's:
//! servers that stay are the same pool servers (counts, health, slow
//! start, pins), new ones join with slow start, and removed ones drain
//! through [`crate::backend::Pool::retire`] with the config's `grace`.
//!
//! A failed lookup, NXDOMAIN or an empty answer changes nothing: the last
//! good set stays, the failure is logged once (and its end once), counted in
//! `latch_dns_resolutions`, and shown in `/status`; the name is asked again
//! after `min_interval`, doubling up to `max_interval`.
//!
//! The registry outlives reloads: a reload keeps an upstream's discovered
//! servers while its `discover` spec is unchanged, so a reload never drops
//! them for the moment it takes to resolve again.

pub mod resolve;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Inner;
use crate::backend::ServerKey;
use crate::config::{Config, DiscoverConfig, ServerConfig};
use crate::metrics::DnsStatus;
use crate::proxy::{Routing, Upstream};
use resolve::{Outcome, Resolver};

/// The last good set of servers of every discovering upstream, and the
/// task that resolves each.
#[derive(Debug, Default)]
pub struct Registry {
    found: Mutex<HashMap<String, Found>>,
    /// By upstream: the spec its task resolves, and what stops the task.
    tasks: Mutex<HashMap<String, (DiscoverConfig, CancellationToken)>>,
}

#[derive(Debug, Clone)]
struct Found {
    /// The spec they were found with; a reload that changes it drops them.
    spec: DiscoverConfig,
    servers: Vec<ServerConfig>,
}

impl Registry {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Found>> {
        self.found.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn tasks(&self) -> MutexGuard<'_, HashMap<String, (DiscoverConfig, CancellationToken)>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `config` with each discovering upstream's last good set after its
    /// static servers (a discovered server with the address or id of a
    /// static one is left out: the static one wins).
    pub fn effective(&self, config: &Config) -> Config {
        let map = self.map();
        let mut out = config.clone();
        for (name, up) in out.upstreams.iter_mut() {
            let Some(spec) = &up.discover else { continue };
            let Some(found) = map.get(name).filter(|f| &f.spec == spec) else {
                continue;
            };
            for s in &found.servers {
                if !up.servers.iter().any(|o| o.addr == s.addr || o.id == s.id) {
                    up.servers.push(s.clone());
                }
            }
        }
        out
    }

    /// Records `servers` as `upstream`'s set; false when it is the set
    /// already recorded for this spec.
    fn store(&self, upstream: &str, spec: &DiscoverConfig, servers: Vec<ServerConfig>) -> bool {
        let mut map = self.map();
        if let Some(f) = map.get(upstream)
            && &f.spec == spec
            && f.servers == servers
        {
            return false;
        }
        let spec = spec.clone();
        map.insert(upstream.to_string(), Found { spec, servers });
        true
    }

    /// How many servers `upstream` has from DNS now.
    fn count(&self, upstream: &str) -> usize {
        self.map().get(upstream).map_or(0, |f| f.servers.len())
    }

    /// Forgets sets whose upstream no longer discovers with the same spec.
    fn retain(&self, config: &Config) {
        self.map().retain(|name, f| {
            config.upstreams.get(name).and_then(|u| u.discover.as_ref()) == Some(&f.spec)
        });
    }
}

/// Resolves every discovering upstream of `config` once, at the same time,
/// before latch starts serving, so that it starts with its servers. A name
/// that fails here is logged and tried again by its task.
pub(crate) async fn first(config: &Config, registry: &Registry, metrics: &crate::metrics::Metrics) {
    let mut lookups = tokio::task::JoinSet::new();
    for (name, up) in &config.upstreams {
        let Some(spec) = up.discover.clone() else {
            continue;
        };
        let name = name.clone();
        lookups.spawn(async move {
            let outcome = match Resolver::new(&spec) {
                Ok(r) => r.resolve().await,
                Err(why) => Outcome::Failed {
                    kind: resolve::FailKind::Error,
                    why,
                },
            };
            (name, spec, outcome)
        });
    }
    while let Some(done) = lookups.join_next().await {
        let Ok((name, spec, outcome)) = done else {
            continue;
        };
        match outcome {
            Outcome::Found { servers, ttl } => {
                info!(upstream = %name, name = %spec.name, servers = servers.len(), "discovered servers");
                metrics.dns_resolution(&name, "ok");
                let next = interval(&spec, ttl);
                let n = servers.len();
                registry.store(&name, &spec, servers);
                metrics.set_dns_status(&name, status(&spec, true, "ok".into(), n, 0, next));
            }
            Outcome::Failed { kind, why } => {
                warn!(upstream = %name, name = %spec.name, result = kind.as_str(), %why, "DNS discovery failed; starting without these servers");
                metrics.dns_resolution(&name, kind.as_str());
                let result = format!("{}: {why}", kind.as_str());
                metrics
                    .set_dns_status(&name, status(&spec, false, result, 0, 1, spec.min_interval));
            }
        }
    }
}

/// The wait before the next resolution after a success.
fn interval(spec: &DiscoverConfig, ttl: Duration) -> Duration {
    ttl.clamp(spec.min_interval, spec.max_interval)
}

/// The wait after `failures` failures in a row: `min_interval`, doubling up
/// to `max_interval`.
fn backoff(spec: &DiscoverConfig, failures: u64) -> Duration {
    let doublings = u32::try_from(failures.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(16);
    spec.min_interval
        .saturating_mul(1 << doublings)
        .min(spec.max_interval)
}

fn status(
    spec: &DiscoverConfig,
    ok: bool,
    result: String,
    servers: usize,
    failures: u64,
    next: Duration,
) -> DnsStatus {
    DnsStatus {
        name: spec.name.clone(),
        kind: spec.kind.as_str(),
        resolver: spec
            .resolver
            .map_or_else(|| "system".to_string(), |a| a.to_string()),
        last_unix: Some(crate::admin::status::unix(SystemTime::now())),
        ok,
        result,
        servers,
        failures_in_a_row: failures,
        next_in_secs: next.as_secs_f64(),
    }
}

// === impl Inner ===

impl Inner {
    /// Makes one discovery task run for each upstream of `config` with
    /// `discover`: a task whose spec is unchanged goes on (a reload does not
    /// restart it, so reloads in a row never starve it), a changed or
    /// removed one stops, a new one starts. Called by commit, under the
    /// generation lock; every task stops with latch.
    pub(crate) fn spawn_discovery(&self, config: &Config) {
        self.discovery.retain(config);
        let discovers = |name: &str| config.upstreams.get(name).and_then(|u| u.discover.as_ref());
        self.shared
            .metrics
            .retain_dns(&|name| discovers(name).is_some());
        let mut tasks = self.discovery.tasks();
        tasks.retain(|name, (spec, stop)| {
            let same = discovers(name) == Some(&*spec);
            if !same {
                stop.cancel();
            }
            same
        });
        for (name, up) in &config.upstreams {
            let Some(spec) = up.discover.clone() else {
                continue;
            };
            if tasks.contains_key(name) {
                continue;
            }
            let stop = self.stop_accepting.child_token();
            tasks.insert(name.clone(), (spec.clone(), stop.clone()));
            let task = Task {
                inner: self.this.clone(),
                upstream: name.clone(),
                spec,
                stop,
            };
            self.conns.spawn(task.run());
        }
    }

    /// Puts `servers` in force for `upstream` if they differ from its set
    /// and the config in force still discovers it with `spec`: a new
    /// routing table, checkers for the new set, removed servers drained.
    fn rediscovered(&self, upstream: &str, spec: &DiscoverConfig, servers: Vec<ServerConfig>) {
        let mut current = self.generation();
        let in_force = current
            .config
            .upstreams
            .get(upstream)
            .and_then(|u| u.discover.as_ref());
        if in_force != Some(spec) {
            return; // a reload changed or removed it; its new task takes over
        }
        let before = self.discovery.count(upstream);
        if !self.discovery.store(upstream, spec, servers) {
            return;
        }
        let config = current.config.clone();
        let effective = self.discovery.effective(&config);
        let Some(up_config) = effective.upstreams.get(upstream) else {
            return;
        };
        let shared = &self.shared;
        let known: HashSet<ServerKey> = shared
            .pool
            .all()
            .iter()
            .map(|s| (s.upstream.clone(), s.id.clone(), s.addr))
            .collect();
        // Only this upstream is rebuilt: the others keep their placement
        // state (round-robin position and the like) as it is.
        match Upstream::new(up_config, &shared.pool, &shared.metrics) {
            Ok(rebuilt) => {
                // Servers that appeared ramp up, as ones coming back do.
                for b in &rebuilt.backends {
                    if !known.contains(&(b.upstream.clone(), b.id.clone(), b.addr)) {
                        b.condition.start_ramp();
                    }
                }
                let old = shared.routing.load_full();
                let mut upstreams = old.upstreams.clone();
                upstreams.insert(upstream.to_string(), Arc::new(rebuilt));
                let next = Routing {
                    upstreams,
                    listeners: old.listeners.clone(),
                    server: old.server.clone(),
                };
                shared.routing.store(Arc::new(next));
                info!(upstream, name = %spec.name, from = before, to = self.discovery.count(upstream), "servers from DNS changed");
                self.apply_pool(&mut current, &config);
            }
            Err(e) => warn!(upstream, error = %e, "servers from DNS not applied"),
        }
    }
}

/// One upstream's resolve-wait loop.
struct Task {
    inner: Weak<Inner>,
    upstream: String,
    spec: DiscoverConfig,
    stop: CancellationToken,
}

impl Task {
    async fn run(self) {
        let resolver = match Resolver::new(&self.spec) {
            Ok(r) => r,
            Err(why) => {
                warn!(upstream = %self.upstream, %why, "DNS discovery cannot start");
                if let Some(inner) = self.inner.upgrade() {
                    let result = format!("error: {why}");
                    let s = status(&self.spec, false, result, 0, 1, Duration::ZERO);
                    inner.shared.metrics.set_dns_status(&self.upstream, s);
                }
                return;
            }
        };
        let mut failures: u64 = 0;
        loop {
            let outcome = tokio::select! {
                _ = self.stop.cancelled() => return,
                o = resolver.resolve() => o,
            };
            let Some(inner) = self.inner.upgrade() else {
                return;
            };
            let metrics = inner.shared.metrics.clone();
            let up = self.upstream.as_str();
            let wait = match outcome {
                Outcome::Found { servers, ttl } => {
                    if failures > 0 {
                        info!(upstream = up, name = %self.spec.name, after = failures, "DNS discovery recovered");
                    }
                    failures = 0;
                    metrics.dns_resolution(up, "ok");
                    let n = servers.len();
                    // The generation lock can be held by a reload: wait for
                    // it off the async workers.
                    let (task_inner, name, spec) =
                        (inner.clone(), self.upstream.clone(), self.spec.clone());
                    let _ = tokio::task::spawn_blocking(move || {
                        task_inner.rediscovered(&name, &spec, servers)
                    })
                    .await;
                    let next = interval(&self.spec, ttl);
                    metrics.set_dns_status(up, status(&self.spec, true, "ok".into(), n, 0, next));
                    next
                }
                Outcome::Failed { kind, why } => {
                    failures += 1;
                    if failures == 1 {
                        warn!(upstream = up, name = %self.spec.name, result = kind.as_str(), %why, "DNS discovery failed; keeping the last good servers");
                    }
                    metrics.dns_resolution(up, kind.as_str());
                    let next = backoff(&self.spec, failures);
                    let kept = inner.discovery.count(up);
                    let result = format!("{}: {why}", kind.as_str());
                    metrics.set_dns_status(
                        up,
                        status(&self.spec, false, result, kept, failures, next),
                    );
                    next
                }
            };
            drop(inner);
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RecordKind;

    fn spec(min: u64, max: u64) -> DiscoverConfig {
        DiscoverConfig {
            name: "app.test".into(),
            kind: RecordKind::A,
            port: Some(80),
            resolver: None,
            min_interval: Duration::from_secs(min),
            max_interval: Duration::from_secs(max),
            timeout: Duration::from_secs(1),
            weight: 1,
            max_conns: None,
            max_upgrades_per_sec: None,
        }
    }

    #[test]
    fn ttl_is_clamped_and_failures_back_off() {
        let s = spec(1, 30);
        assert_eq!(interval(&s, Duration::ZERO), Duration::from_secs(1));
        assert_eq!(interval(&s, Duration::from_secs(7)), Duration::from_secs(7));
        assert_eq!(
            interval(&s, Duration::from_secs(3600)),
            Duration::from_secs(30)
        );
        let waits: Vec<u64> = (1..=7).map(|f| backoff(&s, f).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff(&s, u64::MAX), Duration::from_secs(30));
    }

    #[test]
    fn registry_keeps_a_set_only_for_its_spec() {
        let toml = "[[listener]]\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\
                    [upstream.app]\nservers = [{ addr = \"127.0.0.1:1\" }]\n\
                    discover = { name = \"app.test\", port = 80 }\n";
        let config = Config::parse(toml, std::path::Path::new("t.toml")).unwrap();
        let want = config.upstreams["app"].discover.clone().unwrap();
        let reg = Registry::default();
        let found = vec![
            ServerConfig::new("127.0.0.2:80".parse().unwrap(), 1),
            ServerConfig::new("127.0.0.1:1".parse().unwrap(), 1),
        ];
        assert!(reg.store("app", &want, found.clone()));
        assert!(!reg.store("app", &want, found), "the same set is no change");
        let eff = reg.effective(&config);
        let addrs: Vec<String> = eff.upstreams["app"]
            .servers
            .iter()
            .map(|s| s.addr.to_string())
            .collect();
        assert_eq!(
            addrs,
            ["127.0.0.1:1", "127.0.0.2:80"],
            "static first, no duplicate"
        );
        let other = spec(2, 30);
        assert!(reg.store("app", &other, vec![]));
        let eff = reg.effective(&config);
        assert_eq!(
            eff.upstreams["app"].servers.len(),
            1,
            "another spec's set is not used"
        );
        reg.retain(&config);
        assert_eq!(reg.count("app"), 0);
    }
}
