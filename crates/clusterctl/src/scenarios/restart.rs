//! Restart: a node that comes back gets traffic again, quickly.
//!
//! The node killed in the previous scenario is started again under load. The
//! figure is the time from "its /readyz says 200" to "the LB sent it a request
//! that succeeded": the LB's health checks must notice the node within a second.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::{ms, Context, GRACE};
use crate::cluster::wait_until;
use crate::load::LoadSummary;
use crate::scenario_result::{Check, ScenarioOutcome};

#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub node: String,
    pub ready_after_start_ms: u64,
    /// From ready to the first successful response it served through the LB.
    pub traffic_after_ready_ms: Option<u64>,
    pub served_after_ready: u64,
    /// The LB's latency estimate per node when the node became ready: a
    /// returning node whose estimate still carries the crash's penalty loses
    /// every power-of-two comparison and gets no traffic.
    pub lb_ewma_ms_at_ready: BTreeMap<String, f64>,
    pub failed: u64,
    pub sent: u64,
    pub load: LoadSummary,
}

const LIMIT: Duration = Duration::from_secs(1);

pub async fn run(
    ctx: &mut Context<'_>,
    node_index: usize,
) -> anyhow::Result<ScenarioOutcome<Figures>> {
    let http = ctx.cluster.http.clone();
    let sessions = ctx.login_users("restart-user", 2).await?;
    let steady = ctx.pace.steady;
    let load = ctx.start_load(&sessions, steady * 2 + Duration::from_secs(5));
    tokio::time::sleep(steady / 2).await;

    let names: BTreeMap<String, String> = ctx
        .cluster
        .nodes
        .iter()
        .map(|node| (node.addr.clone(), node.id.clone()))
        .collect();
    let node = &mut ctx.cluster.nodes[node_index];
    let id = node.id.clone();
    ctx.progress.step(&format!("start {id} again"));
    load.mark(&format!("restart {id}"));
    node.restart()?;
    let ready_after = node.wait_ready(&http, Duration::from_secs(20)).await?;
    let ready_at = load.elapsed();
    load.mark(&format!("{id} ready"));
    let lb_ewma_ms_at_ready: BTreeMap<String, f64> = match ctx.cluster.lb.admin.backends().await {
        Ok(backends) => backends
            .into_iter()
            .map(|b| (names.get(&b.id).cloned().unwrap_or(b.id), b.ewma_ms))
            .collect(),
        Err(_) => BTreeMap::new(),
    };

    ctx.progress
        .step(&format!("wait for the LB to send {id} traffic"));
    let first = wait_until(
        Duration::from_secs(3),
        Duration::from_millis(10),
        || async { load.inspect(|ledger| ledger.first_served_since(&id, ready_at)) },
    )
    .await;
    let traffic_after = first.map(|at| at.saturating_sub(ready_at));
    tokio::time::sleep(steady / 2).await;
    let served_after_ready = load.inspect(|ledger| ledger.served_since(&id, ready_at));
    let summary = load.finish(GRACE).await;

    let checks = vec![
        Check::new(
            "traffic within 1 s of ready",
            format!("<= {}", ms(LIMIT)),
            traffic_after
                .map(ms)
                .unwrap_or_else(|| "none in 3 s".into()),
            traffic_after.is_some_and(|d| d <= LIMIT),
        ),
        Check::new(
            "failed requests during the restart",
            0,
            summary.total.failed(),
            summary.total.failed() == 0,
        ),
    ];
    let notes = [
        super::failure_notes(&summary),
        vec![format!(
            "LB latency estimates at ready (ms): {lb_ewma_ms_at_ready:?}"
        )],
    ]
    .concat();
    Ok(ScenarioOutcome {
        summary: format!(
            "ready in {}, traffic {} after ready, {} failed of {}",
            ms(ready_after),
            traffic_after.map(ms).unwrap_or_else(|| "never".into()),
            summary.total.failed(),
            summary.total.sent
        ),
        figures: Figures {
            node: id,
            ready_after_start_ms: ready_after.as_millis() as u64,
            traffic_after_ready_ms: traffic_after.map(|d| d.as_millis() as u64),
            served_after_ready,
            lb_ewma_ms_at_ready,
            failed: summary.total.failed(),
            sent: summary.total.sent,
            load: summary,
        },
        checks,
        notes,
    })
}
