//! When a failed attempt may be sent again, and how many retries the balancer can afford.
//!
//! Safety first: a request that never reached a backend (the connection could not be opened)
//! can always go to another one. A request that was written and then lost (reset, or the
//! connection closed before a response) may already have been acted on, so it is replayed
//! only for idempotent methods. (A request that could not be written at all on a pooled
//! connection, because it closed a moment before, goes on to another connection: see
//! `upstream.rs`.) One lost on a pooled connection goes again, when it may, on new connections
//! only, to the same backend or another: an earlier exchange on that connection may have made
//! the backend close it, so the loss says nothing against the backend (`health.rs`). A backend
//! that answers 503 is up but cannot serve right now (a node cut off from Redis): an idempotent
//! request goes to a sibling, and when none is left the client gets the backend's own 503.
//!
//! Then cost: retries of lost requests draw on a budget, a token bucket filled by 20% of the
//! requests plus a small floor, so a sick cluster sees at most ~1.2x its normal load instead
//! of 3x (the Finagle/Envoy "retry budget" idea). Connect failures are free: nothing reached
//! a backend, and passive detection takes the dead one out of rotation at once.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use hyper::Method;

use crate::upstream::UpstreamError;

/// At most this many extra attempts per request.
pub const MAX_RETRIES: usize = 2;

/// What went wrong with one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection to the backend: the request was not sent.
    Connect,
    /// The connection broke after the request was (maybe) sent: reset, closed early.
    Lost,
    /// The backend took longer than the response timeout.
    Timeout,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Lost => "lost",
            Failure::Timeout => "timeout",
        }
    }

    /// Classifies an error from the upstream connection.
    pub fn of(error: &UpstreamError) -> Failure {
        if error.is_connect() {
            Failure::Connect
        } else {
            Failure::Lost
        }
    }
}

/// True when the request may be sent again after this kind of failure.
pub fn may_retry(failure: Failure, method: &Method) -> bool {
    match failure {
        Failure::Connect => true,
        Failure::Lost => is_idempotent(method),
        // A slow backend is not helped by sending it (or a sibling) the same slow work again.
        Failure::Timeout => false,
    }
}

pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Token bucket in thousandths of a retry.
pub struct RetryBudget {
    millitokens: AtomicI64,
    /// Milliseconds since `epoch` when the floor was last paid in.
    refilled_at: AtomicU64,
    epoch: Instant,
}

/// Each request earns this share of a retry (20%).
const EARNED_PER_REQUEST: i64 = 200;
/// Retries always affordable per second, whatever the traffic (the floor).
const FLOOR_PER_SECOND: i64 = 10;
/// The bucket never holds more than this many retries, so a long quiet spell cannot bank a storm.
const CAPACITY: i64 = 100;

impl RetryBudget {
    pub fn new() -> RetryBudget {
        RetryBudget {
            millitokens: AtomicI64::new(CAPACITY * 1000),
            refilled_at: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Called once per client request.
    pub fn deposit(&self) {
        // Skip the write when full: the common case under load, and it keeps the cache line shared.
        if self.millitokens.load(Ordering::Relaxed) < CAPACITY * 1000 {
            self.add(EARNED_PER_REQUEST);
        }
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn withdraw(&self) -> bool {
        self.pay_floor();
        self.millitokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tokens| {
                (tokens >= 1000).then_some(tokens - 1000)
            })
            .is_ok()
    }

    fn pay_floor(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.refilled_at.load(Ordering::Relaxed);
        if now > last
            && self
                .refilled_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.add(FLOOR_PER_SECOND * (now - last) as i64);
        }
    }

    fn add(&self, millitokens: i64) {
        let cap = CAPACITY * 1000;
        let _ = self
            .millitokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tokens| {
                Some((tokens + millitokens).min(cap))
            });
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_a_burst_then_twenty_percent() {
        let budget = RetryBudget::new();
        let burst = (0..1000).take_while(|_| budget.withdraw()).count();
        assert!(
            (100..=101).contains(&burst),
            "the bucket starts full: {burst}"
        );
        for _ in 0..50 {
            budget.deposit();
        }
        let earned = (0..100).take_while(|_| budget.withdraw()).count();
        assert!(
            (10..=11).contains(&earned),
            "50 requests earn 10 retries: {earned}"
        );
    }

    #[test]
    fn only_idempotent_requests_are_replayed_after_a_lost_connection() {
        assert!(may_retry(Failure::Lost, &Method::GET));
        assert!(may_retry(Failure::Lost, &Method::PUT));
        assert!(!may_retry(Failure::Lost, &Method::POST));
        assert!(may_retry(Failure::Connect, &Method::POST));
        assert!(!may_retry(Failure::Timeout, &Method::GET));
    }
}
