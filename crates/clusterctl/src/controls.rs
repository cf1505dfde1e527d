//! The dashboard's controls under `clusterctl up`: kill or restart a node, kill or restart
//! Redis, start or stop a load, from buttons on the load balancer's dashboard.
//!
//! The balancer cannot start or stop processes; `clusterctl up` owns them. So `up` answers the
//! controls itself, on a loopback port it registers with the balancer's admin API
//! (`PUT /dashboard/controls`); the dashboard's calls reach it through the admin listener's
//! relay, behind the admin token. Calls are answered one at a time, in the task that owns the
//! cluster: a click is rare, and no lock or shared ownership of the cluster is needed.
//!
//! * `GET /` — the nodes (id, address) and whether Redis and a load can be controlled.
//! * `POST /nodes/{id}/kill` (SIGKILL) and `POST /nodes/{id}/restart`.
//! * `POST /redis/kill` and `POST /redis/restart` (empty again: no persistence), for the
//!   private redis-server only.
//! * `POST /load/start` and `POST /load/stop` — a few clients logging in and incrementing
//!   their counters through the balancer, about 100 requests a second, for ten minutes at most.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use cluster_kit::Persistence;

use crate::cluster::{Cluster, Redis};

/// A connection that has not finished its one call within this is dropped.
const CALL_LIMIT: Duration = Duration::from_secs(10);
/// Clients of the load, each pausing this long between two requests.
const LOAD_CLIENTS: usize = 4;
const LOAD_PAUSE: Duration = Duration::from_millis(40);
/// A forgotten load stops by itself.
const LOAD_LIMIT: Duration = Duration::from_secs(600);

pub struct Controls {
    listener: TcpListener,
}

/// What the calls act on.
struct Controlled {
    cluster: Cluster,
    load: Option<JoinHandle<()>>,
}

impl Drop for Controlled {
    fn drop(&mut self) {
        if let Some(load) = self.load.take() {
            load.abort();
        }
    }
}

type Answer = Result<Value, (StatusCode, String)>;

impl Controls {
    pub async fn bind() -> anyhow::Result<Controls> {
        Ok(Controls {
            listener: TcpListener::bind("127.0.0.1:0").await?,
        })
    }

    pub fn address(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Answers calls until the future is dropped (Ctrl-C); the cluster goes with it.
    pub async fn serve(self, cluster: Cluster) {
        let controlled = Rc::new(Mutex::new(Controlled {
            cluster,
            load: None,
        }));
        loop {
            let Ok((stream, _)) = self.listener.accept().await else {
                continue;
            };
            let controlled = Rc::clone(&controlled);
            let service = service_fn(move |request| {
                let controlled = Rc::clone(&controlled);
                async move { Ok::<_, Infallible>(respond(&controlled, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CALL_LIMIT, connection).await;
        }
    }
}

async fn respond(
    controlled: &Mutex<Controlled>,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().trim_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').collect();
    let mut controlled = controlled.lock().await;
    let answer = match (request.method(), segments.as_slice()) {
        (&Method::GET, [""]) => Ok(describe(&controlled)),
        (&Method::POST, ["nodes", id, action @ ("kill" | "restart")]) => {
            node(&mut controlled, id, action)
        }
        (&Method::POST, ["redis", "kill"]) => redis_kill(&mut controlled),
        (&Method::POST, ["redis", "restart"]) => redis_restart(&mut controlled).await,
        (&Method::POST, ["load", action @ ("start" | "stop")]) => {
            load(&mut controlled, *action == "start")
        }
        _ => Err((StatusCode::NOT_FOUND, "no such control".to_string())),
    };
    let (status, body) = match answer {
        Ok(value) => (StatusCode::OK, value),
        Err((status, error)) => (status, json!({ "error": error })),
    };
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn describe(controlled: &Controlled) -> Value {
    let nodes: Vec<Value> = controlled
        .cluster
        .nodes
        .iter()
        .map(|node| json!({ "id": node.id, "address": node.addr }))
        .collect();
    json!({
        "nodes": nodes,
        "redis": matches!(controlled.cluster.redis, Redis::Managed(_)),
        "load": controlled.load.as_ref().is_some_and(|load| !load.is_finished()),
    })
}

fn node(controlled: &mut Controlled, id: &str, action: &str) -> Answer {
    let Some(node) = controlled.cluster.nodes.iter_mut().find(|n| n.id == id) else {
        return Err((StatusCode::NOT_FOUND, format!("no node {id}")));
    };
    if action == "kill" {
        node.kill();
    } else {
        node.restart()
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    }
    eprintln!("clusterctl: dashboard: {action} {id}");
    Ok(json!({ "done": format!("{action} {id}") }))
}

fn no_private_redis() -> (StatusCode, String) {
    (
        StatusCode::CONFLICT,
        "Redis is external (--redis-url): clusterctl does not run it".to_string(),
    )
}

fn redis_kill(controlled: &mut Controlled) -> Answer {
    let redis = controlled
        .cluster
        .redis
        .managed()
        .ok_or_else(no_private_redis)?;
    redis.kill();
    eprintln!("clusterctl: dashboard: kill redis");
    Ok(json!({ "done": "kill redis" }))
}

/// Returns once the new server answers PING.
async fn redis_restart(controlled: &mut Controlled) -> Answer {
    let redis = controlled
        .cluster
        .redis
        .managed()
        .ok_or_else(no_private_redis)?;
    redis
        .start_again(Persistence::None)
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    eprintln!("clusterctl: dashboard: restart redis");
    Ok(json!({ "done": "restart redis" }))
}

fn load(controlled: &mut Controlled, start: bool) -> Answer {
    if let Some(running) = controlled.load.take() {
        running.abort();
    }
    if start {
        let url = controlled.cluster.lb.url();
        controlled.load = Some(tokio::spawn(async move {
            let _ = tokio::time::timeout(LOAD_LIMIT, run_load(url)).await;
        }));
    }
    eprintln!(
        "clusterctl: dashboard: load {}",
        if start { "started" } else { "stopped" }
    );
    Ok(json!({ "load": start }))
}

/// `LOAD_CLIENTS` users, each with its own cookie, incrementing their counters until aborted.
async fn run_load(lb: String) {
    let mut clients = tokio::task::JoinSet::new();
    for user in 0..LOAD_CLIENTS {
        let lb = lb.clone();
        clients.spawn(async move {
            let Ok(http) = reqwest::Client::builder()
                .cookie_store(true)
                .no_proxy()
                .timeout(Duration::from_secs(2))
                .build()
            else {
                return;
            };
            loop {
                let _ = http
                    .post(format!("{lb}/login"))
                    .json(&json!({ "user": format!("load-{user}") }))
                    .send()
                    .await;
                for _ in 0..100 {
                    let _ = http.post(format!("{lb}/counter/incr")).send().await;
                    tokio::time::sleep(LOAD_PAUSE).await;
                }
            }
        });
    }
    while clients.join_next().await.is_some() {}
}
