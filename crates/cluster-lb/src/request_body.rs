//! A client's request body, buffered or streamed, and reading one into memory, bounded in time
//! and in memory.
//!
//! The proxy buffers the body of an idempotent request so the request can be replayed on
//! another backend (see `proxy.rs`); any other request's body is streamed (`streamed_body.rs`,
//! under the same deadlines and size limit but outside the budget), since such a request is
//! never re-sent once any of it was sent. [`RequestBody`] is either, and hands each attempt the
//! body it may send.
//!
//! A buffered body is an easy target: a client can send a body a byte every few seconds, or
//! stop one byte short of its Content-Length, and hold the memory and the connection for as
//! long as it likes. So reading a body has a total deadline and an idle deadline between two
//! chunks (either expired: 408), a size limit per request (413), and every body being buffered
//! draws on one [`BodyBudget`] shared by all connections and workers: when the budget is spent
//! a new body is refused with 503 and `Retry-After` rather than 413, because the request itself
//! is fine and the balancer is the one short of room. The bytes stay reserved until the request
//! (with its buffered body) is dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Incoming};
use tokio::time::Instant;

use crate::body_limits::{BodyError, BodyLimits};
use crate::streamed_body::{StreamProgress, StreamedBody};
use crate::upstream::UpstreamBody;

/// The bytes all buffered request bodies may take together.
#[derive(Debug)]
pub struct BodyBudget {
    capacity: usize,
    used: AtomicUsize,
}

impl BodyBudget {
    pub fn new(capacity: usize) -> Arc<BodyBudget> {
        Arc::new(BodyBudget {
            capacity,
            used: AtomicUsize::new(0),
        })
    }

    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|&total| total <= self.capacity)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Bytes taken from the budget, given back when dropped.
#[derive(Debug)]
struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl Reservation {
    /// Makes the reservation at least `bytes` large; false when the budget cannot cover it.
    fn grow_to(&mut self, bytes: usize) -> bool {
        if bytes <= self.bytes {
            return true;
        }
        if !self.budget.take(bytes - self.bytes) {
            return false;
        }
        self.bytes = bytes;
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// A whole request body in memory, holding its share of the budget.
#[derive(Debug)]
pub struct BufferedBody {
    pub bytes: Bytes,
    _reservation: Reservation,
}

/// The body of a request being proxied.
pub enum RequestBody {
    /// Held whole in memory: every attempt sends a copy.
    Buffered(BufferedBody),
    /// Streamed from the client: only one attempt can send it. `body` is `None` once an attempt
    /// took it and did not give it back unsent.
    Streamed {
        body: Option<StreamedBody>,
        progress: Arc<StreamProgress>,
    },
}

impl RequestBody {
    pub fn streamed(incoming: Incoming, limits: BodyLimits) -> RequestBody {
        let (body, progress) = StreamedBody::new(incoming, limits);
        RequestBody::Streamed {
            body: Some(body),
            progress,
        }
    }

    pub fn is_streamed(&self) -> bool {
        matches!(self, RequestBody::Streamed { .. })
    }

    /// The body for the next attempt; `None` when a streamed body has already left.
    pub fn for_attempt(&mut self) -> Option<UpstreamBody> {
        match self {
            RequestBody::Buffered(buffered) => {
                Some(Either::Left(Full::new(buffered.bytes.clone())))
            }
            RequestBody::Streamed { body, .. } => body.take().map(Either::Right),
        }
    }

    /// Takes back the body of an attempt that sent none of it, so the next attempt can.
    pub fn put_back(&mut self, unsent: UpstreamBody) {
        if let (RequestBody::Streamed { body, .. }, Either::Right(streamed)) = (self, unsent) {
            *body = Some(streamed);
        }
    }

    /// Could the request be sent again? Not once a streamed body has left, whole or in part.
    pub fn is_replayable(&self) -> bool {
        match self {
            RequestBody::Buffered(_) => true,
            RequestBody::Streamed { body, .. } => body.is_some(),
        }
    }

    /// Why a streamed body broke off (the client's doing, not the backend's), if it did.
    pub fn failure(&self) -> Option<BodyError> {
        match self {
            RequestBody::Buffered(_) => None,
            RequestBody::Streamed { progress, .. } => progress.failure(),
        }
    }

    /// Has the whole body been handed to the backend's connection? A connection whose request
    /// was still being written when the response came is left mid-message.
    pub fn is_sent(&self) -> bool {
        match self {
            RequestBody::Buffered(_) => true,
            RequestBody::Streamed { progress, .. } => progress.is_sent(),
        }
    }
}

/// Reads `incoming` to its end within `limits`, drawing on `budget` as bytes arrive. Not at
/// once for a declared Content-Length: then a few connections that only declare large bodies
/// would shut every upload out for free; this way the budget costs what it protects.
pub async fn read(
    mut incoming: Incoming,
    limits: BodyLimits,
    budget: &Arc<BodyBudget>,
) -> Result<BufferedBody, BodyError> {
    let declared = incoming.size_hint().exact().unwrap_or(0);
    if declared > limits.max_bytes as u64 {
        return Err(BodyError::TooLarge);
    }
    let mut reservation = Reservation {
        budget: Arc::clone(budget),
        bytes: 0,
    };
    let deadline = Instant::now() + limits.timeout;
    // Address space only: pages are touched, and count, as the bytes arrive.
    let mut buffer = BytesMut::with_capacity(declared as usize);
    loop {
        let next_chunk_by = deadline.min(Instant::now() + limits.idle_timeout);
        let frame = match tokio::time::timeout_at(next_chunk_by, incoming.frame()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(BodyError::Unreadable),
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers are dropped: the backends never use them.
        if let Ok(data) = frame.into_data() {
            let total = buffer.len() + data.len();
            if total > limits.max_bytes {
                return Err(BodyError::TooLarge);
            }
            if !reservation.grow_to(total) {
                return Err(BodyError::OverBudget);
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(BufferedBody {
        bytes: buffer.freeze(),
        _reservation: reservation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_within_the_budget_and_give_their_bytes_back() {
        let budget = BodyBudget::new(100);
        let mut first = Reservation {
            budget: Arc::clone(&budget),
            bytes: 0,
        };
        assert!(first.grow_to(60));
        assert!(first.grow_to(40), "shrinking keeps what is held");
        let mut second = Reservation {
            budget: Arc::clone(&budget),
            bytes: 0,
        };
        assert!(!second.grow_to(41), "60 + 41 is over 100");
        assert!(second.grow_to(40));
        assert_eq!(budget.used.load(Ordering::Relaxed), 100);
        drop(first);
        assert_eq!(budget.used.load(Ordering::Relaxed), 40);
        drop(second);
        assert_eq!(budget.used.load(Ordering::Relaxed), 0);
    }
}
