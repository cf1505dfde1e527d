//! Session lifetime: save and update set the TTL, update_ttl extends it without ever
//! creating a key, and a session whose TTL runs out is gone.

mod common;

use std::collections::HashMap;
use std::time::Instant;

use actix_session::storage::{SessionKey, SessionStore};
use actix_web::cookie::time::Duration;
use cluster_kit::RedisServer;
use common::pool;
use deadpool_redis::Pool;
use versioned_session_store::VersionedRedisStore;

async fn ttl_of(pool: &Pool, store: &VersionedRedisStore, key: &SessionKey) -> i64 {
    let mut conn = pool.get().await.unwrap();
    redis::cmd("TTL")
        .arg(store.redis_key(key))
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// Asserts that the key's TTL is the one just set, give or take the seconds the test took.
async fn assert_ttl_was_set_to(
    pool: &Pool,
    store: &VersionedRedisStore,
    key: &SessionKey,
    ttl: Duration,
) {
    let remaining = ttl_of(pool, store, key).await;
    let set = ttl.whole_seconds();
    assert!(
        (set - 10..=set).contains(&remaining),
        "TTL {remaining} s, expected about {set} s"
    );
}

fn user_state() -> HashMap<String, String> {
    HashMap::from([("user".to_string(), "\"alice\"".to_string())])
}

#[tokio::test]
async fn save_update_and_update_ttl_set_the_ttl() {
    let redis = RedisServer::start();
    let pool = pool(&redis.url(), 2);
    let store = VersionedRedisStore::new(pool.clone(), "session:");

    // Three different TTLs: each call must set its own, not keep the previous one.
    let (on_save, on_update, on_update_ttl) = (
        Duration::seconds(100),
        Duration::seconds(1000),
        Duration::seconds(5000),
    );
    let key = store.save(user_state(), &on_save).await.unwrap();
    assert_ttl_was_set_to(&pool, &store, &key, on_save).await;

    let loaded = store.load(&key).await.unwrap().unwrap();
    let key = store.update(key, loaded, &on_update).await.unwrap();
    assert_ttl_was_set_to(&pool, &store, &key, on_update).await;

    store.update_ttl(&key, &on_update_ttl).await.unwrap();
    assert_ttl_was_set_to(&pool, &store, &key, on_update_ttl).await;
}

#[tokio::test]
async fn update_ttl_never_creates_a_session() {
    let redis = RedisServer::start();
    let pool = pool(&redis.url(), 2);
    let store = VersionedRedisStore::new(pool.clone(), "session:");
    let key = store
        .save(user_state(), &Duration::seconds(100))
        .await
        .unwrap();
    store.delete(&key).await.unwrap();

    store
        .update_ttl(&key, &Duration::seconds(100))
        .await
        .unwrap();

    assert_eq!(ttl_of(&pool, &store, &key).await, -2, "TTL -2: no such key");
    assert_eq!(store.load(&key).await.unwrap(), None);
}

#[tokio::test]
async fn a_session_expires_when_its_ttl_runs_out() {
    let redis = RedisServer::start();
    let pool = pool(&redis.url(), 2);
    let store = VersionedRedisStore::new(pool.clone(), "session:");
    let started = Instant::now();
    let key = store
        .save(user_state(), &Duration::seconds(1))
        .await
        .unwrap();
    assert!(store.load(&key).await.unwrap().is_some());

    while store.load(&key).await.unwrap().is_some() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "a 1 s session still exists after 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    println!("a 1 s session was gone after {:?}", started.elapsed());
}
