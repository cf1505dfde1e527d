//! `clusterctl up` owns its children: however clusterctl ends (SIGTERM, or a
//! SIGKILL that runs no code at all), no redis-server, node or LB survives it.
//! And a missing redis-server is one clear line, not a panic.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cluster_kit::{free_port, wait_for, wait_until, workspace_bin, ChildGuard};

/// Starts `clusterctl up --nodes 2` and waits until it printed the URLs.
///
/// The LB port comes from `free_port`, which another test may take before clusterctl binds
/// it; clusterctl then exits at once ("port ... is in use"), and this tries another port.
fn start_up(out: &Path) -> ChildGuard {
    let bin_dir = workspace_bin("cluster-app").parent().unwrap().to_path_buf();
    workspace_bin("cluster-lb");
    let stdout = out.join("stdout.txt");
    let stderr = out.join("stderr.txt");
    for _attempt in 0..5 {
        let mut command = Command::new(env!("CARGO_BIN_EXE_clusterctl"));
        command
            .args([
                "up",
                "--nodes",
                "2",
                "--lb-port",
                &free_port().to_string(),
                "--bin-dir",
            ])
            .arg(&bin_dir)
            .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()));
        let mut clusterctl = ChildGuard::spawn("clusterctl up", &mut command);
        let outcome = wait_for(Duration::from_secs(60), || {
            let text = std::fs::read_to_string(&stdout).ok()?;
            if text.contains("Ctrl-C stops everything") {
                return Some(Ok(()));
            }
            let status = clusterctl.wait_timeout(Duration::ZERO)?;
            Some(Err(format!(
                "clusterctl up exited ({status}): {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            )))
        });
        match outcome {
            Some(Ok(())) => return clusterctl,
            Some(Err(exited)) if exited.contains("is in use") => continue,
            Some(Err(exited)) => panic!("{exited}"),
            None => panic!("clusterctl up did not report the cluster up within 60 s"),
        }
    }
    panic!("clusterctl up found its LB port taken 5 times in a row");
}

/// Pids whose parent is `parent` (from /proc), that have not exited.
fn live_children(parent: i32) -> Vec<i32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name (which may hold spaces): state, ppid, ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(parent) && fields[0] != "Z" {
            children.push(pid);
        }
    }
    children
}

fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
                == Some(false)
        }
        Err(_) => false,
    }
}

#[test]
fn sigkill_of_clusterctl_leaves_no_child_behind() {
    let out = tempfile::tempdir().unwrap();
    let mut clusterctl = start_up(out.path());
    let children = live_children(clusterctl.pid().expect("clusterctl is running"));
    assert_eq!(
        children.len(),
        4,
        "redis-server, 2 nodes, 1 LB: {children:?}"
    );

    clusterctl.kill();
    let all_gone = wait_for(Duration::from_secs(5), || {
        children.iter().all(|pid| !is_alive(*pid)).then_some(())
    });
    let survivors: Vec<i32> = children
        .iter()
        .copied()
        .filter(|pid| is_alive(*pid))
        .collect();
    for pid in &survivors {
        // SAFETY: cleaning up the processes this test made clusterctl start.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    assert!(
        all_gone.is_some(),
        "children outlived a SIGKILLed clusterctl: {survivors:?}"
    );
}

#[test]
fn sigterm_stops_every_child_and_exits_130() {
    let out = tempfile::tempdir().unwrap();
    let mut clusterctl = start_up(out.path());
    let children = live_children(clusterctl.pid().expect("clusterctl is running"));
    assert_eq!(children.len(), 4, "{children:?}");

    clusterctl.signal(libc::SIGTERM);
    let status = clusterctl
        .wait_timeout(Duration::from_secs(10))
        .expect("clusterctl exits on SIGTERM");
    assert_eq!(status.code(), Some(130));
    assert!(
        children.iter().all(|pid| !is_alive(*pid)),
        "a child survived SIGTERM"
    );
}

