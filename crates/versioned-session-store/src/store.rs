//! [`VersionedRedisStore`]: actix-session's `SessionStore` with compare-and-set updates.
//!
//! What the middleware calls, and what each call does here (one Redis round trip each):
//!
//! | middleware situation | store call | Redis |
//! |---|---|---|
//! | request with a session cookie | `load` | `HGETALL key` |
//! | new session got some state | `save` | script: create at version 1 unless the key exists |
//! | handler changed the state | `update` | script: write and bump only if the version matches |
//! | `Session::purge()` (logout) | `delete` | `DEL key` |
//! | `Session::renew()` (login) | `delete` then `save` | `DEL key`, then the create script |
//! | unchanged, `TtlExtensionPolicy::OnEveryRequest` | `update_ttl` | `EXPIRE key ttl` |
//!
//! With [`VersionedRedisStore::with_replica_acks`], `save`, `update` and `delete` send `WAIT`
//! in the same round trip and fail when too few replicas confirmed ([`crate::replica_acks`]).
//!
//! Whatever is stored under a session's key that is not a session of this store (bytes
//! that are not a JSON map of strings, a hash without its version) makes `load` fail with
//! `LoadError::Deserialization` and an [`InvalidState`] that never quotes the bytes;
//! `LoadError::Other` means only that Redis failed. A key of another Redis type loads as
//! no session; [`VersionedRedisStore::load_or_invalid`] reports it as invalid too. What to
//! do with such a key is the caller's choice: the node treats it as no session and
//! deletes it.
//!
//! The store has no timeouts of its own: the node wraps every store call in one, so that
//! a dead or blackholed Redis answers 503 quickly whichever store is configured.

use std::collections::HashMap;

use actix_session::storage::{
    generate_session_key, LoadError, SaveError, SessionKey, SessionStore, UpdateError,
};
use actix_web::cookie::time::Duration;
use anyhow::anyhow;
use redis::{ErrorKind, Script, ScriptInvocation};

use crate::conflict::{ConflictReason, SessionConflict};
use crate::pool::ConnectionPool;
use crate::replica_acks::{query_acknowledged, ReplicaAcks, WriteError};
use crate::state::InvalidState;
use crate::{scripts, state};

/// A Redis session store that refuses lost updates and never brings back a deleted session.
///
/// Sessions live under `key_prefix + session key` (see [`crate::state`] for the layout).
/// Cloning is cheap: clones share the connection pool. `P` is deadpool-redis's `Pool` unless
/// the application brings its own ([`ConnectionPool`]).
#[derive(Clone)]
pub struct VersionedRedisStore<P = deadpool_redis::Pool> {
    pool: P,
    key_prefix: String,
    create_if_absent: Script,
    compare_and_set: Script,
    acks: Option<ReplicaAcks>,
}

impl<P: ConnectionPool> VersionedRedisStore<P> {
    /// A store on `pool` (the node can share it with `RedisSessionStore::new_pooled` and
    /// [`crate::AtomicCounter`]), keeping sessions under `key_prefix`, e.g. `"session:"`.
    pub fn new(pool: P, key_prefix: impl Into<String>) -> VersionedRedisStore<P> {
        VersionedRedisStore {
            pool,
            key_prefix: key_prefix.into(),
            create_if_absent: scripts::create_if_absent(),
            compare_and_set: scripts::compare_and_set(),
            acks: None,
        }
    }

    /// Every write (`save`, `update`, `delete`) then waits for `acks` and fails with
    /// [`crate::UnconfirmedWrite`] when too few replicas confirm it (see [`crate::replica_acks`]).
    pub fn with_replica_acks(mut self, acks: ReplicaAcks) -> VersionedRedisStore<P> {
        self.acks = Some(acks);
        self
    }

    /// The Redis key of a session.
    pub fn redis_key(&self, session_key: &SessionKey) -> String {
        format!("{}{}", self.key_prefix, session_key.as_ref())
    }

    /// `SessionStore::load`, except that a key of another Redis type is reported too
    /// (`LoadError::Deserialization` with [`InvalidState::WrongType`]) instead of read as no
    /// session, for a caller that deletes whatever is not a session.
    pub async fn load_or_invalid(
        &self,
        session_key: &SessionKey,
    ) -> Result<Option<HashMap<String, String>>, LoadError> {
        let mut conn = self.connection().await.map_err(LoadError::Other)?;
        // All fields, not `HMGET state version`: a hash that lacks both would read like no
        // key at all, and stay. Bytes, not `String`/`u64`: what is stored may be anything,
        // and a conversion error here would read as Redis trouble (a 503), not as no session.
        let fields: redis::RedisResult<HashMap<Vec<u8>, Vec<u8>>> = redis::cmd("HGETALL")
            .arg(self.redis_key(session_key))
            .query_async(&mut conn)
            .await;
        let invalid = |err: InvalidState| LoadError::Deserialization(err.into());
        match fields {
            Ok(fields) if fields.is_empty() => Ok(None),
            Ok(fields) => match (fields.get(&b"state"[..]), fields.get(&b"version"[..])) {
                (Some(json), Some(version)) if fields.len() == 2 => {
                    state::decode(json, version).map(Some).map_err(invalid)
                }
                _ => Err(invalid(InvalidState::Incomplete)),
            },
            Err(err) if err.code() == Some("WRONGTYPE") => Err(invalid(InvalidState::WrongType)),
            Err(err) => Err(LoadError::Other(err.into())),
        }
    }

