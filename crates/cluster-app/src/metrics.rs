//! Prometheus metrics of one node.
//!
//! Every family carries the node id as a constant `node` label, so the
//! metrics of several nodes can be scraped into one place and still be told
//! apart. The `prometheus` crate does the bookkeeping and the text format.
//! A leaf module: the store wrapper, the session reader and the request
//! middleware (`request_metrics.rs`) all record here, and it imports
//! none of them.

use std::sync::Arc;
use std::time::Instant;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

/// Request and Redis latencies on loopback are in the 0.1-1 ms range; the
/// default Prometheus buckets start at 5 ms and would put everything in one.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    /// Indexed by [`StoreOperation`]: the series of each operation, looked
    /// up once here instead of hashing label values on every request.
    store: Arc<[StoreOperationMetrics; StoreOperation::ALL.len()]>,
    corrupt_sessions: IntCounter,
    session_conflicts: IntCounterVec,
    unconfirmed_increments: IntCounter,
}

/// The session-store operations; the `operation` label.
#[derive(Clone, Copy, Debug)]
pub enum StoreOperation {
    Load,
    Save,
    Update,
    UpdateTtl,
    Delete,
}

impl StoreOperation {
    const ALL: [StoreOperation; 5] = [
        StoreOperation::Load,
        StoreOperation::Save,
        StoreOperation::Update,
        StoreOperation::UpdateTtl,
        StoreOperation::Delete,
    ];

    fn label(self) -> &'static str {
        match self {
            StoreOperation::Load => "load",
            StoreOperation::Save => "save",
            StoreOperation::Update => "update",
            StoreOperation::UpdateTtl => "update_ttl",
            StoreOperation::Delete => "delete",
        }
    }
}

impl std::fmt::Display for StoreOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

struct StoreOperationMetrics {
    /// Indexed by [`StoreOutcome`].
    outcomes: [IntCounter; StoreOutcome::ALL.len()],
    duration: Histogram,
}

/// How a session-store operation ended; the `outcome` label.
#[derive(Clone, Copy, Debug)]
pub enum StoreOutcome {
    Ok,
    Error,
    Timeout,
    /// The versioned store refused a write; Redis itself is fine.
    Conflict,
    /// The write reached the primary, but fewer replicas than
    /// `REDIS_MIN_REPLICAS_ACK` confirmed it in time.
    Unconfirmed,
}

impl StoreOutcome {
    const ALL: [StoreOutcome; 5] = [
        StoreOutcome::Ok,
        StoreOutcome::Error,
        StoreOutcome::Timeout,
        StoreOutcome::Conflict,
        StoreOutcome::Unconfirmed,
    ];

    fn label(self) -> &'static str {
        match self {
            StoreOutcome::Ok => "ok",
            StoreOutcome::Error => "error",
            StoreOutcome::Timeout => "timeout",
            StoreOutcome::Conflict => "conflict",
            StoreOutcome::Unconfirmed => "unconfirmed",
        }
    }
}

impl Metrics {
    pub fn new(node_id: &str) -> prometheus::Result<Metrics> {
        let labels = [("node".to_string(), node_id.to_string())]
            .into_iter()
            .collect();
        let registry = Registry::new_custom(None, Some(labels))?;

        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by route, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to answer an HTTP request.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let store_operations = IntCounterVec::new(
            Opts::new(
                "session_store_operations_total",
                "Session-store operations, by operation and outcome (ok, error, timeout, conflict, unconfirmed: too few replicas confirmed the write).",
            ),
            &["operation", "outcome"],
        )?;
        let store_duration = HistogramVec::new(
            HistogramOpts::new(
                "session_store_operation_duration_seconds",
                "Time of one session-store operation, timeouts included.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["operation"],
        )?;
        let corrupt_sessions = IntCounter::new(
            "session_corrupt_total",
            "Sessions whose stored state could not be read and was treated as no session.",
        )?;
        let session_conflicts = IntCounterVec::new(
            Opts::new(
                "session_conflicts_total",
                "Session writes the versioned store refused (answered 409), by reason: stale or gone.",
            ),
            &["reason"],
        )?;

        let unconfirmed_increments = IntCounter::new(
            "atomic_increments_unconfirmed_total",
            "Atomic counter increments fewer replicas than REDIS_MIN_REPLICAS_ACK confirmed (answered 503).",
        )?;

        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(store_operations.clone()))?;
        registry.register(Box::new(store_duration.clone()))?;
        registry.register(Box::new(corrupt_sessions.clone()))?;
        registry.register(Box::new(session_conflicts.clone()))?;
        registry.register(Box::new(unconfirmed_increments.clone()))?;

        let store = StoreOperation::ALL.map(|operation| StoreOperationMetrics {
            outcomes: StoreOutcome::ALL.map(|outcome| {
                store_operations.with_label_values(&[operation.label(), outcome.label()])
            }),
            duration: store_duration.with_label_values(&[operation.label()]),
        });
        Ok(Metrics {
            registry,
            http_requests,
            http_duration,
            store: Arc::new(store),
            corrupt_sessions,
            session_conflicts,
            unconfirmed_increments,
        })
    }

    pub fn observe_store_operation(
        &self,
        operation: StoreOperation,
        outcome: StoreOutcome,
        started: Instant,
    ) {
        let series = &self.store[operation as usize];
        series.outcomes[outcome as usize].inc();
        series.duration.observe(started.elapsed().as_secs_f64());
    }

    pub fn count_corrupt_session(&self) {
        self.corrupt_sessions.inc();
    }

    /// `reason` is a [`versioned_session_store::ConflictReason`] name.
    pub fn count_session_conflict(&self, reason: &str) {
        self.session_conflicts.with_label_values(&[reason]).inc();
    }

    pub fn count_unconfirmed_increment(&self) {
        self.unconfirmed_increments.inc();
    }

    /// One answered request; `route` is the matched pattern, never the raw path.
    pub fn observe_request(&self, route: &str, method: &str, status: &str, started: Instant) {
        self.http_requests
            .with_label_values(&[route, method, status])
            .inc();
        self.http_duration
            .with_label_values(&[route])
            .observe(started.elapsed().as_secs_f64());
    }

    /// All families in the Prometheus text format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}
