//! Polling with a deadline: the one way the harness waits for anything.
//!
//! Every wait has a limit, so a component that never becomes ready turns into
//! a clear error instead of a hung run.

use std::future::Future;
use std::time::{Duration, Instant};

/// Calls `check` every `every` until it returns `Some`, for at most `limit`.
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
