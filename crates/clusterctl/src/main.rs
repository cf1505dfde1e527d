//! clusterctl: run a local cluster of `cluster-app` nodes behind `cluster-lb`
//! with a shared Redis, and prove that sessions survive what clusters go
//! through (crashes, deploys, Redis failures).
//!
//! `main` only parses the command line, picks the command and turns its result
//! into an exit status: 0 all passed, 1 a scenario failed, 2 bad setup, 130
//! interrupted. Stopping the children on Ctrl-C needs no code here: the
//! command's future is dropped, and with it the cluster it owns.

mod cli;
mod cluster;
mod compare;
mod controls;
mod demo;
mod demo_redis_failover;
mod demo_stores;
mod load;
mod lost_updates_figures;
mod progress;
mod report;
mod scale;
mod scenario_result;
mod scenarios;
mod session;
mod up;
mod verify;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, Programs};
use cluster::{Binaries, ClusterOptions, RedisMode, SessionDesign};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("clusterctl: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = run(cli) => Some(result),
            () = shutdown_signal() => None,
        }
    });
    match outcome {
        Some(Ok(true)) => ExitCode::SUCCESS,
        Some(Ok(false)) => ExitCode::from(1),
        Some(Err(error)) => {
            eprintln!("clusterctl: {error:#}");
            ExitCode::from(2)
        }
        None => {
            eprintln!("clusterctl: interrupted, every child process stopped");
            ExitCode::from(130)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Up(args) => {
            let mode = args.redis.mode;
            if mode == RedisMode::Sentinel && args.redis_url.is_some() {
                anyhow::bail!("--redis sentinel starts its own Redis: drop --redis-url (or CLUSTERCTL_REDIS_URL)");
            }
            if mode == RedisMode::Single && args.min_replicas_ack > 0 {
                anyhow::bail!("--min-replicas-ack needs --redis sentinel: one redis-server has no replica to wait for");
            }
            let binaries = locate(&args.programs, mode, args.redis_url.is_none())?;
            up::up(ClusterOptions {
                nodes: usize::from(args.nodes),
                lb_port: Some(args.lb_port),
                redis_url: args.redis_url,
                redis_mode: mode,
                min_replicas_ack: args.min_replicas_ack,
                binaries,
                wrong_key_on: None,
            })
            .await
        }
        Command::Verify(args) => {
            let binaries = locate(&args.programs, args.redis.mode, true)?;
            verify::verify(verify::VerifyOptions {
                cluster: ClusterOptions {
                    nodes: usize::from(args.nodes),
                    lb_port: None,
                    redis_url: None,
                    redis_mode: args.redis.mode,
                    min_replicas_ack: 0,
                    binaries,
                    wrong_key_on: args.wrong_key_on,
                },
                report: args.report,
                quick: args.quick,
                scale: args.scale.into_iter().map(usize::from).collect(),
            })
            .await
        }
        Command::Demo(args) => {
            if args.redis.mode == RedisMode::Sentinel && args.store != "redis" {
                anyhow::bail!(
                    "--redis sentinel goes with --store redis: the {} store uses no Redis",
                    args.store
                );
            }
            let binaries = locate(&args.programs, args.redis.mode, true)?;
            let options = ClusterOptions {
                nodes: 3,
                lb_port: None,
                redis_url: None,
                redis_mode: args.redis.mode,
                min_replicas_ack: 0,
                binaries,
                wrong_key_on: None,
            };
            match args.store.as_str() {
                "redis" if !args.sticky => demo::demo(options).await,
                "redis" => anyhow::bail!("--sticky goes with --store memory or cookie"),
                "memory" => {
                    let design = SessionDesign {
                        store: "memory",
                        sticky: args.sticky,
                    };
                    demo_stores::demo_store(options, design).await
                }
                _ => {
                    let design = SessionDesign {
                        store: "cookie",
                        sticky: args.sticky,
                    };
                    demo_stores::demo_store(options, design).await
                }
            }
        }
        Command::Compare(args) => {
            let binaries = Binaries::locate(
                args.programs.bin_dir.as_deref(),
                args.programs.redis_bin.as_deref(),
                true,
            )?;
            compare::compare(compare::CompareOptions {
                cluster: ClusterOptions {
                    nodes: 3,
                    lb_port: None,
                    redis_url: None,
                    redis_mode: RedisMode::Single,
                    min_replicas_ack: 0,
                    binaries,
                    wrong_key_on: None,
                },
                quick: args.quick,
                report: args.report,
            })
            .await
        }
    }
}

/// The programs to run: redis-sentinel too under `--redis sentinel`.
fn locate(programs: &Programs, mode: RedisMode, need_redis: bool) -> anyhow::Result<Binaries> {
    let binaries = Binaries::locate(
        programs.bin_dir.as_deref(),
        programs.redis_bin.as_deref(),
        need_redis,
    )?;
    match mode {
        RedisMode::Single => Ok(binaries),
        RedisMode::Sentinel => binaries.with_sentinel(programs.redis_sentinel_bin.as_deref()),
    }
}

/// Ctrl-C (SIGINT) or SIGTERM, whichever comes first.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
