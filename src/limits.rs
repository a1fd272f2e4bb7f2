//! Inbound rate limits: a token bucket per client IP and per signed-in user
//! (GCRA, from `governor`), and finding the client's address behind trusted
//! proxies. Decides only whether a request may go on and, if not, how long
//! the client should wait; the 429 itself is chosen in `api::error`. Must not
//! touch routing, storage or upstreams.
//!
//! # Bounded memory
//!
//! Each limiter is governor's keyed limiter over a `DashMap`: one 8-byte
//! GCRA state per key. A background task ([`RateLimits::housekeeping`])
//! calls `retain_recent()` every [`SWEEP_INTERVAL`], which drops only the
//! keys whose bucket has refilled, those whose state is indistinguishable
//! from a key never seen. So a sweep never changes a decision: a client
//! that was throttled is still throttled after it. The map holds the keys
//! active within the last sweep interval plus each key's refill time
//! (`burst / rate`, and one period more). A moka map with a capacity would give a hard bound
//! instead, but by evicting under pressure it would forget the very clients
//! being throttled, handing them a fresh burst: the wrong way to fail under
//! a flood. IPv6 clients are keyed by their /64 (a single host usually holds
//! a whole /64), so one host cannot mint fresh keys by rotating addresses.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use http::HeaderMap;
use prometheus::IntCounter;

use crate::config::{IpNet, LimitsConfig, Rate};
use crate::metrics::Metrics;

/// How often keys whose bucket has refilled are forgotten.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The TCP peer a request came from: the server puts it in every request's
/// extensions. Behind a proxy this is the proxy; [`RateLimits::client_ip`]
/// knows whom to believe. Defined here rather than in `server` so that
/// handlers read it without importing against the server → api arrow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);

/// The request came over TLS (the registry port with `server.tls_cert`):
/// the server puts it in the extensions of such requests, so that a
/// derived token realm says `https://`. Here beside [`ClientAddr`] for the
/// same reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OverTls;

/// How long a refused client must wait before its next request can pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetryAfter(Duration);

impl RetryAfter {
    pub(crate) fn new(wait: Duration) -> RetryAfter {
        RetryAfter(wait)
    }

    /// Whole seconds for a `Retry-After` header: rounded up, so a client
    /// that waits as told is let through, and at least 1, because
    /// `Retry-After: 0` invites an immediate retry that would fail again.
    pub(crate) fn seconds(self) -> u64 {
        let whole = self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0);
        whole.max(1)
    }
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    Ip,
    User,
}

impl Scope {
    /// The `scope` label of `wharf_rate_limited_total`.
    fn label(self) -> &'static str {
        match self {
            Scope::Ip => "ip",
            Scope::User => "user",
        }
    }
}

type Keyed<K, C> = RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One keyed limiter and the counter of its refusals.
struct Limiter<K: std::hash::Hash + Eq + Clone, C: Clock> {
    keyed: Keyed<K, C>,
    refused: IntCounter,
}

impl<K: std::hash::Hash + Eq + Clone, C: Clock> Limiter<K, C> {
    fn new(rate: Rate, clock: C, refused: IntCounter) -> Limiter<K, C> {
        // `with_period` refuses only a zero period, which validation rules
        // out; the fallback is never used.
        let quota = Quota::with_period(rate.period).unwrap_or_else(|| Quota::per_second(rate.burst));
        let quota = quota.allow_burst(rate.burst);
        Limiter { keyed: RateLimiter::dashmap_with_clock(quota, clock), refused }
    }

    fn check(&self, key: &K) -> Result<(), RetryAfter> {
        self.keyed.check_key(key).map_err(|not_until| {
            self.refused.inc();
            RetryAfter::new(not_until.wait_time_from(self.keyed.clock().now()))
        })
    }

    fn sweep(&self) {
        self.keyed.retain_recent();
        self.keyed.shrink_to_fit();
    }
}

/// The inbound limits, shared by every connection; cheap to clone.
pub(crate) struct RateLimits<C: Clock = DefaultClock> {
    inner: Arc<Inner<C>>,
}

impl<C: Clock> Clone for RateLimits<C> {
    fn clone(&self) -> Self {
        RateLimits { inner: self.inner.clone() }
    }
}

struct Inner<C: Clock> {
    per_ip: Option<Limiter<IpAddr, C>>,
    per_user: Option<Limiter<String, C>>,
    trusted_proxies: Vec<IpNet>,
}

