//! A live page on the admin listener: watch the backends while you break the cluster.
//!
//! * `GET /dashboard` — one small page (HTML, CSS and JS in `assets/`, compiled into the
//!   binary: no CDN, works offline).
//! * `GET /dashboard/events` — Server-Sent Events: a JSON snapshot of every backend and of the
//!   totals at once and then every 250 ms, until the client goes away or the balancer stops.
//! * `/dashboard/session/{login,counter/incr,whoami}` — the page's "my session" calls, relayed
//!   to this balancer's own proxy listener.
//! * `PUT /dashboard/controls` `{"address":"host:port"}` — where the cluster's controls are
//!   answered (`clusterctl up` registers its own); then `GET /dashboard/controls` (what can be
//!   done) and `POST /dashboard/controls/...` (kill a node, restart Redis, start a load...) are
//!   relayed there. Without one, the page shows no controls: the balancer itself cannot start
//!   or stop anything.
//!
//! All of it needs the admin token where one is set, as a bearer header or as `?token=`: the
//! browser's `EventSource` cannot send headers, so the page passes on the token it was opened
//! with. (A token in a URL ends up in the browser's history; the admin listener is bound to
//! loopback by default and the page is meant for the person running the cluster.)
//!
//! Why Server-Sent Events rather than a WebSocket: the data only flows one way, SSE is a plain
//! streamed HTTP response (the admin listener's hyper server serves it as any other body), and
//! the browser reconnects by itself after the balancer restarts.
//!
//! Why a relay for "my session": the page lives on the admin listener and the cluster on the
//! proxy listener, two origins. Asking the proxy from the page directly would need CORS
//! headers on the proxy's (the application's) responses, in the request path of every client.
//! Instead the admin listener forwards three fixed calls to the proxy listener as an ordinary
//! client would, the browser's cookie included, and hands back the answer and its
//! `Set-Cookie`: the request is balanced, retried and counted like any other, and the session
//! is the browser's own. Cookies do not depend on the port, so the cookie the application sets
//! through the relay is the one a `curl` to the proxy port would carry.
//!
//! What the snapshot shows is what the balancer measures, named as such: requests and failed
//! attempts per second from its counters, in-flight requests, and the peak-EWMA latency
//! estimate the balancer routes on (it keeps no per-backend latency percentiles).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};

use crate::backend::{Backend, State};
use crate::backend_set::BackendSet;
use crate::body::{self, ProxyBody};
use crate::metrics::Metrics;
use crate::panic_mode::Routing;

/// The page, compiled into the binary so it is served without files beside it.
const PAGE: &str = include_str!("../assets/dashboard.html");

/// How often a snapshot is sent.
pub const EVENT_INTERVAL: Duration = Duration::from_millis(250);

/// The relayed session calls: small JSON both ways, answered within this.
const RELAY_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_RELAY_BODY: usize = 16 * 1024;

/// The paths of the proxy the page may call through the relay, with their methods.
const RELAYED: [(Method, &str); 3] = [
    (Method::POST, "login"),
    (Method::POST, "counter/incr"),
    (Method::GET, "whoami"),
];

pub struct Dashboard {
    backends: Arc<BackendSet>,
    metrics: Arc<Metrics>,
    /// Where this balancer's proxy listener can be reached from here.
    proxy_address: SocketAddr,
    /// True once the balancer stops: open event streams end.
    stopped: watch::Receiver<bool>,
    /// Where the controls are answered, once registered.
    controls: RwLock<Option<SocketAddr>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlsAddress {
    address: SocketAddr,
}

impl Dashboard {
    pub fn new(
        backends: Arc<BackendSet>,
        metrics: Arc<Metrics>,
        proxy_listen: SocketAddr,
        stopped: watch::Receiver<bool>,
    ) -> Dashboard {
        Dashboard {
            backends,
            metrics,
            proxy_address: reachable(proxy_listen),
            stopped,
            controls: RwLock::new(None),
        }
    }

