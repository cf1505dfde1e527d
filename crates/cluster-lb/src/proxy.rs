//! The proxy core: one client request in, one response out, over the best available backend.
//!
//! For each request it checks the limits, rewrites the headers (hop-by-hop out, forwarding
//! headers in), buffers the body of an idempotent request so it can be replayed (any other
//! body is streamed), then tries a backend chosen by the balancer. A failed attempt is retried
//! when `retry.rs` says it is safe and affordable (after a pooled connection broke, on new
//! connections only); `health.rs` judges what the failure says about the backend.
//! The response streams back untouched apart from header hygiene. This module knows nothing of
//! configuration files or the admin API: it is handed a backend set and [`ProxyOptions`].
//!
//! Buffering bodies (up to `max_body_bytes`, 1 MiB by default, 413 beyond) is the price of safe
//! retries: a streamed body is gone once sent. It costs memory per in-flight upload and adds
//! the upload time before the first byte reaches a backend. So only what may be replayed is
//! buffered: the body of an idempotent request (GET, PUT, DELETE, ...), which is sent again
//! after a lost connection. A request that is not idempotent (POST, PATCH, ...) is never re-sent
//! once any of it was sent, so its body is streamed to the backend as it arrives
//! (`streamed_body.rs`); it still goes to another backend when no connection could be opened,
//! since the body is untouched until the request is written. A request without a body is
//! "buffered" for free and keeps every retry.
//! Both ways are bounded: a body must arrive within `body_timeout`, with no gap over
//! `body_idle_timeout` (else 408; a streamed body's request is aborted and the backend's
//! connection closed, and the client gets the 408 unless the backend has already answered), and
//! all bodies being buffered share one budget of `max_buffered_body_bytes` (64 MiB by default;
//! beyond it 503 with `Retry-After`), so slow or stalled uploads cannot hold unbounded memory.
//! Streamed bodies hold no more than hyper's buffers and take nothing from that budget. The
//! wait for a streamed request's response head may last `body_timeout` longer than
//! `response_timeout`, since the upload happens during it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode, Uri, Version};
use ipnet::IpNet;
use prometheus::IntCounter;

use crate::backend::{Backend, InFlight, Transition};
use crate::backend_set::BackendSet;
use crate::balancer::{Algorithm, Balancer};
use crate::body::{self, ProxyBody};
use crate::body_limits::{BodyError, BodyLimits};
use crate::forwarded::{self, TrustedProxies, X_REQUEST_ID};
use crate::health;
use crate::hop_by_hop;
use crate::metrics::Metrics;
use crate::panic_mode::Routing;
use crate::request_body::{self, BodyBudget, RequestBody};
use crate::retry::{self, Decision, Outcome, RetryBudget};
use crate::sticky;
use crate::tracked_body::TrackedBody;
use crate::upgrade;
use crate::upstream::{self, Lease, Upstream, UpstreamBody, UpstreamError};

/// Longest request target (path and query); longer -> 414. nginx's default line buffer.
const MAX_URI_BYTES: usize = 8 * 1024;

/// Everything that shapes how requests are proxied.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    pub algorithm: Algorithm,
    /// Pin clients to a backend with a cookie.
    pub sticky: bool,
    /// Peers whose X-Forwarded-* headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Limit on opening a connection to a backend (then the next backend is tried).
    pub connect_timeout: Duration,
    /// Limit on waiting for a backend's response head (then 504).
    pub response_timeout: Duration,
    /// Idle upstream connections are closed after this; keep it below the backends' keep-alive
    /// (actix-web: 5 s) so the proxy never sends on a connection the backend is closing.
    pub pool_idle_timeout: Duration,
    /// A client connection may be idle, or slow to send a request head, this long.
    pub client_timeout: Duration,
    pub max_body_bytes: usize,
    /// Longest time to receive a whole request body (then 408).
    pub body_timeout: Duration,
    /// Longest wait for the next chunk of a request body (then 408).
    pub body_idle_timeout: Duration,
    /// Bytes all buffered request bodies may take together (then 503).
    pub max_buffered_body_bytes: usize,
    pub max_header_bytes: usize,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            algorithm: Algorithm::PowerOfTwoChoices,
            sticky: false,
            trusted_proxies: Vec::new(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(30),
            pool_idle_timeout: Duration::from_secs(2),
            client_timeout: Duration::from_secs(30),
            // nginx's client_max_body_size.
            max_body_bytes: 1024 * 1024,
            // nginx's client_body_timeout (between two reads) is 60 s; a JSON API needs far less.
            body_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(10),
            // 64 bodies of the largest size.
            max_buffered_body_bytes: 64 * 1024 * 1024,
            // nginx's large_client_header_buffers (4 x 8k).
            max_header_bytes: 32 * 1024,
        }
    }
}

