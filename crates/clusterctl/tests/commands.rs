//! The commands as a user runs them, against the real binaries and a real redis-server:
//! `demo` tells its story to the end and exits 0, `verify` exits 1 when a scenario fails for
//! real (a node started with the wrong session key), and `--scale` measures every node count
//! asked for. None of them leaves a process behind.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cluster_kit::{wait_for, workspace_bin, ChildGuard};

/// What one clusterctl run printed and how it ended.
struct Run {
    status: ExitStatus,
    stdout: String,
    /// How many processes it started (all of them stopped by the time it exited).
    children: usize,
}

/// Runs clusterctl with `args` (plus `--bin-dir`), bounded by `limit`; checks that no process
/// it started outlives it.
fn clusterctl(args: &[&str], out: &Path, limit: Duration) -> Run {
    let node = workspace_bin("cluster-app");
    workspace_bin("cluster-lb");
    let bin_dir: PathBuf = node.parent().expect("binaries live in a directory").into();
    let stdout = out.join("stdout.txt");
    // Every child inherits the environment: this mark finds them after clusterctl is gone.
    let mark = format!("{}-{}", std::process::id(), out.display());
    let mut command = Command::new(env!("CARGO_BIN_EXE_clusterctl"));
    command
        .args(args)
        .arg("--bin-dir")
        .arg(&bin_dir)
        .env("CLUSTERCTL_TEST_RUN", &mark)
        .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()));
    let mut run = ChildGuard::spawn("clusterctl", &mut command);
    // Its children, seen while it runs: redis-server rewrites its environment (its process
    // title), so the mark alone would miss it.
    let mut children = BTreeSet::new();
    let started = Instant::now();
    let status = loop {
        children.extend(children_of(run.pid().expect("clusterctl is running")));
        if let Some(status) = run.wait_timeout(Duration::from_millis(50)) {
            break Some(status);
        }
        if started.elapsed() > limit {
            break None;
        }
    };
    let printed = std::fs::read_to_string(&stdout).unwrap_or_default();
    let status =
        status.unwrap_or_else(|| panic!("clusterctl {args:?} ran over {limit:?}:\n{printed}"));

    let survivors = || {
        let mut left = processes_marked(&mark);
        left.extend(children.iter().copied().filter(|pid| is_alive(*pid)));
        left
    };
    let all_gone = wait_for(Duration::from_secs(5), || {
        survivors().is_empty().then_some(())
    });
    let left = survivors();
    for pid in &left {
        // SAFETY: cleaning up processes this test made clusterctl start.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    assert!(
        all_gone.is_some(),
        "clusterctl {args:?} left processes behind: {left:?}"
    );
    Run {
        status,
        stdout: printed,
        children: children.len(),
    }
}

/// Live processes (not zombies) whose environment holds `CLUSTERCTL_TEST_RUN=<mark>`.
fn processes_marked(mark: &str) -> Vec<i32> {
    let wanted = format!("CLUSTERCTL_TEST_RUN={mark}");
    live_processes()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|byte| *byte == 0)
                    .any(|entry| entry == wanted.as_bytes())
            })
        })
        .collect()
}

/// Live processes whose parent is `parent`.
fn children_of(parent: i32) -> Vec<i32> {
    live_processes()
        .into_iter()
        .filter(|pid| stat_fields(*pid).and_then(|f| f.get(1)?.parse::<i32>().ok()) == Some(parent))
        .collect()
}

fn live_processes() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| is_alive(*pid))
        .collect()
}

fn is_alive(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|fields| fields.first().map(String::as_str) != Some("Z"))
}

/// The fields of /proc/<pid>/stat after the command name (which may hold spaces): state,
/// parent, ...
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

#[test]
fn demo_tells_every_step_and_exits_0() {
    let out = tempfile::tempdir().unwrap();
    let run = clusterctl(&["demo"], out.path(), Duration::from_secs(120));
    assert!(
        run.status.success(),
        "demo failed ({}):\n{}",
        run.status,
        run.stdout
    );
    // Each step says what and why, and shows evidence.
    let steps = run.stdout.matches("==> ").count();
    assert!(steps >= 8, "{steps} steps:\n{}", run.stdout);
    assert_eq!(
        run.stdout.matches("    why: ").count(),
        steps,
        "every step says why:\n{}",
        run.stdout
    );
    for beat in [
        "Log in as alice through the LB",
        "SIGKILL node2",
        "SIGKILL Redis",
        "Done.",
    ] {
        assert!(run.stdout.contains(beat), "no {beat:?} in:\n{}", run.stdout);
    }
    assert!(
        run.stdout.contains("user = alice"),
        "the evidence shows the session on the nodes:\n{}",
        run.stdout
    );
}

