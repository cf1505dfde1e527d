//! Hostile request heads on raw sockets: request smuggling attempts, oversized URIs and headers,
//! and spoofed client addresses. Each case is what a probe of the balancer tried; the answers
//! asserted here are the ones that must hold.

mod common;

use std::time::Duration;

use common::{connect_and_send, raw_status, read_until_closed, settings_for, Lb, TestBackend};

const ANSWERED_WITHIN: Duration = Duration::from_secs(5);

/// Sends `request` on a fresh connection and returns everything answered until the close.
async fn exchange(lb: &Lb, request: &[u8]) -> String {
    let mut stream = connect_and_send(lb.addr, request).await;
    let (received, _) = read_until_closed(&mut stream, ANSWERED_WITHIN)
        .await
        .expect("the balancer answered and closed");
    String::from_utf8_lossy(&received).into_owned()
}

/// A request whose body, read the other way, hides a second request for `/smuggled`.
fn smuggling(framing: &str) -> Vec<u8> {
    format!(
        "POST /first HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n0\r\n\r\n\
         GET /smuggled HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn smuggling_attempts_never_reach_a_backend_as_two_requests() {
    let backend = TestBackend::start("a").await;
    let lb = Lb::start(settings_for(&[&backend])).await;
    let cases = [
        // Both framings: hyper reads it as chunked and closes the connection after it.
        ("Content-Length: 5\r\nTransfer-Encoding: chunked", None),
        ("Transfer-Encoding: chunked\r\nContent-Length: 5", None),
        // Conflicting lengths, obfuscated or non-final chunked: refused outright.
        ("Content-Length: 5\r\nContent-Length: 6", Some(400)),
        ("Content-Length: 5, 6", Some(400)),
        ("Transfer-Encoding: xchunked", Some(400)),
        ("Transfer-Encoding: chunked, identity", Some(400)),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
            Some(400),
        ),
        ("Content-Length: +5", Some(400)),
    ];
    for (framing, refused_with) in cases {
        let answer = exchange(&lb, &smuggling(framing)).await;
        if let Some(status) = refused_with {
            assert_eq!(raw_status(&answer), status, "{framing:?}: {answer}");
        }
        assert!(
            !answer.contains("/smuggled"),
            "{framing:?}: a second request reached the backend: {answer}"
        );
        assert!(
            answer.matches("HTTP/1.1 ").count() <= 1,
            "{framing:?}: answered as two requests: {answer}"
        );
    }
    assert!(
        backend.requests() <= 2,
        "only the two both-framings requests were forwarded"
    );
    lb.stop().await;
}

#[tokio::test]
async fn oversized_uris_and_heads_are_refused_with_json() {
    let backend = TestBackend::start("a").await;
    let lb = Lb::start(settings_for(&[&backend])).await;

    let long_uri = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(9 * 1024)
    );
    let answer = exchange(&lb, long_uri.as_bytes()).await;
    assert_eq!(raw_status(&answer), 414, "{answer}");
    assert!(answer.contains(r#"{"error":"#), "JSON error body: {answer}");

    let big_headers: String = (0..40)
        .map(|i| format!("X-Filler-{i}: {}\r\n", "b".repeat(1000)))
        .collect();
    let big_head = format!("GET / HTTP/1.1\r\nHost: x\r\n{big_headers}Connection: close\r\n\r\n");
    let answer = exchange(&lb, big_head.as_bytes()).await;
    assert_eq!(raw_status(&answer), 431, "{answer}");
    assert!(answer.contains(r#"{"error":"#), "JSON error body: {answer}");

    // Far beyond any limit: refused by the HTTP parser itself, never buffered without bound.
    let huge_head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Huge: {}\r\n\r\n",
        "c".repeat(200 * 1024)
    );
    let mut stream = connect_and_send(lb.addr, huge_head.as_bytes()).await;
    let (received, _) = read_until_closed(&mut stream, ANSWERED_WITHIN)
        .await
        .expect("a huge head is refused and the connection closed");
    let status = raw_status(&String::from_utf8_lossy(&received));
    assert!(
        matches!(status, 0 | 400 | 431),
        "huge head answered {status}"
    );

    let many_headers: String = (0..150).map(|i| format!("X-Many-{i}: 1\r\n")).collect();
    let answer = exchange(
        &lb,
        format!("GET / HTTP/1.1\r\nHost: x\r\n{many_headers}Connection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(matches!(raw_status(&answer), 400 | 431), "{answer}");

    assert_eq!(backend.requests(), 0, "none of them reached the backend");
    lb.stop().await;
}

#[tokio::test]
async fn a_spoofed_client_address_is_replaced_by_the_peer() {
    let backend = TestBackend::start("a").await;
    let lb = Lb::start(settings_for(&[&backend])).await;
    let answer = exchange(
        &lb,
        b"GET /who HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\n\
          X-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert!(
        !answer.contains("6.6.6.6") && !answer.contains("7.7.7.7"),
        "{answer}"
    );
    assert!(
        answer.contains(r#""x-forwarded-for":"127.0.0.1""#),
        "{answer}"
    );
    lb.stop().await;
}
