//! The admin API, on its own listener so it is never exposed by accident with the proxy port.
//!
//! * `GET /healthz` — 200 while the balancer runs.
//! * `GET /backends` — every backend with its state, counters and `source` (`static`, `admin`,
//!   `dns:NAME`). A backend found in DNS that is removed here is found again at the next
//!   resolution while DNS still lists it; drain it instead to keep it out. Beside the list,
//!   `panic` (true while too few backends are healthy and all that answer are routed to) and
//!   `panic_threshold_percent`.
//! * `POST /backends` `{"address":"host:port"}` — add one (201).
//! * `DELETE /backends/{id}` — remove one; its in-flight requests finish.
//! * `POST /backends/{id}/drain` — no new requests; in-flight ones finish.
//! * `POST /backends/{id}/enable` — undo a drain.
//! * `GET /metrics` — Prometheus text.
//! * `/dashboard` — a live page of all this, with its event stream (`dashboard.rs`).
//!
//! Mutating calls need `Authorization: Bearer <token>` when a token is configured (and start-up
//! refuses a non-loopback admin address without one); so does everything under `/dashboard`,
//! which also takes the token as `?token=` (a browser's event stream cannot send headers). A
//! backend's id is its address as given.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::backend::{Backend, BackendAddress, Origin};
use crate::backend_set::{BackendSet, ChangeError};
use crate::body::{self, ProxyBody};
use crate::body_limits::BodyError;
use crate::dashboard::Dashboard;
use crate::health::HealthChecker;
use crate::metrics::Metrics;
use crate::panic_mode::Routing;

/// Admin request bodies are tiny; anything bigger is a mistake.
const MAX_ADMIN_BODY: usize = 16 * 1024;

pub struct Admin {
    backends: Arc<BackendSet>,
    checker: HealthChecker,
    metrics: Arc<Metrics>,
    dashboard: Dashboard,
    token: Option<String>,
    /// A request body must have arrived within this, or the connection is answered 408 and
    /// freed: the admin listener has few connections, and a stalled upload must not hold one.
    body_deadline: Duration,
}

#[derive(Deserialize)]
struct NewBackend {
    address: String,
}

impl Admin {
    pub fn new(
        backends: Arc<BackendSet>,
        checker: HealthChecker,
        metrics: Arc<Metrics>,
        dashboard: Dashboard,
        token: Option<String>,
        body_deadline: Duration,
    ) -> Admin {
        Admin {
            backends,
            checker,
            metrics,
            dashboard,
            token,
            body_deadline,
        }
    }

    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<ProxyBody> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        if let Some(rest) = dashboard_path(&path) {
            if !self.authorized(&request) && !self.token_in_query(&request) {
                return unauthorized();
            }
            return self.dashboard.handle(request, rest).await;
        }
        if method != Method::GET && !self.authorized(&request) {
            return unauthorized();
        }
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (&method, segments.as_slice()) {
            (&Method::GET, ["healthz"]) => body::json(StatusCode::OK, &json!({ "status": "ok" })),
            (&Method::GET, ["metrics"]) => {
                let mut response = Response::new(body::full(self.metrics.render()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                body::not_for_caches(response.headers_mut());
                response
            }
            (&Method::GET, ["backends"]) => {
                let snapshot = self.backends.snapshot();
                let list: Vec<Value> = snapshot.iter().map(|b| describe(b)).collect();
                let panic = self.backends.routing(&snapshot) == Routing::Panic;
                let threshold = self.backends.panic_threshold().percent();
                body::json(
                    StatusCode::OK,
                    &json!({
                        "backends": list,
                        "panic": panic,
                        "panic_threshold_percent": threshold,
                    }),
                )
            }
            (&Method::POST, ["backends"]) => self.add(request).await,
            (&Method::DELETE, ["backends", id]) => match self.backends.remove(id) {
                Ok(removed) => {
                    log::info!("admin: removed backend {id}");
                    body::json(StatusCode::OK, &json!({ "removed": describe(&removed) }))
                }
                Err(e) => change_error(e),
            },
            (&Method::POST, ["backends", id, action @ ("drain" | "enable")]) => {
                match self.backends.find(id) {
                    Some(backend) => {
                        backend.set_draining(*action == "drain");
                        log::info!("admin: {action} backend {id}");
                        body::json(StatusCode::OK, &describe(&backend))
                    }
                    None => change_error(ChangeError::NotFound(id.to_string())),
                }
            }
            _ => body::error(StatusCode::NOT_FOUND, "no such admin endpoint"),
        }
    }

    async fn add(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let collect = Limited::new(request.into_body(), MAX_ADMIN_BODY).collect();
        let bytes = match tokio::time::timeout(self.body_deadline, collect).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(_)) => return BodyError::TooLarge.response(),
            Err(_) => return BodyError::Timeout.response(),
        };
        let new: NewBackend = match serde_json::from_slice(&bytes) {
            Ok(new) => new,
            Err(e) => {
                return body::error(
                    StatusCode::BAD_REQUEST,
                    &format!("expected {{\"address\":\"host:port\"}}: {e}"),
                )
            }
        };
        let address = match BackendAddress::parse(&new.address) {
            Ok(address) => address,
            Err(e) => return body::error(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        match self.backends.add(address, Origin::Admin) {
            Ok(backend) => {
                self.checker.watch(&backend);
                log::info!("admin: added backend {}", backend.id());
                body::json(StatusCode::CREATED, &describe(&backend))
            }
            Err(e) => change_error(e),
        }
    }

    fn authorized(&self, request: &Request<Incoming>) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        constant_time_eq(presented.as_bytes(), expected.as_bytes())
    }

    /// The dashboard's other way to present the token: `?token=` (URL-encoded).
    fn token_in_query(&self, request: &Request<Incoming>) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        let query = request.uri().query().unwrap_or("");
        form_urlencoded::parse(query.as_bytes()).any(|(name, value)| {
            name == "token" && constant_time_eq(value.as_bytes(), expected.as_bytes())
        })
    }
}

/// `/dashboard` and what is under it, as the path after `/dashboard` without its slashes.
fn dashboard_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/dashboard")?;
    if rest.is_empty() || rest.starts_with('/') {
        Some(rest.trim_matches('/'))
    } else {
        None
    }
}

fn unauthorized() -> Response<ProxyBody> {
    let mut response = body::error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn describe(backend: &Backend) -> Value {
    json!({
        "id": backend.id(),
        "address": backend.address().as_str(),
        "source": backend.origin().to_string(),
        "state": backend.state().as_str(),
        "in_flight": backend.in_flight(),
        "ewma_ms": (backend.ewma().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        "requests": backend.requests(),
        "failures": backend.failures(),
    })
}

fn change_error(error: ChangeError) -> Response<ProxyBody> {
    let status = match error {
        ChangeError::Exists(_) => StatusCode::CONFLICT,
        ChangeError::NotFound(_) => StatusCode::NOT_FOUND,
    };
    body::error(status, &error.to_string())
}

/// Compares without an early exit, so response timing does not reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
