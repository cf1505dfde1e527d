//! Writes that count only once replicas have them: Redis `WAIT`.
//!
//! Redis replicates asynchronously: the primary answers a write before any replica has it, so a
//! write acknowledged just before the primary dies can be missing from the replica that
//! replaces it. `WAIT n timeout`, sent after a write on the same connection, blocks until `n`
//! replicas have confirmed everything that connection wrote, or until the timeout, and answers
//! how many did. With [`ReplicaAcks`] set, the store and the counter send it in the same round
//! trip as each write ([`query_acknowledged`]) and fail a write fewer replicas confirmed with
//! [`UnconfirmedWrite`], so that the client is not told "done" about what a failover may lose.
//!
//! What it does not promise. A write too few replicas confirmed is not undone: it stays on the
//! primary and may well survive, the client only learns that it may not. A confirmed write is
//! lost if every replica that has it fails before it spreads. And Redis is no consensus system:
//! the replica Sentinel promotes is usually, not provably, the most up to date.

use std::fmt;
use std::time::Duration;

use actix_session::storage::{SaveError, UpdateError};
use actix_web::error::InternalError;
use redis::aio::ConnectionLike;
use redis::{FromRedisValue, Pipeline, RedisError, Value};
use thiserror::Error;

/// How many replicas must confirm each write, and how long to wait for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaAcks {
    /// At least 1.
    pub replicas: u32,
    /// At least 1 ms: `WAIT n 0` would block for ever.
    pub timeout: Duration,
}

/// A write fewer replicas confirmed than [`ReplicaAcks::replicas`]: it is on the primary, and
/// a failover may lose it.
#[derive(Clone, Copy, PartialEq, Eq, Error)]
#[error("write not confirmed by enough replicas ({confirmed} of {wanted} within {timeout:?})")]
pub struct UnconfirmedWrite {
    pub wanted: u32,
    pub confirmed: u32,
    pub timeout: Duration,
}

/// Includes the message: [`unconfirmed_in`] finds it in the `Debug` text, as
/// [`crate::conflict_in`] finds a conflict.
impl fmt::Debug for UnconfirmedWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UnconfirmedWrite({self})")
    }
}

/// Why a write with [`query_acknowledged`] failed.
#[derive(Debug, Error)]
pub enum WriteError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error(transparent)]
    Unconfirmed(#[from] UnconfirmedWrite),
}

impl WriteError {
    /// The cause itself as an `anyhow::Error`, so that a caller can downcast it to
    /// [`UnconfirmedWrite`] (or `RedisError`).
    pub fn into_anyhow(self) -> anyhow::Error {
        match self {
            WriteError::Redis(err) => err.into(),
            WriteError::Unconfirmed(err) => err.into(),
        }
    }
}

/// Sends `writes` and, with `acks`, `WAIT` right after them in the same round trip; returns what
/// querying `writes` alone would return.
pub async fn query_acknowledged<T: FromRedisValue>(
    connection: &mut impl ConnectionLike,
    writes: &Pipeline,
    acks: Option<ReplicaAcks>,
) -> Result<T, WriteError> {
    let Some(acks) = acks else {
        return Ok(writes.query_async(connection).await?);
    };
    let mut acknowledged = writes.clone();
    acknowledged
        .cmd("WAIT")
        .arg(acks.replicas)
        .arg(acks.timeout.as_millis().max(1) as u64);
    let mut replies: Vec<Value> = acknowledged.query_async(connection).await?;
    let confirmed: i64 = match replies.pop() {
        Some(reply) => redis::from_owned_redis_value(reply)?,
        None => 0,
    };
    if confirmed < i64::from(acks.replicas) {
        return Err(WriteError::Unconfirmed(UnconfirmedWrite {
            wanted: acks.replicas,
            confirmed: u32::try_from(confirmed).unwrap_or(0),
            timeout: acks.timeout,
        }));
    }
    Ok(redis::from_owned_redis_value(Value::Array(replies))?)
}

/// True when an error that actix-session's middleware returned is a session write fewer
/// replicas confirmed (`save` and `update` fail with their own types, `delete` with anyhow's;
/// the middleware hides the cause, its `Debug` text shows it).
pub fn unconfirmed_in(err: &actix_web::Error) -> bool {
    let text = if let Some(err) = err.as_error::<InternalError<SaveError>>() {
        format!("{err:#?}")
    } else if let Some(err) = err.as_error::<InternalError<UpdateError>>() {
        format!("{err:#?}")
    } else if let Some(err) = err.as_error::<InternalError<anyhow::Error>>() {
        format!("{err:#?}")
    } else {
        return false;
    };
    text.contains("UnconfirmedWrite(")
}

#[cfg(test)]
mod tests {
    use actix_web::HttpResponse;

    use super::*;

    fn as_middleware_error<E: fmt::Debug + fmt::Display + 'static>(err: E) -> actix_web::Error {
        InternalError::from_response(err, HttpResponse::InternalServerError().finish()).into()
    }

    #[test]
    fn an_unconfirmed_write_is_found_through_the_middleware_wrapping() {
        let unconfirmed = || {
            WriteError::Unconfirmed(UnconfirmedWrite {
                wanted: 1,
                confirmed: 0,
                timeout: Duration::from_millis(100),
            })
            .into_anyhow()
        };
        assert!(unconfirmed_in(&as_middleware_error(SaveError::Other(
            unconfirmed()
        ))));
        assert!(unconfirmed_in(&as_middleware_error(UpdateError::Other(
            unconfirmed()
        ))));
        assert!(unconfirmed_in(&as_middleware_error(unconfirmed())));

        let redis_down = anyhow::anyhow!("connection refused");
        assert!(!unconfirmed_in(&as_middleware_error(SaveError::Other(
            redis_down
        ))));
        assert!(!unconfirmed_in(&actix_web::error::ErrorServiceUnavailable(
            "write not confirmed"
        )));
    }
}
