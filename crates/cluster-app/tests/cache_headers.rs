//! No response may be stored by a shared cache: every route, logged in or
//! not, every kind of error (404, 400, 413, 503 with Redis gone) carries
//! `Cache-Control: no-store`, `Vary: Cookie` and `X-Content-Type-Options:
//! nosniff`, on the node itself and through the real load balancer.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use cluster_kit::{free_port, wait_for, workspace_bin, ChildGuard, RedisServer};
use common::Node;
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::Method;

/// One request of the table: method, path, JSON body (raw text) if any.
struct Call {
    method: Method,
    path: &'static str,
    body: Option<String>,
}

fn call(method: Method, path: &'static str, body: Option<&str>) -> Call {
    Call {
        method,
        path,
        body: body.map(str::to_string),
    }
}

/// Every route, in an order that also leaves each one a chance to write.
fn every_route() -> Vec<Call> {
    vec![
        call(Method::GET, "/whoami", None),
        call(Method::GET, "/counter", None),
        call(Method::GET, "/counter?mode=atomic", None),
        call(Method::POST, "/counter/incr", None),
        call(Method::POST, "/counter/incr?mode=atomic", None),
        call(Method::GET, "/session/items", None),
        call(Method::PUT, "/session/items/cart", Some(r#"{"apples":3}"#)),
        call(Method::GET, "/healthz", None),
        call(Method::GET, "/readyz", None),
        call(Method::GET, "/metrics", None),
        call(Method::POST, "/login", Some(r#"{"user":"alice"}"#)),
        call(Method::POST, "/logout", None),
    ]
}

/// Errors: unknown route, bad JSON, bad query, oversize item.
fn errors() -> Vec<(u16, Call)> {
    let oversize = format!(r#"{{"blob":"{}"}}"#, "x".repeat(5000));
    vec![
        (404, call(Method::GET, "/no-such-route", None)),
        (400, call(Method::POST, "/login", Some("{not json"))),
        (400, call(Method::POST, "/counter/incr?mode=bogus", None)),
        (
            413,
            Call {
                method: Method::PUT,
                path: "/session/items/big",
                body: Some(oversize),
            },
        ),
    ]
}

fn send(
    http: &Client,
    base: &str,
    cookie: Option<&str>,
    call: &Call,
) -> reqwest::blocking::Response {
    let mut request: RequestBuilder =
        http.request(call.method.clone(), format!("{base}{}", call.path));
    if let Some(body) = &call.body {
        request = request
            .header("content-type", "application/json")
            .body(body.clone());
    }
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    request.send().expect("HTTP request")
}

fn assert_not_cacheable(response: &reqwest::blocking::Response, what: &str) {
    let headers = response.headers();
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    assert_eq!(values("cache-control"), ["no-store"], "{what}: {headers:?}");
    assert!(
        values("vary")
            .iter()
            .flat_map(|value| value.split(','))
            .any(|value| value.trim().eq_ignore_ascii_case("cookie")),
        "{what}: no Vary: Cookie: {headers:?}"
    );
    assert_eq!(
        values("x-content-type-options"),
        ["nosniff"],
        "{what}: {headers:?}"
    );
}

/// The `name=value` of the session cookie a login set.
fn login_cookie(http: &Client, base: &str) -> String {
    let login = send(
        http,
        base,
        None,
        &call(Method::POST, "/login", Some(r#"{"user":"alice"}"#)),
    );
    assert_eq!(login.status(), 200);
    assert_not_cacheable(&login, "login");
    login
        .headers()
        .get(SET_COOKIE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .expect("login sets the session cookie")
        .to_string()
}

/// Walks the table against `base`, anonymous and logged in, then the errors.
fn every_answer_is_not_cacheable(base: &str, via: &str) {
    let http = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client");
    for logged_in in [false, true] {
        for route in every_route() {
            let cookie = logged_in.then(|| login_cookie(&http, base));
            let response = send(&http, base, cookie.as_deref(), &route);
            let what = format!(
                "{via}: {} {} (logged in: {logged_in})",
                route.method, route.path
            );
            assert!(
                response.status().is_success(),
                "{what}: {}",
                response.status()
            );
            assert_not_cacheable(&response, &what);
        }
    }
    let cookie = login_cookie(&http, base);
    for (status, error) in errors() {
        let response = send(&http, base, Some(&cookie), &error);
        let what = format!("{via}: {} {}", error.method, error.path);
        assert_eq!(response.status().as_u16(), status, "{what}");
        assert_not_cacheable(&response, &what);
    }
}

/// With Redis gone, the session routes and `/readyz` answer 503.
fn unavailable_is_not_cacheable(base: &str, via: &str, cookie: &str) {
    let http = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client");
    for route in [
        call(Method::GET, "/whoami", None),
        call(Method::POST, "/login", Some(r#"{"user":"alice"}"#)),
        call(Method::GET, "/readyz", None),
    ] {
        let response = send(&http, base, Some(cookie), &route);
        let what = format!("{via}: {} {} with Redis down", route.method, route.path);
        assert_eq!(response.status().as_u16(), 503, "{what}");
        assert_not_cacheable(&response, &what);
    }
}

/// `target/debug/cluster-lb` in front of `node`. Its active checks are made
/// blind (a high fall count) so that it keeps forwarding to the node once
/// Redis is gone: the node's own 503 is what is checked.
fn start_load_balancer(node: &Node) -> (ChildGuard, String) {
    let port = free_port();
    let mut command = Command::new(workspace_bin("cluster-lb"));
    command
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--backend", &format!("127.0.0.1:{}", node.port)])
        .args(["--health-fall", "1000"])
        .args(["--workers", "1"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    let process = ChildGuard::spawn("cluster-lb", &mut command);
    let base = format!("http://127.0.0.1:{port}");
    let http = Client::new();
    let up = wait_for(Duration::from_secs(10), || {
        http.get(format!("{base}/healthz"))
            .send()
            .ok()
            .filter(|response| response.status() == 200)
    });
    assert!(
        up.is_some(),
        "the load balancer did not forward /healthz within 10 s"
    );
    (process, base)
}

#[test]
fn no_answer_is_cacheable_on_the_node_or_through_the_load_balancer() {
    let mut redis = RedisServer::start();
    let node = Node::start("a", &redis.url());
    let (_load_balancer, lb_base) = start_load_balancer(&node);
    let node_base = format!("http://127.0.0.1:{}", node.port);

    every_answer_is_not_cacheable(&node_base, "node");
    every_answer_is_not_cacheable(&lb_base, "load balancer");

    let http = Client::new();
    let cookie = login_cookie(&http, &node_base);
    redis.kill();
    unavailable_is_not_cacheable(&node_base, "node", &cookie);
    unavailable_is_not_cacheable(&lb_base, "load balancer", &cookie);
}
