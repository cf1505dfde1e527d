//! Accepting connections and serving HTTP/1.1 on them: a deadline for every request head, a cap
//! on open connections, and graceful shutdown.
//!
//! Both listeners (proxy and admin) use this loop. It serves with hyper's own HTTP/1 connection
//! rather than hyper-util's protocol-sniffing `auto` builder: the header read timeout then
//! starts the moment a connection is accepted, so a client that sends nothing, a lone `P` or
//! half an HTTP/2 preface is closed after the client timeout like any slow head (the sniffing
//! step had no deadline at all), and the same timeout bounds the idle time between two requests
//! on a keep-alive connection. HTTP/2 prior knowledge is refused: hyper's HTTP/1 parser closes
//! a connection that opens with the HTTP/2 preface.
//!
//! Each listener serves at most `max_connections` at once. Beyond that a new connection is
//! accepted and closed at once, so the client learns immediately instead of waiting in the
//! kernel's backlog, and the open connections are served as before; refusals are counted in
//! `lb_connections_refused_total` and logged at most once a second. A failed accept (e.g. out
//! of file descriptors) is counted and backed off, never spun on. A connection upgraded to a
//! WebSocket tunnel leaves this count once the upgrade is done (the tunnel is `upgrade.rs`'s).
//!
//! On shutdown it stops accepting at once (the listening socket is closed, so new connections
//! are refused), asks every open connection to finish the request it is serving and close, and
//! waits for that up to a grace period. Idle keep-alive connections close immediately.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{IntCounter, IntGauge};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::body::ProxyBody;
use crate::metrics::Metrics;

/// A pause after a failed accept: the usual cause (no file descriptors left) does not clear
/// by retrying at once.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How one listener treats its connections.
#[derive(Clone)]
pub struct Listener {
    /// `proxy` or `admin`: the label of this listener's metrics and the name in its logs.
    pub name: &'static str,
    /// Longest wait for a request head, counted from the accept or from the previous response.
    pub client_timeout: Duration,
    /// Connections served at once by this listener (shared by all the workers accepting on it).
    pub slots: Arc<Semaphore>,
}

impl Listener {
    pub fn new(name: &'static str, client_timeout: Duration, max_connections: usize) -> Listener {
        Listener {
            name,
            client_timeout,
            slots: Arc::new(Semaphore::new(max_connections)),
        }
    }

    /// HTTP/1.1 server settings.
    fn http1(&self) -> http1::Builder {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            // Covers the first head (from the accept on), a slow head and an idle keep-alive.
            .header_read_timeout(self.client_timeout)
            // Backstop for heads far over the proxy's own (JSON) 431 limit; hyper answers a bare
            // 431. Its header *count* limit stays at the default 100, parsed on the stack.
            .max_buf_size(64 * 1024);
        builder
    }
}

/// This listener's series in `/metrics`, looked up once.
struct ListenerMetrics {
    open: IntGauge,
    refused: IntCounter,
    accept_errors: IntCounter,
}

impl ListenerMetrics {
    fn new(metrics: &Metrics, name: &str) -> ListenerMetrics {
        ListenerMetrics {
            open: metrics.connections_open.with_label_values(&[name]),
            refused: metrics.connections_refused.with_label_values(&[name]),
            accept_errors: metrics.accept_errors.with_label_values(&[name]),
        }
    }
}

/// Everything an open connection holds until it closes: its slot under the cap, its place in
/// the open-connections gauge and in the shutdown drain.
struct OpenConnection {
    _slot: OwnedSemaphorePermit,
    open: IntGauge,
    _drain: mpsc::Sender<Infallible>,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Logs a repeated warning at most once per interval, so a flood cannot flood the log too.
struct RateLimitedLog {
    started: Instant,
    next_at_ms: AtomicU64,
    interval: Duration,
}

impl RateLimitedLog {
    fn new(interval: Duration) -> RateLimitedLog {
        RateLimitedLog {
            started: Instant::now(),
            next_at_ms: AtomicU64::new(0),
            interval,
        }
    }

    fn warn(&self, message: impl FnOnce() -> String) {
        let now_ms = self.started.elapsed().as_millis() as u64;
        let next_at = self.next_at_ms.load(Ordering::Relaxed);
        if now_ms >= next_at
            && self
                .next_at_ms
                .compare_exchange(
                    next_at,
                    now_ms + self.interval.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            log::warn!("{}", message());
        }
    }
}

/// Serves connections from `listener` with `handler` until `shutdown` resolves, then drains
/// in-flight requests for at most `grace`.
pub async fn serve<H, F>(
    listener: TcpListener,
    settings: Listener,
    metrics: &Metrics,
    handler: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let name = settings.name;
    let http = settings.http1();
    let counters = ListenerMetrics::new(metrics, name);
    let refusals = RateLimitedLog::new(Duration::from_secs(1));
    let accept_failures = RateLimitedLog::new(Duration::from_secs(1));
    let (closing, closing_seen) = watch::channel(false);
    // Every connection task holds a sender; the receiver sees the end once all have closed.
    let (drain, mut drained) = mpsc::channel::<Infallible>(1);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(e) => {
                    counters.accept_errors.inc();
                    accept_failures.warn(|| format!("{name}: accept failed: {e}"));
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&settings.slots).try_acquire_owned() else {
            counters.refused.inc();
            refusals.warn(|| {
                format!("{name}: connection limit reached; closing new connections at once")
            });
            drop(stream);
            continue;
        };
        counters.open.inc();
        let open = OpenConnection {
            _slot: slot,
            open: counters.open.clone(),
            _drain: drain.clone(),
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |request| {
            let response = handler(request, peer);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let closing = closing_seen.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = closing_requested(closing) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                log::debug!("{name}: connection from {peer}: {e}");
            }
            drop(open);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    drop(drain);
    if tokio::time::timeout(grace, drained.recv()).await.is_err() {
        log::warn!("shutdown: {name} requests still running after {grace:?}; closing anyway");
    }
}

async fn closing_requested(mut closing: watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await;
}
