//! The scenarios that prove the design, one file each.
//!
//! A scenario drives the cluster into one situation (a node killed, Redis
//! restarted...), measures what users would have seen, and returns its own
//! figures plus a list of [`Check`](crate::scenario_result::Check)s: what was
//! expected, what happened, and whether that passes. The report shows all three, so a failure explains
//! itself.

pub mod continuity;
pub mod lost_updates;
pub mod node_kill;
pub mod redis_blackhole;
pub mod redis_primary_failure;
pub mod redis_restart;
pub mod restart;
pub mod rolling_restart;
pub mod shared_key;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::{Cluster, CLIENT_TIMEOUT};
use crate::load::{LoadPlan, LoadRun, Mix};
use crate::progress::Progress;
use crate::scenario_result::{ScenarioOutcome, ScenarioResult};
use crate::session::Session;

/// How hard and how long scenarios push.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Requests per second of the background load.
    pub rate: u32,
    /// How long each steady stretch of load lasts (before a fault, after it).
    pub steady: Duration,
}

impl Pace {
    /// `--quick`: enough requests to see a failure, done in seconds.
    pub const QUICK: Pace = Pace {
        rate: 60,
        steady: Duration::from_millis(1500),
    };
    pub const FULL: Pace = Pace {
        rate: 200,
        steady: Duration::from_secs(5),
    };
}

/// What every scenario gets: the cluster, the pace, a place to say what it does.
pub struct Context<'a> {
    pub cluster: &'a mut Cluster,
    pub pace: Pace,
    pub progress: &'a Progress,
}

impl Context<'_> {
    pub fn lb_url(&self) -> String {
        self.cluster.lb.url()
    }

    /// Logs in `count` users through the LB and returns their cookies.
    pub async fn login_users(&self, prefix: &str, count: usize) -> anyhow::Result<Vec<Session>> {
        let mut sessions = Vec::with_capacity(count);
        for index in 1..=count {
            let (session, _) = Session::login(
                &self.cluster.http,
                &self.lb_url(),
                &format!("{prefix}{index}"),
            )
            .await?;
            sessions.push(session);
        }
        Ok(sessions)
    }

    /// Starts the mixed load (90% reads, 10% writes) through the LB for these users,
    /// bounded by `max_duration`.
    pub fn start_load(&self, sessions: &[Session], max_duration: Duration) -> LoadRun {
        let plan = LoadPlan {
            base_url: self.lb_url(),
            rate_per_sec: self.pace.rate,
            max_duration,
            cookies: sessions
                .iter()
                .filter_map(|s| s.cookie().map(str::to_string))
                .collect(),
            mix: Mix::READS_AND_WRITES,
        };
        LoadRun::start(self.cluster.http.clone(), plan)
    }
}

/// How long a load run may wait for requests in flight after it stops sending.
/// Above the client timeout, so a request only stays in flight if it hung.
pub const GRACE: Duration = CLIENT_TIMEOUT.saturating_add(Duration::from_millis(500));

/// Runs one scenario with progress output and turns any error into a failed result.
pub async fn run<F, Fut>(
    progress: &Progress,
    name: &str,
    scenario: Fut,
) -> (ScenarioResult, Option<F>)
where
    F: Serialize + Clone,
    Fut: std::future::Future<Output = anyhow::Result<ScenarioOutcome<F>>>,
{
    progress.begin(name);
    let started = Instant::now();
    let (result, figures) = match scenario.await {
        Ok(outcome) => {
            let figures = outcome.figures.clone();
            (outcome.into_result(name, started.elapsed()), Some(figures))
        }
        Err(error) => (
            ScenarioResult::errored(name, &error, started.elapsed()),
            None,
        ),
    };
    progress.end(name, result.status, &result.summary);
    (result, figures)
}

/// Where the failures of a load run came from, as a note (none: no note).
pub fn failure_notes(load: &crate::load::LoadSummary) -> Vec<String> {
    if load.failures.is_empty() {
        return Vec::new();
    }
    let parts: Vec<String> = load
        .failures
        .iter()
        .map(|(what, n)| format!("{n} x {what}"))
        .collect();
    vec![format!("failures: {}", parts.join(", "))]
}

/// Milliseconds with one decimal, for summaries.
pub fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}
