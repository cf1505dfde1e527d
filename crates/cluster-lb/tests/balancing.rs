//! How traffic is spread: every backend gets a share under power-of-two-choices, round-robin
//! is exactly even, least-connections avoids a busy backend, and sticky mode pins a client.

mod common;

use std::time::Duration;

use cluster_lb::Algorithm;
use common::{client, settings_for, BackendOptions, Lb, TestBackend};
use tokio::task::JoinSet;

/// Each backend takes 5 ms per request, like a real one that does some work. With
/// sub-millisecond answers, one request delayed a few ms by a busy test machine would be a
/// peak 10x above its peers and peak-EWMA would rightly avoid that backend for a second or
/// two, longer than this test runs; 5 ms of work keeps such noise small next to the signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_of_two_choices_spreads_over_every_backend() {
    let working = || BackendOptions {
        delay: Duration::from_millis(5),
        ..BackendOptions::default()
    };
    let backends = [
        TestBackend::start_with("a", working()).await,
        TestBackend::start_with("b", working()).await,
        TestBackend::start_with("c", working()).await,
    ];
    let lb = Lb::start(settings_for(&backends.iter().collect::<Vec<_>>())).await;
    let http = client();
    let mut workers = JoinSet::new();
    for _ in 0..6 {
        let (http, url) = (http.clone(), lb.url("/spread"));
        workers.spawn(async move {
            for _ in 0..50 {
                http.get(&url)
                    .send()
                    .await
                    .expect("response")
                    .error_for_status()
                    .expect("2xx");
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let counts: Vec<usize> = backends.iter().map(|b| b.requests()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 300);
    assert!(
        counts.iter().all(|&n| n >= 30),
        "every backend gets a fair share: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_is_exactly_even() {
    let backends = [
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
    ];
    let mut settings = settings_for(&backends.iter().collect::<Vec<_>>());
    settings.proxy.algorithm = Algorithm::RoundRobin;
    let lb = Lb::start(settings).await;
    let http = client();
    let mut served_by = Vec::new();
    for _ in 0..30 {
        let response = http.get(lb.url("/turn")).send().await.expect("response");
        served_by.push(
            response.headers()["x-served-by"]
                .to_str()
                .expect("ascii")
                .to_string(),
        );
    }
    let counts: Vec<usize> = backends.iter().map(|b| b.requests()).collect();
    assert_eq!(counts, [10, 10, 10]);
    assert!(
        served_by
            .windows(3)
            .all(|w| w[0] != w[1] && w[1] != w[2] && w[0] != w[2]),
        "strictly in turn: {served_by:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_sends_new_requests_to_the_idle_backend() {
    let busy = TestBackend::start("busy").await;
    let idle = TestBackend::start("idle").await;
    let mut settings = settings_for(&[&busy, &idle]);
    settings.proxy.algorithm = Algorithm::LeastConnections;
    let lb = Lb::start(settings).await;
    let http = client();
    // Occupy one backend with a long request, then send quick ones.
    let long = tokio::spawn({
        let (http, url) = (http.clone(), lb.url("/long"));
        async move { http.get(url).header("x-delay-ms", "700").send().await }
    });
    let occupied = common::wait_until(Duration::from_secs(2), || {
        busy.in_flight() + idle.in_flight() == 1
    })
    .await;
    assert!(occupied);
    let (long_one, quick_one) = if busy.in_flight() == 1 {
        (&busy, &idle)
    } else {
        (&idle, &busy)
    };
    let quick_before = quick_one.requests();
    for _ in 0..10 {
        http.get(lb.url("/quick"))
            .send()
            .await
            .expect("response")
            .error_for_status()
            .expect("2xx");
    }
    assert_eq!(
        quick_one.requests() - quick_before,
        10,
        "all quick requests avoided the busy backend"
    );
    assert_eq!(long_one.requests(), 1);
    assert_eq!(
        long.await.expect("join").expect("long request").status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_mode_pins_a_client_with_a_cookie() {
    let backends = [
        TestBackend::start_with("a", BackendOptions::default()).await,
        TestBackend::start_with("b", BackendOptions::default()).await,
    ];
    let mut settings = settings_for(&backends.iter().collect::<Vec<_>>());
    settings.proxy.sticky = true;
    settings.proxy.algorithm = Algorithm::RoundRobin;
    let lb = Lb::start(settings).await;
    let with_cookies = cookie_client();
    let mut served_by = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let response = with_cookies
            .get(lb.url("/me"))
            .send()
            .await
            .expect("response");
        served_by.insert(served_by_header(&response));
    }
    assert_eq!(served_by.len(), 1, "one client, one backend: {served_by:?}");
    // Without the cookie, round-robin alternates, and each answer offers a cookie for its backend.
    let http = client();
    let mut alternating = Vec::new();
    for _ in 0..4 {
        let response = http.get(lb.url("/x")).send().await.expect("response");
        let cookie = response.headers()["set-cookie"].to_str().expect("ascii");
        assert!(cookie.starts_with("lb_backend="), "{cookie}");
        alternating.push(served_by_header(&response));
    }
    assert!(
        alternating.windows(2).all(|pair| pair[0] != pair[1]),
        "without the cookie, no pinning: {alternating:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_mode_is_off_by_default() {
    // Sessions live in Redis, so any backend serves any client: no cookie, no pinning.
    let backends = [TestBackend::start("a").await, TestBackend::start("b").await];
    let mut settings = settings_for(&backends.iter().collect::<Vec<_>>());
    assert!(!settings.proxy.sticky);
    // Round-robin makes "no pinning" exact: a pinned client would see one backend only.
    settings.proxy.algorithm = Algorithm::RoundRobin;
    let lb = Lb::start(settings).await;
    let with_cookies = cookie_client();
    let mut served_by = Vec::new();
    for _ in 0..6 {
        let response = with_cookies
            .get(lb.url("/me"))
            .send()
            .await
            .expect("response");
        assert!(
            response.headers().get("set-cookie").is_none(),
            "no cookie is set: {:?}",
            response.headers()
        );
        served_by.push(served_by_header(&response));
    }
    assert!(
        served_by.windows(2).all(|pair| pair[0] != pair[1]),
        "one client, every backend in turn: {served_by:?}"
    );
}

/// A client that keeps cookies, as a browser would.
fn cookie_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .cookie_store(true)
        .build()
        .expect("client")
}

fn served_by_header(response: &reqwest::Response) -> String {
    response.headers()["x-served-by"]
        .to_str()
        .expect("ascii")
        .to_string()
}
