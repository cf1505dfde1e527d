//! Configuration: one definition of every setting, read from command-line flags (with `LB_*`
//! environment fallbacks) and from an optional TOML file, merged and validated into one
//! [`Settings`] value before anything starts.
//!
//! [`SettingsLayer`] is that one definition: the same struct is clap's flags and serde's TOML
//! keys, so a flag without a key (or a key without a flag) cannot exist. Precedence is flag,
//! then environment variable (clap), then the file, then the built-in default, so a deployment
//! can keep a file and still override one value from the shell. The defaults are written once,
//! in [`Settings::with_backends`] and the proxy's, health checker's and DNS discovery's
//! `Default`s, and the help texts read them from there. Every mistake is a [`ConfigError`] whose
//! message fits on one line; `main` prints it and exits with status 2 instead of panicking
//! half-way through start-up.

use std::fmt::Display;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use serde::Deserialize;

use crate::backend::{AddressError, BackendAddress};
use crate::balancer::Algorithm;
use crate::dns_discovery::{DiscoveryOptions, DnsTarget, TargetError};
use crate::health::HealthOptions;
use crate::panic_mode::PanicThreshold;
use crate::proxy::ProxyOptions;

/// The `cluster-lb` command line: the settings, plus what only makes sense on a command line.
#[derive(Debug, Parser)]
#[command(
    name = "cluster-lb",
    version,
    about = "HTTP load balancer for the cluster nodes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// TOML file with the same settings (flags and environment variables win over it).
    #[arg(long, env = "LB_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub settings: SettingsLayer,
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

