//! A TCP relay that can cut the link it carries: a network failure in a box.
//!
//! A process that is down refuses connections at once, and the kernel closes a killed
//! process's sockets for it; a host behind a broken network never answers at all, and that is
//! the case that hangs naive clients. `tc netem` and iptables need root, so clusterctl and the
//! tests put this relay between a client and the server instead and cut it in one of two ways
//! ([`Cut`]): a pulled cable whose bytes wait and flow again after [`Relay::heal`], or a
//! partition after which the far end has forgotten every connection that crossed it. Neither
//! closes anything while cut.
//!
//! A relay can also inspect what clients send ([`Relay::start_inspecting`]): a connection whose
//! bytes the inspector rejects falls silent for good, which lets a test stop a Redis client at
//! a given command. A test that must act on whole commands can take the client-to-server
//! direction over entirely ([`Relay::start_forwarding`]) and keep the rest of the plumbing.
//! The relay runs on a small tokio runtime of its own, in its own thread, so
//! synchronous tests, async tests and clusterctl use it alike; dropping the relay stops that
//! runtime and closes every connection it carried.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// How a cut link fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Nothing passes and new connections wait, as behind a pulled cable; after
    /// [`Relay::heal`] everything that waited is delivered.
    Hold,
    /// Bytes are swallowed, sockets stay open; after [`Relay::heal`] new connections work and
    /// every connection opened before stays cut, as if the far end had forgotten it.
    Drop,
}

/// What an inspector decides about bytes a client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    /// These bytes and everything after them, in both directions, never pass.
    Silence,
}

/// Looks at each chunk a client sends before it reaches the server.
pub type Inspector = Arc<dyn Fn(&[u8]) -> Verdict + Send + Sync>;

/// Carries one connection's client-to-server bytes in its own way (e.g. a whole command at a
/// time) instead of the relay's copy; it shuts the server side down when the client closes.
/// Cuts and inspectors do not apply to what it forwards.
pub type Forwarder = Arc<
    dyn Fn(OwnedReadHalf, OwnedWriteHalf) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync,
>;

/// Who carries the client-to-server direction.
enum ClientSide {
    Copy,
    Inspect(Inspector),
    Forward(Forwarder),
}

/// The state of the link every connection of one relay shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Open,
    Cut(Cut),
}

struct Shared {
    link: watch::Sender<Link>,
    /// Connections numbered below this stay cut for good (a healed [`Cut::Drop`]).
    dead_below: AtomicU64,
    next: AtomicU64,
    client_side: ClientSide,
}

pub struct Relay {
    listen: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Listens on a free loopback port and forwards each connection to `upstream`.
    pub fn try_start(upstream: SocketAddr) -> anyhow::Result<Relay> {
        Relay::launch(upstream, ClientSide::Copy)
    }

    /// [`Relay::try_start`] for tests: panics when the relay cannot start.
    pub fn start(upstream: SocketAddr) -> Relay {
        Relay::try_start(upstream).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// A relay whose client-to-server bytes pass `inspector` first; panics when it cannot start.
    pub fn start_inspecting(upstream: SocketAddr, inspector: Inspector) -> Relay {
        Relay::launch(upstream, ClientSide::Inspect(inspector)).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// A relay whose client-to-server bytes `forwarder` carries; panics when it cannot start.
    pub fn start_forwarding(upstream: SocketAddr, forwarder: Forwarder) -> Relay {
        Relay::launch(upstream, ClientSide::Forward(forwarder)).unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn launch(upstream: SocketAddr, client_side: ClientSide) -> anyhow::Result<Relay> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot build the relay's runtime")?;
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind the relay")?;
        listener.set_nonblocking(true)?;
        let listen = listener.local_addr()?;
        let shared = Arc::new(Shared {
            link: watch::Sender::new(Link::Open),
            dead_below: AtomicU64::new(0),
            next: AtomicU64::new(0),
            client_side,
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let accepting = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("relay {listen}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = accept_loop(listener, upstream, accepting) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime here ends every connection task and closes its sockets.
            })
            .context("cannot start the relay's thread")?;
        Ok(Relay {
            listen,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.listen
    }

    /// `redis://127.0.0.1:<relay port>`: what a Redis client behind the relay is given.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.listen)
    }

    /// From now on nothing passes, in either direction, on old connections or new ones.
    pub fn cut(&self, how: Cut) {
        self.shared.link.send_replace(Link::Cut(how));
    }

    /// Traffic flows again (see [`Cut`] for what happens to the connections of the cut).
    pub fn heal(&self) {
        if *self.shared.link.borrow() == Link::Cut(Cut::Drop) {
            let next = self.shared.next.load(Ordering::SeqCst);
            self.shared.dead_below.store(next, Ordering::SeqCst);
        }
        self.shared.link.send_replace(Link::Open);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        let connection = shared.next.fetch_add(1, Ordering::SeqCst);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            // A connection attempt behind a pulled cable hangs like a SYN into the void.
            let mut link = shared.link.subscribe();
            if link
                .wait_for(|link| *link != Link::Cut(Cut::Hold))
                .await
                .is_err()
            {
                return;
            }
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let silenced = Arc::new(AtomicBool::new(false));
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let to_server = Pump {
                shared: Arc::clone(&shared),
                connection,
                silenced: Arc::clone(&silenced),
                inspect: true,
            };
            let to_client = Pump {
                inspect: false,
                ..to_server.clone()
            };
            let client_side = async {
                match &shared.client_side {
                    ClientSide::Forward(forwarder) => forwarder(client_read, server_write).await,
                    ClientSide::Copy | ClientSide::Inspect(_) => {
                        to_server.run(client_read, server_write).await
                    }
                }
            };
            tokio::join!(client_side, to_client.run(server_read, client_write));
        });
    }
}

/// One direction of one connection.
#[derive(Clone)]
struct Pump {
    shared: Arc<Shared>,
    connection: u64,
    /// Set once the inspector silenced this connection; both directions honour it.
    silenced: Arc<AtomicBool>,
    /// Whether this direction (client to server) passes the inspector.
    inspect: bool,
}

impl Pump {
    /// Copies until the sender closes, passing its close on; a cut or silenced link swallows
    /// or holds each chunk instead.
    async fn run(self, mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) {
        let mut link = self.shared.link.subscribe();
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let read = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(read) => read,
            };
            // Held bytes wait here, in order, until the cable is back.
            let now = match link.wait_for(|link| *link != Link::Cut(Cut::Hold)).await {
                Ok(now) => *now,
                Err(_) => return,
            };
            if now == Link::Cut(Cut::Drop) || !self.passes(&buffer[..read]) {
                continue;
            }
            if to.write_all(&buffer[..read]).await.is_err() {
                return;
            }
        }
    }

