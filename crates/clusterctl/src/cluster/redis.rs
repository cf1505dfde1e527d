//! The Redis every node shares: a private `redis-server`, or one given by URL.
//!
//! A private server lives on a free port in the cluster's work directory, so
//! scenarios can SIGKILL it and start it again on the same port, with or
//! without the append-only file, and watch what happens to the sessions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::child::{ChildSpec, Supervised};
use super::wait::wait_until;

/// Whether a restart keeps the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Persistence {
    /// No RDB, no AOF: a restart starts empty.
    None,
    /// `appendonly yes` + `appendfsync always`: every acknowledged write survives.
    AppendOnly,
}

pub enum Redis {
    Managed(ManagedRedis),
    External(String),
}

impl Redis {
    pub fn url(&self) -> String {
        match self {
            Redis::Managed(managed) => managed.url(),
            Redis::External(url) => url.clone(),
        }
    }

    /// The private server, when there is one (fault scenarios need it).
    pub fn managed(&mut self) -> Option<&mut ManagedRedis> {
        match self {
            Redis::Managed(managed) => Some(managed),
            Redis::External(_) => None,
        }
    }
}

pub struct ManagedRedis {
    program: PathBuf,
    port: u16,
    dir: PathBuf,
    process: Supervised,
}

impl ManagedRedis {
    /// Starts `redis-server` on `port`, keeping its files in `dir`, and waits for PING.
    pub async fn start(program: &Path, port: u16, dir: &Path) -> anyhow::Result<ManagedRedis> {
        let process = Supervised::start(spec(program, port, dir, Persistence::None))?;
        let redis = ManagedRedis {
            program: program.to_path_buf(),
            port,
            dir: dir.to_path_buf(),
            process,
        };
        redis.wait_up(Duration::from_secs(10)).await?;
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILL: no shutdown save, connections drop, the port refuses.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the server again on the same port and data directory.
    pub async fn start_again(&mut self, persistence: Persistence) -> anyhow::Result<()> {
        self.process = Supervised::start(spec(&self.program, self.port, &self.dir, persistence))?;
        self.wait_up(Duration::from_secs(10)).await
    }

    /// Throws the data away: the next start begins empty.
    pub fn wipe(&mut self) -> anyhow::Result<()> {
        let aof_dir = self.dir.join("appendonlydir");
        if aof_dir.exists() {
            std::fs::remove_dir_all(aof_dir)?;
        }
        Ok(())
    }

    async fn wait_up(&self, limit: Duration) -> anyhow::Result<()> {
        let port = self.port;
        if wait_until(limit, Duration::from_millis(10), || ping(port))
            .await
            .is_none()
        {
            bail!("redis-server on port {port} did not answer PING within {limit:?}");
        }
        Ok(())
    }
}

fn spec(program: &Path, port: u16, dir: &Path, persistence: Persistence) -> ChildSpec {
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
    }
}

/// One PING with a 200 ms budget: `Some(())` on `+PONG`.
pub async fn ping(port: u16) -> Option<()> {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await.ok()?;
        (&reply == b"+PONG\r\n").then_some(())
    };
    tokio::time::timeout(Duration::from_millis(200), attempt)
        .await
        .ok()
        .flatten()
}
