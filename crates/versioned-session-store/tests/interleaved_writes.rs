//! Another writer lands between a write's version check and the write itself.
//!
//! Writer A's connection goes through a relay that answers A's reads and holds A's first
//! command that may write; writer B then updates or deletes the session straight in Redis,
//! and only then is A's write let through. Every step happens in this order on every run.
//! A compare-and-set that checks the version and writes in one atomic command has its
//! check held with the write, so it sees B's change and refuses; one that reads the version
//! first and writes afterwards has already passed its check, and overwrites B's update or
//! re-creates the deleted session. The calls-in-sequence tests of `store_contract.rs`
//! cannot tell the two apart.

mod common;

use std::collections::HashMap;
use std::future::Future;

use actix_session::storage::{SessionKey, SessionStore, UpdateError};
use actix_web::cookie::time::Duration;
use cluster_kit::RedisServer;
use common::write_hold_relay::WriteHoldRelay;
use common::{key_count, pool};
use deadpool_redis::Pool;
use versioned_session_store::{conflict_in_update, ConflictReason, VersionedRedisStore};

const TTL: Duration = Duration::minutes(5);

/// Writer A (through the relay) and writer B (straight to Redis) on one session, which
/// both have loaded at the same version.
struct TwoWriters {
    _redis: RedisServer,
    relay: WriteHoldRelay,
    inspect: Pool,
    store_a: VersionedRedisStore,
    store_b: VersionedRedisStore,
    key: SessionKey,
    read_a: HashMap<String, String>,
    read_b: HashMap<String, String>,
}

async fn two_writers_after_the_same_load() -> TwoWriters {
    let redis = RedisServer::start();
    let relay = WriteHoldRelay::start(redis.port());
    let inspect = pool(&redis.url(), 1);
    let store_a = VersionedRedisStore::new(pool(&relay.url(), 1), "session:");
    let store_b = VersionedRedisStore::new(pool(&redis.url(), 1), "session:");
    let initial = HashMap::from([
        ("user".to_string(), "\"alice\"".to_string()),
        ("counter".to_string(), "0".to_string()),
    ]);
    let key = store_b.save(initial, &TTL).await.expect("save the session");
    let read_a = store_a.load(&key).await.unwrap().expect("A loads it");
    let read_b = store_b.load(&key).await.unwrap().expect("B loads it");
    assert_eq!(read_a, read_b, "both writers start from the same version");
    TwoWriters {
        _redis: redis,
        relay,
        inspect,
        store_a,
        store_b,
        key,
        read_a,
        read_b,
    }
}

/// Runs `write_a` until the relay holds its first write, then `meanwhile` to completion,
/// then lets A's write through; returns A's outcome.
async fn with_a_held_at_its_write<T>(
    relay: &WriteHoldRelay,
    write_a: impl Future<Output = T>,
    meanwhile: impl Future<Output = ()>,
) -> T {
    relay.hold_next_write();
    let mut write_a = std::pin::pin!(write_a);
    tokio::select! {
        _ = &mut write_a => panic!("A's update finished without sending a write"),
        () = relay.write_held() => {}
    }
    meanwhile.await;
    relay.release();
    tokio::time::timeout(std::time::Duration::from_secs(10), write_a)
        .await
        .expect("A's write completes once released")
}

fn same_key(key: &SessionKey) -> SessionKey {
    key.as_ref().to_string().try_into().expect("valid key")
}

fn conflict_reason(result: Result<SessionKey, UpdateError>) -> ConflictReason {
    let err = result.expect_err("A's update must be refused");
    conflict_in_update(&err)
        .expect("refused as a conflict")
        .reason
}

#[tokio::test]
async fn an_update_landing_between_the_check_and_the_write_wins_and_the_other_is_refused() {
    let writers = two_writers_after_the_same_load().await;
    let mut write_a = writers.read_a.clone();
    write_a.insert("counter".into(), "\"from A\"".into());
    let mut write_b = writers.read_b.clone();
    write_b.insert("counter".into(), "\"from B\"".into());

    let outcome_a = with_a_held_at_its_write(
        &writers.relay,
        writers
            .store_a
            .update(same_key(&writers.key), write_a, &TTL),
        async {
            writers
                .store_b
                .update(same_key(&writers.key), write_b, &TTL)
                .await
                .expect("B's update, first to arrive, is applied");
        },
    )
    .await;

    assert_eq!(conflict_reason(outcome_a), ConflictReason::Stale);
    let stored = writers.store_b.load(&writers.key).await.unwrap().unwrap();
    assert_eq!(stored["counter"], "\"from B\"", "B's update survives");
}

#[tokio::test]
async fn a_delete_landing_between_the_check_and_the_write_stays_deleted() {
    let writers = two_writers_after_the_same_load().await;
    let mut write_a = writers.read_a.clone();
    write_a.insert("counter".into(), "\"from A\"".into());

    let outcome_a = with_a_held_at_its_write(
        &writers.relay,
        writers
            .store_a
            .update(same_key(&writers.key), write_a, &TTL),
        async {
            writers
                .store_b
                .delete(&writers.key)
                .await
                .expect("B logs the session out");
        },
    )
    .await;

    assert_eq!(conflict_reason(outcome_a), ConflictReason::Gone);
    assert_eq!(
        key_count(&writers.inspect).await,
        0,
        "no session under any key"
    );
    assert_eq!(writers.store_b.load(&writers.key).await.unwrap(), None);
}
