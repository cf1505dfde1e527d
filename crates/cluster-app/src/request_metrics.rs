//! The middleware that records every request in the node's
//! [`Metrics`](crate::metrics::Metrics).
//!
//! Apart from `metrics.rs` so that the registry stays a leaf module: the
//! middleware needs the shared [`AppState`] to find the registry, and the
//! state holds the registry.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;

use crate::state::AppState;

/// Counts each request and observes its latency.
///
/// The route label is the matched pattern (`/session/items/{key}`), never the
/// raw path, so a client cannot grow the number of series at will.
pub async fn record_request(
    state: web::Data<AppState>,
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let result = next.call(req).await;
    let status = match &result {
        Ok(res) => res.status(),
        Err(err) => err.as_response_error().status_code(),
    };
    state
        .metrics
        .observe_request(&route, &method, status.as_str(), started);
    result
}
