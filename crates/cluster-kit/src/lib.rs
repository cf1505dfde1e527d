//! Start, stop and break the pieces of a cluster: processes, Redis, network links.
//!
//! The project's rule is "real components, no mocks": clusterctl runs real node, load-balancer
//! and Redis processes, and so does every test. Both need the same pieces, so they live here
//! once, with one implementation under two faces: functions that return `Result` for
//! clusterctl, which must report bad setup in one line, and short panicking conveniences for
//! tests, where a panic is the failure report.
//!
//! * [`free_port`] / [`try_free_port`] pick a loopback port nobody is listening on.
//! * [`ChildGuard`] owns a child process and kills it when dropped, so neither a failing
//!   assertion nor a harness error leaves a process behind; one started from a [`ChildSpec`]
//!   can be restarted.
//! * [`RedisServer`] runs a private `redis-server` that can be killed, wiped and restarted on
//!   the same port, with or without the append-only file ([`Persistence`]).
//! * [`SentinelTopology`] runs a primary, two replicas and three Sentinels, any of which can be
//!   killed, paused and restarted, and waits for what Sentinel does about it.
//! * [`Relay`] carries TCP connections and can cut them: held like a pulled cable, or dropped
//!   like a partition ([`Cut`]), or silenced by what a client sends.
//! * [`wait_for`] (blocking) and [`wait_until`] (async) poll with a deadline.
//! * [`workspace_bin`] finds a binary of another workspace crate in `target/`.

mod process;
mod redis_server;
mod relay;
mod sentinel_topology;
mod wait;

pub use process::{workspace_bin, ChildGuard, ChildSpec};
pub use redis_server::{Persistence, RedisServer};
pub use relay::{Cut, Inspector, Relay, Verdict};
pub use sentinel_topology::{
    Member, MinReplicas, RedisPrograms, SentinelOptions, SentinelTopology, MASTER_NAME,
};
pub use wait::{wait_for, wait_until};

use std::net::TcpListener;

use anyhow::Context;

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The OS picks it (bind to port 0), so parallel runs do not collide; the small window between
/// closing the probe socket and the real bind is accepted.
pub fn try_free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a free port")?;
    Ok(listener.local_addr()?.port())
}

/// [`try_free_port`] for tests: panics when no port can be bound.
pub fn free_port() -> u16 {
    try_free_port().unwrap_or_else(|e| panic!("{e:#}"))
}