    fn passes(&self, chunk: &[u8]) -> bool {
        if self.connection < self.shared.dead_below.load(Ordering::SeqCst) {
            return false;
        }
        if self.inspect {
            if let ClientSide::Inspect(inspector) = &self.shared.client_side {
                if inspector(chunk) == Verdict::Silence {
                    self.silenced.store(true, Ordering::SeqCst);
                }
            }
        }
        !self.silenced.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;
    use std::time::Duration;

    /// An echo server on a plain thread, for as long as the test runs.
    fn echo_server() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut socket in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 64];
                    while let Ok(n) = socket.read(&mut buffer) {
                        if n == 0 || socket.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Long enough for an answer on a busy machine.
    const ANSWER: Duration = Duration::from_secs(5);
    /// Long enough to call a link silent: a cut link's silence is not a matter of time.
    const SILENCE: Duration = Duration::from_millis(300);

    fn connect(relay: &Relay) -> StdStream {
        StdStream::connect(relay.address()).unwrap()
    }

    fn round_trip(stream: &mut StdStream, limit: Duration) -> Option<Vec<u8>> {
        stream.set_read_timeout(Some(limit)).ok()?;
        stream.write_all(b"ping").ok()?;
        let mut reply = [0u8; 4];
        stream.read_exact(&mut reply).ok()?;
        Some(reply.to_vec())
    }

    #[test]
    fn a_held_cut_delivers_what_waited_after_heal() {
        let relay = Relay::start(echo_server());
        let mut stream = connect(&relay);
        assert_eq!(
            round_trip(&mut stream, ANSWER).as_deref(),
            Some(&b"ping"[..])
        );

        relay.cut(Cut::Hold);
        assert_eq!(
            round_trip(&mut stream, SILENCE),
            None,
            "a cut link must not answer"
        );

        relay.heal();
        stream.set_read_timeout(Some(ANSWER)).unwrap();
        let mut late = [0u8; 4];
        stream
            .read_exact(&mut late)
            .expect("held bytes delivered after heal");
        assert_eq!(&late, b"ping");
        assert_eq!(
            round_trip(&mut stream, ANSWER).as_deref(),
            Some(&b"ping"[..])
        );
    }

    #[test]
    fn a_dropped_cut_forgets_old_connections_but_serves_new_ones() {
        let relay = Relay::start(echo_server());
        let mut old = connect(&relay);
        assert_eq!(round_trip(&mut old, ANSWER).as_deref(), Some(&b"ping"[..]));

        relay.cut(Cut::Drop);
        assert_eq!(
            round_trip(&mut old, SILENCE),
            None,
            "a cut link must not answer"
        );

        relay.heal();
        let mut new = connect(&relay);
        assert_eq!(round_trip(&mut new, ANSWER).as_deref(), Some(&b"ping"[..]));
        assert_eq!(
            round_trip(&mut old, SILENCE),
            None,
            "a connection from before the cut stays dead"
        );
    }

    #[test]
    fn an_inspector_silences_a_connection_for_good() {
        let inspector: Inspector = Arc::new(|chunk: &[u8]| {
            if chunk.starts_with(b"stop") {
                Verdict::Silence
            } else {
                Verdict::Forward
            }
        });
        let relay = Relay::start_inspecting(echo_server(), inspector);
        let mut silenced = connect(&relay);
        assert_eq!(
            round_trip(&mut silenced, ANSWER).as_deref(),
            Some(&b"ping"[..])
        );
        silenced.write_all(b"stop").unwrap();
        assert_eq!(round_trip(&mut silenced, SILENCE), None);

        let mut other = connect(&relay);
        assert_eq!(
            round_trip(&mut other, ANSWER).as_deref(),
            Some(&b"ping"[..])
        );
    }
}
