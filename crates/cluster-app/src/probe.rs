//! `cluster-app probe`: a healthcheck client built into the binary.
//!
//! Container images of this node carry no curl; `cluster-app probe` does the
//! one thing a healthcheck needs: GET a URL, exit 0 on 200 and 1 otherwise,
//! saying why in one line.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub fn run(url: Option<String>, listen_addr: &str) -> ExitCode {
    let url = match url {
        Some(url) => url,
        None => match listen_addr.parse::<SocketAddr>() {
            Ok(addr) => format!("http://127.0.0.1:{}/readyz", addr.port()),
            Err(_) => {
                eprintln!(
                    "cluster-app probe: LISTEN_ADDR {listen_addr:?} is not ip:port; pass --url"
                );
                return ExitCode::FAILURE;
            }
        },
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(PROBE_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    match agent.get(&url).call() {
        Ok(response) if response.status() == 200 => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("cluster-app probe: {url} answered {}", response.status());
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("cluster-app probe: {url}: {err}");
            ExitCode::FAILURE
        }
    }
}
