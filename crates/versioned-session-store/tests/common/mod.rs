//! A miniature node for the tests: actix-web with SessionMiddleware on a real socket, a
//! session counter incremented the usual way (get + insert), an atomic counter, and the
//! 409 mapping the real node uses. Each test module uses a part of it.
#![allow(dead_code)]

pub mod write_hold_relay;

use std::sync::Arc;
use std::time::Duration;

use actix_session::storage::SessionStore;
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::Key;
use actix_web::dev::{ServerHandle, Service};
use actix_web::error::InternalError;
use actix_web::{web, App, HttpResponse, HttpServer};
use deadpool_redis::{Pool, PoolConfig, Runtime};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Barrier, Notify};
use versioned_session_store::{conflict_in, ensure_session_id, AtomicCounter};

/// A deadpool pool of up to `size` connections to `url`.
pub fn pool(url: &str, size: usize) -> Pool {
    let mut config = deadpool_redis::Config::from_url(url);
    config.pool = Some(PoolConfig::new(size));
    config
        .create_pool(Some(Runtime::Tokio1))
        .expect("pool configuration is valid")
}

/// Number of keys in the test's Redis.
pub async fn key_count(pool: &Pool) -> i64 {
    let mut conn = pool.get().await.expect("connection to the test redis");
    redis::cmd("DBSIZE")
        .query_async(&mut conn)
        .await
        .expect("DBSIZE")
}

/// Where a test holds session writes between reading the session and answering.
///
/// `POST /counter/incr-held` waits after its read until the test calls [`Gate::release`],
/// so the test can act at exactly that moment (e.g. log out on the other node).
/// `POST /counter/incr-together` waits after its read until the number of requests given
/// to [`Gate::for_together`] have read too: they all read the same session before any of
/// them writes, so their writes conflict on every run.
pub struct Gate {
    reached: Notify,
    release: Notify,
    all_read: Barrier,
}

impl Default for Gate {
    fn default() -> Gate {
        Gate::for_together(1)
    }
}

impl Gate {
    /// A gate whose `incr-together` requests wait for `requests` of them to have read.
    pub fn for_together(requests: usize) -> Gate {
        Gate {
            reached: Notify::new(),
            release: Notify::new(),
            all_read: Barrier::new(requests),
        }
    }

    pub async fn wait_until_reached(&self) {
        self.reached.notified().await;
    }

    pub fn release(&self) {
        self.release.notify_one();
    }
}

/// How long an `incr-together` request waits for the others before answering 500: a
/// request that never arrives must fail the test, not hang it.
const TOGETHER_WAIT: Duration = Duration::from_secs(10);

/// One node: an HttpServer on a free loopback port, stopped by [`Node::stop`] (or with
/// the test process).
pub struct Node {
    pub base: String,
    handle: ServerHandle,
}

impl Node {
    pub fn start<S>(store: S, key: Key, gate: Arc<Gate>, counter: AtomicCounter) -> Node
    where
        S: SessionStore + Clone + Send + 'static,
    {
        let port = cluster_kit::free_port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::from(gate.clone()))
                .app_data(web::Data::new(counter.clone()))
                .wrap(
                    SessionMiddleware::builder(store.clone(), key.clone())
                        .cookie_secure(false)
                        .build(),
                )
                .wrap_fn(|req, srv| {
                    // Outside the session middleware: a refused session write becomes 409.
                    // It stays an `Err` (a middleware cannot build a response once the
                    // request moved inward); the error's own response is the 409.
                    let response = srv.call(req);
                    async move {
                        response.await.map_err(|err| match conflict_in(&err) {
                            Some(conflict) => {
                                let body = json!({ "error": conflict.to_string() });
                                let conflict_response = HttpResponse::Conflict().json(body);
                                InternalError::from_response(conflict, conflict_response).into()
                            }
                            None => err,
                        })
                    }
                })
                .route("/login", web::post().to(login))
                .route("/logout", web::post().to(logout))
                .route("/counter", web::get().to(read_counter))
                .route("/counter/incr", web::post().to(increment))
                .route("/counter/incr-held", web::post().to(increment_held))
                .route("/counter/incr-together", web::post().to(increment_together))
                .route("/counter/incr-atomic", web::post().to(increment_atomic))
        })
        .workers(2)
        .bind(("127.0.0.1", port))
        .expect("bind a free port")
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Node {
            base: format!("http://127.0.0.1:{port}"),
            handle,
        }
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

