//! A Redis primary, two replicas and three Sentinels: the smallest Redis that survives its
//! primary.
//!
//! One `redis-server` is a single point of failure. Sentinel removes it: three `redis-sentinel`
//! processes watch the primary, and when two of them (the quorum) agree it is down, they promote
//! a replica and announce the new primary's address to whoever asks (`SENTINEL
//! get-master-addr-by-name`). clusterctl's Redis scenarios and the nodes' failover tests need
//! that topology as real processes they can kill, pause and restart one by one, and a way to
//! wait for what Sentinel does about it: a failover finished, an old primary back as a replica.
//!
//! The settings are the teaching-fast ones: a primary silent for 1 s is down
//! (`down-after-milliseconds`, 30 s by default), a failover that stalls is retried after 3 s
//! (`failover-timeout`, 3 min by default), and replicas resynchronise one at a time. A failover
//! then takes about 2 s from the kill to the announcement. The sentinels are told at start what
//! they would otherwise discover within 10 s (the replicas, from the primary's `INFO`) and 2 s
//! (each other, from their hello messages): the `known-replica` and `known-sentinel` lines they
//! write into their own configuration files once they know. So the topology can fail over as
//! soon as it is up.
//!
//! Every instance has its own directory and configuration file, which Sentinel rewrites when it
//! reconfigures the instance: restarted, it keeps the role Sentinel last gave it. There is no
//! persistence; an instance that restarts starts empty, and a replica copies the primary again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use redis::Role;

use crate::process::{ChildGuard, ChildSpec};
use crate::redis_server::find_program;
use crate::wait::{wait_for, wait_until};

/// The name the sentinels monitor the primary under (`REDIS_SENTINEL_MASTER`).
pub const MASTER_NAME: &str = "cluster-lab";

const REPLICAS: usize = 2;
const SENTINELS: usize = 3;
const QUORUM: usize = 2;
const DOWN_AFTER_MS: u64 = 1000;
const FAILOVER_TIMEOUT_MS: u64 = 3000;

/// How long the topology may take to start: every process up, replicas in sync, sentinels
/// agreeing on who is who.
const READY_LIMIT: Duration = Duration::from_secs(15);

/// The budget of one question to one process: a paused process is silent, not slow.
const PROBE_BUDGET: Duration = Duration::from_millis(200);

/// The `redis-server` and `redis-sentinel` to run.
#[derive(Debug, Clone)]
pub struct RedisPrograms {
    pub server: PathBuf,
    pub sentinel: PathBuf,
}

impl RedisPrograms {
    /// `REDIS_SERVER_BIN` and `REDIS_SENTINEL_BIN`, else the ones on `PATH`.
    pub fn from_env() -> anyhow::Result<RedisPrograms> {
        Ok(RedisPrograms {
            server: find_program("REDIS_SERVER_BIN", "redis-server", "redis-server")?,
            sentinel: find_program("REDIS_SENTINEL_BIN", "redis-sentinel", "redis-sentinel")?,
        })
    }
}

/// What the topology is started with, besides the teaching-fast settings.
#[derive(Debug, Clone, Default)]
pub struct SentinelOptions {
    /// `min-replicas-to-write` and `min-replicas-max-lag` on every instance (any of them may
    /// become the primary): a primary that cannot see that many replicas, each heard from within
    /// the lag, refuses writes (`NOREPLICAS`) instead of accepting what a failover would lose.
    pub min_replicas: Option<MinReplicas>,
    /// `requirepass` (and `masterauth`) on the Redis instances: `REDIS_PASSWORD`.
    pub redis_password: Option<String>,
    /// `requirepass` on the sentinels: `REDIS_SENTINEL_PASSWORD`.
    pub sentinel_password: Option<String>,
}

/// A primary's refusal to write without enough replicas (the split-brain defence).
#[derive(Debug, Clone, Copy)]
pub struct MinReplicas {
    pub replicas: u32,
    pub max_lag_secs: u32,
}

/// One process of the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    /// A Redis instance: 0 is the first primary, 1 and 2 its first replicas.
    Redis(usize),
    /// A sentinel, 0 to 2.
    Sentinel(usize),
}

