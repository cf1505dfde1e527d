//! The dashboard on the admin listener: the page and its event stream need the token where one
//! is set; the stream's snapshots follow backends going down, leaving and joining; the stream
//! ends when the balancer stops; "my session" calls reach the proxy listener with the cookie.

mod common;

use std::time::{Duration, Instant};

use common::{client, settings_for, status_of, Lb, TestBackend};
use serde_json::{json, Value};

const TOKEN: &str = "s3cret";

/// An open `/dashboard/events` stream, read snapshot by snapshot.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(lb: &Lb) -> Events {
        let response = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("HTTP client")
            .get(lb.admin_url(&format!("/dashboard/events?token={TOKEN}")))
            .send()
            .await
            .expect("the event stream opens");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Events {
            response,
            buffer: String::new(),
        }
    }

    /// The next snapshot, or `None` when the stream ends or none comes within `limit`.
    async fn next(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                    return Some(serde_json::from_str(data).expect("a JSON snapshot"));
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .expect("the stream reads")?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// Reads snapshots until one satisfies `check`; panics after `limit`.
    async fn until(
        &mut self,
        what: &str,
        limit: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(snapshot) = self.next(limit).await {
                if check(&snapshot) {
                    return snapshot;
                }
            }
        }
        panic!("no snapshot within {limit:?} where {what}");
    }
}

fn state_of(snapshot: &Value, id: &str) -> Option<String> {
    snapshot["backends"]
        .as_array()?
        .iter()
        .find(|b| b["id"] == id)
        .map(|b| b["state"].as_str().unwrap_or("").to_string())
}

