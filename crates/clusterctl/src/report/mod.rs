//! The verify report: a table for people, JSON for machines, an SVG for the eye.

mod table;
mod timeline;

pub use table::print_table;
pub use timeline::write_timeline;

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::lost_updates_figures::LostUpdatesFigures;
use crate::scale::ScalePoint;
use crate::scenario_result::{ScenarioResult, Status};
use crate::scenarios::redis_primary_failure::Figures as FailoverFigures;

#[derive(Debug, Serialize)]
pub struct Report {
    pub nodes: usize,
    pub quick: bool,
    pub rate_per_sec: u32,
    pub cluster_startup_ms: u64,
    pub duration_ms: u64,
    pub passed: bool,
    pub scenarios: Vec<ScenarioResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scale: Vec<ScalePoint>,
    /// The lost-updates race for its own table; in the JSON it is already
    /// that scenario's figures.
    #[serde(skip)]
    pub lost_updates: Option<LostUpdatesFigures>,
    /// The Redis primary failures for their own table and timelines; in the JSON they are
    /// already those scenarios' figures.
    #[serde(skip)]
    pub failovers: Vec<FailoverFigures>,
}

impl Report {
    pub fn failed(&self) -> impl Iterator<Item = &ScenarioResult> {
        self.scenarios.iter().filter(|s| s.status == Status::Failed)
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// `report.json` -> `report-sigkill.svg`, in the same directory.
pub fn timeline_path(report: &Path) -> PathBuf {
    svg_path(report, "sigkill")
}

/// `report.json` and `redis-primary-kill` -> `report-redis-primary-kill.svg`, beside it.
pub fn svg_path(report: &Path, name: &str) -> PathBuf {
    let stem = report
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("report");
    report.with_file_name(format!("{stem}-{name}.svg"))
}
