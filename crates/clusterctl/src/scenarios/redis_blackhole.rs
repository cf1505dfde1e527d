//! Redis unreachable for one node: a partition, not a crash.
//!
//! An extra node talks to Redis through the toolkit's [`Relay`] and
//! joins the LB through the admin API. Then the proxy swallows everything:
//! no refusal, no reset, just silence, the case that hangs clients without
//! timeouts. The node must answer 503 within its Redis timeout, the LB must
//! take it out because its /readyz fails, and after the heal it must come back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use cluster_kit::{Cut, Relay};
use serde::Serialize;

use super::redis_restart::NEEDS_OWN_REDIS;
use super::{ms, Context, GRACE};
use crate::cluster::RedisAddress;
use crate::scenario_result::{Check, ScenarioOutcome};
use crate::session::Session;

#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub node: String,
    pub redis_timeout_ms: u64,
    pub status_while_cut: u16,
    pub latency_while_cut_ms: f64,
    /// From the cut until the LB showed the node not `up`.
    pub lb_out_after_ms: Option<u64>,
    /// From the heal until the LB showed it `up` again.
    pub lb_back_after_ms: Option<u64>,
    pub status_after_heal: u16,
    /// Requests through the LB that failed while the node was cut off but
    /// still in rotation (a 503 passed on by the LB).
    pub failed_through_lb: u64,
    pub sent_through_lb: u64,
}

pub async fn run(ctx: &mut Context<'_>) -> anyhow::Result<ScenarioOutcome<Figures>> {
    let http = ctx.cluster.http.clone();
    let admin = ctx.cluster.lb.admin.clone();
    let redis_port = ctx.cluster.redis.managed().context(NEEDS_OWN_REDIS)?.port();
    let proxy = Relay::try_start(SocketAddr::from(([127, 0, 0, 1], redis_port)))?;

    ctx.progress
        .step("start a node whose Redis goes through the proxy, add it to the LB");
    let mut settings = ctx.cluster.settings.clone();
    settings.redis = RedisAddress::Url(proxy.redis_url());
    let mut node = ctx.cluster.start_extra_node("partitioned", &settings)?;
    node.wait_ready(&http, Duration::from_secs(20)).await?;
    admin.add(&node.addr).await?;
    if !admin
        .wait_state(&node.addr, "up", Duration::from_secs(5))
        .await
    {
        bail!("the LB did not report the added node up within 5 s");
    }
    let outcome = partition(ctx, &proxy, &node.id, &node.url(), &node.addr).await;
    // Leave the LB as it was, whatever happened.
    let removed = admin.remove(&node.addr).await;
    drop(node);
    let outcome = outcome?;
    removed.context("removing the partitioned node from the LB")?;
    Ok(outcome)
}

async fn partition(
    ctx: &mut Context<'_>,
    proxy: &Relay,
    id: &str,
    url: &str,
    addr: &str,
) -> anyhow::Result<ScenarioOutcome<Figures>> {
    let http = ctx.cluster.http.clone();
    let admin = ctx.cluster.lb.admin.clone();
    let timeout = Duration::from_millis(ctx.cluster.settings.redis_timeout_ms);
    let (session, _) = Session::login(&http, url, "dave").await?;
    let sessions = ctx.login_users("partition-user", 2).await?;
    let load = ctx.start_load(&sessions, ctx.pace.steady * 2 + Duration::from_secs(12));
    tokio::time::sleep(ctx.pace.steady / 2).await;

    ctx.progress.step(&format!("blackhole Redis for {id}"));
    proxy.cut(Cut::Hold);
    let cut_at = Instant::now();
    load.mark(&format!("cut Redis for {id}"));
    let while_cut = session.clone().whoami(&http, url).await?;
    let out = admin_wait(&admin, addr, "up", false, cut_at).await;
    if let Some(after) = out {
        load.mark(&format!("LB: {id} out ({})", ms(after)));
    }

    ctx.progress.step("heal the link");
    proxy.heal();
    let healed_at = Instant::now();
    load.mark("heal");
    let back = admin_wait(&admin, addr, "up", true, healed_at).await;
    let after_heal = session.clone().whoami(&http, url).await?;
    tokio::time::sleep(ctx.pace.steady / 2).await;
    let summary = load.finish(GRACE).await;

    let slack = Duration::from_millis(500);
    let checks = vec![
        Check::new(
            "node answers 503 while cut",
            503,
            while_cut.status,
            while_cut.status == 503,
        ),
        Check::new(
            "within its Redis timeout (+0.5 s)",
            format!("<= {}", ms(timeout + slack)),
            ms(while_cut.elapsed),
            while_cut.elapsed <= timeout + slack,
        ),
        Check::new(
            "LB takes it out via /readyz",
            "< 5 s",
            out.map(ms).unwrap_or_else(|| "never".into()),
            out.is_some(),
        ),
        Check::new(
            "LB brings it back after the heal",
            "< 5 s",
            back.map(ms).unwrap_or_else(|| "never".into()),
            back.is_some(),
        ),
        Check::new(
            "node answers 200 after the heal",
            200,
            after_heal.status,
            after_heal.is_ok(),
        ),
    ];
    Ok(ScenarioOutcome {
        summary: format!(
            "cut: {} in {}, LB out after {}, back {} after heal; {} of {} LB requests failed",
            while_cut.status,
            ms(while_cut.elapsed),
            out.map(ms).unwrap_or_else(|| "never".into()),
            back.map(ms).unwrap_or_else(|| "never".into()),
            summary.total.failed(),
            summary.total.sent,
        ),
        figures: Figures {
            node: id.to_string(),
            redis_timeout_ms: timeout.as_millis() as u64,
            status_while_cut: while_cut.status,
            latency_while_cut_ms: while_cut.elapsed.as_secs_f64() * 1000.0,
            lb_out_after_ms: out.map(|d| d.as_millis() as u64),
            lb_back_after_ms: back.map(|d| d.as_millis() as u64),
            status_after_heal: after_heal.status,
            failed_through_lb: summary.total.failed(),
            sent_through_lb: summary.total.sent,
        },
        checks,
        notes: [
            vec!["requests the LB sent to the node before taking it out get its 503 (with Retry-After: 1)".into()],
            super::failure_notes(&summary),
        ]
        .concat(),
    })
}

/// Waits (5 s at most) until backend `addr` is (`want` = true) or is not
/// (`want` = false) in `state`; returns the time since `since`.
async fn admin_wait(
    admin: &crate::cluster::LbAdmin,
    addr: &str,
    state: &str,
    want: bool,
    since: Instant,
) -> Option<Duration> {
    crate::cluster::wait_until(
        Duration::from_secs(5),
        Duration::from_millis(10),
        || async {
            let backend = admin.backend(addr).await.ok()?;
            ((backend.state == state) == want).then(|| since.elapsed())
        },
    )
    .await
}
