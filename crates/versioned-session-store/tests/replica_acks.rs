//! `with_replica_acks`: every write waits for replicas to confirm it, in the same round trip,
//! and is reported as unconfirmed (not undone) when too few do. Against a real primary with two
//! replicas, which the test silences with SIGSTOP.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix_session::storage::{SaveError, SessionStore, UpdateError};
use actix_web::cookie::time::Duration as CookieDuration;
use cluster_kit::{Member, SentinelTopology};
use common::pool;
use versioned_session_store::{
    AtomicCounter, CounterError, ReplicaAcks, UnconfirmedWrite, VersionedRedisStore,
};

const TTL: CookieDuration = CookieDuration::minutes(5);
const ACKS: ReplicaAcks = ReplicaAcks {
    replicas: 1,
    timeout: Duration::from_millis(200),
};
/// The WAIT timeout and a generous margin: an answer, not a hang.
const BOUND: Duration = Duration::from_secs(2);

fn state(user: &str) -> HashMap<String, String> {
    HashMap::from([("user".to_string(), format!("\"{user}\""))])
}

fn unconfirmed(err: &anyhow::Error) -> Option<UnconfirmedWrite> {
    err.downcast_ref::<UnconfirmedWrite>().copied()
}

#[tokio::test]
async fn writes_fail_as_unconfirmed_while_no_replica_confirms_them() {
    let topology = SentinelTopology::start();
    let pool = pool(&topology.redis_url(0), 4);
    let store = VersionedRedisStore::new(pool.clone(), "session:").with_replica_acks(ACKS);
    let counter = AtomicCounter::new(
        pool.clone(),
        "session:",
        Duration::from_secs(60),
        Duration::from_secs(5),
    )
    .with_replica_acks(ACKS);

    // Replicas up: the first save also loads the script (NOSCRIPT, then WAIT again).
    let key = store.save(state("alice"), &TTL).await.expect("save");
    let loaded = store.load(&key).await.expect("load").expect("session");
    let key = store
        .update(key, loaded, &TTL)
        .await
        .expect("update confirmed");
    assert_eq!(counter.increment("c").await.expect("increment"), 1);

    // One replica silent: the other still confirms.
    topology.pause(Member::Redis(1));
    assert_eq!(
        counter.increment("c").await.expect("one replica is enough"),
        2
    );

    topology.pause(Member::Redis(2));
    let started = Instant::now();
    let saved = store.save(state("bob"), &TTL).await;
    let elapsed = started.elapsed();
    let Err(SaveError::Other(err)) = saved else {
        panic!("save without a replica: {saved:?}");
    };
    assert_eq!(
        unconfirmed(&err),
        Some(UnconfirmedWrite {
            wanted: 1,
            confirmed: 0,
            timeout: ACKS.timeout
        })
    );
    assert!(
        elapsed >= ACKS.timeout && elapsed < BOUND,
        "WAIT waited its timeout, no more: {elapsed:?}"
    );

    let loaded = store.load(&key).await.expect("load").expect("session");
    let updated = store.update(key.as_ref().to_string().try_into().unwrap(), loaded, &TTL);
    let Err(UpdateError::Other(err)) = updated.await else {
        panic!("update without a replica succeeded");
    };
    assert!(unconfirmed(&err).is_some(), "{err:#}");
    let err = store
        .delete(&key)
        .await
        .expect_err("delete without a replica");
    assert!(unconfirmed(&err).is_some(), "{err:#}");
    let err = counter.increment("c").await.expect_err("increment");
    assert!(matches!(err, CounterError::Unconfirmed(_)), "{err}");

    // Unconfirmed is not undone: the primary has the increment (and the delete).
    assert_eq!(counter.value("c").await.expect("value"), 3);
    assert_eq!(store.load(&key).await.expect("load"), None);

    // Without acks, the same writes are answered at once.
    let plain = VersionedRedisStore::new(pool, "session:");
    plain
        .save(state("carol"), &TTL)
        .await
        .expect("no acks wanted");

    topology.resume(Member::Redis(1));
    topology.resume(Member::Redis(2));
    store
        .save(state("dave"), &TTL)
        .await
        .expect("confirmed again with the replicas back");
}
