//! What the balancer answers itself — its errors, the admin API, its metrics — describes one
//! moment of one balancer. A shared cache in front of the cluster must not keep any of it, so
//! every such response says `Cache-Control: no-store` and `X-Content-Type-Options: nosniff`.
//! (The nodes' own responses carry the same headers; cluster-app's tests check them, through
//! the balancer too.)

mod common;

use common::{client, settings_for, Lb, TestBackend};
use reqwest::{Method, Response};

const TOKEN: &str = "admin-token";

fn assert_not_for_caches(response: &Response, what: &str) {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(
        header("cache-control").as_deref(),
        Some("no-store"),
        "{what} ({})",
        response.status()
    );
    assert_eq!(
        header("x-content-type-options").as_deref(),
        Some("nosniff"),
        "{what} ({})",
        response.status()
    );
}

#[tokio::test]
async fn every_response_the_balancer_makes_itself_is_not_for_caches() {
    let mut backend = TestBackend::start("a").await;
    let mut settings = settings_for(&[&backend]);
    settings.admin_token = Some(TOKEN.to_string());
    let max_body = settings.proxy.max_body_bytes;
    let lb = Lb::start(settings).await;
    let http = client();

    let too_long_uri = format!("/{}", "x".repeat(16 * 1024));
    // What is asked, how, with which body, and the status expected.
    type Case = (&'static str, Method, String, Option<Vec<u8>>, u16);
    let cases: Vec<Case> = vec![
        (
            "body over the limit",
            Method::POST,
            lb.url("/"),
            Some(vec![b'x'; max_body + 1]),
            413,
        ),
        (
            "URI over the limit",
            Method::GET,
            lb.url(&too_long_uri),
            None,
            414,
        ),
        (
            "admin healthz",
            Method::GET,
            lb.admin_url("/healthz"),
            None,
            200,
        ),
        (
            "admin backends",
            Method::GET,
            lb.admin_url("/backends"),
            None,
            200,
        ),
        (
            "admin metrics",
            Method::GET,
            lb.admin_url("/metrics"),
            None,
            200,
        ),
        (
            "admin without token",
            Method::POST,
            lb.admin_url("/backends"),
            None,
            401,
        ),
        (
            "admin unknown path",
            Method::GET,
            lb.admin_url("/nothing-here"),
            None,
            404,
        ),
    ];
    for (what, method, url, body, status) in cases {
        let mut request = http.request(method, &url);
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect(what);
        assert_eq!(response.status().as_u16(), status, "{what}");
        assert_not_for_caches(&response, what);
    }

    backend.kill().await;
    let response = http.get(lb.url("/")).send().await.expect("request");
    assert!(
        response.status().is_server_error(),
        "with its only backend dead: {}",
        response.status()
    );
    assert_not_for_caches(&response, "no backend left");
}
