//! What a scenario found: its checks, its status and the result the report shows.
//!
//! A leaf module: the scenarios build these, the progress line and the report
//! read them, and it imports none of them back.

use std::time::Duration;

use serde::Serialize;

/// One expectation and what was observed.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub expected: String,
    pub actual: String,
    pub passed: bool,
}

impl Check {
    pub fn new(what: &str, expected: impl ToString, actual: impl ToString, passed: bool) -> Check {
        Check {
            what: what.into(),
            expected: expected.to_string(),
            actual: actual.to_string(),
            passed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Passed,
    Failed,
    /// Not applicable to this cluster (e.g. a node kill with one node).
    Skipped,
}

/// A scenario's result in the shape the report prints and serializes.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub status: Status,
    /// The headline figures, one line for the table.
    pub summary: String,
    pub checks: Vec<Check>,
    pub notes: Vec<String>,
    pub duration_ms: u64,
    /// The scenario's own figures struct.
    pub figures: serde_json::Value,
}

/// What a scenario function returns: its figures, checks and remarks.
pub struct ScenarioOutcome<F> {
    pub figures: F,
    pub summary: String,
    pub checks: Vec<Check>,
    pub notes: Vec<String>,
}

impl<F: Serialize> ScenarioOutcome<F> {
    pub fn into_result(self, name: &str, duration: Duration) -> ScenarioResult {
        let status = if self.checks.iter().all(|c| c.passed) {
            Status::Passed
        } else {
            Status::Failed
        };
        ScenarioResult {
            name: name.into(),
            status,
            summary: self.summary,
            checks: self.checks,
            notes: self.notes,
            duration_ms: duration.as_millis() as u64,
            figures: serde_json::to_value(&self.figures).unwrap_or(serde_json::Value::Null),
        }
    }
}

impl ScenarioResult {
    pub fn skipped(name: &str, reason: &str) -> ScenarioResult {
        ScenarioResult {
            name: name.into(),
            status: Status::Skipped,
            summary: reason.into(),
            checks: Vec::new(),
            notes: vec![reason.into()],
            duration_ms: 0,
            figures: serde_json::Value::Null,
        }
    }

    /// A scenario that could not run to the end counts as failed, with the reason.
    pub fn errored(name: &str, error: &anyhow::Error, duration: Duration) -> ScenarioResult {
        let reason = format!("{error:#}");
        ScenarioResult {
            name: name.into(),
            status: Status::Failed,
            summary: format!("error: {reason}"),
            checks: vec![Check::new("scenario ran to the end", "yes", &reason, false)],
            notes: Vec::new(),
            duration_ms: duration.as_millis() as u64,
            figures: serde_json::Value::Null,
        }
    }
}
