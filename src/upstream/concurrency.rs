//! The cap on requests in flight to one upstream (`max_concurrent_requests`),
//! so that a burst of clients cannot get wharf banned by a registry such as
//! Docker Hub. A request holds a [`Permit`] for its whole exchange: from
//! before it is sent until its response is dropped, which for a blob is
//! when its streamed body ends or is dropped. Requests over the cap wait
//! their turn, in arrival order, for at most the upstream's
//! `response_timeout`.

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::UpstreamError;

pub(super) struct Concurrency {
    /// Fair (first come, first served): a waiting request is not overtaken
    /// by a later one.
    semaphore: Arc<Semaphore>,
    wait_limit: Duration,
    /// `wharf_upstream_requests_waiting` for this upstream.
    waiting: IntGauge,
}

/// One turn to talk to the upstream; the turn ends when this is dropped.
#[derive(Debug)]
pub(super) struct Permit {
    _permit: OwnedSemaphorePermit,
}

impl Concurrency {
    pub(super) fn new(max: usize, wait_limit: Duration, waiting: IntGauge) -> Concurrency {
        // Validation keeps `max` at least 1 and within u32, far below
        // tokio's MAX_PERMITS; clamping keeps a bad caller from a panic.
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Concurrency { semaphore: Arc::new(Semaphore::new(max)), wait_limit, waiting }
    }

    /// A turn, at once if one is free, else after waiting (counted in the
    /// gauge) for at most the wait limit: past it, [`UpstreamError::Saturated`].
    pub(super) async fn acquire(&self) -> Result<Permit, UpstreamError> {
        if let Ok(permit) = self.semaphore.clone().try_acquire_owned() {
            return Ok(Permit { _permit: permit });
        }
        let _waiting = Waiting::start(&self.waiting);
        match tokio::time::timeout(self.wait_limit, self.semaphore.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Permit { _permit: permit }),
            // The semaphore is never closed; if it were, no turn would come.
            Ok(Err(_)) | Err(_) => Err(UpstreamError::Saturated),
        }
    }

    #[cfg(test)]
    pub(super) fn available(&self) -> usize {
        self.semaphore.available_permits()
    }
}

/// Counts one waiting request in the gauge for as long as it lives, so a
/// request abandoned while waiting (its client hung up) is uncounted too.
struct Waiting<'a>(&'a IntGauge);

impl<'a> Waiting<'a> {
    fn start(gauge: &'a IntGauge) -> Waiting<'a> {
        gauge.inc();
        Waiting(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use std::pin::pin;

    use futures_util::FutureExt as _;

    use super::*;

    fn cap(max: usize) -> (Concurrency, IntGauge) {
        let gauge = IntGauge::new("waiting", "test").unwrap();
        (Concurrency::new(max, Duration::from_secs(30), gauge.clone()), gauge)
    }

    #[tokio::test(start_paused = true)]
    async fn requests_over_the_cap_wait_in_order_and_are_counted() {
        let (c, waiting) = cap(2);
        let first = c.acquire().await.unwrap();
        let _second = c.acquire().await.unwrap();
        assert_eq!(waiting.get(), 0, "a free turn involves no waiting");
        let mut third = pin!(c.acquire());
        let mut fourth = pin!(c.acquire());
        assert!(third.as_mut().now_or_never().is_none());
        assert!(fourth.as_mut().now_or_never().is_none());
        assert_eq!(waiting.get(), 2);
        drop(first);
        // The turn goes to the request that waited longest.
        assert!(fourth.as_mut().now_or_never().is_none());
        let _third = third.await.unwrap();
        assert_eq!(waiting.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_limit_is_saturated_and_leaves_the_gauge() {
        let (c, waiting) = cap(1);
        let _held = c.acquire().await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(c.acquire().await.unwrap_err(), UpstreamError::Saturated);
        assert_eq!(started.elapsed(), Duration::from_secs(30), "waited the whole limit, not less");
        assert_eq!(waiting.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gives_up_is_uncounted() {
        let (c, waiting) = cap(1);
        let held = c.acquire().await.unwrap();
        {
            let mut abandoned = pin!(c.acquire());
            assert!(abandoned.as_mut().now_or_never().is_none());
            assert_eq!(waiting.get(), 1);
        }
        assert_eq!(waiting.get(), 0);
        drop(held);
        assert_eq!(c.available(), 1, "an abandoned wait takes no turn");
    }
}
