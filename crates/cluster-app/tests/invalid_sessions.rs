//! Whatever sits under a session's Redis key that is not a session (bytes
//! that are not UTF-8, invalid JSON, a hash, a list...) is no session: the
//! cookie is anonymous, login, logout and writes work, the key is deleted and
//! the occurrence counted. A 503 would say Redis is down, which it is not.

mod common;

use cluster_kit::RedisServer;
use common::{metric_value, redis_connection, session_keys_in_redis, Browser, NodeOptions};

/// Writes one kind of garbage under `key`, replacing what was there.
type Plant = fn(&mut redis::Connection, &str);

fn replace_with(connection: &mut redis::Connection, key: &str, command: &mut redis::Cmd) {
    let _: () = redis::cmd("DEL").arg(key).query(connection).expect("DEL");
    let _: () = command.query(connection).expect("plant garbage");
}

fn not_utf8(connection: &mut redis::Connection, key: &str) {
    replace_with(
        connection,
        key,
        redis::cmd("SET").arg(key).arg(&b"\xff\xfe{"[..]),
    );
}

fn not_json(connection: &mut redis::Connection, key: &str) {
    replace_with(connection, key, redis::cmd("SET").arg(key).arg("{not json"));
}

fn not_a_string_map(connection: &mut redis::Connection, key: &str) {
    replace_with(
        connection,
        key,
        redis::cmd("SET").arg(key).arg(r#"{"user":5}"#),
    );
}

fn a_list(connection: &mut redis::Connection, key: &str) {
    replace_with(
        connection,
        key,
        redis::cmd("RPUSH").arg(key).arg("a").arg("b"),
    );
}

fn a_plain_hash(connection: &mut redis::Connection, key: &str) {
    replace_with(
        connection,
        key,
        redis::cmd("HSET").arg(key).arg("f").arg("v"),
    );
}

/// The versioned store's layout (`state`, `version`) with these values.
fn a_versioned_hash(connection: &mut redis::Connection, key: &str, state: &[u8], version: &str) {
    replace_with(
        connection,
        key,
        redis::cmd("HSET")
            .arg(key)
            .arg("state")
            .arg(state)
            .arg("version")
            .arg(version),
    );
}

fn a_hash_with_bytes_for_state(connection: &mut redis::Connection, key: &str) {
    a_versioned_hash(connection, key, b"\xff\xfe", "1");
}

fn a_hash_with_a_bad_version(connection: &mut redis::Connection, key: &str) {
    a_versioned_hash(connection, key, b"{}", "x");
}

fn key_exists(connection: &mut redis::Connection, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query::<i64>(connection)
        .expect("EXISTS")
        == 1
}

fn invalid_sessions_counted(browser: &mut Browser, node: &common::Node) -> f64 {
    let text = browser.get(node, "/metrics").text;
    metric_value(&text, r#"session_corrupt_total{node="a"}"#).expect("session_corrupt_total")
}

fn each_kind_of_garbage_is_no_session(store: &str, kinds: &[(&str, Plant)]) {
    let redis = RedisServer::start();
    let node = NodeOptions::new("a", &redis.url())
        .env("SESSION_STORE", store)
        .start();
    let mut connection = redis_connection(&redis.url());
    let mut probe = Browser::new();

    for (kind, plant) in kinds {
        let _: () = redis::cmd("FLUSHDB")
            .query(&mut connection)
            .expect("FLUSHDB");
        let mut browser = Browser::logged_in(&node, "alice");
        let old_cookie = browser.cookie.clone();
        let keys = session_keys_in_redis(&redis.url());
        assert_eq!(keys.len(), 1, "{store}/{kind}: one session after login");
        let key = &keys[0];
        let counted_before = invalid_sessions_counted(&mut probe, &node);

        plant(&mut connection, key);
        let whoami = browser.get(&node, "/whoami");
        assert_eq!(
            (whoami.status, &whoami.body["user"]),
            (200, &serde_json::Value::Null),
            "{store}/{kind}: whoami: {}",
            whoami.text
        );
        assert!(
            !key_exists(&mut connection, key),
            "{store}/{kind}: the invalid key is still in Redis"
        );
        assert_eq!(
            invalid_sessions_counted(&mut probe, &node),
            counted_before + 1.0,
            "{store}/{kind}: counted once"
        );

        plant(&mut connection, key);
        let logout = Browser::with_cookie(old_cookie.clone()).post(&node, "/logout");
        assert_eq!(
            logout.status, 200,
            "{store}/{kind}: logout: {}",
            logout.text
        );
        assert!(
            !key_exists(&mut connection, key),
            "{store}/{kind}: logout left the invalid key"
        );

        plant(&mut connection, key);
        let mut again = Browser::with_cookie(old_cookie.clone());
        let login = again.post_json(&node, "/login", &serde_json::json!({"user": "bob"}));
        assert_eq!(login.status, 200, "{store}/{kind}: login: {}", login.text);
        assert!(
            again.cookie.is_some() && again.cookie != old_cookie,
            "{store}/{kind}: login gives a new session id"
        );
        let incr = again.post(&node, "/counter/incr");
        assert_eq!(
            (incr.status, &incr.body["counter"]),
            (200, &serde_json::json!(1)),
            "{store}/{kind}: incr: {}",
            incr.text
        );
        let atomic = again.post(&node, "/counter/incr?mode=atomic");
        assert_eq!(atomic.status, 200, "{store}/{kind}: {}", atomic.text);
        assert_eq!(again.get(&node, "/whoami").body["user"], "bob");
    }
}

#[test]
fn invalid_state_in_the_default_store_is_no_session() {
    each_kind_of_garbage_is_no_session(
        "redis",
        &[
            ("bytes that are not UTF-8", not_utf8),
            ("invalid JSON", not_json),
            ("JSON that is not a map of strings", not_a_string_map),
            ("a hash", a_plain_hash),
            ("a list", a_list),
        ],
    );
}

#[test]
fn invalid_state_in_the_versioned_store_is_no_session() {
    each_kind_of_garbage_is_no_session(
        "redis-versioned",
        &[
            ("a string", not_json),
            ("a hash without state and version", a_plain_hash),
            (
                "a hash whose state is not UTF-8",
                a_hash_with_bytes_for_state,
            ),
            (
                "a hash whose version is not a number",
                a_hash_with_a_bad_version,
            ),
            ("a list", a_list),
        ],
    );
}

/// The warning names what is wrong, once per occurrence, never the stored
/// value: a session may hold what the log must not.
#[test]
fn invalid_state_is_logged_once_without_its_value() {
    let redis = RedisServer::start();
    let stderr = tempfile::NamedTempFile::new().expect("temporary file");
    let port = cluster_kit::free_port();
    let mut node = cluster_kit::ChildGuard::spawn(
        "cluster-app, stderr kept",
        common::command()
            .env("SESSION_KEY", common::session_key(1))
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("REDIS_URL", redis.url())
            .env("COOKIE_SECURE", "false")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(stderr.path()).expect("stderr file")),
    );
    let http = reqwest::blocking::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let login = cluster_kit::wait_for(std::time::Duration::from_secs(10), || {
        http.post(url("/login"))
            .json(&serde_json::json!({"user": "alice"}))
            .send()
            .ok()
    })
    .expect("the node answers");
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .expect("ASCII")
        .split(';')
        .next()
        .expect("name=value")
        .to_string();
    let key = &session_keys_in_redis(&redis.url())[0];
    let mut connection = redis_connection(&redis.url());
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(r#""secret-marker""#)
        .query(&mut connection)
        .expect("SET");
    for _ in 0..3 {
        let whoami = http
            .get(url("/whoami"))
            .header("cookie", &cookie)
            .send()
            .expect("whoami");
        assert_eq!(whoami.status(), 200);
    }
    node.kill();

    let log = std::fs::read_to_string(stderr.path()).expect("read stderr");
    let warnings = log
        .lines()
        .filter(|line| line.contains("stored session is invalid"))
        .count();
    assert_eq!(warnings, 1, "one occurrence, one warning:\n{log}");
    assert!(
        !log.contains("secret-marker"),
        "the value is logged:\n{log}"
    );
}
