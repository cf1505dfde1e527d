//! `clusterctl compare`: three ways to keep sessions behind a load balancer,
//! measured side by side (docs/three-designs.md).
//!
//! - in-memory + sticky LB: `SESSION_STORE=memory`, cluster-lb `--sticky`;
//! - stateless cookie: `SESSION_STORE=cookie`, any node;
//! - shared Redis: `SESSION_STORE=redis`, any node (the project's design).
//!
//! Each design gets a cluster of its own, and the same questions, answered by
//! running them rather than by a hand-written table: does a logout stick when
//! the old cookie is replayed; how large is the cookie; how many session reads
//! per second go through the LB; does the session survive a SIGKILL of the
//! node that served it; what is kept in Redis.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use comfy_table::Table;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cluster::{wait_until, Cluster, ClusterOptions, RedisAddress, SessionDesign};
use crate::session::Session;

/// The node's session cookie (`COOKIE_NAME`'s default).
const SESSION_COOKIE: &str = "cluster_session";

/// Concurrent clients of the read-throughput phase.
const READ_CLIENTS: usize = 8;

pub struct CompareOptions {
    pub cluster: ClusterOptions,
    pub quick: bool,
    /// Directory for compare.json and compare.md.
    pub report: Option<PathBuf>,
}

/// What one design did, as measured.
#[derive(Debug, Clone, Serialize)]
pub struct DesignResult {
    pub design: String,
    pub session_store: String,
    pub sticky_lb: bool,
    /// After SIGKILL of the node that served the session, the next read through the LB
    /// still knows the user.
    pub survives_node_kill: bool,
    /// After logout, a copy of the old cookie no longer logs anyone in.
    pub logout_revocable: bool,
    /// Bytes of the session cookie's value after login.
    pub cookie_bytes_after_login: usize,
    /// The same after storing a 1 KiB item in the session.
    pub cookie_bytes_with_1kib_item: usize,
    /// GET /whoami answered 200 for the logged-in user, per second, through the LB.
    pub read_rps: u64,
    /// Keys in Redis after one login: `None` when the nodes are not given Redis.
    pub redis_keys_per_session: Option<u64>,
}

pub async fn compare(options: CompareOptions) -> anyhow::Result<bool> {
    let started = Instant::now();
    let read_time = if options.quick {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(3)
    };
    let designs = [
        (
            "in-memory + sticky LB",
            SessionDesign {
                store: "memory",
                sticky: true,
            },
        ),
        (
            "stateless cookie",
            SessionDesign {
                store: "cookie",
                sticky: false,
            },
        ),
        ("shared Redis", SessionDesign::SHARED_REDIS),
    ];
    let mut results = Vec::with_capacity(designs.len());
    for (name, design) in designs {
        eprintln!(
            "[compare] {name}: SESSION_STORE={}, sticky LB: {}",
            design.store, design.sticky
        );
        let mut cluster = Cluster::start_with(&options.cluster, design)
            .await
            .with_context(|| format!("starting the cluster for {name}"))?;
        let result = measure(&mut cluster, name, design, read_time).await;
        if result.is_err() {
            cluster.keep_logs();
            eprintln!("[compare] logs kept in {}", cluster.log_dir().display());
        }
        results.push(result?);
    }

    let table = table(&results);
    println!("{table}");
    println!(
        "Measured in {:.1} s; read rps: {READ_CLIENTS} clients for {} ms per design.",
        started.elapsed().as_secs_f64(),
        read_time.as_millis()
    );
    if let Some(dir) = &options.report {
        write_report(dir, &results, &table.to_string())?;
        println!("Report: {}", dir.join("compare.json").display());
    }
    Ok(true)
}

