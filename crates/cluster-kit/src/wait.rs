//! Polling with a deadline: the one way the harness and the tests wait for anything.
//!
//! Every wait has a limit, so a component that never becomes ready turns into a clear error
//! instead of a hung run, and no test sleeps a fixed time and hopes. The blocking form serves
//! plain threads and the synchronous tests, the async form serves tokio code.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 10 ms until it returns `Some`, or gives up after `limit`.
pub fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Awaits `check` every `every` until it returns `Some`, for at most `limit`.
pub async fn wait_until<T, F, Fut>(limit: Duration, every: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}
