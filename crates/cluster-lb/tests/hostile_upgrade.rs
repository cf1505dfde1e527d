//! A client must not be able to turn the balancer against a backend with `Upgrade` headers.
//!
//! Real `cluster-app` nodes (on a private Redis) behind an in-process balancer, and a hostile
//! client on raw sockets. A node that is offered an upgrade it will not do answers and then
//! closes its connection; a node offered one on a request with a body reads that body until
//! the connection closes. Neither may cost a bystander a request, take a node out of rotation,
//! or hang the hostile request itself. The nodes' binary comes from the workspace build
//! (`cargo build --workspace`, which `cargo nextest run --workspace` does).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_kit::RedisServer;
use cluster_lb::Settings;
use common::cluster_node::Node;
use common::{client, raw_status, Lb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn cluster(nodes: usize) -> (RedisServer, Vec<Node>, Lb) {
    let redis = RedisServer::start();
    let mut started = Vec::new();
    for n in 1..=nodes {
        started.push(Node::start(&format!("node{n}"), &redis).await);
    }
    let addresses = started.iter().map(Node::backend_address).collect();
    let lb = Lb::start(Settings::with_backends(addresses)).await;
    (redis, started, lb)
}

/// Reads from `stream` until `responses` status lines have arrived, the peer closes, or `limit`.
async fn read_responses(stream: &mut TcpStream, responses: usize, limit: Duration) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    while String::from_utf8_lossy(&received)
        .matches("HTTP/1.1 ")
        .count()
        < responses
    {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buffer[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// For `duration`, about 30 times a second: a new connection carrying a `GET /healthz` that
/// offers an upgrade (`foo`, or `websocket`, which is passed on and refused), pipelined with a
/// second request. Returns the rounds sent.
async fn hostile_client(lb: SocketAddr, duration: Duration) -> usize {
    let started = Instant::now();
    let mut pace = tokio::time::interval(Duration::from_millis(33));
    let mut rounds = 0;
    while started.elapsed() < duration {
        pace.tick().await;
        let protocol = if rounds % 2 == 0 { "foo" } else { "websocket" };
        let request = format!(
            "GET /healthz HTTP/1.1\r\nHost: lb\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n\r\n\
             GET /healthz HTTP/1.1\r\nHost: lb\r\n\r\n"
        );
        if let Ok(mut stream) = TcpStream::connect(lb).await {
            if stream.write_all(request.as_bytes()).await.is_ok() {
                read_responses(&mut stream, 2, Duration::from_secs(1)).await;
            }
        }
        rounds += 1;
    }
    rounds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upgrades_cost_bystanders_nothing() {
    let (_redis, nodes, lb) = cluster(2).await;
    let lb = Arc::new(lb);
    let duration = Duration::from_secs(3);

    // Watches the admin API the whole time: a node that leaves rotation even briefly counts.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (lb, stop) = (Arc::clone(&lb), Arc::clone(&stop));
        let ids: Vec<String> = nodes.iter().map(|node| node.address.clone()).collect();
        tokio::spawn(async move {
            let mut seen_down = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                for id in &ids {
                    let state = lb.state_of(id).await;
                    if state != "up" {
                        seen_down.push(format!("{id} {state}"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen_down
        })
    };
    let bystander = {
        let url = lb.url("/whoami");
        tokio::spawn(async move {
            let http = client();
            let (mut answered, mut failures) = (0, Vec::new());
            let started = Instant::now();
            while started.elapsed() < duration {
                match http.get(&url).send().await {
                    Ok(response) if response.status().is_success() => answered += 1,
                    Ok(response) => failures.push(response.status().to_string()),
                    Err(e) => failures.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (answered, failures)
        })
    };
    let rounds = hostile_client(lb.addr, duration).await;
    let (answered, failures) = bystander.await.expect("bystander");
    stop.store(true, Ordering::SeqCst);
    let seen_down = watcher.await.expect("watcher");

    eprintln!("{rounds} hostile rounds; bystander: {answered} answered, {failures:?} failed");
    assert!(rounds >= 30, "the hostile client ran: {rounds} rounds");
    assert!(answered > 0, "the bystander was answered");
    assert!(failures.is_empty(), "bystander failures: {failures:?}");
    assert!(
        seen_down.is_empty(),
        "a node left the rotation: {:?}",
        &seen_down[..seen_down.len().min(5)]
    );
    // Not even a failed attempt retried out of sight: no connection the nodes closed was reused.
    let failed_attempts = upstream_errors(&lb).await;
    assert!(
        failed_attempts.is_empty(),
        "failed attempts: {failed_attempts:?}"
    );
}

/// The balancer's non-zero `lb_upstream_errors_total` lines.
async fn upstream_errors(lb: &Lb) -> Vec<String> {
    let metrics = client()
        .get(lb.admin_url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    metrics
        .lines()
        .filter(|line| line.starts_with("lb_upstream_errors_total{") && !line.ends_with(" 0"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_offering_websocket_is_answered_as_a_plain_request() {
    let (_redis, _nodes, lb) = cluster(1).await;
    let body = r#"{"user":"alice"}"#;
    let request = format!(
        "POST /login HTTP/1.1\r\nHost: lb\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(lb.addr).await.expect("connect");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let started = Instant::now();
    // A hang would last the balancer's 30 s response timeout; an answer takes milliseconds.
    let response = read_responses(&mut stream, 1, Duration::from_secs(5)).await;
    assert_eq!(
        raw_status(&response),
        200,
        "answered within {:?}: {response:?}",
        started.elapsed()
    );
    assert!(
        !response.to_ascii_lowercase().contains("upgrade: websocket"),
        "{response}"
    );
}
