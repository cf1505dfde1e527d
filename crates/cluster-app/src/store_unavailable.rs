//! Middleware: session-store errors become JSON answers a client can act on.
//!
//! actix-session's middleware answers any store failure with an `Err` that
//! renders as an empty 500 (`InternalError` around the store's error). This
//! middleware sits directly around it and tells two cases apart:
//!
//! - the cookie store refused a state too large for its cookie
//!   (`SESSION_STORE=cookie`): `413 {"node","error"}`; the browser keeps the
//!   cookie it had. Checked first: it arrives in the same wrapper types as the rest.
//! - the versioned store refused the write (`SESSION_STORE=redis-versioned`):
//!   `409 {"node","error"}`. The handler ran, its session changes were not
//!   kept, and retrying on fresh state is right. Checked first, because the
//!   refusal arrives in the same wrapper type as a failing Redis.
//! - the write reached Redis but fewer replicas than `REDIS_MIN_REPLICAS_ACK`
//!   confirmed it: `503 {"node","error":"write not confirmed by enough Redis
//!   replicas"}` with `Retry-After: 1`. Checked before the next case, which
//!   arrives in the same wrapper types.
//! - the store failed or timed out: `503 {"node","error":"session store
//!   unavailable"}` with `Retry-After: 1`, which tells a client (or a load
//!   balancer) that trying again is right.
//!
//! Both stay an `Err` on the way out: a middleware cannot build a response
//! once the request has moved into the inner service (cloning the request
//! beforehand breaks routing). [`ApiError`] renders it, `X-Served-By` included.

use actix_session::storage::{SaveError, UpdateError};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::web;
use versioned_session_store::{conflict_in, unconfirmed_in};

use crate::cookie_store::{too_large_in, MAX_COOKIE_VALUE_BYTES};
use crate::errors::ApiError;
use crate::state::AppState;

pub async fn map_store_errors(
    state: web::Data<AppState>,
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    next.call(req).await.map_err(|err| {
        if too_large_in(&err) {
            ApiError::new(
                &state,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the session would not fit in its cookie (at most {MAX_COOKIE_VALUE_BYTES} bytes encrypted); nothing was changed"),
            )
            .into()
        } else if let Some(conflict) = conflict_in(&err) {
            ApiError::session_conflict(&state.node_id, conflict).into()
        } else if unconfirmed_in(&err) {
            ApiError::write_unconfirmed(&state.node_id).into()
        } else if is_session_store_failure(&err) {
            ApiError::store_unavailable(&state.node_id).into()
        } else {
            log::error!("request failed in the session layer: {err}");
            ApiError::new(&state, StatusCode::INTERNAL_SERVER_ERROR, "internal error").into()
        }
    })
}

/// The error types actix-session 0.11 wraps store failures in: `load`,
/// `update_ttl` and `delete` fail with `anyhow::Error`, `save` and `update`
/// with their own types.
fn is_session_store_failure(err: &actix_web::Error) -> bool {
    err.as_error::<InternalError<anyhow::Error>>().is_some()
        || err.as_error::<InternalError<SaveError>>().is_some()
        || err.as_error::<InternalError<UpdateError>>().is_some()
}
