//! SVG timeline of the node-kill and restart scenarios: requests per second, stacked by the
//! node that answered, failed requests on top in red, so traffic visibly leaves the killed
//! node and comes back to it. Every mark (the kill, the LB taking the node out, the restart,
//! the node ready) is a numbered vertical line, explained in the key under the chart, so
//! marks milliseconds apart never write over each other.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use crate::load::ledger::{Bucket, Mark, BUCKET};
use crate::load::LoadSummary;

const WIDTH: u32 = 960;
const CHART_HEIGHT: u32 = 400;
/// Height of one line of the key under the chart.
const KEY_LINE: u32 = 20;
/// Requests a bin should hold on average, so that one request more or less does not look
/// like an event; a bin is a whole number of the ledger's 100 ms buckets, at most a second.
const REQUESTS_PER_BIN: f64 = 20.0;
const MAX_BUCKETS_PER_BIN: usize = 10;
/// Space between two mark numbers at the top of the chart, in pixels.
const MARK_NUMBER_GAP: i32 = 16;

const NODE_COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
    RGBColor(227, 119, 194),
];
const FAILED_COLOUR: RGBColor = RGBColor(214, 39, 40);

/// One band of the stack: who answered (or "failed"), and requests/s per bin.
struct Layer {
    name: String,
    colour: RGBColor,
    rates: Vec<f64>,
}

