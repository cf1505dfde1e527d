//! The harness's own load generator.
//!
//! [`generator`] sends requests at a constant rate (open loop: a slow or dead
//! node does not slow the sender down, exactly like real users); [`ledger`]
//! accounts for each one exactly once.

pub mod generator;
pub mod ledger;

pub use generator::{LoadPlan, LoadRun, Mix};
pub use ledger::{LoadSummary, Phase};
