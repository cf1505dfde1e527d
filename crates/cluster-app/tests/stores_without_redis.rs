//! `SESSION_STORE=memory` and `SESSION_STORE=cookie`, the two designs without
//! Redis that chapters 2 and 3 of the course compare with it: the memory store
//! keeps a session on the node that made it and nowhere else; the cookie store
//! carries it to any node, up to a size; neither needs (or accepts) Redis.

mod common;

use common::{Browser, Node, NodeOptions};
use serde_json::json;

/// A node with `store` and no Redis; both nodes of a test share the session key.
fn node_without_redis(node_id: &str, store: &str) -> Node {
    NodeOptions {
        redis_url: None,
        ..NodeOptions::new(node_id, "")
    }
    .env("SESSION_STORE", store)
    .start()
}

#[test]
fn the_memory_store_keeps_a_session_on_its_node_and_nowhere_else() {
    let node1 = node_without_redis("node1", "memory");
    let node2 = node_without_redis("node2", "memory");
    let mut alice = Browser::logged_in(&node1, "alice");

    let on_node1 = alice.get(&node1, "/whoami");
    assert_eq!(on_node1.status, 200, "{}", on_node1.text);
    assert_eq!(on_node1.body["user"], "alice");

    // The same valid cookie (the key is shared) names a session node2 never saw.
    let on_node2 = alice.get(&node2, "/whoami");
    assert_eq!(on_node2.status, 200, "{}", on_node2.text);
    assert_eq!(on_node2.body["user"], json!(null), "node2 knew alice");

    // node1 still has her: the session is lost for node2, not deleted.
    assert_eq!(alice.get(&node1, "/whoami").body["user"], "alice");
}

#[test]
fn the_cookie_store_carries_the_session_to_any_node_and_a_logout_cannot_revoke_it() {
    let node1 = node_without_redis("node1", "cookie");
    let node2 = node_without_redis("node2", "cookie");
    let mut alice = Browser::logged_in(&node1, "alice");
    assert_eq!(alice.post(&node1, "/counter/incr").body["counter"], 1);

    let on_node2 = alice.post(&node2, "/counter/incr");
    assert_eq!(on_node2.status, 200, "{}", on_node2.text);
    assert_eq!(
        on_node2.body["counter"], 2,
        "node2 did not read node1's cookie"
    );
    assert_eq!(alice.get(&node2, "/whoami").body["user"], "alice");

    let stolen = alice.cookie.clone();
    assert_eq!(alice.post(&node2, "/logout").status, 200);
    assert_eq!(alice.cookie, None, "logout did not remove the cookie");
    let mut thief = Browser::with_cookie(stolen);
    assert_eq!(
        thief.get(&node1, "/whoami").body["user"],
        "alice",
        "a replayed cookie was refused after logout: nothing on the node can do that"
    );
}

#[test]
fn a_session_too_large_for_its_cookie_is_a_413_and_changes_nothing() {
    let node = node_without_redis("node1", "cookie");
    let mut alice = Browser::logged_in(&node, "alice");
    let small = alice.put_json(&node, "/session/items/note", &json!("x".repeat(1024)));
    assert_eq!(
        small.status, 200,
        "a 1 KiB item did not fit: {}",
        small.text
    );
    let cookie_after_small = alice.cookie.clone();

    let big = alice.put_json(&node, "/session/items/photo", &json!("y".repeat(3000)));
    assert_eq!(big.status, 413, "{}", big.text);
    assert_eq!(big.body["node"], "node1");
    let error = big.body["error"].as_str().unwrap_or_default();
    assert!(error.contains("would not fit in its cookie"), "{error}");
    assert_eq!(
        alice.cookie, cookie_after_small,
        "a refused write changed the cookie"
    );

    let items = alice.get(&node, "/session/items");
    assert_eq!(items.body["items"]["note"], json!("x".repeat(1024)));
    assert_eq!(items.body["items"]["photo"], json!(null));
}

#[test]
fn without_redis_the_node_is_ready_and_refuses_the_atomic_counter() {
    for store in ["memory", "cookie"] {
        let node = node_without_redis("node1", store);
        let mut browser = Browser::logged_in(&node, "alice");
        let ready = browser.get(&node, "/readyz");
        assert_eq!(ready.status, 200, "{store}: {}", ready.text);
        assert_eq!(ready.body["status"], "ready");

        let increment = browser.post(&node, "/counter/incr?mode=atomic");
        assert_eq!(increment.status, 400, "{store}: {}", increment.text);
        let error = increment.body["error"].as_str().unwrap_or_default();
        assert!(error.contains("Redis"), "{store}: {error}");
        let read = browser.get(&node, "/counter?mode=atomic");
        assert_eq!(read.status, 400, "{store}: {}", read.text);
        assert_eq!(browser.get(&node, "/whoami").body["user"], "alice");
    }
}
