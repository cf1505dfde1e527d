//! Connections to the Redis primary, wherever it is: the one pool the whole node uses.
//!
//! With `REDIS_URL` the primary is always at that address. Behind Sentinel it moves: a
//! failover promotes a replica, and the old primary, if it comes back, is a replica that
//! answers every write with `READONLY`. So the node holds its connections per primary: a
//! [`Primary`] is one address with its own deadpool-redis pool (create/wait/recycle timeouts
//! at the operation timeout, so taking a connection never hangs) and the `Client` the session
//! readers open their connections with. When that primary fails the node, the node lets go of
//! it ([`PrimaryPool::let_go`]) and closes its pool: idle connections are dropped at once, busy
//! ones when they come back. Failing the node means:
//!
//! - no connection could be made or checked (`PING`) from the pool;
//! - a command got no answer before the request gave up on it (a paused or partitioned
//!   primary keeps its sockets open and answers nothing);
//! - a write was refused with `READONLY`: the primary is one no more.
//!
//! A connection that merely broke is not a failure of the primary: deadpool's `PING` on the
//! next checkout replaces it, so a restarted Redis costs no failed request.
//!
//! After letting go, a `REDIS_URL` node opens a fresh pool on the same address at once. A
//! Sentinel node has no primary until [`crate::sentinel::follow`] has asked the sentinels and
//! checked the answer; meanwhile every request fails fast (503) instead of waiting. A
//! Sentinel node also leaves a primary that works: when the sentinels, asked again every
//! second, name a newer one (an old primary paused past a failover resumes as a primary),
//! [`PrimaryPool::install_found`] puts the new one in its place and closes the old one's pool
//! the same way. Each primary has a generation number, so that a late report about an old
//! primary never costs the current one its connections, and the session readers' connections
//! to an old primary are not used again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use deadpool_redis::redis::aio::ConnectionLike;
use deadpool_redis::redis::{self, Client, Cmd, ConnectionInfo, Pipeline, RedisFuture, Value};
use deadpool_redis::{Config, CreatePoolError, PoolConfig, PoolError, Runtime, Timeouts};
use tokio::sync::Notify;
use versioned_session_store::ConnectionPool;

/// Connections per primary. A connection is held for one command at a time, so a few per
/// worker thread keep up with loopback Redis.
const POOL_SIZE: usize = 16;

/// Where the primary is found.
enum Source {
    /// Always at this URL.
    Url(String),
    /// Wherever Sentinel says; [`crate::sentinel::follow`] installs it.
    Sentinel,
}

/// The node's connections to the current primary; clones share them.
#[derive(Clone)]
pub struct PrimaryPool {
    shared: Arc<Shared>,
}

struct Shared {
    source: Source,
    timeout: Duration,
    current: RwLock<Option<Arc<Primary>>>,
    /// The current primary's generation, 0 while there is none: what the session readers
    /// compare their connection's generation with on every read.
    generation: AtomicU64,
    /// The last generation handed out, under the `current` write lock.
    generations: AtomicU64,
    /// Wakes the Sentinel follower when the node lets go of its primary.
    lost: Notify,
}

/// One primary: its address, its pool, and a client for connections outside the pool.
pub struct Primary {
    pub generation: u64,
    /// For the log: host and port, never a password.
    pub address: String,
    pub client: Client,
    pool: deadpool_redis::Pool,
}

/// Why the node stopped using a primary.
#[derive(Debug, Clone, Copy)]
pub enum LetGo {
    Unreachable,
    Silent,
    ReadOnly,
}

