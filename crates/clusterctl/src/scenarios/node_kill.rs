//! Node SIGKILL under load: a crash must cost at most the requests it cut.
//!
//! A constant mixed load runs through the LB; one node is SIGKILLed mid-run.
//! Reads are idempotent, so the LB may retry them elsewhere: none may fail.
//! Writes are not, so the only acceptable failures are the writes that were
//! in flight at the moment of the kill: the LB must fail them, never replay
//! them. Every write increments its session's counter, so the counters in
//! Redis afterwards tell what was applied: at least every acknowledged write
//! (none silently lost), at most those plus the failed ones (none applied
//! twice). The figures also show how long the LB kept the dead node in
//! rotation and what the crash did to latency.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{ms, Context, GRACE};
use crate::cluster::wait_until;
use crate::load::{LoadSummary, Phase};
use crate::scenario_result::{Check, ScenarioOutcome};

#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub victim: String,
    pub rate_per_sec: u32,
    pub failed_reads: u64,
    pub failed_writes: u64,
    /// Writes the harness had in flight at the kill (an upper bound for the
    /// writes the crash could cut).
    pub writes_in_flight_at_kill: u64,
    /// The LB's own in-flight count for the victim just before the kill (0: it
    /// had nothing in flight at any moment of the 2 s the harness waited).
    pub lb_in_flight_at_kill: u64,
    /// Attempts the LB lost after sending them, from just before the kill to
    /// the end: the requests the crash cut (GETs retried, POSTs failed).
    pub lb_attempts_cut: u64,
    /// Writes the clients saw succeed, and the increments the session
    /// counters hold afterwards.
    pub writes_acknowledged: u64,
    pub writes_applied: i64,
    /// From the kill until the LB's admin API showed the victim not `up`.
    pub lb_marked_down_ms: Option<u64>,
    /// The victim's last successful response, in ms before the kill.
    pub last_served_before_kill_ms: Option<u64>,
    pub session_intact: bool,
    pub load: LoadSummary,
}

