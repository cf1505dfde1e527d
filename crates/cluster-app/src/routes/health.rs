//! `GET /healthz` (liveness) and `GET /readyz` (readiness).
//!
//! Liveness says "the process serves HTTP": restarting it would not help
//! with anything else. Readiness says "send me traffic": Redis answers and
//! the node is not draining (a node whose sessions need no Redis, `memory` or
//! `cookie`, is ready unless draining). A load balancer routes on readiness.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "node": state.node_id, "status": "ok" }))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.drain.is_draining() {
        return HttpResponse::ServiceUnavailable()
            .json(json!({ "node": state.node_id, "status": "draining" }));
    }
    let redis_answers = match &state.redis {
        Some(pool) => pool.ping().await,
        None => true,
    };
    if !redis_answers {
        return HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, "1"))
            .json(json!({ "node": state.node_id, "status": "redis unavailable" }));
    }
    HttpResponse::Ok().json(json!({ "node": state.node_id, "status": "ready" }))
}
