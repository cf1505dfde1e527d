//! Connections to the backends: a keep-alive pool per proxy worker, on hyper's
//! connection-level HTTP/1 client.
//!
//! A request first tries the backend's most recently used idle connection; one that has been
//! idle longer than the idle timeout, or that the backend closed, is dropped on the way. A
//! request that could not even be written on a pooled connection (it closed a moment before)
//! goes on to the next one, then to a new connection. A connection returns to the pool when its
//! response body has been read to the end; one abandoned halfway is closed.
//!
//! Why not hyper-util's pooled `Client`, which does the same:
//! * It cannot be told that a backend went down. Every connection here remembers the backend's
//!   *generation* (bumped each time it is marked down) and is never reused once the backend has
//!   been down since: a connection to a process that died is not tried against its successor.
//! * It costs: per request it hashes a pool key of scheme + authority, turns the URI into origin
//!   form and wraps the connection in several layers, about 8 % of the proxy's user CPU in a
//!   profile (BENCHMARKS.md). Here the pool is keyed by the backend's serial number.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::backend::Backend;

type Sender = SendRequest<Full<Bytes>>;

/// Why an attempt on a backend failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be opened: nothing was sent.
    Connect(io::Error),
    /// The connection broke after the request was (maybe) written.
    Lost(hyper::Error),
}

impl UpstreamError {
    pub fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect(_))
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Connect(_) => f.write_str("cannot connect"),
            UpstreamError::Lost(_) => f.write_str("connection lost"),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpstreamError::Connect(e) => Some(e),
            UpstreamError::Lost(e) => Some(e),
        }
    }
}

/// The pool of one proxy worker.
pub struct Upstream {
    pool: Arc<Pool>,
    connect_timeout: Duration,
}

struct Pool {
    idle_timeout: Duration,
    state: Mutex<PoolState>,
}

struct PoolState {
    /// Idle connections by backend serial number; the most recently used last.
    idle: HashMap<u64, Vec<IdleConnection>>,
    swept_at: Instant,
}

struct IdleConnection {
    sender: Sender,
    /// The backend's generation when the connection was opened.
    generation: u64,
    idle_since: Instant,
}

/// A connection lent to one request. [`Lease::give_back`] returns it to the pool once the
/// response has been read to the end; dropping the lease closes it.
pub struct Lease {
    pool: Arc<Pool>,
    backend: u64,
    connection: IdleConnection,
}

impl Lease {
    pub fn give_back(mut self) {
        self.connection.idle_since = Instant::now();
        self.pool.put(self.backend, self.connection);
    }
}

impl Upstream {
    /// `idle_timeout` must stay below the backends' keep-alive timeout, so the proxy never sends
    /// on a connection the backend is closing.
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Upstream {
        Upstream {
            pool: Arc::new(Pool {
                idle_timeout,
                state: Mutex::new(PoolState {
                    idle: HashMap::new(),
                    swept_at: Instant::now(),
                }),
            }),
            connect_timeout,
        }
    }

    /// Sends `request` (origin-form URI, `Host` set) to `backend`.
    pub async fn send(
        &self,
        backend: &Backend,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        while let Some(mut idle) = self.pool.take(backend) {
            if idle.sender.ready().await.is_err() {
                continue;
            }
            match idle.sender.try_send_request(request).await {
                Ok(response) => return Ok((response, self.lease(backend, idle))),
                Err(mut failed) => match failed.take_message() {
                    // Closed before a byte was written: the next connection may take it.
                    Some(unsent) => request = unsent,
                    None => return Err(UpstreamError::Lost(failed.into_error())),
                },
            }
        }
        let mut fresh = self.connect(backend).await?;
        match fresh.sender.send_request(request).await {
            Ok(response) => Ok((response, self.lease(backend, fresh))),
            Err(e) => Err(UpstreamError::Lost(e)),
        }
    }

    fn lease(&self, backend: &Backend, connection: IdleConnection) -> Lease {
        Lease {
            pool: Arc::clone(&self.pool),
            backend: backend.serial(),
            connection,
        }
    }

    async fn connect(&self, backend: &Backend) -> Result<IdleConnection, UpstreamError> {
        // Read first: if the backend goes down while this connects, the connection is old news.
        let generation = backend.generation();
        let authority = backend.address().authority();
        // IPv6 literals come bracketed in an authority; the resolver wants them bare.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| {
                UpstreamError::Connect(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection within {:?}", self.connect_timeout),
                ))
            })?
            .map_err(UpstreamError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Connect(io::Error::other(e)))?;
        let backend_id = backend.id().to_string();
        tokio::spawn(async move {
            // Upgrades: a 101 hands the connection over to the tunnel instead of ending it.
            if let Err(e) = connection.with_upgrades().await {
                log::debug!("connection to backend {backend_id}: {e}");
            }
        });
        Ok(IdleConnection {
            sender,
            generation,
            idle_since: Instant::now(),
        })
    }
}

impl Pool {
    /// The backend's most recently used connection that is still worth trying.
    fn take(&self, backend: &Backend) -> Option<IdleConnection> {
        let generation = backend.generation();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let list = state.idle.get_mut(&backend.serial())?;
        while let Some(idle) = list.pop() {
            if self.reusable(&idle) && idle.generation == generation {
                return Some(idle);
            }
        }
        None
    }

    fn put(&self, backend: u64, connection: IdleConnection) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.idle.entry(backend).or_default().push(connection);
        // Now and then, close what nobody will reuse (backends gone quiet or removed).
        if state.swept_at.elapsed() >= self.idle_timeout {
            state.swept_at = Instant::now();
            state.idle.retain(|_, list| {
                list.retain(|idle| self.reusable(idle));
                !list.is_empty()
            });
        }
    }

    fn reusable(&self, idle: &IdleConnection) -> bool {
        idle.idle_since.elapsed() < self.idle_timeout && !idle.sender.is_closed()
    }
}
