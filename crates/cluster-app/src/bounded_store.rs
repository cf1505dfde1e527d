//! A deadline and metrics around any session store.
//!
//! Neither actix-session's `RedisSessionStore` nor the versioned store has a
//! timeout of its own: when Redis stops answering (killed, or packets
//! dropped) a request waits as long as the TCP stack does. [`BoundedStore`]
//! wraps either of them and gives every operation at most `timeout`; past
//! that the operation fails, and the middleware in
//! [`crate::store_unavailable`] turns the failure into a fast 503.
//!
//! A stored value that is not a session (`LoadError::Deserialization`:
//! invalid JSON, bytes that are not UTF-8, a key of another type) is not a
//! Redis failure either. Left to actix-session it keeps the session key with
//! an empty state, so the next write goes to the broken key (and with the
//! versioned store fails as unversioned). Here it is counted, logged and
//! deleted, and `load` answers "no session": the cookie gets a fresh session,
//! logout and login work, and a key of a type no store writes (a list, a
//! hash without expiry) does not stay in Redis forever. Deleting rather than
//! leaving it: nothing can read it any more (its cookie moves on to a new
//! key), and left alone it would be found, logged and counted again on each
//! request with that cookie.
//!
//! Every operation is recorded in the metrics. A write the versioned store
//! refused (a concurrent request wrote first, or the session was logged out)
//! is not a Redis failure: it is counted as a conflict, by reason, and the
//! store's error goes on unchanged so that the middleware can answer 409. A
//! write too few replicas confirmed (`REDIS_MIN_REPLICAS_ACK`) is counted as
//! unconfirmed.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_web::cookie::time::Duration as CookieDuration;
use versioned_session_store::{
    conflict_in_update, ConnectionPool, UnconfirmedWrite, VersionedRedisStore,
};

use crate::metrics::{Metrics, StoreOperation, StoreOutcome};

/// What actix-session keeps per session: key -> JSON-encoded value.
type SessionState = HashMap<String, String>;

#[derive(Clone)]
pub struct BoundedStore<S> {
    inner: S,
    timeout: Duration,
    metrics: Metrics,
}

impl<S: LoadOrInvalid> BoundedStore<S> {
    pub fn new(inner: S, timeout: Duration, metrics: Metrics) -> BoundedStore<S> {
        BoundedStore {
            inner,
            timeout,
            metrics,
        }
    }

    /// Runs one store call under the deadline and records it.
    /// `on_timeout` builds the operation's own error type from the message;
    /// `conflict` names the reason when an error is a refused write.
    async fn bounded<T, E>(
        &self,
        operation: StoreOperation,
        call: impl Future<Output = Result<T, E>>,
        on_timeout: impl FnOnce(anyhow::Error) -> E,
        conflict: impl FnOnce(&E) -> Option<&'static str>,
    ) -> Result<T, E>
    where
        E: Describe,
    {
        let started = Instant::now();
        let (outcome, result) = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => (StoreOutcome::Ok, Ok(value)),
            Ok(Err(err)) => match conflict(&err) {
                Some(reason) => {
                    self.metrics.count_session_conflict(reason);
                    (StoreOutcome::Conflict, Err(err))
                }
                None if err.is_unconfirmed_write() => (StoreOutcome::Unconfirmed, Err(err)),
                None => (StoreOutcome::Error, Err(err)),
            },
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
        match (&result, outcome) {
            // Expected under contention: the client gets a 409 and may retry.
            (Err(err), StoreOutcome::Conflict) => {
                log::debug!("session store {operation}: {}", err.describe())
            }
            (Err(err), _) => log::warn!("session store {operation} failed: {}", err.describe()),
            (Ok(_), _) => {}
        }
        self.metrics
            .observe_store_operation(operation, outcome, started);
        result
    }
}

/// A store error with its causes, for the log: actix-session's error types
/// print one generic line ("Something went wrong...") and keep the cause in
/// `source()`.
trait Describe {
    fn describe(&self) -> String;

    /// The cause, for the errors that carry one as anyhow's.
    fn cause(&self) -> Option<&anyhow::Error>;

    fn is_unconfirmed_write(&self) -> bool {
        self.cause()
            .is_some_and(|cause| cause.is::<UnconfirmedWrite>())
    }
}

impl Describe for anyhow::Error {
    fn describe(&self) -> String {
        format!("{self:#}")
    }

    fn cause(&self) -> Option<&anyhow::Error> {
        Some(self)
    }
}