    /// Answers a request under `/dashboard`; `rest` is the path after it, without slashes.
    pub async fn handle(&self, request: Request<Incoming>, rest: &str) -> Response<ProxyBody> {
        match (request.method(), rest) {
            (&Method::GET, "") => page(),
            (&Method::GET, "events") => self.events(),
            (&Method::PUT, "controls") => self.register_controls(request).await,
            (&Method::GET, "controls") => self.control(request, "").await,
            (&Method::POST, action) if action.starts_with("controls/") => {
                self.control(request, &action["controls/".len()..]).await
            }
            (_, relayed) => match relayed.strip_prefix("session/") {
                Some(path) => self.relay(request, path).await,
                None => body::error(StatusCode::NOT_FOUND, "no such dashboard endpoint"),
            },
        }
    }

    async fn register_controls(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let read = Limited::new(request.into_body(), MAX_RELAY_BODY).collect();
        let bytes = match tokio::time::timeout(RELAY_TIMEOUT, read).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            _ => return body::error(StatusCode::BAD_REQUEST, "unreadable request body"),
        };
        match serde_json::from_slice::<ControlsAddress>(&bytes) {
            Ok(ControlsAddress { address }) => {
                *self.controls.write().unwrap_or_else(|p| p.into_inner()) = Some(address);
                log::info!("admin: dashboard controls at {address}");
                body::json(StatusCode::OK, &json!({ "controls": address.to_string() }))
            }
            Err(e) => body::error(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"address\":\"host:port\"}}: {e}"),
            ),
        }
    }

    /// Relays a control call to where the controls were registered.
    async fn control(&self, request: Request<Incoming>, action: &str) -> Response<ProxyBody> {
        let Some(address) = *self.controls.read().unwrap_or_else(|p| p.into_inner()) else {
            return body::error(
                StatusCode::NOT_FOUND,
                "no controls registered (PUT /dashboard/controls; clusterctl up does)",
            );
        };
        match tokio::time::timeout(RELAY_TIMEOUT, relay_to(address, request, action)).await {
            Ok(Ok(response)) => response,
            Ok(Err(reason)) => body::error(
                StatusCode::BAD_GATEWAY,
                &format!("the controls did not answer: {reason}"),
            ),
            Err(_) => body::error(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("the controls did not answer within {RELAY_TIMEOUT:?}"),
            ),
        }
    }

    fn events(&self) -> Response<ProxyBody> {
        let mut ticker = tokio::time::interval(EVENT_INTERVAL);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let stream = EventStream {
            ticker,
            sampler: Sampler::new(Arc::clone(&self.backends), Arc::clone(&self.metrics)),
            stopped: self.stopped.clone(),
            greeted: false,
        };
        let mut response = Response::new(stream.boxed());
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        body::not_for_caches(headers);
        response
    }

    async fn relay(&self, request: Request<Incoming>, path: &str) -> Response<ProxyBody> {
        if !RELAYED
            .iter()
            .any(|(method, allowed)| method == request.method() && *allowed == path)
        {
            return body::error(
                StatusCode::NOT_FOUND,
                "the session relay knows POST login, POST counter/incr and GET whoami",
            );
        }
        let exchange = relay_to(self.proxy_address, request, path);
        match tokio::time::timeout(RELAY_TIMEOUT, exchange).await {
            Ok(Ok(response)) => response,
            Ok(Err(reason)) => body::error(
                StatusCode::BAD_GATEWAY,
                &format!("the proxy listener did not answer: {reason}"),
            ),
            Err(_) => body::error(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("the proxy listener did not answer within {RELAY_TIMEOUT:?}"),
            ),
        }
    }
}

/// A listen address as a destination: a wildcard (`0.0.0.0`, `::`) is reached on loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    let mut address = listen;
    if address.ip().is_unspecified() {
        address.set_ip(match listen {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    address
}

fn page() -> Response<ProxyBody> {
    let mut response = Response::new(body::full(PAGE));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Everything the page needs is inline; it connects to its own origin only.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'",
        ),
    );
    body::not_for_caches(headers);
    response
}

