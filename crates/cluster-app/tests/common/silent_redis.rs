//! A TCP relay in front of a real Redis that can stop answering: all of it,
//! or only the commands that write.
//!
//! A Redis that is down refuses connections at once; a Redis behind a broken
//! network, or paused, accepts bytes and answers nothing, and that is what
//! hangs a client without a deadline of its own. Reads and writes take
//! different code paths in the node (a `GETEX` on a worker's connection, a
//! `SET` or a script through the pool), so the relay can also let reads
//! through and hold a connection silent from the first write on it: then a
//! request gets past its session read and waits on its write. Likewise for
//! the atomic counter's own key. Likewise for
//! the atomic counter's own key.
//!
//! While silent nothing is forwarded and nothing is closed: bytes wait, as
//! they would behind a pulled cable. Plain threads with short read timeouts,
//! all stopped and joined on drop.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

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

const POLL: Duration = Duration::from_millis(20);

struct Shared {
    silence: AtomicU8,
    stop: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn silence(&self) -> Silence {
        match self.silence.load(Ordering::SeqCst) {
            1 => Silence::Everything,
            2 => Silence::Writes,
            3 => Silence::CounterKeys,
            _ => Silence::Nothing,
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

pub struct SilentRedis {
    listen: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl SilentRedis {
    /// Relays to `upstream` (`127.0.0.1:<port>`), letting everything through.
    pub fn start(upstream: SocketAddr) -> SilentRedis {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        listener.set_nonblocking(true).expect("non-blocking accept");
        let listen = listener.local_addr().expect("relay address");
        let shared = Arc::new(Shared {
            silence: AtomicU8::new(Silence::Nothing as u8),
            stop: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || accept(listener, upstream, shared))
        };
        SilentRedis {
            listen,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.listen)
    }

    pub fn set(&self, silence: Silence) {
        self.shared.silence.store(silence as u8, Ordering::SeqCst);
    }
}

impl Drop for SilentRedis {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn accept(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    while !shared.stopped() {
        match listener.accept() {
            Ok((client, _)) => {
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let held = Arc::new(AtomicBool::new(false));
                let pumps = [
                    pump(&client, &server, Direction::ToRedis, &held, &shared),
                    pump(&server, &client, Direction::ToClient, &held, &shared),
                ];
                shared
                    .threads
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .extend(pumps.into_iter().flatten());
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToRedis,
    ToClient,
}

/// Copies `from` to `to` until either closes or the relay stops; once the
/// connection is `held` nothing more is copied.
fn pump(
    from: &TcpStream,
    to: &TcpStream,
    direction: Direction,
    held: &Arc<AtomicBool>,
    shared: &Arc<Shared>,
) -> Option<JoinHandle<()>> {
    let mut from = from.try_clone().ok()?;
    let mut to = to.try_clone().ok()?;
    from.set_read_timeout(Some(POLL)).ok()?;
    let (held, shared) = (Arc::clone(held), Arc::clone(shared));
    Some(std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        while !shared.stopped() {
            if held.load(Ordering::SeqCst) || shared.silence() == Silence::Everything {
                std::thread::sleep(POLL);
                continue;
            }
            let read = match from.read(&mut buffer) {
                Ok(0) => return,
                Ok(read) => read,
                Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue
                }
                Err(_) => return,
            };
            let chunk = &buffer[..read];
            let silenced = match shared.silence() {
                Silence::Nothing => false,
                Silence::Everything => true,
                Silence::Writes => direction == Direction::ToRedis && is_write(chunk),
                Silence::CounterKeys => {
                    direction == Direction::ToRedis && contains(chunk, b"counter:")
                }
            };
            if silenced {
                held.store(true, Ordering::SeqCst);
                continue;
            }
            if to.write_all(chunk).is_err() {
                return;
            }
        }
    }))
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
