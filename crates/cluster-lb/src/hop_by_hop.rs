//! Hop-by-hop headers describe one connection, not the message, so a proxy must not forward
//! them (RFC 9110 §7.6.1): `Connection` and every header it names, `Keep-Alive`, `TE`,
//! `Trailer`, `Transfer-Encoding`, `Upgrade` and the `Proxy-*` family. hyper re-frames bodies
//! itself, so dropping `Transfer-Encoding` is safe. For an `Upgrade` (WebSocket) exchange the
//! upgrade headers are put back on purpose by the caller.

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

const ALWAYS: [HeaderName; 7] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Removes hop-by-hop headers in place.
pub fn strip(headers: &mut HeaderMap) {
    // Most requests carry none: one pass over the names is cheaper than nine removals, each
    // of which hashes its name.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named_in_connection: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named_in_connection {
        headers.remove(name);
    }
    for name in ALWAYS {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// A header that is hop-by-hop whatever `Connection` says (`Connection` itself included).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    ALWAYS.contains(name) || name == "keep-alive" || name == "proxy-connection"
}

/// [`strip`], then, for an upgrade (`protocol` is the `Upgrade` value it carried), puts back
/// the two headers that must cross the proxy for the switch to happen.
pub fn strip_keeping_upgrade(headers: &mut HeaderMap, protocol: Option<HeaderValue>) {
    strip(headers);
    if let Some(protocol) = protocol {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
}

/// Is this request asking to switch protocols (`Connection: upgrade` plus `Upgrade: ...`)?
/// Whether the proxy lets it is `upgrade::requested_protocol`'s call.
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn strips_connection_and_the_headers_it_names() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::ACCEPT));
    }
}
