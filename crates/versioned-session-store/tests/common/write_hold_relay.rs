//! A TCP relay between a store and Redis that lets reads through and holds the first write.
//!
//! A compare-and-set is only safe if no other client's write can land between its check
//! and its write. Calling the store from two tasks makes such an interleaving likely at
//! best; to make it certain, the test routes one writer's connection through this relay.
//! Once armed with [`WriteHoldRelay::hold_next_write`], the relay reads the RESP commands
//! the client sends, forwards the ones that only read (a check of the version gets its
//! answer), and stops at the first command that may write (`EVALSHA`, `HSET`, `MULTI`, …)
//! until the test calls [`WriteHoldRelay::release`]. In between, the test runs the other
//! writer straight against Redis. An atomic compare-and-set sends its check and its write as
//! one command, so the relay holds the check too and the other writer lands before it.
//!
//! cluster-kit's [`Relay`] does the relaying; this module only forwards the client's side a
//! whole command at a time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cluster_kit::Relay;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

/// Commands that change no data, so an armed relay forwards them: the reads a store may
/// do before its write, and what the pool sends to check a connection (`UNWATCH` + `PING`).
/// Any other command counts as a write.
const READ_ONLY_COMMANDS: &[&str] = &[
    "GET", "HGET", "HMGET", "HGETALL", "EXISTS", "TTL", "PTTL", "TYPE", "WATCH", "UNWATCH", "PING",
];

pub struct WriteHoldRelay {
    relay: Relay,
    hold: Arc<Hold>,
}

#[derive(Default)]
struct Hold {
    armed: AtomicBool,
    held: Notify,
    release: Notify,
}

impl WriteHoldRelay {
    /// A relay on a free loopback port to the Redis at `redis_port`, forwarding everything
    /// until armed.
    pub fn start(redis_port: u16) -> WriteHoldRelay {
        let hold = Arc::new(Hold::default());
        let forwarding = Arc::clone(&hold);
        let relay = Relay::start_forwarding(
            SocketAddr::from(([127, 0, 0, 1], redis_port)),
            Arc::new(move |from_client, to_redis| {
                Box::pin(forward_commands(
                    from_client,
                    to_redis,
                    Arc::clone(&forwarding),
                ))
            }),
        );
        WriteHoldRelay { relay, hold }
    }

    /// `redis://` URL of the relay, for the writer to be held.
    pub fn url(&self) -> String {
        self.relay.redis_url()
    }

    /// The next command that may write, on any connection, is held until [`Self::release`].
    pub fn hold_next_write(&self) {
        self.hold.armed.store(true, Ordering::SeqCst);
    }

    /// Returns once a write is being held (at once if one already is).
    pub async fn write_held(&self) {
        self.hold.held.notified().await;
    }

    /// Lets the held write (or the next one to be held) through.
    pub fn release(&self) {
        self.hold.release.notify_one();
    }
}

/// Copies commands from the client to Redis one whole command at a time, so that a held
/// write goes nowhere while the reads before it have already been answered.
async fn forward_commands(
    mut from_client: impl tokio::io::AsyncRead + Unpin,
    mut to_redis: impl tokio::io::AsyncWrite + Unpin,
    hold: Arc<Hold>,
) {
    let mut pending = Vec::new();
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        match from_client.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                let _ = to_redis.shutdown().await;
                return;
            }
            Ok(n) => pending.extend_from_slice(&buffer[..n]),
        }
        while let Some(command) = next_command(&pending) {
            if !is_read_only(command.name) && hold.armed.swap(false, Ordering::SeqCst) {
                hold.held.notify_one();
                hold.release.notified().await;
            }
            let length = command.length;
            if to_redis.write_all(&pending[..length]).await.is_err() {
                return;
            }
            pending.drain(..length);
        }
    }
}

fn is_read_only(name: &[u8]) -> bool {
    READ_ONLY_COMMANDS
        .iter()
        .any(|read| read.as_bytes().eq_ignore_ascii_case(name))
}

/// The first complete command in `bytes`: its name and how many bytes it takes.
struct Command<'a> {
    name: &'a [u8],
    length: usize,
}

/// Parses one RESP command, an array of bulk strings (all a Redis client sends); `None`
/// while it is incomplete.
fn next_command(bytes: &[u8]) -> Option<Command<'_>> {
    let (count, mut at) = header(bytes, 0, b'*')?;
    let mut name: &[u8] = &[];
    for index in 0..count {
        let (length, start) = header(bytes, at, b'$')?;
        let end = start + length;
        if bytes.len() < end + 2 {
            return None;
        }
        if index == 0 {
            name = &bytes[start..end];
        }
        at = end + 2;
    }
    Some(Command { name, length: at })
}

/// Reads `<marker><number>\r\n` at `at`: the number and where the line ends.
fn header(bytes: &[u8], at: usize, marker: u8) -> Option<(usize, usize)> {
    let rest = bytes.get(at..)?;
    let first = *rest.first()?;
    assert_eq!(
        first,
        marker,
        "the relay expects RESP arrays of bulk strings, got {:?}",
        String::from_utf8_lossy(&rest[..rest.len().min(32)])
    );
    let line_end = rest.windows(2).position(|pair| pair == b"\r\n")?;
    let number = std::str::from_utf8(&rest[1..line_end]).ok()?.parse().ok()?;
    Some((number, at + line_end + 2))
}
