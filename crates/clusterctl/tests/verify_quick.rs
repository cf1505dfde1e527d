//! CI runs the harness: `clusterctl verify --nodes 3 --quick` against the real
//! `cluster-app` and `cluster-lb` binaries and a real redis-server, and every
//! scenario must pass.

use std::process::{Command, Stdio};
use std::time::Duration;

use cluster_kit::{workspace_bin, ChildGuard};

#[test]
fn verify_quick_passes_on_three_nodes() {
    let node = workspace_bin("cluster-app");
    workspace_bin("cluster-lb");
    let bin_dir = node.parent().expect("binaries live in a directory");
    let out = tempfile::tempdir().unwrap();
    let report = out.path().join("report.json");
    let stdout = out.path().join("stdout.txt");

    let mut command = Command::new(env!("CARGO_BIN_EXE_clusterctl"));
    command
        .args(["verify", "--nodes", "3", "--quick", "--report"])
        .arg(&report)
        .arg("--bin-dir")
        .arg(bin_dir)
        .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()));
    let mut clusterctl = ChildGuard::spawn("clusterctl verify", &mut command);
    let status = clusterctl.wait_timeout(Duration::from_secs(150));
    let printed = std::fs::read_to_string(&stdout).unwrap_or_default();
    println!("{printed}");
    let status = status.expect("clusterctl verify --quick finished within 150 s");
    assert!(
        status.success(),
        "clusterctl verify failed ({status}):\n{printed}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
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
            "lost-updates"
        ]
    );
    assert!(
        scenarios.iter().all(|s| s["status"] == "passed"),
        "{printed}"
    );
    let lost_updates = &scenarios[8]["figures"];
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
