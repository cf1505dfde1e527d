//! A whole cluster as local processes: Redis, N nodes, one load balancer.
//!
//! [`Cluster::start`] brings the pieces up in dependency order (Redis, then the
//! nodes, then the LB that health-checks them) and returns only when every one
//! answers. Dropping the [`Cluster`] stops them in the reverse order: the LB
//! first, so no request reaches a node that is going away.

mod binaries;
mod lb;
mod node;
mod redis;

pub use binaries::Binaries;
pub use cluster_kit::{wait_until, Persistence};
pub use lb::{Lb, LbAdmin};
pub use node::{Node, NodeSettings};
pub use redis::{Redis, RedisAddress};

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use cluster_kit::{try_free_port, RedisPrograms, RedisServer, SentinelOptions, SentinelTopology};

/// Which Redis the harness starts for the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RedisMode {
    /// One redis-server: the single point of failure the Redis scenarios break.
    Single,
    /// A primary, two replicas and three sentinels: the primary can die, Sentinel replaces it.
    Sentinel,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub nodes: usize,
    /// `None`: any free port.
    pub lb_port: Option<u16>,
    /// `None`: start a private redis-server (or Sentinel topology, by `redis_mode`).
    pub redis_url: Option<String>,
    pub redis_mode: RedisMode,
    /// `REDIS_MIN_REPLICAS_ACK` of every node (Sentinel only; 0: writes wait for no replica).
    pub min_replicas_ack: u32,
    pub binaries: Binaries,
    /// A node (`node<N>`) started with a session key of its own instead of the shared one.
    pub wrong_key_on: Option<String>,
}

/// How a cluster keeps sessions: the nodes' `SESSION_STORE`, and whether the
/// load balancer pins each client to one node (`--sticky`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionDesign {
    pub store: &'static str,
    pub sticky: bool,
}

impl SessionDesign {
    /// The project's design: sessions in a shared Redis, any node serves any request.
    pub const SHARED_REDIS: SessionDesign = SessionDesign {
        store: "redis",
        sticky: false,
    };
}

/// The harness's patience for one request. Nodes answer within their Redis
/// timeout even when Redis is gone, so only a hang (or a machine starved of
/// CPU) gets this far.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the harness starts cluster-lb on freshly chosen ports before it gives up.
const LB_START_TRIES: u32 = 3;

/// How long any single component may take to become ready.
const READY_LIMIT: Duration = Duration::from_secs(20);

pub struct Cluster {
    // Field order is drop order: the LB stops first, Redis last, and the
    // directory with the logs goes only after every process is gone.
    pub lb: Lb,
    pub nodes: Vec<Node>,
    pub redis: Redis,
    pub settings: NodeSettings,
    pub binaries: Binaries,
    pub http: reqwest::Client,
    /// From the first spawn until the LB reported every node up.
    pub startup: Duration,
    workdir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start(options: &ClusterOptions) -> anyhow::Result<Cluster> {
        Cluster::start_with(options, SessionDesign::SHARED_REDIS).await
    }

