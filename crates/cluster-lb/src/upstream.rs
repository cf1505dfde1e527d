//! Connections to the backends: a keep-alive pool per proxy worker, on hyper's
//! connection-level HTTP/1 client.
//!
//! A request first tries the backend's most recently used idle connection; one that has been
//! idle longer than the idle timeout, or that the backend closed, is dropped on the way. A
//! request that could not even be written on a pooled connection (it closed a moment before)
//! goes on to the next one, then to a new connection; when no connection can be opened the
//! request comes back unsent ([`Failed::unsent`]), so a streamed body can still go elsewhere.
//! A connection returns to the pool when its response body has been read to the end and
//! [`reusable_after`] its response says the backend keeps it open; one abandoned halfway is
//! closed. A connection the backend may be closing must never be lent again: the next request
//! on it would fail, and that failure, caused by whatever the previous client sent, would look
//! like the backend's.
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
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{self, HeaderMap};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::backend::Backend;
use crate::streamed_body::StreamedBody;

/// A request body on its way to a backend: a copy of a buffered one, or the client's stream.
pub type UpstreamBody = Either<Full<Bytes>, StreamedBody>;

type Sender = SendRequest<UpstreamBody>;

/// Why an attempt on a backend failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be opened: nothing was sent.
    Connect(io::Error),
    /// The connection broke after the request was (maybe) written. `reused`: it had carried
    /// an earlier exchange (came from the pool) rather than being opened for this request.
    Lost { error: hyper::Error, reused: bool },
}

impl UpstreamError {
    pub fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect(_))
    }

    /// Did the attempt fail on a connection taken from the pool?
    pub fn on_reused_connection(&self) -> bool {
        matches!(self, UpstreamError::Lost { reused: true, .. })
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Connect(_) => f.write_str("cannot connect"),
            UpstreamError::Lost { reused: true, .. } => f.write_str("pooled connection lost"),
            UpstreamError::Lost { reused: false, .. } => f.write_str("connection lost"),
        }
    }
}

/// An attempt that failed, with its request when not a byte of it was written (no connection
/// could be opened): a streamed body is still whole and may go elsewhere.
pub struct Failed {
    pub error: UpstreamError,
    pub unsent: Option<Request<UpstreamBody>>,
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpstreamError::Connect(e) => Some(e),
            UpstreamError::Lost { error, .. } => Some(error),
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
    /// Call only once [`reusable_after`] said yes for the response read on it.
    pub fn give_back(mut self) {
        if self.connection.sender.is_closed() {
            return;
        }
        self.connection.idle_since = Instant::now();
        self.pool.put(self.backend, self.connection);
    }
}

/// May the connection carry another request after this response? Not when the backend said it
/// closes it (`Connection: close`, or HTTP/1.0 without `keep-alive`), and not after an upgrade
/// that was offered and did not happen: a server may close such a connection after answering
/// without saying so (actix-web does), and after a `101` the connection is the tunnel's.
pub fn reusable_after(
    upgrade_offered: bool,
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
) -> bool {
    if upgrade_offered || status == StatusCode::SWITCHING_PROTOCOLS {
        return false;
    }
    let says = |token: &str| {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|listed| listed.trim().eq_ignore_ascii_case(token))
    };
    if says("close") {
        return false;
    }
    version >= Version::HTTP_11 || says("keep-alive")
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

    /// Sends `request` (origin-form URI, `Host` set) to `backend`, on a pooled connection if
    /// `may_reuse` and one is idle, else on a new one.
    pub async fn send(
        &self,
        backend: &Backend,
        mut request: Request<UpstreamBody>,
        may_reuse: bool,
    ) -> Result<(Response<Incoming>, Lease), Failed> {
        while let Some(mut idle) = may_reuse.then(|| self.pool.take(backend)).flatten() {
            if idle.sender.ready().await.is_err() {
                continue;
            }
            match idle.sender.try_send_request(request).await {
                Ok(response) => return Ok((response, self.lease(backend, idle))),
                Err(mut failed) => match failed.take_message() {
                    // Closed before a byte was written: the next connection may take it.
                    Some(unsent) => request = unsent,
                    None => {
                        return Err(Failed {
                            error: UpstreamError::Lost {
                                error: failed.into_error(),
                                reused: true,
                            },
                            unsent: None,
                        })
                    }
                },
            }
        }
        let mut fresh = match self.connect(backend).await {
            Ok(fresh) => fresh,
            Err(error) => {
                return Err(Failed {
                    error,
                    unsent: Some(request),
                })
            }
        };
        match fresh.sender.send_request(request).await {
            Ok(response) => Ok((response, self.lease(backend, fresh))),
            Err(error) => Err(Failed {
                error: UpstreamError::Lost {
                    error,
                    reused: false,
                },
                unsent: None,
            }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn connection(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn only_a_connection_the_backend_keeps_open_is_reused() {
        let ok = StatusCode::OK;
        let none = HeaderMap::new();
        assert!(reusable_after(false, ok, Version::HTTP_11, &none));
        assert!(reusable_after(
            false,
            ok,
            Version::HTTP_11,
            &connection("keep-alive")
        ));
        assert!(!reusable_after(
            false,
            ok,
            Version::HTTP_11,
            &connection("Close")
        ));
        assert!(!reusable_after(
            false,
            ok,
            Version::HTTP_11,
            &connection("x-a, close")
        ));
        assert!(!reusable_after(false, ok, Version::HTTP_10, &none));
        assert!(reusable_after(
            false,
            ok,
            Version::HTTP_10,
            &connection("Keep-Alive")
        ));
        assert!(
            !reusable_after(true, ok, Version::HTTP_11, &none),
            "upgrade refused"
        );
        let switching = StatusCode::SWITCHING_PROTOCOLS;
        assert!(!reusable_after(true, switching, Version::HTTP_11, &none));
    }
}
