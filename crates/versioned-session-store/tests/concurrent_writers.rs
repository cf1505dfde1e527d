//! Two nodes, one Redis, one session, many concurrent increments of a session counter
//! (get + insert): the stock store acknowledges them all and loses most; the versioned
//! store applies every one it acknowledges and refuses the rest with 409.
//!
//! Requests fired at once may still run one after another, and then nothing races. So the
//! first comparison holds every request after its read until all of them have read
//! (`/counter/incr-together`): every write starts from the same state on every run, and
//! the counts are exact.

mod common;

use std::sync::Arc;

use actix_session::storage::{RedisSessionStore, SessionStore};
use actix_web::cookie::Key;
use cluster_kit::RedisServer;
use common::{atomic_counter, log_in, pool, post, read, Gate, Node};
use tokio::task::JoinSet;
use versioned_session_store::VersionedRedisStore;

const INCREMENTS: usize = 24;

/// Starts two nodes on one Redis, one per store; they share only the cookie key.
fn two_nodes<S>(redis: &RedisServer, stores: [S; 2]) -> [Node; 2]
where
    S: SessionStore + Clone + Send + 'static,
{
    let key = Key::generate();
    let gate = Arc::new(Gate::for_together(INCREMENTS));
    stores.map(|store| {
        Node::start(
            store,
            key.clone(),
            gate.clone(),
            atomic_counter(pool(&redis.url(), 4)),
        )
    })
}

/// Fires all increments at once, alternating nodes, each held after its read until all
/// have read; returns the status of each.
async fn overlapping_increments(nodes: &[Node; 2], cookie: &str) -> Vec<u16> {
    let client = reqwest::Client::new();
    let mut requests = JoinSet::new();
    for i in 0..INCREMENTS {
        let (client, cookie) = (client.clone(), cookie.to_string());
        let url = format!("{}/counter/incr-together", nodes[i % 2].base);
        requests.spawn(async move { post(&client, url, &cookie).await.status().as_u16() });
    }
    requests.join_all().await
}

/// Each of `count` concurrent clients retries on 409 until its increment is acknowledged;
/// returns how many 409s they met on the way.
async fn increments_with_retry(nodes: &[Node; 2], cookie: &str, count: usize) -> usize {
    let client = reqwest::Client::new();
    let mut clients = JoinSet::new();
    for i in 0..count {
        let (client, cookie) = (client.clone(), cookie.to_string());
        let url = format!("{}/counter/incr", nodes[i % 2].base);
        clients.spawn(async move {
            for conflicts in 0..200 {
                match post(&client, url.clone(), &cookie).await.status().as_u16() {
                    200 => return conflicts,
                    409 => continue,
                    other => panic!("increment answered {other}"),
                }
            }
            panic!("no increment acknowledged after 200 attempts");
        });
    }
    clients.join_all().await.into_iter().sum()
}

#[actix_web::test]
async fn versioned_store_applies_every_acknowledged_increment_and_refuses_the_rest() {
    let redis = RedisServer::start();
    let stores = [(); 2].map(|()| VersionedRedisStore::new(pool(&redis.url(), 16), "session:"));
    let nodes = two_nodes(&redis, stores);
    let client = reqwest::Client::new();
    let cookie = log_in(&client, &nodes[0]).await;

    let statuses = overlapping_increments(&nodes, &cookie).await;
    let acknowledged = statuses.iter().filter(|&&s| s == 200).count();
    let conflicts = statuses.iter().filter(|&&s| s == 409).count();
    let applied = read(&client, &nodes[1], &cookie).await.counter as usize;
    println!(
        "versioned store, {INCREMENTS} concurrent increments over 2 nodes: \
         acknowledged {acknowledged}, conflicts {conflicts}, applied {applied}"
    );
    assert_eq!(
        acknowledged + conflicts,
        INCREMENTS,
        "only 200 or 409: {statuses:?}"
    );
    assert_eq!(
        applied, acknowledged,
        "every acknowledged increment is applied"
    );
    assert_eq!(
        acknowledged, 1,
        "all read the same version, so only the first write can match it"
    );

    // The client's side of the bargain: retry on 409 and nothing is lost.
    let retries = increments_with_retry(&nodes, &cookie, INCREMENTS).await;
    let after_retries = read(&client, &nodes[0], &cookie).await.counter as usize;
    println!(
        "versioned store with client retry, {INCREMENTS} concurrent clients: \
         all acknowledged, {retries} conflicts retried, counter +{}",
        after_retries - applied
    );
    assert_eq!(after_retries, applied + INCREMENTS);

    for node in nodes {
        node.stop().await;
    }
}

#[actix_web::test]
async fn stock_store_acknowledges_every_increment_and_loses_some() {
    let redis = RedisServer::start();
    let stores = [
        RedisSessionStore::new_pooled(pool(&redis.url(), 16))
            .await
            .expect("stock store"),
        RedisSessionStore::new_pooled(pool(&redis.url(), 16))
            .await
            .expect("stock store"),
    ];
    let nodes = two_nodes(&redis, stores);
    let client = reqwest::Client::new();
    let cookie = log_in(&client, &nodes[0]).await;

    let statuses = overlapping_increments(&nodes, &cookie).await;
    let acknowledged = statuses.iter().filter(|&&s| s == 200).count();
    let applied = read(&client, &nodes[1], &cookie).await.counter as usize;
    println!(
        "stock store, {INCREMENTS} concurrent increments over 2 nodes: \
         acknowledged {acknowledged}, applied {applied}, lost {}",
        acknowledged - applied
    );
    assert_eq!(
        acknowledged, INCREMENTS,
        "the stock store acknowledges everything"
    );
    assert_eq!(
        applied, 1,
        "all read 0 and wrote 1, the last writer wins: every other increment is lost"
    );

    for node in nodes {
        node.stop().await;
    }
}
