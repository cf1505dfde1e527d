//! The current list of backends, shared by the proxy, the health checker and the admin API.
//!
//! Requests vastly outnumber changes, so readers take a cheap snapshot (an `Arc` of the list)
//! and never hold a lock while proxying; the admin API replaces the whole list on each change.
//! A request that already holds a removed backend finishes on it normally. The set also says
//! how a snapshot is routed to, normally or in panic mode (`panic_mode.rs`), and logs the
//! switches between the two.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::backend::{Backend, BackendAddress, Origin};
use crate::metrics::Metrics;
use crate::panic_mode::{in_service, PanicThreshold, Routing};
use crate::peak_ewma;

pub type Snapshot = Arc<[Arc<Backend>]>;

pub struct BackendSet {
    list: RwLock<Snapshot>,
    metrics: Arc<Metrics>,
    panic_threshold: PanicThreshold,
    /// Panic mode as the last routing decision found it, to log each switch once.
    panicking: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("backend {0} already exists")]
    Exists(String),
    #[error("no backend {0}")]
    NotFound(String),
}

impl BackendSet {
    pub fn new(metrics: Arc<Metrics>, panic_threshold: PanicThreshold) -> BackendSet {
        BackendSet {
            list: RwLock::new(Arc::from(Vec::new())),
            metrics,
            panic_threshold,
            panicking: AtomicBool::new(false),
        }
    }

    pub fn panic_threshold(&self) -> PanicThreshold {
        self.panic_threshold
    }

    /// How `snapshot` is to be routed to now; a switch into or out of panic mode is logged and
    /// shown in `lb_panic_mode`.
    pub fn routing(&self, snapshot: &[Arc<Backend>]) -> Routing {
        let routing = self.panic_threshold.routing(snapshot);
        let panic = routing == Routing::Panic;
        // Written only on a switch: every request reads it, from every worker.
        if self.panicking.load(Ordering::Relaxed) != panic
            && self.panicking.swap(panic, Ordering::Relaxed) != panic
        {
            self.metrics.panic_mode.set(i64::from(panic));
            let healthy = snapshot.iter().filter(|b| b.is_eligible()).count();
            let serving = snapshot.iter().filter(|b| in_service(b)).count();
            let percent = self.panic_threshold.percent();
            if panic {
                log::warn!(
                    "panic mode: {healthy} of {serving} backends pass their health checks, fewer than {percent} %; routing to every one that answers them"
                );
            } else {
                log::info!(
                    "panic mode over: {healthy} of {serving} backends pass their health checks"
                );
            }
        }
        routing
    }

    pub fn snapshot(&self) -> Snapshot {
        Arc::clone(&self.list.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn find(&self, id: &str) -> Option<Arc<Backend>> {
        self.snapshot().iter().find(|b| b.id() == id).cloned()
    }

    /// Adds a backend (not draining; up or not as its origin says) and returns it so its health
    /// checks can start.
    pub fn add(
        &self,
        address: BackendAddress,
        origin: Origin,
    ) -> Result<Arc<Backend>, ChangeError> {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        if list.iter().any(|b| b.address() == &address) {
            return Err(ChangeError::Exists(address.to_string()));
        }
        let backend = Arc::new(Backend::new(address, origin, &self.metrics));
        backend.start_fresh(typical_latency(&list, &backend));
        let mut next: Vec<_> = list.iter().cloned().collect();
        next.push(Arc::clone(&backend));
        *list = Arc::from(next);
        Ok(backend)
    }

    /// The latency estimate a backend joining or returning to the set starts from.
    pub fn typical_latency(&self, newcomer: &Arc<Backend>) -> Duration {
        typical_latency(&self.snapshot(), newcomer)
    }

    /// Removes a backend: no new requests; in-flight ones finish; its health checks stop.
    pub fn remove(&self, id: &str) -> Result<Arc<Backend>, ChangeError> {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        let removed = list
            .iter()
            .find(|b| b.id() == id)
            .cloned()
            .ok_or_else(|| ChangeError::NotFound(id.to_string()))?;
        let next: Vec<_> = list.iter().filter(|b| b.id() != id).cloned().collect();
        *list = Arc::from(next);
        self.metrics.forget_backend(id);
        Ok(removed)
    }
}

/// The mean estimate of the eligible backends other than `newcomer`.
///
/// Power-of-two-choices sends a request to the lower-scored backend of a random pair, so a
/// newcomer's starting estimate decides whether it gets traffic at all: higher than its peers'
/// (a fixed default above their real latency, or the penalties of its last failures) and it
/// loses every comparison until that decays, seconds later; zero and it wins every one, and a
/// cold node takes the whole load at once. Starting at its peers' mean makes it an ordinary
/// member at once: it wins against the slower half and its own responses take over from there.
fn typical_latency(backends: &[Arc<Backend>], newcomer: &Arc<Backend>) -> Duration {
    let peers: Vec<Duration> = backends
        .iter()
        .filter(|b| !Arc::ptr_eq(b, newcomer) && b.is_eligible())
        .map(|b| b.ewma())
        .collect();
    if peers.is_empty() {
        return peak_ewma::INITIAL;
    }
    peers.iter().sum::<Duration>() / peers.len() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Transition;

    fn address(port: u16) -> BackendAddress {
        BackendAddress::parse(&format!("127.0.0.1:{port}")).unwrap()
    }

    #[test]
    fn a_backend_joins_at_the_mean_latency_of_its_peers() {
        let set = BackendSet::new(Arc::new(Metrics::new()), PanicThreshold::DEFAULT);
        let fast = set.add(address(1), Origin::Static).unwrap();
        let slow = set.add(address(2), Origin::Static).unwrap();
        fast.start_fresh(Duration::from_micros(200));
        slow.start_fresh(Duration::from_micros(600));
        let newcomer = set.add(address(3), Origin::Static).unwrap();
        let estimate = newcomer.ewma();
        assert!(
            estimate > Duration::from_micros(300) && estimate < Duration::from_micros(500),
            "between its peers, not the 1 ms default nor zero: {estimate:?}"
        );
    }

    #[test]
    fn a_returning_backend_forgets_its_penalties() {
        let set = BackendSet::new(Arc::new(Metrics::new()), PanicThreshold::DEFAULT);
        let peer = set.add(address(1), Origin::Static).unwrap();
        peer.start_fresh(Duration::from_micros(300));
        let phoenix = set.add(address(2), Origin::Static).unwrap();
        phoenix.record_failure(Duration::ZERO);
        phoenix.mark_down();
        assert!(phoenix.ewma() >= Duration::from_millis(250));

        assert_eq!(phoenix.record_check(true, 1, 1), Some(Transition::WentUp));
        phoenix.start_fresh(set.typical_latency(&phoenix));
        assert!(
            phoenix.ewma() <= Duration::from_micros(300),
            "penalties from before the outage would starve the returning backend: {:?}",
            phoenix.ewma()
        );
    }
}
