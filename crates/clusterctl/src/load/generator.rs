//! Constant-rate request sender.
//!
//! Request `k` leaves at `start + k / rate`, whatever happened to the earlier
//! ones: an open-loop generator, so a failing node shows up as errors and
//! latency instead of quietly lowering the offered load. The [`Mix`] says which
//! requests write (`POST /counter/incr`), increment in Redis
//! (`POST /counter/incr?mode=atomic`) or log a new user in (`POST /login`); the
//! rest read (`GET /whoami`), each with one of a few logged-in users' cookies.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use reqwest::header::COOKIE;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::ledger::{Kind, Ledger, LoadSummary, Mark, Phase, RequestOutcome};
use crate::session::served_by;

/// What to send, how fast and for how long at most.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// `http://host:port` of the LB (or a node).
    pub base_url: String,
    pub rate_per_sec: u32,
    /// A hard bound: the sender stops by itself after this.
    pub max_duration: Duration,
    /// `Cookie` header values, used in turn.
    pub cookies: Vec<String>,
    pub mix: Mix,
}

/// One request in `write_every` is a session write, one in `atomic_every` an atomic
/// increment, one in `login_every` a login (0: none of that kind); a request due to be two of
/// them is the later one in that list. The rest are reads.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub write_every: u64,
    pub atomic_every: u64,
    pub login_every: u64,
}

impl Mix {
    /// 90% reads, 10% session writes: the node and deploy scenarios.
    pub const READS_AND_WRITES: Mix = Mix {
        write_every: 10,
        atomic_every: 0,
        login_every: 0,
    };

    /// The Redis failover scenarios: a third of the requests are atomic increments the
    /// ledger can check afterwards, one in 20 a login, one in 10 a session write.
    pub const FAILOVER: Mix = Mix {
        write_every: 10,
        atomic_every: 3,
        login_every: 20,
    };

    /// The kind of request number `k`.
    fn kind(&self, k: u64) -> Kind {
        let every = |n: u64| n > 0 && k % n == n - 1;
        if every(self.login_every) {
            Kind::Login
        } else if every(self.atomic_every) {
            Kind::Atomic
        } else if every(self.write_every) {
            Kind::Write
        } else {
            Kind::Read
        }
    }
}

/// A running load; [`LoadRun::finish`] stops it and returns the figures.
pub struct LoadRun {
    ledger: Arc<Mutex<Ledger>>,
    started: Instant,
    stop: watch::Sender<bool>,
    sender: tokio::task::JoinHandle<JoinSet<()>>,
}

impl LoadRun {
    pub fn start(http: reqwest::Client, plan: LoadPlan) -> LoadRun {
        let ledger = Arc::new(Mutex::new(Ledger::new()));
        let started = Instant::now();
        let (stop, stopped) = watch::channel(false);
        let sender = tokio::spawn(send_loop(http, plan, ledger.clone(), started, stopped));
        LoadRun {
            ledger,
            started,
            stop,
            sender,
        }
    }

    /// Time since the load started: the clock of the ledger and the timeline.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn set_phase(&self, phase: Phase) {
        self.ledger().set_phase(phase);
    }

    /// Labels this moment in the timeline (e.g. "kill node2").
    pub fn mark(&self, label: &str) -> Mark {
        let at = self.elapsed();
        self.ledger().mark(label, at)
    }

    /// Reads the ledger while the load runs.
    pub fn inspect<T>(&self, read: impl FnOnce(&Ledger) -> T) -> T {
        read(&self.ledger())
    }

    /// Stops sending, gives requests in flight up to `grace` to end, then
    /// abandons the rest (they stay counted as in flight) and sums up.
    pub async fn finish(mut self, grace: Duration) -> LoadSummary {
        let _ = self.stop.send(true);
        let duration = self.elapsed();
        let mut requests = match (&mut self.sender).await {
            Ok(requests) => requests,
            Err(_) => JoinSet::new(),
        };
        let drained = tokio::time::timeout(grace, async {
            while requests.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            // Aborted tasks never hand their ticket back: they stay in flight.
            requests.shutdown().await;
        }
        self.ledger().summary(duration)
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        lock(&self.ledger)
    }
}

