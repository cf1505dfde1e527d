//! `cluster-lb`: the cluster's front door, an HTTP/1.1 load balancer that hides node failures.
//!
//! Reading order: [`proxy`] (the request path) uses [`balancer`] to choose among the backends
//! of [`backend_set`] (scored by [`peak_ewma`], optionally pinned by [`sticky`], all of them in
//! [`panic_mode`] when too few are healthy), [`retry`] to
//! decide what may be sent again, [`hop_by_hop`] / [`forwarded`] for headers, [`request_body`]
//! to buffer request bodies (or [`streamed_body`] to stream them, both under [`body_limits`]),
//! [`upstream`] for the connections to the backends, [`tracked_body`] to stream responses back
//! ([`body`] for the answers it makes itself) and [`upgrade`] for WebSocket tunnels. [`health`] keeps each [`backend`]'s state honest;
//! [`dns_discovery`] adds and removes backends as a DNS name's addresses change;
//! [`admin`] and [`metrics`] expose it all, and [`dashboard`] shows it live in a browser. [`config`], [`server`], [`shutdown`], [`probe`] and
//! [`load_balancer`] are the process around it.
//!
//! Errors: each public function that can fail returns a `thiserror` enum of its own concern
//! ([`config::ConfigError`], [`backend::AddressError`], [`load_balancer::StartError`],
//! [`probe::ProbeError`]), so a caller can match on what went wrong and still reach the cause
//! through `source()`; each message is one line, which `main` prints before exiting with 2 (a
//! configuration mistake) or 1. No `anyhow` here: it suits binaries that only report errors,
//! not a library whose callers decide what an error means.

pub mod admin;
pub mod backend;
pub mod backend_set;
pub mod balancer;
pub mod body;
pub mod body_limits;
pub mod config;
pub mod dashboard;
pub mod dns_discovery;
pub mod forwarded;
pub mod health;
pub mod hop_by_hop;
pub mod load_balancer;
pub mod metrics;
pub mod panic_mode;
pub mod peak_ewma;
pub mod probe;
pub mod proxy;
pub mod request_body;
pub mod retry;
pub mod server;
pub mod shutdown;
pub mod sticky;
pub mod streamed_body;
pub mod tracked_body;
pub mod upgrade;
pub mod upstream;

pub use backend::BackendAddress;
pub use balancer::Algorithm;
pub use config::Settings;
pub use load_balancer::run;