async fn measure(
    cluster: &mut Cluster,
    name: &str,
    design: SessionDesign,
    read_time: Duration,
) -> anyhow::Result<DesignResult> {
    let http = cluster.http.clone();
    let lb = cluster.lb.url();
    // compare starts its own single redis-server (never Sentinel), so there is one URL to count keys at.
    let RedisAddress::Url(redis_url) = cluster.redis.address() else {
        anyhow::bail!("compare counts keys in a single Redis, not behind Sentinel");
    };
    let keys_before = redis_key_count(&redis_url).await?;

    let (mut alice, _) = Session::login(&http, &lb, "alice").await?;
    let cookie_bytes_after_login = session_cookie_bytes(&alice)?;
    let keys_after_login = redis_key_count(&redis_url).await?;
    let redis_keys_per_session = cluster
        .settings
        .uses_redis()
        .then(|| keys_after_login.saturating_sub(keys_before));

    let item = alice
        .put_item(&http, &lb, "note", serde_json::json!("x".repeat(1024)))
        .await?;
    anyhow::ensure!(
        item.is_ok(),
        "{name}: storing a 1 KiB item answered {}",
        item.status
    );
    let cookie_bytes_with_1kib_item = session_cookie_bytes(&alice)?;

    let read_rps = read_throughput(&http, &lb, &alice, read_time).await;

    // Revocation: bob logs out; a copy of his cookie taken before is replayed.
    let (mut bob, _) = Session::login(&http, &lb, "bob").await?;
    let copy = bob.cookie().unwrap_or_default().to_string();
    let logout = bob.logout(&http, &lb).await?;
    anyhow::ensure!(logout.is_ok(), "{name}: logout answered {}", logout.status);
    let replayed = Session::with_cookie_header(&copy)
        .whoami(&http, &lb)
        .await?;
    let logout_revocable = replayed.user() != Some("bob");

    // Node kill: the node that serves alice now (her sticky node, if any) dies.
    let before = alice.whoami(&http, &lb).await?;
    let victim_id = before
        .served_by
        .clone()
        .context("no X-Served-By on /whoami")?;
    let victim = cluster
        .nodes
        .iter_mut()
        .find(|node| node.id == victim_id)
        .with_context(|| format!("{victim_id} is not a node of this cluster"))?;
    let victim_addr = victim.addr.clone();
    victim.kill();
    let admin = cluster.lb.admin.clone();
    let ejected = wait_until(
        Duration::from_secs(5),
        Duration::from_millis(10),
        || async {
            let backend = admin.backend(&victim_addr).await.ok()?;
            (backend.state != "up").then_some(())
        },
    )
    .await;
    anyhow::ensure!(
        ejected.is_some(),
        "{name}: the LB never took {victim_id} out"
    );
    let after = alice.whoami(&http, &lb).await?;
    let survives_node_kill = after.is_ok() && after.user() == Some("alice");

    Ok(DesignResult {
        design: name.to_string(),
        session_store: design.store.to_string(),
        sticky_lb: design.sticky,
        survives_node_kill,
        logout_revocable,
        cookie_bytes_after_login,
        cookie_bytes_with_1kib_item,
        read_rps,
        redis_keys_per_session,
    })
}

fn session_cookie_bytes(session: &Session) -> anyhow::Result<usize> {
    session
        .cookie_value(SESSION_COOKIE)
        .map(str::len)
        .with_context(|| format!("no {SESSION_COOKIE} cookie"))
}

/// [`READ_CLIENTS`] clients, each sending GET /whoami with `session`'s cookies
/// back to back for `duration`; counts the answers that name the user.
async fn read_throughput(
    http: &reqwest::Client,
    lb: &str,
    session: &Session,
    duration: Duration,
) -> u64 {
    let answered = Arc::new(AtomicU64::new(0));
    let user = session_user(http, lb, session).await;
    let deadline = Instant::now() + duration;
    let clients: Vec<_> = (0..READ_CLIENTS)
        .map(|_| {
            let (http, lb, mut session) = (http.clone(), lb.to_string(), session.clone());
            let (answered, user) = (answered.clone(), user.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    if let Ok(reply) = session.whoami(&http, &lb).await {
                        if reply.is_ok() && reply.user() == user.as_deref() {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for client in clients {
        let _ = client.await;
    }
    let seconds = duration.as_secs_f64();
    (answered.load(Ordering::Relaxed) as f64 / seconds).round() as u64
}

async fn session_user(http: &reqwest::Client, lb: &str, session: &Session) -> Option<String> {
    let reply = session.clone().whoami(http, lb).await.ok()?;
    reply.user().map(str::to_string)
}

/// `DBSIZE` of the Redis at `url` (`redis://host:port`), over a plain socket:
/// one command does not need a client library.
async fn redis_key_count(url: &str) -> anyhow::Result<u64> {
    let address = url
        .strip_prefix("redis://")
        .map(|rest| rest.trim_end_matches('/'))
        .with_context(|| format!("not a plain redis:// URL: {url}"))?;
    let mut stream = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(address),
    )
    .await
    .context("Redis did not accept a connection within 2 s")??;
    stream.write_all(b"*1\r\n$6\r\nDBSIZE\r\n").await?;
    let mut reply = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut reply))
        .await
        .context("Redis did not answer DBSIZE within 2 s")??;
    let text = std::str::from_utf8(&reply[..read]).unwrap_or_default();
    text.trim()
        .strip_prefix(':')
        .and_then(|count| count.parse().ok())
        .with_context(|| format!("unexpected DBSIZE reply {text:?}"))
}

fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}

fn table(results: &[DesignResult]) -> Table {
    let mut table = Table::new();
    table.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    table.set_header([
        "design",
        "survives a node kill",
        "logout revocable",
        "cookie bytes after login",
        "with a 1 KiB item",
        "read rps (GET /whoami)",
        "kept in Redis per session",
    ]);
    for result in results {
        table.add_row([
            result.design.clone(),
            yes_no(result.survives_node_kill).to_string(),
            yes_no(result.logout_revocable).to_string(),
            result.cookie_bytes_after_login.to_string(),
            result.cookie_bytes_with_1kib_item.to_string(),
            result.read_rps.to_string(),
            match result.redis_keys_per_session {
                Some(keys) => format!("{keys} key(s)"),
                None => "nothing (no Redis)".to_string(),
            },
        ]);
    }
    table
}

fn write_report(dir: &Path, results: &[DesignResult], table: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let json = serde_json::to_string_pretty(&serde_json::json!({ "designs": results }))?;
    std::fs::write(dir.join("compare.json"), json)?;
    std::fs::write(dir.join("compare.md"), format!("{table}\n"))?;
    Ok(())
}
