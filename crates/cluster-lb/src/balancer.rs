//! Choosing a backend for one request attempt.
//!
//! * Power of two choices (default): sample two eligible backends at random and take the one
//!   with the lower load score (peak-EWMA latency x (in-flight + 1)). Nearly as good as
//!   scanning for the best backend, without herding every request onto the same one.
//! * Round-robin: strictly in turn, for an exactly even spread.
//! * Least connections: fewest requests in flight; ties go round-robin.
//!
//! The candidates are the backends the routing admits: those passing their health checks, or in
//! panic mode every one that answers them (`panic_mode.rs`); never a draining one. Backends
//! already tried for this request are skipped when another candidate exists, so a retry lands
//! elsewhere. Nothing here allocates: the candidate list is walked in place.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::backend::Backend;
use crate::panic_mode::Routing;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    PowerOfTwoChoices,
    RoundRobin,
    LeastConnections,
}

pub struct Balancer {
    algorithm: Algorithm,
    next: AtomicUsize,
}

impl Balancer {
    pub fn new(algorithm: Algorithm) -> Balancer {
        Balancer {
            algorithm,
            next: AtomicUsize::new(0),
        }
    }

    /// Picks a backend `routing` admits, preferring one not in `tried`.
    pub fn pick(
        &self,
        backends: &[Arc<Backend>],
        tried: &[Arc<Backend>],
        routing: Routing,
    ) -> Option<Arc<Backend>> {
        let untried =
            |b: &Arc<Backend>| routing.admits(b) && !tried.iter().any(|t| Arc::ptr_eq(t, b));
        self.pick_among(backends, untried)
            .or_else(|| self.pick_among(backends, |b: &Arc<Backend>| routing.admits(b)))
    }

    fn pick_among(
        &self,
        backends: &[Arc<Backend>],
        allowed: impl Fn(&Arc<Backend>) -> bool + Copy,
    ) -> Option<Arc<Backend>> {
        let candidates = || backends.iter().filter(move |b| allowed(b));
        let count = candidates().count();
        if count <= 1 {
            return candidates().next().cloned();
        }
        let chosen = match self.algorithm {
            Algorithm::PowerOfTwoChoices => {
                let first = fastrand::usize(..count);
                let mut second = fastrand::usize(..count - 1);
                if second >= first {
                    second += 1;
                }
                let a = candidates().nth(first)?;
                let b = candidates().nth(second)?;
                if b.load_score() < a.load_score() {
                    b
                } else {
                    a
                }
            }
            Algorithm::RoundRobin => candidates().nth(self.turn() % count)?,
            Algorithm::LeastConnections => {
                let start = self.turn() % count;
                candidates()
                    .cycle()
                    .skip(start)
                    .take(count)
                    .min_by_key(|b| b.in_flight())?
            }
        };
        Some(Arc::clone(chosen))
    }

    fn turn(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::backend::{BackendAddress, Origin};
    use crate::metrics::Metrics;

    fn backends(n: usize) -> Vec<Arc<Backend>> {
        let metrics = Metrics::new();
        (1..=n)
            .map(|i| {
                Arc::new(Backend::new(
                    BackendAddress::parse(&format!("127.0.0.1:{i}")).unwrap(),
                    Origin::Static,
                    &metrics,
                ))
            })
            .collect()
    }

    #[test]
    fn round_robin_is_exactly_even() {
        let list = backends(3);
        let balancer = Balancer::new(Algorithm::RoundRobin);
        let mut counts = [0; 3];
        for _ in 0..300 {
            let chosen = balancer.pick(&list, &[], Routing::Healthy).unwrap();
            counts[list.iter().position(|b| Arc::ptr_eq(b, &chosen)).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn skips_ineligible_and_tried_backends() {
        let list = backends(3);
        list[0].mark_down();
        list[1].set_draining(true);
        let balancer = Balancer::new(Algorithm::PowerOfTwoChoices);
        for _ in 0..20 {
            assert!(Arc::ptr_eq(
                &balancer.pick(&list, &[], Routing::Healthy).unwrap(),
                &list[2]
            ));
        }
        // Tried already, but still the only eligible one: a retry may go back to it.
        assert!(Arc::ptr_eq(
            &balancer
                .pick(&list, &[list[2].clone()], Routing::Healthy)
                .unwrap(),
            &list[2]
        ));
        list[2].mark_down();
        assert!(balancer.pick(&list, &[], Routing::Healthy).is_none());
    }

    /// A rolling restart at a low rate: the re-enabled backend's first answer is slow (cold
    /// connections to it and from it to Redis), its peers answer in 2 ms. That one sample must
    /// not keep it out of every pair for seconds while its peers take all the traffic.
    #[test]
    fn one_slow_answer_does_not_starve_a_backend() {
        let list = backends(3);
        for backend in &list[..2] {
            backend.record_response(Duration::from_millis(2), false);
        }
        list[2].record_response(Duration::from_millis(100), false);
        let balancer = Balancer::new(Algorithm::PowerOfTwoChoices);
        let started = Instant::now();
        let mut waited = None;
        // 50 requests a second, the peers answering each in 2 ms, for 3 s at most.
        while started.elapsed() < Duration::from_secs(3) {
            let chosen = balancer.pick(&list, &[], Routing::Healthy).unwrap();
            if Arc::ptr_eq(&chosen, &list[2]) {
                waited = Some(started.elapsed());
                break;
            }
            chosen.record_response(Duration::from_millis(2), false);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            waited.is_some(),
            "a single 100 ms answer kept the backend out of every pair for 3 s"
        );
    }

    #[test]
    fn least_connections_prefers_the_idle_backend() {
        let list = backends(2);
        let _busy = list[0].start_request();
        let balancer = Balancer::new(Algorithm::LeastConnections);
        for _ in 0..10 {
            assert!(Arc::ptr_eq(
                &balancer.pick(&list, &[], Routing::Healthy).unwrap(),
                &list[1]
            ));
        }
    }
}
