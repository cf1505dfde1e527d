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
//! expiry behaviour.
//!
//! Writes (`save`, `update`, `delete`) send the stock store's commands (`SET
//! ... NX EX`, `SET ... XX EX` falling back to a new key, `DEL`), last writer
//! wins included (docs/concurrent-writes.md). They are written here rather
//! than delegated to the stock store, which only takes a deadpool pool on a
//! fixed URL: they go through the node's [`PrimaryPool`], which follows the
//! primary behind Sentinel, and with `REDIS_MIN_REPLICAS_ACK` each is followed
//! by `WAIT` in the same round trip (`versioned_session_store::replica_acks`).
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
    generate_session_key, LoadError, SaveError, SessionKey, SessionStore, UpdateError,
};
use actix_web::cookie::time::Duration as CookieDuration;
use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{self, RedisResult, Value};
use versioned_session_store::{
    parse_state, query_acknowledged, InvalidState, ReplicaAcks, WriteError,
};

use crate::bounded_store::LoadOrInvalid;
use crate::primary_pool::{is_read_only, LetGo, LetGoOnDrop, PrimaryError, PrimaryPool};

/// What actix-session keeps per session: key -> JSON-encoded value.
type SessionState = HashMap<String, String>;

pub struct GetexRedisStore {
    /// Writes take a connection from here; reads open theirs to its primary.
    pool: PrimaryPool,
    /// This copy's read connection; see the `Clone` impl.
    reader: Arc<WorkerConnection>,
    key_prefix: Arc<str>,
    /// The session's idle timeout, in seconds, as `GETEX ... EX` wants it.
    ttl_secs: u64,
    acks: Option<ReplicaAcks>,
}

/// A clone gets its own read connection. actix-web clones the store once per
/// worker thread, so each worker reads through a connection of its own, opened
/// on its own thread (see [`WorkerConnection`]).
impl Clone for GetexRedisStore {
    fn clone(&self) -> Self {
        GetexRedisStore {
            pool: self.pool.clone(),
            reader: Arc::new(WorkerConnection::new(self.pool.clone())),
            key_prefix: Arc::clone(&self.key_prefix),
            ttl_secs: self.ttl_secs,
            acks: self.acks,
        }
    }
}

impl GetexRedisStore {
    /// Keys in Redis are `key_prefix` + the random session key, so several
    /// applications (or test runs) can share one Redis without colliding.
    /// With `acks`, every write waits for that many replicas.
    pub fn new(
        pool: PrimaryPool,
        key_prefix: &str,
        ttl: Duration,
        acks: Option<ReplicaAcks>,
    ) -> GetexRedisStore {
        GetexRedisStore {
            reader: Arc::new(WorkerConnection::new(pool.clone())),
            pool,
            key_prefix: Arc::from(key_prefix),
            ttl_secs: ttl.as_secs(),
            acks,
        }
    }

    fn redis_key(&self, session_key: &str) -> String {
        format!("{}{}", self.key_prefix, session_key)
    }

    /// Sends `writes` on a pooled connection, with `WAIT` after them when acks are wanted.
    async fn write<T: redis::FromRedisValue>(&self, writes: &redis::Pipeline) -> anyhow::Result<T> {
        let mut connection = self.pool.get().await?;
        query_acknowledged(&mut connection, writes, self.acks)
            .await
            .map_err(WriteError::into_anyhow)
    }

