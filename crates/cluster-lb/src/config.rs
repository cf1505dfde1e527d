//! Configuration: command-line flags (with environment fallbacks) and an optional TOML file,
//! merged and validated into one [`Settings`] value before anything starts.
//!
//! Precedence is flag or environment variable, then the file, then the built-in default, so a
//! deployment can keep a file and still override one value from the shell. Every mistake is
//! reported as a [`ConfigError`] whose message fits on one line; `main` prints it and exits
//! with status 2 instead of panicking half-way through start-up.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use serde::Deserialize;

use crate::backend::BackendAddress;
use crate::balancer::Algorithm;
use crate::health::HealthOptions;
use crate::proxy::ProxyOptions;

/// The `cluster-lb` command line.
#[derive(Debug, Parser)]
#[command(
    name = "cluster-lb",
    version,
    about = "HTTP load balancer for the cluster nodes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address the proxy listens on (default 127.0.0.1:8080).
    #[arg(long, env = "LB_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// A backend as host:port (repeatable); the host may be a DNS name, resolved at connect time.
    #[arg(long = "backend", env = "LB_BACKENDS", value_delimiter = ',')]
    pub backends: Vec<String>,

    /// TOML file with the same settings (flags and environment variables win over it).
    #[arg(long, env = "LB_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address of the admin API: backends, metrics (default 127.0.0.1:8081).
    #[arg(long, env = "LB_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Bearer token required by mutating admin calls.
    #[arg(long, env = "LB_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// How a backend is chosen for each request (default p2c).
    #[arg(long, env = "LB_ALGORITHM", value_enum)]
    pub algorithm: Option<AlgorithmArg>,

    /// Pin each client to one backend with a cookie (off: sessions live in Redis).
    #[arg(long, env = "LB_STICKY")]
    pub sticky: bool,

    /// Path of the active health check (default /readyz).
    #[arg(long, env = "LB_HEALTH_PATH")]
    pub health_path: Option<String>,

    /// Time between two active checks of a backend (default 500).
    #[arg(long, env = "LB_HEALTH_INTERVAL_MS")]
    pub health_interval_ms: Option<u64>,

    /// Failed checks in a row that mark a backend down (default 2).
    #[arg(long, env = "LB_HEALTH_FALL")]
    pub health_fall: Option<u32>,

    /// Successful checks in a row that bring a backend back up (default 2).
    #[arg(long, env = "LB_HEALTH_RISE")]
    pub health_rise: Option<u32>,

    /// A peer whose X-Forwarded-* headers are trusted, as a CIDR (repeatable).
    #[arg(
        long = "trusted-proxy",
        env = "LB_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,

    /// Limit on opening a TCP connection to a backend (default 1000).
    #[arg(long, env = "LB_CONNECT_TIMEOUT_MS")]
    pub connect_timeout_ms: Option<u64>,

    /// Limit on waiting for a backend's response head (default 30000).
    #[arg(long, env = "LB_RESPONSE_TIMEOUT_MS")]
    pub response_timeout_ms: Option<u64>,

    /// How long an idle upstream connection is kept; must stay below the backends' keep-alive (default 2000).
    #[arg(long, env = "LB_POOL_IDLE_TIMEOUT_MS")]
    pub pool_idle_timeout_ms: Option<u64>,

    /// How long a client connection may sit idle or take to send a request head (default 30000).
    #[arg(long, env = "LB_CLIENT_TIMEOUT_MS")]
    pub client_timeout_ms: Option<u64>,

    /// Largest request body, buffered so the request can be retried; larger -> 413 (default 1 MiB).
    #[arg(long, env = "LB_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,

    /// Longest time to receive a whole request body; slower -> 408 (default 30000).
    #[arg(long, env = "LB_BODY_TIMEOUT_MS")]
    pub body_timeout_ms: Option<u64>,

    /// Longest wait for the next chunk of a request body; longer -> 408 (default 10000).
    #[arg(long, env = "LB_BODY_IDLE_TIMEOUT_MS")]
    pub body_idle_timeout_ms: Option<u64>,

    /// Memory all buffered request bodies may take together; beyond it -> 503 (default 64 MiB).
    #[arg(long, env = "LB_MAX_BUFFERED_BODY_BYTES")]
    pub max_buffered_body_bytes: Option<usize>,

    /// Largest total size of the request headers; larger -> 431 (default 32 KiB).
    #[arg(long, env = "LB_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,

    /// How long SIGTERM waits for in-flight requests before exiting anyway (default 30000).
    #[arg(long, env = "LB_SHUTDOWN_TIMEOUT_MS")]
    pub shutdown_timeout_ms: Option<u64>,

    /// Proxy worker threads, each with its own upstream connection pool (default: number of cores).
    #[arg(long, env = "LB_WORKERS")]
    pub workers: Option<usize>,

    /// Client connections the proxy serves at once; beyond it new ones are closed at once (default 10000).
    #[arg(long, env = "LB_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Connections the admin API serves at once (default 64).
    #[arg(long, env = "LB_ADMIN_MAX_CONNECTIONS")]
    pub admin_max_connections: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// GET the admin /healthz (or --url); exit 0 on 200, else 1. For container health checks.
    Probe {
        /// URL to probe (default: http://127.0.0.1:<admin port>/healthz).
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlgorithmArg {
    P2c,
    RoundRobin,
    LeastConn,
}

impl From<AlgorithmArg> for Algorithm {
    fn from(arg: AlgorithmArg) -> Algorithm {
        match arg {
            AlgorithmArg::P2c => Algorithm::PowerOfTwoChoices,
            AlgorithmArg::RoundRobin => Algorithm::RoundRobin,
            AlgorithmArg::LeastConn => Algorithm::LeastConnections,
        }
    }
}

/// The TOML file: the same settings as the flags, in snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    backends: Option<Vec<String>>,
    admin_listen: Option<SocketAddr>,
    admin_token: Option<String>,
    algorithm: Option<AlgorithmArg>,
    sticky: Option<bool>,
    health_path: Option<String>,
    health_interval_ms: Option<u64>,
    health_fall: Option<u32>,
    health_rise: Option<u32>,
    trusted_proxies: Option<Vec<String>>,
    connect_timeout_ms: Option<u64>,
    response_timeout_ms: Option<u64>,
    pool_idle_timeout_ms: Option<u64>,
    client_timeout_ms: Option<u64>,
    max_body_bytes: Option<usize>,
    body_timeout_ms: Option<u64>,
    body_idle_timeout_ms: Option<u64>,
    max_buffered_body_bytes: Option<usize>,
    max_header_bytes: Option<usize>,
    shutdown_timeout_ms: Option<u64>,
    workers: Option<usize>,
    max_connections: Option<usize>,
    admin_max_connections: Option<usize>,
}

