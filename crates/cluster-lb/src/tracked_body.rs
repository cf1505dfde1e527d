//! A backend's response body on its way to the client.
//!
//! A proxied response streams the backend's body straight through; the body also carries the
//! backend's in-flight guard, so a request counts as in flight until its last byte has been
//! passed on (what least-connections and the load score need), not just until the head, and
//! the upstream connection's lease, which returns the connection to the pool once the body has
//! been read to the end.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::backend::InFlight;
use crate::body::ProxyBody;
use crate::upstream::Lease;

/// A backend's response body, holding the backend's in-flight count until it ends, and the
/// connection it arrives on, which goes back to the pool once the body has been read to the end.
pub struct TrackedBody {
    inner: Incoming,
    _in_flight: InFlight,
    lease: Option<Lease>,
}

impl TrackedBody {
    /// `lease` is `None` for a connection that will not carry HTTP again (upgraded or closing).
    pub fn boxed(inner: Incoming, in_flight: InFlight, lease: Option<Lease>) -> ProxyBody {
        TrackedBody {
            inner,
            _in_flight: in_flight,
            lease,
        }
        .boxed()
    }

    fn give_back_connection(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.give_back();
        }
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        // A body the client did not read to the end leaves the connection mid-message: the
        // lease is dropped with it and the connection closes.
        if self.inner.is_end_stream() {
            self.give_back_connection();
        }
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) {
            self.give_back_connection();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
