//! SVG timeline of the node-kill and restart scenarios: throughput and errors
//! per 100 ms, with a vertical line at every mark (the kill, the LB taking the
//! node out, the restart, the node ready).

use std::path::Path;

use plotters::prelude::*;

use crate::load::ledger::{Bucket, Mark, BUCKET};
use crate::load::LoadSummary;

/// Draws consecutive load runs (`segments`) one after the other on one time axis.
pub fn write_timeline(segments: &[&LoadSummary], title: &str, path: &Path) -> anyhow::Result<()> {
    let load = joined(segments);
    let per_second = 1000.0 / BUCKET.as_millis() as f64;
    let seconds = |index: usize| index as f64 * BUCKET.as_secs_f64();
    let ok: Vec<(f64, f64)> = load
        .timeline
        .iter()
        .enumerate()
        .map(|(i, b)| (seconds(i), b.ok as f64 * per_second))
        .collect();
    let failed: Vec<(f64, f64)> = load
        .timeline
        .iter()
        .enumerate()
        .map(|(i, b)| (seconds(i), b.failed as f64 * per_second))
        .collect();
    let x_max = seconds(load.timeline.len()).max(1.0);
    let y_max = ok
        .iter()
        .chain(&failed)
        .map(|(_, y)| *y)
        .fold(10.0, f64::max)
        * 1.15;

    let root = SVGBackend::new(path, (960, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the load started")
        .y_desc("requests/s (per 100 ms)")
        .draw()
        .map_err(plot_error)?;
    chart
        .draw_series(LineSeries::new(ok, &BLUE))
        .map_err(plot_error)?
        .label("ok")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
    chart
        .draw_series(LineSeries::new(failed, &RED))
        .map_err(plot_error)?
        .label("failed")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED));
    for (index, mark) in load.marks.iter().enumerate() {
        let x = mark.at_ms as f64 / 1000.0;
        // Marks often come milliseconds apart: stagger their labels downwards.
        let label_y = y_max * (0.97 - 0.06 * (index % 4) as f64);
        chart
            .draw_series(LineSeries::new([(x, 0.0), (x, y_max)], BLACK.mix(0.5)))
            .map_err(plot_error)?;
        chart
            .draw_series([Text::new(
                mark.label.clone(),
                (x, label_y),
                ("sans-serif", 12),
            )])
            .map_err(plot_error)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// The timelines and marks of consecutive runs, each shifted to start where
/// the previous one ended.
struct Joined {
    timeline: Vec<Bucket>,
    marks: Vec<Mark>,
}

fn joined(segments: &[&LoadSummary]) -> Joined {
    let mut joined = Joined {
        timeline: Vec::new(),
        marks: Vec::new(),
    };
    for segment in segments {
        let offset_ms = joined.timeline.len() as u64 * BUCKET.as_millis() as u64;
        joined.marks.extend(segment.marks.iter().map(|mark| Mark {
            at_ms: mark.at_ms + offset_ms,
            ..mark.clone()
        }));
        joined.timeline.extend_from_slice(&segment.timeline);
    }
    joined
}

fn plot_error<E: std::fmt::Display>(error: E) -> anyhow::Error {
    anyhow::anyhow!("cannot draw the timeline: {error}")
}
