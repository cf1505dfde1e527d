//! A private, throw-away `redis-server` for one test.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_for, ChildGuard};

/// A real `redis-server` on a free loopback port, in its own temporary directory.
///
/// Persistence is off unless [`RedisServer::start_with_aof`] is used. The server
/// is killed when this value is dropped.
pub struct RedisServer {
    port: u16,
    aof: bool,
    dir: tempfile::TempDir,
    process: Option<ChildGuard>,
}

impl RedisServer {
    /// Starts a server without persistence and waits until it answers PING.
    pub fn start() -> RedisServer {
        Self::start_inner(false)
    }

    /// Starts a server with the append-only file on (`appendfsync always`), so a
    /// restart keeps every acknowledged write.
    pub fn start_with_aof() -> RedisServer {
        Self::start_inner(true)
    }

    fn start_inner(aof: bool) -> RedisServer {
        let dir = tempfile::tempdir().expect("temporary directory for redis-server");
        let mut server = RedisServer {
            port: free_port(),
            aof,
            dir,
            process: None,
        };
        server.launch();
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILLs the server: connections drop, the port refuses.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts the server again on the same port (and, with AOF, the same data).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// True when the server answers PING within 200 ms.
    pub fn is_up(&self) -> bool {
        ping(self.port)
    }

    fn launch(&mut self) {
        let mut command = Command::new(redis_binary());
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
            .args(["--appendonly", if self.aof { "yes" } else { "no" }])
            .args(["--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = ChildGuard::spawn(format!("redis-server :{}", self.port), &mut command);
        self.process = Some(process);
        let port = self.port;
        if wait_for(Duration::from_secs(10), || ping(port).then_some(())).is_none() {
            panic!("redis-server on port {port} did not answer PING within 10 s");
        }
    }
}

fn redis_binary() -> String {
    let bin = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_string());
    let on_path = Path::new(&bin).is_absolute()
        || std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(&bin).exists()))
            .unwrap_or(false);
    assert!(
        on_path,
        "redis-server not found: install it (apt-get install redis-server) or set REDIS_SERVER_BIN"
    );
    bin
}

fn ping(port: u16) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let addr = ("127.0.0.1", port);
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        stream.write_all(b"PING\r\n")?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply)?;
        Ok(&reply == b"+PONG\r\n")
    };
    attempt().unwrap_or(false)
}
