//! [`ConnectionPool`]: where the store and the counter take their Redis connections from.
//!
//! Both borrow one connection per operation from a pool. For one Redis at a fixed address that
//! pool is deadpool-redis's `Pool`, which is what [`crate::VersionedRedisStore::new`] and
//! [`crate::AtomicCounter::new`] take unless told otherwise: copy the crate, pass your pool,
//! nothing else to know. An application whose Redis primary moves (found through Sentinel, say)
//! has a pool of its own that follows it, and plugs it in by implementing this trait.

use std::future::Future;

/// Hands out a connection to the Redis that takes the writes, one operation at a time.
pub trait ConnectionPool: Clone {
    type Connection: redis::aio::ConnectionLike;
    type Error: std::error::Error + Send + Sync + 'static;

    /// A connection for one operation; it goes back to the pool when dropped.
    fn connection(&self) -> impl Future<Output = Result<Self::Connection, Self::Error>>;
}

impl ConnectionPool for deadpool_redis::Pool {
    type Connection = deadpool_redis::Connection;
    type Error = deadpool_redis::PoolError;

    fn connection(&self) -> impl Future<Output = Result<Self::Connection, Self::Error>> {
        self.get()
    }
}