/// Everything the load balancer needs to start, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub admin_token: Option<String>,
    pub backends: Vec<BackendAddress>,
    pub proxy: ProxyOptions,
    pub health: HealthOptions,
    /// Longest wait for in-flight requests after SIGTERM.
    pub shutdown_timeout: Duration,
    pub workers: Option<usize>,
    /// Client connections the proxy listener serves at once.
    pub max_connections: usize,
    /// Connections the admin listener serves at once.
    pub admin_max_connections: usize,
}

pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8081));

/// A configuration mistake, worded for the operator; always one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError(message.into())
}

impl Settings {
    /// Settings with every default and the given backends: a starting point for tests and embedders.
    pub fn with_backends(backends: Vec<BackendAddress>) -> Settings {
        Settings {
            listen: DEFAULT_LISTEN,
            admin_listen: DEFAULT_ADMIN_LISTEN,
            admin_token: None,
            backends,
            proxy: ProxyOptions::default(),
            health: HealthOptions::default(),
            shutdown_timeout: Duration::from_secs(30),
            workers: None,
            max_connections: 10_000,
            admin_max_connections: 64,
        }
    }

    /// Merges flags, environment and the optional file, then validates the result.
    pub fn from_cli(cli: &Cli) -> Result<Settings, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let mut settings = Settings::with_backends(Vec::new());
        let defaults = settings.clone();

