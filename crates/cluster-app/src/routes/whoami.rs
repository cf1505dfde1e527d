//! `GET /whoami`: what the session holds, read-only.

use actix_session::Session;
use actix_web::{web, HttpResponse};
use serde_json::json;
use versioned_session_store::SESSION_ID_KEY;

use crate::errors::ApiError;
use crate::session_data;
use crate::state::AppState;

/// Reads and never writes: the session is not marked changed, so
/// actix-session at most refreshes its TTL.
///
/// `atomic_counter` lives in its own Redis key, named by the session id that
/// login stores: one more Redis read, made only when the session has that id
/// (a logged-in session). Only the plumbing keys of the state (`__version`,
/// `sid`) are never shown: the answer lists chosen fields, not the state.
pub async fn whoami(
    state: web::Data<AppState>,
    session: Session,
) -> Result<HttpResponse, ApiError> {
    let metrics = &state.metrics;
    let atomic_counter = match session_data::read::<String>(&session, SESSION_ID_KEY, metrics) {
        Some(session_id) => state.counter.value(&session_id).await.map_err(|err| {
            log::warn!("atomic counter read failed: {err}");
            ApiError::store_unavailable(&state.node_id)
        })?,
        None => 0,
    };
    Ok(HttpResponse::Ok().json(json!({
        "node": state.node_id,
        "user": session_data::user(&session, metrics),
        "counter": session_data::counter(&session, metrics),
        "atomic_counter": atomic_counter,
        "items": session_data::items(&session, metrics),
    })))
}
