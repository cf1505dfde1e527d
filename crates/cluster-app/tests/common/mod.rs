//! Test helpers: real `cluster-app` processes and a client that carries the
//! session cookie explicitly (so a test can hand it from one node to another
//! the way a load balancer would).

#![allow(dead_code)] // each test file uses a different part of this module

pub mod silent_redis;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cluster_kit::{free_port, wait_for, ChildGuard, SentinelTopology};
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::{HeaderMap, COOKIE, SET_COOKIE};
use serde_json::{json, Value};

pub const COOKIE_NAME: &str = "cluster_session";
pub const KEY_PREFIX: &str = "session:";

/// A valid SESSION_KEY (64 bytes, hex); `seed` makes different keys.
pub fn session_key(seed: u8) -> String {
    (0..64u8)
        .map(|i| format!("{:02x}", i.wrapping_mul(31).wrapping_add(seed)))
        .collect()
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cluster-app"))
}

/// `cluster-app` with the contract's environment variables removed, so the
/// environment a test runs in cannot leak into it.
pub fn command() -> Command {
    let mut command = Command::new(binary());
    for var in [
        "NODE_ID",
        "LISTEN_ADDR",
        "REDIS_URL",
        "REDIS_SENTINELS",
        "REDIS_SENTINEL_MASTER",
        "REDIS_SENTINEL_PASSWORD",
        "REDIS_PASSWORD",
        "REDIS_MIN_REPLICAS_ACK",
        "REDIS_REPLICA_ACK_TIMEOUT_MS",
        "SESSION_KEY",
        "SESSION_KEY_FILE",
        "SESSION_TTL_SECS",
        "COOKIE_NAME",
        "COOKIE_SECURE",
        "REDIS_KEY_PREFIX",
        "SESSION_STORE",
        "REDIS_TIMEOUT_MS",
        "DRAIN_MS",
        "WORKERS",
    ] {
        command.env_remove(var);
    }
    command
}

pub struct NodeOptions {
    pub node_id: String,
    /// `None` for a node told of its Redis otherwise (`REDIS_SENTINELS` in `env`).
    pub redis_url: Option<String>,
    pub session_key: String,
    /// Given, the node reads its key from this file instead of `session_key`.
    pub session_key_file: Option<PathBuf>,
    pub redis_timeout_ms: u64,
    pub drain_ms: u64,
    pub env: Vec<(String, String)>,
}

impl NodeOptions {
    pub fn new(node_id: &str, redis_url: &str) -> NodeOptions {
        NodeOptions {
            node_id: node_id.to_string(),
            redis_url: Some(redis_url.to_string()),
            session_key: session_key(1),
            session_key_file: None,
            redis_timeout_ms: 500,
            drain_ms: 300,
            env: Vec::new(),
        }
    }

    /// A node that asks `topology`'s sentinels for its primary.
    pub fn behind_sentinel(node_id: &str, topology: &SentinelTopology) -> NodeOptions {
        NodeOptions {
            redis_url: None,
            ..NodeOptions::new(node_id, "")
        }
        .env("REDIS_SENTINELS", &topology.sentinels_env())
        .env("REDIS_SENTINEL_MASTER", topology.master_name())
    }

    pub fn session_key(mut self, key: String) -> NodeOptions {
        self.session_key = key;
        self
    }

    pub fn session_key_file(mut self, path: &Path) -> NodeOptions {
        self.session_key_file = Some(path.to_path_buf());
        self
    }

