//! Command line and environment -> validated [`Settings`].
//!
//! Every node of a cluster is started from the same image with different
//! environment variables, so each flag has an env fallback (clap's `env`).
//! Parsing and validation happen once, here, before anything starts: a node
//! that would share nothing with its peers (no session key) or could never
//! serve (bad address, bad Redis URL) refuses to start with one clear line,
//! instead of failing on the first request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix_web::cookie::Key;
use base64::Engine as _;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use versioned_session_store::ReplicaAcks;

/// A session key must carry at least this many bytes: 32 sign the cookie,
/// 32 encrypt it (actix-web's `Key`).
pub const MIN_SESSION_KEY_BYTES: usize = 64;

#[derive(Debug, Parser)]
#[command(
    name = "cluster-app",
    version,
    about = "One node of actix-cluster-lab: sessions shared through Redis"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// GET a URL and exit 0 on 200, 1 otherwise (a container healthcheck without curl).
    Probe {
        /// Defaults to http://127.0.0.1:<port of LISTEN_ADDR>/readyz.
        #[arg(long)]
        url: Option<String>,
    },
}

/// The node's settings as given, before validation.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Name of this node, sent back in every `X-Served-By` header.
    #[arg(long, env = "NODE_ID", default_value = "node")]
    pub node_id: String,

    /// Address to listen on (ip:port).
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8000")]
    pub listen_addr: String,

    /// One Redis: a redis:// or rediss:// URL, user and password in it. Or REDIS_SENTINELS.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Redis behind Sentinel, instead of REDIS_URL: the sentinels to ask for the primary,
    /// host:port,host:port,...
    #[arg(long, env = "REDIS_SENTINELS")]
    pub redis_sentinels: Option<String>,

    /// With REDIS_SENTINELS: the name the sentinels monitor the primary under.
    #[arg(long, env = "REDIS_SENTINEL_MASTER")]
    pub redis_sentinel_master: Option<String>,

    /// With REDIS_SENTINELS: the sentinels' password.
    #[arg(long, env = "REDIS_SENTINEL_PASSWORD", hide_env_values = true)]
    pub redis_sentinel_password: Option<String>,

    /// With REDIS_SENTINELS: the password of the Redis instances they name
    /// (with REDIS_URL it goes in the URL).
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,

    /// After each session write and atomic increment, wait until this many replicas have it
    /// (Redis WAIT); fewer within REDIS_REPLICA_ACK_TIMEOUT_MS is a 503. 0: do not wait.
    #[arg(long, env = "REDIS_MIN_REPLICAS_ACK", default_value_t = 0)]
    pub redis_min_replicas_ack: u32,

    /// How long a write waits for REDIS_MIN_REPLICAS_ACK replicas; below REDIS_TIMEOUT_MS.
    #[arg(long, env = "REDIS_REPLICA_ACK_TIMEOUT_MS", default_value_t = 100)]
    pub redis_replica_ack_timeout_ms: u64,

    /// Cookie key, hex or base64, at least 64 bytes decoded; the same on every node.
    #[arg(long, env = "SESSION_KEY", hide_env_values = true)]
    pub session_key: Option<String>,

    /// File holding the cookie key instead (a Docker or Kubernetes secret); not with SESSION_KEY.
    #[arg(long, env = "SESSION_KEY_FILE")]
    pub session_key_file: Option<PathBuf>,

    /// Generate a session key when none is given (this node then shares no session with others).
    #[arg(long)]
    pub dev: bool,

    /// Idle lifetime of a session: each request that uses it starts it again
    /// (in Redis; in the cookie too with --persistent-cookie).
    #[arg(long, env = "SESSION_TTL_SECS", default_value_t = 1800)]
    pub session_ttl_secs: u64,

    #[arg(long, env = "COOKIE_NAME", default_value = "cluster_session")]
    pub cookie_name: String,

    /// Send the cookie over HTTPS only; local http demos and tests pass false.
    #[arg(long, env = "COOKIE_SECURE", default_value_t = true, action = ArgAction::Set)]
    pub cookie_secure: bool,

    /// Give the cookie a Max-Age of the idle lifetime, sent again with every
    /// response, so a login outlives a browser restart. Costs a re-encrypted
    /// Set-Cookie on every read. Default: a browser-session cookie, as
    /// express-session's; the idle timeout is kept in Redis either way.
    #[arg(long, env = "PERSISTENT_COOKIE", default_value_t = false, action = ArgAction::Set)]
    pub persistent_cookie: bool,

    /// Where sessions live: `redis` (actix-session's Redis store read with one
    /// GETEX, last writer wins),
    /// `redis-versioned` (compare-and-set; a refused write is answered 409),
    /// `memory` (this node's memory only, no Redis) or `cookie` (the whole state
    /// in the encrypted cookie, no Redis).
    #[arg(long, env = "SESSION_STORE", value_enum, default_value_t = SessionStoreKind::RedisGetex)]
    pub session_store: SessionStoreKind,

    /// Prefix of every Redis key this node writes.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "session:")]
    pub redis_key_prefix: String,

    /// Upper bound of every Redis operation; past it the request gets a 503.
    #[arg(long, env = "REDIS_TIMEOUT_MS", default_value_t = 500)]
    pub redis_timeout_ms: u64,

    /// How long /readyz answers 503 after SIGTERM while the node keeps serving.
    #[arg(long, env = "DRAIN_MS", default_value_t = 5000)]
    pub drain_ms: u64,

    /// HTTP worker threads (default: number of cores).
    #[arg(long, env = "WORKERS")]
    pub workers: Option<usize>,
}