/// Three Redis instances and three sentinels on loopback ports, every process killed when this
/// value is dropped.
pub struct SentinelTopology {
    redis: Vec<ChildGuard>,
    sentinels: Vec<ChildGuard>,
    probe: Probe,
    /// A test's temporary directory, removed after the processes are gone (field order).
    _scratch: Option<tempfile::TempDir>,
}

impl SentinelTopology {
    /// clusterctl's topology: files under `dir`, processes detached (see `process`); returns
    /// once it can fail over.
    pub async fn start_in(
        programs: &RedisPrograms,
        dir: &Path,
        options: SentinelOptions,
    ) -> anyhow::Result<SentinelTopology> {
        let topology = Self::launch(programs, dir, &options, true, None)?;
        let probe = topology.probe.clone();
        let ready = wait_until(READY_LIMIT, Duration::from_millis(20), || {
            let probe = probe.clone();
            async move {
                let ready = tokio::task::spawn_blocking(move || probe.is_ready()).await;
                ready.unwrap_or(false).then_some(())
            }
        })
        .await;
        match ready {
            Some(()) => Ok(topology),
            None => bail!(topology.not_ready()),
        }
    }

    /// A test's topology in a temporary directory, with the default options; panics when it
    /// cannot start.
    pub fn start() -> SentinelTopology {
        Self::start_with(SentinelOptions::default())
    }

    /// [`SentinelTopology::start`] with `options`.
    pub fn start_with(options: SentinelOptions) -> SentinelTopology {
        let launched = || -> anyhow::Result<SentinelTopology> {
            let programs = RedisPrograms::from_env()?;
            let scratch = tempfile::tempdir().context("temporary directory for the topology")?;
            let dir = scratch.path().to_path_buf();
            let topology = Self::launch(&programs, &dir, &options, false, Some(scratch))?;
            if wait_for(READY_LIMIT, || topology.probe.is_ready().then_some(())).is_none() {
                bail!(topology.not_ready());
            }
            Ok(topology)
        };
        launched().unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn launch(
        programs: &RedisPrograms,
        dir: &Path,
        options: &SentinelOptions,
        detached: bool,
        scratch: Option<tempfile::TempDir>,
    ) -> anyhow::Result<SentinelTopology> {
        // Chosen in one call: two calls could each hand out the same port (one redis-server
        // and one sentinel on 37877 made a topology that never became ready).
        let mut redis_ports = free_ports(1 + REPLICAS + SENTINELS)?;
        let sentinel_ports = redis_ports.split_off(1 + REPLICAS);
        let primary = redis_ports[0];
        let mut redis = Vec::new();
        for &port in &redis_ports {
            let replica_of = (port != primary).then_some(primary);
            let home = member_dir(dir, "redis", port)?;
            let config = home.join("redis.conf");
            std::fs::write(&config, redis_config(port, &home, replica_of, options))
                .with_context(|| format!("cannot write {}", config.display()))?;
            let spec = spec(&programs.server, &config, port, detached);
            redis.push(ChildGuard::start(spec)?);
        }
        let mut sentinels = Vec::new();
        for &port in &sentinel_ports {
            let home = member_dir(dir, "sentinel", port)?;
            let config = home.join("sentinel.conf");
            let text = sentinel_config(port, &home, &redis_ports, &sentinel_ports, options);
            std::fs::write(&config, text)
                .with_context(|| format!("cannot write {}", config.display()))?;
            let spec = spec(&programs.sentinel, &config, port, detached);
            sentinels.push(ChildGuard::start(spec)?);
        }
        Ok(SentinelTopology {
            redis,
            sentinels,
            probe: Probe {
                redis_ports,
                sentinel_ports,
                redis_password: options.redis_password.clone(),
                sentinel_password: options.sentinel_password.clone(),
            },
            _scratch: scratch,
        })
    }

    fn not_ready(&self) -> String {
        format!(
            "the Sentinel topology (redis {:?}, sentinels {:?}) was not ready within {READY_LIMIT:?}",
            self.probe.redis_ports, self.probe.sentinel_ports
        )
    }

    /// The name the primary is monitored under.
    pub fn master_name(&self) -> &'static str {
        MASTER_NAME
    }

