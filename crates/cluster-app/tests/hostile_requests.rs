//! Hostile requests the node withstands, kept so that it always will.
//!
//! Session cookies of every malformed kind are anonymous (never a 5xx);
//! a session id planted before login is worthless after it; a cookie
//! replayed after logout is anonymous; JSON that is not what a route takes
//! is a JSON 4xx that says so; the item caps hold. At the end no request of
//! the run was answered with a 5xx, according to the node's own metrics.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use cluster_kit::RedisServer;
use common::{session_key, Browser, Node, NodeOptions, Reply, COOKIE_NAME};
use reqwest::header::COOKIE;
use serde_json::{json, Value};

/// GET /whoami and POST /counter/incr with `cookie` sent as is.
fn with_raw_cookie(node: &Node, cookie: &str) -> [Reply; 2] {
    let mut browser = Browser::new();
    let http = reqwest::blocking::Client::new();
    [
        browser.send(http.get(node.url("/whoami")).header(COOKIE, cookie)),
        browser.send(http.post(node.url("/counter/incr")).header(COOKIE, cookie)),
    ]
}

fn assert_anonymous(replies: &[Reply; 2], what: &str) {
    let [whoami, incr] = replies;
    assert_eq!(
        (whoami.status, &whoami.body["user"]),
        (200, &Value::Null),
        "{what}: whoami: {}",
        whoami.text
    );
    assert_eq!(
        (incr.status, &incr.body["counter"]),
        (200, &json!(1)),
        "{what}: incr starts a new session: {}",
        incr.text
    );
}

/// The status line of a request written byte for byte.
fn raw_status(node: &Node, request: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", node.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream.write_all(request).expect("write the request");
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).expect("a status line");
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {:?}", String::from_utf8_lossy(&head)))
}

fn assert_json_4xx(reply: &Reply, status: u16, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.text);
    assert!(
        reply.body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: not a JSON error: {}",
        reply.text
    );
}

#[test]
fn malformed_cookies_are_anonymous() {
    let redis = RedisServer::start();
    let node = Node::start("a", &redis.url());
    let stranger = NodeOptions::new("other-key", &redis.url())
        .session_key(session_key(2))
        .start();
    let mut alice = Browser::logged_in(&node, "alice");
    let valid = alice.cookie_value().expect("a session cookie").to_string();
    let eve = Browser::logged_in(&stranger, "eve");
    let foreign = eve.cookie_value().expect("a session cookie").to_string();

    let mut tampered = valid.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ASCII");
    let many = (0..200)
        .map(|i| format!("{COOKIE_NAME}=forged{i}"))
        .collect::<Vec<_>>()
        .join("; ");
    let cases = [
        ("not base64", format!("{COOKIE_NAME}=!!not*base64~~")),
        ("empty", format!("{COOKIE_NAME}=")),
        (
            "truncated",
            format!("{COOKIE_NAME}={}", &valid[..valid.len() / 2]),
        ),
        ("tampered ciphertext", format!("{COOKIE_NAME}={tampered}")),
        (
            "from another SESSION_KEY",
            format!("{COOKIE_NAME}={foreign}"),
        ),
        ("huge", format!("{COOKIE_NAME}={}", "A".repeat(16 * 1024))),
        ("200 forged cookies of the same name", many),
    ];
    for (what, cookie) in &cases {
        assert_anonymous(&with_raw_cookie(&node, cookie), what);
    }

    // Bytes no client library would send: not UTF-8, control characters.
    for (what, cookie) in [
        ("not UTF-8", &b"cluster_session=\xff\xfe\xfd"[..]),
        ("a tab and a DEL", &b"cluster_session=a\tb\x7f"[..]),
    ] {
        let mut request = b"GET /whoami HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: ".to_vec();
        request.extend_from_slice(cookie);
        request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let status = raw_status(&node, &request);
        assert!(status < 500, "{what}: {status}");
    }

    assert_eq!(alice.get(&node, "/whoami").body["user"], "alice");
    assert_no_5xx(&node);
}

