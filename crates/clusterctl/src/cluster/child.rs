//! A child process that never outlives clusterctl.
//!
//! Three layers make sure of it, because each covers a different way to die:
//! `Drop` kills the child when the owning value goes away (normal exit, errors,
//! panics, Ctrl-C handled by `main`); `PR_SET_PDEATHSIG` makes the kernel
//! SIGKILL the child when clusterctl itself is SIGKILLed and no Rust code runs;
//! and a process group of its own keeps a terminal's Ctrl-C away from the
//! children so that clusterctl alone decides the order of shutdown.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Everything needed to start (and restart) the same process again.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// stdout and stderr go here, appended across restarts.
    pub log: PathBuf,
}

/// A running (or stopped) supervised process.
pub struct Supervised {
    spec: ChildSpec,
    child: Option<Child>,
}

impl Supervised {
    pub fn start(spec: ChildSpec) -> anyhow::Result<Supervised> {
        let mut supervised = Supervised { spec, child: None };
        supervised.restart()?;
        Ok(supervised)
    }

    pub fn spec(&self) -> &ChildSpec {
        &self.spec
    }

    /// Sets an environment variable for the next [`Supervised::restart`].
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.spec.env.retain(|(existing, _)| existing != name);
        self.spec.env.push((name.to_string(), value.to_string()));
    }

    /// Starts the process again from its spec (SIGKILLing a previous run first).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.spec.log)
            .with_context(|| format!("cannot open log file {}", self.spec.log.display()))?;
        let mut command = Command::new(&self.spec.program);
        command
            .args(&self.spec.args)
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        die_with_parent(&mut command);
        let child = command.spawn().with_context(|| {
            format!(
                "cannot start {} ({})",
                self.spec.name,
                self.spec.program.display()
            )
        })?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|child| child.id() as i32)
    }

    /// Sends SIGTERM and returns at once (the graceful-shutdown path).
    pub fn terminate(&self) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }

    /// SIGKILLs the process and reaps it: the crash path.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `limit` for the process to exit by itself; true when it did.
    pub async fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.as_mut().map(|child| child.try_wait()) {
                None | Some(Ok(Some(_))) | Some(Err(_)) => {
                    self.child = None;
                    return true;
                }
                Some(Ok(None)) if Instant::now() >= deadline => return false,
                Some(Ok(None)) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(
            self.child.as_mut().map(|child| child.try_wait()),
            Some(Ok(None))
        )
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Asks the kernel to SIGKILL the child when its parent dies.
///
/// The signal fires when the *thread* that forked exits, not the process; the
/// harness only spawns from the main thread and tokio's worker threads, which
/// live as long as clusterctl. Never spawn from `spawn_blocking`, whose threads
/// retire after a few idle seconds.
fn die_with_parent(command: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: runs between fork and exec and only calls the async-signal-safe
    // prctl(2), getppid(2) and _exit(2).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
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