    /// `127.0.0.1:port` of each sentinel.
    pub fn sentinel_addresses(&self) -> Vec<String> {
        let ports = &self.probe.sentinel_ports;
        ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect()
    }

    /// The sentinels as a node is told of them: `REDIS_SENTINELS`.
    pub fn sentinels_env(&self) -> String {
        self.sentinel_addresses().join(",")
    }

    pub fn redis_port(&self, index: usize) -> u16 {
        self.probe.redis_ports[index]
    }

    pub fn sentinel_port(&self, index: usize) -> u16 {
        self.probe.sentinel_ports[index]
    }

    /// `redis://127.0.0.1:<port>` of Redis instance `index`, password included.
    pub fn redis_url(&self, index: usize) -> String {
        url(self.redis_port(index), self.probe.redis_password.as_deref())
    }

    /// The Redis instance the first sentinel that answers names as the primary, if any does.
    pub fn announced_primary(&self) -> Option<usize> {
        self.probe.announced_primaries().into_iter().next()
    }

    /// The Redis instance every sentinel names as the primary, when all answer and agree. After
    /// a failover the others learn it from the sentinel that led it within ~2 s (their hello
    /// messages).
    pub fn agreed_primary(&self) -> Option<usize> {
        let named = self.probe.announced_primaries();
        let first = *named.first()?;
        (named.len() == self.probe.sentinel_ports.len() && named.iter().all(|&i| i == first))
            .then_some(first)
    }

    /// The Redis instance a sentinel names as the primary and that says it is one.
    pub fn primary(&self) -> Option<usize> {
        self.probe.confirmed_primary(None)
    }

    /// The instances that are not [`SentinelTopology::primary`] (all three when none is).
    pub fn replicas(&self) -> Vec<usize> {
        let primary = self.primary();
        (0..self.redis.len())
            .filter(|&i| Some(i) != primary)
            .collect()
    }

    /// Every process of the topology with its port: the three Redis instances, then the
    /// sentinels.
    pub fn members(&self) -> Vec<(Member, u16)> {
        let redis = (0..self.redis.len()).map(|i| (Member::Redis(i), self.redis_port(i)));
        let sentinels =
            (0..self.sentinels.len()).map(|i| (Member::Sentinel(i), self.sentinel_port(i)));
        redis.chain(sentinels).collect()
    }

    /// The process id of `member`, while it runs.
    pub fn pid(&self, member: Member) -> Option<i32> {
        self.process(member).pid()
    }

    /// Sets `min-replicas-to-write` and `min-replicas-max-lag` on every Redis instance while
    /// they run (`CONFIG SET`), or lifts the rule (`None`: 0 replicas). Every instance, since
    /// any of them may be the primary after a failover; one that does not answer is an error,
    /// so call it while none is paused or killed.
    pub fn set_min_replicas(&self, min: Option<MinReplicas>) -> anyhow::Result<()> {
        let (replicas, lag) = min.map_or((0, 10), |min| (min.replicas, min.max_lag_secs));
        for (index, &port) in self.probe.redis_ports.iter().enumerate() {
            let mut connection = connect(port, self.probe.redis_password.as_deref())
                .with_context(|| format!("redis {index} (port {port}) does not answer"))?;
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("min-replicas-to-write")
                .arg(replicas)
                .arg("min-replicas-max-lag")
                .arg(lag)
                .exec(&mut connection)
                .with_context(|| format!("CONFIG SET min-replicas-to-write on redis {index}"))?;
        }
        Ok(())
    }

    /// SIGKILL: the process is gone, its port refuses.
    pub fn kill(&mut self, member: Member) {
        self.process_mut(member).kill();
    }

    /// SIGSTOP: the process keeps its sockets and answers nothing, like a host behind a
    /// broken network.
    pub fn pause(&self, member: Member) {
        self.process(member).signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`SentinelTopology::pause`]: it answers again, everything that waited first.
    pub fn resume(&self, member: Member) {
        self.process(member).signal(libc::SIGCONT);
    }

