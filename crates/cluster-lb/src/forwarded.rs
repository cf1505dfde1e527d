//! The `X-Forwarded-*` and `X-Request-Id` headers a backend sees.
//!
//! `X-Forwarded-For` is only as trustworthy as the peer that sent it: anyone can write one.
//! So an incoming value is kept (and the peer appended) only when the peer is one of the
//! configured trusted proxies; from anybody else it is replaced by the peer's address, and
//! `X-Forwarded-Proto`/`-Host` are set from this hop. An incoming `X-Request-Id` is kept when
//! it looks like an id (1 to 128 visible ASCII characters) so one id follows a request through
//! every hop; otherwise a new random one is made.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

const MAX_REQUEST_ID_LEN: usize = 128;

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

/// Rewrites the forwarding headers of a request from `peer`; returns the request id in use.
pub fn apply(headers: &mut HeaderMap, peer: SocketAddr, trusted: &TrustedProxies) -> HeaderValue {
    let peer_ip = peer.ip().to_canonical();
    let peer_is_trusted = trusted.contains(peer_ip);

    let chain = if peer_is_trusted {
        joined(headers, &X_FORWARDED_FOR)
    } else {
        None
    };
    let forwarded_for = match chain {
        Some(chain) => format!("{chain}, {peer_ip}"),
        None => peer_ip.to_string(),
    };
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(forwarded_for)) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }

    if !(peer_is_trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        // This proxy speaks plain HTTP; TLS, if any, ends at a trusted proxy in front of it.
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
    if !(peer_is_trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match headers.get(header::HOST).cloned() {
            Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host),
            None => headers.remove(&X_FORWARDED_HOST),
        };
    }

    let request_id = match headers.get(&X_REQUEST_ID) {
        Some(id) if is_valid_request_id(id) => id.clone(),
        _ => new_request_id(),
    };
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    request_id
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

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 50000)
    }

    #[test]
    fn untrusted_peer_cannot_spoof_the_client_address() {
        let mut headers = HeaderMap::new();
        headers.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        apply(&mut headers, peer("10.0.0.9"), &TrustedProxies::default());
        assert_eq!(headers[&X_FORWARDED_FOR], "10.0.0.9");
    }

    #[test]
    fn trusted_peer_chain_is_extended() {
        let mut headers = HeaderMap::new();
        headers.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        apply(&mut headers, peer("10.0.0.9"), &trusted);
        assert_eq!(headers[&X_FORWARDED_FOR], "1.2.3.4, 10.0.0.9");
        assert_eq!(headers[&X_FORWARDED_PROTO], "https");
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
}