    /// A cluster whose nodes keep sessions as `design` says. Redis is started
    /// either way (the nodes of a design without Redis are not told of it).
    pub async fn start_with(
        options: &ClusterOptions,
        design: SessionDesign,
    ) -> anyhow::Result<Cluster> {
        let started = Instant::now();
        let ids: Vec<String> = (1..=options.nodes).map(|i| format!("node{i}")).collect();
        if let Some(odd) = &options.wrong_key_on {
            if !ids.contains(odd) {
                anyhow::bail!(
                    "--wrong-key-on {odd}: the nodes are node1 to node{}",
                    options.nodes
                );
            }
        }
        let workdir = tempfile::Builder::new()
            .prefix("clusterctl-")
            .tempdir()
            .context("cannot create a work directory")?;
        let http = reqwest::Client::builder().timeout(CLIENT_TIMEOUT).build()?;

        let binaries = &options.binaries;
        let redis = match (&options.redis_url, &binaries.redis, options.redis_mode) {
            (Some(url), _, RedisMode::Single) => Redis::External(url.clone()),
            (Some(_), _, RedisMode::Sentinel) => {
                anyhow::bail!("--redis-url and --redis sentinel: give one Redis or let clusterctl start a Sentinel topology, not both")
            }
            (None, Some(program), RedisMode::Single) => {
                let server =
                    RedisServer::start_in(program, try_free_port()?, workdir.path()).await?;
                Redis::Managed(Box::new(server))
            }
            (None, Some(server), RedisMode::Sentinel) => {
                let programs = RedisPrograms {
                    server: server.clone(),
                    sentinel: binaries
                        .sentinel
                        .clone()
                        .context("--redis sentinel needs redis-sentinel")?,
                };
                let topology = SentinelTopology::start_in(
                    &programs,
                    workdir.path(),
                    SentinelOptions::default(),
                )
                .await?;
                Redis::Sentinel(Box::new(topology))
            }
            (None, None, _) => anyhow::bail!("no redis-server and no --redis-url"),
        };
        let settings = NodeSettings {
            redis: redis.address(),
            min_replicas_ack: options.min_replicas_ack,
            session_key: random_hex(64)?,
            drain_ms: 300,
            redis_timeout_ms: 500,
            workers: 1,
            session_store: design.store.to_string(),
        };

        let mut nodes = Vec::with_capacity(options.nodes);
        for id in &ids {
            let mut own = settings.clone();
            if options.wrong_key_on.as_ref() == Some(id) {
                own.session_key = random_hex(64)?;
            }
            nodes.push(Node::start(
                &options.binaries.node,
                id,
                try_free_port()?,
                &own,
                workdir.path(),
            )?);
        }
        for node in &mut nodes {
            node.wait_ready(&http, READY_LIMIT).await?;
        }

        let backends: Vec<String> = nodes.iter().map(|node| node.addr.clone()).collect();
        if let Some(port) = options.lb_port {
            TcpListener::bind(("127.0.0.1", port))
                .with_context(|| format!("port {port} is in use: pass another --lb-port"))?;
        }
        let mut tries = 0;
        let lb = loop {
            tries += 1;
            let mut lb = Lb::start(
                &options.binaries.lb,
                options.lb_port.map_or_else(try_free_port, Ok)?,
                try_free_port()?,
                &random_hex(16)?,
                &backends,
                workdir.path(),
                http.clone(),
                design.sticky,
            )?;
            match lb.wait_ready(READY_LIMIT).await {
                Ok(()) => break lb,
                // A port that was free when chosen can be taken before cluster-lb binds it
                // (other programs pick ports too): choose again, a few times.
                Err(e) if tries < LB_START_TRIES && !lb.is_running() => {
                    eprintln!("clusterctl: {e:#}; starting cluster-lb again on other ports");
                }
                Err(e) => return Err(e),
            }
        };

        Ok(Cluster {
            lb,
            nodes,
            redis,
            settings,
            binaries: options.binaries.clone(),
            http,
            startup: started.elapsed(),
            workdir,
        })
    }

    pub fn log_dir(&self) -> &Path {
        self.workdir.path()
    }

    /// Keeps the work directory (every process's log) after the cluster stops.
    pub fn keep_logs(&mut self) {
        self.workdir.disable_cleanup(true);
    }

    /// Starts a node that is not behind the LB (scenarios add it themselves
    /// when they want to), with its own settings.
    pub fn start_extra_node(&self, id: &str, settings: &NodeSettings) -> anyhow::Result<Node> {
        Node::start(
            &self.binaries.node,
            id,
            try_free_port()?,
            settings,
            self.workdir.path(),
        )
    }
}

/// `bytes` random bytes from the OS, hex-encoded.
pub fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    Ok(buffer.iter().map(|byte| format!("{byte:02x}")).collect())
}
