//! The Redis every node shares: a private `redis-server`, a private Sentinel topology, or one
//! given by URL.
//!
//! The private server (cluster-kit's [`RedisServer`]) lives on a free port in the cluster's
//! work directory, so scenarios can SIGKILL it and start it again on the same port, with or
//! without the append-only file, and watch what happens to the sessions. The Sentinel topology
//! (cluster-kit's [`SentinelTopology`]: a primary, two replicas, three sentinels) is there so
//! scenarios can kill or pause the primary and watch Sentinel replace it. An external Redis
//! only has a URL, and the scenarios that break Redis skip it.

use cluster_kit::{RedisServer, SentinelTopology};

pub enum Redis {
    /// Boxed: a server's bookkeeping is much larger than a URL.
    Managed(Box<RedisServer>),
    Sentinel(Box<SentinelTopology>),
    External(String),
}

/// How a node is told where Redis is: `REDIS_URL`, or `REDIS_SENTINELS` and
/// `REDIS_SENTINEL_MASTER`.
#[derive(Debug, Clone)]
pub enum RedisAddress {
    Url(String),
    Sentinels { sentinels: String, master: String },
}

impl Redis {
    pub fn address(&self) -> RedisAddress {
        match self {
            Redis::Managed(managed) => RedisAddress::Url(managed.url()),
            Redis::Sentinel(topology) => RedisAddress::Sentinels {
                sentinels: topology.sentinels_env(),
                master: topology.master_name().to_string(),
            },
            Redis::External(url) => RedisAddress::Url(url.clone()),
        }
    }

    /// One line per Redis process (or the URL), for people.
    pub fn describe(&self) -> Vec<String> {
        match self {
            Redis::Managed(managed) => vec![format!("redis          {}", managed.url())],
            Redis::External(url) => vec![format!("redis          {url} (not started here)")],
            Redis::Sentinel(topology) => {
                let primary = topology.primary();
                topology
                    .members()
                    .into_iter()
                    .map(|(member, port)| {
                        let pid = topology
                            .pid(member)
                            .map_or_else(|| "-".to_string(), |pid| pid.to_string());
                        let role = match member {
                            cluster_kit::Member::Redis(index) if Some(index) == primary => {
                                format!("redis{index} primary")
                            }
                            cluster_kit::Member::Redis(index) => format!("redis{index} replica"),
                            cluster_kit::Member::Sentinel(index) => format!("sentinel{index}"),
                        };
                        format!("{role:<14} 127.0.0.1:{port} pid {pid}")
                    })
                    .collect()
            }
        }
    }

    /// The private server, when there is one (fault scenarios need it).
    pub fn managed(&mut self) -> Option<&mut RedisServer> {
        match self {
            Redis::Managed(managed) => Some(managed.as_mut()),
            _ => None,
        }
    }

    /// The private Sentinel topology, when there is one (failover scenarios need it).
    pub fn sentinel(&mut self) -> Option<&mut SentinelTopology> {
        match self {
            Redis::Sentinel(topology) => Some(topology.as_mut()),
            _ => None,
        }
    }
}