impl RateLimits {
    pub(crate) fn new(cfg: &LimitsConfig, metrics: &Metrics) -> RateLimits {
        RateLimits::with_clock(cfg, metrics, DefaultClock::default())
    }
}

impl<C: Clock + Clone + Send + Sync + 'static> RateLimits<C> {
    pub(crate) fn with_clock(cfg: &LimitsConfig, metrics: &Metrics, clock: C) -> RateLimits<C> {
        let refused = |scope: Scope| metrics.rate_limited.with_label_values(&[scope.label()]);
        RateLimits {
            inner: Arc::new(Inner {
                per_ip: cfg.per_ip.map(|rate| Limiter::new(rate, clock.clone(), refused(Scope::Ip))),
                per_user: cfg.per_user.map(|rate| Limiter::new(rate, clock, refused(Scope::User))),
                trusted_proxies: cfg.trusted_proxies.clone(),
            }),
        }
    }

    /// Counts one request from the client at `ip` (as [`client_ip`] found
    /// it); refused once the client's bucket is empty. Always Ok when
    /// `per_ip_rate` is 0.
    ///
    /// [`client_ip`]: RateLimits::client_ip
    pub(crate) fn check_ip(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        match &self.inner.per_ip {
            Some(limiter) => limiter.check(&ip_key(ip)),
            None => Ok(()),
        }
    }

    /// Counts one request by the signed-in `user`; refused once the user's
    /// bucket is empty. Always Ok when `per_user_rate` is 0.
    ///
    /// The registry's auth gate must call this once per request, right
    /// after it has verified the request's credentials and before the
    /// request is routed, with the user name the credentials proved; a
    /// refusal becomes `ApiError::RateLimited` (429 `TOOMANYREQUESTS` with
    /// `Retry-After`). Anonymous requests are not checked here: the per-IP
    /// limit covers them.
    pub(crate) fn check_user(&self, user: &str) -> Result<(), RetryAfter> {
        match &self.inner.per_user {
            Some(limiter) => limiter.check(&user.to_owned()),
            None => Ok(()),
        }
    }

    /// The per-IP check for a request that arrived from `peer` with
    /// `headers`: the registry calls this before routing.
    pub(crate) fn check_client(&self, peer: SocketAddr, headers: &HeaderMap) -> Result<(), RetryAfter> {
        if self.inner.per_ip.is_none() {
            return Ok(());
        }
        self.check_ip(self.client_ip(peer.ip(), headers))
    }

    /// The client's address. That is the TCP `peer`, unless the peer is a
    /// trusted proxy: then `X-Forwarded-For` is read from the nearest hop
    /// back, each hop believed only while the one that reported it is a
    /// trusted proxy too. The first address not trusted is the client. A
    /// hop that is not an address stops the walk at the last one believed,
    /// so a client cannot hide behind garbage.
    pub(crate) fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        // Proxies append to the right, in one header or in several.
        for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
            let Ok(value) = value.to_str() else { return client };
            for hop in value.split(',').rev() {
                let Some(ip) = parse_hop(hop) else { return client };
                client = ip;
                if !self.trusts(ip) {
                    return client;
                }
            }
        }
        client
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.inner.trusted_proxies.iter().any(|net| net.contains(ip))
    }

    /// Forgets keys whose bucket has refilled, every [`SWEEP_INTERVAL`],
    /// for as long as these limits are in use (it holds them weakly).
    /// Resolves at once when no limit is on.
    pub(crate) fn housekeeping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let on = self.inner.per_ip.is_some() || self.inner.per_user.is_some();
        let inner: Weak<Inner<C>> = Arc::downgrade(&self.inner);
        async move {
            if !on {
                return;
            }
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate; there is nothing to sweep yet.
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = inner.upgrade() else { return };
                inner.sweep();
            }
        }
    }
}

impl<C: Clock> Inner<C> {
    fn sweep(&self) {
        if let Some(l) = &self.per_ip {
            l.sweep();
        }
        if let Some(l) = &self.per_user {
            l.sweep();
        }
    }
}

