//! Shared pieces of the load balancer's integration tests: small real HTTP backends on free
//! ports (that can be killed abruptly and restarted), an in-process balancer on real sockets,
//! and a load generator that counts every failed request.
#![allow(dead_code)] // each test file uses a different subset

pub mod cluster_node;
pub mod dns_server;
pub mod lb_process;
pub mod own_503;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster_lb::{BackendAddress, Settings};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// What a test backend does besides answering.
#[derive(Clone, Default)]
pub struct BackendOptions {
    /// Every request (except the health check) waits this long before answering.
    pub delay: Duration,
    /// Close keep-alive connections idle for this long (as actix-web does after 5 s).
    pub idle_close: Option<Duration>,
    /// Answer every request (except the health check) with this status instead of 200.
    pub status: Option<StatusCode>,
}

struct Counters {
    name: String,
    requests: AtomicUsize,
    /// `/readyz` requests, and those answered 200.
    health_checks: AtomicUsize,
    ready_checks: AtomicUsize,
    /// `ready_checks` when the first other request arrived (`usize::MAX`: none yet).
    ready_checks_before_first_request: AtomicUsize,
    in_flight: AtomicUsize,
    /// Those of `in_flight` waiting out a delay.
    delayed: AtomicUsize,
    ready: AtomicBool,
    delay_ms: AtomicU64,
    status: StatusCode,
}

/// A tiny real HTTP/1.1 server. Answers every path with a JSON echo of the request and
/// `X-Served-By: <name>`; `/readyz` is the health check; an `Upgrade` request is switched and
/// echoed back byte for byte.
pub struct TestBackend {
    pub addr: SocketAddr,
    counters: Arc<Counters>,
    options: BackendOptions,
    accept: Option<JoinHandle<()>>,
    connections: Arc<Mutex<JoinSet<()>>>,
}

impl TestBackend {
    pub async fn start(name: &str) -> TestBackend {
        TestBackend::start_with(name, BackendOptions::default()).await
    }

    pub async fn start_with(name: &str, options: BackendOptions) -> TestBackend {
        TestBackend::start_on(name, "127.0.0.1:0".parse().expect("address"), options).await
    }

    /// On a given address: several backends can share a port on different loopback addresses
    /// (127.0.0.2, 127.0.0.3, ...), as replicas behind one DNS name do.
    pub async fn start_on(name: &str, address: SocketAddr, options: BackendOptions) -> TestBackend {
        let listener = TcpListener::bind(address)
            .await
            .expect("bind a test backend");
        let counters = Arc::new(Counters {
            name: name.to_string(),
            requests: AtomicUsize::new(0),
            health_checks: AtomicUsize::new(0),
            ready_checks: AtomicUsize::new(0),
            ready_checks_before_first_request: AtomicUsize::new(usize::MAX),
            in_flight: AtomicUsize::new(0),
            delayed: AtomicUsize::new(0),
            ready: AtomicBool::new(true),
            delay_ms: AtomicU64::new(options.delay.as_millis() as u64),
            status: options.status.unwrap_or(StatusCode::OK),
        });
        let mut backend = TestBackend {
            addr: listener.local_addr().expect("local address"),
            counters,
            options,
            accept: None,
            connections: Arc::new(Mutex::new(JoinSet::new())),
        };
        backend.serve(listener);
        backend
    }

