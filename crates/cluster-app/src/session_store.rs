//! actix-session's `RedisSessionStore`, with a deadline on every call.
//!
//! The stock store has no timeout of its own: when Redis stops answering
//! (killed, or packets dropped) a request waits as long as the TCP stack
//! does. [`BoundedRedisStore`] wraps it and gives every operation at most
//! `timeout`; past that the operation fails, and the middleware in
//! [`crate::store_unavailable`] turns the failure into a fast 503.
//!
//! It also treats stored state that is not valid JSON as "no session" (the
//! stock middleware would keep the broken entry under the same key), and
//! records every operation in the metrics.

use std::collections::HashMap;
use std::future::Future;
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
    timeout: Duration,
    metrics: Metrics,
}

impl BoundedRedisStore {
    /// Keys in Redis are `key_prefix` + the random session key, so several
    /// applications (or test runs) can share one Redis without colliding.
    pub async fn new(
        pool: deadpool_redis::Pool,
        key_prefix: &str,
        timeout: Duration,
        metrics: Metrics,
    ) -> anyhow::Result<BoundedRedisStore> {
        let key_prefix = key_prefix.to_string();
        let inner = RedisSessionStore::builder_pooled(pool)
            .cache_keygen(move |session_key| format!("{key_prefix}{session_key}"))
            .build()
            .await?;
        Ok(BoundedRedisStore {
            inner,
            timeout,
            metrics,
        })
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
            match self.inner.load(session_key).await {
                Err(LoadError::Deserialization(err)) => {
                    log::warn!(
                        "stored session state is not valid JSON, treating it as no session: {err}"
                    );
                    self.metrics.count_corrupt_session();
                    Ok(None)
                }
                other => other,
            }
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

    async fn update_ttl(
        &self,
        session_key: &SessionKey,
        ttl: &CookieDuration,
    ) -> anyhow::Result<()> {
        self.bounded(
            "update_ttl",
            self.inner.update_ttl(session_key, ttl),
            |err| err,
        )
        .await
    }

    async fn delete(&self, session_key: &SessionKey) -> anyhow::Result<()> {
        self.bounded("delete", self.inner.delete(session_key), |err| err)
            .await
    }
}
