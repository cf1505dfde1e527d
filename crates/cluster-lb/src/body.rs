//! The response body type shared by the proxy and the admin API, and the responses the
//! balancer makes itself (JSON errors and answers, never for shared caches).

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A JSON response, e.g. `json(StatusCode::OK, &value)`.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<ProxyBody> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    not_for_caches(response.headers_mut());
    response
}

/// What the balancer answers itself (errors, admin state, metrics) describes this moment and
/// this balancer: a shared cache in front of it must not keep it, nor a browser guess its type.
pub fn not_for_caches(headers: &mut header::HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// The error shape of every response the balancer makes itself: `{"error": "..."}`.
pub fn error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    json(status, &serde_json::json!({ "error": message }))
}
