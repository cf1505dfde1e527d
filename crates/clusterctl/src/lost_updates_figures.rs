//! The lost-updates scenario's figures, typed.
//!
//! A leaf module: the scenario fills them in and the report prints them as
//! they are, so nothing is turned into JSON and parsed back inside the
//! process (the JSON report serialises them once, on the way out).

use std::collections::BTreeMap;

use serde::Serialize;

/// The whole race: every mode, then every logout race.
#[derive(Debug, Clone, Serialize)]
pub struct LostUpdatesFigures {
    pub clients: usize,
    pub increments_per_client: usize,
    pub modes: Vec<ModeFigures>,
    pub logout_races: Vec<LogoutFigures>,
}

/// One mode's race: what the clients were told, and what Redis kept.
#[derive(Debug, Clone, Serialize)]
pub struct ModeFigures {
    /// `redis`, `redis-versioned` or `atomic`.
    pub mode: String,
    pub requests: u64,
    /// Answered 200: the client was told its increment counts.
    pub acknowledged: u64,
    /// Answered 409: refused, nothing written; the client may retry.
    pub conflicts: u64,
    /// Anything else (5xx, no answer): never expected.
    pub errors: u64,
    /// The counter read after the race (the session started at 0).
    pub final_value: i64,
    /// Acknowledged but not applied.
    pub lost: i64,
    pub throughput_per_sec: f64,
    /// Requests per answering node: the LB spread them.
    pub served_by: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogoutFigures {
    /// The session store the nodes ran.
    pub store: String,
    pub trials: usize,
    /// Trials after which a tab was logged in again.
    pub resurrected: usize,
}
