//! Node failures must not become client errors: a backend killed under load, ejection and
//! re-admission timing, stale pooled connections, a backend that answers 503 while its health
//! check still passes, and a fast 503 when nothing is left.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_kit::{Cut, Relay};
use cluster_lb::{BackendAddress, Settings};
use common::own_503::assert_own_503;
use common::{client, settings_for, start_load, BackendOptions, Lb, TestBackend};
use reqwest::Method;

/// Clients of the load in `kill_under_load`: each has at most one request in flight.
const CLIENTS: usize = 8;

/// What one kill under load showed.
#[derive(Debug)]
struct Kill {
    report: common::LoadReport,
    /// Requests the victim had received and not answered when it died.
    in_flight_at_kill: usize,
    /// The balancer's count of attempts lost on a broken connection (sent, then it died).
    lost: u64,
}

/// Runs `CLIENTS` clients against two backends and kills one while it is answering.
async fn kill_under_load(method: Method) -> Kill {
    let slow = BackendOptions {
        delay: Duration::from_millis(20),
        ..Default::default()
    };
    let survivor = TestBackend::start_with("survivor", slow.clone()).await;
    let mut victim = TestBackend::start_with("victim", slow).await;
    let lb = Lb::start(settings_for(&[&survivor, &victim])).await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(lb.url("/work"), method.clone(), CLIENTS, Arc::clone(&stop));
    // Power-of-two-choices may steer away from the victim for a moment; kill it while it is
    // answering, so the run covers requests cut mid-flight.
    assert!(
        common::wait_until(Duration::from_secs(5), || victim.in_flight() > 0).await,
        "the victim had no request in flight for 5 s"
    );
    let in_flight_at_kill = victim.kill().await;
    let survivor_at_kill = survivor.requests();
    lb.wait_for_state(&victim.address(), "down", Duration::from_secs(5))
        .await
        .expect("the killed backend is marked down");
    // Traffic keeps flowing on the survivor after the kill.
    assert!(
        common::wait_until(Duration::from_secs(10), || {
            survivor.requests() >= survivor_at_kill + 100
        })
        .await,
        "the survivor answered fewer than 100 requests in 10 s after the kill"
    );
    stop.store(true, Ordering::SeqCst);
    let report = load.await.expect("load task");
    let metrics = client()
        .get(lb.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics");
    let metrics = metrics.text().await.expect("text");
    let lost = metrics
        .lines()
        .find_map(|line| line.strip_prefix("lb_upstream_errors_total{kind=\"lost\"} "))
        .map_or(0, |n| n.parse().expect("a count"));
    let kill = Kill {
        report,
        in_flight_at_kill,
        lost,
    };
    eprintln!("{method}: {kill:?}");
    kill
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_backend_under_load_fails_no_get() {
    // The point is GETs cut mid-flight and replayed. On a busy machine the kill can land in a
    // gap where the victim answers nothing; then the run proves less, so it is run again.
    for _ in 0..3 {
        let kill = kill_under_load(Method::GET).await;
        assert_eq!(kill.report.failed, 0, "failed GETs: {kill:?}");
        if kill.in_flight_at_kill > 0 && kill.lost > 0 {
            return;
        }
    }
    panic!("in 3 runs the kill never cut a GET in flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_backend_under_load_fails_only_the_posts_it_was_answering() {
    // A POST that reached the victim may have been acted on: it is not replayed, it fails.
    // Every other POST (refused connections, later requests) succeeds.
    for _ in 0..3 {
        let kill = kill_under_load(Method::POST).await;
        // Each failure is an attempt lost after sending, and each lost attempt failed: had one
        // been replayed on the survivor it would have succeeded, and `failed` would be lower.
        assert_eq!(
            kill.report.failed as u64, kill.lost,
            "every POST lost on the victim fails, and nothing else does: {kill:?}"
        );
        // Every POST the victim was answering failed. One more can fail when the balancer wrote
        // it to a pooled connection the kill was closing: lost, never replayed, but never
        // received either. The victim leaves the rotation on the first loss, so each client
        // loses at most its one request in flight: never a stream of failures.
        assert!(
            kill.report.failed >= kill.in_flight_at_kill && kill.report.failed <= CLIENTS,
            "{} POSTs failed, {} were in flight on the victim: {kill:?}",
            kill.report.failed,
            kill.in_flight_at_kill
        );
        if kill.in_flight_at_kill > 0 {
            return;
        }
    }
    panic!("in 3 runs the kill never cut a POST in flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_is_ejected_by_the_first_refused_request() {
    let survivor = TestBackend::start("survivor").await;
    let mut victim = TestBackend::start("victim").await;
    let mut settings = settings_for(&[&survivor, &victim]);
    // Health checks far apart: only passive detection can take the victim out in time.
    settings.health.interval = Duration::from_secs(30);
    let lb = Lb::start(settings).await;
    let http = client();
    // Light traffic: one request every 20 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (http, url, stop) = (http.clone(), lb.url("/tick"), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut failed = 0;
            while !stop.load(Ordering::SeqCst) {
                if !http
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    failed += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            failed
        })
    };
    assert!(
        common::wait_until(Duration::from_secs(5), || victim.requests() > 0).await,
        "the victim took traffic before the kill"
    );

    victim.kill().await;
    lb.wait_for_state(&victim.address(), "down", Duration::from_secs(5))
        .await
        .expect("the dead backend is marked down long before its next health check");
    let attempts_at_ejection = lb.backend(&victim.address()).await["requests"].as_u64();
    // The ticker goes on: 20 more requests, all of them to the survivor.
    let survivor_at_ejection = survivor.requests();
    assert!(
        common::wait_until(Duration::from_secs(10), || {
            survivor.requests() >= survivor_at_ejection + 20
        })
        .await,
        "traffic stalled after the ejection"
    );
    stop.store(true, Ordering::SeqCst);

    assert_eq!(
        lb.backend(&victim.address()).await["requests"].as_u64(),
        attempts_at_ejection,
        "no request went to the backend once it was down"
    );
    assert_eq!(
        ticker.await.expect("ticker"),
        0,
        "no client saw the failure"
    );
}

/// How long the health checker needs to change its mind: the check in progress, then `checks`
/// more in a row (half an interval apart once they disagree with the state), plus a second for
/// a busy machine. Without health checks the state would never change: the bound tells a
/// working checker from none, not a fast machine from a slow one.
fn health_bound(settings: &Settings, checks: u32) -> Duration {
    settings.health.interval * (checks + 1) + Duration::from_secs(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unready_backend_is_ejected_by_health_checks() {
    let backend = TestBackend::start("a").await;
    let settings = settings_for(&[&backend]);
    let bound = health_bound(&settings, settings.health.fall);
    let lb = Lb::start(settings).await;
    // No traffic: only the active checks can notice.
    backend.set_ready(false);
    let took = lb
        .wait_for_state(&backend.address(), "down", bound * 2)
        .await;
    assert!(
        took.is_some_and(|t| t <= bound),
        "ejected after {took:?}, expected within {bound:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_backend_is_readmitted_by_health_checks() {
    let mut backend = TestBackend::start("phoenix").await;
    let other = TestBackend::start("other").await;
    let settings = settings_for(&[&backend, &other]);
    let bound = health_bound(&settings, settings.health.rise);
    let lb = Lb::start(settings).await;
    let (http, base) = (client(), lb.url(""));
    let get = move |path: &'static str| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move {
            http.get(&url)
                .send()
                .await
                .expect("request")
                .error_for_status()
                .expect("2xx");
        }
    };
    // Both backends have served (real latency estimates), then phoenix dies under traffic:
    // the refused attempts charge it failure penalties.
    for _ in 0..20 {
        get("/before").await;
    }
    backend.kill().await;
    for _ in 0..5 {
        get("/during").await;
    }
    lb.wait_for_state(&backend.address(), "down", Duration::from_secs(3))
        .await
        .expect("marked down");

    backend.restart().await;
    let took = lb.wait_for_state(&backend.address(), "up", bound * 2).await;
    assert!(
        took.is_some_and(|t| t <= bound),
        "readmitted after {took:?}, expected within {bound:?}"
    );

    // Four clients at once, 40 requests: the readmitted backend starts at its peer's latency,
    // not at the penalties charged while it died, so it is back in the rotation at once (its
    // exact share depends on each answer's latency, which a busy machine makes noisy).
    let before = backend.requests();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let get = get.clone();
        clients.spawn(async move {
            for _ in 0..10 {
                get("/again").await;
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.expect("client task");
    }
    assert!(
        backend.requests() > before,
        "the readmitted backend got none of the 40 requests after its return"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_from_before_an_outage_are_not_reused_after_it() {
    // A partition, not a kill: the balancer's pooled connection to the backend never sees a
    // close, and after the partition heals it leads nowhere (the far end forgot it). Reusing it
    // would hang the first request until the response timeout.
    let backend = TestBackend::start("partitioned").await;
    let relay = Relay::start(backend.addr);
    let mut settings =
        Settings::with_backends(vec![
            BackendAddress::parse(&relay.address().to_string()).expect("relay address")
        ]);
    settings.health.interval = Duration::from_millis(100);
    settings.proxy.pool_idle_timeout = Duration::from_secs(10);
    // A hang would last the response timeout; the bound below is well under it.
    settings.proxy.response_timeout = Duration::from_secs(10);
    let lb = Lb::start(settings).await;
    let http = client();
    let get = || http.get(lb.url("/through-the-relay")).send();

    assert_eq!(get().await.expect("response").status(), 200);
    relay.cut(Cut::Drop);
    lb.wait_for_state(&relay.address().to_string(), "down", Duration::from_secs(3))
        .await
        .expect("marked down by its health checks");
    relay.heal();
    lb.wait_for_state(&relay.address().to_string(), "up", Duration::from_secs(3))
        .await
        .expect("readmitted");

    let started = Instant::now();
    let response = get().await.expect("response");
    assert_eq!(
        response.status(),
        200,
        "the first request after the outage goes over a new connection"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it did not wait on a dead connection first: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_on_a_sibling_for_idempotent_requests_only() {
    // "sick" passes its health check but answers 503 to everything else, like a node that has
    // just lost Redis and whose /readyz has not failed `fall` times yet.
    let sick = TestBackend::start_with(
        "sick",
        BackendOptions {
            status: Some(hyper::StatusCode::SERVICE_UNAVAILABLE),
            ..Default::default()
        },
    )
    .await;
    let healthy = TestBackend::start("healthy").await;
    let mut settings = settings_for(&[&sick, &healthy]);
    settings.proxy.algorithm = cluster_lb::Algorithm::RoundRobin;
    let lb = Lb::start(settings).await;
    let http = client();

    for _ in 0..10 {
        let response = http.get(lb.url("/read")).send().await.expect("response");
        assert_eq!(
            response.status(),
            200,
            "a GET never sees the sick node's 503"
        );
        assert_eq!(response.headers()["x-served-by"], "healthy");
    }
    let mut passed_on = 0;
    for _ in 0..10 {
        let response = http.post(lb.url("/write")).send().await.expect("response");
        if response.status() == 503 {
            assert_eq!(
                response.headers()["x-served-by"],
                "sick",
                "the backend's own 503"
            );
            passed_on += 1;
        }
    }
    assert_eq!(
        passed_on, 5,
        "a POST is never replayed: round-robin sends every other one to sick"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_pooled_connections_cause_no_errors() {
    // The backend closes keep-alive connections idle for 200 ms (actix-web: 5 s); the balancer
    // drops its idle upstream connections after 100 ms, before the backend can close them.
    let idle_close = Duration::from_millis(200);
    let backend = TestBackend::start_with(
        "closer",
        BackendOptions {
            idle_close: Some(idle_close),
            ..Default::default()
        },
    )
    .await;
    let mut settings = settings_for(&[&backend]);
    settings.proxy.pool_idle_timeout = Duration::from_millis(100);
    let lb = Lb::start(settings).await;
    let http = client();

    // POSTs are never replayed after being sent, so a stale connection would show as an error.
    // Gaps straddle the backend's idle timeout, where the race lives.
    let mut failures = Vec::new();
    let gaps_ms = [190, 196, 200, 204, 210, 198, 202, 200, 206, 194, 200, 215];
    for gap_ms in gaps_ms {
        tokio::time::sleep(Duration::from_millis(gap_ms)).await;
        match http.post(lb.url("/spaced")).body("{}").send().await {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => failures.push(response.status().to_string()),
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(
        failures.is_empty(),
        "stale connections failed requests: {failures:?}"
    );
    assert_eq!(
        backend.requests(),
        gaps_ms.len(),
        "each POST reached the backend once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_healthy_backend_answers_503_json_at_once() {
    // "At once" against the alternative, waiting on a timeout: both timeouts are long, the bound
    // well under them and well above a busy machine's noise.
    let at_once = Duration::from_secs(2);
    let patient = |mut settings: Settings| {
        settings.proxy.connect_timeout = Duration::from_secs(10);
        settings.proxy.response_timeout = Duration::from_secs(10);
        settings
    };
    let mut dead = TestBackend::start("dead").await;
    dead.kill().await;
    let lb = Lb::start(patient(settings_for(&[&dead]))).await;
    let http = client();
    for _ in 0..3 {
        let started = Instant::now();
        let response = http
            .get(lb.url("/anything"))
            .send()
            .await
            .expect("a response, not a hang");
        let took = started.elapsed();
        assert!(response.status().is_server_error(), "{}", response.status());
        assert!(took < at_once, "took {took:?}");
        let body: serde_json::Value = response.json().await.expect("JSON error body");
        assert!(body["error"].is_string(), "{body}");
    }
    let response = http
        .get(lb.url("/anything"))
        .send()
        .await
        .expect("response");
    assert_own_503(response, "once the backend is known down").await;

    let empty = Lb::start(patient(Settings::with_backends(Vec::new()))).await;
    let started = Instant::now();
    let response = http.get(empty.url("/")).send().await.expect("response");
    let took = started.elapsed();
    assert_own_503(response, "no backend at all").await;
    assert!(took < at_once, "took {took:?}");
}
