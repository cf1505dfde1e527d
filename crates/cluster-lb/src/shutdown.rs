//! The signals that stop the balancer: SIGTERM (orchestrators) and SIGINT (Ctrl-C).

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        _ => {
            log::error!("cannot install signal handlers; stop the process with SIGKILL");
            return std::future::pending().await;
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    log::info!("{name} received: no new connections, finishing in-flight requests");
}
