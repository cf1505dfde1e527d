//! Wiring: settings in, a running HTTP server out.
//!
//! Used by `main` and nowhere else; the tests start the real binary. The
//! middleware order is the part worth reading (outermost first):
//!
//! 1. `DefaultHeaders`: `Cache-Control: no-store`, `Vary: Cookie` and
//!    `X-Content-Type-Options: nosniff` ([`response_headers`]), and
//!    `X-Served-By`, on every response, errors included (an error that
//!    leaves the stack as `Err` sets them itself: [`ApiError`](crate::errors::ApiError)).
//! 2. [`request_metrics::record_request`]: counts the final status of every request.
//! 3. `ErrorHandlers`: non-JSON error bodies (404, 405, ...) become JSON.
//! 4. Probes (`/healthz`, `/readyz`, `/metrics`) are routed here, outside the
//!    session layer. Everything else goes through:
//! 5. [`store_unavailable`]: a session-store failure becomes a 503, a
//!    refused write (versioned store only) a 409.
//! 6. `SessionMiddleware` with the store `SESSION_STORE` names: a Redis store
//!    inside a [`BoundedStore`] (timeouts and metrics), or one of the stores
//!    without Redis that the course compares ([`MemoryStore`], [`CappedCookieStore`]).

use std::net::SocketAddr;
use std::time::Duration;

use actix_session::config::{
    BrowserSession, CookieContentSecurity, PersistentSession, TtlExtensionPolicy,
};
use actix_session::storage::SessionStore;
use actix_session::SessionMiddleware;
use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Key, SameSite};
use actix_web::dev::Server;
use actix_web::middleware::{from_fn, DefaultHeaders, ErrorHandlers};
use actix_web::{web, App, HttpServer};

use versioned_session_store::{AtomicCounter, VersionedRedisStore};

use crate::bounded_store::BoundedStore;
use crate::configuration::{RedisTarget, SessionStoreKind, Settings};
use crate::cookie_store::CappedCookieStore;
use crate::errors::{json_body_error, json_error_body, SERVED_BY};
use crate::getex_store::GetexRedisStore;
use crate::memory_store::{MemoryStore, DEFAULT_CAPACITY_BYTES};
use crate::metrics::Metrics;
use crate::primary_pool::PrimaryPool;
use crate::request_metrics;
use crate::response_headers;
use crate::routes;
use crate::sentinel::{self, Sentinels};
use crate::shutdown::{drain_then_stop, DrainSwitch, ShutdownSignals};
use crate::state::AppState;
use crate::store_unavailable;

/// Largest JSON body accepted; an item value is capped lower (4 KiB) by its
/// handler, which then answers with a precise message.
const JSON_BODY_LIMIT: usize = 64 * 1024;

