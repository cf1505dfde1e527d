//! The pass/fail table on stdout.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, Color, ContentArrangement, Table};

use super::Report;
use crate::scenario_result::Status;

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
    print_lost_updates(report);
    print_failovers(report);

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

/// The lost-updates race, one row per mode: what clients were told and what
/// Redis kept, side by side.
fn print_lost_updates(report: &Report) {
    let Some(figures) = &report.lost_updates else {
        return;
    };
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(120)
        .set_header([
            "mode",
            "requests",
            "acknowledged",
            "final value",
            "lost",
            "conflicts (409)",
            "errors",
            "req/s",
            "served by",
        ]);
    for mode in &figures.modes {
        let served_by: Vec<String> = mode
            .served_by
            .iter()
            .map(|(node, n)| format!("{node} {n}"))
            .collect();
        table.add_row([
            Cell::new(&mode.mode),
            Cell::new(mode.requests),
            Cell::new(mode.acknowledged),
            Cell::new(mode.final_value),
            Cell::new(mode.lost),
            Cell::new(mode.conflicts),
            Cell::new(mode.errors),
            Cell::new(format!("{:.0}", mode.throughput_per_sec)),
            Cell::new(served_by.join(", ")),
        ]);
    }
    println!(
        "lost-updates: {} concurrent clients x {} increments of one session, through the LB",
        figures.clients, figures.increments_per_client
    );
    println!("{table}");
    for logout in &figures.logout_races {
        println!(
            "logout race, {}: {} of {} logouts undone by a concurrent write",
            logout.store, logout.resurrected, logout.trials
        );
    }
}

/// The Redis primary failures, one row per run: how long until Sentinel answered, how long
/// users went without service, and what was lost.
fn print_failovers(report: &Report) {
    if report.failovers.is_empty() {
        return;
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(120)
        .set_header([
            "fault",
            "acks",
            "new primary after",
            "without service",
            "failed (reads/writes/atomic/logins)",
            "slowest failure",
            "sessions kept",
            "acked increments lost",
            "old primary a replica after",
        ]);
    let millis = |value: Option<u64>| value.map_or_else(|| "never".into(), |t| format!("{t} ms"));
    for failover in &report.failovers {
        for run in &failover.runs {
            table.add_row([
                Cell::new(failover.fault.scenario_name()),
                Cell::new(run.min_replicas_ack),
                Cell::new(millis(run.announced_ms)),
                Cell::new(format!("{} ms", run.unavailable_ms)),
                Cell::new(format!(
                    "{}/{}/{}/{}",
                    run.failed_reads, run.failed_writes, run.failed_atomic, run.failed_logins
                )),
                Cell::new(format!("{:.0} ms", run.slowest_failure_ms)),
                Cell::new(format!("{}/{}", run.sessions_kept, run.sessions)),
                Cell::new(format!(
                    "{} of {}",
                    run.acked_increments_lost, run.acked_increments
                )),
                Cell::new(millis(run.old_primary_replica_ms)),
            ]);
        }
    }
    println!("Redis primary failures, under load through the LB (acks: REDIS_MIN_REPLICAS_ACK)");
    println!("{table}");
}
