//! A TCP proxy that can silently stop forwarding: a network partition in a box.
//!
//! A Redis that is down refuses connections at once; a Redis behind a broken
//! network never answers at all, and that is the case that hangs naive
//! clients. `tc netem` needs root and iptables too, so the harness puts this
//! proxy between one node and Redis instead. While blackholed it neither
//! forwards nor closes anything: bytes wait, as they would for a cable that
//! was pulled, and flow again after [`Blackhole::heal`].

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Blackhole {
    listen: SocketAddr,
    cut: watch::Sender<bool>,
    acceptor: JoinHandle<()>,
}

impl Blackhole {
    /// Listens on a free loopback port and forwards each connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Blackhole> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let listen = listener.local_addr()?;
        let (cut, is_cut) = watch::channel(false);
        let acceptor = tokio::spawn(accept_loop(listener, upstream, is_cut));
        Ok(Blackhole {
            listen,
            cut,
            acceptor,
        })
    }

    /// `redis://127.0.0.1:<proxy port>`: what the node behind it is given.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.listen)
    }

    /// From now on nothing passes, in either direction.
    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }

    /// Traffic flows again, including whatever waited.
    pub fn heal(&self) {
        let _ = self.cut.send(false);
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        // Dropping `cut` ends the connections waiting on a cut link; the
        // others end when the node behind the proxy closes them.
        self.acceptor.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, is_cut: watch::Receiver<bool>) {
    while let Ok((client, _)) = listener.accept().await {
        let is_cut = is_cut.clone();
        tokio::spawn(async move {
            // A connection attempt during the cut hangs like a SYN into the void.
            let mut wait = is_cut.clone();
            if wait.wait_for(|cut| !cut).await.is_err() {
                return;
            }
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::select! {
                _ = pump(client_read, server_write, is_cut.clone()) => {}
                _ = pump(server_read, client_write, is_cut) => {}
            }
        });
    }
}

/// Copies one direction, holding every chunk back while the link is cut.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut is_cut: watch::Receiver<bool>) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if is_cut.wait_for(|cut| !cut).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 64];
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 || socket.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
        stream.write_all(b"ping").await.ok()?;
        let mut reply = [0u8; 4];
        tokio::time::timeout(limit, stream.read_exact(&mut reply))
            .await
            .ok()?
            .ok()?;
        Some(reply.to_vec())
    }

    #[tokio::test]
    async fn forwards_then_swallows_then_delivers_what_waited() {
        let proxy = Blackhole::start(echo_server().await).await.unwrap();
        let mut stream = TcpStream::connect(proxy.listen).await.unwrap();
        let limit = Duration::from_millis(300);
        assert_eq!(
            round_trip(&mut stream, limit).await.as_deref(),
            Some(&b"ping"[..])
        );

        proxy.cut();
        assert_eq!(
            round_trip(&mut stream, limit).await,
            None,
            "a cut link must not answer"
        );

        proxy.heal();
        // The bytes held back during the cut arrive now.
        let mut late = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut late))
            .await
            .expect("held bytes delivered after heal")
            .unwrap();
        assert_eq!(&late, b"ping");
        assert_eq!(
            round_trip(&mut stream, limit).await.as_deref(),
            Some(&b"ping"[..])
        );
    }
}
