//! The command line: four commands; the flags of up and verify have environment fallbacks.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::cluster::RedisMode;

#[derive(Debug, Parser)]
#[command(
    name = "clusterctl",
    version,
    about = "Run a local actix-web cluster behind a load balancer and prove that sessions survive failures"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start redis-server, N nodes and the load balancer; stay in the foreground.
    Up(UpArgs),
    /// Start a private cluster, run every scenario, print a pass/fail report.
    Verify(VerifyArgs),
    /// A narrated 3-node tour: what each step does, why, and the evidence.
    Demo(DemoArgs),
    /// Measure three session designs side by side: in-memory + sticky LB, stateless cookie, shared Redis.
    Compare(CompareArgs),
}

/// Where the programs come from.
#[derive(Debug, Args)]
pub struct Programs {
    /// Directory holding cluster-app and cluster-lb (default: next to clusterctl).
    #[arg(long, env = "CLUSTERCTL_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// The redis-server program (default: found on PATH).
    #[arg(long, env = "REDIS_SERVER_BIN")]
    pub redis_bin: Option<PathBuf>,
    /// The redis-sentinel program, for --redis sentinel (default: found on PATH).
    #[arg(long, env = "REDIS_SENTINEL_BIN")]
    pub redis_sentinel_bin: Option<PathBuf>,
}

/// Which Redis the nodes share.
#[derive(Debug, Args)]
pub struct RedisChoice {
    /// `single`: one redis-server. `sentinel`: a primary, two replicas and three sentinels,
    /// and the scenarios that kill or pause the primary.
    #[arg(long = "redis", env = "CLUSTERCTL_REDIS", value_enum, default_value_t = RedisMode::Single)]
    pub mode: RedisMode,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Number of cluster-app nodes (1-16).
    #[arg(long, env = "CLUSTERCTL_NODES", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub nodes: u8,
    /// Port of the load balancer on 127.0.0.1.
    #[arg(long, env = "CLUSTERCTL_LB_PORT", default_value_t = 8080)]
    pub lb_port: u16,
    /// Use this Redis instead of starting a redis-server.
    #[arg(long, env = "CLUSTERCTL_REDIS_URL")]
    pub redis_url: Option<String>,
    #[command(flatten)]
    pub redis: RedisChoice,
    /// With --redis sentinel: every node waits for this many replicas after each write
    /// (REDIS_MIN_REPLICAS_ACK) and answers 503 when they do not confirm.
    #[arg(long, default_value_t = 0)]
    pub min_replicas_ack: u32,
    #[command(flatten)]
    pub programs: Programs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Number of cluster-app nodes (1-16).
    #[arg(long, env = "CLUSTERCTL_NODES", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub nodes: u8,
    /// Write the JSON report here (and the SIGKILL timeline as <name>-sigkill.svg beside it).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Shorter load phases and a lower rate, with every scenario: what the test suite runs.
    #[arg(long)]
    pub quick: bool,
    /// Start this node (e.g. node2) with a session key of its own, as a deploy that missed the
    /// shared key would: the scenarios then show what breaks, and verify exits 1.
    #[arg(long, value_name = "NODE")]
    pub wrong_key_on: Option<String>,
    /// Also measure start-up time and throughput for these node counts, e.g. 1,2,4,8.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u8).range(1..=16))]
    pub scale: Vec<u8>,
    #[command(flatten)]
    pub redis: RedisChoice,
    #[command(flatten)]
    pub programs: Programs,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the nodes keep sessions: `redis` (the full tour), `memory` (each node's own
    /// memory: watch the user become anonymous) or `cookie` (the state in the cookie).
    #[arg(long, default_value = "redis", value_parser = ["redis", "memory", "cookie"])]
    pub store: String,
    /// With --store memory: the load balancer pins each client to one node.
    #[arg(long)]
    pub sticky: bool,
    #[command(flatten)]
    pub redis: RedisChoice,
    #[command(flatten)]
    pub programs: Programs,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// A shorter read-throughput phase (0.5 s per design instead of 3): what the test suite runs.
    #[arg(long)]
    pub quick: bool,
    /// Write compare.json and compare.md into this directory.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub programs: Programs,
}
