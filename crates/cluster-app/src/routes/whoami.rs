//! `GET /whoami`: what the session holds, read-only.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::session_data::{Items, SessionData};
use crate::state::AppState;

/// The answer, typed: serialized straight to JSON, without building a
/// `serde_json::Value` tree first.
#[derive(Serialize)]
struct WhoAmI<'a> {
    node: &'a str,
    user: Option<String>,
    counter: i64,
    items: Items,
}

/// Reads and never writes: the session is not marked changed, so
/// actix-session at most refreshes its TTL.
///
/// It answers from the session state alone, so a read costs one Redis round
/// trip; the atomic counter, kept in a key of its own, is read with
/// `GET /counter?mode=atomic`. Only chosen fields are listed, never the raw
/// state, so the plumbing keys (`__version`, `sid`) are not shown.
pub async fn whoami(state: web::Data<AppState>, session: SessionData) -> HttpResponse {
    HttpResponse::Ok().json(WhoAmI {
        node: &state.node_id,
        user: session.user(),
        counter: session.counter(),
        items: session.items(),
    })
}
