//! A real `cluster-app` node for the tests that need the node itself, not a stand-in: its
//! readiness, its answers while Redis is down. The binary comes from the workspace build
//! (`cargo build --workspace`, which `cargo nextest run --workspace` does).
#![allow(dead_code)] // each test file uses a different subset

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cluster_kit::{free_port, workspace_bin, ChildGuard, RedisServer};
use cluster_lb::BackendAddress;

use super::client;

/// One `cluster-app` process, killed when dropped.
pub struct Node {
    pub address: String,
    _process: ChildGuard,
}

impl Node {
    /// Starts a node on `redis` and returns once its `/readyz` answers 200.
    pub async fn start(id: &str, redis: &RedisServer) -> Node {
        let address = format!("127.0.0.1:{}", free_port());
        let mut command = Command::new(workspace_bin("cluster-app"));
        command
            .args(["--node-id", id, "--listen-addr", &address])
            .args([
                "--redis-url",
                &redis.url(),
                "--workers",
                "1",
                "--drain-ms",
                "0",
            ])
            // The same key on every node, as a cluster's must be: any node reads any cookie.
            .env("SESSION_KEY", "5a".repeat(64))
            .env("COOKIE_SECURE", "false")
            .env("SESSION_STORE", "redis")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let node = Node {
            _process: ChildGuard::spawn(id, &mut command),
            address,
        };
        let ready = node.url("/readyz");
        let http = client();
        let started = Instant::now();
        loop {
            if http
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return node;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "node {id} not ready within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn backend_address(&self) -> BackendAddress {
        BackendAddress::parse(&self.address).expect("node address")
    }
}
