//! Child processes that never outlive their owner.
//!
//! Every process the harness or a test starts is held by a [`ChildGuard`], which SIGKILLs and
//! reaps it on `Drop`: normal exit, errors, panics. A process started from a [`ChildSpec`]
//! can also be restarted (a node crash and its return), and a `detached` one gets two more
//! layers for clusterctl, which runs in a terminal: a process group of its own keeps a
//! terminal's Ctrl-C away from it so that clusterctl alone decides the order of shutdown, and
//! `PR_SET_PDEATHSIG` makes the kernel SIGKILL it when clusterctl itself is SIGKILLed and no
//! Rust code runs (on Linux; macOS has no such signal). Tests leave their children in the runner's process group, so a test
//! runner that kills a timed-out test's group stops them too.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::wait::{wait_for, wait_until};

/// Everything needed to start (and restart) the same process again.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// stdout and stderr go here, appended across restarts.
    pub log: PathBuf,
    /// Own process group and death with the parent (see the module docs).
    pub detached: bool,
}

/// A running (or stopped) child process, SIGKILLed and reaped when dropped.
pub struct ChildGuard {
    name: String,
    /// `None` for a one-off command, which cannot be restarted.
    spec: Option<ChildSpec>,
    child: Option<Child>,
}

impl ChildGuard {
    /// Starts the process described by `spec`.
    pub fn start(spec: ChildSpec) -> anyhow::Result<ChildGuard> {
        let mut guard = ChildGuard {
            name: spec.name.clone(),
            spec: Some(spec),
            child: None,
        };
        guard.restart()?;
        Ok(guard)
    }

    /// Spawns a one-off `command`; `name` is used in messages.
    pub fn try_spawn(name: impl Into<String>, command: &mut Command) -> anyhow::Result<ChildGuard> {
        let name = name.into();
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(ChildGuard {
            name,
            spec: None,
            child: Some(child),
        })
    }

    /// [`ChildGuard::try_spawn`] for tests: panics when the command cannot start.
    pub fn spawn(name: impl Into<String>, command: &mut Command) -> ChildGuard {
        ChildGuard::try_spawn(name, command).unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The spec it was started from; `None` for a one-off command.
    pub fn spec(&self) -> Option<&ChildSpec> {
        self.spec.as_ref()
    }

    /// Sets an environment variable for the next [`ChildGuard::restart`].
    pub fn set_env(&mut self, name: &str, value: &str) {
        if let Some(spec) = &mut self.spec {
            spec.env.retain(|(existing, _)| existing != name);
            spec.env.push((name.to_string(), value.to_string()));
        }
    }

    /// Starts the process again from its spec (SIGKILLing a previous run first).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let Some(spec) = &self.spec else {
            bail!(
                "{} was started from a one-off command and cannot be restarted",
                self.name
            );
        };
        let log = File::options()
            .create(true)
            .append(true)
            .open(&spec.log)
            .with_context(|| format!("cannot open log file {}", spec.log.display()))?;
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if spec.detached {
            command.process_group(0);
            die_with_parent(&mut command);
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {} ({})", spec.name, spec.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// The process id while it has not been reaped.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|child| child.id() as i32)
    }

    /// Sends a signal (e.g. `libc::SIGTERM`) without waiting.
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on a pid we own and have not reaped yet.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Sends SIGTERM and returns at once (the graceful-shutdown path).
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// SIGKILLs the process and reaps it: the crash path.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `limit` for the process to exit by itself, blocking the thread.
    /// Returns `None` (and leaves the process running) when it did not.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_for(limit, || self.reap())
    }

    /// Waits up to `limit` for the process to exit by itself; true when it did (or had).
    pub async fn wait_exit(&mut self, limit: Duration) -> bool {
        if self.child.is_none() {
            return true;
        }
        wait_until(limit, Duration::from_millis(10), || {
            std::future::ready(self.reap())
        })
        .await
        .is_some()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(
            self.child.as_mut().map(|child| child.try_wait()),
            Some(Ok(None))
        )
    }

    /// The exit status once the process has exited, forgetting it then.
    fn reap(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Asks the kernel to SIGKILL the child when its parent dies (Linux only: the parent-death
/// signal is a Linux `prctl`; elsewhere a SIGKILLed clusterctl leaves its children to be
/// stopped by hand, while every other exit path still stops them through `Drop`).
///
/// The signal fires when the *thread* that forked exits, not the process; clusterctl only
/// spawns from the main thread and tokio's worker threads, which live as long as it does.
/// Never spawn a detached child from `spawn_blocking`, whose threads retire after a few idle
/// seconds.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: runs between fork and exec and only calls the async-signal-safe
    // prctl(2), getppid(2) and _exit(2).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl ran: then nobody would
            // ever send the signal.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}

/// Path of a binary built from this workspace, e.g. `workspace_bin("cluster-app")`.
///
/// Integration tests run from `target/<profile>/deps/`; the workspace's binaries
/// sit one level up. `cargo test --workspace` / `cargo nextest run --workspace`
/// build every member's binaries before running tests, so they are there.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("path of the running test binary");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}
