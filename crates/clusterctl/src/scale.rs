//! `--scale 1,2,4,8`: how start-up time and throughput change with node count.
//!
//! For each count the harness starts a fresh cluster, records how long it took
//! until the LB reported every node up, then runs a closed loop (a fixed number
//! of workers, each sending its next `GET /whoami` as soon as the previous one
//! returns) through the LB for a few seconds. Everything shares one machine,
//! so the figure shows overhead and contention, not a cluster's real capacity.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::{Cluster, ClusterOptions};
use crate::progress::Progress;
use crate::session::Session;

/// Concurrent closed-loop workers.
const WORKERS: usize = 16;

#[derive(Debug, Clone, Serialize)]
pub struct ScalePoint {
    pub nodes: usize,
    pub startup_ms: u64,
    pub requests: u64,
    pub failed: u64,
    pub throughput_per_sec: f64,
}

pub async fn measure(
    options: &ClusterOptions,
    counts: &[usize],
    duration: Duration,
    progress: &Progress,
) -> anyhow::Result<Vec<ScalePoint>> {
    let mut points = Vec::with_capacity(counts.len());
    for &nodes in counts {
        progress.begin(&format!("scale {nodes}"));
        let cluster = Cluster::start(&ClusterOptions {
            nodes,
            lb_port: None,
            ..options.clone()
        })
        .await?;
        progress.step(&format!("{WORKERS} workers for {duration:?}"));
        let (session, _) = Session::login(&cluster.http, &cluster.lb.url(), "scale-user").await?;
        let (requests, failed) = closed_loop(&cluster, &session, duration).await;
        let point = ScalePoint {
            nodes,
            startup_ms: cluster.startup.as_millis() as u64,
            requests,
            failed,
            throughput_per_sec: (requests - failed) as f64 / duration.as_secs_f64(),
        };
        progress.end(
            &format!("scale {nodes}"),
            crate::scenario_result::Status::Passed,
            &format!(
                "start-up {} ms, {:.0} req/s",
                point.startup_ms, point.throughput_per_sec
            ),
        );
        points.push(point);
    }
    Ok(points)
}

async fn closed_loop(cluster: &Cluster, session: &Session, duration: Duration) -> (u64, u64) {
    let requests = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let url = format!("{}/whoami", cluster.lb.url());
    let cookie = session.cookie().unwrap_or_default().to_string();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..WORKERS {
        let (http, url, cookie) = (cluster.http.clone(), url.clone(), cookie.clone());
        let (requests, failed) = (requests.clone(), failed.clone());
        workers.spawn(async move {
            while Instant::now() < deadline {
                let ok = match http
                    .get(&url)
                    .header(reqwest::header::COOKIE, &cookie)
                    .send()
                    .await
                {
                    Ok(response) => {
                        response.status().is_success() && response.bytes().await.is_ok()
                    }
                    Err(_) => false,
                };
                requests.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    (
        requests.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    )
}
