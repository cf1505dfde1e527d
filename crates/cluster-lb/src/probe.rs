//! `cluster-lb probe`: a health probe for container healthchecks, which have no curl.
//!
//! It GETs one URL (by default the admin API's `/healthz`) and turns the answer into an exit
//! status: 0 for 200, 1 for anything else, with one line saying why.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::{StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The default URL: the admin listener, reached over loopback when it listens on all interfaces.
pub fn default_url(admin_listen: SocketAddr) -> String {
    let host = if admin_listen.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        match admin_listen {
            SocketAddr::V4(v4) => v4.ip().to_string(),
            SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
        }
    };
    format!("http://{host}:{}/healthz", admin_listen.port())
}

/// GETs `url`; `Ok` on 200, else the reason.
pub async fn probe(url: &str) -> Result<(), String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    match tokio::time::timeout(Duration::from_secs(2), client.get(uri)).await {
        Ok(Ok(response)) if response.status() == StatusCode::OK => Ok(()),
        Ok(Ok(response)) => Err(format!("{url} answered {}", response.status())),
        Ok(Err(e)) => Err(format!("{url}: {e}")),
        Err(_) => Err(format!("{url}: no answer within 2 s")),
    }
}