/// Every setting, as given by one source: the flags and environment (clap) or the TOML file
/// (serde, the field names as keys). `None` means "not given here"; the defaults are applied
/// once, when the layers are validated into [`Settings`].
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsLayer {
    #[arg(long, env = "LB_LISTEN", help = with_default("Address the proxy listens on", defaults().listen))]
    pub listen: Option<SocketAddr>,

    #[arg(
        long = "backend",
        env = "LB_BACKENDS",
        value_delimiter = ',',
        help = "A backend as host:port (repeatable); the host may be a DNS name, resolved at connect time"
    )]
    pub backends: Option<Vec<String>>,

    #[arg(
        long = "backend-dns",
        env = "LB_BACKEND_DNS",
        value_delimiter = ',',
        help = "A DNS name and port, NAME:PORT (repeatable): each address the name resolves to is a backend, kept in step with DNS"
    )]
    pub backend_dns: Option<Vec<String>>,

    #[arg(long, env = "LB_DNS_INTERVAL_MS", help = with_default("Time between two resolutions of each --backend-dns name", millis(defaults().discovery.interval)))]
    pub dns_interval_ms: Option<u64>,

    #[arg(
        long,
        env = "LB_DNS_SERVER",
        help = "Nameserver for --backend-dns, as IP or IP:PORT (default: the system's, from /etc/resolv.conf)"
    )]
    pub dns_server: Option<String>,

    #[arg(long, env = "LB_ADMIN_LISTEN", help = with_default("Address of the admin API: backends, metrics", defaults().admin_listen))]
    pub admin_listen: Option<SocketAddr>,

    #[arg(
        long,
        env = "LB_ADMIN_TOKEN",
        hide_env_values = true,
        help = "Bearer token required by mutating admin calls"
    )]
    pub admin_token: Option<String>,

    #[arg(
        long,
        env = "LB_ADMIN_TOKEN_FILE",
        help = "File holding the admin bearer token (a Docker or Kubernetes secret); surrounding whitespace is trimmed"
    )]
    pub admin_token_file: Option<PathBuf>,

    #[arg(long, env = "LB_ALGORITHM", value_enum, help = with_default("How a backend is chosen for each request", AlgorithmArg::from(defaults().proxy.algorithm).name()))]
    pub algorithm: Option<AlgorithmArg>,

    #[arg(
        long,
        env = "LB_STICKY",
        help = "Pin each client to one backend with a cookie (off: sessions live in Redis)"
    )]
    #[serde(default)]
    pub sticky: bool,

    #[arg(long, env = "LB_HEALTH_PATH", help = with_default("Path of the active health check", defaults().health.path))]
    pub health_path: Option<String>,

    #[arg(long, env = "LB_HEALTH_INTERVAL_MS", help = with_default("Time between two active checks of a backend", millis(defaults().health.interval)))]
    pub health_interval_ms: Option<u64>,

    #[arg(long, env = "LB_HEALTH_FALL", help = with_default("Failed checks in a row that mark a backend down", defaults().health.fall))]
    pub health_fall: Option<u32>,

    #[arg(long, env = "LB_HEALTH_RISE", help = with_default("Successful checks in a row that bring a backend back up", defaults().health.rise))]
    pub health_rise: Option<u32>,

    #[arg(long, env = "LB_PANIC_THRESHOLD_PERCENT", help = with_default("Below this share of backends passing their health checks, route to every backend that answers them (panic mode; 0: never)", format!("{} %", defaults().panic_threshold.percent())))]
    pub panic_threshold_percent: Option<u8>,

    #[arg(
        long = "trusted-proxy",
        env = "LB_TRUSTED_PROXIES",
        value_delimiter = ',',
        help = "A peer whose X-Forwarded-* headers are trusted, as a CIDR (repeatable)"
    )]
    pub trusted_proxies: Option<Vec<String>>,

    #[arg(long, env = "LB_CONNECT_TIMEOUT_MS", help = with_default("Limit on opening a TCP connection to a backend", millis(defaults().proxy.connect_timeout)))]
    pub connect_timeout_ms: Option<u64>,

    #[arg(long, env = "LB_RESPONSE_TIMEOUT_MS", help = with_default("Limit on waiting for a backend's response head", millis(defaults().proxy.response_timeout)))]
    pub response_timeout_ms: Option<u64>,

    #[arg(long, env = "LB_POOL_IDLE_TIMEOUT_MS", help = with_default("How long an idle upstream connection is kept; must stay below the backends' keep-alive", millis(defaults().proxy.pool_idle_timeout)))]
    pub pool_idle_timeout_ms: Option<u64>,

    #[arg(long, env = "LB_CLIENT_TIMEOUT_MS", help = with_default("How long a client connection may sit idle or take to send a request head", millis(defaults().proxy.client_timeout)))]
    pub client_timeout_ms: Option<u64>,

    #[arg(long, env = "LB_MAX_BODY_BYTES", help = with_default("Largest request body, buffered so the request can be retried; larger -> 413", bytes(defaults().proxy.max_body_bytes)))]
    pub max_body_bytes: Option<usize>,

    #[arg(long, env = "LB_BODY_TIMEOUT_MS", help = with_default("Longest time to receive a whole request body; slower -> 408", millis(defaults().proxy.body_timeout)))]
    pub body_timeout_ms: Option<u64>,

    #[arg(long, env = "LB_BODY_IDLE_TIMEOUT_MS", help = with_default("Longest wait for the next chunk of a request body; longer -> 408", millis(defaults().proxy.body_idle_timeout)))]
    pub body_idle_timeout_ms: Option<u64>,

    #[arg(long, env = "LB_MAX_BUFFERED_BODY_BYTES", help = with_default("Memory all buffered request bodies may take together; beyond it -> 503", bytes(defaults().proxy.max_buffered_body_bytes)))]
    pub max_buffered_body_bytes: Option<usize>,

    #[arg(long, env = "LB_MAX_HEADER_BYTES", help = with_default("Largest total size of the request headers; larger -> 431", bytes(defaults().proxy.max_header_bytes)))]
    pub max_header_bytes: Option<usize>,

    #[arg(long, env = "LB_SHUTDOWN_TIMEOUT_MS", help = with_default("How long SIGTERM waits for in-flight requests before exiting anyway", millis(defaults().shutdown_timeout)))]
    pub shutdown_timeout_ms: Option<u64>,

    #[arg(
        long,
        env = "LB_WORKERS",
        help = "Proxy worker threads, each with its own upstream connection pool (default: number of cores)"
    )]
    pub workers: Option<usize>,

    #[arg(long, env = "LB_MAX_CONNECTIONS", help = with_default("Client connections the proxy serves at once; beyond it new ones are closed at once", defaults().max_connections))]
    pub max_connections: Option<usize>,

    #[arg(long, env = "LB_ADMIN_MAX_CONNECTIONS", help = with_default("Connections the admin API serves at once", defaults().admin_max_connections))]
    pub admin_max_connections: Option<usize>,
}