/// One relayed call: the browser's cookie and body to `proxy` (the proxy listener, or the
/// controls), its status, type, cookies and body back.
async fn relay_to(
    proxy: SocketAddr,
    request: Request<Incoming>,
    path: &str,
) -> Result<Response<ProxyBody>, String> {
    let (parts, incoming) = request.into_parts();
    let sent = Limited::new(incoming, MAX_RELAY_BODY)
        .collect()
        .await
        .map_err(|e| format!("request body: {e}"))?
        .to_bytes();
    let mut outgoing = Request::builder()
        .method(parts.method)
        .uri(format!("/{path}"))
        .header(header::HOST, proxy.to_string());
    if let Some(cookie) = parts.headers.get(header::COOKIE) {
        outgoing = outgoing.header(header::COOKIE, cookie);
    }
    if !sent.is_empty() {
        outgoing = outgoing.header(header::CONTENT_TYPE, "application/json");
    }
    let outgoing = outgoing.body(Full::new(sent)).map_err(|e| e.to_string())?;

    let stream = TcpStream::connect(proxy)
        .await
        .map_err(|e| format!("connect {proxy}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let answer = sender
        .send_request(outgoing)
        .await
        .map_err(|e| e.to_string())?;
    let (head, answer_body) = answer.into_parts();
    let received = Limited::new(answer_body, MAX_RELAY_BODY)
        .collect()
        .await
        .map_err(|e| format!("response body: {e}"))?
        .to_bytes();

    let mut response = Response::new(body::full(received));
    *response.status_mut() = head.status;
    let headers = response.headers_mut();
    for name in [header::CONTENT_TYPE, header::SET_COOKIE] {
        for value in head.headers.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    body::not_for_caches(headers);
    Ok(response)
}

/// The `text/event-stream` body: a `retry` hint, then one `data:` line per tick.
struct EventStream {
    ticker: Interval,
    sampler: Sampler,
    stopped: watch::Receiver<bool>,
    greeted: bool,
}

impl Body for EventStream {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if !self.greeted {
            self.greeted = true;
            // The browser's wait before it reconnects (after a balancer restart, say).
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                b"retry: 1000\n\n",
            )))));
        }
        if self.ticker.poll_tick(cx).is_pending() {
            return Poll::Pending;
        }
        // Checked once a tick: a stopping balancer closes the stream within 250 ms.
        if *self.stopped.borrow() {
            return Poll::Ready(None);
        }
        let event = format!("data: {}\n\n", self.sampler.sample());
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))))
    }
}

/// The rates of a snapshot are over about this much time: over one 250 ms tick, a few requests
/// a second would show as a saw between zero and four times their rate.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);

/// The counters of one stream's recent samples, to turn totals into rates.
struct Sampler {
    backends: Arc<BackendSet>,
    metrics: Arc<Metrics>,
    /// Oldest first, reaching back at least [`RATE_WINDOW`] once the stream is that old.
    recent: VecDeque<Counters>,
    /// Ids sent in an earlier snapshot and no longer in the set.
    gone: Vec<String>,
    seen: Vec<String>,
}

/// Counter values at one sample.
struct Counters {
    at: Instant,
    /// Requests and failures of each backend, by serial (a re-added backend starts afresh).
    backends: HashMap<u64, (u64, u64)>,
    totals: Totals,
}

#[derive(Default, Clone, Copy)]
struct Totals {
    responses: u64,
    server_errors: u64,
    retries: u64,
    retries_refused: u64,
}

impl Totals {
    fn read(metrics: &Metrics) -> Totals {
        let class = |c: &str| metrics.responses.with_label_values(&[c]).get();
        Totals {
            responses: ["1xx", "2xx", "3xx", "4xx", "5xx"]
                .iter()
                .map(|c| class(c))
                .sum(),
            server_errors: class("5xx"),
            retries: metrics.retries.get(),
            retries_refused: metrics.retries_refused.get(),
        }
    }
}

impl Sampler {
    fn new(backends: Arc<BackendSet>, metrics: Arc<Metrics>) -> Sampler {
        Sampler {
            backends,
            metrics,
            recent: VecDeque::new(),
            gone: Vec::new(),
            seen: Vec::new(),
        }
    }

