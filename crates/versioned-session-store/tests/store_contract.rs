//! The store's rules, called through the `SessionStore` trait the way the middleware does.

mod common;

use std::collections::HashMap;

use actix_session::storage::{LoadError, SessionKey, SessionStore, UpdateError};
use actix_web::cookie::time::Duration;
use cluster_kit::RedisServer;
use common::{key_count, pool};
use deadpool_redis::Pool;
use versioned_session_store::{
    conflict_in_update, ConflictReason, UnversionedState, VersionedRedisStore, VERSION_KEY,
};

const TTL: Duration = Duration::minutes(5);

fn state(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn setup() -> (RedisServer, Pool, VersionedRedisStore) {
    let redis = RedisServer::start();
    let pool = pool(&redis.url(), 4);
    let store = VersionedRedisStore::new(pool.clone(), "session:");
    (redis, pool, store)
}

/// A second handle on the same key, as another request would have.
fn same_key(key: &SessionKey) -> SessionKey {
    key.as_ref()
        .to_string()
        .try_into()
        .expect("valid session key")
}

fn conflict_reason(result: Result<SessionKey, UpdateError>) -> ConflictReason {
    let err = result.expect_err("the update must be refused");
    conflict_in_update(&err)
        .expect("refused as a conflict")
        .reason
}

#[tokio::test]
async fn an_update_from_a_stale_read_is_refused_and_writes_nothing() {
    let (_redis, _pool, store) = setup().await;
    let key = store.save(state(&[("counter", "0")]), &TTL).await.unwrap();
    let first_read = store.load(&key).await.unwrap().unwrap();
    let second_read = store.load(&key).await.unwrap().unwrap();
    assert_eq!(first_read[VERSION_KEY], "1");

    let mut first_write = first_read;
    first_write.insert("counter".into(), "1".into());
    store
        .update(same_key(&key), first_write, &TTL)
        .await
        .expect("the first write wins");

    let mut second_write = second_read;
    second_write.insert("counter".into(), "5".into());
    let refused = store.update(same_key(&key), second_write, &TTL).await;
    assert_eq!(conflict_reason(refused), ConflictReason::Stale);

    let stored = store.load(&key).await.unwrap().unwrap();
    assert_eq!(stored["counter"], "1", "the refused write left no trace");
    assert_eq!(stored[VERSION_KEY], "2");
}

#[tokio::test]
async fn an_update_after_delete_is_refused_and_recreates_nothing() {
    let (_redis, pool, store) = setup().await;
    let key = store
        .save(state(&[("user", "\"alice\"")]), &TTL)
        .await
        .unwrap();
    let read_before_logout = store.load(&key).await.unwrap().unwrap();

    store.delete(&key).await.unwrap();
    let refused = store.update(same_key(&key), read_before_logout, &TTL).await;

    assert_eq!(conflict_reason(refused), ConflictReason::Gone);
    assert_eq!(key_count(&pool).await, 0, "no session under any key");
    assert_eq!(store.load(&key).await.unwrap(), None);
}

#[tokio::test]
async fn save_starts_every_session_at_version_1_and_keeps_the_version_out_of_the_state() {
    let (_redis, pool, store) = setup().await;
    // After renew() the middleware saves the old state, old version included.
    let key = store
        .save(state(&[("user", "\"alice\""), (VERSION_KEY, "9")]), &TTL)
        .await
        .unwrap();

    assert_eq!(store.load(&key).await.unwrap().unwrap()[VERSION_KEY], "1");
    let mut conn = pool.get().await.unwrap();
    let stored: String = redis::cmd("HGET")
        .arg(store.redis_key(&key))
        .arg("state")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, r#"{"user":"\"alice\""}"#);
}

#[tokio::test]
async fn an_update_without_version_is_refused_as_a_bug_not_a_conflict() {
    let (_redis, _pool, store) = setup().await;
    let key = store
        .save(state(&[("user", "\"alice\"")]), &TTL)
        .await
        .unwrap();

    // What Session::clear() followed by an insert hands to update.
    let err = store
        .update(same_key(&key), state(&[("x", "1")]), &TTL)
        .await
        .unwrap_err();

    assert!(conflict_in_update(&err).is_none());
    let UpdateError::Other(cause) = err else {
        panic!("expected UpdateError::Other")
    };
    assert!(cause.downcast_ref::<UnversionedState>().is_some());
    assert_eq!(
        store.load(&key).await.unwrap().unwrap()["user"],
        "\"alice\""
    );
}

#[tokio::test]
async fn a_key_the_stock_store_wrote_loads_as_no_session() {
    let (_redis, pool, store) = setup().await;
    let key: SessionKey = "k".repeat(64).try_into().unwrap();
    let mut conn = pool.get().await.unwrap();
    redis::cmd("SET")
        .arg(store.redis_key(&key))
        .arg(r#"{"user":"\"alice\""}"#)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();

    assert_eq!(store.load(&key).await.unwrap(), None);
}

#[tokio::test]
async fn a_read_redis_refuses_is_an_error_not_a_missing_session() {
    let (_redis, pool, store) = setup().await;
    let key = store
        .save(state(&[("user", "\"alice\"")]), &TTL)
        .await
        .unwrap();
    // From now on Redis answers the store's read with an error (NOPERM).
    let mut conn = pool.get().await.unwrap();
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("-hgetall")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();

    // "No session" would log the user out and let the next write start a new one; an
    // error fails the request and leaves the session as it is.
    let loaded = store.load(&key).await;
    assert!(matches!(loaded, Err(LoadError::Other(_))), "{loaded:?}");
}