    /// Starts the process again from its configuration file, as Sentinel last rewrote it. An
    /// old primary that crashed before Sentinel could reconfigure it comes back as an empty
    /// primary; Sentinel, which names another primary meanwhile, turns it into a replica after
    /// a few seconds.
    pub fn restart(&mut self, member: Member) -> anyhow::Result<()> {
        self.process_mut(member).restart()
    }

    fn process(&self, member: Member) -> &ChildGuard {
        match member {
            Member::Redis(index) => &self.redis[index],
            Member::Sentinel(index) => &self.sentinels[index],
        }
    }

    fn process_mut(&mut self, member: Member) -> &mut ChildGuard {
        match member {
            Member::Redis(index) => &mut self.redis[index],
            Member::Sentinel(index) => &mut self.sentinels[index],
        }
    }

    /// Waits until a sentinel names another primary than `old` and that instance says it is
    /// the primary: the failover is over, as a client asking Sentinel sees it. Returns the new
    /// primary, or `None` after `limit`.
    pub fn wait_for_failover(&self, old: usize, limit: Duration) -> Option<usize> {
        wait_for(limit, || self.probe.confirmed_primary(Some(old)))
    }

    /// [`SentinelTopology::wait_for_failover`] for async callers.
    pub async fn failover(&self, old: usize, limit: Duration) -> anyhow::Result<usize> {
        let probe = self.probe.clone();
        let found = wait_until(limit, Duration::from_millis(20), || {
            let probe = probe.clone();
            async move {
                let found = tokio::task::spawn_blocking(move || probe.confirmed_primary(Some(old)));
                found.await.ok().flatten()
            }
        })
        .await;
        found.with_context(|| format!("no failover away from redis {old} within {limit:?}"))
    }

    /// Waits until instance `index` is a replica of the current primary with its link up.
    pub fn wait_for_replica(&self, index: usize, limit: Duration) -> bool {
        wait_for(limit, || self.probe.is_synced_replica(index).then_some(())).is_some()
    }

    /// Waits until every replica that follows the primary has received everything the primary
    /// wrote so far: a write made before is then on every replica, and survives a failover.
    pub fn wait_for_replicas_in_sync(&self, limit: Duration) -> bool {
        wait_for(limit, || self.probe.replicas_in_sync().then_some(())).is_some()
    }

    /// [`SentinelTopology::wait_for_replica`] for async callers.
    pub async fn rejoined(&self, index: usize, limit: Duration) -> anyhow::Result<()> {
        let probe = self.probe.clone();
        let rejoined = wait_until(limit, Duration::from_millis(20), || {
            let probe = probe.clone();
            async move {
                let synced = tokio::task::spawn_blocking(move || probe.is_synced_replica(index));
                synced.await.unwrap_or(false).then_some(())
            }
        })
        .await;
        rejoined.with_context(|| format!("redis {index} was no replica within {limit:?}"))
    }
}

/// Questions to the topology's processes, each within [`PROBE_BUDGET`]: what the sentinels
/// announce and what the instances say they are. Blocking; async callers run it off their
/// worker threads.
#[derive(Debug, Clone)]
struct Probe {
    redis_ports: Vec<u16>,
    sentinel_ports: Vec<u16>,
    redis_password: Option<String>,
    sentinel_password: Option<String>,
}

impl Probe {
    /// Each answering sentinel's primary, as an instance index, in sentinel order.
    fn announced_primaries(&self) -> Vec<usize> {
        self.sentinel_ports
            .iter()
            .filter_map(|&port| {
                let mut sentinel = connect(port, self.sentinel_password.as_deref())?;
                let (_host, primary): (String, u16) = redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(MASTER_NAME)
                    .query(&mut sentinel)
                    .ok()?;
                self.redis_ports.iter().position(|&p| p == primary)
            })
            .collect()
    }