    async fn connection(&self) -> anyhow::Result<P::Connection> {
        Ok(self.pool.connection().await?)
    }

    /// Runs a script (with WAIT after it when acks are wanted), loading it first when Redis
    /// does not know it (first use, a restart, a new primary).
    async fn run_script(
        &self,
        connection: &mut P::Connection,
        invocation: &ScriptInvocation<'_>,
    ) -> anyhow::Result<i64> {
        let mut writes = redis::pipe();
        writes.invoke_script(invocation);
        let reply = match query_acknowledged(connection, &writes, self.acks).await {
            Err(WriteError::Redis(err)) if err.kind() == ErrorKind::NoScriptError => {
                invocation.load_async(connection).await?;
                query_acknowledged(connection, &writes, self.acks).await
            }
            reply => reply,
        };
        let (outcome,): (i64,) = reply.map_err(WriteError::into_anyhow)?;
        Ok(outcome)
    }
}

/// Redis TTLs are whole seconds; a TTL under one second would delete the key at once
/// (`EXPIRE k 0`), so it is rounded up to one.
fn ttl_seconds(ttl: &Duration) -> i64 {
    ttl.whole_seconds().max(1)
}

impl<P: ConnectionPool> SessionStore for VersionedRedisStore<P> {
    async fn load(
        &self,
        session_key: &SessionKey,
    ) -> Result<Option<HashMap<String, String>>, LoadError> {
        // A key of another type under this name, say a string the stock store wrote
        // before the node switched stores, is not a session of ours: start a new one.
        match self.load_or_invalid(session_key).await {
            Err(LoadError::Deserialization(err))
                if matches!(err.downcast_ref(), Some(InvalidState::WrongType)) =>
            {
                Ok(None)
            }
            loaded => loaded,
        }
    }

    async fn save(
        &self,
        mut session_state: HashMap<String, String>,
        ttl: &Duration,
    ) -> Result<SessionKey, SaveError> {
        // After `renew()` the state still carries the old session's version: the new
        // session starts again at 1.
        let json = state::encode(&mut session_state)
            .map_err(|err| SaveError::Serialization(err.into()))?;
        let session_key = generate_session_key();
        let mut conn = self.connection().await.map_err(SaveError::Other)?;
        let mut invocation = self.create_if_absent.prepare_invoke();
        invocation
            .key(self.redis_key(&session_key))
            .arg(json)
            .arg(ttl_seconds(ttl));
        let created = self
            .run_script(&mut conn, &invocation)
            .await
            .map_err(SaveError::Other)?;
        if created == 1 {
            Ok(session_key)
        } else {
            Err(SaveError::Other(anyhow!(
                "a session with the freshly generated key already exists"
            )))
        }
    }

    async fn update(
        &self,
        session_key: SessionKey,
        mut session_state: HashMap<String, String>,
        ttl: &Duration,
    ) -> Result<SessionKey, UpdateError> {
        let expected = state::take_version(&mut session_state)
            .map_err(|err| UpdateError::Other(err.into()))?;
        let json = state::encode(&mut session_state)
            .map_err(|err| UpdateError::Serialization(err.into()))?;
        let mut conn = self.connection().await.map_err(UpdateError::Other)?;
        let mut invocation = self.compare_and_set.prepare_invoke();
        invocation
            .key(self.redis_key(&session_key))
            .arg(expected)
            .arg(json)
            .arg(ttl_seconds(ttl));
        let outcome = self
            .run_script(&mut conn, &invocation)
            .await
            .map_err(UpdateError::Other)?;
        let refused = |reason| UpdateError::Other(SessionConflict { reason }.into());
        match outcome {
            scripts::GONE => Err(refused(ConflictReason::Gone)),
            scripts::STALE => Err(refused(ConflictReason::Stale)),
            _ => Ok(session_key),
        }
    }

    async fn update_ttl(&self, session_key: &SessionKey, ttl: &Duration) -> anyhow::Result<()> {
        // EXPIRE never creates a key: a session deleted meanwhile stays deleted.
        let mut conn = self.connection().await?;
        redis::cmd("EXPIRE")
            .arg(self.redis_key(session_key))
            .arg(ttl_seconds(ttl))
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    async fn delete(&self, session_key: &SessionKey) -> anyhow::Result<()> {
        let mut conn = self.connection().await?;
        let mut writes = redis::pipe();
        writes.cmd("DEL").arg(self.redis_key(session_key));
        query_acknowledged::<()>(&mut conn, &writes, self.acks)
            .await
            .map_err(WriteError::into_anyhow)
    }
}