impl SettingsLayer {
    /// This layer's values where it has them, `lower`'s elsewhere. Naming every field on both
    /// sides means a new setting that is not merged does not compile.
    pub fn over(self, lower: SettingsLayer) -> SettingsLayer {
        let SettingsLayer {
            listen,
            backends,
            backend_dns,
            dns_interval_ms,
            dns_server,
            admin_listen,
            admin_token,
            admin_token_file,
            algorithm,
            sticky,
            health_path,
            health_interval_ms,
            health_fall,
            health_rise,
            panic_threshold_percent,
            trusted_proxies,
            connect_timeout_ms,
            response_timeout_ms,
            pool_idle_timeout_ms,
            client_timeout_ms,
            max_body_bytes,
            body_timeout_ms,
            body_idle_timeout_ms,
            max_buffered_body_bytes,
            max_header_bytes,
            shutdown_timeout_ms,
            workers,
            max_connections,
            admin_max_connections,
        } = self;
        SettingsLayer {
            listen: listen.or(lower.listen),
            // An empty list given on the command line (`LB_BACKENDS=`) leaves the file's.
            backends: backends.filter(|b| !b.is_empty()).or(lower.backends),
            backend_dns: backend_dns.filter(|d| !d.is_empty()).or(lower.backend_dns),
            dns_interval_ms: dns_interval_ms.or(lower.dns_interval_ms),
            dns_server: dns_server.or(lower.dns_server),
            admin_listen: admin_listen.or(lower.admin_listen),
            admin_token: admin_token.or(lower.admin_token),
            admin_token_file: admin_token_file.or(lower.admin_token_file),
            algorithm: algorithm.or(lower.algorithm),
            // A switch: either source can turn it on.
            sticky: sticky || lower.sticky,
            health_path: health_path.or(lower.health_path),
            health_interval_ms: health_interval_ms.or(lower.health_interval_ms),
            health_fall: health_fall.or(lower.health_fall),
            health_rise: health_rise.or(lower.health_rise),
            panic_threshold_percent: panic_threshold_percent.or(lower.panic_threshold_percent),
            trusted_proxies: trusted_proxies
                .filter(|p| !p.is_empty())
                .or(lower.trusted_proxies),
            connect_timeout_ms: connect_timeout_ms.or(lower.connect_timeout_ms),
            response_timeout_ms: response_timeout_ms.or(lower.response_timeout_ms),
            pool_idle_timeout_ms: pool_idle_timeout_ms.or(lower.pool_idle_timeout_ms),
            client_timeout_ms: client_timeout_ms.or(lower.client_timeout_ms),
            max_body_bytes: max_body_bytes.or(lower.max_body_bytes),
            body_timeout_ms: body_timeout_ms.or(lower.body_timeout_ms),
            body_idle_timeout_ms: body_idle_timeout_ms.or(lower.body_idle_timeout_ms),
            max_buffered_body_bytes: max_buffered_body_bytes.or(lower.max_buffered_body_bytes),
            max_header_bytes: max_header_bytes.or(lower.max_header_bytes),
            shutdown_timeout_ms: shutdown_timeout_ms.or(lower.shutdown_timeout_ms),
            workers: workers.or(lower.workers),
            max_connections: max_connections.or(lower.max_connections),
            admin_max_connections: admin_max_connections.or(lower.admin_max_connections),
        }
    }
}

/// The built-in defaults, for the help texts.
fn defaults() -> Settings {
    Settings::with_backends(Vec::new())
}

fn with_default(text: &str, default: impl Display) -> String {
    format!("{text} (default {default})")
}

fn millis(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}

