//! A client's request body streamed to the backend as it arrives, under the buffered body's
//! deadlines.
//!
//! A request that is never re-sent once any of it was sent (not idempotent: POST, PATCH, ...)
//! gains nothing from being buffered first (`request_body.rs`): its body goes to the backend
//! chunk by chunk as the client sends it, and takes nothing from the shared body budget. It keeps
//! the other bounds of a buffered body: the whole body within `body_timeout`, no gap between two
//! chunks over `body_idle_timeout`, at most `max_body_bytes`. When one is broken the stream ends
//! in an error: hyper aborts the request and closes the backend's connection, and
//! [`StreamProgress`] tells the proxy why, so the client gets what a buffered body would have
//! got (408, 413 or 400, then the connection closes). If the backend answered before the body
//! was complete, the client already has that answer; the backend's connection is then not
//! reused either way.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::body_limits::{BodyError, BodyLimits};

/// How far a streamed body got, shared between the body (owned by the backend's connection)
/// and the proxy (which answers the client).
#[derive(Debug, Default)]
pub struct StreamProgress {
    state: Mutex<Progress>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Progress {
    #[default]
    Sending,
    /// The last byte was handed to the backend's connection.
    Sent,
    Failed(BodyError),
}

impl StreamProgress {
    /// Why the body broke off, if it did.
    pub fn failure(&self) -> Option<BodyError> {
        match self.get() {
            Progress::Failed(error) => Some(error),
            Progress::Sending | Progress::Sent => None,
        }
    }

    /// Has the whole body been handed to the backend's connection?
    pub fn is_sent(&self) -> bool {
        self.get() == Progress::Sent
    }

    fn get(&self) -> Progress {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, progress: Progress) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = progress;
    }
}

/// The client's body as the upstream request's body, ended with a [`BodyError`] when the client
/// is too slow or sends too much.
pub struct StreamedBody {
    incoming: Incoming,
    max_bytes: usize,
    idle_timeout: Duration,
    /// The whole body must have arrived by then.
    deadline: Instant,
    /// The next chunk must arrive by then: reset after each chunk, never past `deadline`.
    next_chunk_by: Pin<Box<Sleep>>,
    received: usize,
    progress: Arc<StreamProgress>,
}

impl StreamedBody {
    /// Starts the clocks now: the time to reach a backend counts against the client's deadlines
    /// as it would while buffering.
    pub fn new(incoming: Incoming, limits: BodyLimits) -> (StreamedBody, Arc<StreamProgress>) {
        let now = Instant::now();
        let deadline = now + limits.timeout;
        let progress = Arc::new(StreamProgress::default());
        let body = StreamedBody {
            incoming,
            max_bytes: limits.max_bytes,
            idle_timeout: limits.idle_timeout,
            deadline,
            next_chunk_by: Box::pin(tokio::time::sleep_until(
                deadline.min(now + limits.idle_timeout),
            )),
            received: 0,
            progress: Arc::clone(&progress),
        };
        (body, progress)
    }

    fn fail(&self, error: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.progress.set(Progress::Failed(error));
        Poll::Ready(Some(Err(error)))
    }

    fn end(&self) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.progress.set(Progress::Sent);
        Poll::Ready(None)
    }
}

impl Body for StreamedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                // Trailers are dropped, as for a buffered body: the backends never use them.
                let Ok(data) = frame.into_data() else {
                    return this.end();
                };
                this.received += data.len();
                if this.received > this.max_bytes {
                    return this.fail(BodyError::TooLarge);
                }
                let next_chunk_by = this.deadline.min(Instant::now() + this.idle_timeout);
                this.next_chunk_by.as_mut().reset(next_chunk_by);
                if this.incoming.is_end_stream() {
                    // hyper ends the message without polling again.
                    this.progress.set(Progress::Sent);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Err(_))) => this.fail(BodyError::Unreadable),
            Poll::Ready(None) => this.end(),
            Poll::Pending => match this.next_chunk_by.as_mut().poll(cx) {
                Poll::Ready(()) => this.fail(BodyError::Timeout),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    /// The client's: a declared Content-Length is passed on, a chunked body stays chunked.
    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}
