//! The session as clients see it: one node, several nodes, several keys.

mod common;

use cluster_kit::RedisServer;
use common::{session_key, session_keys_in_redis, Browser, Node, NodeOptions, Reply};
use serde_json::json;

#[test]
fn login_whoami_incr_logout() {
    let redis = RedisServer::start();
    let node = Node::start("a", &redis.url());
    let mut browser = Browser::new();

    let anonymous = browser.get(&node, "/whoami");
    assert_eq!(anonymous.status, 200);
    assert_eq!(
        anonymous.body,
        json!({"node": "a", "user": null, "counter": 0, "items": {}})
    );

    let login = browser.login(&node, "alice");
    assert_eq!(login.body["node"], "a");
    assert_eq!(login.body["user"], "alice");
    assert!(
        login.body["login_at"]
            .as_u64()
            .is_some_and(|t| t > 1_600_000_000),
        "{}",
        login.text
    );
    let cookie = login
        .header("set-cookie")
        .expect("login sets the session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Max-Age") && !cookie.contains("Expires"),
        "a browser-session cookie by default: {cookie}"
    );

    assert_eq!(
        browser.post(&node, "/counter/incr").body,
        json!({"node": "a", "counter": 1})
    );
    assert_eq!(
        browser.post(&node, "/counter/incr").body,
        json!({"node": "a", "counter": 2})
    );
    let me = browser.get(&node, "/whoami");
    assert_eq!(
        me.body,
        json!({"node": "a", "user": "alice", "counter": 2, "items": {}})
    );

    let logout = browser.post(&node, "/logout");
    assert_eq!(logout.body, json!({"node": "a", "logged_out": true}));
    assert!(browser.cookie.is_none(), "logout must remove the cookie");
    assert!(
        session_keys_in_redis(&redis.url()).is_empty(),
        "logout must delete the session in Redis"
    );
    assert_eq!(browser.get(&node, "/whoami").body["user"], json!(null));
}

/// Also catches `Session::update()`: with it the second increment of an
/// existing session is never saved, and node b would read 1.
#[test]
fn two_nodes_with_one_key_share_the_session_both_ways() {
    let redis = RedisServer::start();
    let a = Node::start("a", &redis.url());
    let b = Node::start("b", &redis.url());
    let mut on_a = Browser::logged_in(&a, "alice");
    on_a.post(&a, "/counter/incr");
    on_a.post(&a, "/counter/incr");

    let mut on_b = Browser::with_cookie(on_a.cookie.clone());
    let seen_by_b = on_b.get(&b, "/whoami");
    assert_eq!(seen_by_b.header("x-served-by"), Some("b"));
    assert_eq!(seen_by_b.body["user"], "alice");
    assert_eq!(
        seen_by_b.body["counter"], 2,
        "node b must see both increments made on a"
    );

    assert_eq!(on_b.post(&b, "/counter/incr").body["counter"], 3);
    assert_eq!(
        on_b.put_json(&b, "/session/items/cart", &json!(["apple"]))
            .status,
        200
    );
    let mut back_on_a = Browser::with_cookie(on_b.cookie.clone());
    let seen_by_a = back_on_a.get(&a, "/whoami");
    assert_eq!(seen_by_a.body["counter"], 3);
    assert_eq!(seen_by_a.body["items"], json!({"cart": ["apple"]}));
}

#[test]
fn a_node_with_another_key_does_not_see_the_session() {
    let redis = RedisServer::start();
    let a = Node::start("a", &redis.url());
    let stranger = NodeOptions::new("stranger", &redis.url())
        .session_key(session_key(99))
        .start();
    let mut browser = Browser::logged_in(&a, "alice");

    let seen = browser.get(&stranger, "/whoami");
    assert_eq!(seen.status, 200);
    assert_eq!(
        seen.body["user"],
        json!(null),
        "a cookie made with another key must not decrypt"
    );
}

#[test]
fn login_gives_a_new_session_id_and_deletes_the_old_one() {
    let redis = RedisServer::start();
    let node = Node::start("a", &redis.url());
    let mut browser = Browser::new();
    browser.post(&node, "/counter/incr");
    let before_cookie = browser
        .cookie_value()
        .expect("anonymous session cookie")
        .to_string();
    let before_keys = session_keys_in_redis(&redis.url());
    assert_eq!(before_keys.len(), 1);

    browser.login(&node, "alice");
    let after_cookie = browser
        .cookie_value()
        .expect("session cookie after login")
        .to_string();
    let after_keys = session_keys_in_redis(&redis.url());
    assert_ne!(
        before_cookie, after_cookie,
        "the cookie must change at login"
    );
    assert_eq!(after_keys.len(), 1);
    assert_ne!(
        before_keys, after_keys,
        "the old session key must be gone from Redis"
    );

    let old = Browser::with_cookie(Some(format!("{}={before_cookie}", common::COOKIE_NAME)))
        .get(&node, "/whoami");
    assert_eq!(
        old.body["user"],
        json!(null),
        "the pre-login id must not give access"
    );
    let me = browser.get(&node, "/whoami");
    assert_eq!(
        (me.body["user"].clone(), me.body["counter"].clone()),
        (json!("alice"), json!(1))
    );
}

