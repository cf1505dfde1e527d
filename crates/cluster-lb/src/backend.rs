//! One backend as the balancer sees it: where it is, where it came from, how loaded it is,
//! whether it may get traffic.
//!
//! Two independent switches decide eligibility. Health (up/down) belongs to the health checker
//! and to passive failure detection; draining belongs to the operator (or to DNS discovery, for
//! an address that left DNS). A backend receives new requests only when it is up *and* not
//! draining. Counters live in Prometheus handles so the admin JSON and `/metrics` can never
//! disagree.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::http::uri::Authority;
use prometheus::{IntCounter, IntGauge};

use crate::metrics::Metrics;
use crate::peak_ewma::PeakEwma;

/// Why a backend address was refused; the message names the address as given.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error("backend {text:?} is not a host:port address: {source}")]
    Unparsable {
        text: String,
        source: hyper::http::uri::InvalidUri,
    },
    #[error("backend {0:?} must be host:port with a port from 1 to 65535")]
    NotHostAndPort(String),
}

/// A backend address as given (`host:port`), checked once so requests never fail to build a URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendAddress {
    text: String,
    authority: Authority,
}

impl BackendAddress {
    /// Accepts `host:port` where host is an IP address or a DNS name (resolved at connect time).
    pub fn parse(text: &str) -> Result<BackendAddress, AddressError> {
        let text = text.trim();
        let authority: Authority = text.parse().map_err(|source| AddressError::Unparsable {
            text: text.to_string(),
            source,
        })?;
        let valid = authority.port_u16().is_some_and(|port| port != 0)
            && !authority.host().is_empty()
            && !text.contains('@');
        if !valid {
            return Err(AddressError::NotHostAndPort(text.to_string()));
        }
        Ok(BackendAddress {
            text: text.to_string(),
            authority,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }
}

impl fmt::Display for BackendAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Where a backend came from, which decides how it starts and who may take it away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Named in the configuration (`--backend`).
    Static,
    /// Added through the admin API.
    Admin,
    /// An address the DNS name (`--backend-dns NAME:PORT`) resolved to; discovery removes it
    /// when the name no longer does.
    Dns(Arc<str>),
}

impl Origin {
    /// Does the backend get traffic before its first health check? One an operator named, yes:
    /// a fresh cluster serves at once, and the first check (sent immediately) or passive
    /// detection takes it out within milliseconds if it cannot serve. One found in DNS, no: an
    /// orchestrator publishes a replica's address as soon as it starts, before it is ready, so
    /// it earns its place with `rise` good checks like a backend coming back up.
    pub fn admitted_at_once(&self) -> bool {
        !matches!(self, Origin::Dns(_))
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Static => f.write_str("static"),
            Origin::Admin => f.write_str("admin"),
            Origin::Dns(name) => write!(f, "dns:{name}"),
        }
    }
}

/// What the admin API reports: draining wins over health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Up,
    Down,
    Draining,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
            State::Draining => "draining",
        }
    }
}

/// A health transition worth logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    WentUp,
    WentDown,
}

/// Consecutive check results, for the fall/rise state machine.
#[derive(Default)]
struct Streak {
    successes: u32,
    failures: u32,
}

/// Serial numbers of backends, unique for the life of the process.
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

pub struct Backend {
    address: BackendAddress,
    origin: Origin,
    /// Unique even when a removed backend is added again: the upstream pool's key.
    serial: u64,
    /// Bumped each time the backend goes down; connections opened before are not reused.
    generation: AtomicU64,
    /// Cookie value of sticky mode: a hash, so the cookie does not reveal internal addresses.
    sticky_token: String,
    up: AtomicBool,
    /// Did its last health check get an HTTP answer, whatever the status? Panic mode routes
    /// only to backends that answer (`panic_mode.rs`).
    answers: AtomicBool,
    /// Has it been up at any time? One that never was is still joining: panic mode neither
    /// counts it nor routes to it.
    ever_up: AtomicBool,
    streak: Mutex<Streak>,
    /// Connections opened for a request and lost before its response, since the last response.
    fresh_losses_in_a_row: AtomicU32,
    draining: AtomicBool,
    latency: PeakEwma,
    in_flight: IntGauge,
    requests: IntCounter,
    failures: IntCounter,
    up_gauge: IntGauge,
}

