//! Response bodies from an upstream: the stall-bounded body handed to
//! callers, and bounded buffering for the small documents wharf reads whole.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::concurrency::Permit;
use super::UpstreamError;

/// An upstream response body whose every wait for the next frame is bounded
/// by the upstream's `idle_timeout`; a stall ends the body with
/// [`UpstreamError::Timeout`]. Only time spent waiting on the upstream counts,
/// not time the caller takes between polls.
///
/// Errors are `UpstreamError`s, so a caller teeing the body to many clients
/// can clone the one failure to all of them.
///
/// The body holds its request's turn under `max_concurrent_requests` until
/// it is dropped: a blob being streamed counts against the cap to its end.
pub(crate) struct ResponseBody {
    inner: Incoming,
    /// None only for a body read while its request's turn is held elsewhere.
    _permit: Option<Permit>,
    idle_timeout: Duration,
    /// Armed when a poll finds no frame ready; reset by the next frame.
    idle: Pin<Box<Sleep>>,
    waiting: bool,
    timed_out: bool,
}

impl ResponseBody {
    /// The body of a response from another node of the cluster (which
    /// relays its upstream's bytes): no upstream turn held, the same
    /// `idle_timeout` between frames.
    pub(crate) fn relayed(inner: Incoming, idle_timeout: Duration) -> ResponseBody {
        ResponseBody::new(inner, idle_timeout, None)
    }

    pub(super) fn new(inner: Incoming, idle_timeout: Duration, permit: Option<Permit>) -> ResponseBody {
        ResponseBody {
            inner,
            _permit: permit,
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            waiting: false,
            timed_out: false,
        }
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").field("size_hint", &self.inner.size_hint()).finish_non_exhaustive()
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = self.get_mut();
        if this.timed_out {
            return Poll::Ready(Some(Err(UpstreamError::Timeout)));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.waiting = false;
                Poll::Ready(Some(Err(body_error(&e))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    this.idle.as_mut().reset(Instant::now() + this.idle_timeout);
                }
                match this.idle.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.timed_out = true;
                        Poll::Ready(Some(Err(UpstreamError::Timeout)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        !self.timed_out && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn body_error(e: &hyper::Error) -> UpstreamError {
    if e.is_parse() {
        UpstreamError::Protocol(format!("malformed response body: {e}"))
    } else {
        UpstreamError::Connect(format!("connection lost while reading the response body: {e}"))
    }
}

/// Reads a whole body, refusing one longer than `limit` bytes: early from its
/// declared length, else as soon as the bytes read pass the limit.
pub(super) async fn read_to_limit(mut body: ResponseBody, limit: usize, what: &str) -> Result<Bytes, UpstreamError> {
    let too_large = || UpstreamError::Protocol(format!("{what} is larger than {limit} bytes"));
    let declared = body.size_hint().lower();
    if declared > limit as u64 {
        return Err(too_large());
    }
    // `declared <= limit`, so the conversion cannot truncate.
    let mut buf = BytesMut::with_capacity(usize::try_from(declared).unwrap_or(limit));
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if buf.len() + data.len() > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}
