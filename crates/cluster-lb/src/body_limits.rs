//! How much, and for how long, a client may take to send a request body, and why a body was
//! refused. Both ways the proxy takes a body (`request_body.rs` buffers one, `streamed_body.rs`
//! streams one) and the admin API share these limits and these answers, so a slow or oversized
//! body gets the same 408 or 413 whichever path it took.

use std::fmt;
use std::time::Duration;

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use crate::body::{self, ProxyBody};

/// How much, and for how long, one body may be read.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body of one request.
    pub max_bytes: usize,
    /// Longest time to receive a whole body.
    pub timeout: Duration,
    /// Longest wait for the next chunk of a body.
    pub idle_timeout: Duration,
}

/// Why a body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    /// The whole body, or its next chunk, did not arrive in time.
    Timeout,
    /// The shared budget cannot hold this body now.
    OverBudget,
    /// The client's connection broke or sent a malformed body.
    Unreadable,
}

impl BodyError {
    /// The label of `lb_request_bodies_refused_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            BodyError::TooLarge => "too_large",
            BodyError::Timeout => "timeout",
            BodyError::OverBudget => "over_budget",
            BodyError::Unreadable => "unreadable",
        }
    }

    /// The response to the client. The rest of the body is left unread, so the connection is
    /// closed after it.
    pub fn response(self) -> Response<ProxyBody> {
        let mut response = match self {
            BodyError::TooLarge => {
                body::error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
            }
            BodyError::Timeout => body::error(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            ),
            BodyError::OverBudget => {
                let mut response = body::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many request bodies in progress; try again shortly",
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                response
            }
            BodyError::Unreadable => {
                body::error(StatusCode::BAD_REQUEST, "request body could not be read")
            }
        };
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BodyError::TooLarge => "request body too large",
            BodyError::Timeout => "request body not received in time",
            BodyError::OverBudget => "request body budget spent",
            BodyError::Unreadable => "request body could not be read",
        })
    }
}

impl std::error::Error for BodyError {}
