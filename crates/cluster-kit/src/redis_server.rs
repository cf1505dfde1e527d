//! A private `redis-server` that can be killed, wiped and started again on the same port.
//!
//! Redis is the one component every node shares, so clusterctl's fault scenarios and the
//! failure tests both need to SIGKILL it and bring it back on the same port, with or without
//! the append-only file, and watch what happens to the sessions. clusterctl keeps the server's
//! files in its work directory; a test gets a temporary directory of its own.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::process::{ChildGuard, ChildSpec};
use crate::try_free_port;
use crate::wait::{wait_for, wait_until};

/// How long a starting server may take to answer PING.
const READY_LIMIT: Duration = Duration::from_secs(10);

/// Whether a restart keeps the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Persistence {
    /// No RDB, no AOF: a restart starts empty.
    None,
    /// `appendonly yes` + `appendfsync always`: every acknowledged write survives.
    AppendOnly,
}

/// A real `redis-server` on a loopback port, killed when this value is dropped.
pub struct RedisServer {
    program: PathBuf,
    port: u16,
    dir: PathBuf,
    persistence: Persistence,
    /// clusterctl's children are detached (see `process`), a test's are not.
    detached: bool,
    process: ChildGuard,
    /// A test's temporary directory, removed after the process is gone (field order).
    _scratch: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// clusterctl's server: `program` on `port`, files in `dir`, no persistence; returns once
    /// it answers PING.
    pub async fn start_in(program: &Path, port: u16, dir: &Path) -> anyhow::Result<RedisServer> {
        let process = ChildGuard::start(spec(program, port, dir, Persistence::None, true))?;
        let server = RedisServer {
            program: program.to_path_buf(),
            port,
            dir: dir.to_path_buf(),
            persistence: Persistence::None,
            detached: true,
            process,
            _scratch: None,
        };
        server.wait_up().await?;
        Ok(server)
    }

    /// A test's server without persistence, on a free port; panics when it cannot start.
    pub fn start() -> RedisServer {
        Self::start_for_test(Persistence::None)
    }

    /// A test's server with the append-only file on (`appendfsync always`), so a restart
    /// keeps every acknowledged write.
    pub fn start_with_aof() -> RedisServer {
        Self::start_for_test(Persistence::AppendOnly)
    }

    fn start_for_test(persistence: Persistence) -> RedisServer {
        let launched = || -> anyhow::Result<RedisServer> {
            let scratch = tempfile::tempdir().context("temporary directory for redis-server")?;
            let program = find_program("REDIS_SERVER_BIN", "redis-server", "redis-server")?;
            let (port, dir) = (try_free_port()?, scratch.path().to_path_buf());
            let process = ChildGuard::start(spec(&program, port, &dir, persistence, false))?;
            let server = RedisServer {
                program,
                port,
                dir,
                persistence,
                detached: false,
                process,
                _scratch: Some(scratch),
            };
            server.wait_up_blocking()?;
            Ok(server)
        };
        launched().unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no shutdown save, connections drop, the port refuses.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the server again on the same port and data directory, with `persistence` from
    /// now on; returns once it answers PING.
    pub async fn start_again(&mut self, persistence: Persistence) -> anyhow::Result<()> {
        self.relaunch(persistence)?;
        self.wait_up().await
    }

    /// A test's restart: the same port, persistence and (with AOF) data; panics on failure.
    pub fn restart(&mut self) {
        let restarted = self
            .relaunch(self.persistence)
            .and_then(|()| self.wait_up_blocking());
        restarted.unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Throws the data away: the next start begins empty.
    pub fn wipe(&mut self) -> anyhow::Result<()> {
        let aof_dir = self.dir.join("appendonlydir");
        if aof_dir.exists() {
            std::fs::remove_dir_all(aof_dir)?;
        }
        Ok(())
    }

    /// True when the server answers PING within 200 ms.
    pub fn is_up(&self) -> bool {
        ping(self.port)
    }

    fn relaunch(&mut self, persistence: Persistence) -> anyhow::Result<()> {
        self.process.kill();
        self.persistence = persistence;
        let spec = spec(
            &self.program,
            self.port,
            &self.dir,
            persistence,
            self.detached,
        );
        self.process = ChildGuard::start(spec)?;
        Ok(())
    }

    fn wait_up_blocking(&self) -> anyhow::Result<()> {
        let port = self.port;
        match wait_for(READY_LIMIT, || ping(port).then_some(())) {
            Some(()) => Ok(()),
            None => bail!("redis-server on port {port} did not answer PING within {READY_LIMIT:?}"),
        }
    }

    async fn wait_up(&self) -> anyhow::Result<()> {
        let port = self.port;
        // The probe blocks for up to 200 ms, so it runs off the async worker threads.
        let answered = wait_until(READY_LIMIT, Duration::from_millis(10), || async move {
            let pong = tokio::task::spawn_blocking(move || ping(port)).await;
            pong.unwrap_or(false).then_some(())
        })
        .await;
        match answered {
            Some(()) => Ok(()),
            None => bail!("redis-server on port {port} did not answer PING within {READY_LIMIT:?}"),
        }
    }
}

fn spec(
    program: &Path,
    port: u16,
    dir: &Path,
    persistence: Persistence,
    detached: bool,
) -> ChildSpec {
    let appendonly = match persistence {
        Persistence::None => "no",
        Persistence::AppendOnly => "yes",
    };
    ChildSpec {
        name: format!("redis-server :{port}"),
        program: program.to_path_buf(),
        args: [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--daemonize",
            "no",
            "--appendonly",
            appendonly,
            "--appendfsync",
            "always",
            "--dir",
            &dir.display().to_string(),
        ]
        .map(String::from)
        .to_vec(),
        env: Vec::new(),
        log: dir.join("redis.log"),
        detached,
    }
}

/// A program the tests run: `env_var` when set, else `name` when it is on `PATH`; the error
/// says which Debian package to install.
pub(crate) fn find_program(env_var: &str, name: &str, package: &str) -> anyhow::Result<PathBuf> {
    let bin = std::env::var(env_var).unwrap_or_else(|_| name.to_string());
    let on_path = Path::new(&bin).is_absolute()
        || std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(&bin).exists()))
            .unwrap_or(false);
    if !on_path {
        bail!("{name} not found: install it (apt-get install {package}) or set {env_var}");
    }
    Ok(PathBuf::from(bin))
}

/// One PING with a 200 ms budget: true on `+PONG`.
fn ping(port: u16) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        stream.write_all(b"PING\r\n")?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply)?;
        Ok(&reply == b"+PONG\r\n")
    };
    attempt().unwrap_or(false)
}
