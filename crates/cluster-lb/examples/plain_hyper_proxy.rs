//! The floor under cluster-lb: the plainest reverse proxy hyper allows, and nothing else.
//!
//! Round-robin over the backends given, hyper-util's pooled client, the request passed on with
//! its URI rewritten and nothing more: no health checks, no retries, no header hygiene, no
//! limits, no metrics. A dead backend fails every request sent to it, forever.
//!
//! It exists as a yardstick. `scripts/bench-lb.sh` runs it beside nginx, HAProxy and
//! cluster-lb, so the cost of hyper itself and the cost of what cluster-lb adds on top are
//! measured on the same machine in the same run. Do not deploy it.
//!
//! Usage: `cargo run --release -p cluster-lb --example plain_hyper_proxy -- LISTEN BACKEND...`
//! (addresses as ip:port).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

struct RoundRobin {
    client: Client<HttpConnector, Incoming>,
    backends: Vec<String>,
    next: AtomicUsize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: plain_hyper_proxy LISTEN BACKEND...";
    let listen: SocketAddr = args.next().ok_or(usage)?.parse()?;
    // Parsed here so that `http://{backend}{path}` is always a valid URI below.
    let backends = args
        .map(|backend| {
            backend
                .parse::<SocketAddr>()
                .map(|address| address.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    if backends.is_empty() {
        return Err(usage.into());
    }
    let proxy = Arc::new(RoundRobin {
        client: Client::builder(TokioExecutor::new()).build_http(),
        backends,
        next: AtomicUsize::new(0),
    });

    let listener = TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move {
            let service = service_fn(move |request| Arc::clone(&proxy).forward(request));
            let _ = auto::Builder::new(TokioExecutor::new())
                .http1_only()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

impl RoundRobin {
    async fn forward(
        self: Arc<Self>,
        mut request: Request<Incoming>,
    ) -> Result<hyper::Response<Incoming>, hyper_util::client::legacy::Error> {
        let backend =
            &self.backends[self.next.fetch_add(1, Ordering::Relaxed) % self.backends.len()];
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |path| path.as_str());
        let uri: Uri = format!("http://{backend}{path}")
            .parse()
            .unwrap_or_else(|_| Uri::from_static("/"));
        *request.uri_mut() = uri;
        self.client.request(request).await
    }
}
