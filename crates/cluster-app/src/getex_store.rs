//! actix-session's `RedisSessionStore`, reading with one `GETEX`.
//!
//! The stock store sends `GET` before the handler and, when nothing changed,
//! a separate `EXPIRE` after it to slide the idle timeout; each command also
//! takes a pooled connection, which deadpool checks with a `PING`.
//! [`GetexRedisStore::load`] sends one `GETEX key EX ttl` (Redis >= 6.2),
//! which reads and slides the timeout at once, so `update_ttl` has nothing
//! left to do. Reads go through one multiplexed connection per worker thread
//! instead of taking one from the pool each time, which saves the pool's
//! `PING`: a session read is one round trip instead of four, with the same
//! expiry behaviour. Writes (`save`, `update`, `delete`) are the stock
//! store's, last writer wins included (docs/concurrent-writes.md).
//!
//! What is stored under a session's key and is not a session (bytes that are
//! not a JSON map of strings, a key of another type, on which `GETEX` fails
//! with `WRONGTYPE` and leaves the expiry alone) fails `load` with
//! `LoadError::Deserialization`, never `LoadError::Other`: it is not Redis
//! trouble. [`crate::bounded_store::BoundedStore`] then treats it as no
//! session, counts it and deletes the key.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_session::storage::{
    LoadError, RedisSessionStore, SaveError, SessionKey, SessionStore, UpdateError,
};
use actix_web::cookie::time::Duration as CookieDuration;
use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{Client, RedisResult};
use versioned_session_store::{parse_state, InvalidState};

use crate::bounded_store::LoadOrInvalid;

/// What actix-session keeps per session: key -> JSON-encoded value.
type SessionState = HashMap<String, String>;

pub struct GetexRedisStore {
    inner: RedisSessionStore,
    /// This copy's read connection; see the `Clone` impl.
    reader: Arc<WorkerConnection>,
    key_prefix: Arc<str>,
    /// The session's idle timeout, in seconds, as `GETEX ... EX` wants it.
    ttl_secs: u64,
}

/// A clone gets its own read connection. actix-web clones the store once per
/// worker thread, so each worker reads through a connection of its own, opened
/// on its own thread (see [`WorkerConnection`]).
impl Clone for GetexRedisStore {
    fn clone(&self) -> Self {
        GetexRedisStore {
            inner: self.inner.clone(),
            reader: Arc::new(WorkerConnection::new(self.reader.client.clone())),
            key_prefix: Arc::clone(&self.key_prefix),
            ttl_secs: self.ttl_secs,
        }
    }
}

impl GetexRedisStore {
    /// Keys in Redis are `key_prefix` + the random session key, so several
    /// applications (or test runs) can share one Redis without colliding.
    /// Writes go through `pool`; reads open their own connections to
    /// `redis_url`, the server and credentials the pool uses.
    pub async fn new(
        pool: deadpool_redis::Pool,
        redis_url: &str,
        key_prefix: &str,
        ttl: Duration,
    ) -> anyhow::Result<GetexRedisStore> {
        let key_prefix: Arc<str> = Arc::from(key_prefix);
        let keygen_prefix = Arc::clone(&key_prefix);
        let inner = RedisSessionStore::builder_pooled(pool)
            .cache_keygen(move |session_key| format!("{keygen_prefix}{session_key}"))
            .build()
            .await?;
        Ok(GetexRedisStore {
            inner,
            reader: Arc::new(WorkerConnection::new(Client::open(redis_url)?)),
            key_prefix,
            ttl_secs: ttl.as_secs(),
        })
    }

    /// Reads the state and restarts its idle timeout, in one command.
    async fn read_and_touch(
        &self,
        session_key: &SessionKey,
    ) -> Result<Option<SessionState>, LoadError> {
        let key = format!("{}{}", self.key_prefix, session_key.as_ref());
        let stored = match self.reader.get() {
            Some(connection) => match self.getex(connection, &key).await {
                Ok(stored) => stored,
                // The connection broke (Redis restarted, say): `getex` forgot it;
                // one more try on a new one, which opening it has just proven.
                Err(err) => {
                    log::debug!("read connection failed, opening a new one: {err}");
                    let connection = self.reader.open().await.map_err(LoadError::Other)?;
                    self.getex(connection, &key)
                        .await
                        .map_err(LoadError::Other)?
                }
            },
            None => {
                let connection = self.reader.open().await.map_err(LoadError::Other)?;
                self.getex(connection, &key)
                    .await
                    .map_err(LoadError::Other)?
            }
        };
        let invalid = |err: InvalidState| LoadError::Deserialization(err.into());
        match stored {
            Stored::Absent => Ok(None),
            Stored::Bytes(json) => parse_state(&json).map(Some).map_err(invalid),
            Stored::WrongType => Err(invalid(InvalidState::WrongType)),
        }
    }