/// Draws consecutive load runs (`segments`) one after the other on one time axis.
pub fn write_timeline(segments: &[&LoadSummary], title: &str, path: &Path) -> anyhow::Result<()> {
    let load = joined(segments);
    let buckets_per_bin = buckets_per_bin(&load.timeline);
    let bin_seconds = buckets_per_bin as f64 * BUCKET.as_secs_f64();
    let layers = layers(&load, buckets_per_bin);
    let bins = layers.first().map_or(0, |layer| layer.rates.len());
    let stacked = stacked(&layers);
    let x_max = (load.timeline.len() as f64 * BUCKET.as_secs_f64()).max(1.0);
    let y_max = stacked
        .last()
        .into_iter()
        .flatten()
        .fold(10.0_f64, |max, rate| max.max(*rate))
        * 1.25;

    let key_lines = 1 + load.marks.len().div_ceil(2) as u32;
    let root =
        SVGBackend::new(path, (WIDTH, CHART_HEIGHT + KEY_LINE * key_lines + 8)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let (upper, lower) = root.split_vertically(CHART_HEIGHT);
    let caption = format!(
        "{title}: requests/s per {} ms, by the node that answered",
        (bin_seconds * 1000.0).round()
    );
    let mut chart = ChartBuilder::on(&upper)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("seconds since the load started")
        .y_desc("requests/s")
        .draw()
        .map_err(plot_error)?;

    // Each band is drawn as the sum of itself and every band under it, the highest sum first,
    // so each lower band paints over the one above: a stack.
    for (layer, sums) in layers.iter().zip(&stacked).rev() {
        let steps = (0..bins).flat_map(|bin| {
            let start = bin as f64 * bin_seconds;
            let end = (start + bin_seconds).min(x_max);
            [(start, sums[bin]), (end, sums[bin])]
        });
        chart
            .draw_series(AreaSeries::new(steps, 0.0, layer.colour.mix(0.85).filled()))
            .map_err(plot_error)?;
    }

    let mut last_number_x = i32::MIN;
    for (index, mark) in load.marks.iter().enumerate() {
        let x = mark.at_ms as f64 / 1000.0;
        chart
            .draw_series(LineSeries::new(
                [(x, 0.0), (x, y_max)],
                BLACK.mix(0.6).stroke_width(1),
            ))
            .map_err(plot_error)?;
        let (pixel_x, pixel_y) = chart.backend_coord(&(x, y_max));
        let number_x = (pixel_x + 3).max(last_number_x + MARK_NUMBER_GAP);
        last_number_x = number_x;
        upper
            .draw(&Text::new(
                (index + 1).to_string(),
                (number_x, pixel_y + 4),
                ("sans-serif", 13).into_font().style(FontStyle::Bold),
            ))
            .map_err(plot_error)?;
    }

    draw_key(&lower, &layers, &load.marks)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// Under the chart: a swatch per band, then each mark's number, label and time.
fn draw_key<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    layers: &[Layer],
    marks: &[Mark],
) -> anyhow::Result<()> {
    let text = ("sans-serif", 13);
    let mut x = 68;
    for layer in layers {
        area.draw(&Rectangle::new(
            [(x, 4), (x + 14, 16)],
            layer.colour.mix(0.85).filled(),
        ))
        .map_err(plot_error)?;
        area.draw(&Text::new(layer.name.clone(), (x + 20, 4), text))
            .map_err(plot_error)?;
        x += 30 + 8 * layer.name.len() as i32;
    }
    let column_width = (WIDTH as i32 - 68) / 2;
    for (index, mark) in marks.iter().enumerate() {
        let column = (index % 2) as i32;
        let line = 1 + (index / 2) as i32;
        let described = format!(
            "{}  {} (at {:.2} s)",
            index + 1,
            mark.label,
            mark.at_ms as f64 / 1000.0
        );
        area.draw(&Text::new(
            described,
            (68 + column * column_width, 4 + line * KEY_LINE as i32),
            text,
        ))
        .map_err(plot_error)?;
    }
    Ok(())
}

/// How many 100 ms buckets make one bin of the chart.
fn buckets_per_bin(timeline: &[Bucket]) -> usize {
    let ended: u64 = timeline.iter().map(|b| b.ok + b.failed).sum();
    let per_bucket = ended as f64 / timeline.len().max(1) as f64;
    if per_bucket <= 0.0 {
        return MAX_BUCKETS_PER_BIN;
    }
    ((REQUESTS_PER_BIN / per_bucket).ceil() as usize).clamp(1, MAX_BUCKETS_PER_BIN)
}

/// The bands, bottom to top: each node by name, then the failed requests.
fn layers(load: &Joined, buckets_per_bin: usize) -> Vec<Layer> {
    let failed: Vec<u64> = load.timeline.iter().map(|b| b.failed).collect();
    let mut layers: Vec<Layer> = load
        .ok_by_node
        .iter()
        .zip(NODE_COLOURS.iter().cycle())
        .map(|((node, counts), colour)| Layer {
            name: node.clone(),
            colour: *colour,
            rates: rates(counts, buckets_per_bin),
        })
        .collect();
    layers.push(Layer {
        name: "failed".to_string(),
        colour: FAILED_COLOUR,
        rates: rates(&failed, buckets_per_bin),
    });
    layers
}

/// Requests per second in each bin of `buckets_per_bin` buckets; a last, shorter bin is
/// divided by its own length.
fn rates(counts: &[u64], buckets_per_bin: usize) -> Vec<f64> {
    counts
        .chunks(buckets_per_bin)
        .map(|bin| bin.iter().sum::<u64>() as f64 / (bin.len() as f64 * BUCKET.as_secs_f64()))
        .collect()
}

/// For each band, its rate plus the rates of every band under it.
fn stacked(layers: &[Layer]) -> Vec<Vec<f64>> {
    let mut sums: Vec<Vec<f64>> = Vec::with_capacity(layers.len());
    for layer in layers {
        let below = sums.last();
        let sum = layer
            .rates
            .iter()
            .enumerate()
            .map(|(bin, rate)| rate + below.map_or(0.0, |below| below[bin]))
            .collect();
        sums.push(sum);
    }
    sums
}

/// The timelines, per-node counts and marks of consecutive runs, each shifted to start where
/// the previous one ended.
struct Joined {
    timeline: Vec<Bucket>,
    ok_by_node: BTreeMap<String, Vec<u64>>,
    marks: Vec<Mark>,
}

fn joined(segments: &[&LoadSummary]) -> Joined {
    let mut joined = Joined {
        timeline: Vec::new(),
        ok_by_node: BTreeMap::new(),
        marks: Vec::new(),
    };
    for segment in segments {
        let offset = joined.timeline.len();
        let offset_ms = offset as u64 * BUCKET.as_millis() as u64;
        joined.marks.extend(segment.marks.iter().map(|mark| Mark {
            at_ms: mark.at_ms + offset_ms,
            ..mark.clone()
        }));
        joined.timeline.extend_from_slice(&segment.timeline);
        for (node, counts) in &segment.ok_by_node {
            let row = joined.ok_by_node.entry(node.clone()).or_default();
            row.resize(offset, 0);
            row.extend_from_slice(counts);
        }
        for row in joined.ok_by_node.values_mut() {
            row.resize(joined.timeline.len(), 0);
        }
    }
    joined
}

fn plot_error<E: std::fmt::Display>(error: E) -> anyhow::Error {
    anyhow::anyhow!("cannot draw the timeline: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(ok: &[(&str, &[u64])], failed: &[u64], marks: &[(u64, &str)]) -> LoadSummary {
        let timeline: Vec<Bucket> = failed
            .iter()
            .enumerate()
            .map(|(i, failed)| Bucket {
                sent: 0,
                ok: ok.iter().map(|(_, counts)| counts[i]).sum(),
                failed: *failed,
            })
            .collect();
        let mut ledger_marks = Vec::new();
        for (at_ms, label) in marks {
            ledger_marks.push(Mark {
                at_ms: *at_ms,
                label: label.to_string(),
                reads_in_flight: 0,
                writes_in_flight: 0,
            });
        }
        let mut summary = crate::load::ledger::Ledger::new().summary(std::time::Duration::ZERO);
        summary.timeline = timeline;
        summary.marks = ledger_marks;
        summary.ok_by_node = ok
            .iter()
            .map(|(node, counts)| (node.to_string(), counts.to_vec()))
            .collect();
        summary
    }

    #[test]
    fn segments_join_end_to_end_and_a_node_missing_from_one_counts_zero_there() {
        let killed = segment(
            &[("node1", &[2, 3]), ("node2", &[1, 0])],
            &[0, 1],
            &[(150, "kill node2")],
        );
        let restarted = segment(&[("node1", &[4])], &[0], &[(20, "restart node2")]);
        let joined = joined(&[&killed, &restarted]);
        assert_eq!(joined.ok_by_node["node1"], vec![2, 3, 4]);
        assert_eq!(joined.ok_by_node["node2"], vec![1, 0, 0]);
        let marks: Vec<u64> = joined.marks.iter().map(|mark| mark.at_ms).collect();
        assert_eq!(marks, vec![150, 220]);
    }

    #[test]
    fn bands_stack_nodes_then_failures_in_requests_per_second() {
        let load = joined(&[&segment(
            &[("node1", &[2, 2, 2]), ("node2", &[1, 0, 3])],
            &[0, 1, 0],
            &[],
        )]);
        let layers = layers(&load, 2);
        let names: Vec<&str> = layers.iter().map(|layer| layer.name.as_str()).collect();
        assert_eq!(names, ["node1", "node2", "failed"]);
        // Bins of 2 buckets (200 ms), the last one of 1 bucket (100 ms).
        assert_eq!(layers[0].rates, vec![20.0, 20.0]);
        assert_eq!(layers[1].rates, vec![5.0, 30.0]);
        assert_eq!(layers[2].rates, vec![5.0, 0.0]);
        let stacked = stacked(&layers);
        assert_eq!(stacked[2], vec![30.0, 50.0]);
    }

    #[test]
    fn bins_widen_until_they_hold_enough_requests_and_never_pass_a_second() {
        let bucket = |ok| Bucket {
            sent: 0,
            ok,
            failed: 0,
        };
        assert_eq!(buckets_per_bin(&[bucket(40), bucket(40)]), 1);
        assert_eq!(buckets_per_bin(&[bucket(6), bucket(6)]), 4);
        assert_eq!(
            buckets_per_bin(&[bucket(0), bucket(1)]),
            MAX_BUCKETS_PER_BIN
        );
    }

    #[test]
    fn the_svg_has_a_band_per_node_and_a_numbered_key_per_mark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("timeline.svg");
        let killed = segment(
            &[("node1", &[5, 5, 5, 8]), ("node2", &[5, 5, 0, 0])],
            &[0, 0, 0, 0],
            &[(200, "kill node2"), (216, "LB: node2 out (16 ms)")],
        );
        write_timeline(&[&killed], "SIGKILL node2", &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        for text in [
            "node1",
            "node2",
            "failed",
            "1  kill node2 (at 0.20 s)",
            "2  LB: node2 out (16 ms) (at 0.22 s)",
        ] {
            assert!(svg.contains(text), "{text:?} missing from the SVG");
        }
        assert!(svg.contains("requests/s per 300 ms"), "{svg}");
    }
}
