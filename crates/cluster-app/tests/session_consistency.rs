//! Concurrent requests on one session, through two nodes sharing one Redis:
//! with `SESSION_STORE=redis-versioned` every acknowledged write is applied,
//! a refused one is a 409 the client can act on, and a logout stays a
//! logout; `?mode=atomic` increments never conflict at all.
//!
//! The last-writer-wins stores' behaviour under the same races (lost increments, the
//! resurrected session) is measured in crates/versioned-session-store and by
//! `clusterctl verify` (scenario lost-updates).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use cluster_kit::{wait_for, RedisServer};
use common::{
    assert_store_unavailable, redis_connection, session_keys_in_redis, Browser, Node, NodeOptions,
    Reply,
};
use serde_json::{json, Value};

/// A node with the versioned store and the default 500 ms Redis timeout.
/// `RUST_BACKTRACE=1` as in many deployments: anyhow then captures a
/// backtrace with every refused write, and the 409s must stay 409s, fast
/// (resolving those backtraces once turned a 64-client race into 503s).
fn versioned_node(node_id: &str, redis_url: &str) -> Node {
    NodeOptions::new(node_id, redis_url)
        .env("SESSION_STORE", "redis-versioned")
        .env("RUST_BACKTRACE", "1")
        .start()
}

/// Two nodes with the versioned store, `a` and `b`, on one Redis: where every
/// race here runs. Bind every field: one left out of a `let` pattern is
/// dropped at once, and its process stopped.
struct TwoNodes {
    a: Node,
    b: Node,
    redis: RedisServer,
}

impl TwoNodes {
    fn start() -> TwoNodes {
        let redis = RedisServer::start();
        TwoNodes {
            a: versioned_node("a", &redis.url()),
            b: versioned_node("b", &redis.url()),
            redis,
        }
    }
}

/// Sends `POST path` from `clients` threads at once, all with `cookie`,
/// alternating between the nodes.
fn concurrent_posts(
    nodes: &[&Node],
    cookie: &Option<String>,
    path: &str,
    clients: usize,
) -> Vec<Reply> {
    let start = Arc::new(Barrier::new(clients));
    thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                let node = nodes[i % nodes.len()];
                let start = Arc::clone(&start);
                let mut browser = Browser::with_cookie(cookie.clone());
                scope.spawn(move || {
                    start.wait();
                    browser.post(node, path)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("client thread"))
            .collect()
    })
}

/// Sum of the metric family's samples whose line contains every `label`.
fn metric_sum(node: &Node, family: &str, labels: &[&str]) -> f64 {
    let text = Browser::new().get(node, "/metrics").text;
    text.lines()
        .filter(|line| line.starts_with(&format!("{family}{{")))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn assert_conflict(reply: &Reply, node_id: &str) {
    assert_eq!(reply.status, 409, "{}", reply.text);
    assert_eq!(reply.header("x-served-by"), Some(node_id));
    assert_eq!(reply.body["node"], node_id);
    assert!(
        reply.body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("session write refused")),
        "{}",
        reply.text
    );
}

#[test]
fn concurrent_increments_are_applied_or_refused_never_lost() {
    let TwoNodes {
        a,
        b,
        redis: _redis,
    } = TwoNodes::start();
    let mut browser = Browser::logged_in(&a, "alice");

    let replies = concurrent_posts(&[&a, &b], &browser.cookie, "/counter/incr", 24);
    let acknowledged = replies.iter().filter(|r| r.status == 200).count();
    for reply in replies.iter().filter(|r| r.status != 200) {
        let node_id = reply.header("x-served-by").unwrap_or_default().to_string();
        assert_conflict(reply, &node_id);
    }
    let refused = replies.len() - acknowledged;
    println!("24 concurrent increments: {acknowledged} acknowledged, {refused} refused (409)");

    assert!(
        acknowledged >= 1,
        "one write always wins the compare-and-set"
    );
    let whoami = browser.get(&a, "/whoami");
    assert_eq!(
        whoami.body["counter"],
        json!(acknowledged),
        "every acknowledged increment is applied, no other"
    );
    let conflicts_counted: f64 = [&a, &b]
        .iter()
        .map(|node| metric_sum(node, "session_conflicts_total", &["reason=\"stale\""]))
        .sum();
    assert_eq!(conflicts_counted as usize, refused);
}

