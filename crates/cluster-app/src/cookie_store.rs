//! `SESSION_STORE=cookie`: the whole session state in the cookie itself.
//!
//! actix-session's `CookieSessionStore` stores nothing on the server: the
//! state is serialized into the cookie, which the node encrypts with the shared
//! session key. Any node reads it, and no node can take it back: a logout
//! deletes the browser's copy, but a copy kept elsewhere (replayed by an
//! attacker who stole it) is still a valid login until it expires
//! (docs/three-designs.md measures both).
//!
//! Browsers keep at most about 4 KiB per cookie, and every request carries the
//! cookie, so the state must stay small. [`CappedCookieStore`] refuses a state
//! whose cookie would exceed [`MAX_COOKIE_VALUE_BYTES`] with a
//! [`SessionTooLarge`] error, which [`crate::store_unavailable`] answers with a
//! 413; left alone, actix-session would fail only past 4064 bytes, with a 500.

use std::collections::HashMap;

use actix_session::storage::{
    CookieSessionStore, LoadError, SaveError, SessionKey, SessionStore, UpdateError,
};
use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::error::InternalError;

/// What actix-session keeps per session: key -> JSON-encoded value.
type SessionState = HashMap<String, String>;

/// Largest encrypted cookie value: room left under a browser's 4096 bytes for
/// the cookie's name and attributes, and for the load balancer's own cookie.
pub const MAX_COOKIE_VALUE_BYTES: usize = 3000;

/// A private cookie is base64 of a 12-byte nonce, the ciphertext (as long as
/// the plaintext) and a 16-byte tag (actix-web's `PrivateJar`, AES-256-GCM).
const ENCRYPTION_OVERHEAD_BYTES: usize = 12 + 16;

/// The length of the encrypted cookie value for a serialized state of `plain` bytes.
pub fn encrypted_cookie_len(plain: usize) -> usize {
    (plain + ENCRYPTION_OVERHEAD_BYTES).div_ceil(3) * 4
}

/// The session state would make a cookie larger than [`MAX_COOKIE_VALUE_BYTES`].
#[derive(Debug, thiserror::Error)]
#[error("session too large for its cookie: {cookie_bytes} bytes encrypted, the limit is {MAX_COOKIE_VALUE_BYTES}")]
pub struct SessionTooLarge {
    pub cookie_bytes: usize,
}

/// The [`SessionTooLarge`] behind an error of actix-session's middleware, if any.
///
/// The middleware wraps a store error in an `InternalError` whose cause is not
/// reachable as a type, so it is found by its message, as the versioned store's
/// conflicts are (`{:#?}` of an `anyhow::Error` shows the type's `Debug`).
pub fn too_large_in(err: &actix_web::Error) -> bool {
    let text = if let Some(save) = err.as_error::<InternalError<SaveError>>() {
        format!("{save:#?}")
    } else if let Some(update) = err.as_error::<InternalError<UpdateError>>() {
        format!("{update:#?}")
    } else {
        return false;
    };
    text.contains("SessionTooLarge")
}

/// actix-session's `CookieSessionStore` with a size cap.
#[derive(Clone, Copy, Default)]
pub struct CappedCookieStore;

impl CappedCookieStore {
    fn check_size(state: &SessionState) -> Result<(), SessionTooLarge> {
        let plain = serde_json::to_string(state).map_or(usize::MAX / 2, |json| json.len());
        let cookie_bytes = encrypted_cookie_len(plain);
        if cookie_bytes > MAX_COOKIE_VALUE_BYTES {
            return Err(SessionTooLarge { cookie_bytes });
        }
        Ok(())
    }
}

impl SessionStore for CappedCookieStore {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<SessionState>, LoadError> {
        CookieSessionStore::default().load(session_key).await
    }

    async fn save(
        &self,
        session_state: SessionState,
        ttl: &CookieDuration,
    ) -> Result<SessionKey, SaveError> {
        CappedCookieStore::check_size(&session_state)
            .map_err(|err| SaveError::Other(err.into()))?;
        CookieSessionStore::default().save(session_state, ttl).await
    }

    async fn update(
        &self,
        session_key: SessionKey,
        session_state: SessionState,
        ttl: &CookieDuration,
    ) -> Result<SessionKey, UpdateError> {
        CappedCookieStore::check_size(&session_state)
            .map_err(|err| UpdateError::Other(err.into()))?;
        CookieSessionStore::default()
            .update(session_key, session_state, ttl)
            .await
    }

    async fn update_ttl(
        &self,
        session_key: &SessionKey,
        ttl: &CookieDuration,
    ) -> Result<(), anyhow::Error> {
        CookieSessionStore::default()
            .update_ttl(session_key, ttl)
            .await
    }

    /// Nothing to delete: the state is in the cookie, which only the browser holds.
    async fn delete(&self, session_key: &SessionKey) -> Result<(), anyhow::Error> {
        CookieSessionStore::default().delete(session_key).await
    }
}

#[cfg(test)]
mod tests {
    use actix_web::HttpResponse;

    use super::*;

    #[actix_web::test]
    async fn a_state_over_the_cap_is_refused_and_found_through_the_middleware_wrapping() {
        let store = CappedCookieStore;
        let ttl = CookieDuration::seconds(60);
        let small = HashMap::from([("user".to_string(), "\"alice\"".to_string())]);
        assert!(store.save(small, &ttl).await.is_ok());
        let big = HashMap::from([("items".to_string(), "x".repeat(2500))]);
        let err = store.save(big, &ttl).await.unwrap_err();
        let wrapped: actix_web::Error =
            InternalError::from_response(err, HttpResponse::InternalServerError().finish()).into();
        assert!(too_large_in(&wrapped));
        let redis_down = SaveError::Other(anyhow::anyhow!("connection refused"));
        let wrapped: actix_web::Error =
            InternalError::from_response(redis_down, HttpResponse::InternalServerError().finish())
                .into();
        assert!(!too_large_in(&wrapped));
    }
}
