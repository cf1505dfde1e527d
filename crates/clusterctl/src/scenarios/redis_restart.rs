//! Redis restart: what sessions survive, and how the nodes behave meanwhile.
//!
//! Redis is SIGKILLed and started again on the same port. With the append-only
//! file every acknowledged session write comes back; without persistence every
//! session is gone and users are logged out (the report says so: that is the
//! price of a cache-only Redis). Either way, while Redis is away a node must
//! answer 503 at once rather than hang, and 200 again soon after Redis returns.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use super::{ms, Context};
use crate::cluster::{wait_until, Persistence};
use crate::scenario_result::{Check, ScenarioOutcome};
use crate::session::Session;

#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub persistence: Persistence,
    /// Status and latency of the requests made while Redis was down.
    pub statuses_while_down: Vec<u16>,
    pub slowest_while_down_ms: f64,
    /// From "Redis answers PING" until every node answered 200 again.
    pub recovery_ms: Option<u64>,
    pub session_survived: bool,
}

/// "Fast" for a 503: well under a second, whatever the node's Redis timeout.
const FAST: Duration = Duration::from_millis(1000);
const RECOVERY: Duration = Duration::from_secs(1);
pub const NEEDS_OWN_REDIS: &str = "needs the harness's own redis-server (not --redis-url)";

pub async fn run(
    ctx: &mut Context<'_>,
    persistence: Persistence,
) -> anyhow::Result<ScenarioOutcome<Figures>> {
    let http = ctx.cluster.http.clone();
    let nodes: Vec<String> = ctx.cluster.nodes.iter().map(|node| node.url()).collect();
    let redis = ctx.cluster.redis.managed().context(NEEDS_OWN_REDIS)?;

    ctx.progress
        .step(&format!("restart Redis with persistence {persistence:?}"));
    redis.kill();
    redis.wipe()?;
    redis.start_again(persistence).await?;
    let lb = ctx.cluster.lb.url();
    wait_until(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async {
            let reply = Session::new().whoami(&http, &lb).await.ok()?;
            reply.is_ok().then_some(())
        },
    )
    .await;

    ctx.progress.step("log in, store an item");
    let (mut session, _) = Session::login(&http, &lb, "carol").await?;
    session
        .put_item(&http, &lb, "cart", serde_json::json!(["book"]))
        .await?;

    ctx.progress.step("SIGKILL Redis, ask every node");
    let redis = ctx.cluster.redis.managed().context(NEEDS_OWN_REDIS)?;
    redis.kill();
    let mut statuses_while_down = Vec::new();
    let mut slowest = Duration::ZERO;
    for url in &nodes {
        let reply = session.clone().whoami(&http, url).await?;
        statuses_while_down.push(reply.status);
        slowest = slowest.max(reply.elapsed);
    }

    ctx.progress
        .step("start Redis again, wait for 200 on every node");
    redis.start_again(persistence).await?;
    let back = Instant::now();
    let mut recovered = true;
    for url in &nodes {
        let ok = wait_until(
            Duration::from_secs(5),
            Duration::from_millis(10),
            || async {
                let reply = session.clone().whoami(&http, url).await.ok()?;
                reply.is_ok().then_some(())
            },
        )
        .await;
        recovered &= ok.is_some();
    }
    let recovery = recovered.then(|| back.elapsed());

    let reply = session.whoami(&http, &lb).await?;
    let session_survived = reply.user() == Some("carol")
        && reply.body.pointer("/items/cart/0").and_then(|v| v.as_str()) == Some("book");

    let all_503 = statuses_while_down.iter().all(|s| *s == 503);
    let (expected_fate, note) = match persistence {
        Persistence::AppendOnly => (
            true,
            "with appendonly yes + appendfsync always, sessions survive a Redis crash",
        ),
        Persistence::None => (
            false,
            "without persistence a Redis restart loses every session: users are logged out",
        ),
    };
    let checks = vec![
        Check::new(
            "503 from every node while Redis is down",
            "503",
            format!("{statuses_while_down:?}"),
            all_503,
        ),
        Check::new(
            "503 answered fast",
            format!("< {}", ms(FAST)),
            ms(slowest),
            slowest < FAST,
        ),
        Check::new(
            "200 on every node after Redis is back",
            format!("<= {}", ms(RECOVERY)),
            recovery.map(ms).unwrap_or_else(|| "not within 5 s".into()),
            recovery.is_some_and(|d| d <= RECOVERY),
        ),
        Check::new(
            "session after the restart",
            if expected_fate { "survived" } else { "lost" },
            if session_survived { "survived" } else { "lost" },
            session_survived == expected_fate,
        ),
    ];
    Ok(ScenarioOutcome {
        summary: format!(
            "while down: 503 in <= {}; back: 200 after {}; session {}",
            ms(slowest),
            recovery.map(ms).unwrap_or_else(|| "never".into()),
            if session_survived { "survived" } else { "LOST" }
        ),
        figures: Figures {
            persistence,
            statuses_while_down,
            slowest_while_down_ms: slowest.as_secs_f64() * 1000.0,
            recovery_ms: recovery.map(|d| d.as_millis() as u64),
            session_survived,
        },
        checks,
        notes: vec![note.to_string()],
    })
}
