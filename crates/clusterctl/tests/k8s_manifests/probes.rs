//! Probe paths against the real routes: the node and the balancer started from the
//! workspace's binaries, each listener on a free 127.0.0.1 port set through the same variable
//! the manifests set, and every probe's path sent to the listener its port leads to. A path
//! that either program does not serve (404) is a probe that fails on every pod.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use cluster_kit::{free_port, wait_for, workspace_bin, ChildGuard, RedisServer};

use crate::checks::HttpProbe;

/// A valid SESSION_KEY (64 bytes, hex).
const SESSION_KEY: &str = "3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f\
                           3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f";

/// cluster-app on a real redis-server, and cluster-lb in front of it; stopped when dropped.
pub struct RunningPrograms {
    /// (program, listener variable) → the port it listens on here.
    ports: BTreeMap<(String, String), u16>,
    http: reqwest::blocking::Client,
    _node: ChildGuard,
    _balancer: ChildGuard,
    _redis: RedisServer,
}

impl RunningPrograms {
    /// Starts both and waits until the node is ready (Redis answers) and the balancer up.
    pub fn start() -> RunningPrograms {
        let redis = RedisServer::start();
        let node_port = free_port();
        let lb_port = free_port();
        let admin_port = free_port();
        let node = ChildGuard::spawn(
            "cluster-app",
            Command::new(workspace_bin("cluster-app"))
                .env("LISTEN_ADDR", format!("127.0.0.1:{node_port}"))
                .env("REDIS_URL", redis.url())
                .env("SESSION_KEY", SESSION_KEY)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null()),
        );
        let balancer = ChildGuard::spawn(
            "cluster-lb",
            Command::new(workspace_bin("cluster-lb"))
                .env("LB_LISTEN", format!("127.0.0.1:{lb_port}"))
                .env("LB_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
                .env("LB_BACKENDS", format!("127.0.0.1:{node_port}"))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null()),
        );
        let ports = BTreeMap::from([
            (("cluster-app".into(), "LISTEN_ADDR".into()), node_port),
            (("cluster-lb".into(), "LB_LISTEN".into()), lb_port),
            (("cluster-lb".into(), "LB_ADMIN_LISTEN".into()), admin_port),
        ]);
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client");
        let programs = RunningPrograms {
            ports,
            http,
            _node: node,
            _balancer: balancer,
            _redis: redis,
        };
        for (url, what) in [
            (format!("http://127.0.0.1:{node_port}/readyz"), "the node"),
            (
                format!("http://127.0.0.1:{admin_port}/healthz"),
                "the balancer",
            ),
        ] {
            let up = wait_for(Duration::from_secs(10), || {
                programs.status(&url).filter(|status| *status == 200)
            });
            assert!(
                up.is_some(),
                "{what} did not answer {url} with 200 within 10 s"
            );
        }
        programs
    }

    fn status(&self, url: &str) -> Option<u16> {
        self.http.get(url).send().ok().map(|r| r.status().as_u16())
    }

    /// Sends every probe to its listener; the kubelet counts 200-399 as success.
    pub fn probe_paths_are_served(&self, probes: &[HttpProbe]) -> Vec<String> {
        let mut problems = Vec::new();
        if probes.is_empty() {
            problems.push("no HTTP probe in any workload".to_string());
        }
        for probe in probes {
            let key = (probe.program.clone(), probe.listener.clone());
            let Some(port) = self.ports.get(&key) else {
                problems.push(format!(
                    "{}: this test does not run {} with {}",
                    probe.what, probe.program, probe.listener
                ));
                continue;
            };
            let url = format!("http://127.0.0.1:{port}{}", probe.path);
            match self.status(&url) {
                Some(status) if (200..400).contains(&status) => {}
                answer => problems.push(format!(
                    "{}: {} answers {} to GET {} (on its {})",
                    probe.what,
                    probe.program,
                    answer.map_or("nothing".to_string(), |s| s.to_string()),
                    probe.path,
                    probe.listener
                )),
            }
        }
        problems
    }
}
