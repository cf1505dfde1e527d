//! Token tricks against the admin API on raw sockets: a missing, wrong, wrongly-schemed,
//! truncated, extended or huge token gets 401 with a JSON error and changes nothing.

mod common;

use std::time::Duration;

use common::{connect_and_send, raw_status, read_until_closed, settings_for, Lb, TestBackend};

const TOKEN: &str = "correct-horse-battery-staple";

#[tokio::test]
async fn admin_token_tricks_get_401_and_change_nothing() {
    let backend = TestBackend::start("a").await;
    let mut settings = settings_for(&[&backend]);
    settings.admin_token = Some(TOKEN.to_string());
    let lb = Lb::start(settings).await;
    let id = backend.address();

    let long = "x".repeat(16 * 1024);
    let authorizations: Vec<Option<String>> = vec![
        None,
        Some(String::new()),
        Some("Bearer".to_string()),
        Some("Bearer ".to_string()),
        Some("Bearer wrong".to_string()),
        Some(format!("Basic {TOKEN}")),
        Some(format!("Token {TOKEN}")),
        Some(TOKEN.to_string()),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer  {TOKEN}")),
        Some(format!("Bearer {long}")),
    ];
    let actions = [
        format!("POST /backends/{id}/drain"),
        format!("DELETE /backends/{id}"),
        "POST /backends".to_string(),
    ];
    for authorization in &authorizations {
        for action in &actions {
            let header = authorization
                .as_ref()
                .map_or(String::new(), |value| format!("Authorization: {value}\r\n"));
            let body = r#"{"address":"127.0.0.1:1"}"#;
            let request = format!(
                "{action} HTTP/1.1\r\nHost: x\r\n{header}Content-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let mut stream = connect_and_send(lb.admin, request.as_bytes()).await;
            let (received, _) = read_until_closed(&mut stream, Duration::from_secs(5))
                .await
                .expect("the admin API answered and closed");
            let answer = String::from_utf8_lossy(&received);
            assert_eq!(
                raw_status(&answer),
                401,
                "{action} with {authorization:?}: {answer}"
            );
            assert!(answer.contains(r#"{"error":"#), "JSON error body: {answer}");
        }
    }

    let backends = common::client()
        .get(lb.admin_url("/backends"))
        .send()
        .await
        .expect("GET /backends")
        .json::<serde_json::Value>()
        .await
        .expect("JSON");
    let list = backends["backends"].as_array().expect("a list");
    assert_eq!(list.len(), 1, "no backend added or removed: {backends}");
    assert_eq!(list[0]["id"], id.as_str());
    assert_ne!(list[0]["state"], "draining", "not drained: {backends}");
    lb.stop().await;
}

/// The admin listener has few connections (`admin_max_connections`): an upload that stalls
/// must not hold one for ever. Its body gets the admin head deadline too, then 408.
#[tokio::test]
async fn a_stalled_admin_body_is_answered_408_within_the_deadline() {
    let backend = TestBackend::start("a").await;
    let mut settings = settings_for(&[&backend]);
    settings.proxy.client_timeout = Duration::from_secs(1);
    let lb = Lb::start(settings).await;

    let request = b"POST /backends HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                    Content-Length: 100\r\n\r\n{\"address\"";
    let mut stream = connect_and_send(lb.admin, request).await;
    let (received, _) = read_until_closed(&mut stream, Duration::from_secs(10))
        .await
        .expect("the admin API answered and closed within 10 s, not never");
    let answer = String::from_utf8_lossy(&received);
    assert_eq!(raw_status(&answer), 408, "{answer}");
    assert!(answer.contains(r#"{"error":"#), "JSON error body: {answer}");
    lb.stop().await;
}
