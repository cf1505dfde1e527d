//! Hostile request bodies on raw sockets: stalled and trickled uploads are answered 408 in
//! bounded time, and uploads held open cannot take more memory than the shared body budget
//! while other requests go on being served. The uploads are PUTs: idempotent, so their bodies
//! are buffered (a POST's body is streamed: `streamed_bodies.rs`).

mod common;

use std::time::Duration;

use common::own_503::assert_own_503;
use common::{
    client, connect_and_send, read_until_closed, settings_for, trickle, upload_head, Lb,
    TestBackend,
};

/// A generous bound for "answered", far below "hung".
const ANSWERED_WITHIN: Duration = Duration::from_secs(5);

fn status_and_body(received: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(received);
    let status = common::raw_status(&text);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test]
async fn a_stalled_body_gets_408_after_the_idle_timeout() {
    let backend = TestBackend::start("a").await;
    let mut settings = settings_for(&[&backend]);
    settings.proxy.body_idle_timeout = Duration::from_millis(300);
    let lb = Lb::start(settings).await;

    let mut request = upload_head("PUT", 100);
    request.extend_from_slice(b"0123456789");
    let mut stream = connect_and_send(lb.addr, &request).await;
    let (received, _) = read_until_closed(&mut stream, ANSWERED_WITHIN)
        .await
        .expect("a stalled body is answered and the connection closed");
    let (status, body) = status_and_body(&received);
    assert_eq!(status, 408, "{body}");
    assert!(body.contains(r#""error""#), "JSON error body: {body}");
    assert_eq!(backend.requests(), 0, "nothing reached the backend");
    lb.stop().await;
}

#[tokio::test]
async fn a_trickled_body_gets_408_after_the_body_timeout() {
    let backend = TestBackend::start("a").await;
    let mut settings = settings_for(&[&backend]);
    settings.proxy.body_timeout = Duration::from_millis(800);
    let lb = Lb::start(settings).await;

    let stream = connect_and_send(lb.addr, &upload_head("PUT", 1000)).await;
    let (mut reader, writer) = stream.into_split();
    // One byte every 100 ms: never idle long, but 1000 bytes would take 100 s.
    let trickle = trickle(writer, vec![b'x'; 1000], Duration::from_millis(100));
    let mut received = Vec::new();
    let read = tokio::time::timeout(
        ANSWERED_WITHIN,
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut received),
    )
    .await;
    trickle.abort();
    assert!(
        read.is_ok(),
        "a trickled body was still being read after {ANSWERED_WITHIN:?}"
    );
    let (status, body) = status_and_body(&received);
    assert_eq!(status, 408, "{body}");
    assert_eq!(backend.requests(), 0, "nothing reached the backend");
    lb.stop().await;
}

/// The largest body in the budget tests; the budget holds two of them.
const MAX_BODY: usize = 64 * 1024;

async fn lb_with_a_budget_of_two_bodies(backend: &TestBackend) -> Lb {
    let mut settings = settings_for(&[backend]);
    settings.proxy.max_body_bytes = MAX_BODY;
    settings.proxy.max_buffered_body_bytes = 2 * MAX_BODY;
    Lb::start(settings).await
}

#[tokio::test]
async fn held_bodies_cannot_exceed_the_budget_and_other_requests_pass() {
    let backend = TestBackend::start("a").await;
    let lb = lb_with_a_budget_of_two_bodies(&backend).await;

    // Two uploads stalled one byte short of the largest body fill the budget but two bytes.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut request = upload_head("PUT", MAX_BODY);
        request.extend(std::iter::repeat_n(b'x', MAX_BODY - 1));
        held.push(connect_and_send(lb.addr, &request).await);
    }

    let http = client();
    // 1 KiB: more than the two bytes the held uploads leave free.
    let small_put = || http.put(lb.url("/small")).body(vec![b'x'; 1024]).send();
    let deadline = tokio::time::Instant::now() + ANSWERED_WITHIN;
    let refused = loop {
        let response = small_put().await.expect("PUT answered");
        if response.status() == 503 {
            break response;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bodies beyond the budget were still accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_own_503(refused, "a body beyond the budget").await;

    let get = http.get(lb.url("/still-served")).send().await.expect("GET");
    assert_eq!(get.status(), 200, "a request without a body passes");

    // The held uploads go away and give their bytes back.
    drop(held);
    let deadline = tokio::time::Instant::now() + ANSWERED_WITHIN;
    while small_put().await.expect("PUT answered").status() != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the budget was not given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lb.stop().await;
}

#[tokio::test]
async fn declaring_large_bodies_without_sending_them_takes_no_budget() {
    let backend = TestBackend::start("a").await;
    let lb = lb_with_a_budget_of_two_bodies(&backend).await;

    let mut declared_only = Vec::new();
    for _ in 0..3 {
        declared_only.push(connect_and_send(lb.addr, &upload_head("PUT", MAX_BODY)).await);
    }
    let http = client();
    for _ in 0..5 {
        let response = http
            .put(lb.url("/small"))
            .body(vec![b'x'; 1024])
            .send()
            .await
            .expect("PUT answered");
        assert_eq!(
            response.status(),
            200,
            "uploads shut out by declarations alone"
        );
    }
    drop(declared_only);
    lb.stop().await;
}