impl LetGo {
    fn describe(self) -> &'static str {
        match self {
            LetGo::Unreachable => "no connection could be made",
            LetGo::Silent => "it did not answer within the timeout",
            LetGo::ReadOnly => "it refused a write as a read-only replica",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PrimaryError {
    #[error("no Redis primary known (Sentinel has not named one the node could reach)")]
    NoPrimary,
    #[error("no connection to the Redis primary: {0}")]
    Pool(#[from] PoolError),
}

impl PrimaryPool {
    /// A node on one Redis at `url`; fails only on a URL that does not parse.
    pub fn for_url(url: &str, timeout: Duration) -> Result<PrimaryPool, CreatePoolError> {
        let pool = PrimaryPool::new(Source::Url(url.to_string()), timeout);
        pool.install(Primary::at_url(url, timeout)?);
        Ok(pool)
    }

    /// A node behind Sentinel, without a primary until one is installed.
    pub fn for_sentinel(timeout: Duration) -> PrimaryPool {
        PrimaryPool::new(Source::Sentinel, timeout)
    }

    fn new(source: Source, timeout: Duration) -> PrimaryPool {
        PrimaryPool {
            shared: Arc::new(Shared {
                source,
                timeout,
                current: RwLock::new(None),
                generation: AtomicU64::new(0),
                generations: AtomicU64::new(0),
                lost: Notify::new(),
            }),
        }
    }

    /// The primary the node uses now, if any.
    pub fn primary(&self) -> Option<Arc<Primary>> {
        self.shared
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The current primary's generation; 0 while there is none.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// Makes the primary at `info` (Sentinel named it, and it says it is one) the node's; the
    /// pool of the one it replaces, if any, is closed.
    pub fn install_found(&self, info: ConnectionInfo) -> Result<(), CreatePoolError> {
        let primary = Primary::at(info, self.shared.timeout)?;
        log::info!("Redis primary: {}", primary.address);
        self.install(primary);
        Ok(())
    }

    fn install(&self, mut primary: Primary) {
        let mut current = self
            .shared
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        primary.generation = self.shared.generations.fetch_add(1, Ordering::Relaxed) + 1;
        self.shared
            .generation
            .store(primary.generation, Ordering::Release);
        if let Some(old) = current.replace(Arc::new(primary)) {
            old.pool.close();
        }
    }

    /// Stops using primary `generation`, unless the node has moved on already: its pool is
    /// closed, and the next request gets a new one (`REDIS_URL`) or none until Sentinel names
    /// a primary again.
    pub fn let_go(&self, generation: u64, why: LetGo) {
        let mut current = self
            .shared
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(primary) = current.take_if(|primary| primary.generation == generation) else {
            return;
        };
        primary.pool.close();
        self.shared.generation.store(0, Ordering::Release);
        log::warn!(
            "letting go of the Redis primary {}: {}",
            primary.address,
            why.describe()
        );
        drop(current);
        match &self.shared.source {
            Source::Url(url) => match Primary::at_url(url, self.shared.timeout) {
                Ok(fresh) => self.install(fresh),
                Err(err) => log::error!("cannot open a new pool for REDIS_URL: {err}"),
            },
            Source::Sentinel => self.shared.lost.notify_one(),
        }
    }

    /// Returns once the node has no primary: at once if it has none, else after the next
    /// [`PrimaryPool::let_go`].
    pub async fn lost(&self) {
        while self.primary().is_some() {
            self.shared.lost.notified().await;
        }
    }

    /// A connection to the current primary, checked with a `PING`. No primary, or one that
    /// cannot give a connection, is an error at once; the primary is let go of then.
    pub async fn get(&self) -> Result<PrimaryConnection, PrimaryError> {
        let primary = self.primary().ok_or(PrimaryError::NoPrimary)?;
        // Dropped before it resolves when the request gave up: the primary was silent.
        let waiting = LetGoOnDrop::new(self, primary.generation, LetGo::Silent);
        let connection = primary.pool.get().await;
        waiting.disarm();
        match connection {
            Ok(connection) => Ok(PrimaryConnection {
                connection,
                owner: self.clone(),
                generation: primary.generation,
            }),
            Err(err) => {
                if !matches!(err, PoolError::Closed) {
                    self.let_go(primary.generation, LetGo::Unreachable);
                }
                Err(err.into())
            }
        }
    }

    /// PING through the pool, bounded by the operation timeout: the readiness check.
    pub async fn ping(&self) -> bool {
        let attempt = async {
            let mut connection = self.get().await.ok()?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .ok()
        };
        matches!(
            tokio::time::timeout(self.shared.timeout, attempt).await,
            Ok(Some(_))
        )
    }
}

impl ConnectionPool for PrimaryPool {
    type Connection = PrimaryConnection;
    type Error = PrimaryError;

    fn connection(
        &self,
    ) -> impl std::future::Future<Output = Result<PrimaryConnection, PrimaryError>> {
        self.get()
    }
}

impl Primary {
    fn at_url(url: &str, timeout: Duration) -> Result<Primary, CreatePoolError> {
        let client = Client::open(url)
            .map_err(|err| CreatePoolError::Config(deadpool_redis::ConfigError::Redis(err)))?;
        Primary::with_config(Config::from_url(url), client, timeout)
    }

    fn at(info: ConnectionInfo, timeout: Duration) -> Result<Primary, CreatePoolError> {
        let client = Client::open(info.clone())
            .map_err(|err| CreatePoolError::Config(deadpool_redis::ConfigError::Redis(err)))?;
        Primary::with_config(Config::from_connection_info(info), client, timeout)
    }

    fn with_config(
        mut config: Config,
        client: Client,
        timeout: Duration,
    ) -> Result<Primary, CreatePoolError> {
        config.pool = Some(PoolConfig {
            max_size: POOL_SIZE,
            timeouts: Timeouts {
                wait: Some(timeout),
                create: Some(timeout),
                recycle: Some(timeout),
            },
            ..PoolConfig::default()
        });
        let pool = config.create_pool(Some(Runtime::Tokio1))?;
        Ok(Primary {
            generation: 0,
            address: client.get_connection_info().addr.to_string(),
            client,
            pool,
        })
    }
}

/// A pooled connection to primary `generation`; it lets go of that primary when a command
/// gets no answer or a `READONLY` one.
pub struct PrimaryConnection {
    connection: deadpool_redis::Connection,
    owner: PrimaryPool,
    generation: u64,
}

impl PrimaryConnection {
    /// Runs one exchange with Redis: a reply that says `READONLY`, or none at all, lets go.
    async fn exchange<T>(
        owner: &PrimaryPool,
        generation: u64,
        exchange: impl std::future::Future<Output = redis::RedisResult<T>>,
        says_read_only: impl FnOnce(&T) -> bool,
    ) -> redis::RedisResult<T> {
        let unanswered = LetGoOnDrop::new(owner, generation, LetGo::Silent);
        let reply = exchange.await;
        unanswered.disarm();
        let read_only = match &reply {
            Ok(value) => says_read_only(value),
            Err(err) => is_read_only(err),
        };
        if read_only {
            owner.let_go(generation, LetGo::ReadOnly);
        }
        reply
    }
}

impl ConnectionLike for PrimaryConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let exchange = self.connection.req_packed_command(cmd);
            Self::exchange(&self.owner, self.generation, exchange, value_says_read_only).await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let exchange = self.connection.req_packed_commands(cmd, offset, count);
            Self::exchange(&self.owner, self.generation, exchange, |values| {
                values.iter().any(value_says_read_only)
            })
            .await
        })
    }

