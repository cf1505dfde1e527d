//! Wiring: builds the backend set, health checks, proxy and admin API from [`Settings`] and runs
//! the listeners until shutdown.
//!
//! Two ways to run the same parts:
//! * [`run`]: everything on the caller's tokio runtime. Tests use it on their own listeners.
//! * [`run_per_core`]: what the binary does. One single-threaded runtime per worker thread,
//!   each accepting from the same listening socket and owning its own upstream connection
//!   pool, as nginx's worker processes and actix-web's workers do: a request and the upstream
//!   connection serving it stay on one thread, with no cross-thread wake-ups on the hot path.
//!   An idle worker picks up new connections first, which keeps the workers evenly loaded. The backend
//!   set, metrics and health checks are shared; the admin API, the health checks and DNS
//!   discovery run on the main thread.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::Admin;
use crate::backend::Origin;
use crate::backend_set::BackendSet;
use crate::config::Settings;
use crate::dashboard::Dashboard;
use crate::dns_discovery::{Discovery, ResolverError};
use crate::health::HealthChecker;
use crate::metrics::Metrics;
use crate::proxy::{Proxy, ProxyOptions};
use crate::request_body::BodyBudget;
use crate::server::{self, Listener};

/// What every worker shares.
#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    backends: Arc<BackendSet>,
    checker: HealthChecker,
    /// The proxy listener's settings; its connection cap counts across all workers.
    proxy_listener: Listener,
    admin_listener: Listener,
    /// The admin listener's deadline for a request head, and for a request body too.
    admin_timeout: Duration,
    /// The memory all workers' buffered request bodies may take together.
    body_budget: Arc<BodyBudget>,
}

/// Longest wait for an admin request head (or the proxy's client timeout, if shorter): admin
/// clients are scripts and probes, never slow.
const ADMIN_CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Creates the backend set and starts each backend's health checks on the current runtime.
fn start_backends(settings: &Settings) -> Shared {
    let metrics = Arc::new(Metrics::new());
    let backends = Arc::new(BackendSet::new(
        Arc::clone(&metrics),
        settings.panic_threshold,
    ));
    let checker = HealthChecker::new(settings.health.clone(), Arc::clone(&backends));
    for address in &settings.backends {
        match backends.add(address.clone(), Origin::Static) {
            Ok(backend) => checker.watch(&backend),
            Err(e) => log::warn!("{e}"),
        }
    }
    let admin_timeout = ADMIN_CLIENT_TIMEOUT.min(settings.proxy.client_timeout);
    Shared {
        metrics,
        backends,
        checker,
        proxy_listener: Listener::new(
            "proxy",
            settings.proxy.client_timeout,
            settings.max_connections,
        ),
        admin_listener: Listener::new("admin", admin_timeout, settings.admin_max_connections),
        admin_timeout,
        body_budget: BodyBudget::new(settings.proxy.max_buffered_body_bytes),
    }
}

async fn serve_proxy(
    shared: Shared,
    options: ProxyOptions,
    listener: TcpListener,
    stopped: watch::Receiver<bool>,
    grace: Duration,
) {
    let metrics = Arc::clone(&shared.metrics);
    let proxy = Arc::new(Proxy::new(
        shared.backends,
        options,
        shared.metrics,
        shared.body_budget,
    ));
    server::serve(
        listener,
        shared.proxy_listener,
        &metrics,
        move |request, peer| Arc::clone(&proxy).handle(request, peer),
        wait_for_stop(stopped),
        grace,
    )
    .await;
}

async fn serve_admin(
    shared: Shared,
    token: Option<String>,
    listener: TcpListener,
    proxy_listen: SocketAddr,
    stopped: watch::Receiver<bool>,
) {
    let metrics = Arc::clone(&shared.metrics);
    let dashboard = Dashboard::new(
        Arc::clone(&shared.backends),
        Arc::clone(&shared.metrics),
        proxy_listen,
        stopped.clone(),
    );
    let admin = Arc::new(Admin::new(
        shared.backends,
        shared.checker,
        shared.metrics,
        dashboard,
        token,
        shared.admin_timeout,
    ));
    server::serve(
        listener,
        shared.admin_listener,
        &metrics,
        move |request, _peer| Arc::clone(&admin).handle(request),
        wait_for_stop(stopped),
        Duration::from_secs(1),
    )
    .await;
}

/// Starts resolving the `--backend-dns` names, if any, on the current runtime, until `stopped`.
fn start_discovery(
    settings: &Settings,
    shared: &Shared,
    stopped: watch::Receiver<bool>,
) -> Result<(), StartError> {
    let discovery = Discovery::new(
        settings.discovery.clone(),
        Arc::clone(&shared.backends),
        shared.checker.clone(),
        Arc::clone(&shared.metrics),
    )?;
    if let Some(discovery) = discovery {
        tokio::spawn(discovery.run(wait_for_stop(stopped)));
    }
    Ok(())
}