async fn lb_with_token(backends: &[&TestBackend]) -> Lb {
    let mut settings = settings_for(backends);
    settings.admin_token = Some(TOKEN.to_string());
    settings.health.interval = Duration::from_millis(100);
    Lb::start(settings).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_events_need_the_token() {
    let backend = TestBackend::start("a").await;
    let lb = lb_with_token(&[&backend]).await;
    let http = client();
    for path in [
        "/dashboard",
        "/dashboard/events",
        "/dashboard?token=wrong",
        "/dashboard/session/whoami",
    ] {
        assert_eq!(status_of(http.get(lb.admin_url(path))).await, 401, "{path}");
    }
    assert_eq!(
        status_of(http.get(lb.admin_url("/dashboard")).bearer_auth("wrong")).await,
        401
    );

    let page = http
        .get(lb.admin_url(&format!("/dashboard?token={TOKEN}")))
        .send()
        .await
        .expect("the page");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .expect("ASCII")
        .to_string();
    assert!(policy.starts_with("default-src 'none'"), "{policy}");
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    let html = page.text().await.expect("HTML");
    assert!(
        html.contains("new EventSource"),
        "the page opens the event stream"
    );
    assert!(
        !html.contains("src=") && !html.contains("<link"),
        "the page loads nothing from elsewhere"
    );
    assert_eq!(
        status_of(http.get(lb.admin_url("/dashboard")).bearer_auth(TOKEN)).await,
        200
    );
    assert_eq!(
        status_of(http.get(lb.admin_url("/dashboardx")).bearer_auth(TOKEN)).await,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_follow_backends_going_down_leaving_and_joining() {
    let a = TestBackend::start("a").await;
    let mut b = TestBackend::start("b").await;
    let c = TestBackend::start("c").await;
    let lb = lb_with_token(&[&a, &b]).await;
    let http = client();
    let mut events = Events::open(&lb).await;
    let limit = Duration::from_secs(5);

    let first = events.next(limit).await.expect("a first snapshot at once");
    assert_eq!(state_of(&first, &a.address()).as_deref(), Some("up"));
    assert_eq!(state_of(&first, &b.address()).as_deref(), Some("up"));
    assert_eq!(first["totals"]["panic"], false);

    // Traffic shows as requests per second on the backends that serve it.
    for _ in 0..20 {
        http.get(lb.url("/x")).send().await.expect("response");
    }
    events
        .until("requests per second show", limit, |s| {
            s["totals"]["rps"].as_f64() > Some(0.0)
                && s["backends"][0]["requests"].as_u64() > Some(0)
        })
        .await;

    b.kill().await;
    let killed = Instant::now();
    events
        .until("the killed backend is down", limit, |s| {
            state_of(s, &b.address()).as_deref() == Some("down")
        })
        .await;
    assert!(killed.elapsed() < Duration::from_secs(2));

    let removed = http
        .delete(lb.admin_url(&format!("/backends/{}", b.address())))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("remove");
    assert_eq!(removed.status(), 200);
    let after = events
        .until("the removed backend is gone", limit, |s| {
            state_of(s, &b.address()).is_none()
        })
        .await;
    assert_eq!(after["gone"], json!([b.address()]));

    let added = http
        .post(lb.admin_url("/backends"))
        .bearer_auth(TOKEN)
        .json(&json!({ "address": c.address() }))
        .send()
        .await
        .expect("add");
    assert_eq!(added.status(), 201);
    events
        .until("the added backend is up", limit, |s| {
            state_of(s, &c.address()).as_deref() == Some("up")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_ends_when_the_balancer_stops() {
    let backend = TestBackend::start("a").await;
    let lb = lb_with_token(&[&backend]).await;
    let mut events = Events::open(&lb).await;
    events
        .next(Duration::from_secs(5))
        .await
        .expect("a snapshot");

    let stopping = tokio::spawn(lb.stop());
    let started = Instant::now();
    while events.next(Duration::from_secs(3)).await.is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the stream still runs after the balancer stopped"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    stopping.await.expect("the balancer stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn my_session_calls_go_through_the_proxy_listener_with_the_cookie() {
    let backend = TestBackend::start("a").await;
    let lb = lb_with_token(&[&backend]).await;
    let http = client();

    let login = http
        .post(lb.admin_url("/dashboard/session/login"))
        .bearer_auth(TOKEN)
        .header("cookie", "id=browser-session")
        .json(&json!({ "user": "alice" }))
        .send()
        .await
        .expect("relayed login");
    assert_eq!(login.status(), 200);
    let echo: Value = login.json().await.expect("the backend's echo");
    assert_eq!(echo["backend"], "a");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/login");
    assert_eq!(echo["headers"]["cookie"], "id=browser-session");
    assert_eq!(echo["body_bytes"], 16);
    assert_eq!(backend.requests(), 1, "one request through the proxy");

    for (method, path) in [
        (reqwest::Method::GET, "/dashboard/session/login"),
        (reqwest::Method::POST, "/dashboard/session/logout"),
        (reqwest::Method::GET, "/dashboard/session/../backends"),
    ] {
        let status = status_of(
            http.request(method.clone(), lb.admin_url(path))
                .bearer_auth(TOKEN),
        )
        .await;
        assert_eq!(status, 404, "{method} {path}");
    }
    assert_eq!(backend.requests(), 1, "nothing else is relayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controls_are_relayed_only_once_registered() {
    let backend = TestBackend::start("a").await;
    let controls = TestBackend::start("controls").await;
    let lb = lb_with_token(&[&backend]).await;
    let http = client();
    let kill = || {
        http.post(lb.admin_url("/dashboard/controls/nodes/node1/kill"))
            .bearer_auth(TOKEN)
    };

    assert_eq!(status_of(kill()).await, 404, "no controls registered yet");
    assert_eq!(
        status_of(
            http.get(lb.admin_url("/dashboard/controls"))
                .bearer_auth(TOKEN)
        )
        .await,
        404
    );
    let register = |body: Value| {
        http.put(lb.admin_url("/dashboard/controls"))
            .bearer_auth(TOKEN)
            .json(&body)
    };
    assert_eq!(
        status_of(register(json!({ "address": "nowhere" }))).await,
        400
    );
    assert_eq!(
        status_of(
            http.put(lb.admin_url("/dashboard/controls"))
                .json(&json!({ "address": controls.address() }))
        )
        .await,
        401
    );
    assert_eq!(
        status_of(register(json!({ "address": controls.address() }))).await,
        200
    );

    let killed = kill().send().await.expect("relayed control");
    assert_eq!(killed.status(), 200);
    let echo: Value = killed.json().await.expect("the controls' echo");
    assert_eq!(echo["backend"], "controls");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/nodes/node1/kill");
    let listed: Value = http
        .get(lb.admin_url("/dashboard/controls"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("relayed list")
        .json()
        .await
        .expect("JSON");
    assert_eq!(listed["path"], "/");
    assert_eq!(controls.requests(), 2);
    assert_eq!(backend.requests(), 0, "controls never go through the proxy");
}
