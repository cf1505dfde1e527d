//! A relay in front of a real Redis that can stop answering: all of it, or only the commands
//! that write.
//!
//! A Redis that is down refuses connections at once; a Redis behind a broken network, or
//! paused, accepts bytes and answers nothing, and that is what hangs a client without a
//! deadline of its own. Reads and writes take different code paths in the node (a `GETEX` on
//! a worker's connection, a `SET` or a script through the pool), so the relay can also let
//! reads through and hold a connection silent from the first write on it: then a request gets
//! past its session read and waits on its write. Likewise for the atomic counter's own key.
//!
//! cluster-kit's [`Relay`] does the relaying: silence for everything is its held cut, and the
//! command rules are its inspector.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use cluster_kit::{Cut, Relay, Verdict};

/// What the relay lets through.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Silence {
    Nothing = 0,
    Everything = 1,
    /// A connection goes silent, for good, when a write command is sent on it.
    Writes = 2,
    /// The same, for a command on an atomic counter's key (`...counter:...`),
    /// reads included: the session passes, the counter does not.
    CounterKeys = 3,
}

/// Commands the node's stores and counter write with, as RESP bulk strings.
const WRITE_COMMANDS: &[&[u8]] = &[
    b"\r\nSET\r\n",
    b"\r\nDEL\r\n",
    b"\r\nEXPIRE\r\n",
    b"\r\nEVALSHA\r\n",
    b"\r\nEVAL\r\n",
    b"\r\nSCRIPT\r\n",
    b"\r\nMULTI\r\n",
    b"\r\nINCR\r\n",
    b"\r\nINCRBY\r\n",
];

pub struct SilentRedis {
    relay: Relay,
    /// The command rule in force ([`Silence::Writes`] or [`Silence::CounterKeys`]), if any.
    rule: Arc<AtomicU8>,
}

impl SilentRedis {
    /// Relays to `upstream` (`127.0.0.1:<port>`), letting everything through.
    pub fn start(upstream: SocketAddr) -> SilentRedis {
        let rule = Arc::new(AtomicU8::new(Silence::Nothing as u8));
        let inspected = Arc::clone(&rule);
        let relay = Relay::start_inspecting(
            upstream,
            Arc::new(move |chunk: &[u8]| verdict(inspected.load(Ordering::SeqCst), chunk)),
        );
        SilentRedis { relay, rule }
    }

    pub fn url(&self) -> String {
        self.relay.redis_url()
    }

    pub fn set(&self, silence: Silence) {
        if silence == Silence::Everything {
            self.relay.cut(Cut::Hold);
        } else {
            self.rule.store(silence as u8, Ordering::SeqCst);
            self.relay.heal();
        }
    }
}

/// Whether a chunk sent to Redis under `rule` silences its connection.
fn verdict(rule: u8, chunk: &[u8]) -> Verdict {
    let silenced = if rule == Silence::Writes as u8 {
        is_write(chunk)
    } else if rule == Silence::CounterKeys as u8 {
        contains(chunk, b"counter:")
    } else {
        false
    };
    if silenced {
        Verdict::Silence
    } else {
        Verdict::Forward
    }
}

fn is_write(chunk: &[u8]) -> bool {
    let upper = chunk.to_ascii_uppercase();
    WRITE_COMMANDS
        .iter()
        .any(|command| contains(&upper, command))
}

fn contains(chunk: &[u8], needle: &[u8]) -> bool {
    chunk.windows(needle.len()).any(|window| window == needle)
}
