//! The real binary under a low file-descriptor limit: a flood of silent connections must not
//! take the descriptors the balancer needs to serve and to run its health checks. The
//! connection cap keeps the flood below the limit; without it the accept loop ran out of
//! descriptors, every normal request hung and the backends were marked down.

mod common;

use std::os::unix::process::CommandExt;
use std::time::Duration;

use cluster_kit::ChildGuard;
use common::lb_process::LbBuilder;
use common::{client, connect_and_send, TestBackend};

/// The balancer's descriptor limit: room for the cap below and its own few dozen.
const FD_LIMIT: libc::rlim_t = 96;
const CAP: usize = 40;
const FLOOD: usize = 150;

fn lb_with_fd_limit(backends: &[&TestBackend]) -> (LbBuilder, ChildGuard) {
    let mut builder = LbBuilder::new()
        .env("RUST_LOG", "error")
        .setting("--workers", 1)
        .setting("--health-interval-ms", 100)
        .setting("--max-connections", CAP)
        // Long enough that the flood is still open while the checks below run.
        .setting("--client-timeout-ms", 60000);
    for backend in backends {
        builder = builder.backend(backend);
    }
    let mut command = builder.command();
    let limit = libc::rlimit {
        rlim_cur: FD_LIMIT,
        rlim_max: FD_LIMIT,
    };
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else of the parent.
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let running = ChildGuard::spawn("cluster-lb", &mut command);
    (builder, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_silent_connections_cannot_starve_requests_or_health_checks() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let (lb, _running) = lb_with_fd_limit(&[&a, &b]);
    let (proxy, admin) = (lb.port, lb.admin_port);
    let proxy_url = format!("http://127.0.0.1:{proxy}");
    let http = client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while http.get(format!("{proxy_url}/ready")).send().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cluster-lb did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let proxy_addr = format!("127.0.0.1:{proxy}").parse().expect("address");
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        flood.push(connect_and_send(proxy_addr, b"").await);
    }
    // For a while (ten health-check intervals) under the flood, every normal request is
    // served and both backends stay up.
    let window = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < window {
        let served = tokio::time::timeout(
            Duration::from_secs(5),
            http.get(format!("{proxy_url}/normal")).send(),
        )
        .await;
        assert!(
            matches!(&served, Ok(Ok(response)) if response.status() == 200),
            "a normal request under the flood: {served:?}"
        );
        let backends: serde_json::Value = http
            .get(format!("http://127.0.0.1:{admin}/backends"))
            .send()
            .await
            .expect("admin API")
            .json()
            .await
            .expect("JSON");
        for backend in backends["backends"].as_array().expect("a list") {
            assert_eq!(
                backend["state"], "up",
                "health checks kept working: {backends}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(flood);
}
