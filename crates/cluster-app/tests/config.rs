//! Configuration: env fallbacks work, bad settings stop the node with one
//! clear line, `--dev` warns, `probe` reports readiness.

mod common;

use std::fs::File;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use common::{command, session_key, Browser, Node};
use test_support::{free_port, wait_for, ChildGuard, RedisServer};

/// Runs `command` to its end (at most 10 s) and returns its status and stderr.
fn run(name: &str, command: &mut Command) -> (ExitStatus, String) {
    let stderr = tempfile::NamedTempFile::new().expect("temporary file");
    command.stdout(Stdio::null()).stderr(Stdio::from(
        File::create(stderr.path()).expect("open stderr file"),
    ));
    let mut process = ChildGuard::spawn(name, command);
    let status = process
        .wait_timeout(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{name} did not exit within 10 s"));
    (
        status,
        std::fs::read_to_string(stderr.path()).expect("read stderr"),
    )
}

fn assert_refused(name: &str, command: &mut Command, expected: &str) {
    let (status, stderr) = run(name, command);
    assert_eq!(
        status.code(),
        Some(2),
        "{name}: {status:?}, stderr: {stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "{name}: one line expected, got:\n{stderr}"
    );
    assert!(
        stderr.contains(expected),
        "{name}: {expected:?} not in {stderr:?}"
    );
    assert!(!stderr.contains("panicked"), "{name}: {stderr}");
}

#[test]
fn bad_configuration_is_one_line_and_exit_code_2() {
    let valid = session_key(1);
    let listen = format!("127.0.0.1:{}", free_port());
    assert_refused(
        "no key",
        command().args(["--listen-addr", &listen]),
        "SESSION_KEY is missing",
    );
    assert_refused(
        "short key",
        command().args(["--session-key", &valid[..126]]),
        "decodes to 63 bytes; at least 64",
    );
    assert_refused(
        "undecodable key",
        command().env("SESSION_KEY", "not a key at all!"),
        "neither hex nor base64",
    );
    assert_refused(
        "bad listen address",
        command()
            .env("SESSION_KEY", &valid)
            .env("LISTEN_ADDR", "localhost-8000"),
        "LISTEN_ADDR",
    );
    assert_refused(
        "bad redis scheme",
        command()
            .env("SESSION_KEY", &valid)
            .env("REDIS_URL", "http://user:hunter2@127.0.0.1:6379"),
        "REDIS_URL must start with redis:// or rediss://",
    );
    let (_, stderr) = run(
        "password",
        command()
            .env("SESSION_KEY", &valid)
            .env("REDIS_URL", "http://user:hunter2@x"),
    );
    assert!(
        !stderr.contains("hunter2"),
        "the password must not be printed: {stderr}"
    );
    assert_refused(
        "bad number",
        command()
            .env("SESSION_KEY", &valid)
            .env("SESSION_TTL_SECS", "soon"),
        "SESSION_TTL_SECS",
    );
    assert_refused(
        "zero timeout",
        command()
            .env("SESSION_KEY", &valid)
            .env("REDIS_TIMEOUT_MS", "0"),
        "REDIS_TIMEOUT_MS",
    );
    assert_refused(
        "bad boolean",
        command()
            .env("SESSION_KEY", &valid)
            .env("COOKIE_SECURE", "maybe"),
        "cookie-secure",
    );
    assert_refused(
        "unknown session store",
        command()
            .env("SESSION_KEY", &valid)
            .env("SESSION_STORE", "memcached"),
        "memcached",
    );
    assert_refused("unknown flag", command().arg("--colour"), "--colour");
}

#[test]
fn a_taken_port_is_one_line_and_exit_code_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (status, stderr) = run(
        "taken port",
        command()
            .env("SESSION_KEY", session_key(1))
            .env("LISTEN_ADDR", &addr)
            .env("RUST_LOG", "off"),
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[test]
fn settings_come_from_the_environment() {
    let redis = RedisServer::start();
    let port = free_port();
    let mut process = ChildGuard::spawn(
        "cluster-app from env",
        command()
            .env("NODE_ID", "from-env")
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("REDIS_URL", redis.url())
            .env("SESSION_KEY", session_key(1))
            .env("COOKIE_NAME", "envcookie")
            .env("COOKIE_SECURE", "false")
            .env("SESSION_TTL_SECS", "60")
            .env("PERSISTENT_COOKIE", "true")
            .env("REDIS_KEY_PREFIX", "envprefix:")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null()),
    );
    let client = reqwest::blocking::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let login = wait_for(Duration::from_secs(10), || {
        client
            .post(url("/login"))
            .json(&serde_json::json!({"user": "eve"}))
            .send()
            .ok()
    })
    .expect("node from env answers");
    assert_eq!(login.headers()["x-served-by"], "from-env");
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        cookie.starts_with("envcookie=") && cookie.contains("Max-Age=60"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "{cookie}");
    let keys = common::redis_connection(&redis.url());
    let mut keys = keys;
    let stored: Vec<String> = redis::cmd("KEYS")
        .arg("envprefix:*")
        .query(&mut keys)
        .expect("KEYS");
    assert_eq!(stored.len(), 1);
    process.kill();
}

#[test]
fn the_cookie_is_secure_by_default() {
    let redis = RedisServer::start();
    let port = free_port();
    let _node = ChildGuard::spawn(
        "cluster-app secure",
        command()
            .args([
                "--listen-addr",
                &format!("127.0.0.1:{port}"),
                "--redis-url",
                &redis.url(),
            ])
            .args(["--session-key", &session_key(1)])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null()),
    );
    let client = reqwest::blocking::Client::new();
    let login = wait_for(Duration::from_secs(10), || {
        client
            .post(format!("http://127.0.0.1:{port}/login"))
            .json(&serde_json::json!({"user": "eve"}))
            .send()
            .ok()
    })
    .expect("node answers");
    let cookie = login.headers()["set-cookie"].to_str().expect("ascii");
    assert!(cookie.contains("; Secure"), "{cookie}");
}

