//! The refusal: why a session write was not applied, and how the node finds out.
//!
//! The store can only report a refusal through the trait's error type, so it returns
//! `UpdateError::Other(anyhow::Error)` wrapping a [`SessionConflict`]. actix-session's
//! middleware then wraps *that* in `actix_web::error::InternalError` with an empty 500
//! response, and InternalError keeps its cause private: no downcast reaches it. What stays
//! visible is its `Debug` text, so [`conflict_in`] checks that the error is an
//! `InternalError<UpdateError>` and looks there for the conflict's message. It asks for the
//! alternate form (`{:#?}`), in which anyhow shows the cause's own `Debug` — ours carries the
//! message — and no backtrace: the plain form would also resolve, symbol by symbol, the
//! backtrace anyhow captured whenever `RUST_BACKTRACE` is set, and that takes milliseconds
//! of a worker's time on every 409. A node turns such an error into 409 in a middleware outside the session
//! middleware; a wrapping store (timeouts, metrics) sees the typed error directly and can
//! use [`conflict_in_update`].

use std::fmt;

use actix_session::storage::UpdateError;
use actix_web::error::InternalError;

/// Why a session write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictReason {
    /// Another request wrote the session after this one read it. Retrying on fresh state
    /// is safe.
    Stale,
    /// The session no longer exists: logged out, renewed or expired. It is not re-created.
    Gone,
}

impl ConflictReason {
    /// A short name for metric labels and logs: `"stale"` or `"gone"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictReason::Stale => "stale",
            ConflictReason::Gone => "gone",
        }
    }
}

/// A session write refused by the compare-and-set: nothing was written.
#[derive(Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub struct SessionConflict {
    pub reason: ConflictReason,
}

/// Includes the message: [`conflict_in`] finds the conflict in the `Debug` text.
impl fmt::Debug for SessionConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionConflict({:?}: {self})", self.reason)
    }
}

impl fmt::Display for SessionConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // conflict_in finds a conflict by this text: each message must stay unique.
        f.write_str(match self.reason {
            ConflictReason::Stale => {
                "session write refused: the session changed since this request read it"
            }
            ConflictReason::Gone => {
                "session write refused: the session no longer exists (logged out or expired)"
            }
        })
    }
}

/// The conflict inside an error returned by [`crate::VersionedRedisStore`]'s `update`.
pub fn conflict_in_update(err: &UpdateError) -> Option<&SessionConflict> {
    match err {
        UpdateError::Other(cause) => cause.downcast_ref(),
        UpdateError::Serialization(_) => None,
    }
}

/// The conflict inside an error that actix-session's middleware returned.
///
/// Use it in a middleware wrapped *outside* `SessionMiddleware`: a `Some` means the
/// handler ran but its session changes were refused — answer 409 so the client can retry.
pub fn conflict_in(err: &actix_web::Error) -> Option<SessionConflict> {
    let update_error = err.as_error::<InternalError<UpdateError>>()?;
    let text = format!("{update_error:#?}");
    [ConflictReason::Stale, ConflictReason::Gone]
        .into_iter()
        .map(|reason| SessionConflict { reason })
        .find(|conflict| text.contains(&conflict.to_string()))
}

#[cfg(test)]
mod tests {
    use actix_web::HttpResponse;

    use super::*;

    /// Wraps `err` the way actix-session's middleware does (its private `e500`).
    fn as_middleware_error(err: UpdateError) -> actix_web::Error {
        InternalError::from_response(err, HttpResponse::InternalServerError().finish()).into()
    }

    #[test]
    fn each_reason_is_found_through_the_middleware_wrapping() {
        for reason in [ConflictReason::Stale, ConflictReason::Gone] {
            let err = UpdateError::Other(SessionConflict { reason }.into());
            assert_eq!(conflict_in_update(&err), Some(&SessionConflict { reason }));
            assert_eq!(
                conflict_in(&as_middleware_error(err)),
                Some(SessionConflict { reason })
            );
        }
    }

    #[test]
    fn other_failures_are_not_conflicts() {
        let redis_down = UpdateError::Other(anyhow::anyhow!("connection refused"));
        assert_eq!(conflict_in_update(&redis_down), None);
        assert_eq!(conflict_in(&as_middleware_error(redis_down)), None);
        let unversioned = UpdateError::Other(crate::UnversionedState.into());
        assert_eq!(conflict_in(&as_middleware_error(unversioned)), None);
        let not_an_update = actix_web::error::ErrorConflict("session write refused");
        assert_eq!(conflict_in(&not_an_update), None);
    }
}