/// The session stores a node can run with (docs/concurrent-writes.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SessionStoreKind {
    /// `SESSION_STORE=redis`: [`crate::getex_store::GetexRedisStore`],
    /// actix-session's `RedisSessionStore`, the store taught first, reading
    /// with one `GETEX`. Concurrent writes to one session overwrite each
    /// other, and a write racing a logout can bring the session back.
    #[value(name = "redis")]
    RedisGetex,
    /// `versioned_session_store::VersionedRedisStore`: a write based on a
    /// stale read, or to a session logged out meanwhile, is refused (409).
    RedisVersioned,
    /// [`crate::memory_store::MemoryStore`]: sessions in this node's memory, as
    /// express-session's default MemoryStore; no other node knows them
    /// (docs/why-sessions-break.md). No Redis.
    Memory,
    /// [`crate::cookie_store::CappedCookieStore`]: the state in the encrypted
    /// cookie, read by any node, revoked by none (docs/three-designs.md). No Redis.
    Cookie,
}

impl SessionStoreKind {
    /// The stores that keep sessions in Redis; the others run without it.
    pub fn uses_redis(self) -> bool {
        matches!(
            self,
            SessionStoreKind::RedisGetex | SessionStoreKind::RedisVersioned
        )
    }

    /// As `SESSION_STORE` spells it.
    pub fn name(self) -> &'static str {
        match self {
            SessionStoreKind::RedisGetex => "redis",
            SessionStoreKind::RedisVersioned => "redis-versioned",
            SessionStoreKind::Memory => "memory",
            SessionStoreKind::Cookie => "cookie",
        }
    }
}

/// Where the node's Redis is. Not `Debug`: it holds passwords.
#[derive(Clone)]
pub enum RedisTarget {
    /// `REDIS_URL`: one Redis at a fixed address.
    Url(String),
    /// `REDIS_SENTINELS`: a primary that Sentinel names, and names again after a failover.
    Sentinel(SentinelSettings),
}