pub struct Proxy {
    backends: Arc<BackendSet>,
    balancer: Balancer,
    /// Upstream connections; one pool per proxy worker thread.
    upstream: Upstream,
    /// Each worker keeps its own budget: the same 20%, counted per thread.
    budget: RetryBudget,
    trusted: TrustedProxies,
    options: ProxyOptions,
    metrics: Arc<Metrics>,
    /// Shared by every worker: the memory all buffered request bodies may take.
    body_budget: Arc<BodyBudget>,
    /// Responses by status class 1xx..5xx, looked up once.
    responses: [IntCounter; 5],
}

/// A request ready to be sent (again): everything but the per-attempt URI.
struct Prepared {
    method: hyper::Method,
    path_and_query: hyper::http::uri::PathAndQuery,
    headers: HeaderMap,
    body: RequestBody,
    request_id: HeaderValue,
    client_upgrade: Option<OnUpgrade>,
}

impl Proxy {
    pub fn new(
        backends: Arc<BackendSet>,
        options: ProxyOptions,
        metrics: Arc<Metrics>,
        body_budget: Arc<BodyBudget>,
    ) -> Proxy {
        let upstream = Upstream::new(options.connect_timeout, options.pool_idle_timeout);
        let responses = ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .map(|class| metrics.responses.with_label_values(&[class]));
        Proxy {
            balancer: Balancer::new(options.algorithm),
            trusted: TrustedProxies::new(options.trusted_proxies.clone()),
            budget: RetryBudget::new(),
            backends,
            upstream,
            options,
            metrics,
            body_budget,
            responses,
        }
    }