    /// `GETEX key EX ttl` on `connection`; the worker's connection is
    /// forgotten unless Redis answers.
    async fn getex(&self, connection: Opened, key: &str) -> anyhow::Result<Stored> {
        let forget_unless_answered = ForgetOnDrop::new(&self.reader, connection.serial);
        let mut connection = connection.connection;
        let reply: RedisResult<Option<Vec<u8>>> = deadpool_redis::redis::cmd("GETEX")
            .arg(key)
            .arg("EX")
            .arg(self.ttl_secs)
            .query_async(&mut connection)
            .await;
        let stored = match reply {
            Ok(Some(bytes)) => Stored::Bytes(bytes),
            Ok(None) => Stored::Absent,
            // Redis answered, the connection is sound; the key is not a string.
            Err(err) if err.code() == Some("WRONGTYPE") => Stored::WrongType,
            Err(err) => return Err(err.into()),
        };
        forget_unless_answered.disarm();
        Ok(stored)
    }
}

/// What `GETEX` found under a session's key.
enum Stored {
    Absent,
    /// Any bytes: what a string holds is checked by the caller.
    Bytes(Vec<u8>),
    /// A hash, a list...: `GETEX` refused it, leaving its expiry as it was.
    WrongType,
}

/// The connection every session read of one worker thread goes through.
///
/// A multiplexed connection carries any number of concurrent commands: the
/// requests hand their commands to a driver task, which writes all those
/// waiting in one go and hands each reply back. Where that task runs matters.
/// Opened through the pool (or `Client::get_multiplexed_async_connection`),
/// the driver is spawned on tokio's scheduler, while actix-web runs requests
/// in a `LocalSet` on the same thread; each reply then wakes the request
/// across that boundary, which tokio does by writing to the thread's eventfd,
/// one more system call per reply batch. Here the connection is opened on the
/// worker and its driver spawned into the worker's `LocalSet`
/// (`actix_web::rt::spawn`), so a reply wakes the request as any local task
/// does (measured: BENCHMARKS.md). This store must therefore be used from
/// actix-web's workers, which is where `SessionMiddleware` calls it.
///
/// The connection is dropped at the first sign of trouble: an error, or a
/// read abandoned midway (the store's timeout gave up on it, say because Redis
/// stopped answering). The read that found it broken retries once on a new
/// connection: a Redis restart costs no failed read. Opening is serialised,
/// and a read forgets only the connection it used, never a newer one: a burst
/// of reads after a restart opens one connection, not one each.
struct WorkerConnection {
    client: Client,
    slot: RwLock<Option<Opened>>,
    /// Held while opening; counts the connections opened so far.
    opening: tokio::sync::Mutex<u64>,
}

#[derive(Clone)]
struct Opened {
    /// Which of the worker's connections this is (1 = the first opened).
    serial: u64,
    connection: MultiplexedConnection,
}

impl WorkerConnection {
    fn new(client: Client) -> WorkerConnection {
        WorkerConnection {
            client,
            slot: RwLock::new(None),
            opening: tokio::sync::Mutex::new(0),
        }
    }

    fn get(&self) -> Option<Opened> {
        self.slot
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The worker's connection, opened now unless a concurrent read just did.
    async fn open(&self) -> anyhow::Result<Opened> {
        let mut opened_so_far = self.opening.lock().await;
        if let Some(opened_meanwhile) = self.get() {
            return Ok(opened_meanwhile);
        }
        let (connection, driver) = self.client.create_multiplexed_tokio_connection().await?;
        actix_web::rt::spawn(driver);
        *opened_so_far += 1;
        let opened = Opened {
            serial: *opened_so_far,
            connection,
        };
        *self
            .slot
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(opened.clone());
        Ok(opened)
    }

    /// Drops connection `serial` if it is still the worker's connection.
    fn forget(&self, serial: u64) {
        let mut slot = self
            .slot
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.as_ref().is_some_and(|opened| opened.serial == serial) {
            *slot = None;
        }
    }
}

/// Forgets the connection a read used when dropped before
/// [`ForgetOnDrop::disarm`]: on an error (`?` returns early) and when the
/// read's future is dropped.
struct ForgetOnDrop<'a> {
    connection: &'a WorkerConnection,
    serial: Option<u64>,
}

impl<'a> ForgetOnDrop<'a> {
    fn new(connection: &'a WorkerConnection, serial: u64) -> ForgetOnDrop<'a> {
        ForgetOnDrop {
            connection,
            serial: Some(serial),
        }
    }

    fn disarm(mut self) {
        self.serial = None;
    }
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(serial) = self.serial {
            self.connection.forget(serial);
        }
    }
}

/// `load` already reports everything that is not a session.
impl LoadOrInvalid for GetexRedisStore {
    fn load_or_invalid(
        &self,
        session_key: &SessionKey,
    ) -> impl Future<Output = Result<Option<SessionState>, LoadError>> {
        self.read_and_touch(session_key)
    }
}

impl SessionStore for GetexRedisStore {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<SessionState>, LoadError> {
        self.read_and_touch(session_key).await
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