/// An HTTP request sent in two parts: the node reads the session as soon as
/// the headers arrive, then waits for the body, so a test can act between
/// the session read and the session write.
struct HeldRequest {
    stream: TcpStream,
    rest_of_body: Vec<u8>,
}

impl HeldRequest {
    /// Sends `PUT path` with all of `body` but its last byte, then waits
    /// until the node has loaded the session.
    fn put_json(node: &Node, cookie: &str, path: &str, body: &Value) -> HeldRequest {
        let loads_before = metric_sum(
            node,
            "session_store_operations_total",
            &["operation=\"load\""],
        );
        let body = body.to_string().into_bytes();
        let mut stream = TcpStream::connect(("127.0.0.1", node.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let (first, last) = body.split_at(body.len() - 1);
        stream.write_all(head.as_bytes()).expect("send head");
        stream.write_all(first).expect("send body");
        let loaded = wait_for(Duration::from_secs(5), || {
            let loads = metric_sum(
                node,
                "session_store_operations_total",
                &["operation=\"load\""],
            );
            (loads > loads_before).then_some(())
        });
        assert!(
            loaded.is_some(),
            "{} never loaded the session",
            node.node_id
        );
        HeldRequest {
            stream,
            rest_of_body: last.to_vec(),
        }
    }

    /// Sends the last byte and reads the answer: (status, X-Served-By, body).
    fn finish(mut self) -> (u16, String, Value) {
        self.stream
            .write_all(&self.rest_of_body)
            .expect("send body");
        let mut raw = String::new();
        self.stream.read_to_string(&mut raw).expect("read answer");
        let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP answer");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("status code");
        let served_by = head
            .lines()
            .find_map(|line| line.strip_prefix("x-served-by: "))
            .unwrap_or_default()
            .to_string();
        (
            status,
            served_by,
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }
}

#[test]
fn a_write_based_on_a_stale_read_gets_409_and_changes_nothing() {
    let TwoNodes {
        a,
        b,
        redis: _redis,
    } = TwoNodes::start();
    let mut browser = Browser::logged_in(&a, "alice");
    let cookie = browser.cookie.clone().expect("session cookie");

    let held = HeldRequest::put_json(&a, &cookie, "/session/items/colour", &json!("blue"));
    assert_eq!(browser.post(&b, "/counter/incr").status, 200);
    let (status, served_by, body) = held.finish();

    assert_eq!((status, served_by.as_str()), (409, "a"), "{body}");
    assert_eq!(body["node"], "a");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("changed")),
        "{body}"
    );
    let whoami = browser.get(&b, "/whoami");
    assert_eq!(whoami.body["counter"], 1, "the write that won is kept");
    assert_eq!(
        whoami.body["items"],
        json!({}),
        "the refused write left nothing"
    );
    assert_eq!(browser.get(&a, "/session/items").body["items"], json!({}));
}

/// The versioned store's sessions are hashes: their state, whoever wrote it.
fn stored_session_states(redis_url: &str) -> Vec<String> {
    let mut connection = redis_connection(redis_url);
    session_keys_in_redis(redis_url)
        .into_iter()
        .filter(|key| !key.contains(":counter:"))
        .map(|key| {
            redis::cmd("HGET")
                .arg(&key)
                .arg("state")
                .query::<String>(&mut connection)
                .expect("HGET state")
        })
        .collect()
}

#[test]
fn a_logout_racing_writes_on_another_node_stays_a_logout() {
    let TwoNodes { a, b, redis } = TwoNodes::start();

    // Deterministic: the write read the session before the logout deleted it.
    let mut browser = Browser::logged_in(&a, "alice");
    let cookie = browser.cookie.clone().expect("session cookie");
    let held = HeldRequest::put_json(&a, &cookie, "/session/items/colour", &json!("blue"));
    assert_eq!(browser.post(&b, "/logout").status, 200);
    let (status, served_by, body) = held.finish();
    assert_eq!((status, served_by.as_str()), (409, "a"), "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("no longer exists")),
        "{body}"
    );
    assert!(
        stored_session_states(&redis.url()).is_empty(),
        "nothing re-created"
    );
    let mut old_tab = Browser::with_cookie(Some(cookie));
    assert_eq!(old_tab.get(&a, "/whoami").body["user"], Value::Null);

    // Concurrent: four tabs keep writing through node b while node a logs out.
    let mut browser = Browser::logged_in(&a, "alice");
    let start = Arc::new(Barrier::new(5));
    let tabs: Vec<Browser> = thread::scope(|scope| {
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let mut tab = Browser::with_cookie(browser.cookie.clone());
                let (start, b) = (Arc::clone(&start), &b);
                scope.spawn(move || {
                    start.wait();
                    for _ in 0..10 {
                        let status = tab.post(b, "/counter/incr").status;
                        assert!(status == 200 || status == 409, "status {status}");
                    }
                    tab
                })
            })
            .collect();
        start.wait();
        assert_eq!(browser.post(&a, "/logout").status, 200);
        writers
            .into_iter()
            .map(|w| w.join().expect("writer"))
            .collect()
    });
    assert_eq!(browser.get(&a, "/whoami").body["user"], Value::Null);
    for mut tab in tabs {
        assert_eq!(
            tab.get(&a, "/whoami").body["user"],
            Value::Null,
            "a tab is logged in again"
        );
    }
    for state in stored_session_states(&redis.url()) {
        assert!(!state.contains("alice"), "a session came back: {state}");
    }
}