    /// Answers one client request.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let response = self.forward(request, peer).await;
        self.metrics
            .request_duration
            .observe(started.elapsed().as_secs_f64());
        let class = (response.status().as_u16() / 100).clamp(1, 5) as usize;
        self.responses[class - 1].inc();
        response
    }

    async fn forward(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        let mut prepared = match self.prepare(request, peer).await {
            Ok(prepared) => prepared,
            Err(response) => return response,
        };
        self.budget.deposit();

        let snapshot = self.backends.snapshot();
        let mut sticky_choice = if self.options.sticky {
            sticky::chosen(&prepared.headers, &snapshot)
        } else {
            None
        };
        let mut tried: Vec<Arc<Backend>> = Vec::new();
        let mut attempts = 0;
        // After a pooled connection broke, this request goes on new connections only.
        let mut may_reuse = true;
        loop {
            let Some(upstream_body) = prepared.body.for_attempt() else {
                // Not reached: `retry::decide` never retries a request whose streamed body left.
                let response = body::error(StatusCode::BAD_GATEWAY, "request body already sent");
                return with_id(response, &prepared.request_id);
            };
            // Again for each attempt: a failed one may have taken a backend out.
            let routing = self.backends.routing(&snapshot);
            let backend = match sticky_choice
                .take()
                .or_else(|| self.balancer.pick(&snapshot, &tried, routing))
            {
                Some(backend) => backend,
                None => return with_id(no_backend(), &prepared.request_id),
            };
            if !backend.is_up() {
                self.metrics.panic_routed.inc();
            }
            let in_flight = backend.start_request();
            attempts += 1;
            // An answer the policy may retry (a 503) is kept, to be passed on if it is not.
            let (outcome, unavailable, error) = match self
                .attempt(&mut prepared, upstream_body, &backend, may_reuse)
                .await
            {
                Ok((response, lease, latency)) => {
                    backend.record_response(latency, response.status().is_server_error());
                    let Some(outcome) = Outcome::of_response(response.status()) else {
                        return self.respond(response, in_flight, lease, prepared);
                    };
                    (outcome, Some((response, lease, in_flight)), None)
                }
                Err((outcome, error, latency)) => {
                    drop(in_flight);
                    if let Some(refused) = prepared.body.failure() {
                        // The client's streamed body broke off: nothing against the backend.
                        return self.refuse_body(refused, &prepared.request_id);
                    }
                    self.note_failure(&backend, outcome, error.as_ref(), latency);
                    (outcome, None, error)
                }
            };
            if outcome == (Outcome::Lost { reused: true }) {
                // Maybe not the backend's doing: a new connection to it is worth a try.
                may_reuse = false;
            } else {
                tried.push(backend);
            }

            let attempt = retry::Attempt {
                outcome,
                method: &prepared.method,
                replayable: prepared.body.is_replayable(),
                attempts,
                alternative: untried_left(&snapshot, &tried, routing),
            };
            if retry::decide(&attempt, || self.spend_retry()) == Decision::Retry {
                if outcome == Outcome::Unavailable {
                    self.metrics
                        .upstream_errors
                        .with_label_values(&[outcome.as_str()])
                        .inc();
                }
                self.metrics.retries.inc();
                continue;
            }
            if let Some((response, lease, in_flight)) = unavailable {
                return self.respond(response, in_flight, lease, prepared);
            }
            log::info!(
                "{} {} failed: {}",
                prepared.method,
                prepared.path_and_query,
                reason(error.as_ref())
            );
            let response = match outcome {
                Outcome::TimedOut => body::error(StatusCode::GATEWAY_TIMEOUT, "backend timed out"),
                _ => body::error(StatusCode::BAD_GATEWAY, "backend connection failed"),
            };
            return with_id(response, &prepared.request_id);
        }
    }

    /// Counts a failed attempt and lets passive health detection judge it. A loss on a pooled
    /// connection is no evidence against the backend (`health.rs`), so it charges no latency
    /// penalty either: under power-of-two-choices a penalty starves a backend for seconds.
    fn note_failure(
        &self,
        backend: &Backend,
        outcome: Outcome,
        error: Option<&UpstreamError>,
        latency: Duration,
    ) {
        self.metrics
            .upstream_errors
            .with_label_values(&[outcome.as_str()])
            .inc();
        if outcome != (Outcome::Lost { reused: true }) {
            backend.record_failure(latency);
        }
        if health::judge_failure(backend, outcome, error) == Some(Transition::WentDown) {
            log::warn!("backend {} is down: {}", backend.id(), reason(error));
        }
    }

    /// Checks limits, rewrites headers and buffers the body; an error is the response to send.
    async fn prepare(
        &self,
        mut request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Prepared, Response<ProxyBody>> {
        if request
            .uri()
            .path_and_query()
            .map_or(0, |pq| pq.as_str().len())
            > MAX_URI_BYTES
        {
            return Err(body::error(
                StatusCode::URI_TOO_LONG,
                "request URI too long",
            ));
        }
        if head_size(&request) > self.options.max_header_bytes {
            return Err(body::error(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request headers too large",
            ));
        }
        let declared_length = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared_length.is_some_and(|length| length > self.options.max_body_bytes as u64) {
            return Err(body::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
            ));
        }

        let upgrade_protocol =
            upgrade::requested_protocol(request.method(), request.version(), request.headers());
        let client_upgrade = upgrade_protocol
            .is_some()
            .then(|| hyper::upgrade::on(&mut request));

        let (mut parts, incoming) = request.into_parts();
        hop_by_hop::strip_keeping_upgrade(&mut parts.headers, upgrade_protocol);
        let request_id = forwarded::apply(&mut parts.headers, peer, &self.trusted);

        let limits = BodyLimits {
            max_bytes: self.options.max_body_bytes,
            timeout: self.options.body_timeout,
            idle_timeout: self.options.body_idle_timeout,
        };
        let body = if retry::is_idempotent(&parts.method) || incoming.is_end_stream() {
            match request_body::read(incoming, limits, &self.body_budget).await {
                Ok(body) => RequestBody::Buffered(body),
                Err(refused) => return Err(self.refuse_body(refused, &request_id)),
            }
        } else {
            RequestBody::streamed(incoming, limits)
        };
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/"));
        Ok(Prepared {
            method: parts.method,
            path_and_query,
            headers: parts.headers,
            body,
            request_id,
            client_upgrade,
        })
    }

    /// Counts a request body refused (too large, too slow, over budget) and answers it.
    fn refuse_body(&self, refused: BodyError, request_id: &HeaderValue) -> Response<ProxyBody> {
        self.metrics
            .request_bodies_refused
            .with_label_values(&[refused.as_str()])
            .inc();
        with_id(refused.response(), request_id)
    }

    /// One try on one backend, bounded by the response timeout (plus the body timeout while a
    /// streamed body may still be uploading). A streamed body that was not sent is put back.
    async fn attempt(
        &self,
        prepared: &mut Prepared,
        body: UpstreamBody,
        backend: &Backend,
        may_reuse: bool,
    ) -> Result<(Response<Incoming>, Lease, Duration), (Outcome, Option<UpstreamError>, Duration)>
    {
        let mut limit = self.options.response_timeout;
        if prepared.body.is_streamed() {
            limit += self.options.body_timeout;
        }
        let mut request = Request::new(body);
        *request.method_mut() = prepared.method.clone();
        *request.uri_mut() = Uri::from(prepared.path_and_query.clone());
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = prepared.headers.clone();
        if !request.headers().contains_key(header::HOST) {
            // HTTP/1.1 needs one; an HTTP/1.0 client may not have sent it.
            if let Ok(host) = HeaderValue::from_str(backend.address().as_str()) {
                request.headers_mut().insert(header::HOST, host);
            }
        }

        let started = Instant::now();
        match tokio::time::timeout(limit, self.upstream.send(backend, request, may_reuse)).await {
            Ok(Ok((response, lease))) => Ok((response, lease, started.elapsed())),
            Ok(Err(failed)) => {
                if let Some(unsent) = failed.unsent {
                    prepared.body.put_back(unsent.into_body());
                }
                let e = failed.error;
                Err((Outcome::of(&e), Some(e), started.elapsed()))
            }
            Err(_) => Err((Outcome::TimedOut, None, started.elapsed())),
        }
    }

    /// Turns a backend's response into the client's.
    fn respond(
        &self,
        mut response: Response<Incoming>,
        in_flight: InFlight,
        lease: Lease,
        prepared: Prepared,
    ) -> Response<ProxyBody> {
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        // A streamed body still being written when the response came leaves the connection
        // mid-message.
        let reusable = prepared.body.is_sent()
            && upstream::reusable_after(
                prepared.client_upgrade.is_some(),
                response.status(),
                response.version(),
                response.headers(),
            );
        let upgrade_protocol = switching
            .then(|| response.headers().get(header::UPGRADE).cloned())
            .flatten();
        match (switching, prepared.client_upgrade) {
            (true, Some(client_side)) => {
                upgrade::tunnel(client_side, hyper::upgrade::on(&mut response))
            }
            (true, None) => {
                return with_id(
                    body::error(
                        StatusCode::BAD_GATEWAY,
                        "backend switched protocols unasked",
                    ),
                    &prepared.request_id,
                );
            }
            (false, _) => {}
        }

        let (mut parts, incoming) = response.into_parts();
        hop_by_hop::strip_keeping_upgrade(&mut parts.headers, upgrade_protocol);
        parts
            .headers
            .entry(&X_REQUEST_ID)
            .or_insert(prepared.request_id);
        if self.options.sticky {
            sticky::remember(&mut parts.headers, &prepared.headers, in_flight.backend());
        }
        let lease = reusable.then_some(lease);
        Response::from_parts(parts, TrackedBody::boxed(incoming, in_flight, lease))
    }

    fn spend_retry(&self) -> bool {
        let allowed = self.budget.withdraw();
        if !allowed {
            self.metrics.retries_refused.inc();
        }
        allowed
    }
}

