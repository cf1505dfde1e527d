//! A POST's body is streamed to the backend as it arrives (it is never re-sent once any of it
//! was sent, so buffering it buys nothing): the backend sees the first bytes while the client
//! still holds the rest; a stalled or trickled stream still ends in bounded time (408, the
//! backend's connection closed), one over the size limit in 413; a refused connection still
//! sends the POST to another backend; a backend connection answered before its streamed body
//! ended is not reused; and streamed bodies take nothing from the budget of buffered ones.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use cluster_lb::{BackendAddress, Settings};
use common::{
    client, connect_and_send, raw_status, read_until_closed, settings_for, trickle, upload_head,
    Lb, TestBackend,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// A generous bound for "answered", far below "hung".
const ANSWERED_WITHIN: Duration = Duration::from_secs(5);

/// A backend on a raw socket, so a test sees exactly which bytes arrived and when: it answers
/// the health check itself and hands every other connection, with what it read so far (the
/// request head at least), to the test.
struct RawBackend {
    addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<(TcpStream, Vec<u8>)>,
    accept: JoinHandle<()>,
}

impl RawBackend {
    async fn start() -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (sender, requests) = mpsc::unbounded_channel();
        let accept = tokio::spawn(async move {
            // Dropped with the accept task when the backend is: every connection closes.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(serve_health_or_hand_over(stream, sender.clone()));
            }
        });
        RawBackend {
            addr,
            requests,
            accept,
        }
    }

    fn backend_address(&self) -> BackendAddress {
        BackendAddress::parse(&self.addr.to_string()).expect("backend address")
    }

    /// The next proxied request's connection and the bytes read from it so far.
    async fn next_request(&mut self, limit: Duration) -> Option<(TcpStream, Vec<u8>)> {
        tokio::time::timeout(limit, self.requests.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve_health_or_hand_over(
    mut stream: TcpStream,
    requests: mpsc::UnboundedSender<(TcpStream, Vec<u8>)>,
) {
    let mut received = Vec::new();
    loop {
        if !read_until_contains(&mut stream, &mut received, b"\r\n\r\n", ANSWERED_WITHIN).await {
            return;
        }
        if !received.starts_with(b"GET /readyz ") {
            let _ = requests.send((stream, received));
            return;
        }
        received.clear();
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        if stream.write_all(ok).await.is_err() {
            return;
        }
    }
}

/// Reads into `received` until it contains `wanted`; false when the connection closed or
/// `limit` passed first.
async fn read_until_contains(
    stream: &mut TcpStream,
    received: &mut Vec<u8>,
    wanted: &[u8],
    limit: Duration,
) -> bool {
    let deadline = Instant::now() + limit;
    let mut buffer = [0u8; 4096];
    while !received.windows(wanted.len()).any(|w| w == wanted) {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buffer[..n]),
            _ => return false,
        }
    }
    true
}

#[tokio::test]
async fn a_trickled_post_body_reaches_the_backend_before_the_client_has_sent_it_all() {
    let mut backend = RawBackend::start().await;
    let lb = Lb::start(Settings::with_backends(vec![backend.backend_address()])).await;

    let mut request = upload_head("POST", 20);
    request.extend_from_slice(b"first-half");
    let mut stream = connect_and_send(lb.addr, &request).await;
    let (mut upstream, mut seen) = backend
        .next_request(ANSWERED_WITHIN)
        .await
        .expect("the backend got the request while the client still held half its body");
    assert!(
        read_until_contains(&mut upstream, &mut seen, b"first-half", ANSWERED_WITHIN).await,
        "the first half reached the backend on its own: {}",
        String::from_utf8_lossy(&seen)
    );

    stream.write_all(b"other-half").await.expect("write");
    assert!(
        read_until_contains(&mut upstream, &mut seen, b"other-half", ANSWERED_WITHIN).await,
        "the rest followed"
    );
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    upstream.write_all(answer).await.expect("answer");
    let mut response = Vec::new();
    assert!(
        read_until_contains(&mut stream, &mut response, b"ok", ANSWERED_WITHIN).await,
        "the client got the answer"
    );
    assert_eq!(raw_status(&String::from_utf8_lossy(&response)), 200);
    lb.stop().await;
}

