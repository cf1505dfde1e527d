//! Panic mode: the balancer must not add to an outage of what every backend depends on.
//!
//! When the shared Redis dies, every node's `/readyz` fails and the balancer takes them all
//! out; with panic mode it routes to them anyway, so when Redis returns the first request the
//! nodes can serve is served, not the first after `rise` health checks. Real `cluster-app` nodes
//! on a real `redis-server` measure that, with panic mode off (the delay the balancer adds) and
//! on (none). Test backends then pin the rules around it: one backend of three down is no
//! panic, two are; a draining backend gets nothing even in panic; a 503 from every backend is
//! retried only within the retry budget.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_kit::RedisServer;
use cluster_lb::panic_mode::PanicThreshold;
use cluster_lb::{Algorithm, Settings};
use common::cluster_node::Node;
use common::{client, metric, settings_for, BackendOptions, Lb, TestBackend};
use hyper::StatusCode;
use serde_json::{json, Value};
use tokio::task::JoinSet;

/// From Redis answering again to the first `GET /whoami` that shows the logged-in user.
#[derive(Debug)]
struct Recovery {
    /// Asking the nodes directly: how long the nodes themselves take.
    direct: Duration,
    /// Through the balancer.
    through_lb: Duration,
}

impl Recovery {
    /// What the balancer adds to the nodes' own recovery.
    fn added(&self) -> Duration {
        self.through_lb.saturating_sub(self.direct)
    }
}