    /// The first instance a sentinel names, other than `not`, that says it is a primary.
    fn confirmed_primary(&self, not: Option<usize>) -> Option<usize> {
        self.announced_primaries()
            .into_iter()
            .filter(|&index| Some(index) != not)
            .find(|&index| matches!(self.role(index), Some(Role::Primary { .. })))
    }

    fn role(&self, index: usize) -> Option<Role> {
        let mut connection = connect(self.redis_ports[index], self.redis_password.as_deref())?;
        redis::cmd("ROLE").query(&mut connection).ok()
    }

    fn is_synced_replica(&self, index: usize) -> bool {
        let Some(primary) = self.confirmed_primary(None) else {
            return false;
        };
        match self.role(index) {
            Some(Role::Replica {
                primary_port,
                replication_state,
                ..
            }) => primary_port == self.redis_ports[primary] && replication_state == "connected",
            _ => false,
        }
    }

    fn replicas_in_sync(&self) -> bool {
        let Some(primary) = self.confirmed_primary(None) else {
            return false;
        };
        let Some(Role::Primary {
            replication_offset,
            replicas,
        }) = self.role(primary)
        else {
            return false;
        };
        // The primary learns its replicas' offsets once a second; each replica knows its own.
        !replicas.is_empty()
            && replicas.iter().all(|replica| {
                let index = self.redis_ports.iter().position(|&p| p == replica.port);
                matches!(
                    index.and_then(|index| self.role(index)),
                    Some(Role::Replica { data_received, .. }) if data_received >= replication_offset
                )
            })
    }

    /// Ready to fail over: the first primary streams its writes to both replicas (they are
    /// `online` in its view: they have their first copy), and every sentinel knows the primary,
    /// both replicas and both other sentinels.
    fn is_ready(&self) -> bool {
        let replicas_online = connect(self.redis_ports[0], self.redis_password.as_deref())
            .and_then(|mut primary| {
                redis::cmd("INFO")
                    .arg("replication")
                    .query::<String>(&mut primary)
                    .ok()
            })
            .is_some_and(|info| info.matches("state=online").count() == REPLICAS);
        replicas_online
            && self
                .sentinel_ports
                .iter()
                .all(|&port| self.sentinel_is_ready(port))
    }

    /// The sentinel sees the primary as one, knows both other sentinels, and has heard from
    /// both replicas that their link to the primary is up: without that last part, it has no
    /// replica it would promote (`NOGOODSLAVE`).
    fn sentinel_is_ready(&self, port: u16) -> bool {
        let Some(mut sentinel) = connect(port, self.sentinel_password.as_deref()) else {
            return false;
        };
        let primary: redis::RedisResult<HashMap<String, String>> = redis::cmd("SENTINEL")
            .arg("master")
            .arg(MASTER_NAME)
            .query(&mut sentinel);
        let replicas: redis::RedisResult<Vec<HashMap<String, String>>> = redis::cmd("SENTINEL")
            .arg("replicas")
            .arg(MASTER_NAME)
            .query(&mut sentinel);
        let (Ok(primary), Ok(replicas)) = (primary, replicas) else {
            return false;
        };
        let field = |state: &HashMap<String, String>, name: &str| state.get(name).cloned();
        field(&primary, "flags").as_deref() == Some("master")
            && field(&primary, "num-other-sentinels") == Some((SENTINELS - 1).to_string())
            && replicas.len() == REPLICAS
            && replicas.iter().all(|replica| {
                field(replica, "flags").as_deref() == Some("slave")
                    && field(replica, "master-link-status").as_deref() == Some("ok")
            })
    }
}

/// A connection to a loopback port that gives up after [`PROBE_BUDGET`] at every step.
fn connect(port: u16, password: Option<&str>) -> Option<redis::Connection> {
    let client = redis::Client::open(url(port, password)).ok()?;
    let connection = client.get_connection_with_timeout(PROBE_BUDGET).ok()?;
    connection.set_read_timeout(Some(PROBE_BUDGET)).ok()?;
    connection.set_write_timeout(Some(PROBE_BUDGET)).ok()?;
    Some(connection)
}

