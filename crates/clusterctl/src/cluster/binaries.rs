//! Where the programs of a cluster come from.
//!
//! `cargo build` puts `clusterctl`, `cluster-app` and `cluster-lb` in the same
//! target directory, so the siblings of the running executable are the natural
//! default; `--bin-dir` overrides that and `redis-server` comes from `PATH`
//! unless `--redis-bin` names it.

use std::path::{Path, PathBuf};

use anyhow::bail;

/// Paths of the programs a cluster runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub node: PathBuf,
    pub lb: PathBuf,
    pub redis: Option<PathBuf>,
    /// `redis-sentinel`, looked up only for `--redis sentinel`.
    pub sentinel: Option<PathBuf>,
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
        Ok(Binaries {
            node,
            lb,
            redis,
            sentinel: None,
        })
    }

    /// Also resolves `redis-sentinel` (`--redis-sentinel-bin`, else `PATH`), for
    /// `--redis sentinel`.
    pub fn with_sentinel(mut self, sentinel_bin: Option<&Path>) -> anyhow::Result<Binaries> {
        if let Some(path) = sentinel_bin {
            if !path.is_file() {
                bail!("--redis-sentinel-bin {} does not exist", path.display());
            }
            self.sentinel = Some(path.to_path_buf());
            return Ok(self);
        }
        match on_path("redis-sentinel") {
            Some(path) => {
                self.sentinel = Some(path);
                Ok(self)
            }
            None => bail!(
                "redis-sentinel not found on PATH: `apt-get install redis-sentinel`, or pass --redis-sentinel-bin"
            ),
        }
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
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
    match on_path("redis-server") {
        Some(path) => Ok(path),
        None => bail!(
            "redis-server not found on PATH: `apt-get install redis-server`, or pass --redis-url for an existing Redis"
        ),
    }
}
