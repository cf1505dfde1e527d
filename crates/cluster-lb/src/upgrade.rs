//! `Upgrade` pass-through (WebSocket and friends).
//!
//! After the backend answers `101 Switching Protocols`, HTTP is over on both connections: the
//! client's and the backend's. hyper hands each one over as a raw byte stream once the 101 has
//! been written (client side) or read (backend side), and this module copies bytes both ways
//! until either side closes. The balancer does not look inside the tunnel.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Joins the client's and the backend's upgraded connections in a background task.
pub fn tunnel(client: OnUpgrade, backend: OnUpgrade) {
    tokio::spawn(async move {
        let (client, backend) = match tokio::try_join!(client, backend) {
            Ok(pair) => pair,
            Err(e) => {
                log::debug!("upgrade failed: {e}");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut backend = TokioIo::new(backend);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
            log::debug!("upgraded connection ended: {e}");
        }
    });
}
