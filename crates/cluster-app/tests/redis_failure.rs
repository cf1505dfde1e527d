//! Redis trouble: fail fast while it lasts, recover fast when it ends.
//!
//! The node's operation timeout is 500 ms (the default): a 503 instead of a
//! hang, and 200 again soon after Redis is back, without restarting the node.
//! The bounds tell a hang from an answer (a debug build on two busy cores is
//! slow, not hung); the figures themselves are measured by `clusterctl verify`.

mod common;

use std::sync::Barrier;
use std::time::{Duration, Instant};

use cluster_kit::{wait_for, RedisServer};
use common::silent_redis::{Silence, SilentRedis};
use common::{assert_store_unavailable, Browser, Node};
use serde_json::json;

/// An answer, not a hang: six times the 500 ms timeout.
const BOUND: Duration = Duration::from_secs(3);
/// Redis back: the node serves again within this, without a restart.
const RECOVERY_BOUND: Duration = Duration::from_secs(5);

#[test]
fn the_first_read_after_a_redis_restart_succeeds() {
    // Redis restarts while no request is in flight: the node's connections are
    // broken, but no request has noticed yet. The next read must not pay for it.
    let (_redis, node, mut browser) = alice_reads_then_redis_restarts();
    let reply = browser.get(&node, "/whoami");
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["user"], "alice");
}

/// After a restart every worker needs a new read connection. A burst of
/// concurrent reads must open one per worker (the test node has 2), not one
/// per read: a herd of connects at a Redis that has just come back is the
/// last thing it needs.
#[test]
fn a_burst_of_reads_after_a_redis_restart_opens_one_connection_per_worker() {
    let (redis, node, browser) = alice_reads_then_redis_restarts();

    let mut observer = common::redis_connection(&redis.url());
    let opened_before = connections_received(&mut observer);
    let readers = 32;
    let start = Barrier::new(readers);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..readers)
            .map(|_| {
                let mut tab = Browser::with_cookie(browser.cookie.clone());
                let (start, node) = (&start, &node);
                scope.spawn(move || {
                    start.wait();
                    tab.get(node, "/whoami").status
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().expect("reader thread"))
            .collect()
    });
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let opened = connections_received(&mut observer) - opened_before;
    assert!(
        (1..=2).contains(&opened),
        "{readers} concurrent reads opened {opened} connections to Redis"
    );
}

/// A node on a Redis that keeps its data over restarts; alice logs in and
/// reads (so the node holds open connections), then Redis restarts.
fn alice_reads_then_redis_restarts() -> (RedisServer, Node, Browser) {
    let mut redis = RedisServer::start_with_aof();
    let node = Node::start("a", &redis.url());
    let mut browser = Browser::logged_in(&node, "alice");
    assert_eq!(browser.get(&node, "/whoami").status, 200);
    redis.restart();
    (redis, node, browser)
}

/// Connections Redis has accepted since it started.
fn connections_received(connection: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(connection)
        .expect("INFO stats");
    info.lines()
        .find_map(|line| line.strip_prefix("total_connections_received:"))
        .and_then(|count| count.trim().parse().ok())
        .expect("INFO stats has total_connections_received")
}

#[test]
fn redis_killed_gives_a_fast_503_and_redis_back_gives_200_again() {
    let mut redis = RedisServer::start_with_aof();
    let node = Node::start("a", &redis.url());
    let mut browser = Browser::logged_in(&node, "alice");
    assert_eq!(browser.get(&node, "/whoami").status, 200); // warm keep-alive connection

    redis.kill();
    for (method, path) in [
        ("GET", "/whoami"),
        ("POST", "/counter/incr"),
        ("GET", "/session/items"),
    ] {
        let reply = match method {
            "GET" => browser.get(&node, path),
            _ => browser.post(&node, path),
        };
        assert_store_unavailable(&reply, "a", &format!("{method} {path}"), BOUND);
    }
    let ready = browser.get(&node, "/readyz");
    assert_eq!(
        (ready.status, &ready.body),
        (503, &json!({"node": "a", "status": "redis unavailable"}))
    );
    assert!(ready.elapsed < BOUND, "/readyz took {:?}", ready.elapsed);
    assert_eq!(
        browser.get(&node, "/healthz").status,
        200,
        "liveness does not depend on Redis"
    );

    redis.restart();
    let back = Instant::now();
    let recovered = wait_for(RECOVERY_BOUND, || {
        let reply = browser.get(&node, "/whoami");
        (reply.status == 200).then_some(reply)
    });
    let reply =
        recovered.unwrap_or_else(|| panic!("no 200 within {RECOVERY_BOUND:?} of Redis being back"));
    assert_eq!(
        reply.body["user"], "alice",
        "the session survives (Redis keeps it on disk)"
    );
    assert_eq!(reply.body["counter"], 0);
    assert!(back.elapsed() < RECOVERY_BOUND);
    assert_eq!(browser.post(&node, "/counter/incr").body["counter"], 1);
    assert_eq!(browser.get(&node, "/readyz").status, 200);
}

/// A Redis that accepts connections and never answers (a paused server, a
/// dropped route) is the case where the stock store hangs for minutes. Every
/// route, writes included, is in `redis_silent.rs`.
#[test]
fn a_redis_that_never_answers_gives_503_within_the_timeout() {
    let redis = RedisServer::start();
    let silent = SilentRedis::start(([127, 0, 0, 1], redis.port()).into());
    silent.set(Silence::Everything);
    let node = Node::start("a", &silent.url());
    // A cookie the node can decrypt, made by a node of the same key on a live Redis.
    let mut browser = Browser::logged_in(&Node::start("helper", &redis.url()), "alice");

    for path in ["/whoami", "/readyz", "/whoami"] {
        let reply = browser.get(&node, path);
        assert_eq!(reply.status, 503, "{path}: {}", reply.text);
        assert_eq!(reply.header("x-served-by"), Some("a"));
        // Not before the timeout: the answer comes from the deadline, not
        // from an error (a slow machine only makes this longer).
        assert!(
            reply.elapsed >= Duration::from_millis(450),
            "{path} answered before the timeout: {:?}",
            reply.elapsed
        );
        assert!(reply.elapsed < BOUND, "{path} took {:?}", reply.elapsed);
    }
}