#[tokio::test]
async fn a_stalled_streamed_body_gets_408_and_its_backend_connection_is_closed() {
    let mut backend = RawBackend::start().await;
    let mut settings = Settings::with_backends(vec![backend.backend_address()]);
    settings.proxy.body_idle_timeout = Duration::from_millis(300);
    let lb = Lb::start(settings).await;

    let mut request = upload_head("POST", 100);
    request.extend_from_slice(b"0123456789");
    let mut stream = connect_and_send(lb.addr, &request).await;
    let (mut upstream, mut seen) = backend
        .next_request(ANSWERED_WITHIN)
        .await
        .expect("the request was streamed to the backend");
    assert!(read_until_contains(&mut upstream, &mut seen, b"0123456789", ANSWERED_WITHIN).await);

    let (received, _) = read_until_closed(&mut stream, ANSWERED_WITHIN)
        .await
        .expect("a stalled body is answered and the client's connection closed");
    let text = String::from_utf8_lossy(&received);
    assert_eq!(raw_status(&text), 408, "{text}");
    assert!(text.contains(r#""error""#), "JSON error body: {text}");
    let (rest, _) = read_until_closed(&mut upstream, ANSWERED_WITHIN)
        .await
        .expect("the aborted request's backend connection is closed, never reused");
    assert!(rest.is_empty(), "nothing more was sent on it: {rest:?}");
    lb.stop().await;
}

#[tokio::test]
async fn a_connection_answered_before_its_streamed_body_ended_is_not_reused() {
    let mut backend = RawBackend::start().await;
    let lb = Lb::start(Settings::with_backends(vec![backend.backend_address()])).await;

    let mut request = upload_head("POST", 20);
    request.extend_from_slice(b"first-half");
    let mut early = connect_and_send(lb.addr, &request).await;
    let (mut upstream, mut seen) = backend
        .next_request(ANSWERED_WITHIN)
        .await
        .expect("the request was streamed to the backend");
    assert!(read_until_contains(&mut upstream, &mut seen, b"first-half", ANSWERED_WITHIN).await);
    // A backend may answer before it has read the whole body.
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    upstream.write_all(answer).await.expect("answer");
    let mut response = Vec::new();
    assert!(
        read_until_contains(&mut early, &mut response, b"ok", ANSWERED_WITHIN).await,
        "the early answer was passed on"
    );

    // That connection is mid-message (the client still holds half the body): the next request
    // must get a connection of its own rather than wait behind it.
    let next = tokio::spawn(client().get(lb.url("/next")).send());
    let (mut second, _) = backend
        .next_request(ANSWERED_WITHIN)
        .await
        .expect("the next request came on a new connection");
    let empty = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    second.write_all(empty).await.expect("answer");
    let response = next.await.expect("join").expect("GET answered");
    assert_eq!(response.status(), 200);
    drop(early);
    lb.stop().await;
}

#[tokio::test]
async fn a_trickled_streamed_body_gets_408_after_the_body_timeout() {
    let mut backend = RawBackend::start().await;
    let mut settings = Settings::with_backends(vec![backend.backend_address()]);
    settings.proxy.body_timeout = Duration::from_millis(800);
    let lb = Lb::start(settings).await;

    let stream = connect_and_send(lb.addr, &upload_head("POST", 1000)).await;
    let (mut reader, writer) = stream.into_split();
    // One byte every 100 ms: never idle long, but 1000 bytes would take 100 s.
    let trickle = trickle(writer, vec![b'x'; 1000], Duration::from_millis(100));
    let (mut upstream, _) = backend
        .next_request(ANSWERED_WITHIN)
        .await
        .expect("the request was streamed to the backend");
    let mut received = Vec::new();
    let read = tokio::time::timeout(ANSWERED_WITHIN, reader.read_to_end(&mut received)).await;
    trickle.abort();
    assert!(
        read.is_ok(),
        "a trickled body was still being streamed after {ANSWERED_WITHIN:?}"
    );
    let text = String::from_utf8_lossy(&received);
    assert_eq!(raw_status(&text), 408, "{text}");
    assert!(
        read_until_closed(&mut upstream, ANSWERED_WITHIN)
            .await
            .is_some(),
        "the backend's connection was closed"
    );
    lb.stop().await;
}

#[tokio::test]
async fn a_streamed_chunked_body_over_the_limit_gets_413() {
    let backend = TestBackend::start("a").await;
    let settings = settings_for(&[&backend]);
    let limit = settings.proxy.max_body_bytes;
    let lb = Lb::start(settings).await;

    // Chunked, so the size is only known while streaming: the limit, then 10 bytes too many.
    let chunk = "y".repeat(limit);
    let chunked = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\na\r\n0123456789\r\n",
        chunk.len()
    );
    let head = common::raw_head(lb.addr, chunked.as_bytes()).await;
    assert_eq!(raw_status(&head), 413, "{head}");
    lb.stop().await;
}

#[tokio::test]
async fn a_post_whose_first_backend_refuses_the_connection_goes_to_the_next() {
    let mut refusing = TestBackend::start("refusing").await;
    let live = TestBackend::start("live").await;
    let mut settings = settings_for(&[&refusing, &live]);
    // Health checks far apart: only the POSTs find out that the first backend is gone.
    settings.health.interval = Duration::from_secs(30);
    settings.proxy.algorithm = cluster_lb::Algorithm::RoundRobin;
    let lb = Lb::start(settings).await;
    lb.wait_for_state(&refusing.address(), "up", ANSWERED_WITHIN)
        .await
        .expect("the first health check passed");
    refusing.kill().await;

    let http = client();
    // Round robin sends one of the first two POSTs to the refusing backend.
    for _ in 0..2 {
        let response = http
            .post(lb.url("/write"))
            .body(vec![b'p'; 1000])
            .send()
            .await
            .expect("POST answered");
        assert_eq!(
            response.status(),
            200,
            "the POST went on to the live backend"
        );
        let echo: serde_json::Value = response.json().await.expect("echo");
        assert_eq!(echo["body_bytes"], 1000, "with its whole body");
    }
    assert!(
        common::metric(&lb, r#"lb_upstream_errors_total{kind="connect"}"#).await >= 1.0,
        "a connection was refused on the way"
    );
    lb.stop().await;
}

#[tokio::test]
async fn stalled_streamed_posts_take_nothing_from_the_buffered_body_budget() {
    const MAX_BODY: usize = 64 * 1024;
    let backend = TestBackend::start("a").await;
    let mut settings = Settings::with_backends(vec![backend.backend_address()]);
    settings.proxy.max_body_bytes = MAX_BODY;
    settings.proxy.max_buffered_body_bytes = 2 * MAX_BODY;
    let lb = Lb::start(settings).await;

    // Four uploads stalled one byte short of the largest body: twice the budget, were they
    // buffered.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut request = upload_head("POST", MAX_BODY);
        request.extend(std::iter::repeat_n(b'x', MAX_BODY - 1));
        held.push(connect_and_send(lb.addr, &request).await);
    }
    let http = client();
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        let response = http
            .put(lb.url("/small"))
            .body(vec![b'x'; 1024])
            .send()
            .await
            .expect("PUT answered");
        assert_eq!(
            response.status(),
            200,
            "a buffered body was shut out by streamed ones"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        common::wait_until(ANSWERED_WITHIN, || backend.in_flight() == 4).await,
        "the held uploads were streamed to the backend"
    );
    drop(held);
    lb.stop().await;
}
