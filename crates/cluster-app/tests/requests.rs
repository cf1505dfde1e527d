//! Bad requests, caps, headers and metrics: every answer is JSON and says
//! which node gave it.

mod common;

use cluster_kit::RedisServer;
use common::{metric_value, redis_connection, session_keys_in_redis, Browser, Node};
use serde_json::{json, Value};

#[test]
fn item_caps_refuse_and_leave_the_stored_session_unchanged() {
    let redis = RedisServer::start();
    let node = Node::start("a", &redis.url());
    let mut browser = Browser::logged_in(&node, "alice");
    assert_eq!(
        browser
            .put_json(&node, "/session/items/cart", &json!({"apples": 3}))
            .body["items"],
        1
    );
    let stored_before = stored_session(&redis.url());

    let big = json!("x".repeat(4095)); // 4097 bytes as JSON, with the quotes
    let too_big = browser.put_json(&node, "/session/items/big", &big);
    assert_eq!(too_big.status, 413, "{}", too_big.text);
    let long_key = browser.put_json(
        &node,
        &format!("/session/items/{}", "k".repeat(65)),
        &json!(1),
    );
    assert_eq!(long_key.status, 400, "{}", long_key.text);
    for reply in [&too_big, &long_key] {
        assert_eq!(reply.body["node"], "a");
        assert!(reply.body["error"].is_string());
    }
    assert_eq!(
        stored_session(&redis.url()),
        stored_before,
        "a refused write must not touch Redis"
    );

    let at_the_limit = json!("x".repeat(4094)); // exactly 4096 bytes
    assert_eq!(
        browser
            .put_json(&node, "/session/items/big", &at_the_limit)
            .status,
        200
    );
    assert_eq!(
        browser
            .put_json(
                &node,
                &format!("/session/items/{}", "k".repeat(64)),
                &json!(1)
            )
            .status,
        200
    );
    for i in 3..64 {
        assert_eq!(
            browser
                .put_json(&node, &format!("/session/items/i{i}"), &json!(i))
                .status,
            200
        );
    }
    let full = stored_session(&redis.url());
    let one_too_many = browser.put_json(&node, "/session/items/one-more", &json!(1));
    assert_eq!(one_too_many.status, 400, "{}", one_too_many.text);
    assert_eq!(stored_session(&redis.url()), full);
    assert_eq!(
        browser
            .put_json(&node, "/session/items/cart", &json!("replaced"))
            .status,
        200,
        "replacing a key is not a new key"
    );
    let items = browser.get(&node, "/session/items");
    assert_eq!(items.body["items"].as_object().map(|m| m.len()), Some(64));
    assert_eq!(items.body["items"]["cart"], "replaced");
}

fn stored_session(url: &str) -> String {
    let keys = session_keys_in_redis(url);
    assert_eq!(keys.len(), 1, "exactly one session expected: {keys:?}");
    redis::cmd("GET")
        .arg(&keys[0])
        .query(&mut redis_connection(url))
        .expect("GET session")
}

#[test]
fn bad_json_gets_a_json_400() {
    let redis = RedisServer::start();
    let node = Node::start("a", &redis.url());
    let client = reqwest::blocking::Client::new();
    for body in ["{\"user\":", "not json", "{\"name\":\"alice\"}", "[]"] {
        let reply = Browser::new().send(
            client
                .post(node.url("/login"))
                .header("content-type", "application/json")
                .body(body),
        );
        assert_eq!(reply.status, 400, "body {body}: {}", reply.text);
        assert_eq!(reply.body["node"], "a");
        assert!(
            reply.body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{}",
            reply.text
        );
        assert_eq!(reply.header("x-served-by"), Some("a"));
    }
    let no_body = Browser::new().send(
        client
            .put(node.url("/session/items/k"))
            .header("content-type", "application/json"),
    );
    assert_eq!(no_body.status, 400, "{}", no_body.text);
}

#[test]
fn every_answer_names_the_node_even_errors() {
    let redis = RedisServer::start();
    let node = Node::start("node-7", &redis.url());
    let mut browser = Browser::new();
    let cases: [(&str, Value, u16); 5] = [
        ("/healthz", json!({"node": "node-7", "status": "ok"}), 200),
        ("/readyz", json!({"node": "node-7", "status": "ready"}), 200),
        (
            "/no/such/page",
            json!({"node": "node-7", "error": "not found"}),
            404,
        ),
        (
            "/login",
            json!({"node": "node-7", "error": "not found"}),
            404,
        ),
        (
            "/whoami",
            json!({"node": "node-7", "user": null, "counter": 0, "items": {}}),
            200,
        ),
    ];
    for (path, body, status) in cases {
        let reply = browser.get(&node, path);
        assert_eq!((reply.status, &reply.body), (status, &body), "GET {path}");
        assert_eq!(reply.header("x-served-by"), Some("node-7"), "GET {path}");
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "GET {path}"
        );
    }
    let metrics = browser.get(&node, "/metrics");
    assert_eq!(metrics.header("x-served-by"), Some("node-7"));
}

#[test]
fn metrics_have_the_expected_families_with_the_node_label() {
    let redis = RedisServer::start();
    let node = Node::start("m1", &redis.url());
    let mut browser = Browser::logged_in(&node, "alice");
    browser.get(&node, "/whoami");
    let text = browser.get(&node, "/metrics").text;
    for family in [
        "http_requests_total",
        "http_request_duration_seconds",
        "session_store_operations_total",
        "session_store_operation_duration_seconds",
        "session_corrupt_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{text}"
        );
    }
    let whoami_200 = r#"http_requests_total{method="GET",route="/whoami",status="200",node="m1"}"#;
    assert_eq!(metric_value(&text, whoami_200), Some(1.0), "{text}");
    let loads = r#"session_store_operations_total{operation="load",outcome="ok",node="m1"}"#;
    assert_eq!(metric_value(&text, loads), Some(1.0), "{text}");
    assert_eq!(
        metric_value(&text, r#"session_corrupt_total{node="m1"}"#),
        Some(0.0)
    );
}

#[test]
fn corrupt_session_state_is_no_session_and_is_counted() {
    let redis = RedisServer::start();
    let node = Node::start("a", &redis.url());
    let mut browser = Browser::logged_in(&node, "alice");
    let keys = session_keys_in_redis(&redis.url());
    let mut connection = redis_connection(&redis.url());
    let _: () = redis::cmd("SET")
        .arg(&keys[0])
        .arg("{not json")
        .query(&mut connection)
        .expect("SET");

    let reply = browser.get(&node, "/whoami");
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["user"], json!(null));
    let text = browser.get(&node, "/metrics").text;
    assert_eq!(
        metric_value(&text, r#"session_corrupt_total{node="a"}"#),
        Some(1.0),
        "{text}"
    );
    browser.login(&node, "alice");
    let keys = session_keys_in_redis(&redis.url());

    // A value of the wrong type inside valid state is ignored the same way.
    let _: () = redis::cmd("SET")
        .arg(&keys[0])
        .arg(r#"{"user":"\"alice\"","counter":"\"many\""}"#)
        .query(&mut connection)
        .expect("SET");
    let reply = browser.get(&node, "/whoami");
    assert_eq!(
        (reply.status, &reply.body["counter"]),
        (200, &json!(0)),
        "{}",
        reply.text
    );
    assert_eq!(browser.post(&node, "/counter/incr").body["counter"], 1);
    assert_eq!(browser.login(&node, "bob").body["user"], "bob");
}
