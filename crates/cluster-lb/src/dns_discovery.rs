//! Backends found in DNS: each `--backend-dns NAME:PORT` is resolved every interval, and the set
//! of backends follows the addresses it resolves to, as orchestrators publish their replicas
//! (`tasks.<service>` on Docker Swarm, a headless Service on Kubernetes).
//!
//! The set changes only through the paths the admin API uses, so a discovered backend is an
//! ordinary one:
//! * an address that appears is added ([`BackendSet::add`]) and watched by the health checker,
//!   but starts down ([`Origin::admitted_at_once`]): no request reaches it before `rise` good
//!   checks;
//! * an address that disappears is drained at once (no new request, in-flight ones finish) and
//!   removed ([`BackendSet::remove`]) when its last request has ended, or after the shutdown
//!   timeout, the patience SIGTERM has for in-flight requests (requests still running then finish
//!   anyway, as after an admin `DELETE`); if it comes back meanwhile, the drain is undone;
//! * a resolution that fails or finds nothing keeps the name's last known addresses, logged and
//!   counted in `lb_dns_resolutions_total`: a DNS hiccup never empties the pool. (Scaling a
//!   service to zero therefore leaves its last addresses in place; the health checks take them
//!   out.)
//!
//! Only backends of DNS origin are ever touched: a static or admin-added backend with the same
//! address as a discovered one wins, and stays when the name stops resolving to it.
//!
//! Resolution uses hickory-resolver, not the C library's `getaddrinfo`: `getaddrinfo` blocks a
//! thread, has no deadline of its own, and always asks the system's nameservers, on port 53.
//! hickory is asynchronous, bounded by a timeout below the interval, caches nothing here (the
//! point is to see changes), and can be pointed at one nameserver on any port (`--dns-server`),
//! which is how the tests put a DNS server of their own in front of the balancer.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::TokioResolver;
use tokio::task::JoinSet;

use crate::backend::{Backend, BackendAddress, Origin};
use crate::backend_set::BackendSet;
use crate::health::HealthChecker;
use crate::metrics::Metrics;

/// Why a `--backend-dns` value was refused; the message names it as given.
#[derive(Debug, thiserror::Error)]
#[error("backend DNS name {0:?} must be NAME:PORT with a port from 1 to 65535")]
pub struct TargetError(String);

/// One `--backend-dns NAME:PORT`: the name to resolve and the port its addresses serve on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsTarget {
    name: Arc<str>,
    port: u16,
}

impl DnsTarget {
    pub fn parse(text: &str) -> Result<DnsTarget, TargetError> {
        let text = text.trim();
        let refused = || TargetError(text.to_string());
        let (name, port) = text.rsplit_once(':').ok_or_else(refused)?;
        let port: u16 = port.parse().map_err(|_| refused())?;
        let name_is_plain = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if port == 0 || !name_is_plain {
            return Err(refused());
        }
        Ok(DnsTarget {
            name: name.into(),
            port,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for DnsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.port)
    }
}

#[derive(Debug, Clone)]
pub struct DiscoveryOptions {
    pub targets: Vec<DnsTarget>,
    /// Time between two resolutions of every name.
    pub interval: Duration,
    /// The nameserver to ask; `None`: the system's (`/etc/resolv.conf`).
    pub server: Option<SocketAddr>,
    /// Longest a gone address's in-flight requests are waited for before it is removed.
    pub drain_limit: Duration,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        DiscoveryOptions {
            targets: Vec::new(),
            interval: Duration::from_millis(1000),
            server: None,
            drain_limit: Duration::from_secs(30),
        }
    }
}

/// The resolver could not be set up (the system's configuration is unreadable).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up DNS resolution: {0}")]
pub struct ResolverError(#[source] NetError);

/// How one resolution of one name ended: the `outcome` label of `lb_dns_resolutions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Found,
    /// The name exists with no address, or does not exist (NXDOMAIN).
    Empty,
    /// No answer: timeout, refused, server failure.
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Found => "ok",
            Outcome::Empty => "empty",
            Outcome::Failed => "failed",
        }
    }
}

