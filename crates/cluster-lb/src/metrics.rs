//! Prometheus metrics of the balancer, served as text by the admin API's `/metrics`.
//!
//! Handles for each backend's series are looked up once when the backend is added (see
//! `backend.rs`) and then updated with single atomic operations, so the request path pays no
//! label hashing. A private registry keeps the output to this process's own series.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Metric names and options are constants; building them can only fail on a typo in this file.
const STATIC: &str = "static metric definitions are valid";

pub struct Metrics {
    registry: Registry,
    pub backend_requests: IntCounterVec,
    pub backend_failures: IntCounterVec,
    pub backend_in_flight: IntGaugeVec,
    pub backend_up: IntGaugeVec,
    pub responses: IntCounterVec,
    pub upstream_errors: IntCounterVec,
    pub retries: IntCounter,
    pub retries_refused: IntCounter,
    pub request_duration: Histogram,
    pub connections_open: IntGaugeVec,
    pub connections_refused: IntCounterVec,
    pub accept_errors: IntCounterVec,
    pub request_bodies_refused: IntCounterVec,
    pub dns_resolutions: IntCounterVec,
    pub panic_routed: IntCounter,
    pub panic_mode: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let by_backend = ["backend"];
        let metrics = Metrics {
            backend_requests: IntCounterVec::new(
                Opts::new(
                    "lb_backend_requests_total",
                    "Requests sent to a backend (attempts, retries included).",
                ),
                &by_backend,
            )
            .expect(STATIC),
            backend_failures: IntCounterVec::new(
                Opts::new(
                    "lb_backend_failures_total",
                    "Attempts that failed: connect error, reset, timeout or 5xx.",
                ),
                &by_backend,
            )
            .expect(STATIC),
            backend_in_flight: IntGaugeVec::new(
                Opts::new(
                    "lb_backend_in_flight",
                    "Requests a backend is answering right now.",
                ),
                &by_backend,
            )
            .expect(STATIC),
            backend_up: IntGaugeVec::new(
                Opts::new(
                    "lb_backend_up",
                    "1 when the backend passes its health checks.",
                ),
                &by_backend,
            )
            .expect(STATIC),
            responses: IntCounterVec::new(
                Opts::new(
                    "lb_responses_total",
                    "Responses sent to clients, by status class.",
                ),
                &["class"],
            )
            .expect(STATIC),
            upstream_errors: IntCounterVec::new(
                Opts::new(
                    "lb_upstream_errors_total",
                    "Failed attempts by kind: connect (nothing sent), lost (connection broke after sending), timeout.",
                ),
                &["kind"],
            )
            .expect(STATIC),
            retries: IntCounter::new(
                "lb_retries_total",
                "Requests sent again to another backend.",
            )
            .expect(STATIC),
            retries_refused: IntCounter::new(
                "lb_retries_refused_total",
                "Retries not made because the retry budget was spent.",
            )
            .expect(STATIC),
            request_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "lb_request_duration_seconds",
                    "Time from request to response head.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            )
            .expect(STATIC),
            connections_open: IntGaugeVec::new(
                Opts::new(
                    "lb_connections_open",
                    "Client connections open now, by listener.",
                ),
                &["listener"],
            )
            .expect(STATIC),
            connections_refused: IntCounterVec::new(
                Opts::new(
                    "lb_connections_refused_total",
                    "Client connections closed at once because the listener's connection limit was reached.",
                ),
                &["listener"],
            )
            .expect(STATIC),
            accept_errors: IntCounterVec::new(
                Opts::new(
                    "lb_accept_errors_total",
                    "Failed accepts (e.g. out of file descriptors), by listener.",
                ),
                &["listener"],
            )
            .expect(STATIC),
            request_bodies_refused: IntCounterVec::new(
                Opts::new(
                    "lb_request_bodies_refused_total",
                    "Request bodies not forwarded: too_large (413), timeout (408), over_budget (503), unreadable (400).",
                ),
                &["reason"],
            )
            .expect(STATIC),
            dns_resolutions: IntCounterVec::new(
                Opts::new(
                    "lb_dns_resolutions_total",
                    "Resolutions of each --backend-dns target: ok, empty (no address: the last known are kept), failed (no answer: the last known are kept).",
                ),
                &["target", "outcome"],
            )
            .expect(STATIC),
            panic_routed: IntCounter::new(
                "lb_panic_routed_total",
                "Attempts sent to a backend failing its health checks because too few passed them (panic mode).",
            )
            .expect(STATIC),
            panic_mode: IntGauge::new(
                "lb_panic_mode",
                "1 while too few backends pass their health checks and all that answer are routed to (as of the last request).",
            )
            .expect(STATIC),
            registry,
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 16] = [
            Box::new(metrics.upstream_errors.clone()),
            Box::new(metrics.backend_requests.clone()),
            Box::new(metrics.backend_failures.clone()),
            Box::new(metrics.backend_in_flight.clone()),
            Box::new(metrics.backend_up.clone()),
            Box::new(metrics.responses.clone()),
            Box::new(metrics.retries.clone()),
            Box::new(metrics.retries_refused.clone()),
            Box::new(metrics.request_duration.clone()),
            Box::new(metrics.connections_open.clone()),
            Box::new(metrics.connections_refused.clone()),
            Box::new(metrics.accept_errors.clone()),
            Box::new(metrics.request_bodies_refused.clone()),
            Box::new(metrics.dns_resolutions.clone()),
            Box::new(metrics.panic_routed.clone()),
            Box::new(metrics.panic_mode.clone()),
        ];
        for collector in collectors {
            metrics
                .registry
                .register(collector)
                .expect("each metric is registered once");
        }
        metrics
    }

    /// Drops a removed backend's series so `/metrics` stops reporting it.
    pub fn forget_backend(&self, id: &str) {
        let label = [id];
        let _ = self.backend_requests.remove_label_values(&label);
        let _ = self.backend_failures.remove_label_values(&label);
        let _ = self.backend_in_flight.remove_label_values(&label);
        let _ = self.backend_up.remove_label_values(&label);
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> Vec<u8> {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail on I/O; a malformed family would be a bug in this file.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            log::error!("cannot encode metrics: {e}");
        }
        buffer
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
