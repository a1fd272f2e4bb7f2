//! What the server keeps per connection and per client address: how many
//! connections each address holds (the cap), whether a connection has a
//! request in flight and since when it has had none (the header and idle
//! timeouts), and log lines about floods of events, at most one per
//! interval.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use prometheus::IntGauge;
use tokio::time::Instant;

use crate::api::body::{Body, BodyError};
use crate::limits::ip_key;

/// The connections each client address holds open on one port. A std
/// mutex held for one map operation, never across an await: taken once
/// when a connection is accepted and once when it closes.
#[derive(Default)]
pub(super) struct Admission {
    counts: Mutex<HashMap<IpAddr, u32>>,
}

/// One admitted connection; gives its place back when dropped.
pub(super) struct Slot {
    admission: Arc<Admission>,
    key: IpAddr,
    open: IntGauge,
}

impl Admission {
    /// A place for one more connection from `ip` (an IPv6 address counts
    /// under its /64, as the rate limits key it), unless that address holds
    /// `cap` already. The map only has addresses with a connection open.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr, cap: Option<u32>, open: &IntGauge) -> Option<Slot> {
        let key = ip_key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let held = counts.get(&key).copied().unwrap_or(0);
        if cap.is_some_and(|cap| held >= cap) {
            return None;
        }
        counts.insert(key, held + 1);
        open.inc();
        Some(Slot { admission: self.clone(), key, open: open.clone() })
    }

    #[cfg(test)]
    fn held(&self, ip: IpAddr) -> u32 {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).get(&ip_key(ip)).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.admission.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Entry::Occupied(mut held) = counts.entry(self.key) {
            *held.get_mut() -= 1;
            if *held.get() == 0 {
                held.remove();
            }
        }
        self.open.dec();
    }
}

/// Which timeout closed a connection that had no request in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expired {
    /// No whole request head within the header timeout of the accept.
    Header,
    /// No request within the idle timeout of the last response's end.
    Idle,
}

/// Whether a connection has requests in flight, and since when it has had
/// none. Written by each request's [`InFlight`] guard (a few atomic
/// operations and a clock read), read by the connection's own task.
pub(super) struct Activity {
    accepted: Instant,
    in_flight: AtomicUsize,
    /// When the last response ended, in nanoseconds after `accepted`;
    /// [`NEVER`] until the first one has.
    idle_since: AtomicU64,
}

const NEVER: u64 = u64::MAX;

/// A connection with nothing in flight: since when, and which timeout
/// bounds that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Quiet {
    since: Instant,
    bound: Expired,
}

impl Activity {
    /// A connection accepted now: its header timeout starts here, before
    /// any TLS handshake or protocol detection.
    pub(super) fn new() -> Arc<Activity> {
        Arc::new(Activity { accepted: Instant::now(), in_flight: AtomicUsize::new(0), idle_since: AtomicU64::new(NEVER) })
    }

    /// A request has arrived; it is in flight until the guard is dropped
    /// (with its response body, or with the request if it never got one).
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn quiet(&self) -> Option<Quiet> {
        if self.in_flight() > 0 {
            return None;
        }
        Some(match self.idle_since.load(Ordering::Acquire) {
            NEVER => Quiet { since: self.accepted, bound: Expired::Header },
            nanos => Quiet { since: self.accepted + Duration::from_nanos(nanos), bound: Expired::Idle },
        })
    }

    /// Resolves when the connection has had nothing in flight for the
    /// timeout that applies: `header` from the accept until a first
    /// request, `idle` after the end of the last response. Sleeps until
    /// the deadline and looks again, so requests pay nothing for it; a
    /// busy connection is looked at every `min(header, idle)`.
    pub(super) async fn expired(&self, header: Duration, idle: Duration) -> Expired {
        loop {
            let quiet = self.quiet();
            let deadline = match quiet {
                None => Instant::now() + header.min(idle),
                Some(Quiet { since, bound: Expired::Header }) => since + header,
                Some(Quiet { since, bound: Expired::Idle }) => since + idle,
            };
            tokio::time::sleep_until(deadline).await;
            // Expired only if nothing happened meanwhile: a request that
            // came and went moved `since`.
            if let Some(quiet) = quiet.filter(|q| self.quiet() == Some(*q)) {
                return quiet.bound;
            }
        }
    }
}