#[derive(Clone)]
pub struct SentinelSettings {
    /// In the order given; all asked at once, equally new answers taken in this order.
    pub sentinels: Vec<SentinelAddress>,
    pub master_name: String,
    pub sentinel_password: Option<String>,
    pub redis_password: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentinelAddress {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for SentinelAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Validated settings; holding one means the node can start.
#[derive(Clone)]
pub struct Settings {
    pub node_id: String,
    pub listen_addr: SocketAddr,
    /// `None` with the stores that need no Redis (`memory`, `cookie`).
    pub redis: Option<RedisTarget>,
    /// `REDIS_MIN_REPLICAS_ACK` > 0: every write waits for that many replicas.
    pub replica_acks: Option<ReplicaAcks>,
    pub session_key: Key,
    /// True when `--dev` made up the key: no other node can read this node's cookies.
    pub session_key_generated: bool,
    pub session_ttl: Duration,
    pub cookie_name: String,
    pub cookie_secure: bool,
    pub persistent_cookie: bool,
    pub session_store: SessionStoreKind,
    pub redis_key_prefix: String,
    pub redis_timeout: Duration,
    pub drain: Duration,
    pub workers: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("SESSION_KEY is missing: set it or SESSION_KEY_FILE (hex or base64, >= {MIN_SESSION_KEY_BYTES} bytes, the same on every node) or pass --dev")]
    MissingSessionKey,
    #[error("SESSION_KEY and SESSION_KEY_FILE are both set: give the key one way")]
    TwoSessionKeys,
    #[error("SESSION_KEY_FILE {path:?} cannot be read: {source}")]
    UnreadableSessionKeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("SESSION_KEY_FILE {0:?} is empty")]
    EmptySessionKeyFile(PathBuf),
    #[error("{0} is neither hex nor base64")]
    UndecodableSessionKey(KeySource),
    #[error("{0} decodes to {1} bytes; at least {MIN_SESSION_KEY_BYTES} are needed")]
    ShortSessionKey(KeySource, usize),
    #[error("LISTEN_ADDR {0:?} is not ip:port (e.g. 127.0.0.1:8000)")]
    ListenAddr(String),
    #[error("REDIS_URL must start with redis:// or rediss:// (got {0:?})")]
    RedisUrlScheme(String),
    #[error("no Redis given: set REDIS_URL (one Redis) or REDIS_SENTINELS and REDIS_SENTINEL_MASTER (Redis behind Sentinel)")]
    NoRedis,
    #[error(
        "REDIS_URL and REDIS_SENTINELS are both set: give one Redis or its sentinels, not both"
    )]
    TwoRedisTargets,
    #[error("REDIS_SENTINELS must be host:port,host:port,... (got {0:?})")]
    SentinelList(String),
    #[error("REDIS_SENTINELS needs REDIS_SENTINEL_MASTER, the name the sentinels monitor the primary under")]
    NoSentinelMaster,
    #[error("REDIS_SENTINEL_MASTER must be 1-64 visible ASCII characters (got {0:?})")]
    SentinelMaster(String),
    #[error("{0} is only used with REDIS_SENTINELS (with REDIS_URL, a password goes in the URL)")]
    SentinelSettingWithoutSentinels(&'static str),
    #[error("REDIS_REPLICA_ACK_TIMEOUT_MS ({ack_ms}) must be below REDIS_TIMEOUT_MS ({timeout_ms}): a write waits for its replicas within the operation's timeout")]
    AckTimeout { ack_ms: u64, timeout_ms: u64 },
    #[error("NODE_ID must be 1-64 visible ASCII characters (got {0:?})")]
    NodeId(String),
    #[error("COOKIE_NAME must be 1-64 letters, digits, '-' or '_' (got {0:?})")]
    CookieName(String),
    #[error("SESSION_STORE={store} keeps no session in Redis: remove {setting} (or use SESSION_STORE=redis)")]
    RedisWithoutRedisStore {
        store: &'static str,
        setting: &'static str,
    },
    #[error("{0} must be at least 1")]
    Zero(&'static str),
}

/// Where the session key was read from, named in the messages about it
/// (never the key itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Variable,
    File,
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeySource::Variable => "SESSION_KEY",
            KeySource::File => "the content of SESSION_KEY_FILE",
        })
    }
}

impl TryFrom<NodeArgs> for Settings {
    type Error = ConfigError;

