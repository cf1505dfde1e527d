//! What the balancer takes as evidence that a backend is down, from the requests it proxies.
//!
//! A connection the backend closes after some exchange (as a node does after refusing an
//! upgrade) is no evidence: whatever the previous request did may have caused it, and one
//! client could otherwise take backends out for everyone. A new connection lost before its
//! response counts, but only a few times in a row.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cluster_lb::{Algorithm, BackendAddress, Settings};
use common::{client, Lb, TestBackend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A raw TCP backend that answers the first `answers_per_connection` requests on each
/// connection (HTTP/1.1, keep-alive), then reads one more and closes without answering.
/// Its health check (`/readyz`) is always answered.
struct ClosingBackend {
    address: String,
    dropped: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl ClosingBackend {
    async fn start(answers_per_connection: usize) -> ClosingBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the closing backend");
        let address = listener.local_addr().expect("address").to_string();
        let dropped = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&dropped);
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, answers_per_connection, Arc::clone(&count)));
            }
        });
        ClosingBackend {
            address,
            dropped,
            accept,
        }
    }

    /// Requests read and left unanswered (their connection closed).
    fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for ClosingBackend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve(mut stream: TcpStream, answers: usize, dropped: Arc<AtomicUsize>) {
    let mut answered = 0;
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        if head.starts_with(b"GET /readyz ") {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
            return;
        }
        if answered == answers {
            dropped.fetch_add(1, Ordering::SeqCst);
            return;
        }
        answered += 1;
        let reply =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        if stream.write_all(reply).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_backend_closed_is_no_evidence_against_it() {
    let backend = ClosingBackend::start(1).await;
    let mut settings = Settings::with_backends(vec![
        BackendAddress::parse(&backend.address).expect("address")
    ]);
    settings.proxy.pool_idle_timeout = Duration::from_secs(10);
    let lb = Lb::start(settings).await;
    let http = client();

    for n in 0..10 {
        let response = http.get(lb.url("/again")).send().await.expect("a response");
        assert_eq!(
            response.status(),
            200,
            "GET {n}: sent again on a new connection to the same backend"
        );
    }
    assert!(
        backend.dropped() > 0,
        "the balancer did reuse connections the backend then closed"
    );
    let seen = lb.backend(&backend.address).await;
    assert_eq!(seen["state"], "up");
    // Nor a latency penalty, which would starve it under power-of-two-choices for seconds.
    assert_eq!(seen["failures"], 0, "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_lost_three_times_in_a_row_take_a_backend_out() {
    let backend = ClosingBackend::start(0).await;
    let healthy = TestBackend::start("healthy").await;
    let mut settings = Settings::with_backends(vec![
        BackendAddress::parse(&backend.address).expect("address"),
        healthy.backend_address(),
    ]);
    settings.proxy.algorithm = Algorithm::RoundRobin;
    let lb = Lb::start(settings).await;
    let http = client();

    let mut states = Vec::new();
    while backend.dropped() < 3 {
        let response = http.get(lb.url("/read")).send().await.expect("a response");
        assert_eq!(response.status(), 200, "retried on the healthy backend");
        if backend.dropped() < 3 {
            states.push(lb.state_of(&backend.address).await);
        }
        assert!(
            states.len() < 10,
            "fewer than 3 of 10 GETs reached the backend; its state after each: {states:?}"
        );
    }
    assert!(
        states.iter().all(|state| state == "up"),
        "one or two lost requests do not take a backend out: {states:?}"
    );
    assert!(
        lb.wait_for_state(&backend.address, "down", Duration::from_secs(1))
            .await
            .is_some(),
        "the third in a row does"
    );
}