/// Runs the scenario and leaves the victim dead (the restart scenario revives it).
pub async fn run(
    ctx: &mut Context<'_>,
    victim_index: usize,
) -> anyhow::Result<ScenarioOutcome<Figures>> {
    let http = ctx.cluster.http.clone();
    let victim = ctx.cluster.nodes[victim_index].id.clone();
    let victim_addr = ctx.cluster.nodes[victim_index].addr.clone();
    let admin = ctx.cluster.lb.admin.clone();

    ctx.progress
        .step("log in 4 users, give one of them a session item");
    let mut sessions = ctx.login_users("kill-user", 4).await?;
    let mut witness = sessions[0].clone();
    witness
        .put_item(
            &http,
            &ctx.lb_url(),
            "proof",
            serde_json::json!("survives a crash"),
        )
        .await?;
    sessions[0] = witness.clone();

    let steady = ctx.pace.steady;
    let load = ctx.start_load(&sessions, steady * 2 + Duration::from_secs(6));
    ctx.progress.step(&format!(
        "{} req/s through the LB for {steady:?}",
        ctx.pace.rate
    ));
    tokio::time::sleep(steady).await;

    ctx.progress.step(&format!("SIGKILL {victim}"));
    let lost_before = admin.attempts_lost().await?;
    // Kill it while it answers (2 s at most), so the crash cuts requests mid-flight: at this
    // rate a node is idle most of the time.
    let lb_in_flight_at_kill =
        wait_until(Duration::from_secs(2), Duration::from_millis(5), || async {
            let in_flight = admin.backend(&victim_addr).await.ok()?.in_flight;
            (in_flight > 0).then_some(in_flight)
        })
        .await
        .unwrap_or(0);
    ctx.cluster.nodes[victim_index].kill();
    let killed_at = Instant::now();
    let kill_mark = load.mark(&format!("kill {victim}"));
    load.set_phase(Phase::During);

    ctx.progress.step("wait for the LB to take it out");
    let marked_down = wait_until(
        Duration::from_secs(5),
        Duration::from_millis(10),
        || async {
            let backend = admin.backend(&victim_addr).await.ok()?;
            (backend.state != "up").then(|| killed_at.elapsed())
        },
    )
    .await;
    if let Some(after) = marked_down {
        load.mark(&format!("LB: {victim} out ({})", ms(after)));
    }
    load.set_phase(Phase::After);
    let last_served = load.inspect(|ledger| ledger.last_served(&victim));
    let kill_at = Duration::from_millis(kill_mark.at_ms);
    ctx.progress
        .step(&format!("keep the load on for {steady:?}"));
    tokio::time::sleep(steady).await;
    let summary = load.finish(GRACE).await;
    let lb_attempts_cut = admin.attempts_lost().await?.saturating_sub(lost_before);
    let mut writes_applied = 0;
    for session in &sessions {
        let reply = session.clone().whoami(&http, &ctx.lb_url()).await?;
        writes_applied += reply.counter().unwrap_or(0);
    }

    let after = witness.whoami(&http, &ctx.lb_url()).await?;
    let session_intact = after.user() == Some("kill-user1")
        && after.body.pointer("/items/proof").and_then(|v| v.as_str()) == Some("survives a crash");

    let failed_reads = summary.reads.failed();
    let failed_writes = summary.writes.failed();
    let writes_in_flight_at_kill = kill_mark.writes_in_flight;
    let writes_acknowledged = summary.writes.ok;
    let applied_as_expected = writes_applied >= writes_acknowledged as i64
        && writes_applied <= (writes_acknowledged + failed_writes) as i64;
    let mut checks = vec![
        Check::new("failed GETs", 0, failed_reads, failed_reads == 0),
        Check::new(
            "failed POSTs <= POSTs in flight at the kill",
            format!("<= {writes_in_flight_at_kill}"),
            failed_writes,
            failed_writes <= writes_in_flight_at_kill,
        ),
        Check::new(
            "failed POSTs <= attempts the crash cut (LB)",
            format!("<= {lb_attempts_cut}"),
            failed_writes,
            failed_writes <= lb_attempts_cut,
        ),
        Check::new(
            "POSTs applied: acknowledged .. acknowledged + failed",
            format!(
                "{writes_acknowledged}..{}",
                writes_acknowledged + failed_writes
            ),
            writes_applied,
            applied_as_expected,
        ),
        Check::new(
            "LB takes the dead node out",
            "< 5 s",
            marked_down.map(ms).unwrap_or_else(|| "never".into()),
            marked_down.is_some(),
        ),
        Check::new(
            "requests left hanging",
            0,
            summary.total.in_flight,
            summary.total.in_flight == 0,
        ),
        Check::new(
            "sent = ok + failed + in flight",
            summary.total.sent,
            summary.total.ok + summary.total.failed() + summary.total.in_flight,
            summary.total.balances(),
        ),
        Check::new(
            "session intact afterwards",
            "user + item",
            session_intact,
            session_intact,
        ),
    ];
    if summary.total.sent == 0 {
        checks.push(Check::new("requests sent", "> 0", 0, false));
    }
    let p = |phase| {
        summary
            .latency(phase)
            .map(|l| format!("{:.1}/{:.1}", l.p50_ms, l.p99_ms))
            .unwrap_or_default()
    };
    let headline = format!(
        "{} sent, {lb_attempts_cut} cut by the crash, GET fail {failed_reads}, POST fail {failed_writes} (<= {writes_in_flight_at_kill}), out after {}, p50/p99 ms {} | {} | {}",
        summary.total.sent,
        marked_down.map(ms).unwrap_or_else(|| "never".into()),
        p(Phase::Before),
        p(Phase::During),
        p(Phase::After),
    );
    let notes = super::failure_notes(&summary);
    Ok(ScenarioOutcome {
        figures: Figures {
            victim,
            rate_per_sec: ctx.pace.rate,
            failed_reads,
            failed_writes,
            writes_in_flight_at_kill,
            lb_in_flight_at_kill,
            lb_attempts_cut,
            writes_acknowledged,
            writes_applied,
            lb_marked_down_ms: marked_down.map(|d| d.as_millis() as u64),
            last_served_before_kill_ms: last_served
                .map(|at| kill_at.saturating_sub(at).as_millis() as u64),
            session_intact,
            load: summary,
        },
        summary: headline,
        checks,
        notes,
    })
}
