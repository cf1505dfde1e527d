//! JSON error responses, the only kind this node sends.
//!
//! Handlers return [`ApiError`]. Errors produced by actix-web itself (a body
//! that is not JSON, an unknown route, a wrong method) come with a plain-text
//! or empty body; [`json_error_body`] rewrites those into the same shape:
//! `{"node": "...", "error": "..."}`.

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{error, web, HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use versioned_session_store::SessionConflict;

use crate::response_headers;
use crate::state::AppState;

/// The header naming the node that answered, on every response.
pub const SERVED_BY: &str = "X-Served-By";

#[derive(Serialize)]
struct ErrorBody<'a> {
    node: &'a str,
    error: &'a str,
}

/// An error answer: status, message, and the node that gives it.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    node_id: String,
    status: StatusCode,
    message: String,
    retry_after: bool,
}

impl ApiError {
    pub fn new(state: &AppState, status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            node_id: state.node_id.clone(),
            status,
            message: message.into(),
            retry_after: false,
        }
    }

    pub fn bad_request(state: &AppState, message: impl Into<String>) -> ApiError {
        ApiError::new(state, StatusCode::BAD_REQUEST, message)
    }

    /// 503 with `Retry-After: 1`: the session store is unreachable or slow; a
    /// retry (possibly on another node) may well succeed.
    pub fn store_unavailable(node_id: &str) -> ApiError {
        ApiError {
            node_id: node_id.to_string(),
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "session store unavailable".to_string(),
            retry_after: true,
        }
    }

    /// 503 with `Retry-After: 1`: the write reached the primary but fewer replicas than
    /// `REDIS_MIN_REPLICAS_ACK` confirmed it in time, so a failover may lose it. It is not
    /// undone: a client that retries a non-idempotent write may apply it twice.
    pub fn write_unconfirmed(node_id: &str) -> ApiError {
        ApiError {
            node_id: node_id.to_string(),
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "write not confirmed by enough Redis replicas".to_string(),
            retry_after: true,
        }
    }

    /// 409: the versioned store refused the session write (another request
    /// wrote first, or the session was logged out meanwhile). Nothing of the
    /// request's session changes was kept; the client may retry on fresh state.
    pub fn session_conflict(node_id: &str, conflict: SessionConflict) -> ApiError {
        ApiError {
            node_id: node_id.to_string(),
            status: StatusCode::CONFLICT,
            message: conflict.to_string(),
            retry_after: false,
        }
    }

    /// 500 for what cannot happen with a sound session (a value that does
    /// not serialize); the details go to the log, not to the client.
    pub fn internal(state: &AppState, what: &str, err: impl std::fmt::Display) -> ApiError {
        log::error!("{what}: {err}");
        ApiError::new(state, StatusCode::INTERNAL_SERVER_ERROR, what)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        // Also set here, not only by `DefaultHeaders`: an error that leaves
        // the middleware stack as `Err` is rendered after `DefaultHeaders` ran.
        response.insert_header((SERVED_BY, self.node_id.as_str()));
        response_headers::insert_into(&mut response);
        if self.retry_after {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        response.json(ErrorBody {
            node: &self.node_id,
            error: &self.message,
        })
    }
}

/// `JsonConfig` error handler: a body that is not the expected JSON becomes
/// a JSON 400 (or 413 when too large, 415 for a wrong content type) that says why.
pub fn json_body_error(err: error::JsonPayloadError, req: &HttpRequest) -> actix_web::Error {
    let status = err.status_code();
    match req.app_data::<web::Data<AppState>>() {
        Some(state) => ApiError::new(state, status, format!("invalid JSON body: {err}")).into(),
        None => err.into(),
    }
}

/// `ErrorHandlers` default handler: gives every 4xx/5xx response that is not
/// JSON yet (404 from routing, 405, extractor errors) a JSON body, keeping its
/// status and headers.
pub fn json_error_body<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let node_id = res
        .request()
        .app_data::<web::Data<AppState>>()
        .map(|state| state.node_id.clone())
        .unwrap_or_default();
    let status = res.status();
    let message = status.canonical_reason().unwrap_or("error").to_lowercase();
    let body = serde_json::to_string(&ErrorBody {
        node: &node_id,
        error: &message,
    })
    .unwrap_or_else(|_| String::from("{}"));
    let res = res.map_body(|head, _old_body| {
        head.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        EitherBody::right(BoxBody::new(body))
    });
    Ok(ErrorHandlerResponse::Response(res))
}
