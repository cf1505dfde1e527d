//! The atomic counter: concurrent increments are all applied and none conflicts.

mod common;

use std::sync::Arc;
use std::time::Instant;

use actix_web::cookie::Key;
use cluster_kit::RedisServer;
use common::{atomic_counter, log_in, pool, post, Gate, Node, COUNTER_TIMEOUT, COUNTER_TTL};
use tokio::task::JoinSet;
use versioned_session_store::{CounterError, VersionedRedisStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_increments_make_sixty_four() {
    let redis = RedisServer::start();
    let pool = pool(&redis.url(), 16);
    let counter = atomic_counter(pool.clone());

    let mut increments = JoinSet::new();
    for _ in 0..64 {
        let counter = counter.clone();
        increments.spawn(async move { counter.increment("sid-1").await.unwrap() });
    }
    let mut values = increments.join_all().await;
    values.sort_unstable();

    assert_eq!(
        values,
        (1..=64).collect::<Vec<i64>>(),
        "each increment saw its own value"
    );
    assert_eq!(counter.value("sid-1").await.unwrap(), 64);
    assert_eq!(
        counter.value("sid-2").await.unwrap(),
        0,
        "counters are per session"
    );
    let mut conn = pool.get().await.unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(counter.redis_key("sid-1"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let session_ttl = COUNTER_TTL.as_secs() as i64;
    assert!(
        (session_ttl - 10..=session_ttl).contains(&ttl),
        "the counter carries the session TTL ({session_ttl} s), got {ttl}"
    );
}

#[actix_web::test]
async fn concurrent_atomic_increments_over_two_nodes_never_conflict() {
    let redis = RedisServer::start();
    let key = Key::generate();
    let gate = Arc::new(Gate::default());
    let nodes = [(); 2].map(|()| {
        let store = VersionedRedisStore::new(pool(&redis.url(), 8), "session:");
        Node::start(
            store,
            key.clone(),
            gate.clone(),
            atomic_counter(pool(&redis.url(), 8)),
        )
    });
    let client = reqwest::Client::new();
    let cookie = log_in(&client, &nodes[0]).await;

    let mut requests = JoinSet::new();
    for i in 0..64 {
        let (client, cookie) = (client.clone(), cookie.clone());
        let url = format!("{}/counter/incr-atomic", nodes[i % 2].base);
        requests.spawn(async move {
            let response = post(&client, url, &cookie).await;
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap();
            (status, body["counter"].as_i64())
        });
    }
    let results = requests.join_all().await;

    assert!(
        results.iter().all(|(status, _)| *status == 200),
        "{results:?}"
    );
    let highest = results.iter().filter_map(|(_, value)| *value).max();
    assert_eq!(highest, Some(64));
    for node in nodes {
        node.stop().await;
    }
}

#[actix_web::test]
async fn each_session_counts_its_own_increments() {
    let redis = RedisServer::start();
    let store = VersionedRedisStore::new(pool(&redis.url(), 4), "session:");
    let node = Node::start(
        store,
        Key::generate(),
        Arc::new(Gate::default()),
        atomic_counter(pool(&redis.url(), 4)),
    );
    let client = reqwest::Client::new();
    let increment = |cookie: String| {
        let (client, url) = (client.clone(), format!("{}/counter/incr-atomic", node.base));
        async move {
            let response = post(&client, url, &cookie).await;
            assert_eq!(response.status(), 200);
            let body: serde_json::Value = response.json().await.unwrap();
            body["counter"].as_i64()
        }
    };
    let first = log_in(&client, &node).await;
    let second = log_in(&client, &node).await;

    assert_eq!(increment(first.clone()).await, Some(1));
    assert_eq!(
        increment(first).await,
        Some(2),
        "the session keeps its counter"
    );
    assert_eq!(
        increment(second).await,
        Some(1),
        "another session starts its own counter"
    );
    node.stop().await;
}

#[tokio::test]
async fn a_dead_redis_fails_the_counter_fast() {
    let mut redis = RedisServer::start();
    let counter = atomic_counter(pool(&redis.url(), 2));
    redis.kill();

    let started = Instant::now();
    let err = counter.increment("sid-1").await.unwrap_err();

    assert!(
        matches!(err, CounterError::Pool(_) | CounterError::Redis(_)),
        "{err}"
    );
    // Refused connections fail at once; even waiting out the whole timeout would be fast.
    assert!(
        started.elapsed() < 2 * COUNTER_TIMEOUT,
        "took {:?}",
        started.elapsed()
    );
}