/// The key a client address is limited under: an IPv4 address as it is,
/// an IPv6 address by its /64. The server's per-address connection cap
/// counts under the same key.
pub(crate) fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` hop: an address, perhaps with a port
/// (`1.2.3.4:5678`, `[2001:db8::1]:80`) or in brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    let ip = hop
        .parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use governor::clock::FakeRelativeClock;
    use http::HeaderValue;

    use super::*;

    fn rate(per_second: u64, burst: u32) -> Option<Rate> {
        Some(Rate { period: Duration::from_secs(1) / per_second as u32, burst: NonZeroU32::new(burst).unwrap() })
    }

    fn limits(cfg: LimitsConfig) -> (RateLimits<FakeRelativeClock>, FakeRelativeClock, Metrics) {
        let metrics = Metrics::new().unwrap();
        let clock = FakeRelativeClock::default();
        (RateLimits::with_clock(&cfg, &metrics, clock.clone()), clock, metrics)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn trusting(proxies: &[&str]) -> RateLimits<FakeRelativeClock> {
        let trusted_proxies = proxies.iter().map(|p| IpNet::parse(p).unwrap()).collect();
        limits(LimitsConfig { trusted_proxies, ..LimitsConfig::default() }).0
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_at_least_one() {
        assert_eq!(RetryAfter::new(Duration::ZERO).seconds(), 1);
        assert_eq!(RetryAfter::new(Duration::from_millis(1)).seconds(), 1);
        assert_eq!(RetryAfter::new(Duration::from_secs(1)).seconds(), 1);
        assert_eq!(RetryAfter::new(Duration::from_millis(1001)).seconds(), 2);
        assert_eq!(RetryAfter::new(Duration::from_secs(7)).seconds(), 7);
    }

    #[test]
    fn each_client_ip_has_its_own_burst_then_waits_for_the_refill() {
        let (l, clock, metrics) = limits(LimitsConfig { per_ip: rate(1, 3), ..LimitsConfig::default() });
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        for _ in 0..3 {
            assert_eq!(l.check_ip(a), Ok(()));
        }
        // One token per second: the next is due in exactly one second.
        assert_eq!(l.check_ip(a), Err(RetryAfter::new(Duration::from_secs(1))));
        assert_eq!(l.check_ip(b), Ok(()), "another client is not held back");
        clock.advance(Duration::from_millis(400));
        let refused = l.check_ip(a).unwrap_err();
        assert_eq!(refused, RetryAfter::new(Duration::from_millis(600)));
        assert_eq!(refused.seconds(), 1);
        clock.advance(Duration::from_millis(600));
        assert_eq!(l.check_ip(a), Ok(()));
        assert_eq!(l.check_ip(a).map_err(RetryAfter::seconds), Err(1));
        assert!(metrics.render().contains("wharf_rate_limited_total{scope=\"ip\"} 3"));
    }

    #[test]
    fn ipv6_clients_share_the_limit_of_their_64_and_mapped_ipv4_is_ipv4() {
        let (l, _, _) = limits(LimitsConfig { per_ip: rate(1, 1), ..LimitsConfig::default() });
        assert_eq!(l.check_ip(ip("2001:db8:1:2::1")), Ok(()));
        assert!(l.check_ip(ip("2001:db8:1:2:ffff::9")).is_err(), "same /64");
        assert_eq!(l.check_ip(ip("2001:db8:1:3::1")), Ok(()), "another /64");
        assert_eq!(l.check_ip(ip("198.51.100.4")), Ok(()));
        assert!(l.check_ip(ip("::ffff:198.51.100.4")).is_err(), "the same IPv4 client");
    }

    #[test]
    fn users_are_limited_by_name() {
        let (l, clock, metrics) = limits(LimitsConfig { per_user: rate(2, 2), ..LimitsConfig::default() });
        assert_eq!(l.check_user("alice"), Ok(()));
        assert_eq!(l.check_user("alice"), Ok(()));
        assert_eq!(l.check_user("alice"), Err(RetryAfter::new(Duration::from_millis(500))));
        assert_eq!(l.check_user("bob"), Ok(()));
        assert_eq!(l.check_ip(ip("192.0.2.1")), Ok(()), "no per-IP limit configured");
        clock.advance(Duration::from_millis(500));
        assert_eq!(l.check_user("alice"), Ok(()));
        assert!(metrics.render().contains("wharf_rate_limited_total{scope=\"user\"} 1"));
    }

    #[test]
    fn limits_that_are_off_let_everything_through() {
        let (l, _, _) = limits(LimitsConfig::default());
        for _ in 0..1000 {
            assert_eq!(l.check_ip(ip("192.0.2.1")), Ok(()));
            assert_eq!(l.check_user("alice"), Ok(()));
        }
    }

    #[test]
    fn sweeping_forgets_only_refilled_buckets() {
        let (l, clock, _) = limits(LimitsConfig { per_ip: rate(1, 2), ..LimitsConfig::default() });
        let per_ip = || l.inner.per_ip.as_ref().unwrap();
        l.check_ip(ip("192.0.2.2")).unwrap();
        clock.advance(Duration::from_millis(2500));
        l.check_ip(ip("192.0.2.1")).unwrap();
        l.check_ip(ip("192.0.2.1")).unwrap();
        assert!(l.check_ip(ip("192.0.2.1")).is_err());
        l.inner.sweep();
        // .2 has long refilled and is forgotten; .1 is kept, still throttled.
        assert_eq!(per_ip().keyed.len(), 1);
        assert!(l.check_ip(ip("192.0.2.1")).is_err(), "a sweep must not hand a throttled client a fresh burst");
        clock.advance(Duration::from_secs(10));
        l.inner.sweep();
        assert!(per_ip().keyed.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn housekeeping_stops_when_the_limits_are_dropped() {
        let (l, _, _) = limits(LimitsConfig { per_ip: rate(1, 1), ..LimitsConfig::default() });
        let task = tokio::spawn(l.housekeeping());
        tokio::time::sleep(SWEEP_INTERVAL * 3).await;
        assert!(!task.is_finished());
        drop(l);
        tokio::time::sleep(SWEEP_INTERVAL * 2).await;
        assert!(task.is_finished());
        let off = limits(LimitsConfig::default()).0;
        off.housekeeping().await;
    }

    #[test]
    fn the_peer_is_the_client_unless_it_is_a_trusted_proxy() {
        let l = trusting(&["10.0.0.0/8"]);
        let spoofed = xff(&["203.0.113.9"]);
        assert_eq!(l.client_ip(ip("198.51.100.7"), &spoofed), ip("198.51.100.7"), "untrusted peer's header ignored");
        assert_eq!(l.client_ip(ip("10.1.1.1"), &spoofed), ip("203.0.113.9"));
        assert_eq!(l.client_ip(ip("10.1.1.1"), &HeaderMap::new()), ip("10.1.1.1"), "no header: the proxy itself");
        assert_eq!(trusting(&[]).client_ip(ip("10.1.1.1"), &spoofed), ip("10.1.1.1"), "nobody trusted by default");
    }

    #[test]
    fn forwarded_hops_are_believed_only_through_trusted_proxies() {
        let l = trusting(&["10.0.0.0/8", "2001:db8::/32"]);
        let proxy = ip("10.0.0.2");
        // The client forged the leftmost entry; the trusted proxy chain
        // (10.0.0.5) appended the address it really saw.
        let chain = xff(&["6.6.6.6, 203.0.113.9, 10.0.0.5"]);
        assert_eq!(l.client_ip(proxy, &chain), ip("203.0.113.9"));
        // Hops split across several headers read the same as one list.
        assert_eq!(l.client_ip(proxy, &xff(&["6.6.6.6, 203.0.113.9", "10.0.0.5"])), ip("203.0.113.9"));
        // Ports and brackets are tolerated; a mapped address is IPv4.
        assert_eq!(l.client_ip(proxy, &xff(&["203.0.113.9:4711"])), ip("203.0.113.9"));
        assert_eq!(l.client_ip(proxy, &xff(&["[2001:db9::1]:80"])), ip("2001:db9::1"));
        assert_eq!(l.client_ip(proxy, &xff(&["::ffff:203.0.113.9"])), ip("203.0.113.9"));
        // Garbage stops the walk at the last hop a trusted proxy vouched for.
        assert_eq!(l.client_ip(proxy, &xff(&["203.0.113.9, unknown, 10.0.0.5"])), ip("10.0.0.5"));
        assert_eq!(l.client_ip(proxy, &xff(&["nonsense"])), proxy);
        // Every hop trusted: the farthest one is the client.
        assert_eq!(l.client_ip(proxy, &xff(&["10.9.9.9, 10.0.0.5"])), ip("10.9.9.9"));
    }
}
