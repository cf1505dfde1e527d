//! The facts the documents are checked against, taken from the real things: the built
//! binaries' `--help`, the files of the repository, and a node and a load balancer started on
//! free ports in front of a private redis-server, asked for each endpoint.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use cluster_kit::{free_port, wait_until, workspace_bin, ChildGuard, RedisServer};

use crate::checks::{Programs, Repository};
use crate::claims::{anchors, Endpoint, PROGRAMS};

/// The documents checked: the four at the top and every Markdown file under `docs/`.
pub fn documents(root: &Path) -> Vec<String> {
    let mut documents: Vec<String> = [
        "README.md",
        "ARCHITECTURE.md",
        "BENCHMARKS.md",
        "TESTING.md",
    ]
    .map(String::from)
    .to_vec();
    documents.extend(
        files(root)
            .into_iter()
            .filter(|file| file.starts_with("docs/") && file.ends_with(".md")),
    );
    documents
}

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn read(root: &Path, file: &str) -> String {
    std::fs::read_to_string(root.join(file)).unwrap_or_else(|e| panic!("cannot read {file}: {e}"))
}

/// Every program's `--help`, and each listed subcommand's.
pub fn programs() -> Programs {
    let mut programs = Programs::default();
    for program in PROGRAMS {
        let help = help(program, &[]);
        let subcommands = listed_subcommands(&help);
        for subcommand in &subcommands {
            programs.help.insert(
                format!("{program} {subcommand}"),
                self::help(program, &[subcommand]),
            );
        }
        programs.help.insert(program.to_string(), help);
        programs
            .subcommands
            .insert(program.to_string(), subcommands);
    }
    programs
}

fn help(program: &str, subcommand: &[&str]) -> String {
    let output = Command::new(workspace_bin(program))
        .args(subcommand)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} --help: {e}"));
    assert!(
        output.status.success(),
        "{program} {subcommand:?} --help failed"
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The names under clap's `Commands:` heading, `help` aside.
fn listed_subcommands(help: &str) -> BTreeSet<String> {
    help.lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(String::from)
        .collect()
}

/// The repository's files and directories, the texts of its scripts, compose files and
/// cluster-kit (whose variables the tests and clusterctl read), the anchors of its Markdown.
pub fn repository(root: &Path) -> Repository {
    let files = files(root);
    let is_reader = |file: &str| {
        ["scripts/", "deploy/", ".ci/", "crates/cluster-kit/src/"]
            .iter()
            .any(|dir| file.starts_with(dir))
            || (file.starts_with("docker-compose") && file.ends_with(".yml"))
            || file == ".env.example"
    };
    let readers = files
        .iter()
        .filter(|file| is_reader(file) && root.join(file).is_file())
        .filter_map(|file| Some((file.clone(), std::fs::read_to_string(root.join(file)).ok()?)))
        .collect();
    let anchors = files
        .iter()
        .filter(|file| file.ends_with(".md"))
        .map(|file| {
            (
                file.clone(),
                anchors(&read(root, file)).into_iter().collect(),
            )
        })
        .collect();
    Repository {
        files,
        readers,
        anchors,
    }
}

/// Every file and directory under `root`, relative and `/`-separated, without `.git` and
/// `target` (build output).
fn files(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(root.join(&dir))
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if dir.as_os_str().is_empty() && (name == ".git" || name == "target") {
                continue;
            }
            let relative = dir.join(&name);
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                pending.push(relative.clone());
            }
            found.insert(relative.to_string_lossy().replace('\\', "/"));
        }
    }
    found
}

const ADMIN_TOKEN: &str = "docs-check";

/// The load balancer's answer to a path it does not route (a known backend it does not
/// have is a 404 too, with another message).
const ADMIN_UNROUTED: &str = "no such admin endpoint";

/// A private redis-server, a node and a load balancer in front of it, to ask for endpoints.
pub struct Servers {
    node: String,
    admin: String,
    http: reqwest::Client,
    _lb: ChildGuard,
    _node: ChildGuard,
    _redis: RedisServer,
}

impl Servers {
    pub async fn start() -> Servers {
        let redis = RedisServer::start();
        let (node_port, lb_port, admin_port) = (free_port(), free_port(), free_port());
        let node_addr = format!("127.0.0.1:{node_port}");
        let node = ChildGuard::spawn(
            "cluster-app",
            Command::new(workspace_bin("cluster-app"))
                .args(["--dev", "--node-id", "docs", "--workers", "1"])
                .args(["--cookie-secure", "false", "--listen-addr", &node_addr])
                .args(["--redis-url", &redis.url()])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let admin_addr = format!("127.0.0.1:{admin_port}");
        let lb = ChildGuard::spawn(
            "cluster-lb",
            Command::new(workspace_bin("cluster-lb"))
                .args(["--listen", &format!("127.0.0.1:{lb_port}")])
                .args(["--backend", &node_addr, "--admin-listen", &admin_addr])
                .args(["--admin-token", ADMIN_TOKEN, "--workers", "1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let servers = Servers {
            node: format!("http://{node_addr}"),
            admin: format!("http://{admin_addr}"),
            http: reqwest::Client::new(),
            _lb: lb,
            _node: node,
            _redis: redis,
        };
        for ready in [
            format!("{}/readyz", servers.node),
            format!("{}/healthz", servers.admin),
        ] {
            let up = wait_until(
                Duration::from_secs(20),
                Duration::from_millis(50),
                || async {
                    let response = servers.http.get(&ready).send().await.ok()?;
                    response.status().is_success().then_some(())
                },
            )
            .await;
            assert!(up.is_some(), "{ready} did not answer 200 within 20 s");
        }
        servers
    }

    /// Whether the node or the load balancer's admin API routes `endpoint`: the node answers
    /// anything but 404, or the admin API anything but its "no such admin endpoint".
    pub async fn routes(&self, endpoint: &Endpoint) -> bool {
        let method = reqwest::Method::from_bytes(endpoint.method.as_bytes())
            .unwrap_or_else(|_| panic!("{} is no HTTP method", endpoint.method));
        let ask = |base: &str| {
            self.http
                .request(method.clone(), format!("{base}{}", endpoint.path))
                .bearer_auth(ADMIN_TOKEN)
                .timeout(Duration::from_secs(5))
                .send()
        };
        let node = ask(&self.node).await.expect("the node answers");
        if node.status() != reqwest::StatusCode::NOT_FOUND {
            return true;
        }
        let admin = ask(&self.admin).await.expect("the admin API answers");
        let status = admin.status();
        let body = admin.text().await.unwrap_or_default();
        status != reqwest::StatusCode::NOT_FOUND || !body.contains(ADMIN_UNROUTED)
    }
}
