//! What is stored under a session's key and is not a session: `load` never
//! reports it as a Redis failure (`LoadError::Other`, which the node answers
//! with 503), and `load_or_invalid` reports every kind of it as invalid,
//! without quoting the stored bytes.

mod common;

use actix_session::storage::{LoadError, SessionKey, SessionStore};
use cluster_kit::RedisServer;
use common::pool;
use deadpool_redis::Pool;
use versioned_session_store::{InvalidState, VersionedRedisStore};

async fn plant(pool: &Pool, key: &str, command: &mut redis::Cmd) {
    let mut conn = pool.get().await.unwrap();
    redis::cmd("DEL")
        .arg(key)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    command.query_async::<()>(&mut conn).await.unwrap();
}

#[tokio::test]
async fn anything_that_is_not_a_session_is_invalid_never_a_redis_failure() {
    let redis = RedisServer::start();
    let pool = pool(&redis.url(), 4);
    let store = VersionedRedisStore::new(pool.clone(), "session:");
    let session_key: SessionKey = "k".repeat(64).try_into().unwrap();
    let key = store.redis_key(&session_key);

    let cases: Vec<(&str, redis::Cmd)> = vec![
        (
            "a list",
            redis::cmd("RPUSH").arg(&key).arg("secret").clone(),
        ),
        (
            "a string",
            redis::cmd("SET").arg(&key).arg("secret").clone(),
        ),
        (
            "a hash without the fields",
            redis::cmd("HSET").arg(&key).arg("f").arg("secret").clone(),
        ),
        (
            "a state that is not UTF-8",
            redis::cmd("HSET")
                .arg(&key)
                .arg("state")
                .arg(&b"\xffsecret"[..])
                .arg("version")
                .arg(1)
                .clone(),
        ),
        (
            "a state that is not a map of strings",
            redis::cmd("HSET")
                .arg(&key)
                .arg("state")
                .arg(r#"{"user":["secret"]}"#)
                .arg("version")
                .arg(1)
                .clone(),
        ),
        (
            "a version that is not a number",
            redis::cmd("HSET")
                .arg(&key)
                .arg("state")
                .arg("{}")
                .arg("version")
                .arg("secret")
                .clone(),
        ),
    ];
    for (what, mut command) in cases {
        plant(&pool, &key, &mut command).await;
        match store.load_or_invalid(&session_key).await {
            Err(LoadError::Deserialization(err)) => {
                assert!(
                    err.downcast_ref::<InvalidState>().is_some(),
                    "{what}: {err}"
                );
                assert!(!format!("{err:#}").contains("secret"), "{what}: {err:#}");
            }
            other => panic!("{what}: load_or_invalid gave {other:?}"),
        }
        assert!(
            !matches!(store.load(&session_key).await, Err(LoadError::Other(_))),
            "{what}: load reports a Redis failure"
        );
    }
}
