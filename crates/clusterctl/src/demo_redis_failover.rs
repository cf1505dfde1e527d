//! The demo's last step under `--redis sentinel`: SIGKILL the Redis primary under load and
//! watch Sentinel replace it while alice stays logged in.
//!
//! With one redis-server the demo kills Redis and every session is gone; with Sentinel the
//! same crash costs a couple of seconds of 503s and nothing else. This step shows that, with
//! the evidence a learner can check: which instance Sentinel promoted and when, how long the
//! load went without service, alice's session after, and her atomic counter against the
//! increments she was told had happened.

use std::time::Duration;

use anyhow::Context as _;
use cluster_kit::Member;

use crate::cluster::{wait_until, Cluster};
use crate::demo::{evidence, step};
use crate::load::{LoadPlan, LoadRun, Mix};
use crate::session::Session;

pub async fn kill_the_primary(cluster: &mut Cluster, alice: &Session) -> anyhow::Result<()> {
    let http = cluster.http.clone();
    let lb = cluster.lb.url();
    let topology = cluster
        .redis
        .sentinel()
        .context("the Redis failover step needs --redis sentinel")?;
    let old = topology
        .primary()
        .context("no Redis primary before the failover")?;

    step(
        &format!("SIGKILL the Redis primary (redis{old}) while 50 requests/s flow through the LB"),
        "three sentinels watch it; when two agree it is gone (1 s without an answer here), they promote a replica and the nodes ask them for the new primary",
    );
    let load = LoadRun::start(
        http.clone(),
        LoadPlan {
            base_url: lb.clone(),
            rate_per_sec: 50,
            max_duration: Duration::from_secs(20),
            cookies: alice.cookie().map(str::to_string).into_iter().collect(),
            mix: Mix::FAILOVER,
        },
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = load.elapsed();
    topology.kill(Member::Redis(old));
    let new = topology.failover(old, Duration::from_secs(15)).await?;
    evidence(&format!(
        "Sentinel announced redis{new} as the primary {} ms after the kill",
        load.elapsed().saturating_sub(killed).as_millis()
    ));
    // Service is back when a request succeeds after the failures the kill caused.
    let back = wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            let (failed, outage) = load.inspect(|ledger| {
                (
                    ledger.summary(load.elapsed()).total.failed(),
                    ledger.outage_since(),
                )
            });
            (failed > 0 && outage.is_none()).then_some(())
        },
    )
    .await;
    if back.is_none() {
        evidence("the load still fails 10 s after the failover");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let summary = load.finish(crate::scenarios::GRACE).await;
    let statuses: Vec<String> = summary
        .failures
        .iter()
        .map(|(what, n)| format!("{n} x {what}"))
        .collect();
    evidence(&format!(
        "{} requests: {} ok, {} failed ({}), the longest run of failures {} ms",
        summary.total.sent,
        summary.total.ok,
        summary.total.failed(),
        if statuses.is_empty() {
            "none".to_string()
        } else {
            statuses.join(", ")
        },
        summary.longest_outage_ms()
    ));

    let mut alice = alice.clone();
    let reply = alice.whoami(&http, &lb).await?;
    evidence(&format!(
        "{} says user = {}: the session was on the replicas too",
        reply.served_by.as_deref().unwrap_or("?"),
        reply.user().unwrap_or("nobody (LOST)")
    ));
    let counter = alice
        .send(
            &http,
            reqwest::Method::GET,
            &lb,
            "/counter?mode=atomic",
            None,
        )
        .await?
        .counter()
        .unwrap_or(0);
    let acked = summary.acked_increments.get(&0).copied().unwrap_or(0);
    evidence(&format!(
        "alice's atomic counter is {counter}; {acked} increments were acknowledged (fewer in the counter would be writes lost with the old primary)"
    ));
    Ok(())
}
