//! The forwarding headers a backend sees (`X-Forwarded-*`, RFC 7239 `Forwarded` and the other
//! client-describing headers) and `X-Request-Id`.
//!
//! A header that says who the client is, or what URL it asked for, is only as trustworthy as
//! the peer that sent it: anyone can write one. One rule covers them all. From a peer that is
//! one of the configured trusted proxies they are kept, and the `X-Forwarded-For` and
//! `Forwarded` chains get this hop appended. From anybody else every such header is removed
//! (`Forwarded`, `X-Real-IP`, `True-Client-IP`, `X-Original-URL`, any `X-Forwarded-*` and the
//! others in [`is_client_describing`]) and this balancer writes its own: `X-Forwarded-For`
//! and `Forwarded` name the peer, `X-Forwarded-Proto` is `http` and `X-Forwarded-Host` the
//! `Host` header. An incoming `X-Request-Id` is kept when it looks like an id (1 to 128
//! visible ASCII characters) so one id follows a request through every hop; otherwise a new
//! random one is made.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

const MAX_REQUEST_ID_LEN: usize = 128;

/// Headers other proxies and CDNs use to describe the client or the original request; a
/// backend framework may believe any of them, so only a trusted peer may send them.
const CLIENT_DESCRIBING: [&str; 13] = [
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-original-host",
    "x-host",
    "x-original-forwarded-for",
];

/// Which peers may tell us who the client is.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(networks)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// True for a header only a trusted proxy may send: every `X-Forwarded-*` and the names in
/// [`CLIENT_DESCRIBING`].
pub fn is_client_describing(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("x-forwarded-") || CLIENT_DESCRIBING.contains(&name)
}

/// Rewrites the forwarding headers of a request from `peer`; returns the request id in use.
pub fn apply(headers: &mut HeaderMap, peer: SocketAddr, trusted: &TrustedProxies) -> HeaderValue {
    let peer_ip = peer.ip().to_canonical();
    let peer_is_trusted = trusted.contains(peer_ip);

    let (forwarded_for_chain, forwarded_chain) = if peer_is_trusted {
        (
            joined(headers, &X_FORWARDED_FOR),
            joined(headers, &header::FORWARDED),
        )
    } else {
        let spoofable: Vec<HeaderName> = headers
            .keys()
            .filter(|name| is_client_describing(name))
            .cloned()
            .collect();
        for name in spoofable {
            headers.remove(name);
        }
        (None, None)
    };

    let this_hop = forwarded_element(peer_ip, headers.get(header::HOST));
    set_list(
        headers,
        &X_FORWARDED_FOR,
        forwarded_for_chain,
        peer_ip.to_string(),
    );
    set_list(headers, &header::FORWARDED, forwarded_chain, this_hop);

    if !headers.contains_key(&X_FORWARDED_PROTO) {
        // This proxy speaks plain HTTP; TLS, if any, ends at a trusted proxy in front of it.
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
    if !headers.contains_key(&X_FORWARDED_HOST) {
        if let Some(host) = headers.get(header::HOST).cloned() {
            headers.insert(X_FORWARDED_HOST.clone(), host);
        }
    }

    let request_id = match headers.get(&X_REQUEST_ID) {
        Some(id) if is_valid_request_id(id) => id.clone(),
        _ => new_request_id(),
    };
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    request_id
}

/// Sets `name` to `chain, last` (or just `last` without a chain) as one value.
fn set_list(headers: &mut HeaderMap, name: &HeaderName, chain: Option<String>, last: String) {
    let list = match chain {
        Some(chain) => format!("{chain}, {last}"),
        None => last,
    };
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(list)) {
        headers.insert(name.clone(), value);
    }
}

/// This hop's RFC 7239 element: `for=<peer>;proto=http` and `;host=<Host>` when it has one.
fn forwarded_element(peer_ip: IpAddr, host: Option<&HeaderValue>) -> String {
    // An IPv6 address has colons, which a token may not: it is quoted, in brackets.
    let mut element = match peer_ip {
        IpAddr::V4(ip) => format!("for={ip};proto=http"),
        IpAddr::V6(ip) => format!("for=\"[{ip}]\";proto=http"),
    };
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        element.push_str(";host=");
        element.push_str(&token_or_quoted(host));
    }
    element
}

/// `value` as an RFC 7230 token when it is one, else as a quoted-string.
fn token_or_quoted(value: &str) -> String {
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !value.is_empty() && value.chars().all(is_tchar) {
        return value.to_string();
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// All values of a possibly repeated header, joined as one list.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
    let first = values.next()?.to_string();
    Some(values.fold(first, |acc, v| format!("{acc}, {v}")))
}

fn is_valid_request_id(id: &HeaderValue) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_LEN
        && bytes.iter().all(|b| b.is_ascii_graphic())
}

