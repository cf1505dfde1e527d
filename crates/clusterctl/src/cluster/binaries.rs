//! Where the programs of a cluster come from.
//!
//! `cargo build` puts `clusterctl`, `cluster-app` and `cluster-lb` in the same
//! target directory, so the siblings of the running executable are the natural
//! default; `--bin-dir` overrides that and `redis-server` comes from `PATH`
//! unless `--redis-bin` names it.

use std::path::{Path, PathBuf};

use anyhow::bail;

/// Paths of the three programs a cluster runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub node: PathBuf,
    pub lb: PathBuf,
    pub redis: Option<PathBuf>,
}

impl Binaries {
    /// Resolves every program or fails with one line saying what to do.
    /// `redis` is looked up only when `need_redis` (no `--redis-url` given).
    pub fn locate(
        bin_dir: Option<&Path>,
        redis_bin: Option<&Path>,
        need_redis: bool,
    ) -> anyhow::Result<Binaries> {
        let dir = match bin_dir {
            Some(dir) => dir.to_path_buf(),
            None => std::env::current_exe()?
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        let node = sibling(&dir, "cluster-app")?;
        let lb = sibling(&dir, "cluster-lb")?;
        let redis = if need_redis {
            Some(redis_server(redis_bin)?)
        } else {
            None
        };
        Ok(Binaries { node, lb, redis })
    }
}

fn sibling(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{name} not found in {}: run `cargo build --workspace` or pass --bin-dir",
            dir.display()
        );
    }
    Ok(path)
}

fn redis_server(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!("--redis-bin {} does not exist", path.display());
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-server"))
            .find(|candidate| candidate.is_file())
    });
    match found {
        Some(path) => Ok(path),
        None => bail!(
            "redis-server not found on PATH: `apt-get install redis-server`, or pass --redis-url for an existing Redis"
        ),
    }
}