#[test]
fn demo_over_sentinel_kills_the_primary_and_keeps_the_session() {
    let out = tempfile::tempdir().unwrap();
    let run = clusterctl(
        &["demo", "--redis", "sentinel"],
        out.path(),
        Duration::from_secs(150),
    );
    assert!(
        run.status.success(),
        "demo --redis sentinel failed ({}):\n{}",
        run.status,
        run.stdout
    );
    assert!(
        run.children >= 10,
        "3 redis-server, 3 sentinels, 3 nodes, the LB"
    );
    let failover = run
        .stdout
        .split("==> SIGKILL the Redis primary")
        .nth(1)
        .unwrap_or_else(|| panic!("no Redis primary kill step in:\n{}", run.stdout));
    assert!(
        failover.contains("Sentinel announced redis"),
        "the new primary is shown:\n{failover}"
    );
    assert!(
        failover.contains("says user = alice"),
        "alice's session survives the primary:\n{failover}"
    );
    assert!(run.stdout.contains("Done."), "{}", run.stdout);
}

#[test]
fn contradictory_redis_options_are_one_line_and_exit_2() {
    for args in [
        &["up", "--redis", "single", "--min-replicas-ack", "1"][..],
        &[
            "up",
            "--redis",
            "sentinel",
            "--redis-url",
            "redis://127.0.0.1:1",
        ][..],
    ] {
        let out = tempfile::tempdir().unwrap();
        let stderr_path = out.path().join("stderr.txt");
        let mut command = Command::new(env!("CARGO_BIN_EXE_clusterctl"));
        command
            .args(args)
            .arg("--bin-dir")
            .arg(workspace_bin("cluster-app").parent().unwrap())
            .env_remove("CLUSTERCTL_REDIS")
            .env_remove("CLUSTERCTL_REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&stderr_path).unwrap()));
        // Bounded: a clusterctl that accepted the options would start a cluster and stay up.
        let mut run = ChildGuard::spawn("clusterctl up", &mut command);
        let status = run.wait_timeout(Duration::from_secs(10));
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let status = status.unwrap_or_else(|| panic!("{args:?} was accepted: {stderr}"));
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("--redis"), "{args:?}: {stderr}");
    }
}

#[test]
fn verify_exits_1_when_a_node_has_the_wrong_session_key() {
    let out = tempfile::tempdir().unwrap();
    let report = out.path().join("report.json");
    let report_arg = report.to_str().unwrap();
    let run = clusterctl(
        &[
            "verify",
            "--nodes",
            "2",
            "--quick",
            "--wrong-key-on",
            "node2",
            "--report",
            report_arg,
        ],
        out.path(),
        Duration::from_secs(200),
    );
    assert_eq!(run.status.code(), Some(1), "{}", run.stdout);
    assert!(run.children >= 4, "redis-server, 2 nodes, the LB");
    assert!(
        run.stdout.contains("FAIL continuity"),
        "the failure explains itself:\n{}",
        run.stdout
    );
    assert!(run.stdout.contains("logs of every process kept in"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["passed"], false);
    let continuity = &json["scenarios"][0];
    assert_eq!(continuity["name"], "continuity");
    assert_eq!(continuity["status"], "failed");
    // The logs are kept for the reader: remove them here.
    if let Some(dir) = run
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("logs of every process kept in "))
    {
        let _ = std::fs::remove_dir_all(dir.trim());
    }
}

#[test]
fn wrong_key_on_a_node_that_does_not_exist_is_a_setup_error() {
    let out = tempfile::tempdir().unwrap();
    let run = clusterctl(
        &[
            "verify",
            "--nodes",
            "2",
            "--quick",
            "--wrong-key-on",
            "node3",
        ],
        out.path(),
        Duration::from_secs(60),
    );
    assert_eq!(run.status.code(), Some(2));
    assert_eq!(run.children, 0, "refused before starting anything");
}

#[test]
fn scale_measures_each_node_count_asked_for() {
    let out = tempfile::tempdir().unwrap();
    let report = out.path().join("report.json");
    let run = clusterctl(
        &[
            "verify",
            "--nodes",
            "1",
            "--quick",
            "--scale",
            "1,2",
            "--report",
            report.to_str().unwrap(),
        ],
        out.path(),
        Duration::from_secs(200),
    );
    assert!(run.status.success(), "{}", run.stdout);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let points = json["scale"].as_array().expect("scale points");
    let nodes: Vec<u64> = points
        .iter()
        .map(|p| p["nodes"].as_u64().unwrap())
        .collect();
    assert_eq!(nodes, [1, 2], "one fresh cluster per count asked for");
    for point in points {
        assert!(point["startup_ms"].as_u64() > Some(0), "{point}");
        assert!(point["requests"].as_u64() > Some(0), "{point}");
        assert_eq!(point["failed"], 0, "{point}");
        assert!(point["throughput_per_sec"].as_f64() > Some(0.0), "{point}");
    }
    for count in [1, 2] {
        assert!(
            run.stdout.contains(&format!("scale: {count:>2} nodes")),
            "the table shows {count} nodes:\n{}",
            run.stdout
        );
    }
}
