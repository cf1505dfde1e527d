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
//! A streamed request body (`streamed_body.rs`, for requests that are not idempotent) exists
//! once: after any of it has left, the request cannot be built again, whatever the outcome. Only
//! a connect failure hands it back whole.
//!
//! [`decide`] is that policy, in one function the proxy calls once per attempt that did not end
//! in a response to pass on (the shape of linkerd2-proxy's retry policy): the attempt's outcome,
//! the method, whether the request can be sent again, the attempts so far and whether a backend
//! is left in, Retry or Respond out. Which answers are such attempts (a 503) is
//! [`Outcome::of_response`], also here, so the proxy holds no part of the rule.
//!
//! Then cost: retries of lost requests and of 503s draw on a budget, a token bucket filled by
//! 20% of the requests plus a small floor, so a sick cluster sees at most ~1.2x its normal load
//! instead of 3x (the Finagle/Envoy "retry budget" idea). Connect failures are free: nothing
//! reached a backend, and passive detection takes the dead one out of rotation at once.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use hyper::{Method, StatusCode};

use crate::upstream::UpstreamError;

/// At most this many extra attempts per request.
pub const MAX_RETRIES: usize = 2;

/// How one attempt ended, when it did not end in a response to pass on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No connection to the backend: the request was not sent.
    ConnectFailed,
    /// The connection broke after the request was (maybe) sent: reset, closed early.
    /// `reused`: on a connection from the pool rather than one opened for this request.
    Lost { reused: bool },
    /// The backend took longer than the response timeout.
    TimedOut,
    /// The backend answered 503: up, but cannot serve right now.
    Unavailable,
}

impl Outcome {
    /// Classifies an error from the upstream connection.
    pub fn of(error: &UpstreamError) -> Outcome {
        if error.is_connect() {
            Outcome::ConnectFailed
        } else {
            Outcome::Lost {
                reused: error.on_reused_connection(),
            }
        }
    }

    /// Classifies a backend's answer: a 503 (up, but cannot serve right now) is an attempt for
    /// [`decide`] to judge; any other status is passed on as it is.
    pub fn of_response(status: StatusCode) -> Option<Outcome> {
        (status == StatusCode::SERVICE_UNAVAILABLE).then_some(Outcome::Unavailable)
    }

    /// The `kind` label of `lb_upstream_errors_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::ConnectFailed => "connect",
            Outcome::Lost { .. } => "lost",
            Outcome::TimedOut => "timeout",
            Outcome::Unavailable => "unavailable",
        }
    }
}

/// What the policy needs to know about an attempt that did not end in a response to pass on.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub outcome: Outcome,
    pub method: &'a Method,
    /// Can the request be sent again? Not once a streamed body has left, whole or in part.
    pub replayable: bool,
    /// Attempts made for this request so far, this one included.
    pub attempts: usize,
    /// Is there a backend the request could go to next (after a pooled connection broke, the
    /// same backend counts: it gets a new connection)?
    pub alternative: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send the request again, to the balancer's next choice.
    Retry,
    /// Give the client this attempt's result: the backend's 503, or the balancer's 502/504.
    Respond,
}

/// The retry policy, the one place that decides whether an attempt is sent again: when it is
/// possible (the body is still here), safe (nothing was sent, or the method is idempotent), useful (not a timeout, somewhere left
/// to go, under [`MAX_RETRIES`]) and, unless nothing was sent, affordable. `withdraw` takes one
/// retry from the budget; it is called last, and only when a retry would cost one.
pub fn decide(attempt: &Attempt, withdraw: impl FnOnce() -> bool) -> Decision {
    if !attempt.replayable || attempt.attempts > MAX_RETRIES || !attempt.alternative {
        return Decision::Respond;
    }
    let retry = match attempt.outcome {
        Outcome::ConnectFailed => true,
        Outcome::Lost { .. } | Outcome::Unavailable => is_idempotent(attempt.method) && withdraw(),
        // A slow backend is not helped by sending it (or a sibling) the same slow work again.
        Outcome::TimedOut => false,
    };
    if retry {
        Decision::Retry
    } else {
        Decision::Respond
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
    fn only_a_503_answer_is_an_outcome_to_judge() {
        assert_eq!(
            Outcome::of_response(StatusCode::SERVICE_UNAVAILABLE),
            Some(Outcome::Unavailable)
        );
        for passed_on in [
            StatusCode::OK,
            StatusCode::NOT_FOUND,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
            StatusCode::GATEWAY_TIMEOUT,
        ] {
            assert_eq!(Outcome::of_response(passed_on), None, "{passed_on}");
        }
    }

    #[test]
    fn budget_allows_a_burst_then_twenty_percent() {
        let budget = RetryBudget::new();
        let burst = (0..1000).take_while(|_| budget.withdraw()).count() as i64;
        // The floor may pay in one more retry while the loop runs.
        assert!(
            (CAPACITY..=CAPACITY + 1).contains(&burst),
            "the bucket starts full ({CAPACITY} retries): {burst}"
        );
        let requests = 50;
        for _ in 0..requests {
            budget.deposit();
        }
        let earned = (0..100).take_while(|_| budget.withdraw()).count() as i64;
        let share = requests * EARNED_PER_REQUEST / 1000;
        assert!(
            (share..=share + 1).contains(&earned),
            "{requests} requests earn {share} retries (20 %): {earned}"
        );
    }

    #[test]
    fn the_policy_retries_only_what_is_safe_useful_and_affordable() {
        use Decision::{Respond, Retry};
        use Outcome::*;
        let (get, post, put) = (Method::GET, Method::POST, Method::PUT);
        let fresh = Lost { reused: false };
        let reused = Lost { reused: true };
        // outcome, method, replayable?, attempts so far, another backend?, budget left?,
        // decision, budget spent?
        let table = [
            (ConnectFailed, &post, true, 1, true, false, Retry, false),
            (ConnectFailed, &post, false, 1, true, true, Respond, false),
            (ConnectFailed, &get, true, 3, true, true, Respond, false),
            (ConnectFailed, &get, true, 1, false, true, Respond, false),
            (fresh, &get, true, 1, true, true, Retry, true),
            (fresh, &put, true, 2, true, true, Retry, true),
            (fresh, &get, true, 3, true, true, Respond, false),
            (fresh, &get, true, 1, true, false, Respond, true),
            (fresh, &post, true, 1, true, true, Respond, false),
            (fresh, &post, false, 1, true, true, Respond, false),
            (reused, &get, true, 1, true, true, Retry, true),
            (reused, &post, true, 1, true, true, Respond, false),
            (reused, &get, true, 1, false, true, Respond, false),
            (TimedOut, &get, true, 1, true, true, Respond, false),
            (Unavailable, &get, true, 1, true, true, Retry, true),
            (Unavailable, &get, true, 1, true, false, Respond, true),
            (Unavailable, &post, true, 1, true, true, Respond, false),
            (Unavailable, &get, true, 1, false, true, Respond, false),
        ];
        for (outcome, method, replayable, attempts, alternative, budget_left, expected, spends) in
            table
        {
            let attempt = Attempt {
                outcome,
                method,
                replayable,
                attempts,
                alternative,
            };
            let mut asked = false;
            let decision = decide(&attempt, || {
                asked = true;
                budget_left
            });
            assert_eq!(
                decision, expected,
                "{attempt:?}, budget left: {budget_left}"
            );
            assert_eq!(asked, spends, "budget asked for {attempt:?}");
        }
    }
}
