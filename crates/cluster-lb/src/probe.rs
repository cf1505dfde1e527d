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

/// How long the probe waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the probe failed; each message names the URL.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("invalid URL {url:?}: {source}")]
    InvalidUrl {
        url: String,
        source: hyper::http::uri::InvalidUri,
    },
    #[error("{url} answered {status}")]
    NotOk { url: String, status: StatusCode },
    #[error("{url}: {source}")]
    Request {
        url: String,
        source: hyper_util::client::legacy::Error,
    },
    #[error("{url}: no answer within {} s", PROBE_TIMEOUT.as_secs())]
    NoAnswer { url: String },
}

/// GETs `url`; `Ok` on 200, else the reason.
pub async fn probe(url: &str) -> Result<(), ProbeError> {
    let uri: Uri = url.parse().map_err(|source| ProbeError::InvalidUrl {
        url: url.to_string(),
        source,
    })?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let url = url.to_string();
    match tokio::time::timeout(PROBE_TIMEOUT, client.get(uri)).await {
        Ok(Ok(response)) if response.status() == StatusCode::OK => Ok(()),
        Ok(Ok(response)) => Err(ProbeError::NotOk {
            url,
            status: response.status(),
        }),
        Ok(Err(source)) => Err(ProbeError::Request { url, source }),
        Err(_) => Err(ProbeError::NoAnswer { url }),
    }
}
