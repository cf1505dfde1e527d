//! actix-session's `RedisSessionStore`, reading with one `GETEX`.
//!
//! The stock store sends `GET` before the handler and, when nothing changed,
//! a separate `EXPIRE` after it to slide the idle timeout; each command also
//! takes a pooled connection, which deadpool checks with a `PING`.
//! [`GetexRedisStore::load`] sends one `GETEX key EX ttl` (Redis >= 6.2),
//! which reads and slides the timeout at once, so `update_ttl` has nothing
//! left to do. Reads share one multiplexed connection instead of taking one
//! from the pool each time, which saves the pool's `PING`: a session read is
//! one round trip instead of four, with the same expiry behaviour. Writes
//! (`save`, `update`, `delete`) are the stock store's, last writer wins
//! included (docs/session-consistency.md).
//!
//! Stored state that is not valid JSON is treated as "no session" (the stock
//! middleware would keep the broken entry under the same key), logged and
//! counted.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_session::storage::{
    LoadError, RedisSessionStore, SaveError, SessionKey, SessionStore, UpdateError,
};
use actix_web::cookie::time::Duration as CookieDuration;
use deadpool_redis::redis::aio::MultiplexedConnection;

use crate::metrics::Metrics;

/// What actix-session keeps per session: key -> JSON-encoded value.
type SessionState = HashMap<String, String>;

pub struct GetexRedisStore {
    inner: RedisSessionStore,
    pool: deadpool_redis::Pool,
    /// This copy's read connection; see the `Clone` impl.
    reader: Arc<SharedConnection>,
    key_prefix: Arc<str>,
    /// The session's idle timeout, in seconds, as `GETEX ... EX` wants it.
    ttl_secs: u64,
    metrics: Metrics,
}

/// A clone gets its own read connection. actix-web clones the store once per
/// worker thread, and a multiplexed connection is driven by a task on the
/// thread that opened it: shared by all workers, every read from another
/// worker would wake that thread and wait for it. One per worker keeps each
/// read on its own thread (measured: BENCHMARKS.md).
impl Clone for GetexRedisStore {
    fn clone(&self) -> Self {
        GetexRedisStore {
            inner: self.inner.clone(),
            pool: self.pool.clone(),
            reader: Arc::new(SharedConnection::default()),
            key_prefix: Arc::clone(&self.key_prefix),
            ttl_secs: self.ttl_secs,
            metrics: self.metrics.clone(),
        }
    }
}

impl GetexRedisStore {
    /// Keys in Redis are `key_prefix` + the random session key, so several
    /// applications (or test runs) can share one Redis without colliding.
    pub async fn new(
        pool: deadpool_redis::Pool,
        key_prefix: &str,
        ttl: Duration,
        metrics: Metrics,
    ) -> anyhow::Result<GetexRedisStore> {
        let key_prefix: Arc<str> = Arc::from(key_prefix);
        let keygen_prefix = Arc::clone(&key_prefix);
        let inner = RedisSessionStore::builder_pooled(pool.clone())
            .cache_keygen(move |session_key| format!("{keygen_prefix}{session_key}"))
            .build()
            .await?;
        Ok(GetexRedisStore {
            inner,
            pool,
            reader: Arc::new(SharedConnection::default()),
            key_prefix,
            ttl_secs: ttl.as_secs(),
            metrics,
        })
    }

    /// Reads the state and restarts its idle timeout, in one command.
    async fn read_and_touch(
        &self,
        session_key: &SessionKey,
    ) -> anyhow::Result<Option<SessionState>> {
        let key = format!("{}{}", self.key_prefix, session_key.as_ref());
        let stored = match self.reader.get() {
            Some(shared) => match self.getex(shared, &key).await {
                Ok(stored) => stored,
                // The shared connection broke (Redis restarted, say): `getex` forgot
                // it; one more try on a fresh connection that the pool has checked.
                Err(err) => {
                    log::debug!("shared read connection failed, taking a fresh one: {err}");
                    self.getex(self.reader.replace(&self.pool).await?, &key)
                        .await?
                }
            },
            None => {
                self.getex(self.reader.replace(&self.pool).await?, &key)
                    .await?
            }
        };
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

    /// `GETEX key EX ttl` on `connection`; the shared connection is forgotten
    /// unless the command completes.
    async fn getex(
        &self,
        mut connection: MultiplexedConnection,
        key: &str,
    ) -> anyhow::Result<Option<String>> {
        let forget_unless_done = ForgetOnDrop::new(&self.reader);
        let stored = deadpool_redis::redis::cmd("GETEX")
            .arg(key)
            .arg("EX")
            .arg(self.ttl_secs)
            .query_async(&mut connection)
            .await?;
        forget_unless_done.disarm();
        Ok(stored)
    }
}

/// The connection every session read goes through.
///
/// A multiplexed connection carries any number of concurrent commands, so one
/// is enough for all the reads of a worker thread. It comes from the pool (which checked it) and is
/// dropped at the first sign of trouble: an error, or a read abandoned midway
/// (the store's timeout gave up on it, say because Redis stopped answering).
/// The read that found it broken retries once on a fresh connection from the
/// pool, which checks it with a `PING`: a Redis restart costs no failed read,
/// as with the pool alone.
#[derive(Default)]
struct SharedConnection {
    slot: RwLock<Option<MultiplexedConnection>>,
}

impl SharedConnection {
    fn get(&self) -> Option<MultiplexedConnection> {
        self.slot
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    async fn replace(&self, pool: &deadpool_redis::Pool) -> anyhow::Result<MultiplexedConnection> {
        let pooled = pool.get().await?;
        let connection = MultiplexedConnection::clone(&pooled);
        *self
            .slot
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(connection.clone());
        Ok(connection)
    }

    fn forget(&self) {
        *self
            .slot
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }
}

/// Forgets the shared connection when dropped before [`ForgetOnDrop::disarm`]:
/// on an error (`?` returns early) and when the read's future is dropped.
struct ForgetOnDrop<'a> {
    connection: Option<&'a SharedConnection>,
}

impl<'a> ForgetOnDrop<'a> {
    fn new(connection: &'a SharedConnection) -> ForgetOnDrop<'a> {
        ForgetOnDrop {
            connection: Some(connection),
        }
    }

    fn disarm(mut self) {
        self.connection = None;
    }
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection {
            connection.forget();
        }
    }
}

impl SessionStore for GetexRedisStore {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<SessionState>, LoadError> {
        self.read_and_touch(session_key)
            .await
            .map_err(LoadError::Other)
    }

    async fn save(
        &self,
        state: SessionState,
        ttl: &CookieDuration,
    ) -> Result<SessionKey, SaveError> {
        self.inner.save(state, ttl).await
    }

    async fn update(
        &self,
        session_key: SessionKey,
        state: SessionState,
        ttl: &CookieDuration,
    ) -> Result<SessionKey, UpdateError> {
        self.inner.update(session_key, state, ttl).await
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
        self.inner.delete(session_key).await
    }
}
