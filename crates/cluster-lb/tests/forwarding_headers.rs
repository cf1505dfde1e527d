//! Every header that describes the client or the original request follows one trust rule,
//! checked through a real backend that echoes what it received: from an untrusted peer none of
//! them reaches a node except the balancer's own, from a trusted proxy they pass and the
//! `X-Forwarded-For` and `Forwarded` chains are appended to.

mod common;

use common::{client, settings_for, Lb, TestBackend};
use serde_json::Value;

/// What a client in front of the balancer might send to pass as someone else.
const SPOOFED: [(&str, &str); 9] = [
    ("forwarded", "for=6.6.6.6;proto=https"),
    ("x-real-ip", "6.6.6.6"),
    ("true-client-ip", "6.6.6.6"),
    ("x-original-url", "/admin"),
    ("x-forwarded-prefix", "/evil"),
    ("x-forwarded-port", "443"),
    ("x-forwarded-for", "6.6.6.6"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "evil.test"),
];

async fn headers_seen_by_the_backend(lb: &Lb) -> Value {
    let mut request = client().get(lb.url("/who"));
    for (name, value) in SPOOFED {
        request = request.header(name, value);
    }
    let echo: Value = request
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("echo JSON");
    echo["headers"].clone()
}

#[tokio::test]
async fn untrusted_clients_cannot_pass_any_forwarding_header() {
    let backend = TestBackend::start("a").await;
    let lb = Lb::start(settings_for(&[&backend])).await;
    let seen = headers_seen_by_the_backend(&lb).await;
    for name in [
        "x-real-ip",
        "true-client-ip",
        "x-original-url",
        "x-forwarded-prefix",
        "x-forwarded-port",
    ] {
        assert!(
            seen.get(name).is_none(),
            "{name} reached the backend: {seen}"
        );
    }
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], lb.addr.to_string());
    assert_eq!(
        seen["forwarded"],
        format!("for=127.0.0.1;proto=http;host=\"{}\"", lb.addr)
    );
    lb.stop().await;
}

#[tokio::test]
async fn a_trusted_proxy_passes_them_and_the_chains_are_appended() {
    let backend = TestBackend::start("a").await;
    let mut settings = settings_for(&[&backend]);
    settings.proxy.trusted_proxies = vec!["127.0.0.0/8".parse().expect("CIDR")];
    let lb = Lb::start(settings).await;
    let seen = headers_seen_by_the_backend(&lb).await;
    for (name, value) in SPOOFED {
        match name {
            "x-forwarded-for" => assert_eq!(seen[name], "6.6.6.6, 127.0.0.1"),
            "forwarded" => assert_eq!(
                seen[name],
                format!("{value}, for=127.0.0.1;proto=http;host=\"{}\"", lb.addr)
            ),
            _ => assert_eq!(seen[name], value, "{name} from a trusted proxy is kept"),
        }
    }
    lb.stop().await;
}