impl Backend {
    /// A new backend starts up or down as its origin says ([`Origin::admitted_at_once`]).
    pub fn new(address: BackendAddress, origin: Origin, metrics: &Metrics) -> Backend {
        let label = [address.as_str()];
        let up = origin.admitted_at_once();
        let backend = Backend {
            sticky_token: sticky_token(address.as_str()),
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            up: AtomicBool::new(up),
            answers: AtomicBool::new(up),
            ever_up: AtomicBool::new(up),
            streak: Mutex::new(Streak::default()),
            fresh_losses_in_a_row: AtomicU32::new(0),
            draining: AtomicBool::new(false),
            latency: PeakEwma::new(),
            in_flight: metrics.backend_in_flight.with_label_values(&label),
            requests: metrics.backend_requests.with_label_values(&label),
            failures: metrics.backend_failures.with_label_values(&label),
            up_gauge: metrics.backend_up.with_label_values(&label),
            address,
            origin,
        };
        backend.up_gauge.set(i64::from(up));
        backend
    }

    pub fn address(&self) -> &BackendAddress {
        &self.address
    }

    pub fn id(&self) -> &str {
        self.address.as_str()
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// How many times the backend has gone down so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn sticky_token(&self) -> &str {
        &self.sticky_token
    }

    /// May this backend receive a new request?
    pub fn is_eligible(&self) -> bool {
        self.up.load(Ordering::Relaxed) && !self.draining.load(Ordering::Relaxed)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Did its last health check get an HTTP answer (2xx or not)?
    pub fn answers(&self) -> bool {
        self.answers.load(Ordering::Relaxed)
    }

    /// Has it been up at any time (admitted at once, or passed `rise` checks)?
    pub fn has_been_up(&self) -> bool {
        self.ever_up.load(Ordering::Relaxed)
    }

    pub fn state(&self) -> State {
        if self.draining.load(Ordering::Relaxed) {
            State::Draining
        } else if self.is_up() {
            State::Up
        } else {
            State::Down
        }
    }

    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Load score for power-of-two-choices: expected latency times the queue it would join.
    pub fn load_score(&self) -> f64 {
        self.latency.nanos() * (self.in_flight() as f64 + 1.0)
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    pub fn ewma(&self) -> Duration {
        Duration::from_nanos(self.latency.nanos() as u64)
    }

    pub fn requests(&self) -> u64 {
        self.requests.get()
    }

    pub fn failures(&self) -> u64 {
        self.failures.get()
    }

    /// Counts a request as in flight until the returned guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        self.requests.inc();
        InFlight {
            backend: Arc::clone(self),
        }
    }

    /// Forgets the latency history and starts from `estimate`: for a backend that joins the
    /// set or comes back up (see `BackendSet::typical_latency`).
    pub fn start_fresh(&self, estimate: Duration) {
        self.latency.restart_at(estimate);
    }

    /// A response head arrived after `latency`.
    pub fn record_response(&self, latency: Duration, server_error: bool) {
        if self.fresh_losses_in_a_row.load(Ordering::Relaxed) != 0 {
            self.fresh_losses_in_a_row.store(0, Ordering::Relaxed);
        }
        if server_error {
            self.record_failure(latency);
        } else {
            self.latency.observe(latency);
        }
    }

    /// The attempt failed (transport error, timeout or 5xx): count it and charge the penalty.
    pub fn record_failure(&self, latency: Duration) {
        self.failures.inc();
        self.latency.observe(latency.max(FAILURE_PENALTY));
    }

    /// Passive detection (the rule is in `health.rs`), or a health check that could not
    /// connect: takes the backend out at once, as one that does not answer; only the active
    /// checker can bring it back (after `rise` good checks).
    pub fn mark_down(&self) -> Option<Transition> {
        let mut streak = self.streak.lock().unwrap_or_else(|p| p.into_inner());
        *streak = Streak::default();
        self.fresh_losses_in_a_row.store(0, Ordering::Relaxed);
        self.answers.store(false, Ordering::Relaxed);
        self.set_up(false)
    }

    /// A connection opened for a request broke before the response; returns how many in a row
    /// (since the backend last answered anything).
    pub fn record_fresh_loss(&self) -> u32 {
        self.fresh_losses_in_a_row.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A health check the backend answered, ready (2xx) or not, through the fall/rise state
    /// machine.
    pub fn record_check(&self, healthy: bool, fall: u32, rise: u32) -> Option<Transition> {
        self.answers.store(true, Ordering::Relaxed);
        self.count_check(healthy, fall, rise)
    }

    /// A health check that got no HTTP answer (timed out, broken off): a failed check, and a
    /// backend panic mode leaves out.
    pub fn record_unanswered_check(&self, fall: u32, rise: u32) -> Option<Transition> {
        self.answers.store(false, Ordering::Relaxed);
        self.count_check(false, fall, rise)
    }

    fn count_check(&self, healthy: bool, fall: u32, rise: u32) -> Option<Transition> {
        let mut streak = self.streak.lock().unwrap_or_else(|p| p.into_inner());
        if healthy {
            streak.failures = 0;
            streak.successes = streak.successes.saturating_add(1);
            if !self.is_up() && streak.successes >= rise {
                return self.set_up(true);
            }
        } else {
            streak.successes = 0;
            streak.failures = streak.failures.saturating_add(1);
            if self.is_up() && streak.failures >= fall {
                return self.set_up(false);
            }
        }
        None
    }

    /// True while the last checks disagree with the current state (going up or going down);
    /// the checker then checks faster, as HAProxy's `fastinter` does.
    pub fn in_transition(&self) -> bool {
        let streak = self.streak.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_up() {
            streak.failures > 0
        } else {
            streak.successes > 0
        }
    }

    fn set_up(&self, up: bool) -> Option<Transition> {
        let was_up = self.up.swap(up, Ordering::Relaxed);
        if up {
            self.ever_up.store(true, Ordering::Relaxed);
        }
        self.up_gauge.set(i64::from(up));
        match (was_up, up) {
            (false, true) => Some(Transition::WentUp),
            (true, false) => {
                self.generation.fetch_add(1, Ordering::AcqRel);
                Some(Transition::WentDown)
            }
            _ => None,
        }
    }
}

/// Latency charged for a failed attempt, so the balancer avoids a backend that fails fast.
const FAILURE_PENALTY: Duration = Duration::from_millis(500);

/// Keeps a request counted as in flight on its backend; dropped when the response body ends.
pub struct InFlight {
    backend: Arc<Backend>,
}

impl InFlight {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend.in_flight.dec();
    }
}

fn sticky_token(address: &str) -> String {
    use std::hash::{Hash, Hasher};
    // DefaultHasher::new() uses fixed keys: the same address gives the same token on every run.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    address.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_need_host_and_port() {
        assert!(BackendAddress::parse("127.0.0.1:9001").is_ok());
        assert!(BackendAddress::parse("node1:8000").is_ok());
        assert!(BackendAddress::parse("[::1]:8000").is_ok());
        assert!(BackendAddress::parse("node1").is_err());
        assert!(BackendAddress::parse("node1:0").is_err());
        assert!(BackendAddress::parse("http://node1:80").is_err());
        assert!(BackendAddress::parse("user@node1:80").is_err());
    }

