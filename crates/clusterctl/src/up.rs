//! `clusterctl up`: a cluster to play with, until Ctrl-C.

use crate::cluster::{Cluster, ClusterOptions, RedisMode};

/// Starts the cluster, prints where everything is, and waits forever; `main`
/// stops waiting on Ctrl-C or SIGTERM, and dropping the cluster stops it.
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
    let lb = cluster.lb.url();
    println!(
        "cluster up: {} nodes, ready in {} ms",
        cluster.nodes.len(),
        cluster.startup.as_millis()
    );
    println!("  load balancer  {lb}");
    println!("  LB admin       {}/backends", cluster.lb.admin.url());
    println!("  admin token    {}", cluster.lb.admin.token());
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
    println!("Ctrl-C stops everything.");
    std::future::pending::<()>().await;
    Ok(true)
}
