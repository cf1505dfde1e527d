//! The session's schema, and the extractor handlers read it through.
//!
//! actix-session stores each value as its own JSON string. A value that does
//! not decode as the expected type (written by an older version, or edited
//! by hand) is treated as absent and counted, never answered with a 500.
//! Handlers take a [`SessionData`] parameter instead of a bare `Session`, so
//! every read decodes and counts the same way without being handed the
//! metrics.

use std::future::{ready, Ready};

use actix_session::{Session, SessionExt};
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::errors::ApiError;
use crate::state::AppState;

/// Name of the logged-in user (a string).
pub const USER: &str = "user";
/// Unix time of the login, in seconds.
pub const LOGIN_AT: &str = "login_at";
/// The demo counter (an integer).
pub const COUNTER: &str = "counter";
/// Small client state, like a cart: a JSON object.
pub const ITEMS: &str = "items";

pub type Items = Map<String, Value>;

/// The request's session, read and written by the names above.
pub struct SessionData {
    session: Session,
    state: web::Data<AppState>,
}

impl SessionData {
    /// The session itself, for what is not a value: renew, clear, purge.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Reads `key`, treating an undecodable value as absent.
    pub fn read<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.session.get::<T>(key).unwrap_or_else(|_err| {
            // Not the error itself: serde's messages quote the value, and a
            // session's values are the user's, not the log's.
            log::warn!(
                "session value {key:?} does not decode as {}, ignoring it",
                std::any::type_name::<T>()
            );
            self.state.metrics.count_corrupt_session();
            None
        })
    }

    pub fn user(&self) -> Option<String> {
        self.read(USER)
    }

    pub fn counter(&self) -> i64 {
        self.read(COUNTER).unwrap_or(0)
    }

    pub fn items(&self) -> Items {
        self.read(ITEMS).unwrap_or_default()
    }

    /// `Session::insert` fails only when a value does not serialize.
    pub fn insert(&self, key: &str, value: impl Serialize) -> Result<(), ApiError> {
        self.session.insert(key, value).map_err(|err| {
            log::error!("cannot store {key:?} in the session: {err}");
            ApiError::new(
                &self.state,
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot store session value",
            )
        })
    }
}

impl FromRequest for SessionData {
    type Error = actix_web::Error;
    type Future = Ready<Result<SessionData, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let data = match req.app_data::<web::Data<AppState>>() {
            Some(state) => Ok(SessionData {
                session: req.get_session(),
                state: state.clone(),
            }),
            None => {
                log::error!("the node's state is not registered with the app");
                Err(actix_web::error::ErrorInternalServerError(
                    "the node's state is not registered",
                ))
            }
        };
        ready(data)
    }
}
