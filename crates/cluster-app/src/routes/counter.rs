//! `POST /counter/incr`.

use actix_session::Session;
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::errors::ApiError;
use crate::session_data::{self, COUNTER};
use crate::state::AppState;

/// Get, add one, insert. Not `Session::update()`: in actix-session 0.11 it
/// changes the value in memory without marking the session changed, so on an
/// existing session the new value is never saved.
pub async fn incr(state: web::Data<AppState>, session: Session) -> Result<HttpResponse, ApiError> {
    let counter = session_data::counter(&session, &state.metrics).saturating_add(1);
    super::insert(&state, &session, COUNTER, counter)?;
    Ok(HttpResponse::Ok().json(json!({ "node": state.node_id, "counter": counter })))
}
