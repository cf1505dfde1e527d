//! Which requests the balancer sends again after the connection they went out on broke.
//!
//! A backend that reads a request and drops the connection without answering may have acted on
//! it: a POST must not be re-sent to another backend (the client gets a 502), while a GET is
//! safe to replay and must be answered by the healthy sibling.

mod common;

use std::sync::{Arc, Mutex};

use cluster_lb::{Algorithm, Settings};
use common::{client, Lb, TestBackend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A raw TCP backend that records the request line of every request it receives and closes
/// the connection after reading it, without a response. Its health check (`/readyz`) is
/// answered, so the balancer keeps it in rotation.
struct DroppingBackend {
    address: String,
    received: Arc<Mutex<Vec<String>>>,
    accept: JoinHandle<()>,
}

impl DroppingBackend {
    async fn start() -> DroppingBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the dropping backend");
        let address = listener.local_addr().expect("address").to_string();
        let received = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&received);
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(drop_after_one_request(stream, Arc::clone(&record)));
            }
        });
        DroppingBackend {
            address,
            received,
            accept,
        }
    }

    /// `METHOD /path` of every request received, health checks excluded.
    fn received(&self) -> Vec<String> {
        self.received.lock().expect("received lock").clone()
    }
}

impl Drop for DroppingBackend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn drop_after_one_request(mut stream: TcpStream, record: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(n) if n > 0 => head.extend_from_slice(&buffer[..n]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let request_line: Vec<&str> = head.split(' ').take(2).collect();
    let request_line = request_line.join(" ");
    if request_line == "GET /readyz" {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
        return;
    }
    record.lock().expect("received lock").push(request_line);
    // Dropped here: closed with the request read and nothing answered.
}

/// The dropping backend and a healthy one, taken in turn.
async fn balancer_over(dropping: &DroppingBackend, healthy: &TestBackend) -> Lb {
    let mut settings = Settings::with_backends(vec![
        cluster_lb::BackendAddress::parse(&dropping.address).expect("address"),
        healthy.backend_address(),
    ]);
    settings.proxy.algorithm = Algorithm::RoundRobin;
    Lb::start(settings).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_whose_connection_broke_is_not_sent_again() {
    let dropping = DroppingBackend::start().await;
    let healthy = TestBackend::start("healthy").await;
    let lb = balancer_over(&dropping, &healthy).await;
    let http = client();

    let posts = 4;
    let mut failed = 0;
    for _ in 0..posts {
        let response = http
            .post(lb.url("/act-once"))
            .body(r#"{"n":1}"#)
            .send()
            .await
            .expect("a response");
        match response.status().as_u16() {
            200 => assert_eq!(response.headers()["x-served-by"], "healthy"),
            502 => {
                let body: serde_json::Value = response.json().await.expect("JSON error body");
                assert!(body["error"].is_string(), "{body}");
                failed += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let dropped = dropping.received();
    assert!(
        !dropped.is_empty(),
        "round-robin sent the dropping backend a POST"
    );
    assert!(
        dropped.iter().all(|line| line == "POST /act-once"),
        "{dropped:?}"
    );
    assert_eq!(
        failed,
        dropped.len(),
        "every POST the dropping backend read failed, none was re-sent: {dropped:?}"
    );
    assert_eq!(
        healthy.requests() + dropped.len(),
        posts,
        "each POST reached exactly one backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_whose_connection_broke_is_answered_by_another_backend() {
    let dropping = DroppingBackend::start().await;
    let healthy = TestBackend::start("healthy").await;
    let lb = balancer_over(&dropping, &healthy).await;
    let http = client();

    let gets = 4;
    for _ in 0..gets {
        let response = http.get(lb.url("/read")).send().await.expect("a response");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-served-by"], "healthy");
    }
    let dropped = dropping.received();
    assert!(
        !dropped.is_empty(),
        "round-robin sent the dropping backend a GET"
    );
    assert!(
        dropped.iter().all(|line| line == "GET /read"),
        "{dropped:?}"
    );
    assert_eq!(
        healthy.requests(),
        gets,
        "every GET answered by the sibling"
    );
}
