//! `clusterctl up`: a cluster to play with, until Ctrl-C.

use crate::cluster::{Cluster, ClusterOptions, RedisMode};
use crate::controls::Controls;

/// Starts the cluster, prints where everything is, and answers the dashboard's
/// controls (`controls.rs`) until `main` stops waiting on Ctrl-C or SIGTERM;
/// dropping the cluster stops it.
pub async fn up(options: ClusterOptions) -> anyhow::Result<bool> {
    let redis = match options.redis_mode {
        RedisMode::Single => "redis-server",
        RedisMode::Sentinel => "3 redis-server and 3 redis-sentinel",
    };
    eprintln!(
        "starting {redis}, {} nodes and cluster-lb...",
        options.nodes
    );
    let cluster = Cluster::start(&options).await?;
    let controls = Controls::bind().await?;
    cluster
        .lb
        .admin
        .register_controls(controls.address()?)
        .await?;
    let lb = cluster.lb.url();
    println!(
        "cluster up: {} nodes, ready in {} ms",
        cluster.nodes.len(),
        cluster.startup.as_millis()
    );
    println!("  load balancer  {lb}");
    println!("  LB admin       {}/backends", cluster.lb.admin.url());
    println!("  admin token    {}", cluster.lb.admin.token());
    // The token is hex: it needs no escaping in a URL.
    println!(
        "  dashboard      {}/dashboard?token={}",
        cluster.lb.admin.url(),
        cluster.lb.admin.token()
    );
    for node in &cluster.nodes {
        println!("  {:<14} {}", node.id, node.url());
    }
    for line in cluster.redis.describe() {
        println!("  {line}");
    }
    if options.min_replicas_ack > 0 {
        println!(
            "  each write waits for {} replica(s) (REDIS_MIN_REPLICAS_ACK)",
            options.min_replicas_ack
        );
    }
    println!("  logs           {}", cluster.log_dir().display());
    println!();
    println!("try:");
    println!("  curl -si -c /tmp/jar -H 'content-type: application/json' -d '{{\"user\":\"alice\"}}' {lb}/login");
    println!(
        "  curl -si -b /tmp/jar {lb}/whoami    # repeat: X-Served-By changes, the user does not"
    );
    println!("The dashboard's buttons kill and restart nodes and Redis, and start a load.");
    println!("Ctrl-C stops everything.");
    controls.serve(cluster).await;
    Ok(true)
}