    pub fn drain_ms(mut self, drain_ms: u64) -> NodeOptions {
        self.drain_ms = drain_ms;
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> NodeOptions {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    pub fn start(self) -> Node {
        let port = free_port();
        let mut command = command();
        command
            .args(["--node-id", &self.node_id])
            .args(["--listen-addr", &format!("127.0.0.1:{port}")])
            .args(["--cookie-secure", "false"])
            .args(["--redis-timeout-ms", &self.redis_timeout_ms.to_string()])
            .args(["--drain-ms", &self.drain_ms.to_string()])
            .args(["--workers", "2"])
            .env("RUST_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null());
        if let Some(url) = &self.redis_url {
            command.args(["--redis-url", url]);
        }
        match &self.session_key_file {
            Some(path) => command.arg("--session-key-file").arg(path),
            None => command.args(["--session-key", &self.session_key]),
        };
        let process = ChildGuard::spawn(format!("cluster-app {}", self.node_id), &mut command);
        let node = Node {
            process,
            port,
            node_id: self.node_id,
        };
        let probe = Client::new();
        let up = wait_for(Duration::from_secs(10), || {
            probe
                .get(node.url("/healthz"))
                .send()
                .ok()
                .filter(|r| r.status() == 200)
        });
        assert!(
            up.is_some(),
            "{} did not answer /healthz within 10 s",
            node.node_id
        );
        node
    }
}

/// A running node, killed when dropped.
pub struct Node {
    pub process: ChildGuard,
    pub port: u16,
    pub node_id: String,
}

impl Node {
    /// A node on `redis_url` with the default test key and a short drain.
    pub fn start(node_id: &str, redis_url: &str) -> Node {
        NodeOptions::new(node_id, redis_url).start()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }
}

/// One reply, read completely.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
    pub elapsed: Duration,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A session-store failure as a client must see it: a 503 from `node_id` with
/// its JSON error and `Retry-After: 1`, within `bound`. `what` names the
/// request in the failure messages.
pub fn assert_store_unavailable(reply: &Reply, node_id: &str, what: &str, bound: Duration) {
    assert_eq!(reply.status, 503, "{what}: {}", reply.text);
    assert_eq!(
        reply.body,
        json!({"node": node_id, "error": "session store unavailable"})
    );
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.header("x-served-by"), Some(node_id));
    assert!(reply.elapsed < bound, "{what} took {:?}", reply.elapsed);
}

/// A browser, reduced to what matters here: keep-alive connections and one
/// session cookie, which it sends to whichever node it talks to.
pub struct Browser {
    http: Client,
    /// `name=value` as sent in the `Cookie` header.
    pub cookie: Option<String>,
}

impl Default for Browser {
    fn default() -> Browser {
        Browser::new()
    }
}

impl Browser {
    pub fn new() -> Browser {
        let http = Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("build an HTTP client");
        Browser { http, cookie: None }
    }

    /// A second browser that presents the same cookie (same user, other tab).
    pub fn with_cookie(cookie: Option<String>) -> Browser {
        Browser {
            cookie,
            ..Browser::new()
        }
    }

    /// The session cookie's value alone.
    pub fn cookie_value(&self) -> Option<&str> {
        self.cookie
            .as_deref()
            .and_then(|c| c.split_once('='))
            .map(|(_, v)| v)
    }

    pub fn get(&mut self, node: &Node, path: &str) -> Reply {
        let request = self.http.get(node.url(path));
        self.send(request)
    }

    pub fn post(&mut self, node: &Node, path: &str) -> Reply {
        let request = self.http.post(node.url(path));
        self.send(request)
    }

    pub fn post_json(&mut self, node: &Node, path: &str, body: &Value) -> Reply {
        let request = self.http.post(node.url(path)).json(body);
        self.send(request)
    }

    pub fn put_json(&mut self, node: &Node, path: &str, body: &Value) -> Reply {
        let request = self.http.put(node.url(path)).json(body);
        self.send(request)
    }

    /// A new browser, logged in as `user` through `node`.
    pub fn logged_in(node: &Node, user: &str) -> Browser {
        let mut browser = Browser::new();
        browser.login(node, user);
        browser
    }

    pub fn login(&mut self, node: &Node, user: &str) -> Reply {
        let reply = self.post_json(node, "/login", &serde_json::json!({ "user": user }));
        assert_eq!(reply.status, 200, "login failed: {}", reply.text);
        reply
    }

    pub fn send(&mut self, mut request: RequestBuilder) -> Reply {
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        let started = Instant::now();
        let response = request.send().expect("HTTP request to the node");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().expect("response body");
        let elapsed = started.elapsed();
        self.remember_cookie(&headers);
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
            elapsed,
        }
    }

    /// Applies `Set-Cookie` for the session cookie: a new value replaces the
    /// old one, a removal cookie (empty value) forgets it.
    fn remember_cookie(&mut self, headers: &HeaderMap) {
        for header in headers.get_all(SET_COOKIE) {
            let Ok(header) = header.to_str() else {
                continue;
            };
            let pair = header.split(';').next().unwrap_or_default().trim();
            if let Some((name, value)) = pair.split_once('=') {
                if name == COOKIE_NAME {
                    self.cookie = (!value.is_empty()).then(|| pair.to_string());
                }
            }
        }
    }
}

/// A plain connection to the test's Redis, to look at what the node stored.
pub fn redis_connection(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|client| client.get_connection())
        .expect("connect to the test redis-server")
}

pub fn session_keys_in_redis(url: &str) -> Vec<String> {
    let mut connection = redis_connection(url);
    redis::cmd("KEYS")
        .arg(format!("{KEY_PREFIX}*"))
        .query(&mut connection)
        .expect("KEYS")
}

/// Value of a metric line like `session_corrupt_total{node="a"} 1`.
pub fn metric_value(metrics_text: &str, line_prefix: &str) -> Option<f64> {
    metrics_text
        .lines()
        .find(|line| line.starts_with(line_prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}
