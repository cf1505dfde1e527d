//! The real `cluster-lb` binary: configuration errors, the admin token, `probe`, and SIGTERM.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cluster_kit::{free_port, wait_for};
use common::lb_process::{lb_command, LbBuilder};
use common::own_503::assert_own_503;
use common::{client, status_of, TestBackend};

/// Runs the binary with `args`, expecting it to refuse to start.
fn refusal(args: &[&str]) -> (i32, String) {
    let output = lb_command()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run cluster-lb");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_exits_2_with_one_line() {
    let dir = tempfile_dir();
    let unknown_key = dir.join("unknown.toml");
    std::fs::File::create(&unknown_key)
        .and_then(|mut f| f.write_all(b"listen = \"127.0.0.1:1\"\nbogus = 1\n"))
        .expect("write");
    let bad_syntax = dir.join("syntax.toml");
    std::fs::write(&bad_syntax, "backends = [\"a:1\"\n").expect("write");
    let blank_token = dir.join("blank-token");
    std::fs::write(&blank_token, "\n").expect("write");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--listen".into(), "not-an-address".into()], "--listen"),
        (vec!["--backend".into(), "node1".into()], "node1"),
        (vec!["--backend".into(), "a:1,a:1".into()], "twice"),
        (
            vec!["--backend-dns".into(), "tasks.node".into()],
            "tasks.node",
        ),
        (vec!["--dns-server".into(), "resolver".into()], "DNS server"),
        (vec!["--dns-interval-ms".into(), "0".into()], "DNS interval"),
        (vec!["--algorithm".into(), "random".into()], "random"),
        (vec!["--health-fall".into(), "0".into()], "health fall"),
        (vec!["--health-path".into(), "readyz".into()], "health path"),
        (
            vec!["--trusted-proxy".into(), "10.0.0.0/99".into()],
            "trusted proxy",
        ),
        (
            vec![
                "--config".into(),
                dir.join("missing.toml").display().to_string(),
            ],
            "cannot read",
        ),
        (
            vec!["--config".into(), unknown_key.display().to_string()],
            "bogus",
        ),
        (
            vec!["--config".into(), bad_syntax.display().to_string()],
            "syntax.toml",
        ),
        (
            vec!["--admin-listen".into(), "0.0.0.0:18081".into()],
            "token",
        ),
        (
            vec![
                "--admin-token-file".into(),
                dir.join("no-token").display().to_string(),
            ],
            "cannot read admin token file",
        ),
        (
            vec![
                "--admin-token-file".into(),
                blank_token.display().to_string(),
            ],
            "is empty",
        ),
        (
            vec![
                "--admin-token".into(),
                "direct".into(),
                "--admin-token-file".into(),
                ADMIN_TOKEN_FIXTURE.into(),
            ],
            "given twice",
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stderr) = refusal(&args);
        assert_eq!(code, 2, "{args:?} -> {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{args:?}: one line, got {stderr:?}"
        );
        assert!(
            stderr.contains(expected),
            "{args:?}: {stderr:?} should mention {expected:?}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cluster-lb-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_from_the_environment_guards_a_public_admin_listener() {
    let backend = TestBackend::start("a").await;
    let lb = LbBuilder::new()
        .admin_on_all_interfaces()
        .env("LB_ADMIN_TOKEN", "t0ken")
        .env("LB_BACKENDS", backend.address());
    let _running = lb.spawn();
    let http = client();
    let drain_url = lb.admin_url(&format!("/backends/{}/drain", backend.address()));
    assert_eq!(status_of(http.post(&drain_url)).await, 401);
    assert_eq!(
        status_of(http.post(&drain_url).bearer_auth("nope")).await,
        401
    );
    assert_eq!(
        status_of(http.post(&drain_url).bearer_auth("t0ken")).await,
        200
    );
    let proxied = http.get(lb.url("/")).send().await.expect("response");
    assert_own_503(proxied, "the only backend is draining").await;
}

/// The token as a Docker secret would hand it over: a file, with a trailing newline.
const ADMIN_TOKEN_FIXTURE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/admin-token");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_file_guards_a_public_admin_listener() {
    let backend = TestBackend::start("a").await;
    let token = std::fs::read_to_string(ADMIN_TOKEN_FIXTURE).expect("fixture");
    let lb = LbBuilder::new()
        .admin_on_all_interfaces()
        .env("LB_ADMIN_TOKEN_FILE", ADMIN_TOKEN_FIXTURE)
        .env("LB_BACKENDS", backend.address());
    let _running = lb.spawn();
    let http = client();
    let drain_url = lb.admin_url(&format!("/backends/{}/drain", backend.address()));
    assert_eq!(status_of(http.post(&drain_url)).await, 401);
    assert_eq!(
        status_of(http.post(&drain_url).bearer_auth("t0ken")).await,
        401
    );
    assert_eq!(
        status_of(http.post(&drain_url).bearer_auth(token.trim())).await,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_exits_0_on_200_and_1_otherwise() {
    let lb = LbBuilder::new();
    let admin_port = lb.admin_port;
    let _running = lb.spawn();
    let probe = |extra: &[String]| {
        lb_command()
            .arg("probe")
            .args(extra)
            .stderr(Stdio::piped())
            .output()
            .expect("run probe")
    };
    let ok = probe(&[
        "--url".to_string(),
        format!("http://127.0.0.1:{admin_port}/healthz"),
    ]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let via_env = lb_command()
        .env("LB_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
        .arg("probe")
        .output()
        .expect("run probe");
    assert_eq!(
        via_env.status.code(),
        Some(0),
        "default URL from LB_ADMIN_LISTEN"
    );
    let not_found = probe(&[
        "--url".to_string(),
        format!("http://127.0.0.1:{admin_port}/nothing"),
    ]);
    assert_eq!(not_found.status.code(), Some(1));
    let closed = probe(&[
        "--url".to_string(),
        format!("http://127.0.0.1:{}/healthz", free_port()),
    ]);
    assert_eq!(closed.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&closed.stderr)
            .trim_end()
            .lines()
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits_0() {
    let backend = TestBackend::start("slow").await;
    let builder = LbBuilder::new().backend(&backend);
    let port = builder.port;
    let mut lb = builder.spawn();
    let url = builder.url("/slow");
    // 5 s: room for a loaded machine to deliver SIGTERM and close the listener while the
    // request still runs, which the test needs to see.
    let in_flight =
        tokio::spawn(async move { client().get(url).header("x-delay-ms", "5000").send().await });
    let started = wait_for(Duration::from_secs(5), || {
        (backend.in_flight() == 1).then_some(())
    });
    assert!(started.is_some(), "the slow request reached the backend");

    lb.signal(libc::SIGTERM);
    let signalled_at = Instant::now();
    let refused = wait_for(Duration::from_secs(5), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    });
    assert!(
        refused.is_some(),
        "new connections were still accepted 5 s after SIGTERM"
    );
    assert!(
        !in_flight.is_finished(),
        "new connections are refused while the in-flight request still runs"
    );
    let response = in_flight
        .await
        .expect("task")
        .expect("the in-flight request completes");
    assert_eq!(response.status(), 200);
    let status = tokio::task::spawn_blocking(move || lb.wait_timeout(Duration::from_secs(5)))
        .await
        .expect("join")
        .expect("cluster-lb exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
    // The request needed 5 s; the shutdown timeout (30 s) would be a hang.
    assert!(
        signalled_at.elapsed() < Duration::from_secs(15),
        "exited promptly once idle: {:?}",
        signalled_at.elapsed()
    );
}