fn url(port: u16, password: Option<&str>) -> String {
    match password {
        Some(password) => format!("redis://:{password}@127.0.0.1:{port}"),
        None => format!("redis://127.0.0.1:{port}"),
    }
}

/// `count` different free loopback ports.
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    // All held until all are chosen, so that no port is picked twice.
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot bind free ports")?;
    let ports = listeners
        .iter()
        .map(|listener| listener.local_addr().map(|addr| addr.port()))
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok(ports)
}

fn member_dir(dir: &Path, kind: &str, port: u16) -> anyhow::Result<PathBuf> {
    let home = dir.join(format!("{kind}-{port}"));
    std::fs::create_dir_all(&home).with_context(|| format!("cannot create {}", home.display()))?;
    Ok(home)
}

/// `program` started with the configuration file `config` in `home`, logging beside it.
fn spec(program: &Path, config: &Path, port: u16, detached: bool) -> ChildSpec {
    let kind = program.file_name().map_or_else(
        || "redis".to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    ChildSpec {
        name: format!("{kind} :{port}"),
        program: program.to_path_buf(),
        args: vec![config.display().to_string()],
        env: Vec::new(),
        log: config.with_extension("log"),
        detached,
    }
}

fn redis_config(
    port: u16,
    home: &Path,
    replica_of: Option<u16>,
    options: &SentinelOptions,
) -> String {
    let mut lines = vec![
        format!("port {port}"),
        "bind 127.0.0.1".to_string(),
        format!("dir {}", home.display()),
        "daemonize no".to_string(),
        "save \"\"".to_string(),
        "appendonly no".to_string(),
        // A replica that (re)joins gets its copy through a file, at once. Redis 7's default,
        // a copy streamed to the replica, first waits 5 s for more replicas to share it, and
        // afterwards streams the primary's writes to the replica only from its first
        // acknowledgement, up to 1 s later: until then a WAIT for it times out.
        "repl-diskless-sync no".to_string(),
    ];
    if let Some(primary) = replica_of {
        lines.push(format!("replicaof 127.0.0.1 {primary}"));
    }
    if let Some(password) = &options.redis_password {
        lines.push(format!("requirepass {password}"));
        lines.push(format!("masterauth {password}"));
    }
    if let Some(min) = options.min_replicas {
        lines.push(format!("min-replicas-to-write {}", min.replicas));
        lines.push(format!("min-replicas-max-lag {}", min.max_lag_secs));
    }
    lines.join("\n") + "\n"
}

/// A sentinel's identity, fixed so that the others can be told of it before it starts.
fn sentinel_id(port: u16) -> String {
    format!("{port:040x}")
}

fn sentinel_config(
    port: u16,
    home: &Path,
    redis_ports: &[u16],
    sentinel_ports: &[u16],
    options: &SentinelOptions,
) -> String {
    let name = MASTER_NAME;
    let mut lines = vec![
        format!("port {port}"),
        "bind 127.0.0.1".to_string(),
        format!("dir {}", home.display()),
        "daemonize no".to_string(),
        format!("sentinel myid {}", sentinel_id(port)),
        format!(
            "sentinel monitor {name} 127.0.0.1 {} {QUORUM}",
            redis_ports[0]
        ),
        format!("sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}"),
        format!("sentinel failover-timeout {name} {FAILOVER_TIMEOUT_MS}"),
        format!("sentinel parallel-syncs {name} 1"),
    ];
    if let Some(password) = &options.redis_password {
        lines.push(format!("sentinel auth-pass {name} {password}"));
    }
    if let Some(password) = &options.sentinel_password {
        lines.push(format!("requirepass {password}"));
        lines.push(format!("sentinel sentinel-pass {password}"));
    }
    for replica in &redis_ports[1..] {
        lines.push(format!("sentinel known-replica {name} 127.0.0.1 {replica}"));
    }
    for &other in sentinel_ports.iter().filter(|&&other| other != port) {
        lines.push(format!(
            "sentinel known-sentinel {name} 127.0.0.1 {other} {}",
            sentinel_id(other)
        ));
    }
    lines.join("\n") + "\n"
}
