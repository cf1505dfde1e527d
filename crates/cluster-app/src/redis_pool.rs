//! The Redis connection pool: bounded waits everywhere.
//!
//! deadpool-redis hands out multiplexed connections and checks each one with
//! a PING when it is taken from the pool, so a connection broken by a Redis
//! restart is replaced on the next request instead of failing forever. Its
//! create/wait/recycle timeouts are set to the operation timeout, so asking
//! the pool for a connection can never be the step that hangs.

use std::time::Duration;

use deadpool_redis::{Config, CreatePoolError, Pool, PoolConfig, Runtime, Timeouts};

/// Connections per node. A connection is held for one command at a time, so a
/// few per worker thread keep up with loopback Redis.
const POOL_SIZE: usize = 16;

pub fn build(redis_url: &str, timeout: Duration) -> Result<Pool, CreatePoolError> {
    let mut config = Config::from_url(redis_url);
    config.pool = Some(PoolConfig {
        max_size: POOL_SIZE,
        timeouts: Timeouts {
            wait: Some(timeout),
            create: Some(timeout),
            recycle: Some(timeout),
        },
        ..PoolConfig::default()
    });
    config.create_pool(Some(Runtime::Tokio1))
}

/// PING through the pool, bounded by `timeout`: the readiness check.
pub async fn ping(pool: &Pool, timeout: Duration) -> bool {
    let attempt = async {
        let mut connection = pool.get().await.ok()?;
        deadpool_redis::redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .ok()
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(_)))
}
