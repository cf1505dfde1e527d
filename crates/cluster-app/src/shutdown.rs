//! Graceful shutdown: drain first, then stop.
//!
//! A load balancer only stops sending traffic to a node after its health
//! check has failed a few times. So on SIGTERM (or SIGINT) the node does not
//! stop at once: it flips [`DrainSwitch`] so `/readyz` answers 503, keeps
//! serving every request for the drain period, and only then asks the server
//! to stop gracefully (no new connections, in-flight requests finish). A
//! second signal during the drain skips the rest of it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Set once, when the node starts draining; read by `/readyz`.
#[derive(Clone, Default)]
pub struct DrainSwitch(Arc<AtomicBool>);

impl DrainSwitch {
    pub fn start(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// SIGTERM and SIGINT listeners. Installed before the server starts, so a
/// signal that arrives early is not handled by the default action (exit).
pub struct ShutdownSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl ShutdownSignals {
    pub fn install() -> std::io::Result<ShutdownSignals> {
        Ok(ShutdownSignals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// Waits for a signal, drains for `period`, then stops the server gracefully.
pub async fn drain_then_stop(
    mut signals: ShutdownSignals,
    drain: DrainSwitch,
    period: Duration,
    server: ServerHandle,
) {
    let name = signals.recv().await;
    drain.start();
    log::info!(
        "{name}: draining for {} ms (/readyz answers 503), then stopping",
        period.as_millis()
    );
    tokio::select! {
        _ = tokio::time::sleep(period) => {}
        second = signals.recv() => log::info!("{second} during drain: stopping now"),
    }
    log::info!("drain over: finishing in-flight requests");
    server.stop(true).await;
}