    fn get_db(&self) -> i64 {
        self.connection.get_db()
    }
}

/// True for Redis's answer to a write sent to a replica.
pub fn is_read_only(err: &redis::RedisError) -> bool {
    err.code() == Some("READONLY")
}

/// A reply, or a reply inside a pipeline's or a transaction's, that is `READONLY`. (A
/// transaction queued on a replica answers `READONLY` to each write, then `EXECABORT`.)
fn value_says_read_only(value: &Value) -> bool {
    match value {
        Value::ServerError(err) => err.code() == "READONLY",
        Value::Array(values) => values.iter().any(value_says_read_only),
        _ => false,
    }
}

/// Lets go of a primary when dropped before [`LetGoOnDrop::disarm`]: the future waiting for
/// the primary was dropped because the request's deadline passed.
pub struct LetGoOnDrop<'a> {
    pool: &'a PrimaryPool,
    generation: u64,
    why: LetGo,
    armed: bool,
}

impl<'a> LetGoOnDrop<'a> {
    pub fn new(pool: &'a PrimaryPool, generation: u64, why: LetGo) -> LetGoOnDrop<'a> {
        LetGoOnDrop {
            pool,
            generation,
            why,
            armed: true,
        }
    }

    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for LetGoOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.pool.let_go(self.generation, self.why);
        }
    }
}
