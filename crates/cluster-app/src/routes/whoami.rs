//! `GET /whoami`: what the session holds, read-only.

use actix_session::Session;
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::session_data;
use crate::state::AppState;

/// Reads and never writes: the session is not marked changed, so
/// actix-session at most refreshes its TTL.
///
/// It answers from the session state alone, so a read costs one Redis round
/// trip; the atomic counter, kept in a key of its own, is read with
/// `GET /counter?mode=atomic`. Only chosen fields are listed, never the raw
/// state, so the plumbing keys (`__version`, `sid`) are not shown.
pub async fn whoami(state: web::Data<AppState>, session: Session) -> HttpResponse {
    let metrics = &state.metrics;
    HttpResponse::Ok().json(json!({
        "node": state.node_id,
        "user": session_data::user(&session, metrics),
        "counter": session_data::counter(&session, metrics),
        "items": session_data::items(&session, metrics),
    }))
}
