//! [`AtomicCounter`]: a per-session counter that concurrent requests cannot lose.
//!
//! A counter kept in the session state is read at the start of a request and written at the
//! end, so concurrent increments conflict (the stock store loses them, the versioned store
//! refuses all but one). Kept in its own Redis key and bumped with `INCR`, the increment
//! happens inside Redis: a hundred concurrent requests make a hundred increments, and none
//! of them touches the session state, so none can conflict.
//!
//! Handlers know the session's state, not its key, so the counter is named after a random
//! id stored in the state once, usually at login: [`SESSION_ID_KEY`]. Its key is
//! `prefix + "counter:" + id`, and every increment sets its TTL to the session TTL, so
//! the counter lives as long as the session is used and expires like it; a logged-out
//! session's counter is never read again (a new login gets a new id) and expires.

use std::future::Future;
use std::time::Duration;

use actix_session::storage::generate_session_key;
use actix_session::Session;
use thiserror::Error;

use crate::pool::ConnectionPool;
use crate::replica_acks::{query_acknowledged, ReplicaAcks, UnconfirmedWrite, WriteError};

/// The session-state key holding the id that names the session's counter.
pub const SESSION_ID_KEY: &str = "sid";

/// Why a counter operation failed; each variant is a 503 for the client: Redis is not
/// answering, or (`Unconfirmed`) the increment may not survive a failover.
#[derive(Debug, Error)]
pub enum CounterError {
    #[error("no Redis connection: {0}")]
    Pool(Box<dyn std::error::Error + Send + Sync>),
    #[error("Redis failed: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Unconfirmed(#[from] UnconfirmedWrite),
}

impl From<WriteError> for CounterError {
    fn from(err: WriteError) -> CounterError {
        match err {
            WriteError::Redis(err) => CounterError::Redis(err),
            WriteError::Unconfirmed(err) => CounterError::Unconfirmed(err),
        }
    }
}

/// Increments per-session counters in place, each call one Redis round trip. `P` is
/// deadpool-redis's `Pool` unless the application brings its own ([`ConnectionPool`]).
#[derive(Clone)]
pub struct AtomicCounter<P = deadpool_redis::Pool> {
    pool: P,
    key_prefix: String,
    ttl: Duration,
    timeout: Duration,
    acks: Option<ReplicaAcks>,
}

impl<P: ConnectionPool> AtomicCounter<P> {
    /// Counters under `key_prefix + "counter:"`, kept for `ttl` after their last increment
    /// (pass the session TTL); every call gives up after `timeout`.
    pub fn new(
        pool: P,
        key_prefix: impl Into<String>,
        ttl: Duration,
        timeout: Duration,
    ) -> AtomicCounter<P> {
        AtomicCounter {
            pool,
            key_prefix: key_prefix.into(),
            ttl,
            timeout,
            acks: None,
        }
    }

    /// Every increment then waits for `acks` and fails with [`CounterError::Unconfirmed`]
    /// when too few replicas confirm it (see [`crate::replica_acks`]).
    pub fn with_replica_acks(mut self, acks: ReplicaAcks) -> AtomicCounter<P> {
        self.acks = Some(acks);
        self
    }

    /// The Redis key of the counter named `session_id`. Session keys are alphanumeric,
    /// so `counter:` can never be mistaken for one under the same prefix.
    pub fn redis_key(&self, session_id: &str) -> String {
        format!("{}counter:{}", self.key_prefix, session_id)
    }

    /// Adds one to the counter and returns its new value (1 for a new counter).
    pub async fn increment(&self, session_id: &str) -> Result<i64, CounterError> {
        let key = self.redis_key(session_id);
        let ttl_seconds = self.ttl.as_secs().max(1);
        self.within_timeout(async {
            let mut conn = self.connection().await?;
            // MULTI/EXEC in one round trip: the key never exists without its TTL. Written out
            // rather than `.atomic()`, so that WAIT can follow the transaction in that trip.
            let mut writes = redis::pipe();
            writes
                .cmd("MULTI")
                .ignore()
                .incr(&key, 1)
                .ignore()
                .expire(&key, ttl_seconds as i64)
                .ignore()
                .cmd("EXEC");
            let ((value, _expire_set),): ((i64, i64),) =
                query_acknowledged(&mut conn, &writes, self.acks).await?;
            Ok(value)
        })
        .await
    }

    /// The counter's value; 0 when it was never incremented or has expired.
    pub async fn value(&self, session_id: &str) -> Result<i64, CounterError> {
        let key = self.redis_key(session_id);
        self.within_timeout(async {
            let mut conn = self.connection().await?;
            let value: Option<i64> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
            Ok(value.unwrap_or(0))
        })
        .await
    }

    async fn connection(&self) -> Result<P::Connection, CounterError> {
        let connection = self.pool.connection().await;
        connection.map_err(|err| CounterError::Pool(Box::new(err)))
    }

    async fn within_timeout<T>(
        &self,
        operation: impl Future<Output = Result<T, CounterError>>,
    ) -> Result<T, CounterError> {
        tokio::time::timeout(self.timeout, operation)
            .await
            .unwrap_or(Err(CounterError::Timeout(self.timeout)))
    }
}

/// The session's counter id, created and inserted into the session on first use.
///
/// Inserting changes the session, so call it where the session is written anyway (login),
/// or accept that the first atomic increment also writes the session once.
pub fn ensure_session_id(session: &Session) -> Result<String, actix_web::Error> {
    if let Some(id) = session.get::<String>(SESSION_ID_KEY)? {
        return Ok(id);
    }
    // Same entropy as a session key (64 random alphanumerics), but a different value:
    // the session key itself is the bearer secret and stays out of the state.
    let id: String = generate_session_key().into();
    session.insert(SESSION_ID_KEY, &id)?;
    Ok(id)
}
