//! The real `cluster-lb` binary as the tests start it: one builder for its command line, so
//! each test names only the settings it is about, and the process is stopped on every exit path.
#![allow(dead_code)] // each test file uses a different subset

use std::process::{Command, Stdio};
use std::time::Duration;

use cluster_kit::{free_port, wait_for, ChildGuard};

use super::TestBackend;

/// The binary with none of the caller's `LB_*` variables, so tests do not depend on the shell.
pub fn lb_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cluster-lb"));
    for (key, _) in std::env::vars() {
        if key.starts_with("LB_") {
            command.env_remove(key);
        }
    }
    command.env("RUST_LOG", "warn");
    command
}

/// A `cluster-lb` command line on free loopback ports, built up setting by setting.
pub struct LbBuilder {
    pub port: u16,
    pub admin_port: u16,
    admin_host: &'static str,
    settings: Vec<(String, String)>,
    envs: Vec<(String, String)>,
}

impl LbBuilder {
    pub fn new() -> LbBuilder {
        LbBuilder {
            port: free_port(),
            admin_port: free_port(),
            admin_host: "127.0.0.1",
            settings: Vec::new(),
            envs: Vec::new(),
        }
    }

    /// The admin API on 0.0.0.0 instead of loopback (the balancer then wants a token).
    pub fn admin_on_all_interfaces(mut self) -> LbBuilder {
        self.admin_host = "0.0.0.0";
        self
    }

    pub fn backend(self, backend: &TestBackend) -> LbBuilder {
        self.setting("--backend", backend.address())
    }

    /// Any other flag with its value, e.g. `setting("--workers", 1)`.
    pub fn setting(mut self, flag: &str, value: impl ToString) -> LbBuilder {
        self.settings.push((flag.to_string(), value.to_string()));
        self
    }

    pub fn env(mut self, key: &str, value: impl ToString) -> LbBuilder {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// The command, not started: for a test that must adjust the process itself.
    pub fn command(&self) -> Command {
        let mut command = lb_command();
        command
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--admin-listen")
            .arg(format!("{}:{}", self.admin_host, self.admin_port));
        for (flag, value) in &self.settings {
            command.arg(flag).arg(value);
        }
        command
            .envs(self.envs.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command
    }

    /// Starts the binary and waits until its admin API answers.
    pub fn spawn(&self) -> ChildGuard {
        let guard = ChildGuard::spawn("cluster-lb", &mut self.command());
        let up = wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", self.admin_port)).ok()
        });
        assert!(up.is_some(), "cluster-lb did not open its admin port");
        guard
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }
}
