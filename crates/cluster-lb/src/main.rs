//! The `cluster-lb` binary: parse and validate configuration, bind, run until SIGTERM/SIGINT.
//!
//! Exit status: 0 after a clean shutdown, 2 for a configuration mistake (one line on stderr),
//! 1 when a listener cannot be bound. `cluster-lb probe` exits 0/1 for container healthchecks.

use std::process::ExitCode;

use clap::Parser;
use cluster_lb::config::{Cli, Command, Settings, DEFAULT_ADMIN_LISTEN};
use cluster_lb::{probe, shutdown};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let rendered = e.render().to_string();
            let first_line = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "cluster-lb: {} (see --help)",
                first_line.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();

    if let Some(Command::Probe { url }) = &cli.command {
        let url = url.clone().unwrap_or_else(|| {
            probe::default_url(cli.settings.admin_listen.unwrap_or(DEFAULT_ADMIN_LISTEN))
        });
        return run_probe(&url);
    }

    let settings = match Settings::from_cli(&cli) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("cluster-lb: {e}");
            return ExitCode::from(2);
        }
    };
    let workers = settings
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut backends: Vec<String> = settings.backends.iter().map(|b| b.to_string()).collect();
    backends.extend(
        settings
            .discovery
            .targets
            .iter()
            .map(|target| format!("dns:{target}")),
    );
    log::info!(
        "cluster-lb listening on {} (admin {}), {:?} over [{}], {workers} workers",
        settings.listen,
        settings.admin_listen,
        settings.proxy.algorithm,
        backends.join(", ")
    );
    if backends.is_empty() {
        log::warn!(
            "no backends configured: every request gets 503 until one is added (POST /backends)"
        );
    }
    match cluster_lb::load_balancer::run_per_core(settings, workers, shutdown::signal) {
        Ok(()) => {
            log::info!("cluster-lb stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cluster-lb: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_probe(url: &str) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cluster-lb probe: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(probe::probe(url)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("cluster-lb probe: {reason}");
            ExitCode::FAILURE
        }
    }
}
