//! Headers every response carries: never stored by a shared cache, no MIME sniffing.
//!
//! Almost every answer is personal: it reads the session (`/whoami`, `/counter`,
//! `/session/items`) or sets its cookie (`/login`). Without `Cache-Control` a shared
//! cache (a CDN, a corporate proxy) may store one user's answer and serve it to the
//! next, `Set-Cookie` included. So every response, errors and probes too, says
//! `Cache-Control: no-store`, `Vary: Cookie` (for a cache that ignores `no-store`, the
//! answer depends on the cookie) and `X-Content-Type-Options: nosniff` (JSON is never
//! to be run as a script). The same rule for every route is simpler than knowing which
//! one is personal, and probes lose nothing by not being cached.

use actix_web::http::header::{self, HeaderName};
use actix_web::middleware::DefaultHeaders;
use actix_web::HttpResponseBuilder;

const NOT_CACHEABLE: [(HeaderName, &str); 3] = [
    (header::CACHE_CONTROL, "no-store"),
    (header::VARY, "Cookie"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
];

/// The headers on every response that leaves the middleware stack as a response.
pub fn default_headers() -> DefaultHeaders {
    NOT_CACHEABLE
        .into_iter()
        .fold(DefaultHeaders::new(), |headers, header| headers.add(header))
}

/// The same headers for a response rendered from an `Err` after the middleware
/// stack (see [`crate::errors::ApiError`]).
pub fn insert_into(response: &mut HttpResponseBuilder) {
    for header in NOT_CACHEABLE {
        response.insert_header(header);
    }
}
