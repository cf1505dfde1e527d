//! What the harness is doing right now, on stderr.
//!
//! On a terminal a spinner shows the running scenario and its current step;
//! anywhere else (CI logs, pipes) the same events come out as plain lines,
//! because spinner redraws turn a log file into noise.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::scenario_result::Status;

pub struct Progress {
    spinner: Option<ProgressBar>,
}

impl Progress {
    pub fn new() -> Progress {
        let spinner = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Progress { spinner }
    }

    pub fn begin(&self, scenario: &str) {
        match &self.spinner {
            Some(bar) => {
                bar.set_prefix(scenario.to_string());
                bar.set_message("");
            }
            None => eprintln!("[{scenario}] start"),
        }
    }

    /// One step inside the running scenario.
    pub fn step(&self, message: &str) {
        match &self.spinner {
            Some(bar) => bar.set_message(message.to_string()),
            None => eprintln!("  {message}"),
        }
    }

    pub fn end(&self, scenario: &str, status: Status, summary: &str) {
        let line = format!("[{scenario}] {status:?}: {summary}");
        match &self.spinner {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Removes the spinner before the report is printed.
    pub fn finish(&self) {
        if let Some(bar) = &self.spinner {
            bar.finish_and_clear();
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}
