//! Finding the Redis primary through Sentinel, and finding it again each time it is lost.
//!
//! The protocol is the one Redis documents for Sentinel clients: ask a sentinel
//! `SENTINEL get-master-addr-by-name <name>`, connect to the address it gives, and believe it
//! only if that instance says `ROLE` master (a sentinel cut off from its peers, or one that
//! has not heard of a failover yet, names an old primary). If a sentinel does not answer, or
//! names an instance that is no primary, ask the next one; start with the sentinel that
//! answered last. Every question, to a sentinel or to an instance, has the operation timeout
//! (`REDIS_TIMEOUT_MS`).
//!
//! [`follow`] runs for the node's life, off the request path: whenever the node has no
//! primary (at start, and after [`PrimaryPool::let_go`]) it asks, every
//! [`RETRY_INTERVAL`] until an answer holds, and installs the primary it found. Requests never
//! wait for it: without a primary they get a 503 at once. After a failover the sentinels name
//! the new primary, and the node serves again within one interval plus one round of questions.
//!
//! Why not redis-rs's `SentinelClient` (or deadpool-redis's `sentinel` pool, built on it): it
//! asks its sentinels in a fixed order with no timeout, so one paused or partitioned sentinel
//! at the head of the list hangs every new connection, and it cannot tell the node's pool that
//! the primary moved, so connections to a demoted primary would stay in it.

use std::time::Duration;

use deadpool_redis::redis::{
    self, AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, RedisConnectionInfo, Role,
};

use crate::configuration::{SentinelAddress, SentinelSettings};
use crate::primary_pool::PrimaryPool;

/// How soon the follower asks again after a round found no primary: the delay between
/// Sentinel announcing a new primary and the node using it, at worst.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// The sentinels, and which of them to ask first.
pub struct Sentinels {
    settings: SentinelSettings,
    timeout: Duration,
    /// Index of the sentinel that answered last.
    first: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("sentinel {sentinel} did not answer: {reason}")]
    SentinelSilent {
        sentinel: SentinelAddress,
        reason: String,
    },
    #[error("sentinel {sentinel} does not know a primary named {name:?}")]
    UnknownMaster {
        sentinel: SentinelAddress,
        name: String,
    },
    #[error("sentinel {sentinel} names {primary}, which {reason}")]
    NotPrimary {
        sentinel: SentinelAddress,
        primary: String,
        reason: String,
    },
}

impl Sentinels {
    pub fn new(settings: SentinelSettings, timeout: Duration) -> Sentinels {
        Sentinels {
            settings,
            timeout,
            first: 0,
        }
    }

    /// One round of questions: the first primary a sentinel names and that confirms it is
    /// one, or what went wrong with the last sentinel asked.
    pub async fn find_primary(&mut self) -> Result<ConnectionInfo, DiscoveryError> {
        let count = self.settings.sentinels.len();
        let mut not_primaries: Vec<(String, u16)> = Vec::new();
        let mut last_error = None;
        for offset in 0..count {
            let index = (self.first + offset) % count;
            let sentinel = &self.settings.sentinels[index];
            let named = match self.ask(sentinel).await {
                Ok(named) => named,
                Err(err) => {
                    last_error = Some(err);
                    continue;
                }
            };
            // Several sentinels naming the same old primary: one check is enough.
            if not_primaries.contains(&named) {
                continue;
            }
            match self.confirm(&named).await {
                Ok(info) => {
                    self.first = index;
                    return Ok(info);
                }
                Err(reason) => {
                    last_error = Some(DiscoveryError::NotPrimary {
                        sentinel: sentinel.clone(),
                        primary: format!("{}:{}", named.0, named.1),
                        reason,
                    });
                    not_primaries.push(named);
                }
            }
        }
        Err(last_error.expect("the configuration holds at least one sentinel"))
    }

    /// `SENTINEL get-master-addr-by-name`, within the timeout.
    async fn ask(&self, sentinel: &SentinelAddress) -> Result<(String, u16), DiscoveryError> {
        let silent = |reason: String| DiscoveryError::SentinelSilent {
            sentinel: sentinel.clone(),
            reason,
        };
        let info = ConnectionInfo {
            addr: ConnectionAddr::Tcp(sentinel.host.clone(), sentinel.port),
            redis: RedisConnectionInfo {
                password: self.settings.sentinel_password.clone(),
                ..RedisConnectionInfo::default()
            },
        };
        let question = async {
            let mut connection = self.connect(info).await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&self.settings.master_name)
                .query_async::<Option<(String, u16)>>(&mut connection)
                .await
        };
        match tokio::time::timeout(self.timeout, question).await {
            Err(_elapsed) => Err(silent(format!("no answer within {:?}", self.timeout))),
            Ok(Err(err)) => Err(silent(err.to_string())),
            Ok(Ok(None)) => Err(DiscoveryError::UnknownMaster {
                sentinel: sentinel.clone(),
                name: self.settings.master_name.clone(),
            }),
            Ok(Ok(Some(named))) => Ok(named),
        }
    }

    /// The instance at `address` if it says `ROLE` master; else why not.
    async fn confirm(&self, (host, port): &(String, u16)) -> Result<ConnectionInfo, String> {
        let info = ConnectionInfo {
            addr: ConnectionAddr::Tcp(host.clone(), *port),
            redis: RedisConnectionInfo {
                password: self.settings.redis_password.clone(),
                ..RedisConnectionInfo::default()
            },
        };
        let question = async {
            let mut connection = self.connect(info.clone()).await?;
            redis::cmd("ROLE")
                .query_async::<Role>(&mut connection)
                .await
        };
        match tokio::time::timeout(self.timeout, question).await {
            Err(_elapsed) => Err(format!("did not answer within {:?}", self.timeout)),
            Ok(Err(err)) => Err(format!("cannot be asked: {err}")),
            Ok(Ok(Role::Primary { .. })) => Ok(info),
            Ok(Ok(Role::Replica {
                primary_ip,
                primary_port,
                ..
            })) => Err(format!("is a replica of {primary_ip}:{primary_port}")),
            Ok(Ok(Role::Sentinel { .. })) => Err("is a sentinel".to_string()),
        }
    }

    async fn connect(
        &self,
        info: ConnectionInfo,
    ) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout);
        Client::open(info)?
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }
}

/// Keeps `pool` on the primary Sentinel names, for as long as the node runs.
pub async fn follow(pool: PrimaryPool, mut sentinels: Sentinels) {
    let mut failing = false;
    loop {
        pool.lost().await;
        match sentinels.find_primary().await {
            Ok(info) => {
                failing = false;
                if let Err(err) = pool.install_found(info) {
                    log::error!("cannot open a pool for the Redis primary: {err}");
                    tokio::time::sleep(RETRY_INTERVAL).await;
                }
            }
            Err(err) => {
                // Once per outage: the node asks ten times a second until it ends.
                if !failing {
                    log::warn!("no Redis primary: {err}; asking the sentinels again");
                    failing = true;
                }
                tokio::time::sleep(RETRY_INTERVAL).await;
            }
        }
    }
}
