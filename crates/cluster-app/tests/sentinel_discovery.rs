//! A node behind Sentinel (`REDIS_SENTINELS`): it asks the sentinels which instance is the
//! primary, skips a sentinel that does not answer, authenticates to sentinels and instances,
//! and answers a fast 503 while no sentinel can name a primary, serving as soon as one can.
//! Real redis-server and redis-sentinel processes (cluster-kit's `SentinelTopology`); no
//! failover here (`sentinel_failover.rs`).

mod common;

use std::time::{Duration, Instant};

use cluster_kit::{wait_for, Member, SentinelOptions, SentinelTopology};
use common::{assert_store_unavailable, Browser, NodeOptions};
use serde_json::json;

/// An answer, not a hang (the node's operation timeout is 500 ms).
const BOUND: Duration = Duration::from_secs(3);
/// Without a primary the node does not wait for one: well under the 500 ms timeout.
const AT_ONCE: Duration = Duration::from_millis(400);

#[test]
fn both_stores_and_the_atomic_counter_work_on_the_primary_sentinel_names() {
    let topology = SentinelTopology::start();
    for store in ["redis", "redis-versioned"] {
        let node = NodeOptions::behind_sentinel(store, &topology)
            .env("SESSION_STORE", store)
            .start();
        let mut browser = Browser::logged_in(&node, "alice");
        assert_eq!(
            browser.get(&node, "/whoami").body["user"],
            "alice",
            "{store}"
        );
        assert_eq!(browser.post(&node, "/counter/incr").body["counter"], 1);
        for expected in [1, 2] {
            let reply = browser.post(&node, "/counter/incr?mode=atomic");
            assert_eq!(reply.body["counter"], expected, "{store}: {}", reply.text);
        }
        assert_eq!(
            browser.get(&node, "/counter?mode=atomic").body["counter"],
            2
        );
        assert_eq!(browser.get(&node, "/readyz").status, 200);
        assert_eq!(browser.post(&node, "/logout").status, 200);
    }
    // Two counters left (the sessions were logged out), on the primary and copied from it.
    assert_eq!(
        common::session_keys_in_redis(&topology.redis_url(0)).len(),
        2
    );
    assert!(topology.wait_for_replicas_in_sync(BOUND));
    assert_eq!(
        common::session_keys_in_redis(&topology.redis_url(1)).len(),
        2
    );
}

/// A paused sentinel accepts connections and never answers. The node gives it the operation
/// timeout and asks the next one; redis-rs's `SentinelClient` would wait for ever.
#[test]
fn a_sentinel_that_does_not_answer_is_skipped() {
    let topology = SentinelTopology::start();
    topology.pause(Member::Sentinel(0));
    let node = NodeOptions::behind_sentinel("a", &topology).start();
    let mut browser = Browser::logged_in(&node, "alice");
    let reply = browser.get(&node, "/whoami");
    assert_eq!(reply.body["user"], "alice");
    assert!(reply.elapsed < BOUND, "{:?}", reply.elapsed);
}

#[test]
fn passwords_reach_the_sentinels_and_the_redis_instances() {
    let topology = SentinelTopology::start_with(SentinelOptions {
        redis_password: Some("redis-secret".to_string()),
        sentinel_password: Some("sentinel-secret".to_string()),
        ..SentinelOptions::default()
    });
    let node = NodeOptions::behind_sentinel("a", &topology)
        .env("REDIS_SENTINEL_PASSWORD", "sentinel-secret")
        .env("REDIS_PASSWORD", "redis-secret")
        .start();
    let mut browser = Browser::logged_in(&node, "alice");
    assert_eq!(browser.get(&node, "/whoami").body["user"], "alice");

    let wrong = NodeOptions::behind_sentinel("wrong", &topology)
        .env("REDIS_SENTINEL_PASSWORD", "sentinel-secret")
        .env("REDIS_PASSWORD", "not-the-password")
        .start();
    let reply = Browser::new().post_json(&wrong, "/login", &json!({"user": "eve"}));
    assert_store_unavailable(&reply, "wrong", "login with a wrong password", AT_ONCE);
}

#[test]
fn a_node_keeps_its_primary_while_the_sentinels_are_down() {
    let mut topology = SentinelTopology::start();
    let node = NodeOptions::behind_sentinel("a", &topology).start();
    let mut browser = Browser::logged_in(&node, "alice");
    for sentinel in 0..3 {
        topology.kill(Member::Sentinel(sentinel));
    }
    // Nobody can fail the primary over meanwhile: it stays the primary.
    assert_eq!(browser.post(&node, "/counter/incr").body["counter"], 1);
    assert_eq!(browser.get(&node, "/whoami").body["user"], "alice");
    assert_eq!(browser.get(&node, "/readyz").status, 200);
}

#[test]
fn without_a_sentinel_to_ask_the_node_answers_503_at_once_and_serves_when_one_answers() {
    let mut topology = SentinelTopology::start();
    for sentinel in 0..3 {
        topology.kill(Member::Sentinel(sentinel));
    }
    let node = NodeOptions::behind_sentinel("a", &topology).start();
    let mut browser = Browser::new();
    for _ in 0..3 {
        let reply = browser.post_json(&node, "/login", &json!({"user": "alice"}));
        assert_store_unavailable(&reply, "a", "login without a primary", AT_ONCE);
    }
    let ready = browser.get(&node, "/readyz");
    assert_eq!(
        (ready.status, &ready.body),
        (503, &json!({"node": "a", "status": "redis unavailable"}))
    );
    assert!(ready.elapsed < AT_ONCE, "/readyz took {:?}", ready.elapsed);
    assert_eq!(browser.get(&node, "/healthz").status, 200);

    topology
        .restart(Member::Sentinel(1))
        .expect("restart a sentinel");
    let back = Instant::now();
    let served = wait_for(BOUND, || {
        let reply = browser.post_json(&node, "/login", &json!({"user": "alice"}));
        (reply.status == 200).then_some(())
    });
    assert!(
        served.is_some(),
        "no login within {BOUND:?} of a sentinel back"
    );
    eprintln!("serving {:?} after a sentinel came back", back.elapsed());
    assert_eq!(browser.get(&node, "/whoami").body["user"], "alice");
    assert_eq!(browser.get(&node, "/readyz").status, 200);
}
