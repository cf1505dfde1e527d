//! What every handler and middleware of a node shares.

use versioned_session_store::AtomicCounter;

use crate::metrics::Metrics;
use crate::primary_pool::PrimaryPool;
use crate::shutdown::DrainSwitch;

/// Shared by all workers (actix-web wraps it in `web::Data`, an `Arc`).
pub struct AppState {
    /// Sent back in `X-Served-By` and in every JSON body.
    pub node_id: String,
    /// Used by `/readyz` to PING Redis through the same pool the sessions use;
    /// `None` with the stores that need no Redis (`memory`, `cookie`).
    pub redis: Option<PrimaryPool>,
    pub drain: DrainSwitch,
    pub metrics: Metrics,
    /// Per-session counters incremented in Redis (`POST /counter/incr?mode=atomic`);
    /// `None` without Redis, where `mode=atomic` is a 400.
    pub counter: Option<AtomicCounter<PrimaryPool>>,
}