/// After the drain, how long in-flight requests get before the server stops
/// anyway. Requests are bounded by the Redis timeout, so this is generous.
const SHUTDOWN_TIMEOUT_SECS: u64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot set up the Redis pool: {0}")]
    RedisPool(#[from] deadpool_redis::CreatePoolError),
    #[error("SESSION_STORE needs Redis and none is configured")]
    NoRedis,
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the session cookie looks like; the same on every node.
#[derive(Clone)]
struct CookieSettings {
    key: Key,
    name: String,
    secure: bool,
    /// Max-Age = `ttl`, renewed on every response; else a browser-session cookie.
    persistent: bool,
    ttl: Duration,
}

pub struct Application {
    server: Server,
}

impl Application {
    /// Binds the listener and starts the workers; call
    /// [`Application::run_until_stopped`] to serve.
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        let metrics = Metrics::new(&settings.node_id)?;
        let pool = match &settings.redis {
            Some(target) => Some(primary_pool(target, &settings).await?),
            None => None,
        };
        let drain = DrainSwitch::default();
        let counter = pool.as_ref().map(|pool| {
            let counter = AtomicCounter::new(
                pool.clone(),
                settings.redis_key_prefix.as_str(),
                settings.session_ttl,
                settings.redis_timeout,
            );
            match settings.replica_acks {
                Some(acks) => counter.with_replica_acks(acks),
                None => counter,
            }
        });
        let state = web::Data::new(AppState {
            node_id: settings.node_id.clone(),
            redis: pool.clone(),
            drain: drain.clone(),
            metrics: metrics.clone(),
            counter,
        });
        let signals = ShutdownSignals::install().map_err(StartupError::Signals)?;

        let server = match (settings.session_store, pool) {
            (SessionStoreKind::Memory, _) => http_server(
                MemoryStore::new(settings.session_ttl, DEFAULT_CAPACITY_BYTES),
                state,
                &settings,
            )?,
            (SessionStoreKind::Cookie, _) => http_server(CappedCookieStore, state, &settings)?,
            (SessionStoreKind::RedisGetex, Some(pool)) => {
                let getex = GetexRedisStore::new(
                    pool,
                    &settings.redis_key_prefix,
                    settings.session_ttl,
                    settings.replica_acks,
                );
                http_server(
                    BoundedStore::new(getex, settings.redis_timeout, metrics),
                    state,
                    &settings,
                )?
            }
            (SessionStoreKind::RedisVersioned, Some(pool)) => {
                let mut versioned =
                    VersionedRedisStore::new(pool, settings.redis_key_prefix.as_str());
                if let Some(acks) = settings.replica_acks {
                    versioned = versioned.with_replica_acks(acks);
                }
                http_server(
                    BoundedStore::new(versioned, settings.redis_timeout, metrics),
                    state,
                    &settings,
                )?
            }
            (SessionStoreKind::RedisGetex | SessionStoreKind::RedisVersioned, None) => {
                return Err(StartupError::NoRedis)
            }
        };

        actix_web::rt::spawn(drain_then_stop(
            signals,
            drain,
            settings.drain,
            server.handle(),
        ));
        log::info!(
            "node {} listening on {} (session store: {:?})",
            settings.node_id,
            settings.listen_addr,
            settings.session_store
        );
        Ok(Application { server })
    }

    /// Serves until the drain after SIGTERM/SIGINT is over and in-flight
    /// requests are done.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// The pool on `REDIS_URL`, or on the primary Sentinel names: asked once before the node
/// serves, then followed for the node's life ([`sentinel::follow`]). A node that finds no
/// primary at start starts anyway and answers 503 until Sentinel names one.
async fn primary_pool(
    target: &RedisTarget,
    settings: &Settings,
) -> Result<PrimaryPool, StartupError> {
    match target {
        RedisTarget::Url(url) => Ok(PrimaryPool::for_url(url, settings.redis_timeout)?),
        RedisTarget::Sentinel(sentinel_settings) => {
            let pool = PrimaryPool::for_sentinel(settings.redis_timeout);
            let mut sentinels = Sentinels::new(sentinel_settings.clone(), settings.redis_timeout);
            match sentinels.find_primary().await {
                Ok(info) => pool.install_found(info)?,
                Err(err) => {
                    log::warn!("no Redis primary yet: {err}; answering 503 until there is one")
                }
            }
            actix_web::rt::spawn(sentinel::follow(pool.clone(), sentinels));
            Ok(pool)
        }
    }
}

/// Binds and starts the HTTP server with `store` behind the session middleware.
/// Generic because each `SESSION_STORE` is its own type.
fn http_server<S>(
    store: S,
    state: web::Data<AppState>,
    settings: &Settings,
) -> Result<Server, StartupError>
where
    S: SessionStore + Clone + Send + 'static,
{
    let cookie = CookieSettings {
        key: settings.session_key.clone(),
        name: settings.cookie_name.clone(),
        secure: settings.cookie_secure,
        persistent: settings.persistent_cookie,
        ttl: settings.session_ttl,
    };
    let node_id = settings.node_id.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(JSON_BODY_LIMIT)
                    .error_handler(json_body_error),
            )
            .configure(routes::probes)
            .service(
                web::scope("")
                    .configure(routes::session_routes)
                    .wrap(session_middleware(store.clone(), &cookie))
                    .wrap(from_fn(store_unavailable::map_store_errors)),
            )
            .wrap(ErrorHandlers::new().default_handler(json_error_body))
            .wrap(from_fn(request_metrics::record_request))
            .wrap(DefaultHeaders::new().add((SERVED_BY, node_id.as_str())))
            .wrap(response_headers::default_headers())
    })
    .workers(settings.workers)
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
    .bind(settings.listen_addr)
    .map_err(|source| StartupError::Bind {
        addr: settings.listen_addr,
        source,
    })?
    .run();
    Ok(server)
}

/// Encrypted (Private) cookie, HttpOnly, SameSite=Lax; the session lives
/// `ttl` after its last use in Redis, and in the browser too when the cookie
/// is persistent.
///
/// Why a browser-session cookie by default: a persistent cookie's Max-Age has
/// to slide with the session, so actix-session re-encrypts and sends the
/// cookie with every response, reads included: about 1.5 us of CPU and 9 % of
/// read throughput (BENCHMARKS.md). Without a Max-Age a read sends no cookie
/// at all, and the idle timeout still holds, in Redis, where it matters.
fn session_middleware<S: SessionStore>(store: S, cookie: &CookieSettings) -> SessionMiddleware<S> {
    let ttl = CookieDuration::seconds(i64::try_from(cookie.ttl.as_secs()).unwrap_or(i64::MAX));
    let builder = SessionMiddleware::builder(store, cookie.key.clone())
        .cookie_name(cookie.name.clone())
        .cookie_secure(cookie.secure)
        .cookie_http_only(true)
        .cookie_same_site(SameSite::Lax)
        .cookie_content_security(CookieContentSecurity::Private);
    let builder = if cookie.persistent {
        builder.session_lifecycle(
            PersistentSession::default()
                .session_ttl(ttl)
                .session_ttl_extension_policy(TtlExtensionPolicy::OnEveryRequest),
        )
    } else {
        builder.session_lifecycle(
            BrowserSession::default()
                .state_ttl(ttl)
                .state_ttl_extension_policy(TtlExtensionPolicy::OnEveryRequest),
        )
    };
    builder.build()
}
