//! actix-session's `RedisSessionStore`, with a deadline on every call.
//!
//! The stock store has no timeout of its own: when Redis stops answering
//! (killed, or packets dropped) a request waits as long as the TCP stack
//! does. [`BoundedRedisStore`] wraps it and gives every operation at most
//! `timeout`; past that the operation fails, and the middleware in
//! [`crate::store_unavailable`] turns the failure into a fast 503.
//!
//! Reads are done here rather than by the stock store, for speed: the stock
//! store sends `GET` before the handler and, when nothing changed, a separate
//! `EXPIRE` after it to slide the idle timeout; each command also takes a
//! pooled connection, which deadpool checks with a `PING`. `load` here sends
//! one `GETEX key EX ttl` (Redis >= 6.2), which reads and slides the timeout
//! at once, so `update_ttl` has nothing left to do: a session read costs two
//! round trips instead of four, with the same expiry behaviour. Writes
//! (`save`, `update`, `delete`) are the stock store's.
//!
//! Stored state that is not valid JSON is treated as "no session" (the stock
//! middleware would keep the broken entry under the same key), logged and
//! counted. Every operation is recorded in the metrics.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_session::storage::{
    LoadError, RedisSessionStore, SaveError, SessionKey, SessionStore, UpdateError,
};
use actix_web::cookie::time::Duration as CookieDuration;

use crate::metrics::{Metrics, StoreOutcome};

/// What actix-session keeps per session: key -> JSON-encoded value.
type SessionState = HashMap<String, String>;

#[derive(Clone)]
pub struct BoundedRedisStore {
    inner: RedisSessionStore,
    pool: deadpool_redis::Pool,
    key_prefix: Arc<str>,
    /// The session's idle timeout, in seconds, as `GETEX ... EX` wants it.
    ttl_secs: u64,
    timeout: Duration,
    metrics: Metrics,
}

impl BoundedRedisStore {
    /// Keys in Redis are `key_prefix` + the random session key, so several
    /// applications (or test runs) can share one Redis without colliding.
    pub async fn new(
        pool: deadpool_redis::Pool,
        key_prefix: &str,
        ttl: Duration,
        timeout: Duration,
        metrics: Metrics,
    ) -> anyhow::Result<BoundedRedisStore> {
        let key_prefix: Arc<str> = Arc::from(key_prefix);
        let keygen_prefix = Arc::clone(&key_prefix);
        let inner = RedisSessionStore::builder_pooled(pool.clone())
            .cache_keygen(move |session_key| format!("{keygen_prefix}{session_key}"))
            .build()
            .await?;
        Ok(BoundedRedisStore {
            inner,
            pool,
            key_prefix,
            ttl_secs: ttl.as_secs(),
            timeout,
            metrics,
        })
    }

    /// Reads the state and restarts its idle timeout, in one command.
    async fn read_and_touch(
        &self,
        session_key: &SessionKey,
    ) -> anyhow::Result<Option<SessionState>> {
        let mut connection = self.pool.get().await?;
        let stored: Option<String> = deadpool_redis::redis::cmd("GETEX")
            .arg(format!("{}{}", self.key_prefix, session_key.as_ref()))
            .arg("EX")
            .arg(self.ttl_secs)
            .query_async(&mut connection)
            .await?;
        Ok(stored.and_then(|json| match serde_json::from_str(&json) {
            Ok(state) => Some(state),
            Err(err) => {
                log::warn!(
                    "stored session state is not valid JSON, treating it as no session: {err}"
                );
                self.metrics.count_corrupt_session();
                None
            }
        }))
    }

    /// Runs one store call under the deadline and records it.
    /// `on_timeout` builds the operation's own error type from the message.
    async fn bounded<T, E>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, E>>,
        on_timeout: impl FnOnce(anyhow::Error) -> E,
    ) -> Result<T, E>
    where
        E: std::fmt::Display,
    {
        let started = Instant::now();
        let (outcome, result) = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => (StoreOutcome::Ok, Ok(value)),
            Ok(Err(err)) => (StoreOutcome::Error, Err(err)),
            Err(_elapsed) => {
                let message = format!(
                    "session store {operation} timed out after {} ms",
                    self.timeout.as_millis()
                );
                (
                    StoreOutcome::Timeout,
                    Err(on_timeout(anyhow::anyhow!(message))),
                )
            }
        };
        if let Err(err) = &result {
            log::warn!("session store {operation} failed: {err:#}");
        }
        self.metrics
            .observe_store_operation(operation, outcome, started);
        result
    }
}

impl SessionStore for BoundedRedisStore {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<SessionState>, LoadError> {
        let load = async {
            self.read_and_touch(session_key)
                .await
                .map_err(LoadError::Other)
        };
        self.bounded("load", load, LoadError::Other).await
    }

    async fn save(
        &self,
        state: SessionState,
        ttl: &CookieDuration,
    ) -> Result<SessionKey, SaveError> {
        self.bounded("save", self.inner.save(state, ttl), SaveError::Other)
            .await
    }

    async fn update(
        &self,
        session_key: SessionKey,
        state: SessionState,
        ttl: &CookieDuration,
    ) -> Result<SessionKey, UpdateError> {
        self.bounded(
            "update",
            self.inner.update(session_key, state, ttl),
            UpdateError::Other,
        )
        .await
    }

    /// Nothing to do: `load` already restarted the idle timeout.
    async fn update_ttl(
        &self,
        _session_key: &SessionKey,
        _ttl: &CookieDuration,
    ) -> anyhow::Result<()> {
        Ok(())
    }

    async fn delete(&self, session_key: &SessionKey) -> anyhow::Result<()> {
        self.bounded("delete", self.inner.delete(session_key), |err| err)
            .await
    }
}
