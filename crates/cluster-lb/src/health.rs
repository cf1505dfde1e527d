//! Active health checks: each backend's health path is fetched on a fixed interval and the
//! results drive the fall/rise state machine in `backend.rs`.
//!
//! Passive detection (the proxy's failed attempts, [`judge_failure`]) can take a backend down
//! but can never bring it back: only these checks do, after `rise` good answers. A refused
//! connection here also counts as proof of death and marks the backend down at once. While a
//! backend is in transition the checks run twice as often (HAProxy's `fastinter`), so ejection
//! and re-admission both stay well under a second with the defaults. A check answered with a
//! status other than 2xx and one not answered at all both fail; panic mode (`panic_mode.rs`)
//! tells them apart: it routes to a backend that answers 503, never to one that does not answer.
//!
//! Passive evidence must be something no client can manufacture, or one client could take
//! every backend out of rotation for everyone. So only these count:
//! * a connection that cannot be opened (refused, reset, timed out): down at once;
//! * a connection opened for the request that broke before its response, when that happens
//!   [`FRESH_LOSSES_TO_MARK_DOWN`] times in a row with no response in between.
//!
//! A pooled connection that broke proves nothing: what an earlier request on it did (an odd
//! header, an upgrade refused) may have made the backend close it. Nor does a timeout: slow is
//! not dead, and the active checks judge slowness.

use std::error::Error as StdError;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::backend::{Backend, Transition};
use crate::backend_set::BackendSet;
use crate::retry::Outcome;
use crate::upstream::UpstreamError;

/// Connections opened for a request and lost before the response, in a row, that take a backend
/// out: one can be a request the backend chose to drop, three with no answer between are not.
pub const FRESH_LOSSES_TO_MARK_DOWN: u32 = 3;

/// Passive detection: records what one failed attempt says about `backend`'s health.
pub fn judge_failure(
    backend: &Backend,
    outcome: Outcome,
    error: Option<&UpstreamError>,
) -> Option<Transition> {
    match outcome {
        Outcome::ConnectFailed => backend.mark_down(),
        Outcome::Lost { reused: false } if error.is_some_and(is_reset) => {
            let in_a_row = backend.record_fresh_loss();
            (in_a_row >= FRESH_LOSSES_TO_MARK_DOWN)
                .then(|| backend.mark_down())
                .flatten()
        }
        Outcome::Lost { .. } | Outcome::TimedOut | Outcome::Unavailable => None,
    }
}

/// Did the connection break (reset by peer, or closed before the response was complete)?
fn is_reset(error: &UpstreamError) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
            ) {
                return true;
            }
        }
        if let Some(hyper_error) = cause.downcast_ref::<hyper::Error>() {
            if hyper_error.is_incomplete_message() {
                return true;
            }
        }
        source = cause.source();
    }
    false
}

#[derive(Debug, Clone)]
pub struct HealthOptions {
    pub path: String,
    pub interval: Duration,
    /// Failed checks in a row before a backend is marked down.
    pub fall: u32,
    /// Successful checks in a row before a down backend is marked up.
    pub rise: u32,
}

impl Default for HealthOptions {
    fn default() -> Self {
        HealthOptions {
            path: "/readyz".to_string(),
            interval: Duration::from_millis(500),
            fall: 2,
            rise: 2,
        }
    }
}

/// Sends the checks. One instance is shared by every backend's check loop.
#[derive(Clone)]
pub struct HealthChecker {
    options: HealthOptions,
    client: Client<HttpConnector, Empty<Bytes>>,
    /// A backend that comes back up starts from its peers' typical latency.
    backends: Arc<BackendSet>,
}

enum CheckResult {
    Healthy,
    /// An HTTP answer that is not 2xx: the backend runs but says it cannot serve.
    Unready(String),
    /// No HTTP answer: timed out, broken off, malformed.
    Unanswered(String),
    CannotConnect,
}

impl HealthChecker {
    pub fn new(options: HealthOptions, backends: Arc<BackendSet>) -> HealthChecker {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(options.interval));
        connector.set_nodelay(true);
        // A fresh connection per check, as HAProxy does: a check also proves the backend accepts.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        HealthChecker {
            options,
            client,
            backends,
        }
    }

    /// Checks `backend` until it is removed (the last strong reference is gone).
    pub fn watch(&self, backend: &Arc<Backend>) {
        let checker = self.clone();
        let backend = Arc::downgrade(backend);
        tokio::spawn(async move { checker.run(backend).await });
    }

    async fn run(self, backend: Weak<Backend>) {
        loop {
            let Some(current) = backend.upgrade() else {
                return;
            };
            let transition = match self.check(&current).await {
                CheckResult::Healthy => {
                    current.record_check(true, self.options.fall, self.options.rise)
                }
                CheckResult::CannotConnect => {
                    log::debug!(
                        "backend {}: cannot connect for the health check",
                        current.id()
                    );
                    current.mark_down()
                }
                CheckResult::Unready(reason) => {
                    log::debug!("backend {}: health check failed: {reason}", current.id());
                    current.record_check(false, self.options.fall, self.options.rise)
                }
                CheckResult::Unanswered(reason) => {
                    log::debug!("backend {}: health check failed: {reason}", current.id());
                    current.record_unanswered_check(self.options.fall, self.options.rise)
                }
            };
            match transition {
                Some(Transition::WentUp) => {
                    current.start_fresh(self.backends.typical_latency(&current));
                    log::info!("backend {} is up", current.id());
                }
                Some(Transition::WentDown) => {
                    log::warn!("backend {} is down (health check)", current.id())
                }
                None => {}
            }
            let pause = if current.in_transition() {
                self.options.interval / 2
            } else {
                self.options.interval
            };
            drop(current);
            tokio::time::sleep(pause).await;
        }
    }

    async fn check(&self, backend: &Backend) -> CheckResult {
        let uri = Uri::builder()
            .scheme("http")
            .authority(backend.address().authority().clone())
            .path_and_query(self.options.path.as_str())
            .build();
        let request = match uri.map(|uri| Request::get(uri).body(Empty::new())) {
            Ok(Ok(request)) => request,
            Ok(Err(e)) => return CheckResult::Unanswered(e.to_string()),
            Err(e) => return CheckResult::Unanswered(e.to_string()),
        };
        match tokio::time::timeout(self.options.interval, self.client.request(request)).await {
            Ok(Ok(response)) if response.status().is_success() => CheckResult::Healthy,
            Ok(Ok(response)) => CheckResult::Unready(format!("status {}", response.status())),
            Ok(Err(e)) if e.is_connect() => CheckResult::CannotConnect,
            Ok(Err(e)) => CheckResult::Unanswered(e.to_string()),
            Err(_) => CheckResult::Unanswered("timed out".to_string()),
        }
    }
}