#[test]
fn tampered_and_garbage_cookies_are_treated_as_no_session() {
    let redis = RedisServer::start();
    let node = Node::start("a", &redis.url());
    let browser = Browser::logged_in(&node, "alice");
    let value = browser.cookie_value().expect("cookie").to_string();

    let mut tampered = value.into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii cookie");
    let garbage = ["", "x", "%%%", "not-base64!!", &"A".repeat(4000)];
    for value in std::iter::once(tampered.as_str()).chain(garbage) {
        let mut other = Browser::with_cookie(Some(format!("{}={value}", common::COOKIE_NAME)));
        let reply = other.get(&node, "/whoami");
        assert_eq!(reply.status, 200, "cookie {value:.20}: {}", reply.text);
        assert_eq!(reply.body["user"], json!(null));
        assert_eq!(other.post(&node, "/counter/incr").status, 200);
    }
}

#[test]
fn login_refuses_a_bad_user() {
    let redis = RedisServer::start();
    let node = Node::start("a", &redis.url());
    let mut browser = Browser::new();
    for user in [
        json!(""),
        json!("   "),
        json!("x".repeat(65)),
        json!("a\nb"),
        json!(42),
    ] {
        let reply = browser.post_json(&node, "/login", &json!({ "user": user }));
        assert_eq!(reply.status, 400, "user {user}: {}", reply.text);
        assert_eq!(reply.body["node"], "a");
        assert!(reply.body["error"].is_string(), "{}", reply.text);
    }
    assert!(
        browser.cookie.is_none(),
        "a refused login must not create a session"
    );
}

/// The idle timeout slides on reads too: a user who only reads stays logged
/// in. (The node refreshes it inside the read, `GETEX ... EX`.) A
/// browser-session cookie has nothing to renew, so the read sends no cookie.
#[test]
fn reading_the_session_restarts_its_idle_timeout() {
    let redis = RedisServer::start();
    let node = NodeOptions::new("a", &redis.url())
        .env("SESSION_TTL_SECS", &IDLE_TIMEOUT_SECS.to_string())
        .start();
    let reply = read_after_the_idle_timeout_ran_down(&redis, &node);
    assert_eq!(
        reply.header("set-cookie"),
        None,
        "a read sends no cookie: nothing in it changed"
    );
}

/// With `--persistent-cookie` the cookie's Max-Age slides with the session:
/// every read sends it again.
#[test]
fn a_persistent_cookie_is_renewed_by_every_read() {
    let redis = RedisServer::start();
    let node = NodeOptions::new("a", &redis.url())
        .env("PERSISTENT_COOKIE", "true")
        .env("SESSION_TTL_SECS", &IDLE_TIMEOUT_SECS.to_string())
        .start();
    let reply = read_after_the_idle_timeout_ran_down(&redis, &node);
    assert!(
        reply
            .header("set-cookie")
            .is_some_and(|c| c.contains(&format!("Max-Age={IDLE_TIMEOUT_SECS}"))),
        "the cookie is renewed too: {:?}",
        reply.header("set-cookie")
    );
}

/// The idle timeout the tests above give their node: not the default, so that
/// what they check is that the setting is honoured, not a copy of its value.
const IDLE_TIMEOUT_SECS: i64 = 1234;

/// Logs in, lets the session's Redis TTL run down to 5 s, reads it, checks
/// the read restarted the TTL and returns the read's reply.
fn read_after_the_idle_timeout_ran_down(redis: &RedisServer, node: &Node) -> Reply {
    let mut browser = Browser::logged_in(node, "alice");
    let key = session_keys_in_redis(&redis.url()).remove(0);
    let mut connection = common::redis_connection(&redis.url());
    let _: () = redis::cmd("EXPIRE")
        .arg(&key)
        .arg(5)
        .query(&mut connection)
        .expect("EXPIRE");

    let reply = browser.get(node, "/whoami");
    assert_eq!(reply.body["user"], "alice");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query(&mut connection)
        .expect("TTL");
    assert!(
        ttl > IDLE_TIMEOUT_SECS - 60 && ttl <= IDLE_TIMEOUT_SECS,
        "TTL after a read: {ttl}, idle timeout {IDLE_TIMEOUT_SECS}"
    );
    reply
}
