//! A Redis that accepts bytes and answers nothing, on every route and with
//! both session stores: each answers a JSON 503 with `Retry-After` within a
//! bound (a hang is what is caught, so the bound is generous: 3 s for a
//! 300 ms timeout). Reads and writes are bounded separately: with only the
//! writes silent, a request gets past its session read and must still not
//! hang on its write (`SET`, `DEL`, the versioned store's scripts, the atomic
//! counter's `INCRBY`), nor on the atomic counter's own key.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use cluster_kit::RedisServer;
use common::silent_redis::{Silence, SilentRedis};
use common::{Browser, Node, NodeOptions, Reply};
use serde_json::json;

const BOUND: Duration = Duration::from_secs(3);

#[derive(Clone, Copy)]
enum Verb {
    Get,
    Post,
    Put,
}

/// Every route that touches Redis, with what it sends.
const ROUTES: &[(Verb, &str)] = &[
    (Verb::Get, "/whoami"),
    (Verb::Post, "/login"),
    (Verb::Post, "/logout"),
    (Verb::Put, "/session/items/cart"),
    (Verb::Get, "/session/items"),
    (Verb::Post, "/counter/incr"),
    (Verb::Post, "/counter/incr?mode=atomic"),
    (Verb::Get, "/counter"),
    (Verb::Get, "/counter?mode=atomic"),
    (Verb::Get, "/readyz"),
];

/// Routes that write for an anonymous client too (a new session, a counter).
const ANONYMOUS_WRITES: &[(Verb, &str)] = &[
    (Verb::Post, "/login"),
    (Verb::Put, "/session/items/cart"),
    (Verb::Post, "/counter/incr"),
    (Verb::Post, "/counter/incr?mode=atomic"),
];

/// What goes silent after the session read of a logged-in client, and the
/// route that must not hang on it.
const PAST_THE_SESSION_READ: &[(Silence, Verb, &str)] = &[
    (Silence::Writes, Verb::Post, "/logout"),
    (Silence::Writes, Verb::Post, "/login"),
    (Silence::Writes, Verb::Put, "/session/items/cart"),
    (Silence::Writes, Verb::Post, "/counter/incr"),
    (Silence::Writes, Verb::Post, "/counter/incr?mode=atomic"),
    (
        Silence::CounterKeys,
        Verb::Post,
        "/counter/incr?mode=atomic",
    ),
    (Silence::CounterKeys, Verb::Get, "/counter?mode=atomic"),
];

fn request(browser: &mut Browser, node: &Node, verb: Verb, path: &str) -> Reply {
    match verb {
        Verb::Get => browser.get(node, path),
        Verb::Post if path == "/login" => browser.post_json(node, path, &json!({"user": "bob"})),
        Verb::Post => browser.post(node, path),
        Verb::Put => browser.put_json(node, path, &json!({"apples": 3})),
    }
}

fn assert_fast_503(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 503, "{what}: {}", reply.text);
    assert!(
        reply.body["error"].is_string() || reply.body["status"].is_string(),
        "{what}: not a JSON error: {}",
        reply.text
    );
    assert_eq!(reply.header("retry-after"), Some("1"), "{what}");
    assert!(reply.elapsed < BOUND, "{what} took {:?}", reply.elapsed);
}

fn every_route_answers_503_quickly_on_a_silent_redis(store: &str) {
    let redis = RedisServer::start();
    let upstream: SocketAddr = ([127, 0, 0, 1], redis.port()).into();
    let relay = SilentRedis::start(upstream);
    let node = NodeOptions::new("a", &relay.url())
        .env("SESSION_STORE", store)
        .env("REDIS_TIMEOUT_MS", "300")
        .start();
    let mut alice = Browser::logged_in(&node, "alice");
    assert_eq!(alice.post(&node, "/counter/incr?mode=atomic").status, 200);

    relay.set(Silence::Everything);
    for &(verb, path) in ROUTES {
        let mut tab = Browser::with_cookie(alice.cookie.clone());
        let reply = request(&mut tab, &node, verb, path);
        assert_fast_503(&reply, &format!("{store}, all silent, logged in: {path}"));
    }
    for &(verb, path) in ANONYMOUS_WRITES {
        let reply = request(&mut Browser::new(), &node, verb, path);
        assert_fast_503(&reply, &format!("{store}, all silent, anonymous: {path}"));
    }

    for &(silence, verb, path) in PAST_THE_SESSION_READ {
        // Each case silences the connection its command went out on; a fresh
        // login through a healed relay gives the next one a session.
        relay.set(Silence::Nothing);
        let mut bob = Browser::new();
        let login = cluster_kit::wait_for(BOUND, || {
            let reply = request(&mut bob, &node, Verb::Post, "/login");
            (reply.status == 200).then_some(reply)
        });
        assert!(login.is_some(), "{store}: no login after healing the relay");
        assert_eq!(bob.post(&node, "/counter/incr?mode=atomic").status, 200);
        relay.set(silence);
        let reply = request(&mut bob, &node, verb, path);
        assert_fast_503(
            &reply,
            &format!("{store}, {silence:?} silent, logged in: {path}"),
        );
    }
}

#[test]
fn every_route_answers_503_quickly_with_the_default_store() {
    every_route_answers_503_quickly_on_a_silent_redis("redis");
}

#[test]
fn every_route_answers_503_quickly_with_the_versioned_store() {
    every_route_answers_503_quickly_on_a_silent_redis("redis-versioned");
}