#[test]
fn dev_mode_starts_without_a_key_and_warns_loudly() {
    let redis = RedisServer::start();
    let port = free_port();
    let stderr = tempfile::NamedTempFile::new().expect("temporary file");
    let mut process = ChildGuard::spawn(
        "cluster-app --dev",
        command()
            .args([
                "--dev",
                "--listen-addr",
                &format!("127.0.0.1:{port}"),
                "--redis-url",
                &redis.url(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                File::create(stderr.path()).expect("stderr file"),
            )),
    );
    let client = reqwest::blocking::Client::new();
    let up = wait_for(Duration::from_secs(10), || {
        client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .ok()
            .filter(|r| r.status() == 200)
    });
    assert!(up.is_some(), "--dev node did not start");
    process.kill();
    let log = std::fs::read_to_string(stderr.path()).expect("read stderr");
    assert!(
        log.contains("--dev") && log.contains("No other node can read"),
        "{log}"
    );
}

#[test]
fn probe_exits_0_when_ready_and_1_otherwise() {
    let redis = RedisServer::start();
    let node = Node::start("a", &redis.url());
    let (status, stderr) = run(
        "probe url",
        common::command().args(["probe", "--url", &node.url("/readyz")]),
    );
    assert!(status.success(), "{stderr}");
    let (status, stderr) = run(
        "probe default url",
        common::command()
            .arg("probe")
            .env("LISTEN_ADDR", format!("127.0.0.1:{}", node.port)),
    );
    assert!(status.success(), "{stderr}");

    let nobody = format!("http://127.0.0.1:{}/readyz", free_port());
    let (status, stderr) = run(
        "probe nobody",
        common::command().args(["probe", "--url", &nobody]),
    );
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let mut browser = Browser::new();
    browser.get(&node, "/healthz");
    let not_found = node.url("/nope");
    let (status, stderr) = run(
        "probe 404",
        common::command().args(["probe", "--url", &not_found]),
    );
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("404"), "{stderr}");
}
