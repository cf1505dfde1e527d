//! CI runs the harness: `clusterctl verify --nodes 3 --quick` against the real
//! `cluster-app` and `cluster-lb` binaries and a real redis-server, and every
//! scenario must pass.

use std::process::{Command, Stdio};
use std::time::Duration;

use cluster_kit::{workspace_bin, ChildGuard};

#[test]
fn verify_quick_passes_on_three_nodes() {
    let (out, printed, json) = run_verify(&[], Duration::from_secs(150));
    assert_eq!(json["passed"], true);
    let scenarios = json["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "continuity",
            "shared-key",
            "node-sigkill",
            "restart",
            "rolling-restart",
            "redis-unreachable",
            "redis-restart-aof",
            "redis-restart-no-persistence",
            "redis-primary-kill",
            "redis-primary-pause",
            "lost-updates"
        ]
    );
    let statuses: Vec<&str> = scenarios
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "passed", "passed", "passed", "passed", "passed", "passed", "passed", "passed",
            "skipped", "skipped", "passed"
        ],
        "the Sentinel rows skip with one redis-server:\n{printed}"
    );
    let lost_updates = &scenarios[10]["figures"];
    let modes: Vec<&str> = lost_updates["modes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["redis", "redis-versioned", "atomic"]);
    assert!(
        printed.contains("conflicts (409)"),
        "the per-mode table is printed"
    );
    assert!(
        out.path().join("report-sigkill.svg").exists(),
        "the SIGKILL timeline is written next to the report"
    );
}

/// The same over Sentinel: the one-redis-server rows skip, the primary is SIGKILLed and
/// SIGSTOPped under load, each without and with REDIS_MIN_REPLICAS_ACK=1, and both pass.
#[test]
fn verify_quick_passes_over_sentinel() {
    let (out, printed, json) = run_verify(&["--redis", "sentinel"], Duration::from_secs(240));
    let scenarios = json["scenarios"].as_array().unwrap();
    let status_of = |name: &str| {
        scenarios
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["status"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no {name} row"))
    };
    for name in [
        "redis-unreachable",
        "redis-restart-aof",
        "redis-restart-no-persistence",
    ] {
        assert_eq!(status_of(name), "skipped", "{name}");
    }
    for name in ["redis-primary-kill", "redis-primary-pause"] {
        assert_eq!(status_of(name), "passed", "{name}:\n{printed}");
        let row = scenarios.iter().find(|s| s["name"] == name).unwrap();
        let runs = row["figures"]["runs"].as_array().unwrap();
        let acks: Vec<u64> = runs
            .iter()
            .map(|r| r["min_replicas_ack"].as_u64().unwrap())
            .collect();
        assert_eq!(acks, [0, 1], "{name}: a run without and one with acks");
        for run in runs {
            assert!(run["announced_ms"].as_u64().is_some(), "{run}");
            assert!(run["acked_increments"].as_u64() > Some(0), "{run}");
            assert_eq!(run["sessions_kept"], run["sessions"], "{run}");
        }
        assert!(
            out.path().join(format!("report-{name}.svg")).exists(),
            "the {name} timeline is written next to the report"
        );
    }
    assert!(
        printed.contains("Redis primary failures"),
        "the failover table is printed:\n{printed}"
    );
}

/// Runs `clusterctl verify --nodes 3 --quick` with `extra` arguments, waits at most `limit`,
/// asserts it passed, and returns the folder of its report (with the SVG timelines beside it),
/// what it printed, and the JSON report.
fn run_verify(extra: &[&str], limit: Duration) -> (tempfile::TempDir, String, serde_json::Value) {
    let node = workspace_bin("cluster-app");
    workspace_bin("cluster-lb");
    let bin_dir = node.parent().expect("binaries live in a directory");
    let out = tempfile::tempdir().unwrap();
    let report = out.path().join("report.json");
    let stdout = out.path().join("stdout.txt");

    let mut command = Command::new(env!("CARGO_BIN_EXE_clusterctl"));
    command
        .args(["verify", "--nodes", "3", "--quick"])
        .args(extra)
        .arg("--report")
        .arg(&report)
        .arg("--bin-dir")
        .arg(bin_dir)
        .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()));
    let what = format!("clusterctl verify --quick {}", extra.join(" "));
    let mut clusterctl = ChildGuard::spawn(&what, &mut command);
    let status = clusterctl.wait_timeout(limit);
    let printed = std::fs::read_to_string(&stdout).unwrap_or_default();
    println!("{printed}");
    let status = status.unwrap_or_else(|| panic!("{what} did not finish within {limit:?}"));
    assert!(
        status.success(),
        "clusterctl verify failed ({status}):\n{printed}"
    );
    let json = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    (out, printed, json)
}
