//! `POST /login` and `POST /logout`.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_session::Session;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use versioned_session_store::ensure_session_id;

use crate::errors::ApiError;
use crate::session_data::{SessionData, LOGIN_AT, USER};
use crate::state::AppState;

const MAX_USER_CHARS: usize = 64;

/// Exactly `{"user": "..."}`: a field the node does not know (`"admin": true`)
/// is refused with a 400 rather than silently ignored, so that a client never
/// believes it set something it did not.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    user: String,
}

/// Logs `user` in under a new session id.
///
/// `renew()` makes actix-session delete the old Redis key and store the state
/// under a fresh one: an id an attacker planted before login (session
/// fixation) is worthless afterwards. State of an anonymous session (a cart)
/// is kept; state of another user who was logged in is not.
///
/// `clear()` is safe with the versioned store only because `renew()` follows:
/// a renewed session is saved as a new one, which needs no version. Cleared
/// and then updated in place, the write would be refused as unversioned.
/// The session id for the atomic counter is set here, where the session is
/// written anyway, so that atomic increments never have to write it.
pub async fn login(
    state: web::Data<AppState>,
    session: SessionData,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let user = body.into_inner().user;
    let valid = !user.trim().is_empty()
        && user.chars().count() <= MAX_USER_CHARS
        && !user.chars().any(char::is_control);
    if !valid {
        return Err(ApiError::bad_request(
            &state,
            format!("user must be 1-{MAX_USER_CHARS} characters, not blank, no control characters"),
        ));
    }
    let previous = session.user();
    if previous.is_some_and(|previous| previous != user) {
        session.session().clear();
    }
    session.session().renew();
    ensure_session_id(session.session())
        .map_err(|err| ApiError::internal(&state, "cannot store the session id", err))?;
    let login_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    session.insert(USER, &user)?;
    session.insert(LOGIN_AT, login_at)?;
    Ok(HttpResponse::Ok()
        .json(json!({ "node": state.node_id, "user": user, "login_at": login_at })))
}

/// Deletes the session from Redis and tells the browser to drop the cookie.
pub async fn logout(state: web::Data<AppState>, session: Session) -> HttpResponse {
    session.purge();
    HttpResponse::Ok().json(json!({ "node": state.node_id, "logged_out": true }))
}