/// A backend that left DNS, being drained before it is removed.
struct Leaving {
    since: Instant,
    /// Drained by an operator already: coming back to DNS does not undo that.
    was_draining: bool,
}

/// Keeps the DNS-discovered part of the backend set in step with DNS.
pub struct Discovery {
    options: DiscoveryOptions,
    resolver: TokioResolver,
    backends: Arc<BackendSet>,
    checker: HealthChecker,
    metrics: Arc<Metrics>,
    /// Each name's addresses at its last resolution that found any.
    last_known: HashMap<DnsTarget, BTreeSet<SocketAddr>>,
    /// Names whose last resolution found nothing, so a streak is logged once.
    failing: BTreeSet<DnsTarget>,
    /// By serial: an address re-added after its removal is another backend.
    leaving: HashMap<u64, Leaving>,
}

impl Discovery {
    /// Nothing to do (`Ok(None)`) without a name to resolve.
    pub fn new(
        options: DiscoveryOptions,
        backends: Arc<BackendSet>,
        checker: HealthChecker,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Discovery>, ResolverError> {
        if options.targets.is_empty() {
            return Ok(None);
        }
        let resolver = resolver(&options).map_err(ResolverError)?;
        Ok(Some(Discovery {
            options,
            resolver,
            backends,
            checker,
            metrics,
            last_known: HashMap::new(),
            failing: BTreeSet::new(),
            leaving: HashMap::new(),
        }))
    }

    /// Resolves every name at once, then every interval, until `stop` resolves.
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut ticks = tokio::time::interval(self.options.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => self.refresh().await,
                _ = &mut stop => return,
            }
        }
    }

    async fn refresh(&mut self) {
        // All names at once, each bounded: one round never outlasts the interval.
        let limit = self.options.interval / 2;
        let mut lookups = JoinSet::new();
        for target in &self.options.targets {
            let (resolver, target) = (self.resolver.clone(), target.clone());
            lookups.spawn(async move {
                let found = tokio::time::timeout(limit, resolver.lookup_ip(target.name())).await;
                (target, found)
            });
        }
        while let Some(Ok((target, found))) = lookups.join_next().await {
            let (outcome, addresses) = match found {
                Ok(Ok(lookup)) => {
                    let addresses: BTreeSet<SocketAddr> = lookup
                        .iter()
                        .map(|ip| SocketAddr::new(ip, target.port))
                        .collect();
                    let outcome = if addresses.is_empty() {
                        Outcome::Empty
                    } else {
                        Outcome::Found
                    };
                    (outcome, addresses)
                }
                Ok(Err(e)) if e.is_no_records_found() => (Outcome::Empty, BTreeSet::new()),
                Ok(Err(e)) => {
                    log::debug!("DNS {target}: {e}");
                    (Outcome::Failed, BTreeSet::new())
                }
                Err(_) => (Outcome::Failed, BTreeSet::new()),
            };
            self.record(target, outcome, addresses);
        }
        self.reconcile();
    }

    /// Counts one resolution and keeps what it found, or the last known addresses.
    fn record(&mut self, target: DnsTarget, outcome: Outcome, addresses: BTreeSet<SocketAddr>) {
        self.metrics
            .dns_resolutions
            .with_label_values(&[&target.to_string(), outcome.as_str()])
            .inc();
        if outcome != Outcome::Found {
            if self.failing.insert(target.clone()) {
                let kept = self.last_known.get(&target).map_or(0, BTreeSet::len);
                let what = match outcome {
                    Outcome::Empty => "no address",
                    _ => "no answer",
                };
                log::warn!("DNS {target}: {what}; keeping its last {kept} known addresses");
            }
            return;
        }
        if self.failing.remove(&target) {
            log::info!("DNS {target}: resolves again");
        }
        if self.last_known.get(&target) != Some(&addresses) {
            let list: Vec<String> = addresses.iter().map(SocketAddr::to_string).collect();
            log::info!("DNS {target}: [{}]", list.join(", "));
            self.last_known.insert(target, addresses);
        }
    }

    /// Adds the addresses DNS has and the set lacks, drains the discovered backends DNS no
    /// longer has, and removes those whose drain is over.
    fn reconcile(&mut self) {
        // Each address once, for the first name (in the order given) that resolves to it.
        let mut wanted: HashMap<String, &DnsTarget> = HashMap::new();
        for target in &self.options.targets {
            for address in self.last_known.get(target).into_iter().flatten() {
                wanted.entry(address.to_string()).or_insert(target);
            }
        }

        let snapshot = self.backends.snapshot();
        for backend in snapshot.iter().filter(|b| is_discovered(b)) {
            let listed = wanted.contains_key(backend.id());
            match self.leaving.get(&backend.serial()) {
                None if !listed => {
                    log::info!(
                        "DNS: backend {} left {}; draining it",
                        backend.id(),
                        backend.origin()
                    );
                    self.leaving.insert(
                        backend.serial(),
                        Leaving {
                            since: Instant::now(),
                            was_draining: backend.is_draining(),
                        },
                    );
                    backend.set_draining(true);
                }
                Some(leaving) if listed => {
                    log::info!(
                        "DNS: backend {} is back; no longer draining it",
                        backend.id()
                    );
                    if !leaving.was_draining {
                        backend.set_draining(false);
                    }
                    self.leaving.remove(&backend.serial());
                }
                _ => {}
            }
        }

        for (address, target) in &wanted {
            if snapshot.iter().any(|b| b.id() == address.as_str()) {
                continue;
            }
            let added = BackendAddress::parse(address)
                .map_err(|e| e.to_string())
                .and_then(|address| {
                    let origin = Origin::Dns(Arc::clone(&target.name));
                    self.backends
                        .add(address, origin)
                        .map_err(|e| e.to_string())
                });
            match added {
                Ok(backend) => {
                    self.checker.watch(&backend);
                    log::info!(
                        "DNS: backend {address} found ({target}); traffic once its health checks pass"
                    );
                }
                Err(e) => log::warn!("DNS: cannot add backend {address}: {e}"),
            }
        }

        let drain_limit = self.options.drain_limit;
        self.leaving.retain(|serial, leaving| {
            let Some(backend) = snapshot.iter().find(|b| b.serial() == *serial) else {
                // Removed meanwhile through the admin API.
                return false;
            };
            if backend.in_flight() > 0 && leaving.since.elapsed() < drain_limit {
                return true;
            }
            if self.backends.remove(backend.id()).is_ok() {
                log::info!("DNS: backend {} drained and removed", backend.id());
            }
            false
        });
    }
}

fn is_discovered(backend: &Backend) -> bool {
    matches!(backend.origin(), Origin::Dns(_))
}

/// A resolver asking `options.server`, or the system's nameservers; it caches nothing, and
/// every query has half the interval to be answered.
fn resolver(options: &DiscoveryOptions) -> Result<TokioResolver, NetError> {
    let mut builder = match options.server {
        Some(server) => {
            let mut nameserver = NameServerConfig::udp_and_tcp(server.ip());
            for connection in &mut nameserver.connections {
                connection.port = server.port();
            }
            let config = ResolverConfig::from_parts(None, Vec::new(), vec![nameserver]);
            let mut builder =
                TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
            // The named server is the only authority: /etc/hosts does not override it.
            builder.options_mut().use_hosts_file = ResolveHosts::Never;
            builder
        }
        None => TokioResolver::builder_tokio()?,
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.cache_size = 0;
    opts.timeout = options.interval / 2;
    opts.attempts = 1;
    builder.build()
}