    #[test]
    fn fall_and_rise_count_consecutive_checks() {
        let backend = Backend::new(
            BackendAddress::parse("127.0.0.1:1").unwrap(),
            Origin::Static,
            &Metrics::new(),
        );
        assert_eq!(backend.record_check(false, 2, 2), None);
        assert_eq!(
            backend.record_check(false, 2, 2),
            Some(Transition::WentDown)
        );
        assert_eq!(backend.record_check(true, 2, 2), None);
        assert!(backend.in_transition());
        assert_eq!(backend.record_check(true, 2, 2), Some(Transition::WentUp));
        assert_eq!(backend.mark_down(), Some(Transition::WentDown));
        assert_eq!(backend.state(), State::Down);
    }

    #[test]
    fn a_backend_found_in_dns_waits_for_its_checks() {
        let metrics = Metrics::new();
        let address = || BackendAddress::parse("127.0.0.1:1").unwrap();
        let found = Backend::new(address(), Origin::Dns("tasks.node".into()), &metrics);
        assert_eq!(found.state(), State::Down);
        assert_eq!(found.record_check(true, 2, 2), None);
        assert_eq!(found.record_check(true, 2, 2), Some(Transition::WentUp));
        assert_eq!(found.origin().to_string(), "dns:tasks.node");
        for named in [Origin::Static, Origin::Admin] {
            assert_eq!(Backend::new(address(), named, &metrics).state(), State::Up);
        }
    }
}
