//! Peak-EWMA latency: the load signal behind power-of-two-choices.
//!
//! A plain average hides a backend that just became slow; peak-EWMA jumps to any sample above
//! the current estimate at once and only decays slowly back down, so a backend that starts to
//! struggle loses traffic immediately (the idea of Finagle and Linkerd's balancers). The estimate
//! also decays towards zero while no samples arrive, so a backend that was penalised gets tried
//! again after a while instead of being starved forever.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Time constant of the decay: after `DECAY` without samples the estimate is down to 1/e.
const DECAY: Duration = Duration::from_secs(5);

/// Estimate of a backend before its first response when it has no peers to compare with.
pub const INITIAL: Duration = Duration::from_millis(1);

pub struct PeakEwma {
    state: Mutex<Estimate>,
}

struct Estimate {
    nanos: f64,
    stamp: Instant,
}

impl PeakEwma {
    pub fn new() -> PeakEwma {
        PeakEwma {
            state: Mutex::new(Estimate {
                nanos: INITIAL.as_nanos() as f64,
                stamp: Instant::now(),
            }),
        }
    }

    /// Folds in one observed latency (or a failure penalty).
    pub fn observe(&self, sample: Duration) {
        let now = Instant::now();
        let sample = sample.as_nanos() as f64;
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if sample > state.nanos {
            state.nanos = sample;
        } else {
            let weight = decay_weight(now - state.stamp);
            state.nanos = state.nanos * weight + sample * (1.0 - weight);
        }
        state.stamp = now;
    }

    /// Forgets the history and starts again from `estimate`.
    ///
    /// Used when a backend joins or comes back up. A returning backend's estimate still
    /// carries the failure penalties charged while it was dying; left alone they would decay
    /// over ~20 s, during which power-of-two-choices always prefers the other backend of a pair
    /// and the returning node gets no traffic. Linkerd and Finagle start a new endpoint afresh
    /// the same way; the caller picks the starting point (see `BackendSet::typical_latency`).
    pub fn restart_at(&self, estimate: Duration) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.nanos = estimate.as_nanos() as f64;
        state.stamp = Instant::now();
    }

    /// The current estimate in nanoseconds, decayed for the time since the last sample.
    pub fn nanos(&self) -> f64 {
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.nanos * decay_weight(state.stamp.elapsed())
    }
}

impl Default for PeakEwma {
    fn default() -> Self {
        PeakEwma::new()
    }
}

fn decay_weight(elapsed: Duration) -> f64 {
    (-elapsed.as_secs_f64() / DECAY.as_secs_f64()).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_to_a_peak_and_decays_slowly() {
        let ewma = PeakEwma::new();
        ewma.observe(Duration::from_millis(100));
        assert!(
            ewma.nanos() > 99e6,
            "a sample above the estimate is taken at once"
        );
        for _ in 0..10 {
            ewma.observe(Duration::from_millis(1));
        }
        assert!(
            ewma.nanos() > 50e6,
            "fast samples right after a peak barely move it"
        );
    }

    #[test]
    fn restarting_forgets_the_penalties() {
        let ewma = PeakEwma::new();
        ewma.observe(Duration::from_millis(500));
        ewma.restart_at(Duration::from_micros(300));
        assert!(ewma.nanos() <= 300e3);
    }
}
