//! `POST /counter/incr[?mode=atomic]` and `GET /counter[?mode=atomic]`.
//!
//! Two counters, to show the difference (docs/concurrent-writes.md):
//!
//! - `mode=session` (the default) keeps the counter in the session state:
//!   read with the session, written back with it. Concurrent increments of
//!   one session race: the default GETEX store loses some, the versioned store
//!   refuses all but one (409).
//! - `mode=atomic` keeps it in its own Redis key and increments it there
//!   (`INCR`): concurrent increments are all applied, none refused. The
//!   session is only read, for the id that names the counter. A node without
//!   Redis (`SESSION_STORE=memory` or `cookie`) answers it with a 400.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use versioned_session_store::{ensure_session_id, CounterError, SESSION_ID_KEY};

use crate::errors::ApiError;
use crate::session_data::{SessionData, COUNTER};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct ModeQuery {
    mode: Option<String>,
}

enum Mode {
    Session,
    Atomic,
}

impl ModeQuery {
    fn mode(&self, state: &AppState) -> Result<Mode, ApiError> {
        match self.mode.as_deref() {
            None | Some("session") => Ok(Mode::Session),
            Some("atomic") if state.counter.is_none() => Err(ApiError::bad_request(
                state,
                "mode=atomic keeps the counter in Redis; this node's SESSION_STORE uses no Redis",
            )),
            Some("atomic") => Ok(Mode::Atomic),
            Some(other) => Err(ApiError::bad_request(
                state,
                format!("unknown mode {other:?}: use \"session\" (the default) or \"atomic\""),
            )),
        }
    }
}

pub async fn incr(
    state: web::Data<AppState>,
    session: SessionData,
    query: web::Query<ModeQuery>,
) -> Result<HttpResponse, ApiError> {
    let counter = match query.mode(&state)? {
        Mode::Session => increment_in_session(&session)?,
        Mode::Atomic => increment_in_redis(&state, &session).await?,
    };
    Ok(HttpResponse::Ok().json(json!({ "node": state.node_id, "counter": counter })))
}

/// Reads either counter without changing it.
pub async fn get(
    state: web::Data<AppState>,
    session: SessionData,
    query: web::Query<ModeQuery>,
) -> Result<HttpResponse, ApiError> {
    let counter = match query.mode(&state)? {
        Mode::Session => session.counter(),
        Mode::Atomic => match (&state.counter, session.read::<String>(SESSION_ID_KEY)) {
            (Some(counter), Some(session_id)) => {
                counter.value(&session_id).await.map_err(|err| {
                    log::warn!("atomic counter read failed: {err}");
                    ApiError::store_unavailable(&state.node_id)
                })?
            }
            _ => 0,
        },
    };
    Ok(HttpResponse::Ok().json(json!({ "node": state.node_id, "counter": counter })))
}

/// Get, add one, insert. Not `Session::update()`: in actix-session 0.11 it
/// changes the value in memory without marking the session changed, so on an
/// existing session the new value is never saved.
fn increment_in_session(session: &SessionData) -> Result<i64, ApiError> {
    let counter = session.counter().saturating_add(1);
    session.insert(COUNTER, counter)?;
    Ok(counter)
}

/// One `INCR` in Redis. The session id is set at login; a session that has
/// none yet gets one here, which writes the session once.
async fn increment_in_redis(state: &AppState, session: &SessionData) -> Result<i64, ApiError> {
    let Some(counter) = &state.counter else {
        return Err(ApiError::bad_request(state, "mode=atomic needs Redis"));
    };
    let session_id = ensure_session_id(session.session())
        .map_err(|err| ApiError::internal(state, "cannot store the session id", err))?;
    counter.increment(&session_id).await.map_err(|err| {
        log::warn!("atomic counter increment failed: {err}");
        match err {
            CounterError::Unconfirmed(_) => {
                state.metrics.count_unconfirmed_increment();
                ApiError::write_unconfirmed(&state.node_id)
            }
            _ => ApiError::store_unavailable(&state.node_id),
        }
    })
}
