//! Wiring: builds the backend set, health checks, proxy and admin API from [`Settings`] and runs
//! both listeners until shutdown. `main` calls [`run`] with OS signals as the shutdown trigger;
//! tests call it on their own listeners with a channel instead.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::Admin;
use crate::backend_set::BackendSet;
use crate::config::Settings;
use crate::health::HealthChecker;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::server;

/// Runs the balancer on already-bound listeners until `shutdown` resolves, then lets in-flight
/// requests finish (up to `settings.shutdown_timeout`) and returns.
pub async fn run(
    settings: Settings,
    proxy_listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let metrics = Arc::new(Metrics::new());
    let backends = Arc::new(BackendSet::new(Arc::clone(&metrics)));
    let checker = HealthChecker::new(settings.health.clone());
    for address in settings.backends {
        match backends.add(address) {
            Ok(backend) => checker.watch(&backend),
            Err(e) => log::warn!("{e}"),
        }
    }

    let client_timeout = settings.proxy.client_timeout;
    let proxy = Arc::new(Proxy::new(
        Arc::clone(&backends),
        settings.proxy,
        Arc::clone(&metrics),
    ));
    let admin = Arc::new(Admin::new(backends, checker, metrics, settings.admin_token));

    let (stop, stopped) = watch::channel(false);
    let proxy_server = tokio::spawn(server::serve(
        proxy_listener,
        server::http1(client_timeout),
        move |request, peer| Arc::clone(&proxy).handle(request, peer),
        wait_for_stop(stopped.clone()),
        settings.shutdown_timeout,
    ));
    let admin_server = tokio::spawn(server::serve(
        admin_listener,
        server::http1(Duration::from_secs(10)),
        move |request, _peer| Arc::clone(&admin).handle(request),
        wait_for_stop(stopped),
        Duration::from_secs(1),
    ));

    shutdown.await;
    let _ = stop.send(true);
    let _ = tokio::join!(proxy_server, admin_server);
}

async fn wait_for_stop(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}
