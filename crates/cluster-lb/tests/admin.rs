//! The admin API: token enforcement, adding/removing/draining backends at run time, and a
//! drain under load that costs no client a single error.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cluster_lb::Algorithm;
use common::{client, settings_for, start_load, status_of, BackendOptions, Lb, TestBackend};
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_calls_need_the_bearer_token() {
    let backend = TestBackend::start("a").await;
    let mut settings = settings_for(&[]);
    settings.admin_token = Some("s3cret".to_string());
    let lb = Lb::start(settings).await;
    let http = client();
    let add = || {
        http.post(lb.admin_url("/backends"))
            .json(&json!({ "address": backend.address() }))
    };

    let missing = add().send().await.expect("response");
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    assert_eq!(status_of(add().bearer_auth("wrong")).await, 401);
    assert_eq!(lb.state_of(&backend.address()).await, "absent");

    assert_eq!(status_of(add().bearer_auth("s3cret")).await, 201);
    assert_eq!(lb.state_of(&backend.address()).await, "up");
    // Reading needs no token.
    assert_eq!(status_of(http.get(lb.admin_url("/backends"))).await, 200);
    assert_eq!(status_of(http.get(lb.admin_url("/healthz"))).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_can_be_added_drained_enabled_and_removed() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let mut settings = settings_for(&[&a]);
    settings.proxy.algorithm = Algorithm::RoundRobin;
    let lb = Lb::start(settings).await;
    let http = client();
    let send_10 = || async {
        for _ in 0..10 {
            http.get(lb.url("/x"))
                .send()
                .await
                .expect("response")
                .error_for_status()
                .expect("2xx");
        }
    };

    let added = http
        .post(lb.admin_url("/backends"))
        .json(&json!({ "address": b.address() }))
        .send()
        .await
        .expect("add");
    assert_eq!(added.status(), 201);
    let added: Value = added.json().await.expect("JSON");
    assert_eq!(added["id"], b.address());
    assert_eq!(added["state"], "up");
    send_10().await;
    assert_eq!(
        (a.requests(), b.requests()),
        (5, 5),
        "round-robin over both"
    );

    let again = http
        .post(lb.admin_url("/backends"))
        .json(&json!({ "address": b.address() }))
        .send()
        .await
        .expect("add");
    assert_eq!(again.status(), 409);
    let bad = http
        .post(lb.admin_url("/backends"))
        .json(&json!({ "address": "no-port" }))
        .send()
        .await
        .expect("add");
    assert_eq!(bad.status(), 400);
    assert!(bad.json::<Value>().await.expect("JSON")["error"].is_string());

    let drained = http
        .post(lb.admin_url(&format!("/backends/{}/drain", b.address())))
        .send()
        .await
        .expect("drain");
    assert_eq!(
        drained.json::<Value>().await.expect("JSON")["state"],
        "draining"
    );
    send_10().await;
    assert_eq!(
        (a.requests(), b.requests()),
        (15, 5),
        "a draining backend gets nothing new"
    );

    let enabled = http
        .post(lb.admin_url(&format!("/backends/{}/enable", b.address())))
        .send()
        .await
        .expect("enable");
    assert_eq!(enabled.json::<Value>().await.expect("JSON")["state"], "up");
    send_10().await;
    assert_eq!(b.requests(), 10);

    let removed = http
        .delete(lb.admin_url(&format!("/backends/{}", b.address())))
        .send()
        .await
        .expect("delete");
    assert_eq!(removed.status(), 200);
    assert_eq!(lb.state_of(&b.address()).await, "absent");
    send_10().await;
    assert_eq!(b.requests(), 10, "a removed backend gets nothing");
    let missing = http
        .delete(lb.admin_url(&format!("/backends/{}", b.address())))
        .send()
        .await
        .expect("delete");
    assert_eq!(missing.status(), 404);

    let listed: Value = http
        .get(lb.admin_url("/backends"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    let entry = &listed["backends"][0];
    for field in [
        "id",
        "address",
        "state",
        "in_flight",
        "ewma_ms",
        "requests",
        "failures",
    ] {
        assert!(entry.get(field).is_some(), "{field} missing from {entry}");
    }
    let metrics = http
        .get(lb.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("lb_backend_requests_total{backend=\""),
        "{metrics}"
    );
    assert!(
        !metrics.contains(&b.address()),
        "a removed backend's series are gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_under_load_loses_no_request() {
    let slow = BackendOptions {
        delay: Duration::from_millis(30),
        ..Default::default()
    };
    let keep = TestBackend::start_with("keep", slow.clone()).await;
    let drain = TestBackend::start_with("drain", slow).await;
    let lb = Lb::start(settings_for(&[&keep, &drain])).await;
    let stop = Arc::new(AtomicBool::new(false));
    let gets = start_load(lb.url("/read"), Method::GET, 4, Arc::clone(&stop));
    let posts = start_load(lb.url("/write"), Method::POST, 4, Arc::clone(&stop));
    // Drain while the backend is answering, so the test covers requests caught by the drain.
    assert!(
        common::wait_until(Duration::from_secs(5), || drain.in_flight() > 0).await,
        "the backend to drain got no request for 5 s"
    );
    let response = client()
        .post(lb.admin_url(&format!("/backends/{}/drain", drain.address())))
        .send()
        .await
        .expect("drain");
    assert_eq!(response.status(), 200);
    let at_drain: serde_json::Value = response.json().await.expect("the drained backend");
    assert_eq!(at_drain["state"], "draining");
    assert!(
        at_drain["in_flight"].as_i64() > Some(0),
        "drained while answering: {at_drain}"
    );

    // Requests the balancer had already sent it finish; once none is left, none may start.
    let mut finished = false;
    for _ in 0..500 {
        if drain.in_flight() == 0 && lb.backend(&drain.address()).await["in_flight"] == 0 {
            finished = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        finished,
        "the drained backend's requests did not finish within 5 s"
    );
    let served_at_drain = drain.requests();
    let kept_at_drain = keep.requests();
    assert!(
        common::wait_until(Duration::from_secs(10), || {
            keep.requests() >= kept_at_drain + 50
        })
        .await,
        "the remaining backend answered fewer than 50 requests in 10 s"
    );
    stop.store(true, Ordering::SeqCst);
    let (gets, posts) = (
        gets.await.expect("GET load"),
        posts.await.expect("POST load"),
    );

    assert_eq!(
        drain.requests(),
        served_at_drain,
        "no new request reached the drained backend while 50 went to the other"
    );
    assert_eq!(drain.in_flight(), 0, "its in-flight requests completed");
    assert_eq!(lb.backend(&drain.address()).await["in_flight"], 0);
    assert_eq!(
        gets.failed + posts.failed,
        0,
        "GET failures {:?}, POST failures {:?}",
        gets.failures,
        posts.failures
    );
    assert!(gets.ok + posts.ok > 50);
}