/// Runs the balancer on already-bound listeners until `shutdown` resolves, then lets in-flight
/// requests finish (up to `settings.shutdown_timeout`) and returns. An error is DNS discovery
/// that cannot be set up.
pub async fn run(
    settings: Settings,
    proxy_listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let shared = start_backends(&settings);
    let (stop, stopped) = watch::channel(false);
    start_discovery(&settings, &shared, stopped.clone())?;
    let proxy_listen = proxy_listener.local_addr().unwrap_or(settings.listen);
    let proxy = tokio::spawn(serve_proxy(
        shared.clone(),
        settings.proxy,
        proxy_listener,
        stopped.clone(),
        settings.shutdown_timeout,
    ));
    let admin = tokio::spawn(serve_admin(
        shared,
        settings.admin_token,
        admin_listener,
        proxy_listen,
        stopped,
    ));
    shutdown.await;
    let _ = stop.send(true);
    let _ = tokio::join!(proxy, admin);
    Ok(())
}

/// Why the balancer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address} ({listener}): {source}")]
    Listen {
        listener: &'static str,
        address: SocketAddr,
        source: io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] io::Error),
    #[error("cannot start worker thread: {0}")]
    WorkerThread(#[source] io::Error),
    #[error(transparent)]
    Resolver(#[from] ResolverError),
}

/// Runs the balancer with `workers` proxy threads until `shutdown` resolves. Blocks the
/// calling thread; an error is a listener that cannot be bound, a runtime that cannot start or
/// DNS discovery that cannot be set up.
pub fn run_per_core<S, F>(settings: Settings, workers: usize, shutdown: S) -> Result<(), StartError>
where
    S: FnOnce() -> F,
    F: Future<Output = ()>,
{
    let main = single_threaded_runtime()?;
    let (stop, stopped) = watch::channel(false);
    // Sockets are bound inside a runtime (tokio needs one) and handed to workers as std ones.
    let (shared, admin_listener, proxy_listeners) = main.block_on(async {
        let proxy_listeners = shared_listeners(settings.listen, workers).await?;
        let admin = TcpListener::bind(settings.admin_listen)
            .await
            .map_err(|source| StartError::Listen {
                listener: "admin",
                address: settings.admin_listen,
                source,
            })?;
        let shared = start_backends(&settings);
        start_discovery(&settings, &shared, stopped.clone())?;
        Ok::<_, StartError>((shared, admin, proxy_listeners))
    })?;

    // The port actually bound (the settings may say 0), for the dashboard's session relay.
    let proxy_listen = proxy_listeners
        .first()
        .and_then(|listener| listener.local_addr().ok())
        .unwrap_or(settings.listen);
    let mut threads = Vec::with_capacity(workers);
    for (worker, listener) in proxy_listeners.into_iter().enumerate() {
        let (shared, options, stopped, grace) = (
            shared.clone(),
            settings.proxy.clone(),
            stopped.clone(),
            settings.shutdown_timeout,
        );
        let runtime = single_threaded_runtime()?;
        let thread = std::thread::Builder::new()
            .name(format!("proxy-{worker}"))
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            serve_proxy(shared, options, listener, stopped, grace).await
                        }
                        Err(e) => log::error!("worker {worker}: {e}"),
                    }
                })
            })
            .map_err(StartError::WorkerThread)?;
        threads.push(thread);
    }

    main.block_on(async {
        let admin = tokio::spawn(serve_admin(
            shared,
            settings.admin_token,
            admin_listener,
            proxy_listen,
            stopped,
        ));
        shutdown().await;
        let _ = stop.send(true);
        let _ = admin.await;
    });
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}

fn single_threaded_runtime() -> Result<tokio::runtime::Runtime, StartError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)
}

/// One listening socket, duplicated for each worker (each registers it with its own runtime).
async fn shared_listeners(
    address: SocketAddr,
    workers: usize,
) -> Result<Vec<std::net::TcpListener>, StartError> {
    let cannot = |source| StartError::Listen {
        listener: "proxy",
        address,
        source,
    };
    let listener = TcpListener::bind(address)
        .await
        .map_err(cannot)?
        .into_std()
        .map_err(cannot)?;
    let mut listeners = Vec::with_capacity(workers);
    for _ in 1..workers {
        listeners.push(listener.try_clone().map_err(cannot)?);
    }
    listeners.push(listener);
    Ok(listeners)
}

async fn wait_for_stop(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}
