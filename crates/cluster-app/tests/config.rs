//! Configuration: env fallbacks work, bad settings stop the node with one
//! clear line, `--dev` warns, `probe` reports readiness.

mod common;

use std::fs::File;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use cluster_kit::{free_port, wait_for, ChildGuard, RedisServer};
use common::{command, session_key, Browser, Node, NodeOptions};

/// What a finished process printed.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `command` to its end (at most 10 s) and returns its status and outputs.
fn run_to_end(name: &str, command: &mut Command) -> Output {
    let stdout = tempfile::NamedTempFile::new().expect("temporary file");
    let stderr = tempfile::NamedTempFile::new().expect("temporary file");
    command
        .stdout(Stdio::from(
            File::create(stdout.path()).expect("open stdout file"),
        ))
        .stderr(Stdio::from(
            File::create(stderr.path()).expect("open stderr file"),
        ));
    let mut process = ChildGuard::spawn(name, command);
    let status = process
        .wait_timeout(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{name} did not exit within 10 s"));
    Output {
        status,
        stdout: std::fs::read_to_string(stdout.path()).expect("read stdout"),
        stderr: std::fs::read_to_string(stderr.path()).expect("read stderr"),
    }
}

/// Runs `command` to its end (at most 10 s) and returns its status and stderr.
fn run(name: &str, command: &mut Command) -> (ExitStatus, String) {
    let output = run_to_end(name, command);
    (output.status, output.stderr)
}

/// A configuration the node refuses: name, flags, environment, and a
/// fragment of the one line expected on stderr.
type Refusal<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

/// The password every URL of these tests carries; it must never be printed.
const PASSWORD: &str = "hunter2";

#[test]
fn bad_configuration_is_one_line_and_exit_code_2() {
    let valid = session_key(1);
    let listen = format!("127.0.0.1:{}", free_port());
    let key_files = tempfile::tempdir().expect("temporary directory");
    let key_file = |name: &str, content: &str| {
        let path = key_files.path().join(name);
        std::fs::write(&path, content).expect("write a key file");
        path.to_str().expect("UTF-8 path").to_string()
    };
    let valid_file = key_file("valid", &valid);
    let short_file = key_file("short", &valid[..126]);
    let empty_file = key_file("empty", "\n");
    let missing_file = key_files.path().join("missing");
    let missing_file = missing_file.to_str().expect("UTF-8 path");
    let refusals: &[Refusal] = &[
        (
            "no key",
            &["--listen-addr", &listen],
            &[],
            "SESSION_KEY is missing",
        ),
        (
            "short key",
            &["--session-key", &valid[..126]],
            &[],
            "decodes to 63 bytes; at least 64",
        ),
        (
            "undecodable key",
            &[],
            &[("SESSION_KEY", "not a key at all!")],
            "neither hex nor base64",
        ),
        (
            "key and key file",
            &["--session-key-file", &valid_file],
            &[("SESSION_KEY", &valid)],
            "SESSION_KEY and SESSION_KEY_FILE are both set",
        ),
        (
            "missing key file",
            &[],
            &[("SESSION_KEY_FILE", missing_file)],
            "cannot be read: No such file",
        ),
        (
            "key file is a directory",
            &[],
            &[(
                "SESSION_KEY_FILE",
                key_files.path().to_str().expect("UTF-8"),
            )],
            "cannot be read",
        ),
        (
            "empty key file",
            &[],
            &[("SESSION_KEY_FILE", &empty_file)],
            "is empty",
        ),
        (
            "short key in a file",
            &["--session-key-file", &short_file],
            &[],
            "the content of SESSION_KEY_FILE decodes to 63 bytes",
        ),
        (
            "bad listen address",
            &[],
            &[("SESSION_KEY", &valid), ("LISTEN_ADDR", "localhost-8000")],
            "LISTEN_ADDR",
        ),
        (
            "bad redis scheme",
            &[],
            &[
                ("SESSION_KEY", &valid),
                ("REDIS_URL", "http://user:hunter2@127.0.0.1:6379"),
            ],
            "REDIS_URL must start with redis:// or rediss://",
        ),
        (
            "bad number",
            &[],
            &[("SESSION_KEY", &valid), ("SESSION_TTL_SECS", "soon")],
            "SESSION_TTL_SECS",
        ),
        (
            "zero timeout",
            &[],
            &[("SESSION_KEY", &valid), ("REDIS_TIMEOUT_MS", "0")],
            "REDIS_TIMEOUT_MS",
        ),
        (
            "zero workers",
            &["--workers", "0"],
            &[("SESSION_KEY", &valid)],
            "WORKERS must be at least 1",
        ),
        (
            "bad node id",
            &["--node-id", "a b"],
            &[("SESSION_KEY", &valid)],
            "NODE_ID",
        ),
        (
            "bad cookie name",
            &["--cookie-name", "a;b"],
            &[("SESSION_KEY", &valid)],
            "COOKIE_NAME",
        ),
        (
            "bad boolean",
            &[],
            &[("SESSION_KEY", &valid), ("COOKIE_SECURE", "maybe")],
            "cookie-secure",
        ),
        (
            "unknown session store",
            &[],
            &[("SESSION_KEY", &valid), ("SESSION_STORE", "memcached")],
            "memcached",
        ),
        ("unknown flag", &["--colour"], &[], "--colour"),
        (
            "no redis",
            &[],
            &[("SESSION_KEY", &valid)],
            "no Redis given: set REDIS_URL (one Redis) or REDIS_SENTINELS",
        ),
        (
            "url and sentinels",
            &[],
            &[
                ("SESSION_KEY", &valid),
                ("REDIS_URL", "redis://127.0.0.1:6379"),
                ("REDIS_SENTINELS", "127.0.0.1:26379"),
                ("REDIS_SENTINEL_MASTER", "m"),
            ],
            "REDIS_URL and REDIS_SENTINELS are both set",
        ),
        (
            "sentinel without a port",
            &[],
            &[
                ("SESSION_KEY", &valid),
                ("REDIS_SENTINELS", "127.0.0.1:26379,127.0.0.1"),
                ("REDIS_SENTINEL_MASTER", "m"),
            ],
            "REDIS_SENTINELS must be host:port,host:port,...",
        ),
        (
            "empty sentinel list",
            &["--redis-sentinels", ""],
            &[("SESSION_KEY", &valid), ("REDIS_SENTINEL_MASTER", "m")],
            "REDIS_SENTINELS must be host:port",
        ),
        (
            "sentinels without a master name",
            &[],
            &[
                ("SESSION_KEY", &valid),
                ("REDIS_SENTINELS", "127.0.0.1:26379"),
                ("REDIS_SENTINEL_PASSWORD", "hunter2"),
            ],
            "REDIS_SENTINELS needs REDIS_SENTINEL_MASTER",
        ),
        (
            "a sentinel password with a URL",
            &[],
            &[
                ("SESSION_KEY", &valid),
                ("REDIS_URL", "redis://127.0.0.1:6379"),
                ("REDIS_PASSWORD", "hunter2"),
            ],
            "REDIS_PASSWORD is only used with REDIS_SENTINELS",
        ),
        (
            "replica acks slower than the timeout",
            &[],
            &[
                ("SESSION_KEY", &valid),
                ("REDIS_URL", "redis://127.0.0.1:6379"),
                ("REDIS_MIN_REPLICAS_ACK", "1"),
                ("REDIS_REPLICA_ACK_TIMEOUT_MS", "500"),
            ],
            "REDIS_REPLICA_ACK_TIMEOUT_MS (500) must be below REDIS_TIMEOUT_MS (500)",
        ),
        (
            "replica acks without a timeout",
            &[],
            &[
                ("SESSION_KEY", &valid),
                ("REDIS_URL", "redis://127.0.0.1:6379"),
                ("REDIS_MIN_REPLICAS_ACK", "1"),
                ("REDIS_REPLICA_ACK_TIMEOUT_MS", "0"),
            ],
            "REDIS_REPLICA_ACK_TIMEOUT_MS must be at least 1",
        ),
        (
            "memory store with a Redis URL",
            &[],
            &[
                ("SESSION_KEY", &valid),
                ("SESSION_STORE", "memory"),
                ("REDIS_URL", "redis://127.0.0.1:6379"),
            ],
            "SESSION_STORE=memory keeps no session in Redis: remove REDIS_URL",
        ),
        (
            "cookie store with sentinels",
            &[],
            &[
                ("SESSION_KEY", &valid),
                ("SESSION_STORE", "cookie"),
                ("REDIS_SENTINELS", "127.0.0.1:26379"),
                ("REDIS_SENTINEL_MASTER", "m"),
            ],
            "SESSION_STORE=cookie keeps no session in Redis: remove REDIS_SENTINELS",
        ),
        (
            "cookie store waiting for replicas",
            &["--session-store", "cookie", "--redis-min-replicas-ack", "1"],
            &[("SESSION_KEY", &valid)],
            "SESSION_STORE=cookie keeps no session in Redis: remove REDIS_MIN_REPLICAS_ACK",
        ),
    ];
    for (name, args, env, expected) in refusals {
        let mut command = command();
        command.args(*args).envs(env.iter().copied());
        let output = run_to_end(name, &mut command);
        let stderr = &output.stderr;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{name}: {:?}, stderr: {stderr}",
            output.status
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
        assert!(
            !stderr.contains(PASSWORD) && !output.stdout.contains(PASSWORD),
            "{name}: the password is printed"
        );
        assert!(
            !stderr.contains(&valid[..126]) && !output.stdout.contains(&valid[..126]),
            "{name}: the session key is printed"
        );
    }
}

/// A node given its key as a file (how Docker and Kubernetes hand over
/// secrets) reads the sessions of a node given the same key as a variable:
/// the file's content is the key, its final newline aside.
#[test]
fn a_session_key_file_holds_the_same_key_as_the_variable() {
    let redis = RedisServer::start();
    let key_file = tempfile::NamedTempFile::new().expect("temporary file");
    std::fs::write(key_file.path(), format!("{}\n", session_key(1))).expect("write the key");
    let from_variable = Node::start("from-variable", &redis.url());
    let from_file = NodeOptions::new("from-file", &redis.url())
        .session_key_file(key_file.path())
        .start();

    let mut browser = Browser::logged_in(&from_variable, "alice");
    let seen = browser.get(&from_file, "/whoami");
    assert_eq!(seen.status, 200, "{}", seen.text);
    assert_eq!(seen.body["user"], "alice", "{}", seen.text);
}

/// A Redis URL that stops the node at start: the error line is printed, the
/// password in the URL is not, on stderr or stdout.
#[test]
fn a_redis_url_that_stops_the_node_never_prints_its_password() {
    let cases = [
        (
            "not a Redis scheme",
            "http://user:hunter2@127.0.0.1:6379",
            2,
            "REDIS_URL must start with redis:// or rediss://",
        ),
        (
            "a port that is not a number",
            "redis://user:hunter2@127.0.0.1:port",
            1,
            "Redis URL did not parse",
        ),
        (
            "a database that is not a number",
            "redis://user:hunter2@127.0.0.1:6379/first",
            1,
            "Invalid database number",
        ),
        (
            "an unknown protocol",
            "rediss://user:hunter2@127.0.0.1:6379/?protocol=resp9",
            1,
            "Invalid protocol version",
        ),
    ];
    for (name, url, code, expected) in cases {
        let output = run_to_end(
            name,
            command()
                .env("SESSION_KEY", session_key(1))
                .env("LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
                .env("REDIS_URL", url)
                .env("RUST_LOG", "debug"),
        );
        assert_eq!(
            output.status.code(),
            Some(code),
            "{name}: {:?}, stderr: {}",
            output.status,
            output.stderr
        );
        assert!(
            output.stderr.contains(expected),
            "{name}: {expected:?} not in {:?}",
            output.stderr
        );
        for (stream, text) in [("stderr", &output.stderr), ("stdout", &output.stdout)] {
            assert!(
                !text.contains(PASSWORD),
                "{name}: password on {stream}: {text}"
            );
        }
    }
}

/// A Redis URL the node starts with but cannot use (nobody listens; TLS to a
/// plain port): requests fail and are logged, the password is not, even at
/// the debug level.
#[test]
fn a_redis_url_that_fails_at_run_time_never_prints_its_password() {
    let plain = RedisServer::start();
    let cases = [
        (
            "nobody listening",
            format!("redis://user:hunter2@127.0.0.1:{}", free_port()),
        ),
        (
            "TLS to a plain port",
            format!("rediss://user:hunter2@127.0.0.1:{}", plain.port()),
        ),
    ];
    for (name, url) in cases {
        let stdout = tempfile::NamedTempFile::new().expect("temporary file");
        let stderr = tempfile::NamedTempFile::new().expect("temporary file");
        let port = free_port();
        let mut process = ChildGuard::spawn(
            name,
            command()
                .env("SESSION_KEY", session_key(1))
                .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
                .env("REDIS_URL", &url)
                .env("REDIS_TIMEOUT_MS", "300")
                .env("RUST_LOG", "debug")
                .stdout(Stdio::from(
                    File::create(stdout.path()).expect("stdout file"),
                ))
                .stderr(Stdio::from(
                    File::create(stderr.path()).expect("stderr file"),
                )),
        );
        let client = reqwest::blocking::Client::new();
        let login = wait_for(Duration::from_secs(10), || {
            client
                .post(format!("http://127.0.0.1:{port}/login"))
                .json(&serde_json::json!({"user": "eve"}))
                .send()
                .ok()
        })
        .expect("the node answers");
        assert_eq!(login.status(), 503, "{name}");
        let ready = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .expect("readyz");
        assert_eq!(ready.status(), 503, "{name}");
        process.kill();

        let stderr = std::fs::read_to_string(stderr.path()).expect("read stderr");
        let stdout = std::fs::read_to_string(stdout.path()).expect("read stdout");
        assert!(
            stderr.contains("session store save failed"),
            "{name}: the failure is logged: {stderr}"
        );
        for (stream, text) in [("stderr", &stderr), ("stdout", &stdout)] {
            assert!(
                !text.contains(PASSWORD),
                "{name}: password on {stream}: {text}"
            );
        }
    }
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
            .env("REDIS_URL", "redis://127.0.0.1:6379")
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

    let not_found = node.url("/nope");
    let (status, stderr) = run(
        "probe 404",
        common::command().args(["probe", "--url", &not_found]),
    );
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("404"), "{stderr}");
}
