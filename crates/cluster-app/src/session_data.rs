//! The session's schema: which keys the node keeps and what they hold.
//!
//! actix-session stores each value as its own JSON string. A value that does
//! not decode as the expected type (written by an older version, or edited
//! by hand) is treated as absent and counted, never answered with a 500.

use actix_session::Session;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::metrics::Metrics;

/// Name of the logged-in user (a string).
pub const USER: &str = "user";
/// Unix time of the login, in seconds.
pub const LOGIN_AT: &str = "login_at";
/// The demo counter (an integer).
pub const COUNTER: &str = "counter";
/// Small client state, like a cart: a JSON object.
pub const ITEMS: &str = "items";

pub type Items = Map<String, Value>;

/// Reads `key`, treating an undecodable value as absent.
pub fn read<T: DeserializeOwned>(session: &Session, key: &str, metrics: &Metrics) -> Option<T> {
    session.get::<T>(key).unwrap_or_else(|_err| {
        // Not the error itself: serde's messages quote the value, and a
        // session's values are the user's, not the log's.
        log::warn!(
            "session value {key:?} does not decode as {}, ignoring it",
            std::any::type_name::<T>()
        );
        metrics.count_corrupt_session();
        None
    })
}

pub fn user(session: &Session, metrics: &Metrics) -> Option<String> {
    read(session, USER, metrics)
}

pub fn counter(session: &Session, metrics: &Metrics) -> i64 {
    read(session, COUNTER, metrics).unwrap_or(0)
}

pub fn items(session: &Session, metrics: &Metrics) -> Items {
    read(session, ITEMS, metrics).unwrap_or_default()
}