#[test]
fn atomic_increments_through_two_nodes_are_all_applied_and_never_refused() {
    let TwoNodes {
        a,
        b,
        redis: _redis,
    } = TwoNodes::start();
    let mut browser = Browser::logged_in(&a, "alice");

    let replies = concurrent_posts(&[&a, &b], &browser.cookie, "/counter/incr?mode=atomic", 64);
    let mut values: Vec<i64> = replies
        .iter()
        .map(|reply| {
            assert_eq!(reply.status, 200, "{}", reply.text);
            reply.body["counter"].as_i64().expect("counter value")
        })
        .collect();
    values.sort_unstable();
    assert_eq!(
        values,
        (1..=64).collect::<Vec<_>>(),
        "each value seen exactly once"
    );
    let atomic = browser.get(&b, "/counter?mode=atomic");
    assert_eq!(atomic.body["counter"], 64);
    let in_session = browser.get(&a, "/counter");
    assert_eq!(
        in_session.body["counter"], 0,
        "the session counter is another one"
    );
    let whoami = browser.get(&b, "/whoami");
    let mut fields: Vec<_> = whoami
        .body
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        ["counter", "items", "node", "user"],
        "the plumbing keys (__version, sid) are not shown"
    );

    let unknown = browser.post(&a, "/counter/incr?mode=turbo");
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.body["node"], "a");
    assert!(unknown.body["error"]
        .as_str()
        .is_some_and(|e| e.contains("turbo")));
}

#[test]
fn redis_killed_gives_a_fast_503_with_the_versioned_store_and_the_atomic_counter() {
    let mut redis = RedisServer::start();
    let node = versioned_node("a", &redis.url());
    let mut browser = Browser::logged_in(&node, "alice");
    assert_eq!(browser.post(&node, "/counter/incr?mode=atomic").status, 200);

    redis.kill();
    for path in ["/whoami", "/counter/incr", "/counter/incr?mode=atomic"] {
        let reply = if path == "/whoami" {
            browser.get(&node, path)
        } else {
            browser.post(&node, path)
        };
        assert_store_unavailable(&reply, "a", path, Duration::from_millis(500 + 100));
    }
}
