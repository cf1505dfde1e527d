//! What backends and clients see: hop-by-hop headers stripped, forwarding headers trusted only
//! from configured proxies, request ids, `X-Served-By` passed through, and size limits.

mod common;

use common::{client, raw_exchange, raw_head, raw_status, settings_for, Lb, TestBackend};
use serde_json::Value;

async fn echo(request: reqwest::RequestBuilder) -> (reqwest::header::HeaderMap, Value) {
    let response = request.send().await.expect("response");
    assert!(response.status().is_success(), "{}", response.status());
    let headers = response.headers().clone();
    (headers, response.json().await.expect("echo JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let backend = TestBackend::start("a").await;
    let lb = Lb::start(settings_for(&[&backend])).await;
    let request =
        "GET /hop HTTP/1.1\r\nHost: example.test\r\nConnection: close, x-client-private\r\n\
         X-Client-Private: 1\r\nKeep-Alive: timeout=9\r\nTE: trailers\r\n\
         Proxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n\r\n";
    // Control: straight from the backend, the response does carry its hop-by-hop headers.
    let direct = raw_exchange(backend.addr, request.as_bytes())
        .await
        .to_ascii_lowercase();
    assert!(
        direct.contains("x-backend-private: 1") && direct.contains("keep-alive: timeout=5"),
        "{direct}"
    );

    let response = raw_exchange(lb.addr, request.as_bytes()).await;
    assert_eq!(raw_status(&response), 200, "{response}");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    let head = head.to_ascii_lowercase();

    let seen: Value = serde_json::from_str(body).expect("echo JSON");
    let seen = &seen["headers"];
    for name in [
        "x-client-private",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(
            seen.get(name).is_none(),
            "backend received hop-by-hop {name}: {seen}"
        );
    }
    assert_eq!(seen["x-kept"], "yes");
    assert_eq!(seen["host"], "example.test", "the client's Host is kept");

    assert!(
        !head.contains("x-backend-private"),
        "client received a header the backend's Connection named: {head}"
    );
    assert!(
        !head.contains("keep-alive: timeout=5"),
        "client received the backend's Keep-Alive: {head}"
    );
    assert!(
        head.contains("x-served-by: a"),
        "X-Served-By is passed through: {head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_untrusted_peers_are_replaced() {
    let backend = TestBackend::start("a").await;
    let lb = Lb::start(settings_for(&[&backend])).await;
    let (_, seen) = echo(
        client()
            .get(lb.url("/who"))
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "evil.test"),
    )
    .await;
    let headers = &seen["headers"];
    assert_eq!(
        headers["x-forwarded-for"], "127.0.0.1",
        "spoofed client address ignored"
    );
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], lb.addr.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_trusted_proxies_are_extended() {
    let backend = TestBackend::start("a").await;
    let mut settings = settings_for(&[&backend]);
    settings.proxy.trusted_proxies = vec!["127.0.0.0/8".parse().expect("CIDR")];
    let lb = Lb::start(settings).await;
    let (_, seen) = echo(
        client()
            .get(lb.url("/who"))
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "shop.test"),
    )
    .await;
    let headers = &seen["headers"];
    assert_eq!(headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "https");
    assert_eq!(headers["x-forwarded-host"], "shop.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_kept_when_valid_and_generated_otherwise() {
    let backend = TestBackend::start("a").await;
    let lb = Lb::start(settings_for(&[&backend])).await;

    let (response, seen) = echo(
        client()
            .get(lb.url("/id"))
            .header("x-request-id", "trace-42"),
    )
    .await;
    assert_eq!(seen["headers"]["x-request-id"], "trace-42");
    assert_eq!(response["x-request-id"], "trace-42");

    // Far longer than any tracing system's id: replaced, not passed on.
    let too_long = "x".repeat(1000);
    let (response, seen) = echo(
        client()
            .get(lb.url("/id"))
            .header("x-request-id", too_long.as_str()),
    )
    .await;
    let generated = seen["headers"]["x-request-id"]
        .as_str()
        .expect("an id")
        .to_string();
    assert_ne!(generated, too_long);
    assert!(
        !generated.is_empty() && generated.bytes().all(|b| b.is_ascii_hexdigit()),
        "a generated id is plain hex, safe in any log: {generated}"
    );
    assert_eq!(response["x-request-id"], generated.as_str());
    // A generated id is a valid one: a client that sends it back keeps it.
    let (_, echoed) = echo(
        client()
            .get(lb.url("/id"))
            .header("x-request-id", generated.as_str()),
    )
    .await;
    assert_eq!(echoed["headers"]["x-request-id"], generated.as_str());

    let (_, first) = echo(client().get(lb.url("/id"))).await;
    let (_, second) = echo(client().get(lb.url("/id"))).await;
    assert_ne!(
        first["headers"]["x-request-id"], second["headers"]["x-request-id"],
        "fresh ids are unique"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_headers_get_431() {
    let backend = TestBackend::start("a").await;
    let settings = settings_for(&[&backend]);
    let limit = settings.proxy.max_header_bytes;
    let lb = Lb::start(settings).await;

    // Over the proxy's limit: its own 431 with a JSON body.
    let response = client()
        .get(lb.url("/big"))
        .header("x-big", "a".repeat(limit + 1024))
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), 431);
    let body: Value = response.json().await.expect("JSON error");
    assert!(body["error"].is_string());

    // More headers than the parser accepts (100): hyper answers 431 before the proxy runs.
    let mut request = String::from("GET /many HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        request.push_str(&format!("X-H{i}: v\r\n"));
    }
    request.push_str("\r\n");
    assert_eq!(
        raw_status(&raw_exchange(lb.addr, request.as_bytes()).await),
        431
    );
    assert_eq!(
        backend.requests(),
        0,
        "nothing oversize reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_bodies_get_413() {
    let backend = TestBackend::start("a").await;
    let settings = settings_for(&[&backend]);
    let limit = settings.proxy.max_body_bytes;
    let lb = Lb::start(settings).await;

    // A declared length over the limit is refused before any body byte is read. (Only the head
    // is sent, so no unread upload makes the kernel reset the connection under the 413.)
    let declared = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        limit * 2
    );
    let head = raw_head(lb.addr, declared.as_bytes()).await;
    assert_eq!(raw_status(&head), 413, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );

    // Chunked, so the size is only known while reading: the limit, then 10 bytes too many.
    // A PUT, whose body is buffered: it never reaches the backend.
    let chunk = "y".repeat(limit);
    let chunked = format!(
        "PUT /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\na\r\n0123456789\r\n",
        chunk.len()
    );
    let head = raw_head(lb.addr, chunked.as_bytes()).await;
    assert_eq!(raw_status(&head), 413, "{head}");

    let fits = client()
        .post(lb.url("/upload"))
        .body(vec![b'z'; limit / 2])
        .send()
        .await
        .expect("response");
    assert_eq!(fits.status(), 200);
    let seen: Value = fits.json().await.expect("echo");
    assert_eq!(
        seen["body_bytes"],
        limit / 2,
        "a body within the limit arrives whole"
    );
    assert_eq!(backend.requests(), 1);
}