        settings.listen = cli.listen.or(file.listen).unwrap_or(defaults.listen);
        settings.admin_listen = cli
            .admin_listen
            .or(file.admin_listen)
            .unwrap_or(defaults.admin_listen);
        settings.admin_token = cli
            .admin_token
            .clone()
            .or(file.admin_token)
            .filter(|t| !t.is_empty());

        let backends = if cli.backends.is_empty() {
            file.backends.unwrap_or_default()
        } else {
            cli.backends.clone()
        };
        for address in backends.iter().map(|b| b.trim()).filter(|b| !b.is_empty()) {
            let address = BackendAddress::parse(address).map_err(invalid)?;
            if settings.backends.contains(&address) {
                return Err(invalid(format!("backend {address} is listed twice")));
            }
            settings.backends.push(address);
        }

        let proxy = &mut settings.proxy;
        if let Some(algorithm) = cli.algorithm.or(file.algorithm) {
            proxy.algorithm = algorithm.into();
        }
        proxy.sticky = cli.sticky || file.sticky.unwrap_or(false);
        let trusted = if cli.trusted_proxies.is_empty() {
            file.trusted_proxies.unwrap_or_default()
        } else {
            cli.trusted_proxies.clone()
        };
        proxy.trusted_proxies = trusted
            .iter()
            .map(|cidr| parse_cidr(cidr))
            .collect::<Result<_, _>>()?;
        set_duration(
            &mut proxy.connect_timeout,
            "connect timeout",
            cli.connect_timeout_ms.or(file.connect_timeout_ms),
        )?;
        set_duration(
            &mut proxy.response_timeout,
            "response timeout",
            cli.response_timeout_ms.or(file.response_timeout_ms),
        )?;
        set_duration(
            &mut proxy.pool_idle_timeout,
            "pool idle timeout",
            cli.pool_idle_timeout_ms.or(file.pool_idle_timeout_ms),
        )?;
        set_duration(
            &mut proxy.client_timeout,
            "client timeout",
            cli.client_timeout_ms.or(file.client_timeout_ms),
        )?;
        if let Some(bytes) = cli.max_body_bytes.or(file.max_body_bytes) {
            proxy.max_body_bytes = bytes;
        }
        set_duration(
            &mut proxy.body_timeout,
            "body timeout",
            cli.body_timeout_ms.or(file.body_timeout_ms),
        )?;
        set_duration(
            &mut proxy.body_idle_timeout,
            "body idle timeout",
            cli.body_idle_timeout_ms.or(file.body_idle_timeout_ms),
        )?;
        if let Some(bytes) = cli.max_buffered_body_bytes.or(file.max_buffered_body_bytes) {
            proxy.max_buffered_body_bytes = bytes;
        }
        if proxy.max_buffered_body_bytes < proxy.max_body_bytes {
            return Err(invalid(format!(
                "max buffered body bytes ({}) must be at least max body bytes ({})",
                proxy.max_buffered_body_bytes, proxy.max_body_bytes
            )));
        }
        if let Some(bytes) = cli.max_header_bytes.or(file.max_header_bytes) {
            if bytes < 1024 {
                return Err(invalid(format!(
                    "max header bytes must be at least 1024, got {bytes}"
                )));
            }
            proxy.max_header_bytes = bytes;
        }

        let health = &mut settings.health;
        if let Some(path) = cli.health_path.clone().or(file.health_path) {
            if !path.starts_with('/') {
                return Err(invalid(format!(
                    "health path must start with '/', got {path:?}"
                )));
            }
            health.path = path;
        }
        set_duration(
            &mut health.interval,
            "health interval",
            cli.health_interval_ms.or(file.health_interval_ms),
        )?;
        if let Some(fall) = cli.health_fall.or(file.health_fall) {
            health.fall = at_least_one("health fall", fall)?;
        }
        if let Some(rise) = cli.health_rise.or(file.health_rise) {
            health.rise = at_least_one("health rise", rise)?;
        }

