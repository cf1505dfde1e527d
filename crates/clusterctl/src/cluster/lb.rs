//! The `cluster-lb` process and a client for its admin API.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;

use cluster_kit::{wait_until, ChildGuard, ChildSpec};

/// Active health checks the harness asks for: a check every 250 ms (which is
/// also the check's timeout), three failures to take a node out, two
/// successes to bring it back. Faster than the LB's defaults so that a
/// returning node gets traffic within a second; three failures rather than two
/// so that a busy machine's hiccup does not take healthy nodes out.
const HEALTH_INTERVAL_MS: u64 = 250;
const HEALTH_FALL: u32 = 3;
const HEALTH_RISE: u32 = 2;

pub struct Lb {
    pub listen: String,
    pub admin: LbAdmin,
    process: ChildGuard,
    log: PathBuf,
}

impl Lb {
    /// Each argument is one setting of the process (`sticky`: cluster-lb's `--sticky`, for the
    /// in-memory design that `clusterctl compare` measures); a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        program: &Path,
        port: u16,
        admin_port: u16,
        admin_token: &str,
        backends: &[String],
        log_dir: &Path,
        http: reqwest::Client,
        sticky: bool,
    ) -> anyhow::Result<Lb> {
        let listen = format!("127.0.0.1:{port}");
        let admin_listen = format!("127.0.0.1:{admin_port}");
        let mut args = vec![
            "--listen".to_string(),
            listen.clone(),
            "--admin-listen".into(),
            admin_listen.clone(),
            "--health-interval-ms".into(),
            HEALTH_INTERVAL_MS.to_string(),
            "--health-fall".into(),
            HEALTH_FALL.to_string(),
            "--health-rise".into(),
            HEALTH_RISE.to_string(),
        ];
        if sticky {
            args.push("--sticky".into());
        }
        for backend in backends {
            args.push("--backend".into());
            args.push(backend.clone());
        }
        let log = log_dir.join("lb.log");
        let spec = ChildSpec {
            name: "cluster-lb".into(),
            program: program.to_path_buf(),
            args,
            env: vec![("LB_ADMIN_TOKEN".into(), admin_token.into())],
            log: log.clone(),
            detached: true,
        };
        let process = ChildGuard::start(spec)?;
        let admin = LbAdmin {
            base: format!("http://{admin_listen}"),
            token: admin_token.into(),
            http,
        };
        Ok(Lb {
            listen,
            admin,
            process,
            log,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// Waits until the admin API answers and every backend is `up`. A process that exited
    /// meanwhile (a port taken between choosing it and binding it, say) is reported at once,
    /// with the last line of its log.
    pub async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(backends) = self.admin.backends().await {
                if !backends.is_empty() && backends.iter().all(|b| b.state == "up") {
                    return Ok(());
                }
            }
            if !self.process.is_running() {
                bail!(
                    "cluster-lb exited before it was ready: {}",
                    last_line(&self.log)
                );
            }
            if Instant::now() >= deadline {
                let seen = self
                    .admin
                    .backends()
                    .await
                    .map(|b| format!("{b:?}"))
                    .unwrap_or_else(|e| e.to_string());
                bail!("cluster-lb did not report every backend up within {limit:?}: {seen}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }
}

fn last_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|text| text.lines().last().map(str::to_string))
        .unwrap_or_else(|| format!("no log at {}", log.display()))
}

/// One backend as `GET /backends` reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct Backend {
    pub id: String,
    pub state: String,
    #[serde(default)]
    pub in_flight: u64,
    /// The LB's latency estimate, which its power-of-two-choices compares.
    #[serde(default)]
    pub ewma_ms: f64,
}

#[derive(Deserialize)]
struct BackendList {
    backends: Vec<Backend>,
}

/// Client for the LB's admin listener; mutating calls carry the bearer token.
#[derive(Clone)]
pub struct LbAdmin {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl LbAdmin {
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The bearer token of the mutating calls (`clusterctl up` prints it).
    pub fn token(&self) -> &str {
        &self.token
    }

    pub async fn backends(&self) -> anyhow::Result<Vec<Backend>> {
        let response = self
            .http
            .get(format!("{}/backends", self.base))
            .send()
            .await?;
        let list: BackendList = response.error_for_status()?.json().await?;
        Ok(list.backends)
    }

    pub async fn backend(&self, id: &str) -> anyhow::Result<Backend> {
        self.backends()
            .await?
            .into_iter()
            .find(|b| b.id == id)
            .with_context(|| format!("backend {id} not listed by the LB"))
    }

    /// Attempts the LB lost after sending them (the backend's connection broke mid-request),
    /// from its Prometheus counter: retried elsewhere when idempotent, failed otherwise.
    pub async fn attempts_lost(&self) -> anyhow::Result<u64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let lost = text
            .lines()
            .find_map(|line| line.strip_prefix("lb_upstream_errors_total{kind=\"lost\"} "))
            .map_or(Ok(0), |count| count.trim().parse::<u64>())
            .context("the LB's lost-attempts counter is not a number")?;
        Ok(lost)
    }

    pub async fn drain(&self, id: &str) -> anyhow::Result<()> {
        self.post(&format!("/backends/{id}/drain"), None).await
    }

    pub async fn enable(&self, id: &str) -> anyhow::Result<()> {
        self.post(&format!("/backends/{id}/enable"), None).await
    }

    pub async fn add(&self, address: &str) -> anyhow::Result<()> {
        self.post("/backends", Some(serde_json::json!({ "address": address })))
            .await
    }

    /// Tells the dashboard where its controls are answered (`controls.rs`).
    pub async fn register_controls(&self, address: std::net::SocketAddr) -> anyhow::Result<()> {
        let response = self
            .http
            .put(format!("{}/dashboard/controls", self.base))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "address": address.to_string() }))
            .send()
            .await?;
        response.error_for_status()?;
        Ok(())
    }

    pub async fn remove(&self, id: &str) -> anyhow::Result<()> {
        let response = self
            .http
            .delete(format!("{}/backends/{id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        response.error_for_status()?;
        Ok(())
    }

    async fn post(&self, path: &str, body: Option<serde_json::Value>) -> anyhow::Result<()> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("LB admin POST {path}: {status} {body}");
        }
        Ok(())
    }

    /// Waits until backend `id` is in `state`; returns false after `limit`.
    pub async fn wait_state(&self, id: &str, state: &str, limit: Duration) -> bool {
        wait_until(limit, Duration::from_millis(20), || async {
            let backend = self.backend(id).await.ok()?;
            (backend.state == state).then_some(())
        })
        .await
        .is_some()
    }
}
