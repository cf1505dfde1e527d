//! Hostile clients on raw sockets: what a probe of the balancer found, kept so it never
//! regresses. Silent and slow connections are closed in bounded time, a flood of them cannot
//! take the proxy's file descriptors, HTTP/2 prior knowledge is refused, smuggling and oversized
//! heads are refused with JSON errors, spoofed forwarding headers do not reach the backends and
//! admin token tricks change nothing.

mod common;

use std::time::Duration;

use tokio::io::AsyncReadExt;

use common::{connect_and_send, metric, read_until_closed, settings_for, trickle, Lb, TestBackend};

/// The client timeout these tests configure: short, so a hang and a close are far apart.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(300);
/// A generous bound on "closed after the client timeout" on a busy machine.
const CLOSED_WITHIN: Duration = Duration::from_secs(5);

/// The preface an HTTP/2 client with prior knowledge opens with.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

async fn lb_with_short_client_timeout(backend: &TestBackend) -> Lb {
    let mut settings = settings_for(&[backend]);
    settings.proxy.client_timeout = CLIENT_TIMEOUT;
    Lb::start(settings).await
}

#[tokio::test]
async fn silent_and_partial_connections_are_closed_after_the_client_timeout() {
    let backend = TestBackend::start("a").await;
    let lb = lb_with_short_client_timeout(&backend).await;
    let openings: [&[u8]; 4] = [
        b"",
        b"P",
        &H2_PREFACE[..10],
        b"GET / HTTP/1.1\r\nHost: x\r\n",
    ];
    for opening in openings {
        let mut stream = connect_and_send(lb.addr, opening).await;
        let closed = read_until_closed(&mut stream, CLOSED_WITHIN).await;
        assert!(
            closed.is_some(),
            "a connection that sent {:?} was still open after {CLOSED_WITHIN:?}",
            String::from_utf8_lossy(opening)
        );
    }
    lb.stop().await;
}

#[tokio::test]
async fn a_head_trickled_a_byte_at_a_time_is_cut_off_at_the_client_timeout() {
    let backend = TestBackend::start("a").await;
    let lb = lb_with_short_client_timeout(&backend).await;
    let stream = connect_and_send(lb.addr, b"G").await;
    let (mut reader, writer) = stream.into_split();
    // A byte every 50 ms: never idle for long, but the head never completes.
    let slow_head = [
        &b"ET / HTTP/1.1
Host: x
X-Slow: "[..],
        &[b'y'; 200],
    ]
    .concat();
    let trickle = trickle(writer, slow_head, Duration::from_millis(50));
    let mut received = Vec::new();
    let closed = tokio::time::timeout(CLOSED_WITHIN, reader.read_to_end(&mut received)).await;
    trickle.abort();
    assert!(
        closed.is_ok(),
        "a trickled head kept its connection past {CLOSED_WITHIN:?}"
    );
    assert_eq!(backend.requests(), 0);
    lb.stop().await;
}

#[tokio::test]
async fn the_admin_listener_has_the_same_deadline_and_cap() {
    const ADMIN_CAP: usize = 5;
    let backend = TestBackend::start("a").await;
    let mut settings = settings_for(&[&backend]);
    settings.proxy.client_timeout = CLIENT_TIMEOUT;
    settings.admin_max_connections = ADMIN_CAP;
    let lb = Lb::start(settings).await;

    let mut silent = Vec::new();
    for _ in 0..ADMIN_CAP {
        silent.push(connect_and_send(lb.admin, b"").await);
    }
    // Accepted in order: once a request behind them is answered, all of them hold a slot.
    let response = common::client()
        .get(lb.url("/during"))
        .send()
        .await
        .expect("proxy");
    assert_eq!(response.status(), 200, "the proxy serves on");
    let mut over = connect_and_send(lb.admin, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (received, _) = read_until_closed(&mut over, Duration::from_secs(1))
        .await
        .expect("an admin connection over the cap is closed at once");
    assert!(
        received.is_empty(),
        "an admin connection over the cap was served"
    );

    for stream in &mut silent {
        assert!(
            read_until_closed(stream, CLOSED_WITHIN).await.is_some(),
            "a silent admin connection was still open after {CLOSED_WITHIN:?}"
        );
    }
    let deadline = tokio::time::Instant::now() + CLOSED_WITHIN;
    while metric(&lb, r#"lb_connections_refused_total{listener="admin"}"#).await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the admin API did not come back, or did not count the refusal"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lb.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_client_timeout() {
    let backend = TestBackend::start("a").await;
    let lb = lb_with_short_client_timeout(&backend).await;
    let mut stream = connect_and_send(lb.addr, b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (received, _) = read_until_closed(&mut stream, CLOSED_WITHIN)
        .await
        .expect("the idle keep-alive connection was closed");
    assert!(
        received.starts_with(b"HTTP/1.1 200"),
        "the request was served first"
    );
    lb.stop().await;
}

#[tokio::test]
async fn http2_prior_knowledge_is_refused() {
    let backend = TestBackend::start("a").await;
    let lb = lb_with_short_client_timeout(&backend).await;
    // The preface and an empty SETTINGS frame, as an HTTP/2 client sends them.
    let mut opening = H2_PREFACE.to_vec();
    opening.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let mut stream = connect_and_send(lb.addr, &opening).await;
    let (received, _) = read_until_closed(&mut stream, CLOSED_WITHIN)
        .await
        .expect("the HTTP/2 connection was closed");
    // An HTTP/2 server's first frame is SETTINGS (type 4 in the fourth byte).
    assert!(
        received.is_empty() || received.starts_with(b"HTTP/1.1 "),
        "answered in HTTP/2: {received:?}"
    );
    lb.stop().await;
}

#[tokio::test]
async fn at_the_connection_cap_new_connections_close_at_once_and_service_resumes() {
    const CAP: usize = 20;
    let backend = TestBackend::start("a").await;
    let mut settings = settings_for(&[&backend]);
    settings.proxy.client_timeout = Duration::from_secs(2);
    settings.max_connections = CAP;
    let lb = Lb::start(settings).await;

    let mut silent = Vec::new();
    for _ in 0..CAP {
        silent.push(connect_and_send(lb.addr, b"").await);
    }
    let open = r#"lb_connections_open{listener="proxy"}"#;
    let deadline = tokio::time::Instant::now() + CLOSED_WITHIN;
    while metric(&lb, open).await < CAP as f64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the silent connections never all opened"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Over the cap: closed at once, long before the silent ones time out.
    let mut over = connect_and_send(lb.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (received, took) = read_until_closed(&mut over, Duration::from_secs(1))
        .await
        .expect("a connection over the cap is closed at once");
    assert!(received.is_empty(), "a connection over the cap was served");
    assert!(took < Duration::from_secs(1));
    assert!(metric(&lb, r#"lb_connections_refused_total{listener="proxy"}"#).await >= 1.0);

    // The silent ones time out and free their slots: a normal client is served again.
    let started = std::time::Instant::now();
    let served = loop {
        if let Ok(response) = common::client().get(lb.url("/after")).send().await {
            if response.status() == 200 {
                break true;
            }
        }
        if started.elapsed() > Duration::from_secs(10) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        served,
        "no request was served after the silent connections timed out"
    );
    assert!(
        lb.wait_for_state(&backend.address(), "up", CLOSED_WITHIN)
            .await
            .is_some(),
        "health checks kept the backend up"
    );
    drop(silent);
    lb.stop().await;
}
