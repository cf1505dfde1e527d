//! `SESSION_STORE=memory`: sessions in the node's own memory.
//!
//! This is express-session's default MemoryStore, the store a first Express
//! app runs with, brought over so that its failure can be shown: a session
//! lives in the process that created it, so another node behind the load
//! balancer does not know it (the user is anonymous there), and a restart or a
//! crash forgets every session (docs/why-sessions-break.md). It works behind a
//! sticky load balancer until the sticky node goes away (docs/three-designs.md).
//!
//! Unlike express-session's MemoryStore, which grows until the process runs out
//! of memory, this one is bounded: built on the `moka` cache, a session expires
//! after `SESSION_TTL_SECS` without use (each read or write starts the idle time
//! again) and the whole store is capped by weight (the bytes of its keys and
//! values), least recently used sessions evicted first.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_session::storage::{
    generate_session_key, LoadError, SaveError, SessionKey, SessionStore, UpdateError,
};
use actix_web::cookie::time::Duration as CookieDuration;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;

/// What actix-session keeps per session: key -> JSON-encoded value.
type SessionState = HashMap<String, String>;

/// The store's default weight cap: 64 MiB of session keys and state.
pub const DEFAULT_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

/// Cloned into every worker; the clones share one cache.
#[derive(Clone)]
pub struct MemoryStore {
    sessions: Cache<String, Arc<SessionState>>,
}

impl MemoryStore {
    /// `idle_ttl`: how long a session lives after its last use;
    /// `capacity_bytes`: the most session bytes kept before the least recently
    /// used are evicted.
    pub fn new(idle_ttl: Duration, capacity_bytes: u64) -> MemoryStore {
        let sessions = Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|key: &String, state: &Arc<SessionState>| {
                u32::try_from(key.len() + state_bytes(state)).unwrap_or(u32::MAX)
            })
            .time_to_idle(idle_ttl)
            .eviction_policy(EvictionPolicy::lru())
            .build();
        MemoryStore { sessions }
    }

    /// Sessions held now (expired and evicted ones may count until the cache's
    /// next maintenance; [`MemoryStore::run_pending_tasks`] runs it).
    pub fn session_count(&self) -> u64 {
        self.sessions.entry_count()
    }

    /// Applies pending evictions and expirations now (moka does it lazily).
    pub fn run_pending_tasks(&self) {
        self.sessions.run_pending_tasks();
    }

    /// The state of a session, refreshing its idle time.
    pub fn get(&self, session_key: &str) -> Option<SessionState> {
        self.sessions
            .get(session_key)
            .map(|state| state.as_ref().clone())
    }

    fn insert_new(&self, state: SessionState) -> SessionKey {
        let session_key = generate_session_key();
        self.sessions
            .insert(session_key.as_ref().to_string(), Arc::new(state));
        session_key
    }
}

/// Bytes of a session's keys and values, the weight the cap counts.
fn state_bytes(state: &SessionState) -> usize {
    state
        .iter()
        .map(|(key, value)| key.len() + value.len())
        .sum()
}

impl SessionStore for MemoryStore {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<SessionState>, LoadError> {
        Ok(self.get(session_key.as_ref()))
    }

    async fn save(
        &self,
        session_state: SessionState,
        _ttl: &CookieDuration,
    ) -> Result<SessionKey, SaveError> {
        Ok(self.insert_new(session_state))
    }

    /// A session that expired or was evicted since it was read is stored under
    /// a new key, as actix-session's Redis store does: an old cookie never
    /// brings a deleted session back.
    async fn update(
        &self,
        session_key: SessionKey,
        session_state: SessionState,
        _ttl: &CookieDuration,
    ) -> Result<SessionKey, UpdateError> {
        if self.sessions.contains_key(session_key.as_ref()) {
            self.sessions
                .insert(session_key.as_ref().to_string(), Arc::new(session_state));
            Ok(session_key)
        } else {
            Ok(self.insert_new(session_state))
        }
    }

    /// A read: the idle time starts again.
    async fn update_ttl(
        &self,
        session_key: &SessionKey,
        _ttl: &CookieDuration,
    ) -> Result<(), anyhow::Error> {
        self.sessions.get(session_key.as_ref());
        Ok(())
    }

    async fn delete(&self, session_key: &SessionKey) -> Result<(), anyhow::Error> {
        self.sessions.invalidate(session_key.as_ref());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(user: &str, padding: usize) -> SessionState {
        HashMap::from([
            ("user".to_string(), format!("\"{user}\"")),
            ("pad".to_string(), "x".repeat(padding)),
        ])
    }

    fn ttl() -> CookieDuration {
        CookieDuration::seconds(60)
    }

    #[actix_web::test]
    async fn a_saved_session_loads_updates_and_deletes() {
        let store = MemoryStore::new(Duration::from_secs(60), DEFAULT_CAPACITY_BYTES);
        let key = store.save(state("alice", 0), &ttl()).await.unwrap();
        let loaded = store.load(&key).await.unwrap().unwrap();
        assert_eq!(loaded["user"], "\"alice\"");
        let same = store.update(key, state("bob", 0), &ttl()).await.unwrap();
        assert_eq!(store.load(&same).await.unwrap().unwrap()["user"], "\"bob\"");
        store.delete(&same).await.unwrap();
        assert_eq!(store.load(&same).await.unwrap(), None);
        let after_delete = store
            .update(
                same.as_ref().to_string().try_into().unwrap(),
                state("eve", 0),
                &ttl(),
            )
            .await
            .unwrap();
        assert_ne!(
            after_delete.as_ref(),
            same.as_ref(),
            "a deleted session came back"
        );
    }

    #[actix_web::test]
    async fn use_slides_the_idle_time_and_disuse_expires_the_session() {
        let idle = Duration::from_millis(400);
        let store = MemoryStore::new(idle, DEFAULT_CAPACITY_BYTES);
        let used = store.save(state("alice", 0), &ttl()).await.unwrap();
        let unused = store.save(state("bob", 0), &ttl()).await.unwrap();
        // Used every 100 ms for 1 s, more than twice the idle time: still there.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            store.update_ttl(&used, &ttl()).await.unwrap();
        }
        assert!(
            store.load(&used).await.unwrap().is_some(),
            "a used session expired"
        );
        assert_eq!(
            store.load(&unused).await.unwrap(),
            None,
            "an idle session lived on"
        );
    }

    #[actix_web::test]
    async fn past_the_weight_cap_the_least_recently_used_session_goes_first() {
        // Room for about three sessions of ~1 KiB.
        let store = MemoryStore::new(Duration::from_secs(60), 3 * 1024 + 512);
        let oldest = store.save(state("oldest", 1000), &ttl()).await.unwrap();
        let read_again = store.save(state("read-again", 1000), &ttl()).await.unwrap();
        let third = store.save(state("third", 1000), &ttl()).await.unwrap();
        store.run_pending_tasks();
        // `oldest` is used now, so `read_again` becomes the least recently used.
        assert!(store.load(&oldest).await.unwrap().is_some());
        store.run_pending_tasks();
        let newest = store.save(state("newest", 1000), &ttl()).await.unwrap();
        store.run_pending_tasks();
        assert_eq!(
            store.load(&read_again).await.unwrap(),
            None,
            "the LRU session stayed"
        );
        for kept in [&oldest, &third, &newest] {
            assert!(
                store.load(kept).await.unwrap().is_some(),
                "a recent session was evicted"
            );
        }
    }
}