impl Drop for LoadRun {
    /// A scenario that fails half-way drops its load without finishing it:
    /// the sender stops, and its unfinished requests are aborted with it, so
    /// no load leaks into the next scenario.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    // A panicking request task cannot leave the counters half-updated (each
    // update is a few integer operations), so a poisoned lock is still usable.
    ledger
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn send_loop(
    http: reqwest::Client,
    plan: LoadPlan,
    ledger: Arc<Mutex<Ledger>>,
    started: Instant,
    mut stopped: watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut requests = JoinSet::new();
    let period = Duration::from_secs_f64(1.0 / f64::from(plan.rate_per_sec.max(1)));
    let plan = Arc::new(plan);
    for k in 0u64.. {
        let due = started + period.mul_f64(k as f64);
        if due.duration_since(started) >= plan.max_duration {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = stopped.changed() => break,
        }
        if *stopped.borrow() {
            break;
        }
        let kind = plan.mix.kind(k);
        let cookie_index = k as usize % plan.cookies.len().max(1);
        let cookie = plan.cookies.get(cookie_index).cloned();
        let ticket = lock(&ledger).send(kind, started.elapsed());
        let (http, plan, ledger) = (http.clone(), plan.clone(), ledger.clone());
        requests.spawn(async move {
            let (outcome, node) = one_request(&http, &plan.base_url, kind, cookie.as_deref()).await;
            let mut ledger = lock(&ledger);
            if kind == Kind::Atomic && outcome == RequestOutcome::Ok {
                ledger.acknowledge_increment(cookie_index);
            }
            ledger.finish(ticket, outcome, node.as_deref(), started.elapsed());
        });
        // Reap finished tasks so the set does not grow with the run.
        while requests.try_join_next().is_some() {}
    }
    requests
}

async fn one_request(
    http: &reqwest::Client,
    base_url: &str,
    kind: Kind,
    cookie: Option<&str>,
) -> (RequestOutcome, Option<String>) {
    let mut request = match kind {
        Kind::Read => http.get(format!("{base_url}/whoami")),
        Kind::Write => http.post(format!("{base_url}/counter/incr")),
        Kind::Atomic => http.post(format!("{base_url}/counter/incr?mode=atomic")),
        Kind::Login => http
            .post(format!("{base_url}/login"))
            .json(&serde_json::json!({ "user": "load-login" })),
    };
    if let (Some(cookie), false) = (cookie, kind == Kind::Login) {
        request = request.header(COOKIE, cookie);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(_) => return (RequestOutcome::FailedTransport, None),
    };
    let status = response.status();
    let node = served_by(response.headers());
    // The request is over only when the whole body has arrived.
    if response.bytes().await.is_err() {
        return (RequestOutcome::FailedTransport, node);
    }
    let outcome = if status.is_success() {
        RequestOutcome::Ok
    } else {
        RequestOutcome::FailedStatus(status.as_u16())
    };
    (outcome, node)
}

#[cfg(test)]
mod tests {
    //! The generator against a real HTTP server that misbehaves on purpose:
    //! the ledger must agree, request by request, with what the server did.

    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU64, Ordering};

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;

    use super::*;

    /// What the server did, by outcome.
    #[derive(Default)]
    struct ServerBooks {
        received: AtomicU64,
        answered_ok: AtomicU64,
        answered_500: AtomicU64,
        dropped: AtomicU64,
        stalled: AtomicU64,
    }

    /// Request n (from 1): every 13th stalls for 10 s, every 7th gets its
    /// connection dropped, every 4th a 500, the rest a 200.
    async fn misbehaving_server(books: Arc<ServerBooks>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let books = books.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_request: Request<hyper::body::Incoming>| {
                        let books = books.clone();
                        async move {
                            let n = books.received.fetch_add(1, Ordering::SeqCst) + 1;
                            if n.is_multiple_of(13) {
                                books.stalled.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_secs(10)).await;
                            }
                            if n.is_multiple_of(7) {
                                books.dropped.fetch_add(1, Ordering::SeqCst);
                                return Err("drop the connection");
                            }
                            let status = if n.is_multiple_of(4) {
                                books.answered_500.fetch_add(1, Ordering::SeqCst);
                                500
                            } else {
                                books.answered_ok.fetch_add(1, Ordering::SeqCst);
                                200
                            };
                            let response = Response::builder()
                                .status(status)
                                .header("x-served-by", "tiny")
                                .body(Full::new(Bytes::from_static(b"{}")))
                                .unwrap();
                            Ok::<_, &str>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn every_request_is_counted_exactly_once_as_the_server_saw_it() {
        let books = Arc::new(ServerBooks::default());
        let addr = misbehaving_server(books.clone()).await;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let plan = LoadPlan {
            base_url: format!("http://{addr}"),
            rate_per_sec: 200,
            max_duration: Duration::from_secs(1),
            cookies: vec!["cluster_session=x".into()],
            mix: Mix::READS_AND_WRITES,
        };
        let run = LoadRun::start(http, plan);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // A grace far shorter than the stall: stalled requests stay in flight.
        let summary = run.finish(Duration::from_millis(500)).await;

        let seen = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        let total = summary.total;
        assert_eq!(total.sent, 200, "1 s at 200 req/s");
        assert!(total.balances(), "{total:?}");
        assert_eq!(total.sent, seen(&books.received));
        assert_eq!(total.ok, seen(&books.answered_ok));
        assert_eq!(total.failed_status, seen(&books.answered_500));
        // Stalled requests never reached their drop or their status: they are
        // the server's only unfinished ones, and the ledger's only open ones.
        assert_eq!(total.in_flight, seen(&books.stalled));
        assert_eq!(total.failed_transport, seen(&books.dropped));
        assert_eq!(summary.writes.sent, 20);
        assert_eq!(summary.served_by.get("tiny"), Some(&total.ok));
        assert_eq!(
            summary.timeline.iter().map(|b| b.sent).sum::<u64>(),
            total.sent,
            "every send is in one timeline bucket"
        );
    }
}