    /// `127.0.0.1:<port>`, the backend's id in the balancer.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn backend_address(&self) -> BackendAddress {
        BackendAddress::parse(&self.address()).expect("test backend address")
    }

    /// Requests received, health checks excluded.
    pub fn requests(&self) -> usize {
        self.counters.requests.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> usize {
        self.counters.in_flight.load(Ordering::SeqCst)
    }

    /// Requests it is holding for a delay (`x-delay-ms` or the backend's own) right now.
    pub fn delayed(&self) -> usize {
        self.counters.delayed.load(Ordering::SeqCst)
    }

    /// Health checks received so far, ready or not.
    pub fn health_checks(&self) -> usize {
        self.counters.health_checks.load(Ordering::SeqCst)
    }

    /// Health checks answered 200 so far.
    pub fn ready_checks(&self) -> usize {
        self.counters.ready_checks.load(Ordering::SeqCst)
    }

    /// Health checks it had answered 200 when its first other request arrived; `None` before.
    pub fn ready_checks_before_first_request(&self) -> Option<usize> {
        match self
            .counters
            .ready_checks_before_first_request
            .load(Ordering::SeqCst)
        {
            usize::MAX => None,
            checks => Some(checks),
        }
    }

    /// Makes `/readyz` answer 200 (true) or 503 (false).
    pub fn set_ready(&self, ready: bool) {
        self.counters.ready.store(ready, Ordering::SeqCst);
    }

    /// Dies abruptly: the listener closes (new connections are refused) and every open
    /// connection is dropped mid-request. Returns how many requests it was answering.
    pub async fn kill(&mut self) -> usize {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
        let mut connections =
            std::mem::take(&mut *self.connections.lock().expect("connections lock"));
        connections.shutdown().await;
        // Aborted handlers never decrement: what is left was in flight when the backend died.
        self.in_flight()
    }

    /// Comes back on the same port.
    pub async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("re-bind the test backend's port");
        self.counters.in_flight.store(0, Ordering::SeqCst);
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        let counters = Arc::clone(&self.counters);
        let connections = Arc::clone(&self.connections);
        let idle_close = self.options.idle_close;
        self.accept = Some(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let counters = Arc::clone(&counters);
                let service = service_fn(move |request| answer(Arc::clone(&counters), request));
                let mut http = hyper::server::conn::http1::Builder::new();
                http.timer(TokioTimer::new());
                http.header_read_timeout(idle_close.unwrap_or(Duration::from_secs(30)));
                let connection = http
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                connections
                    .lock()
                    .expect("connections lock")
                    .spawn(async move {
                        let _ = connection.await;
                    });
            }
        }));
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        if let Ok(mut connections) = self.connections.lock() {
            connections.abort_all();
        }
    }
}

async fn answer(
    counters: Arc<Counters>,
    mut request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let name = counters.name.clone();
    let reply = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header("x-served-by", name.as_str())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("valid test response")
    };
    if request.uri().path() == "/readyz" {
        let ready = counters.ready.load(Ordering::SeqCst);
        counters.health_checks.fetch_add(1, Ordering::SeqCst);
        if ready {
            counters.ready_checks.fetch_add(1, Ordering::SeqCst);
        }
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return Ok(reply(
            status,
            format!(r#"{{"node":"{}","ready":{ready}}}"#, counters.name),
        ));
    }
    counters.requests.fetch_add(1, Ordering::SeqCst);
    counters.in_flight.fetch_add(1, Ordering::SeqCst);
    let _ = counters.ready_checks_before_first_request.compare_exchange(
        usize::MAX,
        counters.ready_checks.load(Ordering::SeqCst),
        Ordering::SeqCst,
        Ordering::SeqCst,
    );

    if request.headers().contains_key("upgrade") {
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buffer = [0u8; 1024];
                while let Ok(n) = io.read(&mut buffer).await {
                    if n == 0 || io.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        counters.in_flight.fetch_sub(1, Ordering::SeqCst);
        let response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .header("x-served-by", name.as_str())
            .body(Full::new(Bytes::new()))
            .expect("valid 101");
        return Ok(response);
    }

    let delay = request
        .headers()
        .get("x-delay-ms")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(counters.delay_ms.load(Ordering::SeqCst));
    if delay > 0 {
        counters.delayed.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        counters.delayed.fetch_sub(1, Ordering::SeqCst);
    }
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let headers: BTreeMap<String, String> = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes().len())
        .unwrap_or(0);
    let echo = serde_json::json!({
        "backend": counters.name, "method": method, "path": path, "headers": headers, "body_bytes": body,
    });
    counters.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut response = reply(counters.status, echo.to_string());
    if path == "/hop" {
        // Hop-by-hop headers a backend might send; the balancer must not pass them on.
        response
            .headers_mut()
            .insert("keep-alive", "timeout=5".parse().expect("header"));
        response
            .headers_mut()
            .insert("connection", "x-backend-private".parse().expect("header"));
        response
            .headers_mut()
            .insert("x-backend-private", "1".parse().expect("header"));
    }
    Ok(response)
}

