//! The Redis every node shares: a private `redis-server`, or one given by URL.
//!
//! The private server (cluster-kit's [`RedisServer`]) lives on a free port in the cluster's
//! work directory, so scenarios can SIGKILL it and start it again on the same port, with or
//! without the append-only file, and watch what happens to the sessions. An external Redis
//! only has a URL, and the scenarios that break Redis skip it.

use cluster_kit::RedisServer;

pub enum Redis {
    /// Boxed: a server's bookkeeping is much larger than a URL.
    Managed(Box<RedisServer>),
    External(String),
}

impl Redis {
    pub fn url(&self) -> String {
        match self {
            Redis::Managed(managed) => managed.url(),
            Redis::External(url) => url.clone(),
        }
    }

    /// The private server, when there is one (fault scenarios need it).
    pub fn managed(&mut self) -> Option<&mut RedisServer> {
        match self {
            Redis::Managed(managed) => Some(managed.as_mut()),
            Redis::External(_) => None,
        }
    }
}