#[test]
fn login_and_logout_leave_no_usable_old_cookie() {
    let redis = RedisServer::start();
    let node = Node::start("a", &redis.url());

    // Fixation: an attacker's anonymous session, handed to the victim.
    let mut victim = Browser::new();
    let planted = victim.put_json(&node, "/session/items/cart", &json!(["bait"]));
    assert_eq!(planted.status, 200, "{}", planted.text);
    let planted_cookie = victim.cookie.clone();
    assert!(planted_cookie.is_some(), "an anonymous write sets a cookie");
    victim.login(&node, "victim");
    assert_ne!(
        victim.cookie, planted_cookie,
        "login issues a new session id"
    );
    let attacker = Browser::with_cookie(planted_cookie).get(&node, "/whoami");
    assert_eq!(
        (attacker.status, &attacker.body["user"]),
        (200, &Value::Null),
        "the planted id is worthless after login: {}",
        attacker.text
    );

    // Replay after logout.
    let before_logout = victim.cookie.clone();
    assert_eq!(victim.post(&node, "/logout").status, 200);
    let replay = Browser::with_cookie(before_logout.clone()).get(&node, "/whoami");
    assert_eq!(
        (replay.status, &replay.body["user"]),
        (200, &Value::Null),
        "{}",
        replay.text
    );
    let write = Browser::with_cookie(before_logout).post(&node, "/counter/incr");
    assert_eq!(
        (write.status, &write.body["counter"]),
        (200, &json!(1)),
        "a replayed cookie writes into a new, empty session: {}",
        write.text
    );
    assert_no_5xx(&node);
}

#[test]
fn abusive_json_is_a_json_4xx() {
    let redis = RedisServer::start();
    let node = Node::start("a", &redis.url());
    let mut browser = Browser::logged_in(&node, "alice");
    let http = reqwest::blocking::Client::new();
    let mut send_raw = |method: reqwest::Method, path: &str, body: String| {
        let request = http
            .request(method, node.url(path))
            .header("content-type", "application/json")
            .body(body);
        browser.send(request)
    };
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let login_cases = [
        ("not JSON", "{user: alice".to_string(), 400),
        ("a number for the user", r#"{"user":5}"#.to_string(), 400),
        ("an array", "[1,2]".to_string(), 400),
        ("null", "null".to_string(), 400),
        (
            "an unknown field",
            r#"{"user":"a","admin":true}"#.to_string(),
            400,
        ),
        ("no user", "{}".to_string(), 400),
        ("a blank user", r#"{"user":"   "}"#.to_string(), 400),
        (
            "a control character",
            r#"{"user":"a\u0000b"}"#.to_string(),
            400,
        ),
        (
            "a long user",
            format!(r#"{{"user":"{}"}}"#, "u".repeat(65)),
            400,
        ),
        ("deep nesting", deep.clone(), 400),
        (
            "a huge string",
            format!(r#"{{"user":"{}"}}"#, "u".repeat(100_000)),
            413,
        ),
    ];
    for (what, body, status) in login_cases {
        let reply = send_raw(reqwest::Method::POST, "/login", body);
        assert_json_4xx(&reply, status, &format!("login, {what}"));
    }
    let item_cases = [
        ("not JSON", "{".to_string(), 400),
        ("deep nesting", deep, 400),
        (
            "a value over 4 KiB",
            format!(r#""{}""#, "v".repeat(5000)),
            413,
        ),
        (
            "a body over 64 KiB",
            format!(r#""{}""#, "v".repeat(70_000)),
            413,
        ),
    ];
    for (what, body, status) in item_cases {
        let reply = send_raw(reqwest::Method::PUT, "/session/items/k", body);
        assert_json_4xx(&reply, status, &format!("item, {what}"));
    }
    let long_key = format!("/session/items/{}", "k".repeat(65));
    let reply = send_raw(reqwest::Method::PUT, &long_key, "1".to_string());
    assert_json_4xx(&reply, 400, "item, a key over 64 characters");
    for i in 0..64 {
        let reply = send_raw(
            reqwest::Method::PUT,
            &format!("/session/items/k{i}"),
            "1".into(),
        );
        assert_eq!(reply.status, 200, "item {i}: {}", reply.text);
    }
    let reply = send_raw(
        reqwest::Method::PUT,
        "/session/items/one-too-many",
        "1".into(),
    );
    assert_json_4xx(&reply, 400, "item, the 65th key");

    let wrong_type = http
        .post(node.url("/login"))
        .header("content-type", "text/plain")
        .body(r#"{"user":"alice"}"#);
    assert_json_4xx(
        &browser.send(wrong_type),
        400,
        "login, not application/json",
    );
    assert_eq!(browser.get(&node, "/whoami").body["user"], "alice");
    assert_no_5xx(&node);
}

/// No request of the test was answered with a 5xx, by the node's own count.
fn assert_no_5xx(node: &Node) {
    let text = Browser::new().get(node, "/metrics").text;
    let server_errors: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("http_requests_total") && line.contains(r#"status="5"#))
        .collect();
    assert!(server_errors.is_empty(), "{server_errors:#?}");
}