    fn try_from(args: NodeArgs) -> Result<Settings, ConfigError> {
        let (session_key, session_key_generated) =
            match (&args.session_key, &args.session_key_file, args.dev) {
                (Some(_), Some(_), _) => return Err(ConfigError::TwoSessionKeys),
                (Some(encoded), None, _) => {
                    (parse_session_key(encoded, KeySource::Variable)?, false)
                }
                (None, Some(path), _) => (read_session_key_file(path)?, false),
                (None, None, true) => (Key::generate(), true),
                (None, None, false) => return Err(ConfigError::MissingSessionKey),
            };
        let listen_addr = args
            .listen_addr
            .parse()
            .map_err(|_| ConfigError::ListenAddr(args.listen_addr.clone()))?;
        let node_id_ok = (1..=64).contains(&args.node_id.len())
            && args.node_id.bytes().all(|b| b.is_ascii_graphic());
        if !node_id_ok {
            return Err(ConfigError::NodeId(args.node_id));
        }
        let cookie_name_ok = (1..=64).contains(&args.cookie_name.len())
            && args
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !cookie_name_ok {
            return Err(ConfigError::CookieName(args.cookie_name));
        }
        if args.session_ttl_secs == 0 {
            return Err(ConfigError::Zero("SESSION_TTL_SECS"));
        }
        if args.redis_timeout_ms == 0 {
            return Err(ConfigError::Zero("REDIS_TIMEOUT_MS"));
        }

        let workers = match args.workers {
            Some(0) => return Err(ConfigError::Zero("WORKERS")),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let (redis, replica_acks) = if args.session_store.uses_redis() {
            (Some(redis_target(&args)?), replica_acks(&args)?)
        } else {
            refuse_redis_settings(&args)?;
            (None, None)
        };
        Ok(Settings {
            node_id: args.node_id,
            listen_addr,
            redis,
            replica_acks,
            session_key,
            session_key_generated,
            session_ttl: Duration::from_secs(args.session_ttl_secs),
            cookie_name: args.cookie_name,
            cookie_secure: args.cookie_secure,
            persistent_cookie: args.persistent_cookie,
            session_store: args.session_store,
            redis_key_prefix: args.redis_key_prefix,
            redis_timeout: Duration::from_millis(args.redis_timeout_ms),
            drain: Duration::from_millis(args.drain_ms),
            workers,
        })
    }
}

/// `REDIS_URL`, or `REDIS_SENTINELS` with its companions: exactly one of the two.
fn redis_target(args: &NodeArgs) -> Result<RedisTarget, ConfigError> {
    match (&args.redis_url, &args.redis_sentinels) {
        (Some(_), Some(_)) => Err(ConfigError::TwoRedisTargets),
        (None, None) => Err(ConfigError::NoRedis),
        (Some(url), None) => {
            let sentinel_only = [
                ("REDIS_SENTINEL_MASTER", &args.redis_sentinel_master),
                ("REDIS_SENTINEL_PASSWORD", &args.redis_sentinel_password),
                ("REDIS_PASSWORD", &args.redis_password),
            ];
            if let Some((name, _)) = sentinel_only.iter().find(|(_, value)| value.is_some()) {
                return Err(ConfigError::SentinelSettingWithoutSentinels(name));
            }
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(ConfigError::RedisUrlScheme(redacted_scheme(url)));
            }
            Ok(RedisTarget::Url(url.clone()))
        }
        (None, Some(list)) => {
            let sentinels = parse_sentinels(list)?;
            let master_name = args
                .redis_sentinel_master
                .clone()
                .ok_or(ConfigError::NoSentinelMaster)?;
            let name_ok = (1..=64).contains(&master_name.len())
                && master_name.bytes().all(|b| b.is_ascii_graphic());
            if !name_ok {
                return Err(ConfigError::SentinelMaster(master_name));
            }
            Ok(RedisTarget::Sentinel(SentinelSettings {
                sentinels,
                master_name,
                sentinel_password: args.redis_sentinel_password.clone(),
                redis_password: args.redis_password.clone(),
            }))
        }
    }
}

/// A store without Redis given a Redis setting: a deploy that believes its
/// sessions are shared (or replicated) when they are not, refused at start.
fn refuse_redis_settings(args: &NodeArgs) -> Result<(), ConfigError> {
    let given = [
        ("REDIS_URL", args.redis_url.is_some()),
        ("REDIS_SENTINELS", args.redis_sentinels.is_some()),
        (
            "REDIS_SENTINEL_MASTER",
            args.redis_sentinel_master.is_some(),
        ),
        (
            "REDIS_SENTINEL_PASSWORD",
            args.redis_sentinel_password.is_some(),
        ),
        ("REDIS_PASSWORD", args.redis_password.is_some()),
        ("REDIS_MIN_REPLICAS_ACK", args.redis_min_replicas_ack > 0),
    ];
    match given.iter().find(|(_, is_given)| *is_given) {
        Some((setting, _)) => Err(ConfigError::RedisWithoutRedisStore {
            store: args.session_store.name(),
            setting,
        }),
        None => Ok(()),
    }
}

/// `host:port,host:port,...`; a host may be a name, an IPv4 address or a bracketed IPv6 one.
fn parse_sentinels(list: &str) -> Result<Vec<SentinelAddress>, ConfigError> {
    let malformed = || ConfigError::SentinelList(list.to_string());
    list.split(',')
        .map(|item| {
            let (host, port) = item.trim().rsplit_once(':').ok_or_else(malformed)?;
            let host = match host.strip_prefix('[') {
                Some(bracketed) => bracketed.strip_suffix(']').ok_or_else(malformed)?,
                None if host.contains(':') => return Err(malformed()),
                None => host,
            };
            let port: u16 = port.parse().map_err(|_| malformed())?;
            let host_ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_graphic());
            if !host_ok || port == 0 {
                return Err(malformed());
            }
            Ok(SentinelAddress {
                host: host.to_string(),
                port,
            })
        })
        .collect()
}

