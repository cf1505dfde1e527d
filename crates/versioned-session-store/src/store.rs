//! [`VersionedRedisStore`]: actix-session's `SessionStore` with compare-and-set updates.
//!
//! What the middleware calls, and what each call does here (one Redis round trip each):
//!
//! | middleware situation | store call | Redis |
//! |---|---|---|
//! | request with a session cookie | `load` | `HMGET key state version` |
//! | new session got some state | `save` | script: create at version 1 unless the key exists |
//! | handler changed the state | `update` | script: write and bump only if the version matches |
//! | `Session::purge()` (logout) | `delete` | `DEL key` |
//! | `Session::renew()` (login) | `delete` then `save` | `DEL key`, then the create script |
//! | unchanged, `TtlExtensionPolicy::OnEveryRequest` | `update_ttl` | `EXPIRE key ttl` |
//!
//! The store has no timeouts of its own: the node wraps every store call in one, so that
//! a dead or blackholed Redis answers 503 quickly whichever store is configured.

use std::collections::HashMap;

use actix_session::storage::{
    generate_session_key, LoadError, SaveError, SessionKey, SessionStore, UpdateError,
};
use actix_web::cookie::time::Duration;
use anyhow::anyhow;
use deadpool_redis::Pool;
use redis::Script;

use crate::conflict::{ConflictReason, SessionConflict};
use crate::{scripts, state};

/// A Redis session store that refuses lost updates and never brings back a deleted session.
///
/// Sessions live under `key_prefix + session key` (see [`crate::state`] for the layout).
/// Cloning is cheap: clones share the connection pool.
#[derive(Clone)]
pub struct VersionedRedisStore {
    pool: Pool,
    key_prefix: String,
    create_if_absent: Script,
    compare_and_set: Script,
}

impl VersionedRedisStore {
    /// A store on `pool` (the node can share it with `RedisSessionStore::new_pooled` and
    /// [`crate::AtomicCounter`]), keeping sessions under `key_prefix`, e.g. `"session:"`.
    pub fn new(pool: Pool, key_prefix: impl Into<String>) -> VersionedRedisStore {
        VersionedRedisStore {
            pool,
            key_prefix: key_prefix.into(),
            create_if_absent: scripts::create_if_absent(),
            compare_and_set: scripts::compare_and_set(),
        }
    }

    /// The Redis key of a session.
    pub fn redis_key(&self, session_key: &SessionKey) -> String {
        format!("{}{}", self.key_prefix, session_key.as_ref())
    }

    async fn connection(&self) -> anyhow::Result<deadpool_redis::Connection> {
        Ok(self.pool.get().await?)
    }
}

/// Redis TTLs are whole seconds; a TTL under one second would delete the key at once
/// (`EXPIRE k 0`), so it is rounded up to one.
fn ttl_seconds(ttl: &Duration) -> i64 {
    ttl.whole_seconds().max(1)
}

impl SessionStore for VersionedRedisStore {
    async fn load(
        &self,
        session_key: &SessionKey,
    ) -> Result<Option<HashMap<String, String>>, LoadError> {
        let mut conn = self.connection().await.map_err(LoadError::Other)?;
        let fields: redis::RedisResult<(Option<String>, Option<u64>)> = redis::cmd("HMGET")
            .arg(self.redis_key(session_key))
            .arg("state")
            .arg("version")
            .query_async(&mut conn)
            .await;
        match fields {
            Ok((Some(json), Some(version))) => state::decode(&json, version)
                .map(Some)
                .map_err(|err| LoadError::Deserialization(err.into())),
            Ok((None, None)) => Ok(None),
            Ok(_) => Err(LoadError::Deserialization(anyhow!(
                "session hash lacks its state or its version"
            ))),
            // A key of another type under this name — say, one the stock store wrote before
            // the node switched stores — is not a session of ours: start a new one.
            Err(err) if err.code() == Some("WRONGTYPE") => Ok(None),
            Err(err) => Err(LoadError::Other(err.into())),
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
        let created: i64 = self
            .create_if_absent
            .key(self.redis_key(&session_key))
            .arg(json)
            .arg(ttl_seconds(ttl))
            .invoke_async(&mut conn)
            .await
            .map_err(|err| SaveError::Other(err.into()))?;
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
        let outcome: i64 = self
            .compare_and_set
            .key(self.redis_key(&session_key))
            .arg(expected)
            .arg(json)
            .arg(ttl_seconds(ttl))
            .invoke_async(&mut conn)
            .await
            .map_err(|err| UpdateError::Other(err.into()))?;
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
        redis::cmd("DEL")
            .arg(self.redis_key(session_key))
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }
}
