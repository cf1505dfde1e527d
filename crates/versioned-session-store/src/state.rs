//! How a session is laid out in Redis, and how its version travels through the middleware.
//!
//! Each session is a Redis hash under `prefix + session key` with two fields:
//!
//! * `state` — the session's map as JSON, exactly the bytes the stock store would write;
//! * `version` — an integer, 1 when the session is created, +1 on every accepted update.
//!
//! A hash rather than one JSON document with a version inside: the compare-and-set script
//! only has to `HGET` the version — it never decodes the state, however large — and
//! `HINCRBY` bumps it in place.
//!
//! actix-session's `SessionStore` trait has no place for a version: `load` returns a
//! `HashMap<String, String>` and `update` receives one. So `load` puts the version *into*
//! that map under [`VERSION_KEY`], the middleware hands the map to the handler and back to
//! `update` without looking inside, and `update` takes it out again before writing. The
//! version is never stored inside `state` itself.

use std::collections::HashMap;

use thiserror::Error;

/// The session-state key under which `load` hands the version to the middleware.
///
/// Its value is the version as a JSON number, so `session.get::<u64>(VERSION_KEY)` reads it.
/// Handlers must leave it alone; [`is_reserved`] helps hide it from users.
pub const VERSION_KEY: &str = "__version";

/// Session-state keys that belong to the plumbing, not to the user: hide them from
/// listings such as `/whoami`'s `items`.
pub const RESERVED_KEYS: &[&str] = &[VERSION_KEY, crate::counter::SESSION_ID_KEY];

/// True for a key of [`RESERVED_KEYS`].
pub fn is_reserved(key: &str) -> bool {
    RESERVED_KEYS.contains(&key)
}

/// An update whose state carries no readable [`VERSION_KEY`], so it cannot be checked.
///
/// The middleware only calls `update` for a session that `load` found, and `load` always
/// inserts the version; it goes missing when a handler empties the session with
/// `Session::clear()` (use `purge()` to log out, `renew()` to start over) or when the stored
/// state could not be decoded. This is a bug to fix, not a race to retry: the node should
/// answer it like any other store failure, not with 409.
#[derive(Debug, Error)]
#[error("session write refused: the state carries no valid `{VERSION_KEY}` (was it emptied with Session::clear()? use purge() or renew())")]
pub struct UnversionedState;

/// Serializes the state for Redis, leaving out the version that rides along with it.
pub(crate) fn encode(state: &mut HashMap<String, String>) -> serde_json::Result<String> {
    state.remove(VERSION_KEY);
    serde_json::to_string(state)
}

/// Stored bytes that are not a session: anything may sit under a session's key (written
/// by hand, by another program, by an older version), and none of it must lock a cookie
/// out. Its `Display` says what is wrong and where, never what the bytes are: a session
/// may hold secrets, and serde_json's messages quote the offending value.
#[derive(Debug, Error)]
pub enum InvalidState {
    #[error("the state is not a JSON map of strings ({category:?} error at line {line}, column {column})")]
    NotAStringMap {
        category: serde_json::error::Category,
        line: usize,
        column: usize,
    },
    #[error("the version is not an unsigned integer")]
    BadVersion,
    #[error("the session hash lacks its state or its version, or has other fields")]
    Incomplete,
    #[error("the key holds another Redis type than the store writes")]
    WrongType,
}

/// Parses a session's state as actix-session stores it: a JSON map of strings, UTF-8.
pub fn parse_state(json: &[u8]) -> Result<HashMap<String, String>, InvalidState> {
    serde_json::from_slice(json).map_err(|err| InvalidState::NotAStringMap {
        category: err.classify(),
        line: err.line(),
        column: err.column(),
    })
}

/// Parses the stored state and version, and inserts the version for the middleware to carry.
pub(crate) fn decode(json: &[u8], version: &[u8]) -> Result<HashMap<String, String>, InvalidState> {
    let version: u64 = std::str::from_utf8(version)
        .ok()
        .and_then(|version| version.parse().ok())
        .ok_or(InvalidState::BadVersion)?;
    let mut state = parse_state(json)?;
    state.insert(VERSION_KEY.to_string(), version.to_string());
    Ok(state)
}

/// Removes the version `load` inserted and returns it.
pub(crate) fn take_version(state: &mut HashMap<String, String>) -> Result<u64, UnversionedState> {
    state
        .remove(VERSION_KEY)
        .and_then(|version| version.parse().ok())
        .ok_or(UnversionedState)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_rides_in_the_state_but_is_never_stored_in_it() {
        let mut loaded = decode(br#"{"user":"\"alice\""}"#, b"7").unwrap();
        assert_eq!(loaded[VERSION_KEY], "7");

        assert_eq!(take_version(&mut loaded).unwrap(), 7);
        loaded.insert(VERSION_KEY.to_string(), "7".to_string());
        assert_eq!(encode(&mut loaded).unwrap(), r#"{"user":"\"alice\""}"#);
    }

    #[test]
    fn what_is_not_a_session_is_refused_without_quoting_it() {
        for (json, version) in [
            (&b"\xff\xfe"[..], &b"1"[..]),
            (b"{not json", b"1"),
            (br#"{"user":"secret-value","n":5}"#, b"1"),
            (br#""secret-value""#, b"1"),
            (b"{}", b"x"),
        ] {
            let err = decode(json, version).unwrap_err().to_string();
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn a_state_without_a_number_for_version_is_unversioned() {
        let mut cleared = HashMap::new();
        assert!(take_version(&mut cleared).is_err());
        let mut garbled = HashMap::from([(VERSION_KEY.to_string(), "x".to_string())]);
        assert!(take_version(&mut garbled).is_err());
    }
}
