//! `clusterctl demo`: the guided tour, on 3 nodes.
//!
//! Each step says what it does and why, then prints the evidence: which node
//! answered, what the session holds, what failed. It is meant to be read
//! top to bottom by someone meeting the project for the first time.

use std::time::{Duration, Instant};

use crate::cluster::{random_hex, wait_until, Cluster, ClusterOptions, Persistence};
use crate::demo_redis_failover;
use crate::load::{LoadPlan, LoadRun, Mix};
use crate::session::{Reply, Session};

pub async fn demo(options: ClusterOptions) -> anyhow::Result<bool> {
    step(
        "Start Redis, 3 cluster-app nodes and cluster-lb",
        "the nodes keep no session state: it lives in Redis, and every node gets the same session key",
    );
    let mut cluster = Cluster::start(&options).await?;
    let http = cluster.http.clone();
    let lb = cluster.lb.url();
    evidence(&format!(
        "LB {lb}, ready in {} ms",
        cluster.startup.as_millis()
    ));
    for node in &cluster.nodes {
        evidence(&format!("{} at {}", node.id, node.url()));
    }
    for line in cluster.redis.describe() {
        evidence(&line);
    }

    step(
        "Log in as alice through the LB",
        "the node that answers creates the session in Redis and sends a cookie holding its encrypted id",
    );
    let (mut alice, login) = Session::login(&http, &lb, "alice").await?;
    evidence(&format!("served by {}", served(&login)));
    evidence(&format!(
        "cookie: {}",
        shorten(alice.cookie().unwrap_or_default())
    ));

    step(
        "Ask /whoami six times through the LB",
        "the LB spreads requests; every node finds the same session",
    );
    for _ in 0..6 {
        let reply = alice.whoami(&http, &lb).await?;
        evidence(&format!(
            "{} says user = {}",
            served(&reply),
            reply.user().unwrap_or("nobody")
        ));
    }

    let (first, last) = (cluster.nodes[0].url(), cluster.nodes[2].url());
    step(
        "Increment the counter on node1 directly, read it on node3 directly",
        "only the cookie travels between them: the state is in Redis, not in a node",
    );
    for _ in 0..3 {
        alice.incr(&http, &first).await?;
    }
    let reply = alice.whoami(&http, &last).await?;
    evidence(&format!(
        "{} reads counter = {}",
        served(&reply),
        reply.counter().unwrap_or(-1)
    ));

    step(
        "Start a fourth node with a different session key and show it alice's cookie",
        "the key decrypts the cookie; a node with another key sees an anonymous visitor",
    );
    let mut settings = cluster.settings.clone();
    settings.session_key = random_hex(64)?;
    let mut stranger = cluster.start_extra_node("other-key", &settings)?;
    stranger.wait_ready(&http, Duration::from_secs(20)).await?;
    let reply = alice.clone().whoami(&http, &stranger.url()).await?;
    evidence(&format!(
        "{} says user = {}",
        served(&reply),
        reply.user().unwrap_or("nobody (as expected)")
    ));
    drop(stranger);

    step(
        "SIGKILL node2 while 100 requests/s flow through the LB",
        "a crash may cut the requests it was serving; the LB retries reads elsewhere and takes the node out",
    );
    let load = LoadRun::start(
        http.clone(),
        LoadPlan {
            base_url: lb.clone(),
            rate_per_sec: 100,
            max_duration: Duration::from_secs(4),
            cookies: alice.cookie().map(str::to_string).into_iter().collect(),
            mix: Mix::READS_AND_WRITES,
        },
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.nodes[1].kill();
    let killed = Instant::now();
    let addr = cluster.nodes[1].addr.clone();
    let out = wait_until(
        Duration::from_secs(5),
        Duration::from_millis(10),
        || async {
            let backend = cluster.lb.admin.backend(&addr).await.ok()?;
            (backend.state != "up").then(|| killed.elapsed())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let summary = load.finish(crate::scenarios::GRACE).await;
    evidence(&format!(
        "LB marked node2 {} after the kill",
        out.map(|d| format!("out {} ms", d.as_millis()))
            .unwrap_or_else(|| "never out".into())
    ));
    evidence(&format!(
        "{} requests: {} ok, {} failed reads, {} failed writes; served by {:?}",
        summary.total.sent,
        summary.total.ok,
        summary.reads.failed(),
        summary.writes.failed(),
        summary.served_by
    ));
    let reply = alice.whoami(&http, &lb).await?;
    evidence(&format!(
        "alice is still {} (counter {})",
        reply.user().unwrap_or("nobody"),
        reply.counter().unwrap_or(-1)
    ));

    step(
        "Start node2 again",
        "the LB's health checks see /readyz answer 200 and send it traffic again",
    );
    cluster.nodes[1].restart()?;
    cluster.nodes[1]
        .wait_ready(&http, Duration::from_secs(20))
        .await?;
    let back = cluster
        .lb
        .admin
        .wait_state(&addr, "up", Duration::from_secs(5))
        .await;
    evidence(&format!(
        "LB reports node2 {}",
        if back { "up" } else { "still not up" }
    ));

    step(
        "SIGKILL Redis and ask node1",
        "without Redis no node can read a session: it must say so at once (503), not hang",
    );
    let redis = cluster.redis.managed();
    if let Some(redis) = redis {
        redis.kill();
        let reply = alice.clone().whoami(&http, &first).await?;
        evidence(&format!(
            "{} answered {} in {} ms",
            served(&reply),
            reply.status,
            reply.elapsed.as_millis()
        ));

        step(
            "Start Redis again (it had no persistence)",
            "the nodes reconnect within a second, but the sessions were only in Redis's memory",
        );
        redis.start_again(Persistence::None).await?;
        let reply = wait_until(
            Duration::from_secs(5),
            Duration::from_millis(10),
            || async {
                let reply = alice.clone().whoami(&http, &first).await.ok()?;
                reply.is_ok().then_some(reply)
            },
        )
        .await;
        match reply {
            Some(reply) => evidence(&format!(
                "{} answers 200 again; user = {} (sessions lost: run Redis with appendonly yes to keep them)",
                served(&reply),
                reply.user().unwrap_or("nobody")
            )),
            None => evidence("node1 did not answer 200 within 5 s"),
        }
    }
    if cluster.redis.sentinel().is_some() {
        demo_redis_failover::kill_the_primary(&mut cluster, &alice).await?;
    }

    println!();
    println!("Done. `clusterctl verify` runs all of this with pass/fail checks; `clusterctl up` keeps a cluster running.");
    Ok(true)
}

pub fn step(what: &str, why: &str) {
    println!();
    println!("==> {what}");
    println!("    why: {why}");
}

pub fn evidence(line: &str) {
    println!("    - {line}");
}

fn served(reply: &Reply) -> String {
    reply.served_by.clone().unwrap_or_else(|| "?".into())
}

fn shorten(cookie: &str) -> String {
    match cookie.char_indices().nth(40) {
        Some((cut, _)) => format!("{}...", &cookie[..cut]),
        None => cookie.to_string(),
    }
}
