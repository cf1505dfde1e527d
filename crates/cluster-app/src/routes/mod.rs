//! HTTP handlers, one file per concern.
//!
//! Two groups: the probes (`/healthz`, `/readyz`, `/metrics`) never touch the
//! session, so a load balancer's health checks cost no Redis round trip and
//! keep working when the session layer is in trouble; everything else runs
//! under the session middleware.

mod auth;
mod counter;
mod health;
mod items;
mod metrics;
mod whoami;

use actix_web::web;

/// Routes that do not use the session.
pub fn probes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(metrics::metrics));
}

/// Routes that read or write the session.
pub fn session_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::post().to(auth::login))
        .route("/logout", web::post().to(auth::logout))
        .route("/whoami", web::get().to(whoami::whoami))
        .route("/counter", web::get().to(counter::get))
        .route("/counter/incr", web::post().to(counter::incr))
        .route("/session/items", web::get().to(items::list))
        .route("/session/items/{key}", web::put().to(items::put));
}
