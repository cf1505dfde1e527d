//! One `cluster-app` process and the settings the harness gives it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;

use cluster_kit::{wait_until, ChildGuard, ChildSpec};

use super::RedisAddress;

/// Settings every node of one cluster shares.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub redis: RedisAddress,
    /// `REDIS_MIN_REPLICAS_ACK`: replicas each write waits for (0: none).
    pub min_replicas_ack: u32,
    /// Hex, 64 bytes: the cookie encryption key. Identical on every node, or a
    /// node cannot read the cookies the others issued.
    pub session_key: String,
    /// How long /readyz answers 503 after SIGTERM; short, so restarts are quick.
    pub drain_ms: u64,
    /// Bound on every Redis call: the node answers 503 after this, never hangs.
    pub redis_timeout_ms: u64,
    pub workers: usize,
    /// `SESSION_STORE`: `redis` unless a design without Redis (`memory`, `cookie`) is compared.
    pub session_store: String,
}

impl NodeSettings {
    /// Whether the node's store keeps sessions in Redis (and so is given `--redis-url`).
    pub fn uses_redis(&self) -> bool {
        self.session_store.starts_with("redis")
    }
}

pub struct Node {
    pub id: String,
    /// `127.0.0.1:<port>`: also the backend id in the LB admin API.
    pub addr: String,
    /// stdout and stderr of every run, appended.
    log: PathBuf,
    process: ChildGuard,
}

impl Node {
    /// Starts `cluster-app` (without waiting for it to be ready).
    pub fn start(
        program: &Path,
        id: &str,
        port: u16,
        settings: &NodeSettings,
        log_dir: &Path,
    ) -> anyhow::Result<Node> {
        let addr = format!("127.0.0.1:{port}");
        let mut args: Vec<String> = vec![
            "--node-id".into(),
            id.into(),
            "--listen-addr".into(),
            addr.clone(),
        ];
        // A store without Redis refuses Redis settings (it would share nothing through them).
        if settings.uses_redis() {
            match &settings.redis {
                RedisAddress::Url(url) => args.extend(["--redis-url".into(), url.clone()]),
                RedisAddress::Sentinels { sentinels, master } => args.extend([
                    "--redis-sentinels".into(),
                    sentinels.clone(),
                    "--redis-sentinel-master".into(),
                    master.clone(),
                ]),
            }
        }
        args.extend([
            "--drain-ms".into(),
            settings.drain_ms.to_string(),
            "--redis-timeout-ms".into(),
            settings.redis_timeout_ms.to_string(),
            "--workers".into(),
            settings.workers.to_string(),
        ]);
        let spec = ChildSpec {
            name: id.to_string(),
            program: program.to_path_buf(),
            args,
            env: vec![
                // Through the environment, not argv: argv is visible in `ps`.
                ("SESSION_KEY".into(), settings.session_key.clone()),
                // Plain http on loopback: a Secure cookie would never be sent back.
                ("COOKIE_SECURE".into(), "false".into()),
                // Stated, not inherited: `redis` unless a scenario or a design switches it.
                ("SESSION_STORE".into(), settings.session_store.clone()),
                (
                    "REDIS_MIN_REPLICAS_ACK".into(),
                    settings.min_replicas_ack.to_string(),
                ),
            ],
            log: log_dir.join(format!("{id}.log")),
            detached: true,
        };
        Ok(Node {
            id: id.to_string(),
            addr,
            log: spec.log.clone(),
            process: ChildGuard::start(spec)?,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Waits until GET /readyz answers 200; returns how long that took.
    pub async fn wait_ready(
        &mut self,
        http: &reqwest::Client,
        limit: Duration,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let url = format!("{}/readyz", self.url());
        let ready = wait_until(limit, Duration::from_millis(10), || async {
            let response = http.get(&url).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
        if ready.is_none() {
            let state = if self.process.is_running() {
                "running"
            } else {
                "exited"
            };
            bail!(
                "{} ({state}) was not ready within {limit:?}; see {}",
                self.id,
                self.log().display()
            );
        }
        Ok(started.elapsed())
    }

    /// SIGKILL: the crash, with requests possibly in flight.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM: the node drains for `drain_ms`, then exits.
    pub fn terminate(&self) {
        self.process.terminate();
    }

    pub async fn wait_exit(&mut self, limit: Duration) -> bool {
        self.process.wait_exit(limit).await
    }

    /// Starts the same process again (same id, port, key).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.process.restart()
    }

    /// Starts the process again with another `SESSION_STORE` (`redis` or
    /// `redis-versioned`); later restarts keep it.
    pub fn restart_with_session_store(&mut self, store: &str) -> anyhow::Result<()> {
        self.restart_with_env("SESSION_STORE", store)
    }

    /// Starts the process again with the environment variable `name` set to `value` (e.g.
    /// `REDIS_MIN_REPLICAS_ACK`); later restarts keep it.
    pub fn restart_with_env(&mut self, name: &str, value: &str) -> anyhow::Result<()> {
        self.process.set_env(name, value);
        self.process.restart()
    }
}
