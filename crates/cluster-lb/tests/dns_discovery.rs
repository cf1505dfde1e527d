//! Backends found in DNS (`--backend-dns`), against a real DNS server the test controls and real
//! backends on 127.0.0.N sharing one port, as an orchestrator's replicas behind one name: an
//! address that appears gets traffic only once its health checks pass, one that disappears is
//! drained and then removed, with no failed GET under load through either; a DNS server that
//! answers nothing, or stops answering, leaves the pool as it was; static, admin and DNS
//! backends mix.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cluster_lb::dns_discovery::DnsTarget;
use cluster_lb::{Algorithm, Settings};
use common::dns_server::DnsServer;
use common::lb_process::LbBuilder;
use common::{client, metric, start_load, BackendOptions, Lb, TestBackend};
use reqwest::Method;
use serde_json::{json, Value};

/// The name the replicas are published under.
const SERVICE: &str = "tasks.node";

/// Loopback address `127.0.0.n`: every one reaches this machine.
fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// `count` replicas on 127.0.0.2, 127.0.0.3, ..., all on one port, which is returned.
async fn replicas(count: u8) -> (u16, Vec<TestBackend>) {
    let first = TestBackend::start_on(
        "replica-2",
        SocketAddr::from((loopback(2), 0)),
        BackendOptions::default(),
    )
    .await;
    let port = first.addr.port();
    let mut all = vec![first];
    for n in 3..2 + count {
        let address = SocketAddr::from((loopback(n), port));
        all.push(
            TestBackend::start_on(&format!("replica-{n}"), address, BackendOptions::default())
                .await,
        );
    }
    (port, all)
}

/// Settings that resolve `SERVICE` through `dns` every 100 ms, with quick health checks.
fn discovering(dns: &DnsServer, port: u16, mut settings: Settings) -> Settings {
    let target =
        DnsTarget::parse(&format!("{}:{port}", DnsServer::name(SERVICE))).expect("a valid target");
    settings.discovery.targets = vec![target];
    settings.discovery.server = Some(dns.addr);
    settings.discovery.interval = Duration::from_millis(100);
    settings.health.interval = Duration::from_millis(100);
    settings
}

/// The admin API's list of backends.
async fn listed(lb: &Lb) -> Vec<Value> {
    let list: Value = client()
        .get(lb.admin_url("/backends"))
        .send()
        .await
        .expect("GET /backends")
        .json()
        .await
        .expect("JSON");
    list["backends"].as_array().cloned().unwrap_or_default()
}

/// `lb_dns_resolutions_total` for `SERVICE` on `port` with this outcome.
async fn resolutions(lb: &Lb, port: u16, outcome: &str) -> f64 {
    let target = format!("{}:{port}", DnsServer::name(SERVICE));
    metric(
        lb,
        &format!("lb_dns_resolutions_total{{outcome=\"{outcome}\",target=\"{target}\"}}"),
    )
    .await
}

async fn wait_for(limit: Duration, check: impl Fn() -> bool) -> bool {
    common::wait_until(limit, check).await
}