/// Polls `urls` in turn every 5 ms with the session `cookie` until one shows the user; returns
/// when that answer arrived.
async fn first_served(urls: Vec<String>, cookie: String) -> Instant {
    let http = client();
    for url in urls.iter().cycle() {
        let answer = http.get(url).header("cookie", &cookie).send().await;
        if let Ok(response) = answer {
            if response.status() == StatusCode::OK {
                let body: Value = response.json().await.unwrap_or_default();
                if body["user"] == "alice" {
                    return Instant::now();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    unreachable!("cycle() never ends")
}

/// The backends' states as the admin API shows them, and whether it is in panic mode.
async fn states(lb: &Lb) -> (Vec<String>, bool) {
    let list: Value = client()
        .get(lb.admin_url("/backends"))
        .send()
        .await
        .expect("GET /backends")
        .json()
        .await
        .expect("JSON");
    let states = list["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| b["state"].as_str().unwrap_or("").to_string())
        .collect();
    (states, list["panic"] == true)
}

/// Kills Redis under a logged-in session, waits until the balancer has taken every node out,
/// starts Redis again (with its append-only file: the session survives) and measures how soon
/// the session is served again, through `lb` and directly.
async fn redis_outage(redis: &mut RedisServer, nodes: &[Node], lb: &Lb, cookie: &str) -> Recovery {
    redis.kill();
    let all_down = cluster_kit::wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            let (states, _) = states(lb).await;
            states.iter().all(|s| s == "down").then_some(())
        },
    )
    .await;
    assert!(
        all_down.is_some(),
        "the balancer did not take the nodes out"
    );
    // Meanwhile a client gets a fast answer: the nodes' 503 in panic mode, the balancer's without.
    let during = client()
        .get(lb.url("/whoami"))
        .header("cookie", cookie)
        .send()
        .await;
    assert_eq!(during.expect("an answer").status(), 503);

    let direct_urls = nodes.iter().map(|node| node.url("/whoami")).collect();
    let direct = tokio::spawn(first_served(direct_urls, cookie.to_string()));
    let through_lb = tokio::spawn(first_served(vec![lb.url("/whoami")], cookie.to_string()));
    tokio::task::block_in_place(|| redis.restart());
    let back = Instant::now();
    let limit = Duration::from_secs(10);
    let direct = tokio::time::timeout(limit, direct)
        .await
        .expect("nodes serve again")
        .expect("task");
    let through_lb = tokio::time::timeout(limit, through_lb)
        .await
        .expect("the balancer serves again")
        .expect("task");
    Recovery {
        direct: direct.saturating_duration_since(back),
        through_lb: through_lb.saturating_duration_since(back),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_returns_the_balancer_serves_as_soon_as_the_nodes_do() {
    let mut redis = RedisServer::start_with_aof();
    let mut nodes = Vec::new();
    for n in 1..=3 {
        nodes.push(Node::start(&format!("node{n}"), &redis).await);
    }
    let addresses: Vec<_> = nodes.iter().map(Node::backend_address).collect();
    let login = client()
        .post(nodes[0].url("/login"))
        .json(&json!({ "user": "alice" }))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("name=value")
        .to_string();

    // The default health checks (every 500 ms, 2 to rise), with panic mode off, then on.
    let mut recoveries = Vec::new();
    for percent in [0, PanicThreshold::DEFAULT.percent()] {
        let mut settings = Settings::with_backends(addresses.clone());
        settings.panic_threshold = PanicThreshold::new(percent).expect("a valid threshold");
        let lb = Lb::start(settings).await;
        let recovery = redis_outage(&mut redis, &nodes, &lb, &cookie).await;
        eprintln!(
            "panic threshold {percent} %: {recovery:?}, the balancer adds {:?}",
            recovery.added()
        );
        recoveries.push(recovery);
        lb.stop().await;
    }
    let [without, with] = &recoveries[..] else {
        unreachable!()
    };
    assert!(
        with.added() <= Duration::from_millis(200),
        "with panic mode the balancer still adds {:?} to the nodes' recovery",
        with.added()
    );
    assert!(
        without.added() > with.added(),
        "panic mode made no difference: {without:?} without, {with:?} with"
    );
}

/// Three test backends, round-robin, health checks every 100 ms.
async fn three_backends(options: BackendOptions) -> (Vec<TestBackend>, Lb) {
    let mut backends = Vec::new();
    for name in ["b0", "b1", "b2"] {
        backends.push(TestBackend::start_with(name, options.clone()).await);
    }
    let mut settings = settings_for(&backends.iter().collect::<Vec<_>>());
    settings.proxy.algorithm = Algorithm::RoundRobin;
    settings.health.interval = Duration::from_millis(100);
    let lb = Lb::start(settings).await;
    (backends, lb)
}

async fn get_n(lb: &Lb, n: usize) {
    for _ in 0..n {
        let response = client().get(lb.url("/x")).send().await.expect("response");
        assert_eq!(response.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_three_down_is_routed_around_two_down_is_panic() {
    let (backends, lb) = three_backends(BackendOptions::default()).await;
    let requests = || {
        backends
            .iter()
            .map(TestBackend::requests)
            .collect::<Vec<_>>()
    };

    backends[0].set_ready(false);
    lb.wait_for_state(&backends[0].address(), "down", Duration::from_secs(5))
        .await
        .expect("marked down");
    get_n(&lb, 30).await;
    assert_eq!(
        requests(),
        [0, 15, 15],
        "one of three down: it gets nothing"
    );
    assert!(!states(&lb).await.1, "panic with two of three healthy");
    assert_eq!(metric(&lb, "lb_panic_routed_total").await, 0.0);

    backends[1].set_ready(false);
    lb.wait_for_state(&backends[1].address(), "down", Duration::from_secs(5))
        .await
        .expect("marked down");
    get_n(&lb, 30).await;
    assert_eq!(
        requests(),
        [10, 25, 25],
        "two of three down: all three serve"
    );
    assert!(states(&lb).await.1, "/backends shows panic mode");
    assert_eq!(metric(&lb, "lb_panic_routed_total").await, 20.0);
    assert_eq!(metric(&lb, "lb_panic_mode").await, 1.0);

    backends[0].set_ready(true);
    lb.wait_for_state(&backends[0].address(), "up", Duration::from_secs(5))
        .await
        .expect("back up");
    get_n(&lb, 1).await;
    assert!(!states(&lb).await.1);
    assert_eq!(metric(&lb, "lb_panic_mode").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_backend_gets_nothing_even_in_panic() {
    let (backends, lb) = three_backends(BackendOptions::default()).await;
    let drain = client()
        .post(lb.admin_url(&format!("/backends/{}/drain", backends[2].address())))
        .send()
        .await
        .expect("drain");
    assert_eq!(drain.status(), 200);
    for backend in &backends {
        backend.set_ready(false);
    }
    for backend in &backends[..2] {
        lb.wait_for_state(&backend.address(), "down", Duration::from_secs(5))
            .await
            .expect("marked down");
    }
    get_n(&lb, 30).await;
    assert!(
        states(&lb).await.1,
        "every backend in service is down: panic"
    );
    let requests: Vec<usize> = backends.iter().map(TestBackend::requests).collect();
    assert_eq!(requests, [15, 15, 0], "the draining backend got traffic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_from_every_backend_is_retried_only_within_the_budget() {
    let unavailable = BackendOptions {
        status: Some(StatusCode::SERVICE_UNAVAILABLE),
        ..Default::default()
    };
    let (backends, lb) = three_backends(unavailable).await;
    for backend in &backends {
        backend.set_ready(false);
    }
    for backend in &backends {
        lb.wait_for_state(&backend.address(), "down", Duration::from_secs(5))
            .await
            .expect("marked down");
    }

    const CLIENTS: usize = 4;
    const EACH: usize = 150;
    let started = Instant::now();
    let url = Arc::new(lb.url("/x"));
    let mut clients = JoinSet::new();
    for _ in 0..CLIENTS {
        let url = Arc::clone(&url);
        clients.spawn(async move {
            let http = client();
            for _ in 0..EACH {
                let response = http.get(url.as_str()).send().await.expect("response");
                assert_eq!(response.status(), 503);
                assert!(
                    response.headers().contains_key("x-served-by"),
                    "the backends' own 503, not the balancer's"
                );
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.expect("client");
    }
    let elapsed = started.elapsed().as_secs_f64();

    let sent = CLIENTS * EACH;
    let received: usize = backends.iter().map(TestBackend::requests).sum();
    // The budget: a full bucket of 100 retries, 20 % of the requests, 10 a second.
    let budget = 100.0 + sent as f64 * 0.2 + 10.0 * (elapsed + 1.0);
    assert!(
        (received - sent) as f64 <= budget,
        "{sent} requests made {received} attempts: more retries than the budget's {budget:.0}"
    );
    assert!(
        metric(&lb, "lb_retries_refused_total").await > 0.0,
        "the budget was never reached"
    );
    eprintln!(
        "{sent} requests, every backend answering 503: {received} attempts in {elapsed:.2} s"
    );
}
