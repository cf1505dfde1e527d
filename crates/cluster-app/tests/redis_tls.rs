//! `rediss://`: the node talks TLS to Redis, password in the URL.
//!
//! The test makes its own CA and server certificate (rcgen), starts a real
//! redis-server on a TLS-only port, and tells the node to trust the CA the
//! usual way, with `SSL_CERT_FILE`.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use cluster_kit::{free_port, wait_for, ChildGuard};
use common::{Browser, NodeOptions};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

/// The redis-server to run: `REDIS_SERVER_BIN` when set (a build with TLS,
/// say), as cluster-kit's `RedisServer` does, else the one on `PATH`.
fn redis_server_bin() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_string())
}

#[test]
fn sessions_work_over_rediss_with_a_password() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let server_key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("server params")
        .signed_by(&server_key, &ca, &ca_key)
        .expect("server certificate");
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    std::fs::write(path("ca.crt"), ca.pem()).expect("write CA");
    std::fs::write(path("redis.crt"), server.pem()).expect("write certificate");
    std::fs::write(path("redis.key"), server_key.serialize_pem()).expect("write key");

    let port = free_port();
    let _redis = ChildGuard::spawn(
        "redis-server (TLS)",
        Command::new(redis_server_bin())
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--tls-cert-file",
                &path("redis.crt"),
                "--tls-key-file",
                &path("redis.key"),
            ])
            .args([
                "--tls-ca-cert-file",
                &path("ca.crt"),
                "--tls-auth-clients",
                "no",
            ])
            .args(["--requirepass", "s3cret", "--save", "", "--dir", &path("")])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let listening = wait_for(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    assert!(listening.is_some(), "TLS redis-server did not listen");

    let node = NodeOptions::new("tls", &format!("rediss://:s3cret@127.0.0.1:{port}"))
        .env("SSL_CERT_FILE", &path("ca.crt"))
        .start();
    let mut browser = Browser::new();
    assert_eq!(browser.get(&node, "/readyz").status, 200);
    browser.login(&node, "alice");
    assert_eq!(browser.post(&node, "/counter/incr").body["counter"], 1);
    assert_eq!(browser.get(&node, "/whoami").body["user"], "alice");

    let untrusted =
        NodeOptions::new("untrusting", &format!("rediss://:s3cret@127.0.0.1:{port}")).start();
    let reply = Browser::with_cookie(browser.cookie.clone()).get(&untrusted, "/whoami");
    assert_eq!(
        reply.status, 503,
        "a server certificate nobody vouches for is refused"
    );
}
