//! The designs without Redis, as `clusterctl` shows and measures them against
//! real nodes, a real cluster-lb and a real redis-server: `demo --store memory`
//! loses the user on another node (and on the sticky node's death), `demo
//! --store cookie` keeps her on any node and cannot revoke a copied cookie, and
//! `compare --quick` measures what each of the three designs survives.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use cluster_kit::{workspace_bin, ChildGuard};
use serde_json::Value;

/// Runs clusterctl with `args` (plus `--bin-dir`) to its end, at most `limit`;
/// returns what it printed on stdout after checking it exited 0.
fn clusterctl(args: &[&str], limit: Duration) -> String {
    let node = workspace_bin("cluster-app");
    workspace_bin("cluster-lb");
    let bin_dir: PathBuf = node.parent().expect("binaries live in a directory").into();
    let out = tempfile::tempdir().expect("temporary directory");
    let stdout = out.path().join("stdout.txt");
    let mut command = Command::new(env!("CARGO_BIN_EXE_clusterctl"));
    command
        .args(args)
        .arg("--bin-dir")
        .arg(&bin_dir)
        .stdout(Stdio::from(
            std::fs::File::create(&stdout).expect("stdout file"),
        ));
    let mut run = ChildGuard::spawn("clusterctl", &mut command);
    let status = run.wait_timeout(limit);
    let printed = std::fs::read_to_string(&stdout).unwrap_or_default();
    let status =
        status.unwrap_or_else(|| panic!("clusterctl {args:?} ran over {limit:?}:\n{printed}"));
    assert!(
        status.success(),
        "clusterctl {args:?} exited {status}:\n{printed}"
    );
    printed
}

/// The evidence lines of the step whose heading starts with `heading`.
fn step<'a>(printed: &'a str, heading: &str) -> Vec<&'a str> {
    printed
        .split("\n==> ")
        .find(|section| section.starts_with(heading))
        .unwrap_or_else(|| panic!("no step {heading:?} in:\n{printed}"))
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- "))
        .collect()
}

fn users(lines: &[&str]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|line| {
            line.split_once("says user = ")
                .map(|(_, user)| user.to_string())
        })
        .collect()
}

#[test]
fn memory_store_demo_loses_the_user_when_her_node_dies_sticky_or_not() {
    let printed = clusterctl(
        &["demo", "--store", "memory", "--sticky"],
        Duration::from_secs(60),
    );
    let pinned = users(&step(&printed, "Ask /whoami six times"));
    assert_eq!(
        pinned,
        vec!["alice"; 6],
        "the sticky LB did not keep alice on her node:\n{printed}"
    );
    let after_kill = users(&step(&printed, "SIGKILL"));
    assert_eq!(
        after_kill,
        vec!["nobody"; 3],
        "alice outlived her node's memory:\n{printed}"
    );

    let printed = clusterctl(&["demo", "--store", "memory"], Duration::from_secs(60));
    let after_kill = users(&step(&printed, "SIGKILL"));
    assert_eq!(
        after_kill,
        vec!["nobody"; 3],
        "another node knew alice:\n{printed}"
    );
}

#[test]
fn cookie_store_demo_keeps_the_user_on_any_node_and_cannot_revoke_a_copy() {
    let printed = clusterctl(&["demo", "--store", "cookie"], Duration::from_secs(60));
    let spread = users(&step(&printed, "Ask /whoami six times"));
    assert_eq!(spread, vec!["alice"; 6], "{printed}");
    let after_kill = users(&step(&printed, "SIGKILL"));
    assert_eq!(
        after_kill,
        vec!["alice"; 3],
        "alice was lost with a node:\n{printed}"
    );
    let replay = step(&printed, "Copy alice's cookie, log out");
    assert!(
        replay
            .iter()
            .any(|line| line.contains("the browser's cookie is gone")),
        "{printed}"
    );
    assert!(
        replay.iter().any(|line| line.ends_with("user = alice")),
        "the replayed copy was refused:\n{printed}"
    );
}

#[test]
fn compare_measures_what_each_design_survives() {
    let report = tempfile::tempdir().expect("temporary directory");
    let dir = report.path().to_str().expect("UTF-8 path");
    let printed = clusterctl(
        &["compare", "--quick", "--report", dir],
        Duration::from_secs(120),
    );
    assert!(printed.contains("| in-memory + sticky LB"), "{printed}");
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(report.path().join("compare.json")).expect("compare.json"),
    )
    .expect("compare.json is JSON");
    let designs = json["designs"].as_array().expect("a list of designs");
    let row = |store: &str| {
        designs
            .iter()
            .find(|design| design["session_store"] == store)
            .unwrap_or_else(|| panic!("no {store} design in {json}"))
    };
    let (memory, cookie, redis) = (row("memory"), row("cookie"), row("redis"));

    assert_eq!(memory["sticky_lb"], true);
    assert_eq!(memory["survives_node_kill"], false, "{memory}");
    assert_eq!(memory["logout_revocable"], true, "{memory}");
    assert_eq!(memory["redis_keys_per_session"], Value::Null);

    assert_eq!(cookie["survives_node_kill"], true, "{cookie}");
    assert_eq!(cookie["logout_revocable"], false, "{cookie}");
    assert_eq!(cookie["redis_keys_per_session"], Value::Null);
    let (login, with_item) = (
        cookie["cookie_bytes_after_login"].as_u64().unwrap_or(0),
        cookie["cookie_bytes_with_1kib_item"].as_u64().unwrap_or(0),
    );
    assert!(
        with_item > login + 1024,
        "the cookie did not carry the item: {cookie}"
    );

    assert_eq!(redis["survives_node_kill"], true, "{redis}");
    assert_eq!(redis["logout_revocable"], true, "{redis}");
    assert_eq!(redis["redis_keys_per_session"], 1, "{redis}");
    let redis_cookie = redis["cookie_bytes_with_1kib_item"]
        .as_u64()
        .unwrap_or(u64::MAX);
    assert!(
        redis_cookie < 256,
        "the Redis design's cookie grew with the item: {redis}"
    );
    for design in designs {
        assert!(
            design["read_rps"].as_u64().unwrap_or(0) > 0,
            "no read answered: {design}"
        );
    }
}
