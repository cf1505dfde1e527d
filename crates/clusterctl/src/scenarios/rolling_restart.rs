//! Rolling restart: a deploy, one node at a time, without a single error.
//!
//! For each node: tell the LB to drain it (no new requests), SIGTERM it (the
//! node finishes what it has, answers /readyz 503, exits), start it again,
//! wait until it is ready, and enable it in the LB. The load never stops; the
//! users must not notice anything.

use std::time::Duration;

use anyhow::bail;
use serde::Serialize;

use super::{Check, Context, Outcome, GRACE};
use crate::cluster::wait_until;

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
    /// Successful responses it served after being enabled again.
    pub served_after: u64,
}

pub async fn run(ctx: &mut Context<'_>) -> anyhow::Result<Outcome<Figures>> {
    let http = ctx.cluster.http.clone();
    let admin = ctx.cluster.lb.admin.clone();
    let sessions = ctx.login_users("rolling-user", 4).await?;
    let per_node = Duration::from_secs(8);
    let bound = ctx.pace.steady + per_node * ctx.cluster.nodes.len() as u32;
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
        admin.enable(&node.addr).await?;
        if !admin
            .wait_state(&node.addr, "up", Duration::from_secs(5))
            .await
        {
            bail!("the LB did not report {id} up within 5 s of enable");
        }
        load.mark(&format!("{id} back"));
        enabled_at.push(load.elapsed());
        restarts.push(NodeRestart {
            node: id,
            exit_ms: exit.as_millis() as u64,
            ready_ms: ready.as_millis() as u64,
            served_after: 0,
        });
    }
    // Keep the load on until every restarted node has served again (3 s at most).
    wait_until(
        Duration::from_secs(3),
        Duration::from_millis(20),
        || async {
            let all_served = restarts.iter().zip(&enabled_at).all(|(restart, since)| {
                load.inspect(|ledger| ledger.served_since(&restart.node, *since)) > 0
            });
            all_served.then_some(())
        },
    )
    .await;
    for (restart, since) in restarts.iter_mut().zip(&enabled_at) {
        restart.served_after = load.inspect(|ledger| ledger.served_since(&restart.node, *since));
    }
    let summary = load.finish(GRACE).await;

    let failed = summary.total.failed();
    let idle: Vec<&str> = restarts
        .iter()
        .filter(|r| r.served_after == 0)
        .map(|r| r.node.as_str())
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
            "every node serves again within 3 s of the last enable",
            "all",
            if idle.is_empty() {
                "all".to_string()
            } else {
                format!("not {}", idle.join(", "))
            },
            idle.is_empty(),
        ),
    ];
    Ok(Outcome {
        summary: format!(
            "{} nodes restarted, {failed} failed of {} requests",
            restarts.len(),
            summary.total.sent
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