    /// The snapshot to send now. Rates are over the last [`RATE_WINDOW`] (or since the stream
    /// opened, if later; zero in the first snapshot, which has nothing to compare with).
    fn sample(&mut self) -> Value {
        let snapshot = self.backends.snapshot();
        let now = Counters {
            at: Instant::now(),
            backends: snapshot
                .iter()
                .map(|b| (b.serial(), (b.requests(), b.failures())))
                .collect(),
            totals: Totals::read(&self.metrics),
        };
        while self.recent.len() > 1 && now.at.duration_since(self.recent[1].at) >= RATE_WINDOW {
            self.recent.pop_front();
        }
        let before = self.recent.front().unwrap_or(&now);
        let seconds = now.at.duration_since(before.at).as_secs_f64();
        let per_second = |delta: u64| {
            if seconds > 0.0 {
                round(delta as f64 / seconds)
            } else {
                0.0
            }
        };
        let mut list = Vec::with_capacity(snapshot.len());
        for backend in snapshot.iter() {
            let (requests, failures) = (backend.requests(), backend.failures());
            let (before_requests, before_failures) = before
                .backends
                .get(&backend.serial())
                .copied()
                .unwrap_or((requests, failures));
            list.push(json!({
                "id": backend.id(),
                "address": backend.address().as_str(),
                "source": backend.origin().to_string(),
                "state": dashboard_state(backend),
                "rps": per_second(requests.saturating_sub(before_requests)),
                "errors_per_s": per_second(failures.saturating_sub(before_failures)),
                "requests": requests,
                "failures": failures,
                "in_flight": backend.in_flight(),
                "latency_estimate_ms": round(backend.ewma().as_secs_f64() * 1000.0),
            }));
        }
        let present: Vec<String> = snapshot.iter().map(|b| b.id().to_string()).collect();
        for id in &self.seen {
            if !present.contains(id) && !self.gone.contains(id) {
                self.gone.push(id.clone());
            }
        }
        self.gone.retain(|id| !present.contains(id));
        for id in &present {
            if !self.seen.contains(id) {
                self.seen.push(id.clone());
            }
        }

        let (totals, before) = (now.totals, before.totals);
        let responses = totals.responses.saturating_sub(before.responses);
        let server_errors = totals.server_errors.saturating_sub(before.server_errors);
        let error_rate = if responses == 0 {
            0.0
        } else {
            round(server_errors as f64 / responses as f64)
        };
        let panic = self.backends.routing(&snapshot) == Routing::Panic;

        let value = json!({
            "at_ms": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            "backends": list,
            "gone": self.gone,
            "totals": {
                "rps": per_second(responses),
                "error_rate": error_rate,
                "responses": totals.responses,
                "retries": totals.retries,
                "retries_per_s": per_second(totals.retries.saturating_sub(before.retries)),
                "retries_refused": totals.retries_refused,
                "panic": panic,
                "panic_threshold_percent": self.backends.panic_threshold().percent(),
            },
        });
        self.recent.push_back(now);
        value
    }
}

/// The admin API's state, plus `rising`: down, but passing checks on its way back up.
fn dashboard_state(backend: &Backend) -> &'static str {
    match backend.state() {
        State::Down if backend.in_transition() => "rising",
        state => state.as_str(),
    }
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendAddress, Origin};

    #[test]
    fn a_down_backend_passing_checks_is_rising() {
        let address = BackendAddress::parse("127.0.0.1:1").unwrap();
        let backend = Backend::new(address, Origin::Static, &Metrics::new());
        assert_eq!(dashboard_state(&backend), "up");
        backend.mark_down();
        assert_eq!(dashboard_state(&backend), "down");
        backend.record_check(true, 3, 2);
        assert_eq!(dashboard_state(&backend), "rising");
        backend.record_check(true, 3, 2);
        assert_eq!(dashboard_state(&backend), "up");
        backend.set_draining(true);
        assert_eq!(dashboard_state(&backend), "draining");
    }

    #[test]
    fn a_wildcard_listen_address_is_reached_on_loopback() {
        let reach = |s: &str| reachable(s.parse().unwrap()).to_string();
        assert_eq!(reach("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(reach("[::]:8080"), "[::1]:8080");
        assert_eq!(reach("10.1.2.3:8080"), "10.1.2.3:8080");
    }
}
