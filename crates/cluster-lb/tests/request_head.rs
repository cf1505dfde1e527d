//! Property test of what the balancer does to a request head before sending it to a backend:
//! `upgrade::requested_protocol` decides whether the request may switch protocols, then
//! `hop_by_hop::strip_keeping_upgrade` removes every header that describes the client's
//! connection (the order `Proxy::prepare` uses).
//!
//! For arbitrary header sets drawn from the hop-by-hop names, tokens listed in `Connection`
//! and ordinary headers: no hop-by-hop header and nothing `Connection` names reaches the
//! backend, except `Upgrade` and `Connection: upgrade` exactly when the request is an HTTP/1.1
//! `GET` offering `websocket`; every other header arrives with all its values.

use cluster_lb::{hop_by_hop, upgrade};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Version};
use proptest::prelude::*;
use proptest::sample::select;

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Tokens a client may list in `Connection`: options, hop-by-hop names, end-to-end names.
const TOKENS: [&str; 11] = [
    "upgrade",
    "Upgrade",
    "keep-alive",
    "close",
    "te",
    "x-a",
    "X-B",
    "x-c",
    "accept",
    "Trailer",
    "x-kept",
];

/// Header names a request may carry besides `Connection` and `Upgrade`.
const NAMES: [&str; 12] = [
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "accept",
    "x-a",
    "x-b",
    "x-c",
    "x-kept",
];

const PROTOCOLS: [&str; 6] = [
    "websocket",
    "WebSocket",
    "foo",
    "h2c",
    "foo, websocket",
    "websocket/13",
];

#[derive(Debug, Clone)]
struct Head {
    method: Method,
    version: Version,
    /// Each inner list is one `Connection` header's comma-separated tokens.
    connection: Vec<Vec<&'static str>>,
    upgrade: Option<&'static str>,
    others: Vec<(&'static str, &'static str)>,
}

impl Head {
    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for tokens in &self.connection {
            let value = HeaderValue::from_str(&tokens.join(", ")).expect("token list");
            headers.append("connection", value);
        }
        if let Some(protocol) = self.upgrade {
            headers.insert("upgrade", HeaderValue::from_static(protocol));
        }
        for (name, value) in &self.others {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    /// Lower-case names listed in `Connection`.
    fn named_in_connection(&self) -> Vec<String> {
        self.connection
            .iter()
            .flatten()
            .map(|token| token.to_ascii_lowercase())
            .collect()
    }

    /// What the rule says, stated from the request as built (not from the code under test).
    fn may_upgrade(&self) -> bool {
        self.method == Method::GET
            && self.version == Version::HTTP_11
            && self.named_in_connection().iter().any(|t| t == "upgrade")
            && self.upgrade.is_some_and(|protocol| {
                protocol
                    .split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
            })
    }
}

fn head() -> impl Strategy<Value = Head> {
    (
        select(vec![Method::GET, Method::POST, Method::PUT, Method::HEAD]),
        select(vec![Version::HTTP_10, Version::HTTP_11]),
        prop::collection::vec(prop::collection::vec(select(&TOKENS[..]), 1..4), 0..3),
        prop::option::of(select(&PROTOCOLS[..])),
        prop::collection::vec(
            (select(&NAMES[..]), select(vec!["1", "two", "timeout=5"])),
            0..8,
        ),
    )
        .prop_map(|(method, version, connection, upgrade, others)| Head {
            method,
            version,
            connection,
            upgrade,
            others,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn only_end_to_end_headers_and_a_websocket_upgrade_reach_the_backend(head in head()) {
        let mut headers = head.headers();
        let protocol = upgrade::requested_protocol(&head.method, head.version, &headers);
        hop_by_hop::strip_keeping_upgrade(&mut headers, protocol);
        let upgrades = head.may_upgrade();

        for name in HOP_BY_HOP {
            if upgrades && (name == "connection" || name == "upgrade") {
                continue;
            }
            prop_assert!(!headers.contains_key(name), "{name} reached the backend: {headers:?}");
        }
        let named = head.named_in_connection();
        for name in &named {
            if upgrades && name == "upgrade" {
                continue;
            }
            prop_assert!(
                !headers.contains_key(name.as_str()),
                "{name}, named in Connection, reached the backend: {headers:?}"
            );
        }
        if upgrades {
            let values = |name| -> Vec<&[u8]> {
                headers.get_all(name).iter().map(HeaderValue::as_bytes).collect()
            };
            prop_assert_eq!(values("connection"), vec![b"upgrade".as_slice()]);
            let offered = head.upgrade.unwrap_or_default().as_bytes();
            prop_assert_eq!(values("upgrade"), vec![offered]);
        }

        for (name, value) in &head.others {
            let end_to_end = !HOP_BY_HOP.contains(name) && !named.iter().any(|n| n == name);
            if end_to_end {
                let name = HeaderName::from_static(name);
                prop_assert!(
                    headers.get_all(&name).iter().any(|v| v == value),
                    "{name}: {value} was lost: {headers:?}"
                );
            }
        }
    }
}