/// A balancer running in this process on real sockets.
pub struct Lb {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Default settings over the given backends, with a fast-failing connect timeout.
pub fn settings_for(backends: &[&TestBackend]) -> Settings {
    Settings::with_backends(backends.iter().map(|b| b.backend_address()).collect())
}

impl Lb {
    pub async fn start(settings: Settings) -> Lb {
        let proxy = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let admin = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the admin API");
        let (addr, admin_addr) = (
            proxy.local_addr().expect("addr"),
            admin.local_addr().expect("addr"),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            cluster_lb::run(settings, proxy, admin, async move {
                let _ = stopped.await;
            })
            .await
            .expect("the balancer starts");
        });
        Lb {
            addr,
            admin: admin_addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The admin API's view of one backend.
    pub async fn backend(&self, id: &str) -> serde_json::Value {
        let list: serde_json::Value = client()
            .get(self.admin_url("/backends"))
            .send()
            .await
            .expect("GET /backends")
            .json()
            .await
            .expect("JSON");
        list["backends"]
            .as_array()
            .and_then(|all| all.iter().find(|b| b["id"] == id))
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }

    pub async fn state_of(&self, id: &str) -> String {
        self.backend(id).await["state"]
            .as_str()
            .unwrap_or("absent")
            .to_string()
    }

    /// Polls the admin API until `id` is in `state`; returns how long that took, or None.
    pub async fn wait_for_state(&self, id: &str, state: &str, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.state_of(id).await == state {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// An HTTP client that never goes through a proxy from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

/// Sends `request` and returns the status of its answer.
pub async fn status_of(request: reqwest::RequestBuilder) -> StatusCode {
    request.send().await.expect("response").status()
}

/// Outcome of a load run.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub ok: usize,
    pub failed: usize,
    /// The first few failures, for assertion messages.
    pub failures: Vec<String>,
}

/// Keeps `workers` clients sending `method` requests to `url` until `stop` is set.
pub fn start_load(
    url: String,
    method: reqwest::Method,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> JoinHandle<LoadReport> {
    tokio::spawn(async move {
        let client = client();
        let mut tasks = JoinSet::new();
        for _ in 0..workers {
            let (client, url, method, stop) = (
                client.clone(),
                url.clone(),
                method.clone(),
                Arc::clone(&stop),
            );
            tasks.spawn(async move {
                let mut report = LoadReport::default();
                while !stop.load(Ordering::SeqCst) {
                    let request = client.request(method.clone(), &url).body(r#"{"n":1}"#);
                    match request.send().await {
                        Ok(response) if response.status().is_success() => {
                            let _ = response.bytes().await;
                            report.ok += 1;
                        }
                        Ok(response) => {
                            report.failed += 1;
                            let status = response.status();
                            let body = response.text().await.unwrap_or_default();
                            report.failures.push(format!("{status} {body}"));
                        }
                        Err(e) => {
                            report.failed += 1;
                            report.failures.push(e.to_string());
                        }
                    }
                }
                report
            });
        }
        let mut total = LoadReport::default();
        while let Some(Ok(report)) = tasks.join_next().await {
            total.ok += report.ok;
            total.failed += report.failed;
            total.failures.extend(report.failures.into_iter().take(5));
        }
        total
    })
}

/// Sends raw bytes to `addr` and returns everything read until the server closes.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// Status code of a raw HTTP response.
pub fn raw_status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Polls `check` every 5 ms for up to `limit`; true once it holds.
pub async fn wait_until(limit: Duration, check: impl Fn() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    check()
}

/// Sends raw bytes to `addr` and returns the response head (up to the blank line).
pub async fn raw_head(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The value of one series in the admin API's `/metrics`, e.g.
/// `lb_connections_open{listener="proxy"}`; 0 when it is not there yet.
pub async fn metric(lb: &Lb, series: &str) -> f64 {
    let text = match client().get(lb.admin_url("/metrics")).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => return 0.0,
    };
    text.lines()
        .filter_map(|line| line.strip_prefix(series))
        .filter_map(|rest| rest.strip_prefix(' '))
        .find_map(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The head of an upload of `content_length` bytes, sent before any of the body.
pub fn upload_head(method: &str, content_length: usize) -> Vec<u8> {
    format!("{method} /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {content_length}\r\n\r\n")
        .into_bytes()
}

/// A slow client: writes `bytes` one at a time, one every `every`, until they are all sent or
/// the balancer closes the connection. Never idle long, never done soon.
pub fn trickle(
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    bytes: Vec<u8>,
    every: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        for byte in bytes {
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(every).await;
        }
    })
}

/// Opens a connection to `addr` and sends `bytes` (maybe none), leaving it open.
pub async fn connect_and_send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    stream
}

/// Reads until the server closes the connection (EOF or reset) and returns what arrived and how
/// long the close took; `None` when it was still open after `limit`.
pub async fn read_until_closed(
    stream: &mut TcpStream,
    limit: Duration,
) -> Option<(Vec<u8>, Duration)> {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = limit.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some((received, started.elapsed())),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => return None,
        }
    }
}