#[test]
fn missing_redis_server_is_one_line_and_exit_2() {
    let bin_dir = workspace_bin("cluster-app").parent().unwrap().to_path_buf();
    workspace_bin("cluster-lb");
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_clusterctl"))
        .args(["up", "--nodes", "1", "--bin-dir"])
        .arg(bin_dir)
        .env("PATH", empty.path())
        .env_remove("REDIS_SERVER_BIN")
        .env_remove("CLUSTERCTL_REDIS_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("apt-get install redis-server"), "{stderr}");
    assert!(stderr.contains("--redis-url"), "{stderr}");
}

/// The docs send readers to the admin URL `up` prints; its token must open the mutating calls;
/// the dashboard URL it prints must open the page.
#[tokio::test]
async fn up_prints_the_admin_api_and_a_token_that_drains_a_node() {
    let out = tempfile::tempdir().unwrap();
    let _clusterctl = start_up(out.path());
    let printed = std::fs::read_to_string(out.path().join("stdout.txt")).unwrap();
    let value_of = |label: &str| printed_value(&printed, label);
    let backends_url = value_of("LB admin");
    let token = value_of("admin token");
    let dashboard = value_of("dashboard");

    let http = reqwest::Client::new();
    let page = http.get(&dashboard).send().await.unwrap();
    assert_eq!(page.status(), 200, "the printed dashboard URL: {dashboard}");
    assert!(page.text().await.unwrap().contains("EventSource"));
    let list: serde_json::Value = http
        .get(&backends_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = list["backends"][0]["id"].as_str().expect("a backend id");
    let drain = format!("{backends_url}/{id}/drain");
    let without = http.post(&drain).send().await.unwrap();
    assert_eq!(without.status(), 401, "a drain without the token");
    let with = http.post(&drain).bearer_auth(&token).send().await.unwrap();
    assert_eq!(with.status(), 200, "a drain with the printed token");
    let drained: serde_json::Value = with.json().await.unwrap();
    assert_eq!(drained["state"], "draining", "{drained}");
}

/// `up --redis sentinel` prints each of the six Redis processes with its port and pid, and
/// stops every one of them on SIGTERM.
#[test]
fn up_over_sentinel_prints_every_redis_process_and_stops_them_all() {
    let bin_dir = workspace_bin("cluster-app").parent().unwrap().to_path_buf();
    workspace_bin("cluster-lb");
    let out = tempfile::tempdir().unwrap();
    let stdout = out.path().join("stdout.txt");
    let mut command = Command::new(env!("CARGO_BIN_EXE_clusterctl"));
    command
        .args([
            "up",
            "--nodes",
            "1",
            "--redis",
            "sentinel",
            "--min-replicas-ack",
            "1",
        ])
        .args(["--lb-port", &free_port().to_string(), "--bin-dir"])
        .arg(&bin_dir)
        .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()));
    let mut clusterctl = ChildGuard::spawn("clusterctl up --redis sentinel", &mut command);
    let printed = wait_for(Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&stdout).ok()?;
        text.contains("Ctrl-C stops everything").then_some(text)
    })
    .expect("clusterctl up --redis sentinel reported the cluster up within 60 s");

    let redis_pids: Vec<i32> = printed
        .lines()
        .filter(|line| {
            let line = line.trim_start();
            line.starts_with("redis") || line.starts_with("sentinel")
        })
        .filter_map(|line| line.rsplit_once(" pid ")?.1.trim().parse().ok())
        .collect();
    assert_eq!(
        redis_pids.len(),
        6,
        "3 redis-server, 3 sentinels:\n{printed}"
    );
    assert!(printed.contains("primary"), "{printed}");
    assert!(printed.contains("REDIS_MIN_REPLICAS_ACK"), "{printed}");
    let children = live_children(clusterctl.pid().expect("clusterctl is running"));
    for pid in &redis_pids {
        assert!(
            children.contains(pid),
            "pid {pid} is clusterctl's child: {children:?}"
        );
    }

    clusterctl.signal(libc::SIGTERM);
    let status = clusterctl
        .wait_timeout(Duration::from_secs(10))
        .expect("clusterctl exits on SIGTERM");
    assert_eq!(status.code(), Some(130));
    let survivors: Vec<i32> = children
        .iter()
        .copied()
        .filter(|pid| is_alive(*pid))
        .collect();
    for pid in &survivors {
        // SAFETY: cleaning up the processes this test made clusterctl start.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    assert!(survivors.is_empty(), "survived SIGTERM: {survivors:?}");
}

