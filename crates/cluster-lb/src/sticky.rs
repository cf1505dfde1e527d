//! Optional cookie stickiness: the first response sets `lb_backend=<token>` and later requests
//! carrying it go to the same backend while it is eligible.
//!
//! Off by default: the cluster keeps sessions in Redis precisely so that any node can serve any
//! request. It exists to compare the two designs. The token is a hash of the backend address,
//! so the cookie does not reveal internal addresses.

use std::sync::Arc;

use hyper::header::{self, HeaderMap, HeaderValue};

use crate::backend::Backend;

const COOKIE: &str = "lb_backend";

/// The eligible backend named by the request's sticky cookie, if any.
pub fn chosen(request_headers: &HeaderMap, backends: &[Arc<Backend>]) -> Option<Arc<Backend>> {
    let token = cookie_token(request_headers)?;
    backends
        .iter()
        .find(|b| b.sticky_token() == token && b.is_eligible())
        .cloned()
}

/// Adds `Set-Cookie` to the response unless the request already pointed at `backend`.
pub fn remember(response_headers: &mut HeaderMap, request_headers: &HeaderMap, backend: &Backend) {
    if cookie_token(request_headers) == Some(backend.sticky_token()) {
        return;
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Lax",
        backend.sticky_token()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response_headers.append(header::SET_COOKIE, value);
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}
