//! Accepting connections and serving HTTP/1.1 on them, with graceful shutdown.
//!
//! Both listeners (proxy and admin) use this loop. On shutdown it stops accepting at once
//! (the listening socket is closed, so new connections are refused), asks every open
//! connection to finish the request it is serving and close, and waits for that up to a grace
//! period. Idle keep-alive connections close immediately.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::body::ProxyBody;

/// HTTP/1.1 server settings; HTTP/2 is not offered (backends and benchmarks speak HTTP/1.1).
pub fn http1(client_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        // Covers both a slow request head and an idle keep-alive connection.
        .header_read_timeout(client_timeout)
        // Backstop for heads far over the proxy's own (JSON) 431 limit; hyper answers a bare 431.
        // Its header *count* limit stays at the default 100, parsed on the stack.
        .max_buf_size(64 * 1024);
    builder
}

/// Serves connections from `listener` with `handler` until `shutdown` resolves, then drains
/// in-flight requests for at most `grace`.
pub async fn serve<H, F>(
    listener: TcpListener,
    http: auto::Builder<TokioExecutor>,
    handler: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |request| {
            let response = handler(request, peer);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = http
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("connection from {peer}: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        log::warn!("shutdown: requests still running after {grace:?}; closing anyway");
    }
}
