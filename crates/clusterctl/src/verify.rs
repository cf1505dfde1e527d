//! `clusterctl verify`: start a cluster, run every scenario, report.
//!
//! The order matters and is part of the story: first the happy path
//! (continuity, the shared key), then a crash and the recovery from it, then a
//! planned deploy, then the failures of Redis itself, which would disturb
//! every scenario run after them (one redis-server's, or under `--redis
//! sentinel` the primary's), and last the write races, which restart the
//! nodes with other session stores.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, ClusterOptions, Persistence, RedisMode};
use crate::load::LoadSummary;
use crate::progress::Progress;
use crate::report::{print_table, svg_path, timeline_path, write_timeline, Report};
use crate::scale;
use crate::scenario_result::{ScenarioResult, Status};
use crate::scenarios::lost_updates::Race;
use crate::scenarios::redis_primary_failure::{self, Fault};
use crate::scenarios::{self, Context, Pace};

pub struct VerifyOptions {
    pub cluster: ClusterOptions,
    pub report: Option<PathBuf>,
    pub quick: bool,
    pub scale: Vec<usize>,
}

/// Runs everything and prints the table; returns whether every scenario passed.
pub async fn verify(options: VerifyOptions) -> anyhow::Result<bool> {
    let started = Instant::now();
    let progress = Progress::new();
    let (pace, race) = if options.quick {
        (Pace::QUICK, Race::QUICK)
    } else {
        (Pace::FULL, Race::FULL)
    };
    progress.begin("cluster");
    let redis = match options.cluster.redis_mode {
        RedisMode::Single => "redis-server",
        RedisMode::Sentinel => "a Redis primary, 2 replicas, 3 sentinels",
    };
    progress.step(&format!(
        "start {redis}, {} nodes, cluster-lb",
        options.cluster.nodes
    ));
    let mut cluster = Cluster::start(&options.cluster).await?;
    progress.step(&format!(
        "ready in {} ms, logs in {}",
        cluster.startup.as_millis(),
        cluster.log_dir().display()
    ));
    let startup = cluster.startup;

    let own_redis = cluster.redis.managed().is_some();
    let sentinel = cluster.redis.sentinel().is_some();
    let node_count = cluster.nodes.len();
    let mut results = Vec::new();
    let mut kill_timeline = None;
    let mut failovers = Vec::new();
    let lost_updates;
    {
        let mut ctx = Context {
            cluster: &mut cluster,
            pace,
            progress: &progress,
        };
        results.push(
            scenarios::run(
                &progress,
                "continuity",
                scenarios::continuity::run(&mut ctx),
            )
            .await
            .0,
        );
        results.push(
            scenarios::run(
                &progress,
                "shared-key",
                scenarios::shared_key::run(&mut ctx),
            )
            .await
            .0,
        );

        if node_count >= 2 {
            let victim = node_count - 1;
            let (result, figures) = scenarios::run(
                &progress,
                "node-sigkill",
                scenarios::node_kill::run(&mut ctx, victim),
            )
            .await;
            results.push(result);
            let (restart, restarted) = scenarios::run(
                &progress,
                "restart",
                scenarios::restart::run(&mut ctx, victim),
            )
            .await;
            results.push(restart);
            if let Some(killed) = figures {
                let mut segments = vec![killed.load];
                segments.extend(restarted.map(|r| r.load));
                kill_timeline = Some((killed.victim, segments));
            }
        } else {
            let reason = "needs at least 2 nodes";
            results.push(ScenarioResult::skipped("node-sigkill", reason));
            results.push(ScenarioResult::skipped("restart", reason));
        }
        if node_count >= 2 {
            results.push(
                scenarios::run(
                    &progress,
                    "rolling-restart",
                    scenarios::rolling_restart::run(&mut ctx),
                )
                .await
                .0,
            );
        } else {
            results.push(ScenarioResult::skipped(
                "rolling-restart",
                "needs at least 2 nodes",
            ));
        }

        if own_redis {
            results.push(
                scenarios::run(
                    &progress,
                    "redis-unreachable",
                    scenarios::redis_blackhole::run(&mut ctx),
                )
                .await
                .0,
            );
            results.push(
                scenarios::run(
                    &progress,
                    "redis-restart-aof",
                    scenarios::redis_restart::run(&mut ctx, Persistence::AppendOnly),
                )
                .await
                .0,
            );
            results.push(
                scenarios::run(
                    &progress,
                    "redis-restart-no-persistence",
                    scenarios::redis_restart::run(&mut ctx, Persistence::None),
                )
                .await
                .0,
            );
        } else {
            let reason = if sentinel {
                "needs one redis-server (--redis single)"
            } else {
                "Redis given by --redis-url: the harness cannot stop it"
            };
            for name in [
                "redis-unreachable",
                "redis-restart-aof",
                "redis-restart-no-persistence",
            ] {
                results.push(ScenarioResult::skipped(name, reason));
            }
        }
        for fault in [Fault::Kill, Fault::Pause] {
            let name = fault.scenario_name();
            if sentinel {
                let (result, figures) =
                    scenarios::run(&progress, name, redis_primary_failure::run(&mut ctx, fault))
                        .await;
                results.push(result);
                failovers.extend(figures);
            } else {
                results.push(ScenarioResult::skipped(
                    name,
                    redis_primary_failure::NEEDS_SENTINEL,
                ));
            }
        }
        let (result, figures) = scenarios::run(
            &progress,
            "lost-updates",
            scenarios::lost_updates::run(&mut ctx, race),
        )
        .await;
        results.push(result);
        lost_updates = figures;
    }
    let any_failed = results.iter().any(|r| r.status == Status::Failed);
    if any_failed {
        cluster.keep_logs();
    }
    let log_dir = cluster.log_dir().to_path_buf();
    drop(cluster);

    let scale = if options.scale.is_empty() {
        Vec::new()
    } else {
        let duration = if options.quick {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(5)
        };
        scale::measure(&options.cluster, &options.scale, duration, &progress).await?
    };
    progress.finish();

    let report = Report {
        nodes: node_count,
        quick: options.quick,
        rate_per_sec: pace.rate,
        cluster_startup_ms: startup.as_millis() as u64,
        duration_ms: started.elapsed().as_millis() as u64,
        passed: !any_failed,
        scenarios: results,
        scale,
        lost_updates,
        failovers,
    };
    print_table(&report);
    if any_failed {
        println!("logs of every process kept in {}", log_dir.display());
    }
    if let Some(path) = &options.report {
        report.write_json(path)?;
        println!("report: {}", path.display());
        if let Some((victim, segments)) = &kill_timeline {
            let svg = timeline_path(path);
            let segments: Vec<&LoadSummary> = segments.iter().collect();
            write_timeline(
                &segments,
                &format!("SIGKILL {victim}, then restart, under load"),
                &svg,
            )?;
            println!("timeline: {}", svg.display());
        }
        for failover in &report.failovers {
            let name = failover.fault.scenario_name();
            let svg = svg_path(path, name);
            let segments: Vec<&LoadSummary> = failover.runs.iter().map(|run| &run.load).collect();
            write_timeline(
                &segments,
                &format!("{name}, without then with REDIS_MIN_REPLICAS_ACK=1"),
                &svg,
            )?;
            println!("timeline: {}", svg.display());
        }
    }
    Ok(report.passed)
}