        set_duration(
            &mut settings.shutdown_timeout,
            "shutdown timeout",
            cli.shutdown_timeout_ms.or(file.shutdown_timeout_ms),
        )?;
        settings.workers = match cli.workers.or(file.workers) {
            Some(0) => return Err(invalid("workers must be at least 1")),
            workers => workers,
        };
        if let Some(max) = cli.max_connections.or(file.max_connections) {
            settings.max_connections = at_least_one_connection("max connections", max)?;
        }
        if let Some(max) = cli.admin_max_connections.or(file.admin_max_connections) {
            settings.admin_max_connections = at_least_one_connection("admin max connections", max)?;
        }

        if !settings.admin_listen.ip().is_loopback() && settings.admin_token.is_none() {
            return Err(invalid(format!(
                "admin API on non-loopback address {} needs a token (--admin-token / LB_ADMIN_TOKEN)",
                settings.admin_listen
            )));
        }
        Ok(settings)
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        // toml's messages span several lines (source excerpt); keep the first, which names the problem.
        let message = e
            .message()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_string();
        let at = e
            .span()
            .map(|span| line_of(&text, span.start))
            .map(|line| format!(" (line {line})"));
        invalid(format!(
            "config file {}: {message}{}",
            path.display(),
            at.unwrap_or_default()
        ))
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn parse_cidr(text: &str) -> Result<IpNet, ConfigError> {
    let text = text.trim();
    // A bare address means just that host.
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| {
            invalid(format!(
                "trusted proxy {text:?} is not a CIDR such as 10.0.0.0/8"
            ))
        })
}

fn set_duration(slot: &mut Duration, what: &str, millis: Option<u64>) -> Result<(), ConfigError> {
    match millis {
        Some(0) => Err(invalid(format!("{what} must be greater than 0 ms"))),
        Some(ms) => {
            *slot = Duration::from_millis(ms);
            Ok(())
        }
        None => Ok(()),
    }
}

fn at_least_one_connection(what: &str, value: usize) -> Result<usize, ConfigError> {
    // The cap is a semaphore's permit count, which has a ceiling far above any sane limit.
    if value == 0 || value > tokio::sync::Semaphore::MAX_PERMITS {
        return Err(invalid(format!("{what} must be at least 1, got {value}")));
    }
    Ok(value)
}

fn at_least_one(what: &str, value: u32) -> Result<u32, ConfigError> {
    if value == 0 {
        return Err(invalid(format!("{what} must be at least 1")));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Result<Settings, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("cluster-lb").chain(args.iter().copied()))
            .map_err(|e| invalid(e.to_string()))?;
        Settings::from_cli(&cli)
    }

    #[test]
    fn connection_caps_and_body_deadlines_have_defaults_and_flags() {
        let defaults = settings(&[]).unwrap();
        assert_eq!(defaults.max_connections, 10_000);
        assert_eq!(defaults.admin_max_connections, 64);
        assert_eq!(defaults.proxy.body_timeout, Duration::from_secs(30));
        assert_eq!(defaults.proxy.body_idle_timeout, Duration::from_secs(10));

        let set = settings(&[
            "--max-connections=20",
            "--admin-max-connections=3",
            "--body-timeout-ms=1500",
            "--body-idle-timeout-ms=200",
            "--max-buffered-body-bytes=2097152",
        ])
        .unwrap();
        assert_eq!(set.max_connections, 20);
        assert_eq!(set.admin_max_connections, 3);
        assert_eq!(set.proxy.body_timeout, Duration::from_millis(1500));
        assert_eq!(set.proxy.body_idle_timeout, Duration::from_millis(200));
        assert_eq!(set.proxy.max_buffered_body_bytes, 2 * 1024 * 1024);
    }

    #[test]
    fn impossible_caps_and_budgets_are_refused() {
        for args in [
            &["--max-connections=0"][..],
            &["--admin-max-connections=0"],
            &["--body-idle-timeout-ms=0"],
            &["--max-buffered-body-bytes=1000"],
        ] {
            let error = settings(args).expect_err("refused").to_string();
            assert!(!error.contains('\n'), "one line: {error}");
        }
    }
}