/// 128 random bits as 32 lowercase hex digits.
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = fastrand::u128(..);
    let mut id = [0u8; 32];
    for (i, digit) in id.iter_mut().enumerate() {
        *digit = HEX[((bits >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid-request-id"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 50000)
    }

    fn trusting(cidr: &str) -> TrustedProxies {
        TrustedProxies::new(vec![cidr.parse().unwrap()])
    }

    #[test]
    fn untrusted_peer_cannot_spoof_the_client_address() {
        let mut headers = HeaderMap::new();
        headers.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        apply(&mut headers, peer("10.0.0.9"), &TrustedProxies::default());
        assert_eq!(headers[&X_FORWARDED_FOR], "10.0.0.9");
    }

    #[test]
    fn untrusted_peer_loses_every_client_describing_header() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("shop.test:8080"));
        for name in CLIENT_DESCRIBING.iter().chain(&["x-forwarded-prefix"]) {
            headers.insert(*name, HeaderValue::from_static("spoofed"));
        }
        apply(&mut headers, peer("10.0.0.9"), &TrustedProxies::default());
        let left: Vec<&str> = headers
            .keys()
            .filter(|name| is_client_describing(name))
            .map(|name| name.as_str())
            .collect();
        assert_eq!(
            left,
            [
                "x-forwarded-for",
                "forwarded",
                "x-forwarded-proto",
                "x-forwarded-host"
            ]
        );
        assert_eq!(
            headers[header::FORWARDED],
            "for=10.0.0.9;proto=http;host=\"shop.test:8080\""
        );
    }

    #[test]
    fn trusted_peer_chain_is_extended() {
        let mut headers = HeaderMap::new();
        headers.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        headers.insert(header::FORWARDED, HeaderValue::from_static("for=1.2.3.4"));
        headers.insert("x-real-ip", HeaderValue::from_static("1.2.3.4"));
        apply(&mut headers, peer("10.0.0.9"), &trusting("10.0.0.0/8"));
        assert_eq!(headers[&X_FORWARDED_FOR], "1.2.3.4, 10.0.0.9");
        assert_eq!(headers[&X_FORWARDED_PROTO], "https");
        assert_eq!(
            headers[header::FORWARDED],
            "for=1.2.3.4, for=10.0.0.9;proto=http"
        );
        assert_eq!(headers["x-real-ip"], "1.2.3.4");
    }

    #[test]
    fn an_ipv6_peer_is_quoted_in_forwarded() {
        let mut headers = HeaderMap::new();
        apply(
            &mut headers,
            peer("2001:db8::1"),
            &TrustedProxies::default(),
        );
        assert_eq!(
            headers[header::FORWARDED],
            "for=\"[2001:db8::1]\";proto=http"
        );
    }

    #[test]
    fn request_ids_are_kept_when_valid() {
        let mut headers = HeaderMap::new();
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(
            apply(&mut headers, peer("127.0.0.1"), &TrustedProxies::default()),
            "abc-123"
        );
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("has space"));
        let generated = apply(&mut headers, peer("127.0.0.1"), &TrustedProxies::default());
        assert_eq!(generated.len(), 32);
    }

    /// Header names a client might send: spoofable ones, made-up `X-Forwarded-*`, harmless ones.
    fn header_name() -> impl Strategy<Value = HeaderName> {
        let listed: Vec<&'static str> = CLIENT_DESCRIBING
            .iter()
            .copied()
            .chain([
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "x-forwarded-prefix",
                "x-forwarded-port",
                "host",
                "accept",
                "x-custom",
            ])
            .collect();
        prop_oneof![
            proptest::sample::select(listed).prop_map(HeaderName::from_static),
            "[a-z0-9-]{1,12}".prop_map(|suffix| {
                HeaderName::from_bytes(format!("x-forwarded-{suffix}").as_bytes()).unwrap()
            }),
        ]
    }

    fn request_headers() -> impl Strategy<Value = HeaderMap> {
        proptest::collection::vec((header_name(), "[!-~][ -~]{0,30}"), 0..12).prop_map(|pairs| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.append(name, HeaderValue::from_str(&value).unwrap());
            }
            headers
        })
    }

    fn peer_address() -> impl Strategy<Value = SocketAddr> {
        any::<IpAddr>().prop_map(|ip| SocketAddr::new(ip, 40000))
    }

    fn all(headers: &HeaderMap, name: &HeaderName) -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    proptest! {
        #[test]
        fn from_an_untrusted_peer_only_this_hops_values_survive(
            mut headers in request_headers(),
            peer in peer_address(),
        ) {
            let host = headers.get(header::HOST).cloned();
            apply(&mut headers, peer, &TrustedProxies::default());
            let ip = peer.ip().to_canonical();
            for name in headers.keys().filter(|name| is_client_describing(name)) {
                let written = [&X_FORWARDED_FOR, &X_FORWARDED_PROTO, &X_FORWARDED_HOST, &header::FORWARDED];
                prop_assert!(written.contains(&name), "{name} survived");
            }
            prop_assert_eq!(all(&headers, &X_FORWARDED_FOR), vec![ip.to_string()]);
            prop_assert_eq!(all(&headers, &X_FORWARDED_PROTO), vec!["http".to_string()]);
            prop_assert_eq!(
                all(&headers, &header::FORWARDED),
                vec![forwarded_element(ip, host.as_ref())]
            );
            let expected_host: Vec<String> = host
                .iter()
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
                .collect();
            prop_assert_eq!(all(&headers, &X_FORWARDED_HOST), expected_host);
        }

        #[test]
        fn from_a_trusted_peer_chains_are_appended_never_replaced(
            mut headers in request_headers(),
            peer in peer_address(),
        ) {
            let before = headers.clone();
            let trusted = TrustedProxies::new(vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()]);
            apply(&mut headers, peer, &trusted);
            let ip = peer.ip().to_canonical();
            let chain = |name: &HeaderName, last: String| match joined(&before, name) {
                Some(chain) => vec![format!("{chain}, {last}")],
                None => vec![last],
            };
            prop_assert_eq!(all(&headers, &X_FORWARDED_FOR), chain(&X_FORWARDED_FOR, ip.to_string()));
            prop_assert_eq!(
                all(&headers, &header::FORWARDED),
                chain(&header::FORWARDED, forwarded_element(ip, before.get(header::HOST)))
            );
            for name in before.keys().filter(|name| is_client_describing(name)) {
                if name != X_FORWARDED_FOR && name != header::FORWARDED {
                    prop_assert_eq!(all(&headers, name), all(&before, name), "{} changed", name);
                }
            }
        }
    }
}