/// A request in flight on its connection.
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let nanos = u64::try_from(activity.accepted.elapsed().as_nanos()).unwrap_or(NEVER - 1);
        // Written before the count drops, so whoever sees no request in
        // flight sees this end too.
        activity.idle_since.store(nanos, Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until hyper drops it,
/// which it does once the body has ended or the connection is gone. Frames
/// pass through untouched (zero-copy stand-ins included).
pub(super) struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl Tracked {
    pub(super) fn new(body: Body, in_flight: InFlight) -> Tracked {
        Tracked { body, _in_flight: in_flight }
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Counts events that could come by the thousand (failed accepts, refused
/// connections) and says when one may be logged: the first at once, then
/// at most one line per `interval`, carrying how many came since the last.
pub(super) struct Throttle {
    interval: Duration,
    last_line: Option<Instant>,
    unlogged: u64,
}

/// A line is due: `count` events since the last line (this one
/// included), over `window` (since the last line; zero for the first).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Due {
    pub(super) count: u64,
    pub(super) window: Duration,
}

impl Throttle {
    pub(super) fn new(interval: Duration) -> Throttle {
        Throttle { interval, last_line: None, unlogged: 0 }
    }

    /// One more event; `Some` when a line is due for it.
    pub(super) fn note(&mut self) -> Option<Due> {
        self.unlogged += 1;
        self.due()
    }

    /// A line for events counted but not logged yet, if one is due by now
    /// (so a flood that stopped still gets its last line).
    pub(super) fn due(&mut self) -> Option<Due> {
        if self.unlogged == 0 {
            return None;
        }
        let now = Instant::now();
        let window = self.last_line.map(|at| now - at);
        if window.is_some_and(|w| w < self.interval) {
            return None;
        }
        self.last_line = Some(now);
        Some(Due { count: std::mem::take(&mut self.unlogged), window: window.unwrap_or_default() })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn an_address_is_admitted_up_to_the_cap_and_gets_its_place_back() {
        let admission = Arc::new(Admission::default());
        let open = IntGauge::new("open", "open").unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = admission.admit(a, Some(2), &open).unwrap();
        let _second = admission.admit(a, Some(2), &open).unwrap();
        assert!(admission.admit(a, Some(2), &open).is_none(), "a third from the same address");
        let _other = admission.admit(b, Some(2), &open).unwrap();
        assert_eq!(open.get(), 3);
        drop(first);
        assert_eq!((admission.held(a), open.get()), (1, 2));
        assert!(admission.admit(a, Some(2), &open).is_some(), "a place came back");
        assert!(admission.admit(a, None, &open).is_some(), "no cap");
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_and_the_map_forgets_closed_addresses() {
        let admission = Arc::new(Admission::default());
        let open = IntGauge::new("open", "open").unwrap();
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let slot = admission.admit(one, Some(1), &open).unwrap();
        assert!(admission.admit(same_64, Some(1), &open).is_none(), "another address of the same /64");
        assert!(admission.admit("2001:db8:1:3::1".parse().unwrap(), Some(1), &open).is_some());
        drop(slot);
        assert_eq!(admission.held(one), 0);
        assert!(!admission.counts.lock().unwrap().contains_key(&ip_key(one)), "no entry left at zero");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_with_no_request_expires_after_the_header_timeout_from_the_accept() {
        let activity = Activity::new();
        let started = Instant::now();
        let expired = activity.expired(Duration::from_secs(30), Duration::from_secs(120)).await;
        assert_eq!((expired, started.elapsed()), (Expired::Header, Duration::from_secs(30)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_holds_the_connection_and_its_end_starts_the_idle_timeout() {
        let activity = Activity::new();
        let (header, idle) = (Duration::from_secs(30), Duration::from_secs(120));
        let request = activity.begin();
        let watcher = {
            let activity = activity.clone();
            tokio::spawn(async move { (activity.expired(header, idle).await, Instant::now()) })
        };
        // Far past both timeouts, still in flight: the watcher waits on.
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!watcher.is_finished());
        let ended = Instant::now();
        drop(request);
        let (expired, at) = watcher.await.unwrap();
        assert_eq!((expired, at - ended), (Expired::Idle, idle));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_came_and_went_during_the_wait_moves_the_deadline() {
        let activity = Activity::new();
        let (header, idle) = (Duration::from_secs(30), Duration::from_secs(60));
        let watcher = {
            let activity = activity.clone();
            tokio::spawn(async move { (activity.expired(header, idle).await, Instant::now()) })
        };
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(activity.begin());
        let ended = Instant::now();
        let (expired, at) = watcher.await.unwrap();
        assert_eq!((expired, at - ended), (Expired::Idle, idle), "the idle timeout, from the request's end");
    }

    #[test]
    fn a_tracked_body_passes_its_frames_and_size_through() {
        let activity = Activity::new();
        let body = Tracked::new(crate::api::body::full(Bytes::from_static(b"abc")), activity.begin());
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(3));
        assert_eq!(activity.in_flight(), 1);
        drop(body);
        assert_eq!(activity.in_flight(), 0, "dropping the body ends the request");
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_logs_the_first_event_then_one_line_per_interval_with_the_count() {
        let mut throttle = Throttle::new(Duration::from_secs(10));
        assert_eq!(throttle.note(), Some(Due { count: 1, window: Duration::ZERO }));
        for _ in 0..500 {
            assert_eq!(throttle.note(), None);
        }
        assert_eq!(throttle.due(), None, "not yet");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(throttle.due(), Some(Due { count: 500, window: Duration::from_secs(10) }));
        assert_eq!(throttle.due(), None, "nothing new");
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(throttle.note(), Some(Due { count: 1, window: Duration::from_secs(30) }));
    }
}
