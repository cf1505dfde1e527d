//! Session lifetime: save and update set the TTL, update_ttl extends it without ever
//! creating a key, and a session whose TTL runs out is gone.

mod common;

use std::collections::HashMap;
use std::time::Instant;

use actix_session::storage::{SessionKey, SessionStore};
use actix_web::cookie::time::Duration;
use common::pool;
use deadpool_redis::Pool;
use test_support::RedisServer;
use versioned_session_store::VersionedRedisStore;

async fn ttl_of(pool: &Pool, store: &VersionedRedisStore, key: &SessionKey) -> i64 {
    let mut conn = pool.get().await.unwrap();
    redis::cmd("TTL")
        .arg(store.redis_key(key))
        .query_async(&mut conn)
        .await
        .unwrap()
}

fn user_state() -> HashMap<String, String> {
    HashMap::from([("user".to_string(), "\"alice\"".to_string())])
}

#[tokio::test]
async fn save_update_and_update_ttl_set_the_ttl() {
    let redis = RedisServer::start();
    let pool = pool(&redis.url(), 2);
    let store = VersionedRedisStore::new(pool.clone(), "session:");

    let key = store
        .save(user_state(), &Duration::seconds(100))
        .await
        .unwrap();
    assert!((90..=100).contains(&ttl_of(&pool, &store, &key).await));

    let loaded = store.load(&key).await.unwrap().unwrap();
    let key = store
        .update(key, loaded, &Duration::seconds(1000))
        .await
        .unwrap();
    assert!((990..=1000).contains(&ttl_of(&pool, &store, &key).await));

    store
        .update_ttl(&key, &Duration::seconds(5000))
        .await
        .unwrap();
    assert!((4990..=5000).contains(&ttl_of(&pool, &store, &key).await));
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
