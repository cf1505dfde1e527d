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
mod controls;
mod demo;
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

use cli::{Cli, Command};
use cluster::{Binaries, ClusterOptions};

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
            let binaries = Binaries::locate(
                args.programs.bin_dir.as_deref(),
                args.programs.redis_bin.as_deref(),
                args.redis_url.is_none(),
            )?;
            up::up(ClusterOptions {
                nodes: usize::from(args.nodes),
                lb_port: Some(args.lb_port),
                redis_url: args.redis_url,
                binaries,
                wrong_key_on: None,
            })
            .await
        }
        Command::Verify(args) => {
            let binaries = Binaries::locate(
                args.programs.bin_dir.as_deref(),
                args.programs.redis_bin.as_deref(),
                true,
            )?;
            verify::verify(verify::VerifyOptions {
                cluster: ClusterOptions {
                    nodes: usize::from(args.nodes),
                    lb_port: None,
                    redis_url: None,
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
            let binaries = Binaries::locate(
                args.programs.bin_dir.as_deref(),
                args.programs.redis_bin.as_deref(),
                true,
            )?;
            demo::demo(ClusterOptions {
                nodes: 3,
                lb_port: None,
                redis_url: None,
                binaries,
                wrong_key_on: None,
            })
            .await
        }
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
