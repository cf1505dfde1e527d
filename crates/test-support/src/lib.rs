//! Helpers shared by the integration tests of every crate in the workspace.
//!
//! The project's rule is "real components, no mocks": tests talk to a real
//! `redis-server` and to real node / load-balancer processes. This crate makes
//! that cheap and safe:
//!
//! * [`free_port`] picks a loopback port nobody is listening on.
//! * [`RedisServer`] starts a private `redis-server` on such a port, and can
//!   kill and restart it on the same port (the failure tests need that).
//! * [`ChildGuard`] owns a child process and kills it when dropped, so a failing
//!   assertion never leaves a process behind.
//! * [`workspace_bin`] finds a binary of another workspace crate in `target/`.

mod process;
mod redis_server;

pub use process::{workspace_bin, ChildGuard};
pub use redis_server::RedisServer;

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The OS picks it (bind to port 0), so parallel tests do not collide; the small
/// window between closing the probe socket and the real bind is accepted.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port on 127.0.0.1");
    listener
        .local_addr()
        .expect("local address of a bound socket")
        .port()
}

/// Polls `check` every 10 ms until it returns `Some`, or gives up after `limit`.
pub fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