fn bytes(count: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;
    match count {
        n if n % MIB == 0 => format!("{} MiB", n / MIB),
        n if n % KIB == 0 => format!("{} KiB", n / KIB),
        n => format!("{n} bytes"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlgorithmArg {
    P2c,
    RoundRobin,
    LeastConn,
}

impl AlgorithmArg {
    /// The name a flag or the file uses.
    fn name(self) -> String {
        self.to_possible_value()
            .map(|value| value.get_name().to_string())
            .unwrap_or_default()
    }
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

impl From<Algorithm> for AlgorithmArg {
    fn from(algorithm: Algorithm) -> AlgorithmArg {
        match algorithm {
            Algorithm::PowerOfTwoChoices => AlgorithmArg::P2c,
            Algorithm::RoundRobin => AlgorithmArg::RoundRobin,
            Algorithm::LeastConnections => AlgorithmArg::LeastConn,
        }
    }
}

/// Everything the load balancer needs to start, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub admin_token: Option<String>,
    pub backends: Vec<BackendAddress>,
    /// Backends found in DNS, besides (or instead of) `backends`.
    pub discovery: DiscoveryOptions,
    pub proxy: ProxyOptions,
    pub health: HealthOptions,
    /// Below this share of healthy backends, route to all that answer.
    pub panic_threshold: PanicThreshold,
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

/// A configuration mistake, worded for the operator; every message is one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// toml's own message spans several lines (a source excerpt); this keeps the first, which
    /// names the problem, and the line it is on.
    #[error("config file {}: {}{}", path.display(), first_line(source.message()), at_line(*line))]
    FileSyntax {
        path: PathBuf,
        line: Option<usize>,
        // Boxed: toml's error is large, and every `Result` of this type would carry its size.
        source: Box<toml::de::Error>,
    },
    #[error(transparent)]
    Backend(#[from] AddressError),
    #[error("backend {0} is listed twice")]
    DuplicateBackend(BackendAddress),
    #[error(transparent)]
    DnsTarget(#[from] TargetError),
    #[error("backend DNS name {0} is listed twice")]
    DuplicateDnsTarget(DnsTarget),
    #[error("DNS server {0:?} is not an IP address or IP:PORT")]
    DnsServer(String),
    #[error("trusted proxy {text:?} is not a CIDR such as 10.0.0.0/8")]
    TrustedProxy {
        text: String,
        source: ipnet::AddrParseError,
    },
    #[error("{what} must be greater than 0 ms")]
    ZeroDuration { what: &'static str },
    #[error("{what} must be at least 1")]
    Zero { what: &'static str },
    #[error("{what} must be at least 1, got {value}")]
    ConnectionCap { what: &'static str, value: usize },
    #[error("max buffered body bytes ({budget}) must be at least max body bytes ({largest_body})")]
    BodyBudgetBelowLargestBody { budget: usize, largest_body: usize },
    #[error("max header bytes must be at least {MIN_HEADER_BYTES}, got {0}")]
    HeaderLimitTooSmall(usize),
    #[error("panic threshold must be a percentage from 0 to 100, got {0}")]
    PanicThreshold(u8),
    #[error("health path must start with '/', got {0:?}")]
    HealthPath(String),
    #[error(
        "admin API on non-loopback address {0} needs a token (--admin-token / LB_ADMIN_TOKEN or --admin-token-file / LB_ADMIN_TOKEN_FILE)"
    )]
    AdminTokenMissing(SocketAddr),
    #[error("cannot read admin token file {}: {source}", path.display())]
    AdminTokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin token file {} is empty", .0.display())]
    AdminTokenFileEmpty(PathBuf),
    #[error("admin token given twice: use either a token (--admin-token / LB_ADMIN_TOKEN) or a token file (--admin-token-file / LB_ADMIN_TOKEN_FILE)")]
    AdminTokenTwice,
}

/// The smallest header limit accepted: below it ordinary browser requests would get 431.
const MIN_HEADER_BYTES: usize = 1024;

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or("invalid TOML")
}

fn at_line(line: Option<usize>) -> String {
    line.map(|line| format!(" (line {line})"))
        .unwrap_or_default()
}

impl Settings {
    /// Settings with every default and the given backends: a starting point for tests and embedders.
    pub fn with_backends(backends: Vec<BackendAddress>) -> Settings {
        Settings {
            listen: DEFAULT_LISTEN,
            admin_listen: DEFAULT_ADMIN_LISTEN,
            admin_token: None,
            backends,
            discovery: DiscoveryOptions::default(),
            proxy: ProxyOptions::default(),
            health: HealthOptions::default(),
            panic_threshold: PanicThreshold::default(),
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
            None => SettingsLayer::default(),
        };
        Settings::from_layer(cli.settings.clone().over(file))
    }

    /// Fills in the defaults for what `given` leaves out and validates the result.
    pub fn from_layer(given: SettingsLayer) -> Result<Settings, ConfigError> {
        let mut settings = Settings::with_backends(Vec::new());
        settings.listen = given.listen.unwrap_or(settings.listen);
        settings.admin_listen = given.admin_listen.unwrap_or(settings.admin_listen);
        settings.admin_token = admin_token(given.admin_token, given.admin_token_file)?;

        let backends = given.backends.unwrap_or_default();
        for address in backends.iter().map(|b| b.trim()).filter(|b| !b.is_empty()) {
            let address = BackendAddress::parse(address)?;
            if settings.backends.contains(&address) {
                return Err(ConfigError::DuplicateBackend(address));
            }
            settings.backends.push(address);
        }

        let discovery = &mut settings.discovery;
        let targets = given.backend_dns.unwrap_or_default();
        for target in targets.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
            let target = DnsTarget::parse(target)?;
            if discovery.targets.contains(&target) {
                return Err(ConfigError::DuplicateDnsTarget(target));
            }
            discovery.targets.push(target);
        }
        set_duration(
            &mut discovery.interval,
            "DNS interval",
            given.dns_interval_ms,
        )?;
        if let Some(server) = given.dns_server {
            discovery.server = Some(parse_dns_server(&server)?);
        }

        let proxy = &mut settings.proxy;
        if let Some(algorithm) = given.algorithm {
            proxy.algorithm = algorithm.into();
        }
        proxy.sticky = given.sticky;
        let trusted = given.trusted_proxies.unwrap_or_default();
        proxy.trusted_proxies = trusted
            .iter()
            .map(|cidr| parse_cidr(cidr))
            .collect::<Result<_, _>>()?;
        set_duration(
            &mut proxy.connect_timeout,
            "connect timeout",
            given.connect_timeout_ms,
        )?;
        set_duration(
            &mut proxy.response_timeout,
            "response timeout",
            given.response_timeout_ms,
        )?;
        set_duration(
            &mut proxy.pool_idle_timeout,
            "pool idle timeout",
            given.pool_idle_timeout_ms,
        )?;
        set_duration(
            &mut proxy.client_timeout,
            "client timeout",
            given.client_timeout_ms,
        )?;
        if let Some(bytes) = given.max_body_bytes {
            proxy.max_body_bytes = bytes;
        }
        set_duration(
            &mut proxy.body_timeout,
            "body timeout",
            given.body_timeout_ms,
        )?;
        set_duration(
            &mut proxy.body_idle_timeout,
            "body idle timeout",
            given.body_idle_timeout_ms,
        )?;
        if let Some(bytes) = given.max_buffered_body_bytes {
            proxy.max_buffered_body_bytes = bytes;
        }
        if proxy.max_buffered_body_bytes < proxy.max_body_bytes {
            return Err(ConfigError::BodyBudgetBelowLargestBody {
                budget: proxy.max_buffered_body_bytes,
                largest_body: proxy.max_body_bytes,
            });
        }
        if let Some(bytes) = given.max_header_bytes {
            if bytes < MIN_HEADER_BYTES {
                return Err(ConfigError::HeaderLimitTooSmall(bytes));
            }
            proxy.max_header_bytes = bytes;
        }

        let health = &mut settings.health;
        if let Some(path) = given.health_path {
            if !path.starts_with('/') {
                return Err(ConfigError::HealthPath(path));
            }
            health.path = path;
        }
        set_duration(
            &mut health.interval,
            "health interval",
            given.health_interval_ms,
        )?;
        if let Some(fall) = given.health_fall {
            health.fall = at_least_one("health fall", fall)?;
        }
        if let Some(rise) = given.health_rise {
            health.rise = at_least_one("health rise", rise)?;
        }
        if let Some(percent) = given.panic_threshold_percent {
            settings.panic_threshold =
                PanicThreshold::new(percent).ok_or(ConfigError::PanicThreshold(percent))?;
        }

        set_duration(
            &mut settings.shutdown_timeout,
            "shutdown timeout",
            given.shutdown_timeout_ms,
        )?;
        settings.discovery.drain_limit = settings.shutdown_timeout;
        settings.workers = match given.workers {
            Some(0) => return Err(ConfigError::Zero { what: "workers" }),
            workers => workers,
        };
        if let Some(max) = given.max_connections {
            settings.max_connections = at_least_one_connection("max connections", max)?;
        }
        if let Some(max) = given.admin_max_connections {
            settings.admin_max_connections = at_least_one_connection("admin max connections", max)?;
        }

        if !settings.admin_listen.ip().is_loopback() && settings.admin_token.is_none() {
            return Err(ConfigError::AdminTokenMissing(settings.admin_listen));
        }
        Ok(settings)
    }
}

/// The admin token, given directly or as a file. A file is how orchestrators hand out secrets
/// (a Docker secret is mounted at /run/secrets/NAME) without putting them in the environment,
/// where `docker inspect` shows them. Giving both is refused rather than silently preferring
/// one, so an operator never guards the admin API with a token they did not mean.
fn admin_token(
    token: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<String>, ConfigError> {
    let token = token.filter(|t| !t.is_empty());
    let Some(path) = file else {
        return Ok(token);
    };
    if token.is_some() {
        return Err(ConfigError::AdminTokenTwice);
    }
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::AdminTokenFile {
        path: path.clone(),
        source,
    })?;
    // Files written by `echo` or an editor end in a newline that is no part of the token.
    let token = text.trim();
    if token.is_empty() {
        return Err(ConfigError::AdminTokenFileEmpty(path));
    }
    Ok(Some(token.to_string()))
}

fn read_file(path: &Path) -> Result<SettingsLayer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::FileSyntax {
        path: path.to_path_buf(),
        line: source.span().map(|span| line_of(&text, span.start)),
        source: Box::new(source),
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn parse_cidr(text: &str) -> Result<IpNet, ConfigError> {
    let text = text.trim();
    text.parse::<IpNet>().or_else(|source| {
        // A bare address means just that host.
        text.parse::<std::net::IpAddr>()
            .map(IpNet::from)
            .map_err(|_| ConfigError::TrustedProxy {
                text: text.to_string(),
                source,
            })
    })
}

/// `IP:PORT`, or a bare IP on DNS's port 53.
fn parse_dns_server(text: &str) -> Result<SocketAddr, ConfigError> {
    let text = text.trim();
    text.parse::<SocketAddr>()
        .or_else(|_| {
            text.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(|_| ConfigError::DnsServer(text.to_string()))
}

fn set_duration(
    slot: &mut Duration,
    what: &'static str,
    millis: Option<u64>,
) -> Result<(), ConfigError> {
    match millis {
        Some(0) => Err(ConfigError::ZeroDuration { what }),
        Some(ms) => {
            *slot = Duration::from_millis(ms);
            Ok(())
        }
        None => Ok(()),
    }
}

fn at_least_one_connection(what: &'static str, value: usize) -> Result<usize, ConfigError> {
    // The cap is a semaphore's permit count, which has a ceiling far above any sane limit.
    if value == 0 || value > tokio::sync::Semaphore::MAX_PERMITS {
        return Err(ConfigError::ConnectionCap { what, value });
    }
    Ok(value)
}

fn at_least_one(what: &'static str, value: u32) -> Result<u32, ConfigError> {
    if value == 0 {
        return Err(ConfigError::Zero { what });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Result<Settings, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("cluster-lb").chain(args.iter().copied()))
            .expect("the flags parse");
        Settings::from_cli(&cli)
    }

    /// A token file with a trailing newline, as `echo token > file` writes it.
    const ADMIN_TOKEN_FIXTURE: &str =
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/admin-token");

    /// Every setting: its flag, its environment variable, its TOML key, and one value in each
    /// syntax. The names are the public interface; this table is what keeps them.
    const EVERY_SETTING: &[(&str, &str, &str, &str, &str)] = &[
        (
            "--listen",
            "LB_LISTEN",
            "listen",
            "127.0.0.1:9080",
            "\"127.0.0.1:9080\"",
        ),
        (
            "--backend",
            "LB_BACKENDS",
            "backends",
            "a:1,b:2",
            "[\"a:1\", \"b:2\"]",
        ),
        (
            "--backend-dns",
            "LB_BACKEND_DNS",
            "backend_dns",
            "tasks.node:8000,other:1",
            "[\"tasks.node:8000\", \"other:1\"]",
        ),
        (
            "--dns-interval-ms",
            "LB_DNS_INTERVAL_MS",
            "dns_interval_ms",
            "80",
            "80",
        ),
        (
            "--dns-server",
            "LB_DNS_SERVER",
            "dns_server",
            "127.0.0.1:5353",
            "\"127.0.0.1:5353\"",
        ),
        (
            "--admin-listen",
            "LB_ADMIN_LISTEN",
            "admin_listen",
            "127.0.0.1:9081",
            "\"127.0.0.1:9081\"",
        ),
        (
            "--admin-token",
            "LB_ADMIN_TOKEN",
            "admin_token",
            "secret",
            "\"secret\"",
        ),
        (
            "--admin-token-file",
            "LB_ADMIN_TOKEN_FILE",
            "admin_token_file",
            ADMIN_TOKEN_FIXTURE,
            concat!(
                "\"",
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/admin-token\""
            ),
        ),
        (
            "--algorithm",
            "LB_ALGORITHM",
            "algorithm",
            "least-conn",
            "\"least-conn\"",
        ),
        ("--sticky", "LB_STICKY", "sticky", "", "true"),
        (
            "--health-path",
            "LB_HEALTH_PATH",
            "health_path",
            "/up",
            "\"/up\"",
        ),
        (
            "--health-interval-ms",
            "LB_HEALTH_INTERVAL_MS",
            "health_interval_ms",
            "70",
            "70",
        ),
        ("--health-fall", "LB_HEALTH_FALL", "health_fall", "5", "5"),
        ("--health-rise", "LB_HEALTH_RISE", "health_rise", "6", "6"),
        (
            "--panic-threshold-percent",
            "LB_PANIC_THRESHOLD_PERCENT",
            "panic_threshold_percent",
            "0",
            "0",
        ),
        (
            "--trusted-proxy",
            "LB_TRUSTED_PROXIES",
            "trusted_proxies",
            "10.0.0.0/8,10.1.2.3",
            "[\"10.0.0.0/8\", \"10.1.2.3\"]",
        ),
        (
            "--connect-timeout-ms",
            "LB_CONNECT_TIMEOUT_MS",
            "connect_timeout_ms",
            "71",
            "71",
        ),
        (
            "--response-timeout-ms",
            "LB_RESPONSE_TIMEOUT_MS",
            "response_timeout_ms",
            "72",
            "72",
        ),
        (
            "--pool-idle-timeout-ms",
            "LB_POOL_IDLE_TIMEOUT_MS",
            "pool_idle_timeout_ms",
            "73",
            "73",
        ),
        (
            "--client-timeout-ms",
            "LB_CLIENT_TIMEOUT_MS",
            "client_timeout_ms",
            "74",
            "74",
        ),
        (
            "--max-body-bytes",
            "LB_MAX_BODY_BYTES",
            "max_body_bytes",
            "2000",
            "2000",
        ),
        (
            "--body-timeout-ms",
            "LB_BODY_TIMEOUT_MS",
            "body_timeout_ms",
            "75",
            "75",
        ),
        (
            "--body-idle-timeout-ms",
            "LB_BODY_IDLE_TIMEOUT_MS",
            "body_idle_timeout_ms",
            "76",
            "76",
        ),
        (
            "--max-buffered-body-bytes",
            "LB_MAX_BUFFERED_BODY_BYTES",
            "max_buffered_body_bytes",
            "90000000",
            "90000000",
        ),
        (
            "--max-header-bytes",
            "LB_MAX_HEADER_BYTES",
            "max_header_bytes",
            "4096",
            "4096",
        ),
        (
            "--shutdown-timeout-ms",
            "LB_SHUTDOWN_TIMEOUT_MS",
            "shutdown_timeout_ms",
            "77",
            "77",
        ),
        ("--workers", "LB_WORKERS", "workers", "3", "3"),
        (
            "--max-connections",
            "LB_MAX_CONNECTIONS",
            "max_connections",
            "78",
            "78",
        ),
        (
            "--admin-max-connections",
            "LB_ADMIN_MAX_CONNECTIONS",
            "admin_max_connections",
            "79",
            "79",
        ),
    ];

    #[test]
    fn every_flag_has_its_variable_and_toml_key_with_the_same_meaning() {
        use clap::CommandFactory;
        let command = Cli::command();
        let defaults = format!("{:?}", settings(&[]).unwrap());
        for &(flag, env, key, flag_value, toml_value) in EVERY_SETTING {
            let arg = command
                .get_arguments()
                .find(|arg| arg.get_long() == flag.strip_prefix("--"))
                .unwrap_or_else(|| panic!("no flag {flag}"));
            assert_eq!(arg.get_env(), Some(std::ffi::OsStr::new(env)), "{flag}");

            let by_flag = if flag_value.is_empty() {
                settings(&[flag])
            } else {
                settings(&[&format!("{flag}={flag_value}")])
            };
            let by_flag = format!("{:?}", by_flag.unwrap());
            assert_ne!(by_flag, defaults, "{flag} changes nothing");
            let layer: SettingsLayer = toml::from_str(&format!("{key} = {toml_value}"))
                .unwrap_or_else(|e| panic!("key {key}: {e}"));
            let by_key = format!("{:?}", Settings::from_layer(layer).unwrap());
            assert_eq!(by_flag, by_key, "{flag} and key {key} disagree");
        }
    }

    #[test]
    fn the_flags_and_the_file_keys_are_the_same_set() {
        use clap::CommandFactory;
        let mut flags: Vec<String> = Cli::command()
            .get_arguments()
            .filter(|arg| !["config", "help", "version"].contains(&arg.get_id().as_str()))
            .filter_map(|arg| arg.get_long().map(|long| format!("--{long}")))
            .collect();
        flags.sort();
        let mut listed: Vec<String> = EVERY_SETTING.iter().map(|s| s.0.to_string()).collect();
        listed.sort();
        assert_eq!(flags, listed);

        // serde's refusal of an unknown key names every key it knows.
        let refusal = toml::from_str::<SettingsLayer>("bogus = 1").unwrap_err();
        let mut keys: Vec<&str> = refusal.message().split('`').skip(3).step_by(2).collect();
        keys.sort();
        let mut listed: Vec<&str> = EVERY_SETTING.iter().map(|s| s.2).collect();
        listed.sort();
        assert_eq!(keys, listed, "{}", refusal.message());
    }

    #[test]
    fn a_flag_beats_the_file_which_beats_the_default() {
        let file: SettingsLayer =
            toml::from_str("health_fall = 5\nhealth_rise = 6\nbackends = [\"a:1\"]").unwrap();
        let cli = Cli::try_parse_from(["cluster-lb", "--health-fall=7"]).unwrap();
        let merged = Settings::from_layer(cli.settings.over(file)).unwrap();
        assert_eq!(merged.health.fall, 7);
        assert_eq!(merged.health.rise, 6);
        assert_eq!(merged.health.interval, HealthOptions::default().interval);
        assert_eq!(merged.backends.len(), 1);
    }

    #[test]
    fn help_shows_the_defaults() {
        use clap::CommandFactory;
        let help = Cli::command().render_help().to_string();
        for shown in [
            "(default 127.0.0.1:8080)",
            "(default p2c)",
            "(default /readyz)",
            "(default 500 ms)",
            "(default 50 %)",
            "(default 1 MiB)",
            "(default 64 MiB)",
            "(default 32 KiB)",
            "(default 10000)",
        ] {
            assert!(help.contains(shown), "{shown} missing from {help}");
        }
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
    fn each_mistake_is_its_own_variant_carrying_its_cause() {
        use std::error::Error;
        let refused = |args: &[&str]| settings(args).expect_err("refused");
        assert!(matches!(
            refused(&["--backend=a:1,a:1"]),
            ConfigError::DuplicateBackend(_)
        ));
        assert!(matches!(
            refused(&["--backend=node1"]),
            ConfigError::Backend(AddressError::NotHostAndPort(_))
        ));
        assert!(matches!(
            refused(&["--backend-dns=tasks.node"]),
            ConfigError::DnsTarget(_)
        ));
        assert!(matches!(
            refused(&["--backend-dns=tasks.node:1,tasks.node:1"]),
            ConfigError::DuplicateDnsTarget(_)
        ));
        assert!(matches!(
            refused(&["--dns-server=resolver.local"]),
            ConfigError::DnsServer(_)
        ));
        assert!(matches!(
            refused(&["--panic-threshold-percent=101"]),
            ConfigError::PanicThreshold(101)
        ));
        assert!(matches!(
            refused(&["--health-fall=0"]),
            ConfigError::Zero {
                what: "health fall"
            }
        ));
        assert!(matches!(
            refused(&["--admin-listen=0.0.0.0:1"]),
            ConfigError::AdminTokenMissing(_)
        ));
        let proxy = refused(&["--trusted-proxy=10.0.0.0/99"]);
        assert!(matches!(proxy, ConfigError::TrustedProxy { .. }));
        assert!(proxy.source().is_some(), "the parse error is kept");
        let missing = refused(&["--config=/nonexistent/cluster-lb.toml"]);
        assert!(matches!(missing, ConfigError::ReadFile { .. }));
        assert!(missing.source().is_some(), "the I/O error is kept");
    }

    #[test]
    fn the_admin_token_comes_from_a_file_trimmed_and_only_one_way() {
        let from_file = settings(&[
            &format!("--admin-token-file={ADMIN_TOKEN_FIXTURE}"),
            "--admin-listen=0.0.0.0:1",
        ])
        .expect("a token file satisfies a public admin listener");
        let expected = std::fs::read_to_string(ADMIN_TOKEN_FIXTURE).expect("fixture");
        assert_ne!(
            expected,
            expected.trim(),
            "the fixture has whitespace to trim"
        );
        assert_eq!(from_file.admin_token.as_deref(), Some(expected.trim()));

        let both = settings(&[
            "--admin-token=direct",
            &format!("--admin-token-file={ADMIN_TOKEN_FIXTURE}"),
        ]);
        assert!(matches!(both, Err(ConfigError::AdminTokenTwice)));

        let in_file_and_flag: SettingsLayer =
            toml::from_str(&format!("admin_token_file = {ADMIN_TOKEN_FIXTURE:?}")).unwrap();
        let cli = Cli::try_parse_from(["cluster-lb", "--admin-token=direct"]).unwrap();
        assert!(matches!(
            Settings::from_layer(cli.settings.over(in_file_and_flag)),
            Err(ConfigError::AdminTokenTwice)
        ));

        let dir = std::env::temp_dir().join(format!("cluster-lb-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let blank = dir.join("blank");
        std::fs::write(&blank, " \n\t\n").unwrap();
        let empty = settings(&[&format!("--admin-token-file={}", blank.display())]);
        assert!(matches!(empty, Err(ConfigError::AdminTokenFileEmpty(_))));
        let missing = settings(&[&format!(
            "--admin-token-file={}",
            dir.join("missing").display()
        )]);
        assert!(matches!(missing, Err(ConfigError::AdminTokenFile { .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn dns_discovery_mixes_with_static_backends() {
        let set = settings(&[
            "--backend=127.0.0.1:9000",
            "--backend-dns=tasks.node:8000",
            "--dns-server=127.0.0.1",
        ])
        .unwrap();
        assert_eq!(set.backends.len(), 1);
        assert_eq!(set.discovery.targets[0].to_string(), "tasks.node:8000");
        assert_eq!(set.discovery.server, Some("127.0.0.1:53".parse().unwrap()));
        assert_eq!(set.discovery.interval, Duration::from_millis(1000));
        for refused in [
            "tasks.node:0",
            ":80",
            "a b:80",
            "tasks.node:http",
            "user@node:80",
        ] {
            assert!(DnsTarget::parse(refused).is_err(), "{refused} accepted");
        }
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
