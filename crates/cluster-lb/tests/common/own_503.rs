//! What every test expects of a 503 the balancer answers itself (no backend left, body budget
//! spent): a retryable answer a client can read, in one assertion.

/// Asserts `response` is the balancer's own 503: `Retry-After: 1` and a JSON `error` string.
pub async fn assert_own_503(response: reqwest::Response, context: &str) {
    assert_eq!(response.status(), 503, "{context}");
    assert_eq!(response.headers()["retry-after"], "1", "{context}");
    let body: serde_json::Value = response.json().await.expect("JSON error body");
    assert!(body["error"].is_string(), "{context}: {body}");
}
