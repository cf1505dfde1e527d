//! One node of actix-cluster-lab: an actix-web service whose sessions live in
//! Redis, so that any node of the cluster can serve any request.
//!
//! Start with [`startup`] (how the pieces fit), then [`bounded_store`] (why
//! a failing Redis gives a fast 503 instead of a hang), [`store_unavailable`]
//! (503 for a failing store, 409 for a refused write) and [`shutdown`] (how a
//! node leaves the cluster without dropping requests).

pub mod bounded_store;
pub mod configuration;
pub mod cookie_store;
pub mod errors;
pub mod getex_store;
pub mod memory_store;
pub mod metrics;
pub mod primary_pool;
pub mod probe;
pub mod request_metrics;
pub mod response_headers;
pub mod routes;
pub mod sentinel;
pub mod session_data;
pub mod shutdown;
pub mod startup;
pub mod state;
pub mod store_unavailable;
