//! `Upgrade` requests (WebSocket's handshake) are passed through and the connection becomes a
//! byte tunnel between client and backend. (The test backend switches to an echo whatever it
//! is offered; the balancer passes on only a `GET` offering `websocket`.)

mod common;

use std::time::Duration;

use common::{settings_for, Lb, TestBackend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_connections_are_tunnelled_both_ways() {
    let backend = TestBackend::start("ws").await;
    let lb = Lb::start(settings_for(&[&backend])).await;

    let mut stream = TcpStream::connect(lb.addr).await.expect("connect");
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await
        .expect("handshake");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("101 in time")
            .expect("read");
        assert!(
            n > 0,
            "connection closed during handshake: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    assert!(head.contains("x-served-by: ws"), "{head}");

    for message in ["hello", "over the tunnel"] {
        stream.write_all(message.as_bytes()).await.expect("write");
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
            .await
            .expect("echo in time")
            .expect("read");
        assert_eq!(echoed, message.as_bytes());
    }
}
