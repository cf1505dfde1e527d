//! Child processes that cannot outlive the test that started them.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

/// A child process that is SIGKILLed and reaped when this guard is dropped,
/// on every exit path of a test, panics included.
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
}

impl ChildGuard {
    /// Spawns `command`; `name` is used in panic messages.
    pub fn spawn(name: impl Into<String>, command: &mut Command) -> ChildGuard {
        let name = name.into();
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ChildGuard {
            name,
            child: Some(child),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// Sends a signal (e.g. `libc::SIGTERM`) without waiting.
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on a pid we own and have not reaped yet.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit by itself, up to `limit`.
    /// Returns `None` (and leaves the process running) when it did not.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = crate::wait_for(limit, || child.try_wait().ok().flatten())?;
        self.child = None;
        Some(status)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

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
