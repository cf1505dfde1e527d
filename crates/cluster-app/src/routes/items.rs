//! `PUT /session/items/{key}` and `GET /session/items`: small client state.
//!
//! Sessions are read from Redis on every request, so their size is a cost
//! paid again and again; these caps keep one session under ~260 KiB. A
//! refused write leaves the stored session exactly as it was (nothing is
//! inserted, so actix-session writes nothing).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use crate::errors::ApiError;
use crate::session_data::{SessionData, ITEMS};
use crate::state::AppState;

/// Largest value, serialized as JSON; over it -> 413.
pub const MAX_VALUE_BYTES: usize = 4096;
/// Most items per session; a new key past it -> 400.
pub const MAX_ITEMS: usize = 64;
/// Longest key, in characters; over it -> 400.
pub const MAX_KEY_CHARS: usize = 64;

pub async fn put(
    state: web::Data<AppState>,
    session: SessionData,
    key: web::Path<String>,
    value: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let key = key.into_inner();
    if key.chars().count() > MAX_KEY_CHARS {
        return Err(ApiError::bad_request(
            &state,
            format!("item key longer than {MAX_KEY_CHARS} characters"),
        ));
    }
    let value = value.into_inner();
    let size = serde_json::to_string(&value).map_or(usize::MAX, |s| s.len());
    if size > MAX_VALUE_BYTES {
        return Err(ApiError::new(
            &state,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("item value is {size} bytes as JSON; the limit is {MAX_VALUE_BYTES}"),
        ));
    }
    let mut items = session.items();
    if !items.contains_key(&key) && items.len() >= MAX_ITEMS {
        return Err(ApiError::bad_request(
            &state,
            format!("the session already holds {MAX_ITEMS} items"),
        ));
    }
    items.insert(key.clone(), value);
    let count = items.len();
    session.insert(ITEMS, items)?;
    Ok(HttpResponse::Ok().json(json!({ "node": state.node_id, "key": key, "items": count })))
}

pub async fn list(state: web::Data<AppState>, session: SessionData) -> HttpResponse {
    let items = session.items();
    HttpResponse::Ok().json(json!({ "node": state.node_id, "items": items }))
}
