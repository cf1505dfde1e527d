//! Rolling restart: a deploy, one node at a time, without a single error.
//!
//! For each node: tell the LB to drain it (no new requests), SIGTERM it (the
//! node finishes what it has, answers /readyz 503, exits), start it again,
//! wait until it is ready, and enable it in the LB. The load never stops; the
//! users must not notice anything.
//!
//! A re-enabled node must also get its share again at once: capacity that
//! stays idle after each step of a deploy is lost without an error to show it.
//! The time from each enable to the node's first answer is a figure of the
//! report, and the load runs on for `SETTLE` after the last enable to see that
//! every node still serves then, not just once.

use std::time::Duration;

use anyhow::bail;
use serde::Serialize;

use super::{Context, GRACE};
use crate::cluster::wait_until;
use crate::scenario_result::{Check, ScenarioOutcome};

/// How long the load runs on after the last enable.
const SETTLE: Duration = Duration::from_secs(3);

/// The last stretch of `SETTLE` in which every node must have answered.
const LAST_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub nodes: Vec<NodeRestart>,
    pub sent: u64,
    pub failed: u64,
    pub in_flight_at_end: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeRestart {
    pub node: String,
    /// From SIGTERM to exit: the node's drain time plus shutdown.
    pub exit_ms: u64,
    pub ready_ms: u64,
    /// The LB's latency estimate for the node right after the enable, and its peers' mean:
    /// power-of-two-choices gives the node nothing while its estimate is the higher one.
    pub lb_ewma_ms_at_enable: f64,
    pub peers_ewma_ms_at_enable: f64,
    /// From the enable call until the LB reported the node up: more than a few ms when its
    /// health checks caught the restart and marked it down (then `rise` checks bring it back).
    pub lb_up_ms: u64,
    /// From the enable call to its first successful answer (none: it never answered).
    pub first_answer_ms: Option<u64>,
    /// Successful responses it served after being enabled again.
    pub served_after: u64,
    /// Successful responses it served in the last `LAST_WINDOW` of the load.
    pub served_at_end: u64,
}

pub async fn run(ctx: &mut Context<'_>) -> anyhow::Result<ScenarioOutcome<Figures>> {
    let http = ctx.cluster.http.clone();
    let admin = ctx.cluster.lb.admin.clone();
    let sessions = ctx.login_users("rolling-user", 4).await?;
    let per_node = Duration::from_secs(8);
    let bound = ctx.pace.steady + per_node * ctx.cluster.nodes.len() as u32 + SETTLE;
    let load = ctx.start_load(&sessions, bound);
    tokio::time::sleep(ctx.pace.steady / 2).await;

    let mut restarts = Vec::new();
    let mut enabled_at = Vec::new();
    for node in ctx.cluster.nodes.iter_mut() {
        let id = node.id.clone();
        ctx.progress.step(&format!("drain {id} in the LB"));
        load.mark(&format!("drain {id}"));
        admin.drain(&node.addr).await?;
        // In-flight requests finish on the node; only then is it safe to stop it.
        wait_until(
            Duration::from_secs(2),
            Duration::from_millis(10),
            || async {
                let backend = admin.backend(&node.addr).await.ok()?;
                (backend.in_flight == 0).then_some(())
            },
        )
        .await;

        ctx.progress
            .step(&format!("SIGTERM {id}, wait for it to exit"));
        let stopping = std::time::Instant::now();
        node.terminate();
        if !node.wait_exit(Duration::from_secs(10)).await {
            bail!("{id} did not exit within 10 s of SIGTERM");
        }
        let exit = stopping.elapsed();

        ctx.progress.step(&format!("start {id} again, enable it"));
        node.restart()?;
        let ready = node.wait_ready(&http, Duration::from_secs(20)).await?;
        let enabling = load.elapsed();
        admin.enable(&node.addr).await?;
        let (own, peers): (Vec<_>, Vec<_>) = admin
            .backends()
            .await?
            .into_iter()
            .partition(|b| b.id == node.addr);
        let lb_ewma_ms_at_enable = own.first().map_or(0.0, |b| b.ewma_ms);
        let peers_ewma_ms_at_enable =
            peers.iter().map(|b| b.ewma_ms).sum::<f64>() / peers.len().max(1) as f64;
        if !admin
            .wait_state(&node.addr, "up", Duration::from_secs(5))
            .await
        {
            bail!("the LB did not report {id} up within 5 s of enable");
        }
        let lb_up_ms = (load.elapsed() - enabling).as_millis() as u64;
        load.mark(&format!("{id} back"));
        enabled_at.push(enabling);
        restarts.push(NodeRestart {
            node: id,
            exit_ms: exit.as_millis() as u64,
            ready_ms: ready.as_millis() as u64,
            lb_ewma_ms_at_enable,
            peers_ewma_ms_at_enable,
            lb_up_ms,
            first_answer_ms: None,
            served_after: 0,
            served_at_end: 0,
        });
    }
    // The load runs on for SETTLE after the last enable: a node the balancer starves shows up
    // as no answers in the last stretch.
    let last_enable = enabled_at.last().copied().unwrap_or_default();
    tokio::time::sleep((last_enable + SETTLE).saturating_sub(load.elapsed())).await;
    let window_start = load.elapsed().saturating_sub(LAST_WINDOW);
    for (restart, since) in restarts.iter_mut().zip(&enabled_at) {
        load.inspect(|ledger| {
            restart.first_answer_ms = ledger
                .first_served_since(&restart.node, *since)
                .map(|at| (at - *since).as_millis() as u64);
            restart.served_after = ledger.served_since(&restart.node, *since);
            restart.served_at_end = ledger.served_since(&restart.node, window_start);
        });
    }
    let summary = load.finish(GRACE).await;

    let failed = summary.total.failed();
    let nodes_where = |idle: fn(&NodeRestart) -> bool| {
        let names: Vec<&str> = restarts
            .iter()
            .filter(|r| idle(r))
            .map(|r| r.node.as_str())
            .collect();
        if names.is_empty() {
            "all".to_string()
        } else {
            format!("not {}", names.join(", "))
        }
    };
    let never_back = nodes_where(|r| r.first_answer_ms.is_none());
    let idle_at_end = nodes_where(|r| r.served_at_end == 0);
    let first_answers: Vec<String> = restarts
        .iter()
        .map(|r| match r.first_answer_ms {
            Some(ms) => format!("{} {ms} ms (up {} ms)", r.node, r.lb_up_ms),
            None => format!("{} never (up {} ms)", r.node, r.lb_up_ms),
        })
        .collect();
    let checks = vec![
        Check::new("failed requests", 0, failed, failed == 0),
        Check::new(
            "requests left hanging",
            0,
            summary.total.in_flight,
            summary.total.in_flight == 0,
        ),
        Check::new(
            "every node answers again after its enable",
            "all",
            &never_back,
            never_back == "all",
        ),
        Check::new(
            &format!(
                "every node still answers {}-{} s after the last enable",
                (SETTLE - LAST_WINDOW).as_secs(),
                SETTLE.as_secs()
            ),
            "all",
            &idle_at_end,
            idle_at_end == "all",
        ),
    ];
    Ok(ScenarioOutcome {
        summary: format!(
            "{} nodes restarted, {failed} failed of {} requests; first answer after enable: {}",
            restarts.len(),
            summary.total.sent,
            first_answers.join(", ")
        ),
        figures: Figures {
            nodes: restarts,
            sent: summary.total.sent,
            failed,
            in_flight_at_end: summary.total.in_flight,
        },
        checks,
        notes: super::failure_notes(&summary),
    })
}
