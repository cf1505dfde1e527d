//! `cluster-app`: run a node, or probe one.
//!
//! Exit codes: 0 after a graceful shutdown, 2 for bad configuration (one line
//! on stderr), 1 when the node cannot start or stops on an error.

use std::process::ExitCode;

use clap::Parser;

use cluster_app::configuration::{Cli, Command, NodeArgs, Settings};
use cluster_app::probe;
use cluster_app::startup::Application;

const CONFIG_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print to stdout and exit 0.
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) => {
            eprintln!(
                "cluster-app: invalid configuration: {}",
                first_line_of(&err)
            );
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    match cli.command {
        Some(Command::Probe { url }) => probe::run(url, &cli.node.listen_addr),
        None => serve(cli.node),
    }
}

fn serve(args: NodeArgs) -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // rediss:// goes through rustls, which needs a process-wide crypto
    // provider; installing fails only if one is there already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let settings = match Settings::try_from(args) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("cluster-app: invalid configuration: {err}");
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    if settings.session_key_generated {
        log::warn!(
            "*** --dev: using a random SESSION_KEY made up at start. No other node can read this \
             node's session cookies, and every session is lost when it restarts. Never use --dev \
             for more than one node. ***"
        );
    }
    let result = actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings)
            .await
            .map_err(|err| err.to_string())?;
        app.run_until_stopped()
            .await
            .map_err(|err| format!("server error: {err}"))
    });
    match result {
        Ok(()) => {
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("cluster-app: {message}");
            ExitCode::FAILURE
        }
    }
}

/// clap renders usage hints after the message; one line is enough here.
fn first_line_of(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let line = rendered.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}
