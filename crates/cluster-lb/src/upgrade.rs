//! `Upgrade` pass-through (WebSocket and friends).
//!
//! After the backend answers `101 Switching Protocols`, HTTP is over on both connections: the
//! client's and the backend's. hyper hands each one over as a raw byte stream once the 101 has
//! been written (client side) or read (backend side), and this module copies bytes both ways
//! until either side closes. The balancer does not look inside the tunnel.
//!
//! Only what can work is passed on: an HTTP/1.1 `GET` offering `websocket`. Any other `Upgrade`
//! is dropped and the request goes as a plain one. A server that gets an upgrade it will not do
//! may answer and then close the connection without a word (actix-web does), and one that gets
//! it on a request with a body may read that body until the connection closes: both turn a
//! client's odd header into a broken connection or a hang on the backend's side.

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Version};
use hyper_util::rt::TokioIo;

use crate::hop_by_hop;

/// The `Upgrade` value to pass on to the backend, when the request may switch protocols.
pub fn requested_protocol(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
) -> Option<HeaderValue> {
    if method != Method::GET || version != Version::HTTP_11 {
        return None;
    }
    if !hop_by_hop::is_upgrade_request(headers) {
        return None;
    }
    let upgrade = headers.get(header::UPGRADE)?;
    let offers_websocket = upgrade
        .to_str()
        .ok()?
        .split(',')
        .any(|protocol| protocol.trim().eq_ignore_ascii_case("websocket"));
    offers_websocket.then(|| upgrade.clone())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_headers(protocol: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static(protocol));
        headers
    }

    #[test]
    fn only_an_http11_get_offering_websocket_is_upgraded() {
        let websocket = upgrade_headers("websocket");
        let get = Method::GET;
        assert_eq!(
            requested_protocol(&get, Version::HTTP_11, &websocket),
            Some(HeaderValue::from_static("websocket"))
        );
        assert!(
            requested_protocol(&get, Version::HTTP_11, &upgrade_headers("WebSocket")).is_some()
        );
        assert!(requested_protocol(&get, Version::HTTP_11, &upgrade_headers("foo")).is_none());
        assert!(requested_protocol(&Method::POST, Version::HTTP_11, &websocket).is_none());
        assert!(requested_protocol(&get, Version::HTTP_10, &websocket).is_none());
        let mut no_connection = websocket.clone();
        no_connection.remove(header::CONNECTION);
        assert!(requested_protocol(&get, Version::HTTP_11, &no_connection).is_none());
    }
}
