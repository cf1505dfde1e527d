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

    /// redis:// or rediss:// URL; user and password go in the URL.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,

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
    /// GETEX, last writer wins) or
    /// `redis-versioned` (compare-and-set; a refused write is answered 409).
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

/// The session stores a node can run with (docs/session-consistency.md).
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
}

/// Validated settings; holding one means the node can start.
#[derive(Clone)]
pub struct Settings {
    pub node_id: String,
    pub listen_addr: SocketAddr,
    pub redis_url: String,
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
    #[error("NODE_ID must be 1-64 visible ASCII characters (got {0:?})")]
    NodeId(String),
    #[error("COOKIE_NAME must be 1-64 letters, digits, '-' or '_' (got {0:?})")]
    CookieName(String),
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
        if !(args.redis_url.starts_with("redis://") || args.redis_url.starts_with("rediss://")) {
            return Err(ConfigError::RedisUrlScheme(redacted_scheme(
                &args.redis_url,
            )));
        }
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
        Ok(Settings {
            node_id: args.node_id,
            listen_addr,
            redis_url: args.redis_url,
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
}