impl Describe for LoadError {
    fn describe(&self) -> String {
        with_sources(self)
    }

    fn cause(&self) -> Option<&anyhow::Error> {
        None
    }
}

impl Describe for SaveError {
    fn describe(&self) -> String {
        with_sources(self)
    }

    fn cause(&self) -> Option<&anyhow::Error> {
        match self {
            SaveError::Other(cause) => Some(cause),
            SaveError::Serialization(_) => None,
        }
    }
}

impl Describe for UpdateError {
    fn describe(&self) -> String {
        with_sources(self)
    }

    fn cause(&self) -> Option<&anyhow::Error> {
        match self {
            UpdateError::Other(cause) => Some(cause),
            UpdateError::Serialization(_) => None,
        }
    }
}

fn with_sources(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        text.push_str(&format!(": {err}"));
        cause = err.source();
    }
    text
}

/// What the inner store's `load` found.
enum Loaded {
    State(Option<SessionState>),
    /// Something that is not a session; the error says what, never quoting it.
    Invalid(anyhow::Error),
}

/// Only `update` can be refused; the other operations never conflict.
fn no_conflict<E>(_: &E) -> Option<&'static str> {
    None
}

/// A store that can tell "nothing stored" from "something stored that is not
/// a session": `load_or_invalid` is `load`, except that whatever is stored
/// under the key and is not a session of this store is always
/// `LoadError::Deserialization`, never `Ok(None)`.
pub trait LoadOrInvalid: SessionStore {
    fn load_or_invalid(
        &self,
        session_key: &SessionKey,
    ) -> impl Future<Output = Result<Option<SessionState>, LoadError>>;
}

/// The versioned store's `load` reads a key of another type as no session
/// (its contract); its `load_or_invalid` reports it, so that it is deleted.
impl<P: ConnectionPool> LoadOrInvalid for VersionedRedisStore<P> {
    fn load_or_invalid(
        &self,
        session_key: &SessionKey,
    ) -> impl Future<Output = Result<Option<SessionState>, LoadError>> {
        VersionedRedisStore::load_or_invalid(self, session_key)
    }
}

impl<S: LoadOrInvalid> SessionStore for BoundedStore<S> {
    /// What is stored but is not a session is no session: the key is deleted
    /// and `None` returned, so the middleware starts a new session instead of
    /// failing every request of that cookie.
    async fn load(&self, session_key: &SessionKey) -> Result<Option<SessionState>, LoadError> {
        let loaded = self
            .bounded(
                StoreOperation::Load,
                async {
                    match self.inner.load_or_invalid(session_key).await {
                        Ok(state) => Ok(Loaded::State(state)),
                        Err(LoadError::Deserialization(err)) => Ok(Loaded::Invalid(err)),
                        Err(err) => Err(err),
                    }
                },
                LoadError::Other,
                no_conflict,
            )
            .await?;
        match loaded {
            Loaded::State(state) => Ok(state),
            Loaded::Invalid(err) => {
                log::warn!("stored session is invalid, deleting it and starting anew: {err:#}");
                self.metrics.count_corrupt_session();
                self.delete(session_key).await.map_err(LoadError::Other)?;
                Ok(None)
            }
        }
    }

    async fn save(
        &self,
        state: SessionState,
        ttl: &CookieDuration,
    ) -> Result<SessionKey, SaveError> {
        self.bounded(
            StoreOperation::Save,
            self.inner.save(state, ttl),
            SaveError::Other,
            no_conflict,
        )
        .await
    }

    async fn update(
        &self,
        session_key: SessionKey,
        state: SessionState,
        ttl: &CookieDuration,
    ) -> Result<SessionKey, UpdateError> {
        self.bounded(
            StoreOperation::Update,
            self.inner.update(session_key, state, ttl),
            UpdateError::Other,
            |err| conflict_in_update(err).map(|conflict| conflict.reason.as_str()),
        )
        .await
    }

    async fn update_ttl(
        &self,
        session_key: &SessionKey,
        ttl: &CookieDuration,
    ) -> anyhow::Result<()> {
        self.bounded(
            StoreOperation::UpdateTtl,
            self.inner.update_ttl(session_key, ttl),
            |err| err,
            no_conflict,
        )
        .await
    }

    async fn delete(&self, session_key: &SessionKey) -> anyhow::Result<()> {
        self.bounded(
            StoreOperation::Delete,
            self.inner.delete(session_key),
            |err| err,
            no_conflict,
        )
        .await
    }
}