/// Bytes of the request line and headers, as they arrived (near enough: `: ` and CRLF counted).
fn head_size(request: &Request<Incoming>) -> usize {
    let uri = request.uri();
    let target = uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    let line = request.method().as_str().len() + target + 12;
    line + request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
}

/// Is there a backend `routing` admits that this request has not tried? (Asking the balancer
/// would move round-robin's turn.)
fn untried_left(backends: &[Arc<Backend>], tried: &[Arc<Backend>], routing: Routing) -> bool {
    backends
        .iter()
        .any(|b| routing.admits(b) && !tried.iter().any(|t| Arc::ptr_eq(t, b)))
}

fn no_backend() -> Response<ProxyBody> {
    let mut response = body::error(StatusCode::SERVICE_UNAVAILABLE, "no healthy backend");
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn with_id(mut response: Response<ProxyBody>, request_id: &HeaderValue) -> Response<ProxyBody> {
    response
        .headers_mut()
        .insert(&X_REQUEST_ID, request_id.clone());
    response
}

/// Why an attempt failed, on one line: no error is a response timeout.
fn reason(error: Option<&UpstreamError>) -> String {
    error.map_or_else(|| "response timeout".to_string(), describe)
}

/// The error and its causes on one line (hyper's top-level messages alone are vague).
fn describe(error: &UpstreamError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
