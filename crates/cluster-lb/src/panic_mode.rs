//! Panic mode: when too few backends pass their health checks, route to every backend that still
//! answers them, and let each answer for itself.
//!
//! Health checks protect clients from a broken backend. They cannot tell "I am broken" from
//! "what I depend on is down": when the shared Redis dies, every node's `/readyz` fails at once,
//! the balancer takes them all out, and after Redis returns it waits for `rise` good checks
//! before it sends anything again, several hundred milliseconds of outage the nodes themselves
//! no longer have. Ejecting every backend never helps a client either: it turns the nodes' own
//! answers (503 with `Retry-After`, or 200 the moment they can serve) into the balancer's 503.
//! So, as Envoy's panic threshold does, when fewer than the threshold's share of the backends
//! (50 % by default; 0 disables it) pass their checks, the balancer routes to the failing ones
//! too. With one node of three down it stays out; with two or three down, they all serve as
//! well as they can.
//!
//! Three kinds of backend stay out even then. A draining one: an operator or DNS discovery took
//! it out on purpose. One that has never been up: it is joining (a replica DNS just found, still
//! starting), not failing, and gets traffic only after its `rise` checks. Neither is counted
//! among the backends either, so scaling up does not look like an outage. And one whose last
//! health check got no HTTP answer (refused, reset, timed out: [`Backend::answers`]): sending it
//! requests would only buy connect failures and timeouts, so panic mode takes only backends that
//! answer, unready as they say they are. Retries keep their rules and budget: a 503 from every
//! node is retried on another only while the budget (20 % of requests) allows.

use std::sync::Arc;

use crate::backend::Backend;

/// The share of backends below which the balancer panics, in percent (0: never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PanicThreshold {
    percent: u8,
}

impl PanicThreshold {
    pub const DEFAULT: PanicThreshold = PanicThreshold { percent: 50 };

    /// `None` above 100 %.
    pub fn new(percent: u8) -> Option<PanicThreshold> {
        (percent <= 100).then_some(PanicThreshold { percent })
    }

    pub fn percent(self) -> u8 {
        self.percent
    }

    /// How `backends` are to be routed to: panic when fewer than the threshold's share of the
    /// backends in service (not draining, not joining) pass their health checks.
    pub fn routing(self, backends: &[Arc<Backend>]) -> Routing {
        let serving = backends.iter().filter(|b| in_service(b)).count();
        let healthy = backends.iter().filter(|b| b.is_eligible()).count();
        if serving > 0 && healthy * 100 < usize::from(self.percent) * serving {
            Routing::Panic
        } else {
            Routing::Healthy
        }
    }
}

impl Default for PanicThreshold {
    fn default() -> Self {
        PanicThreshold::DEFAULT
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// Only backends that pass their health checks get requests.
    Healthy,
    /// Too few pass them: every backend not draining that answers its checks gets requests.
    Panic,
}

impl Routing {
    /// May `backend` get a new request?
    pub fn admits(self, backend: &Backend) -> bool {
        match self {
            Routing::Healthy => backend.is_eligible(),
            Routing::Panic => in_service(backend) && (backend.is_up() || backend.answers()),
        }
    }
}

/// Not draining, and not joining (up at some time): a backend panic mode counts.
pub fn in_service(backend: &Backend) -> bool {
    !backend.is_draining() && backend.has_been_up()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendAddress, Origin};
    use crate::metrics::Metrics;

    fn backends(n: u16) -> Vec<Arc<Backend>> {
        let metrics = Metrics::new();
        (1..=n)
            .map(|port| {
                let address = BackendAddress::parse(&format!("127.0.0.1:{port}")).unwrap();
                Arc::new(Backend::new(address, Origin::Static, &metrics))
            })
            .collect()
    }

    /// Down after failing two checks that it answered (503): unready, not broken.
    fn unready(backend: &Backend) {
        backend.record_check(false, 2, 2);
        backend.record_check(false, 2, 2);
        assert!(!backend.is_up() && backend.answers());
    }

    #[test]
    fn one_of_three_down_is_no_panic_two_are() {
        let list = backends(3);
        let threshold = PanicThreshold::DEFAULT;
        unready(&list[0]);
        assert_eq!(threshold.routing(&list), Routing::Healthy);
        assert!(!Routing::Healthy.admits(&list[0]));
        unready(&list[1]);
        assert_eq!(threshold.routing(&list), Routing::Panic);
        assert!(list.iter().all(|b| Routing::Panic.admits(b)));
        // Half healthy is not below half: one of two down is no panic.
        assert_eq!(threshold.routing(&list[1..]), Routing::Healthy);
    }

    #[test]
    fn panic_admits_neither_a_draining_nor_an_unreachable_backend() {
        let list = backends(3);
        for backend in &list {
            unready(backend);
        }
        list[1].set_draining(true);
        list[2].mark_down();
        assert_eq!(PanicThreshold::DEFAULT.routing(&list), Routing::Panic);
        let admitted: Vec<bool> = list.iter().map(|b| Routing::Panic.admits(b)).collect();
        assert_eq!(admitted, [true, false, false]);
    }

    #[test]
    fn a_backend_still_joining_is_neither_counted_nor_routed_to() {
        let metrics = Metrics::new();
        let mut list = backends(2);
        for port in [8, 9] {
            let address = BackendAddress::parse(&format!("127.0.0.1:{port}")).unwrap();
            let joining = Arc::new(Backend::new(address, Origin::Dns("node".into()), &metrics));
            joining.record_check(false, 2, 2);
            list.push(joining);
        }
        // Two up, two joining (a scale-up): no outage. One of the two down: still none, as
        // with one of two alone; counting the joiners would make it one healthy of four.
        assert_eq!(PanicThreshold::DEFAULT.routing(&list), Routing::Healthy);
        unready(&list[0]);
        assert_eq!(PanicThreshold::DEFAULT.routing(&list), Routing::Healthy);
        unready(&list[1]);
        assert_eq!(PanicThreshold::DEFAULT.routing(&list), Routing::Panic);
        assert!(
            !Routing::Panic.admits(&list[2]),
            "it answers, but never passed its checks"
        );
    }

    #[test]
    fn zero_disables_it_and_draining_backends_do_not_count() {
        let list = backends(2);
        unready(&list[0]);
        unready(&list[1]);
        assert_eq!(
            PanicThreshold::new(0).unwrap().routing(&list),
            Routing::Healthy
        );
        assert_eq!(PanicThreshold::new(101), None);
        // Three backends, two draining: the one left is all there is, and it is healthy.
        let list = backends(3);
        list[0].set_draining(true);
        list[1].set_draining(true);
        assert_eq!(PanicThreshold::DEFAULT.routing(&list), Routing::Healthy);
        list[2].mark_down();
        assert_eq!(PanicThreshold::DEFAULT.routing(&list), Routing::Panic);
    }
}