/// The dashboard's controls, through the admin listener as the page calls them: a node killed
/// and restarted (the balancer sees it go down and come back), Redis killed and restarted, a
/// load started and stopped.
#[tokio::test]
async fn the_dashboard_controls_reach_the_cluster_up_runs() {
    let out = tempfile::tempdir().unwrap();
    let _clusterctl = start_up(out.path());
    let printed = std::fs::read_to_string(out.path().join("stdout.txt")).unwrap();
    let value_of = |label: &str| printed_value(&printed, label);
    let backends_url = value_of("LB admin");
    let admin = backends_url.trim_end_matches("/backends").to_string();
    let token = value_of("admin token");
    let http = reqwest::Client::new();
    let control = |action: &str| {
        http.post(format!("{admin}/dashboard/controls/{action}"))
            .bearer_auth(&token)
            .send()
    };
    let state_of = |id: String| {
        let http = http.clone();
        let backends_url = backends_url.clone();
        async move {
            let list: serde_json::Value = http
                .get(&backends_url)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            list["backends"]
                .as_array()?
                .iter()
                .find(|b| b["id"] == id.as_str())
                .map(|b| b["state"].as_str().unwrap_or("").to_string())
        }
    };

    let listed: serde_json::Value = http
        .get(format!("{admin}/dashboard/controls"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["nodes"][0]["id"], "node1", "{listed}");
    assert_eq!(listed["redis"], true, "{listed}");
    let node1 = listed["nodes"][0]["address"].as_str().unwrap().to_string();
    assert_eq!(state_of(node1.clone()).await.as_deref(), Some("up"));

    let without_token = http
        .post(format!("{admin}/dashboard/controls/nodes/node1/kill"))
        .send()
        .await
        .unwrap();
    assert_eq!(without_token.status(), 401);
    assert_eq!(state_of(node1.clone()).await.as_deref(), Some("up"));

    assert_eq!(control("nodes/node1/kill").await.unwrap().status(), 200);
    let down = wait_until(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async { (state_of(node1.clone()).await.as_deref() == Some("down")).then_some(()) },
    )
    .await;
    assert!(down.is_some(), "node1 is not down after its kill");
    assert_eq!(control("nodes/node1/restart").await.unwrap().status(), 200);
    let up = wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async { (state_of(node1.clone()).await.as_deref() == Some("up")).then_some(()) },
    )
    .await;
    assert!(up.is_some(), "node1 is not up after its restart");

    assert_eq!(control("redis/kill").await.unwrap().status(), 200);
    assert_eq!(control("redis/restart").await.unwrap().status(), 200);
    assert_eq!(control("load/start").await.unwrap().status(), 200);
    let running: serde_json::Value = http
        .get(format!("{admin}/dashboard/controls"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(running["load"], true, "{running}");
    assert_eq!(control("load/stop").await.unwrap().status(), 200);
    assert_eq!(control("nodes/node9/kill").await.unwrap().status(), 404);
}

/// The value `up` printed after `label` (e.g. "admin token"), trimmed.
fn printed_value(printed: &str, label: &str) -> String {
    printed
        .lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .map(|value| value.trim().to_string())
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{printed}"))
}
