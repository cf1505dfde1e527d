//! The pass/fail table on stdout.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, Color, ContentArrangement, Table};

use super::Report;
use crate::scenarios::Status;

pub fn print_table(report: &Report) {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(120)
        .set_header(["scenario", "result", "figures"]);
    for scenario in &report.scenarios {
        let (label, color) = match scenario.status {
            Status::Passed => ("PASS", Color::Green),
            Status::Failed => ("FAIL", Color::Red),
            Status::Skipped => ("SKIP", Color::Yellow),
        };
        table.add_row([
            Cell::new(&scenario.name),
            Cell::new(label).fg(color),
            Cell::new(&scenario.summary),
        ]);
    }
    println!("{table}");

    for scenario in report.failed() {
        for check in scenario.checks.iter().filter(|c| !c.passed) {
            println!(
                "FAIL {}: {}: expected {}, got {}",
                scenario.name, check.what, check.expected, check.actual
            );
        }
        for note in &scenario.notes {
            println!("     {note}");
        }
    }
    for point in &report.scale {
        println!(
            "scale: {:>2} nodes  start-up {:>6} ms  {:>8.0} req/s ({} failed)",
            point.nodes, point.startup_ms, point.throughput_per_sec, point.failed
        );
    }
    println!(
        "{} scenarios, {} failed; cluster of {} nodes started in {} ms; run took {:.1} s",
        report.scenarios.len(),
        report.failed().count(),
        report.nodes,
        report.cluster_startup_ms,
        report.duration_ms as f64 / 1000.0
    );
}