/// `REDIS_MIN_REPLICAS_ACK` and its timeout, which must fit in the operation's timeout.
fn replica_acks(args: &NodeArgs) -> Result<Option<ReplicaAcks>, ConfigError> {
    if args.redis_min_replicas_ack == 0 {
        return Ok(None);
    }
    let ack_ms = args.redis_replica_ack_timeout_ms;
    if ack_ms == 0 {
        return Err(ConfigError::Zero("REDIS_REPLICA_ACK_TIMEOUT_MS"));
    }
    if ack_ms >= args.redis_timeout_ms {
        return Err(ConfigError::AckTimeout {
            ack_ms,
            timeout_ms: args.redis_timeout_ms,
        });
    }
    Ok(Some(ReplicaAcks {
        replicas: args.redis_min_replicas_ack,
        timeout: Duration::from_millis(ack_ms),
    }))
}

/// Orchestrators hand secrets to a container as files (Docker secrets in
/// /run/secrets, Kubernetes secret volumes), which keeps the key out of the
/// environment that `docker inspect` and process listings show.
fn read_session_key_file(path: &Path) -> Result<Key, ConfigError> {
    let encoded =
        std::fs::read_to_string(path).map_err(|source| ConfigError::UnreadableSessionKeyFile {
            path: path.to_path_buf(),
            source,
        })?;
    if encoded.trim().is_empty() {
        return Err(ConfigError::EmptySessionKeyFile(path.to_path_buf()));
    }
    parse_session_key(&encoded, KeySource::File)
}

/// Accepts hex first (it is also valid base64 for some inputs, and the more
/// common way to print random bytes), then standard base64. Surrounding
/// whitespace (a file's final newline) is ignored.
fn parse_session_key(encoded: &str, source: KeySource) -> Result<Key, ConfigError> {
    let encoded = encoded.trim();
    if encoded.is_empty() {
        return Err(ConfigError::MissingSessionKey);
    }
    let bytes = hex::decode(encoded)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(encoded))
        .map_err(|_| ConfigError::UndecodableSessionKey(source))?;
    if bytes.len() < MIN_SESSION_KEY_BYTES {
        return Err(ConfigError::ShortSessionKey(source, bytes.len()));
    }
    Key::try_from(bytes.as_slice()).map_err(|_| ConfigError::ShortSessionKey(source, bytes.len()))
}

/// The URL may hold a password: an error message shows only what precedes "://".
fn redacted_scheme(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, _)) => format!("{scheme}://..."),
        None => "<no scheme>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_accepted_as_hex_or_base64_and_refused_when_short() {
        let bytes = [7u8; 64];
        let source = KeySource::Variable;
        assert!(parse_session_key(&hex::encode(bytes), source).is_ok());
        assert!(parse_session_key(
            &base64::engine::general_purpose::STANDARD.encode(bytes),
            source
        )
        .is_ok());
        assert!(matches!(
            parse_session_key(&hex::encode([7u8; 63]), source),
            Err(ConfigError::ShortSessionKey(_, 63))
        ));
        assert!(matches!(
            parse_session_key("not a key!", source),
            Err(ConfigError::UndecodableSessionKey(_))
        ));
    }

    #[test]
    fn sentinels_are_host_port_pairs() {
        let address = |host: &str, port| SentinelAddress {
            host: host.to_string(),
            port,
        };
        assert_eq!(
            parse_sentinels("127.0.0.1:26379, sentinel-2:26380,[::1]:26381").unwrap(),
            vec![
                address("127.0.0.1", 26379),
                address("sentinel-2", 26380),
                address("::1", 26381)
            ]
        );
        for malformed in [
            "",
            "127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            ":26379",
            "a:1,,b:2",
            "a:1,",
            "::1:26379",
            "[::1:26379",
            "a b:26379",
        ] {
            assert!(
                matches!(
                    parse_sentinels(malformed),
                    Err(ConfigError::SentinelList(_))
                ),
                "{malformed:?} is accepted"
            );
        }
    }
}