    /// Reads the state and restarts its idle timeout, in one command.
    async fn read_and_touch(
        &self,
        session_key: &SessionKey,
    ) -> Result<Option<SessionState>, LoadError> {
        let key = self.redis_key(session_key.as_ref());
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

    /// `GETEX key EX ttl` on `connection`. The worker's connection is forgotten
    /// unless Redis answers, and its primary let go of when Redis does not
    /// answer or answers `READONLY`.
    async fn getex(&self, connection: Opened, key: &str) -> anyhow::Result<Stored> {
        let forget_unless_answered = ForgetOnDrop::new(&self.reader, connection.serial);
        let silent = LetGoOnDrop::new(&self.pool, connection.primary, LetGo::Silent);
        let mut redis_connection = connection.connection;
        let reply: RedisResult<Option<Vec<u8>>> = redis::cmd("GETEX")
            .arg(key)
            .arg("EX")
            .arg(self.ttl_secs)
            .query_async(&mut redis_connection)
            .await;
        silent.disarm();
        let stored = match reply {
            Ok(Some(bytes)) => Stored::Bytes(bytes),
            Ok(None) => Stored::Absent,
            // Redis answered, the connection is sound; the key is not a string.
            Err(err) if err.code() == Some("WRONGTYPE") => Stored::WrongType,
            Err(err) => {
                if is_read_only(&err) {
                    self.pool.let_go(connection.primary, LetGo::ReadOnly);
                }
                return Err(err.into());
            }
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
/// stopped answering), and when the node has let go of the primary it leads
/// to. The read that found it broken retries once on a new connection: a Redis
/// restart costs no failed read. Opening is serialised, and a read forgets only
/// the connection it used, never a newer one: a burst of reads after a restart
/// opens one connection, not one each.
struct WorkerConnection {
    pool: PrimaryPool,
    slot: RwLock<Option<Opened>>,
    /// Held while opening; counts the connections opened so far.
    opening: tokio::sync::Mutex<u64>,
}

#[derive(Clone)]
struct Opened {
    /// Which of the worker's connections this is (1 = the first opened).
    serial: u64,
    /// The generation of the primary it leads to.
    primary: u64,
    connection: MultiplexedConnection,
}

impl WorkerConnection {
    fn new(pool: PrimaryPool) -> WorkerConnection {
        WorkerConnection {
            pool,
            slot: RwLock::new(None),
            opening: tokio::sync::Mutex::new(0),
        }
    }

    /// The worker's connection, unless it leads to a primary the node let go of.
    fn get(&self) -> Option<Opened> {
        let slot = self
            .slot
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slot.as_ref()
            .filter(|opened| opened.primary == self.pool.generation())
            .cloned()
    }

    /// The worker's connection, opened now unless a concurrent read just did.
    /// A primary that cannot be connected to is let go of.
    async fn open(&self) -> anyhow::Result<Opened> {
        let mut opened_so_far = self.opening.lock().await;
        if let Some(opened_meanwhile) = self.get() {
            return Ok(opened_meanwhile);
        }
        let primary = self.pool.primary().ok_or(PrimaryError::NoPrimary)?;
        let unreachable = LetGoOnDrop::new(&self.pool, primary.generation, LetGo::Unreachable);
        let (connection, driver) = primary.client.create_multiplexed_tokio_connection().await?;
        unreachable.disarm();
        actix_web::rt::spawn(driver);
        *opened_so_far += 1;
        let opened = Opened {
            serial: *opened_so_far,
            primary: primary.generation,
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

    /// `SET key state NX EX ttl` under a new random key.
    async fn save(
        &self,
        state: SessionState,
        ttl: &CookieDuration,
    ) -> Result<SessionKey, SaveError> {
        let body =
            serde_json::to_string(&state).map_err(|err| SaveError::Serialization(err.into()))?;
        let session_key = generate_session_key();
        let mut writes = redis::pipe();
        writes
            .cmd("SET")
            .arg(self.redis_key(session_key.as_ref()))
            .arg(body)
            .arg("NX")
            .arg("EX")
            .arg(ttl.whole_seconds());
        self.write::<()>(&writes).await.map_err(SaveError::Other)?;
        Ok(session_key)
    }

    /// `SET key state XX EX ttl`; a key that expired meanwhile is saved anew
    /// under a new key, as the stock store does.
    async fn update(
        &self,
        session_key: SessionKey,
        state: SessionState,
        ttl: &CookieDuration,
    ) -> Result<SessionKey, UpdateError> {
        let body =
            serde_json::to_string(&state).map_err(|err| UpdateError::Serialization(err.into()))?;
        let mut writes = redis::pipe();
        writes
            .cmd("SET")
            .arg(self.redis_key(session_key.as_ref()))
            .arg(body)
            .arg("XX")
            .arg("EX")
            .arg(ttl.whole_seconds());
        let (reply,): (Value,) = self.write(&writes).await.map_err(UpdateError::Other)?;
        if reply != Value::Nil {
            return Ok(session_key);
        }
        self.save(state, ttl).await.map_err(|err| match err {
            SaveError::Serialization(err) => UpdateError::Serialization(err),
            SaveError::Other(err) => UpdateError::Other(err),
        })
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
        let mut writes = redis::pipe();
        writes.cmd("DEL").arg(self.redis_key(session_key.as_ref()));
        self.write(&writes).await
    }
}