/// Does `replica` go on getting requests (20 more within 5 s)?
async fn still_serving(replica: &TestBackend) -> bool {
    let before = replica.requests();
    wait_for(Duration::from_secs(5), || replica.requests() > before + 20).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_join_after_their_checks_and_leave_drained_with_no_failed_get() {
    let dns = DnsServer::start().await;
    let (port, replicas) = replicas(3).await;
    let [first, unready, ready] = &replicas[..] else {
        unreachable!()
    };
    dns.set(SERVICE, &[loopback(2)]).await;
    let lb = Lb::start(discovering(&dns, port, Settings::with_backends(Vec::new()))).await;
    lb.wait_for_state(&first.address(), "up", Duration::from_secs(5))
        .await
        .expect("the first replica is found and passes its checks");

    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(lb.url("/x"), Method::GET, 4, Arc::clone(&stop));

    // Two replicas appear, one not ready yet.
    unready.set_ready(false);
    dns.set(SERVICE, &[loopback(2), loopback(3), loopback(4)])
        .await;
    assert!(
        wait_for(Duration::from_secs(5), || ready.requests() > 0).await,
        "the new ready replica got no traffic in 5 s"
    );
    let checks = ready.ready_checks_before_first_request().unwrap_or(0);
    assert!(
        checks >= 2,
        "traffic reached a new replica after {checks} good health checks, before its 2 (rise)"
    );
    assert!(
        wait_for(Duration::from_secs(5), || unready.health_checks() >= 3).await,
        "the unready replica is not being checked"
    );
    assert_eq!(
        unready.requests(),
        0,
        "a replica that is not ready got traffic"
    );
    assert_eq!(lb.state_of(&unready.address()).await, "down");
    unready.set_ready(true);
    assert!(
        wait_for(Duration::from_secs(5), || unready.requests() > 0).await,
        "the replica got no traffic in 5 s after it became ready"
    );
    assert!(unready.ready_checks_before_first_request().unwrap_or(0) >= 2);

    // The first replica leaves DNS while it answers a slow request: it is drained (that request
    // finishes, no new one arrives), then removed.
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..30 {
        let url = lb.url("/slow");
        slow.spawn(async move {
            client()
                .get(url)
                .header("x-delay-ms", "1500")
                .send()
                .await
                .map(|response| response.status())
        });
        if wait_for(Duration::from_millis(200), || first.delayed() > 0).await {
            break;
        }
    }
    assert!(
        first.delayed() > 0,
        "no slow request reached the first replica"
    );
    dns.set(SERVICE, &[loopback(3), loopback(4)]).await;
    lb.wait_for_state(&first.address(), "draining", Duration::from_secs(2))
        .await
        .expect("the replica that left DNS is drained while its request runs");
    let requests_when_drained = first.requests();
    lb.wait_for_state(&first.address(), "absent", Duration::from_secs(5))
        .await
        .expect("the drained replica is removed");
    assert_eq!(first.in_flight(), 0, "removed before its request finished");
    while let Some(status) = slow.join_next().await {
        let status = status.expect("task").expect("a response");
        assert_eq!(status, 200, "a slow request failed");
    }
    // Traffic goes on over the two left.
    let before = ready.requests() + unready.requests();
    assert!(
        wait_for(Duration::from_secs(5), || ready.requests()
            + unready.requests()
            > before + 50)
        .await
    );
    assert_eq!(
        first.requests(),
        requests_when_drained,
        "a draining replica got new requests"
    );

    stop.store(true, Ordering::SeqCst);
    let report = load.await.expect("load");
    assert_eq!(report.failed, 0, "{:?}", report.failures);
    assert!(
        report.ok > 100,
        "too little load to prove anything: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_without_addresses_or_a_silent_dns_server_keeps_the_pool() {
    let mut dns = DnsServer::start().await;
    let (port, replicas) = replicas(2).await;
    dns.set(SERVICE, &[loopback(2), loopback(3)]).await;
    let lb = Lb::start(discovering(&dns, port, Settings::with_backends(Vec::new()))).await;
    for replica in &replicas {
        lb.wait_for_state(&replica.address(), "up", Duration::from_secs(5))
            .await
            .expect("both replicas are found and pass their checks");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(lb.url("/x"), Method::GET, 4, Arc::clone(&stop));

    // The name stops existing (a service scaled to zero, a zone reloaded half-way).
    dns.set(SERVICE, &[]).await;
    let empty = cluster_kit::wait_until(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async { (resolutions(&lb, port, "empty").await >= 3.0).then_some(()) },
    )
    .await;
    assert!(empty.is_some(), "three empty resolutions were not counted");
    for replica in &replicas {
        assert_eq!(
            lb.state_of(&replica.address()).await,
            "up",
            "an empty answer emptied the pool"
        );
        assert!(still_serving(replica).await);
    }

    // The DNS server stops answering altogether.
    dns.set(SERVICE, &[loopback(2), loopback(3)]).await;
    dns.stop().await;
    let failed = cluster_kit::wait_until(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async { (resolutions(&lb, port, "failed").await >= 3.0).then_some(()) },
    )
    .await;
    assert!(
        failed.is_some(),
        "three failed resolutions were not counted"
    );
    for replica in &replicas {
        assert_eq!(
            lb.state_of(&replica.address()).await,
            "up",
            "a silent DNS server emptied the pool"
        );
        assert!(still_serving(replica).await);
    }

    stop.store(true, Ordering::SeqCst);
    let report = load.await.expect("load");
    assert_eq!(report.failed, 0, "{:?}", report.failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_admin_and_dns_backends_mix_and_dns_removes_only_its_own() {
    let dns = DnsServer::start().await;
    let fixed = TestBackend::start("static").await;
    let port = fixed.addr.port();
    let found = TestBackend::start_on(
        "found",
        SocketAddr::from((loopback(2), port)),
        BackendOptions::default(),
    )
    .await;
    let added = TestBackend::start("added").await;
    // The name also resolves to the static backend's address: it stays the static one.
    dns.set(SERVICE, &[loopback(2), loopback(1)]).await;
    let mut settings = discovering(&dns, port, common::settings_for(&[&fixed]));
    settings.proxy.algorithm = Algorithm::RoundRobin;
    let lb = Lb::start(settings).await;
    lb.wait_for_state(&found.address(), "up", Duration::from_secs(5))
        .await
        .expect("the DNS backend passes its checks");
    let created = client()
        .post(lb.admin_url("/backends"))
        .json(&json!({ "address": added.address() }))
        .send()
        .await
        .expect("add");
    assert_eq!(created.status(), 201);

    let sources: Vec<(String, String)> = listed(&lb)
        .await
        .iter()
        .map(|b| {
            (
                b["id"].as_str().unwrap_or("").to_string(),
                b["source"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let dns_source = format!("dns:{}", DnsServer::name(SERVICE));
    assert_eq!(
        sources,
        vec![
            (fixed.address(), "static".to_string()),
            (found.address(), dns_source),
            (added.address(), "admin".to_string()),
        ]
    );
    for _ in 0..30 {
        let response = client().get(lb.url("/x")).send().await.expect("response");
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        (fixed.requests(), found.requests(), added.requests()),
        (10, 10, 10)
    );

    // The name keeps only the static backend's address: the DNS backend goes, nothing else.
    dns.set(SERVICE, &[loopback(1)]).await;
    lb.wait_for_state(&found.address(), "absent", Duration::from_secs(5))
        .await
        .expect("the DNS backend left with its record");
    assert_eq!(lb.state_of(&fixed.address()).await, "up");
    assert_eq!(lb.state_of(&added.address()).await, "up");
    assert_eq!(listed(&lb).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_its_dns_names_from_the_environment() {
    let dns = DnsServer::start().await;
    let (port, replicas) = replicas(2).await;
    dns.set(SERVICE, &[loopback(2), loopback(3)]).await;
    let builder = LbBuilder::new()
        .env(
            "LB_BACKEND_DNS",
            format!("{}:{port}", DnsServer::name(SERVICE)),
        )
        .env("LB_DNS_SERVER", dns.addr)
        .env("LB_DNS_INTERVAL_MS", 100)
        .setting("--health-interval-ms", 100)
        .setting("--workers", 1);
    let _lb = builder.spawn();
    let served_by = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let found_both = cluster_kit::wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            let response = client().get(builder.url("/x")).send().await.ok()?;
            let name = response
                .headers()
                .get("x-served-by")?
                .to_str()
                .ok()?
                .to_string();
            let mut served_by = served_by.lock().expect("lock");
            served_by.insert(name);
            (served_by.len() == 2).then_some(())
        },
    )
    .await;
    assert!(
        found_both.is_some(),
        "served by {:?} only",
        served_by.lock().expect("lock")
    );
    assert_eq!(replicas.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_back_in_dns_while_draining_serves_again() {
    let dns = DnsServer::start().await;
    let (port, replicas) = replicas(2).await;
    let [flapping, steady] = &replicas[..] else {
        unreachable!()
    };
    dns.set(SERVICE, &[loopback(2), loopback(3)]).await;
    let mut settings = discovering(&dns, port, Settings::with_backends(Vec::new()));
    settings.proxy.algorithm = Algorithm::RoundRobin;
    let lb = Lb::start(settings).await;
    for replica in &replicas {
        lb.wait_for_state(&replica.address(), "up", Duration::from_secs(5))
            .await
            .expect("found and up");
    }
    // A slow request on each keeps the leaving replica draining rather than removed.
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let url = lb.url("/slow");
        slow.spawn(async move { client().get(url).header("x-delay-ms", "1500").send().await });
    }
    assert!(
        wait_for(Duration::from_secs(2), || flapping.delayed() > 0).await,
        "no slow request reached the replica"
    );

    dns.set(SERVICE, &[loopback(3)]).await;
    lb.wait_for_state(&flapping.address(), "draining", Duration::from_secs(2))
        .await
        .expect("drained when its record went");
    dns.set(SERVICE, &[loopback(2), loopback(3)]).await;
    lb.wait_for_state(&flapping.address(), "up", Duration::from_secs(2))
        .await
        .expect("serving again when its record came back");
    while let Some(done) = slow.join_next().await {
        assert_eq!(done.expect("task").expect("response").status(), 200);
    }
    let before = flapping.requests();
    for _ in 0..10 {
        assert_eq!(
            client()
                .get(lb.url("/x"))
                .send()
                .await
                .expect("response")
                .status(),
            200
        );
    }
    assert_eq!(
        flapping.requests(),
        before + 5,
        "round-robin over both again"
    );
    assert!(steady.requests() > 0);
}