async fn login(session: Session) -> actix_web::Result<HttpResponse> {
    session.renew();
    session.insert("user", "alice")?;
    ensure_session_id(&session)?;
    Ok(HttpResponse::Ok().json(json!({ "user": "alice" })))
}

async fn logout(session: Session) -> HttpResponse {
    session.purge();
    HttpResponse::Ok().json(json!({ "logged_out": true }))
}

async fn read_counter(session: Session) -> actix_web::Result<HttpResponse> {
    let user = session.get::<String>("user")?;
    let counter = session.get::<i64>("counter")?.unwrap_or(0);
    Ok(HttpResponse::Ok().json(json!({ "user": user, "counter": counter })))
}

async fn increment(session: Session) -> actix_web::Result<HttpResponse> {
    let counter = session.get::<i64>("counter")?.unwrap_or(0) + 1;
    session.insert("counter", counter)?;
    Ok(HttpResponse::Ok().json(json!({ "counter": counter })))
}

async fn increment_held(
    session: Session,
    gate: web::Data<Gate>,
) -> actix_web::Result<HttpResponse> {
    let counter = session.get::<i64>("counter")?.unwrap_or(0) + 1;
    gate.reached.notify_one();
    gate.release.notified().await;
    session.insert("counter", counter)?;
    Ok(HttpResponse::Ok().json(json!({ "counter": counter })))
}

async fn increment_together(
    session: Session,
    gate: web::Data<Gate>,
) -> actix_web::Result<HttpResponse> {
    let counter = session.get::<i64>("counter")?.unwrap_or(0) + 1;
    tokio::time::timeout(TOGETHER_WAIT, gate.all_read.wait())
        .await
        .map_err(|_| {
            actix_web::error::ErrorInternalServerError("not every request read the session")
        })?;
    session.insert("counter", counter)?;
    Ok(HttpResponse::Ok().json(json!({ "counter": counter })))
}

async fn increment_atomic(
    session: Session,
    counter: web::Data<AtomicCounter>,
) -> actix_web::Result<HttpResponse> {
    let session_id = ensure_session_id(&session)?;
    let value = counter
        .increment(&session_id)
        .await
        .map_err(actix_web::error::ErrorServiceUnavailable)?;
    Ok(HttpResponse::Ok().json(json!({ "counter": value })))
}

/// The session TTL the tests' counters carry.
pub const COUNTER_TTL: Duration = Duration::from_secs(60);
/// How long the tests' counters wait for Redis.
pub const COUNTER_TIMEOUT: Duration = Duration::from_millis(500);

/// A counter with the settings the tests use.
pub fn atomic_counter(pool: Pool) -> AtomicCounter {
    AtomicCounter::new(pool, "session:", COUNTER_TTL, COUNTER_TIMEOUT)
}

#[derive(Deserialize)]
pub struct CounterBody {
    pub user: Option<String>,
    pub counter: i64,
}

/// The `name=value` part of the response's session cookie, if it set one.
pub fn session_cookie(response: &reqwest::Response) -> Option<String> {
    let header = response
        .headers()
        .get(reqwest::header::SET_COOKIE)?
        .to_str()
        .ok()?;
    let pair = header.split(';').next()?.to_string();
    // A removal cookie (logout) has an empty value.
    (!pair.ends_with('=')).then_some(pair)
}

/// Logs in through `node` and returns the session cookie.
pub async fn log_in(client: &reqwest::Client, node: &Node) -> String {
    let response = client
        .post(format!("{}/login", node.base))
        .send()
        .await
        .expect("login request");
    assert_eq!(response.status(), 200);
    session_cookie(&response).expect("login sets the session cookie")
}

pub async fn post(client: &reqwest::Client, url: String, cookie: &str) -> reqwest::Response {
    client
        .post(url)
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .expect("request to a test node")
}

pub async fn read(client: &reqwest::Client, node: &Node, cookie: &str) -> CounterBody {
    client
        .get(format!("{}/counter", node.base))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .expect("GET /counter")
        .json()
        .await
        .expect("GET /counter answers JSON")
}
