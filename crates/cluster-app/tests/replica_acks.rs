//! `REDIS_MIN_REPLICAS_ACK`: a session write or an atomic increment counts only once that many
//! replicas confirm it (Redis `WAIT`, in the same round trip). With the replicas silenced
//! (SIGSTOP) the write is a fast 503 that says so; with them back it succeeds. It is plain
//! Redis, so it works with `REDIS_URL` as well as behind Sentinel: one node of each, the
//! default store on the first, the versioned one on the second.

mod common;

use std::time::Duration;

use cluster_kit::{wait_for, Member, SentinelTopology};
use common::{metric_value, Browser, Node, NodeOptions, Reply};
use serde_json::json;

/// The wait for replicas each write is given (the default).
const ACK_TIMEOUT: Duration = Duration::from_millis(100);
/// An answer, not a hang.
const BOUND: Duration = Duration::from_secs(3);

fn with_acks(options: NodeOptions) -> NodeOptions {
    options.env("REDIS_MIN_REPLICAS_ACK", "1").env(
        "REDIS_REPLICA_ACK_TIMEOUT_MS",
        &ACK_TIMEOUT.as_millis().to_string(),
    )
}

fn assert_unconfirmed(reply: &Reply, node: &Node, what: &str) {
    assert_eq!(
        reply.status, 503,
        "{what} on {}: {}",
        node.node_id, reply.text
    );
    assert_eq!(
        reply.body,
        json!({"node": node.node_id, "error": "write not confirmed by enough Redis replicas"}),
        "{what}"
    );
    assert_eq!(reply.header("retry-after"), Some("1"), "{what}");
    assert!(
        reply.elapsed >= ACK_TIMEOUT && reply.elapsed < BOUND,
        "{what} on {}: answered after {:?}, the wait for replicas is {ACK_TIMEOUT:?}",
        node.node_id,
        reply.elapsed
    );
}

#[test]
fn writes_no_replica_confirms_are_a_fast_503_and_succeed_with_the_replicas_back() {
    let topology = SentinelTopology::start();
    let nodes = [
        with_acks(NodeOptions::new("url", &topology.redis_url(0))).start(),
        with_acks(NodeOptions::behind_sentinel("sentinel", &topology))
            .env("SESSION_STORE", "redis-versioned")
            .start(),
    ];
    let mut browsers: Vec<Browser> = nodes
        .iter()
        .map(|node| {
            let mut browser = Browser::logged_in(node, "alice");
            assert_eq!(browser.post(node, "/counter/incr").status, 200);
            assert_eq!(browser.post(node, "/counter/incr?mode=atomic").status, 200);
            browser
        })
        .collect();

    topology.pause(Member::Redis(1));
    topology.pause(Member::Redis(2));
    for (node, browser) in nodes.iter().zip(&mut browsers) {
        let login = Browser::new().post_json(node, "/login", &json!({"user": "bob"}));
        assert_unconfirmed(&login, node, "login (save)");
        assert_unconfirmed(&browser.post(node, "/counter/incr"), node, "update");
        assert_unconfirmed(
            &browser.post(node, "/counter/incr?mode=atomic"),
            node,
            "atomic increment",
        );
        let read = browser.get(node, "/whoami");
        assert_eq!(read.status, 200, "reads wait for no replica: {}", read.text);

        let metrics = browser.get(node, "/metrics").text;
        let unconfirmed_saves = format!(
            r#"session_store_operations_total{{operation="save",outcome="unconfirmed",node="{}"}}"#,
            node.node_id
        );
        assert_eq!(
            metric_value(&metrics, &unconfirmed_saves),
            Some(1.0),
            "{metrics}"
        );
        let unconfirmed_increments = format!(
            r#"atomic_increments_unconfirmed_total{{node="{}"}}"#,
            node.node_id
        );
        assert_eq!(metric_value(&metrics, &unconfirmed_increments), Some(1.0));
    }

    topology.resume(Member::Redis(1));
    topology.resume(Member::Redis(2));
    for (node, browser) in nodes.iter().zip(&mut browsers) {
        let confirmed = wait_for(BOUND, || {
            let reply = browser.post(node, "/counter/incr?mode=atomic");
            (reply.status == 200).then_some(reply)
        });
        // The unconfirmed increment was not undone: it is on the primary.
        assert_eq!(
            confirmed.expect("an increment confirmed").body["counter"],
            3
        );
        let login = Browser::new().post_json(node, "/login", &json!({"user": "bob"}));
        assert_eq!(login.status, 200, "{}", login.text);
    }
}
