//! Peak-EWMA latency: the load signal behind power-of-two-choices.
//!
//! A plain average hides a backend that just became slow; peak-EWMA jumps to any sample above
//! the current estimate at once and only decays slowly back down while further samples arrive,
//! so a backend that starts to struggle loses traffic immediately (the idea of Finagle and
//! Linkerd's balancers).
//!
//! Once no sample has arrived for `HOLD`, the estimate fades much faster, towards zero. An
//! estimate above its peers' loses every comparison, so no sample will come to correct it: left
//! to the slow decay, one cold first answer after a restart (new connections to the node, and
//! from the node to Redis) kept a re-enabled node out of every pair for ~20 s at a light load.
//! Fading fast, an unconfirmed peak gets the backend tried again within a second or two; if it
//! really is slow, that one answer raises the estimate again at once. A backend that keeps
//! getting requests (one every `HOLD` is enough) keeps the slow decay.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Time constant of the decay while samples arrive: after `DECAY` of faster answers, a peak
/// still weighs 1/e.
const DECAY: Duration = Duration::from_secs(5);

/// How long an estimate is trusted without a new sample before it starts to fade.
const HOLD: Duration = Duration::from_millis(500);

/// Time constant of the fade after `HOLD`: with peers at 2 ms, an unconfirmed 100 ms peak is
/// below them ~1.4 s after its sample, a 500 ms failure penalty after ~1.8 s.
const IDLE_FADE: Duration = Duration::from_millis(250);

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
        let elapsed = now - state.stamp;
        let current = state.nanos * fade_weight(elapsed);
        if sample > current {
            state.nanos = sample;
        } else {
            state.nanos = current + sample * (1.0 - decay_weight(elapsed));
        }
        state.stamp = now;
    }

    /// Forgets the history and starts again from `estimate`.
    ///
    /// Used when a backend joins or comes back up. A returning backend's estimate still
    /// carries the failure penalties charged while it was dying; left alone they would keep it
    /// out of every pair until they faded, up to ~2 s after its last failure. Linkerd and
    /// Finagle start a new endpoint afresh
    /// the same way; the caller picks the starting point (see `BackendSet::typical_latency`).
    pub fn restart_at(&self, estimate: Duration) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.nanos = estimate.as_nanos() as f64;
        state.stamp = Instant::now();
    }

    /// The current estimate in nanoseconds, faded for the time since the last sample.
    pub fn nanos(&self) -> f64 {
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.nanos * fade_weight(state.stamp.elapsed())
    }
}

impl Default for PeakEwma {
    fn default() -> Self {
        PeakEwma::new()
    }
}

/// How much of a peak survives `elapsed` of further samples.
fn decay_weight(elapsed: Duration) -> f64 {
    (-elapsed.as_secs_f64() / DECAY.as_secs_f64()).exp()
}

/// How much of the estimate survives `elapsed` without a sample: the slow decay, and past
/// `HOLD` the fast fade on top.
fn fade_weight(elapsed: Duration) -> f64 {
    let unconfirmed = elapsed.saturating_sub(HOLD);
    decay_weight(elapsed) * (-unconfirmed.as_secs_f64() / IDLE_FADE.as_secs_f64()).exp()
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
    fn an_unconfirmed_peak_fades_within_seconds() {
        let ewma = PeakEwma::new();
        ewma.observe(Duration::from_millis(100));
        let started = Instant::now();
        let faded = loop {
            if ewma.nanos() < 2e6 {
                break true;
            }
            if started.elapsed() > Duration::from_secs(3) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(
            faded,
            "no sample confirmed the peak, yet it still weighs {} ms after 3 s",
            ewma.nanos() / 1e6
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
