//! The upstream layer's one error type, and the header parsing that decides
//! some of its variants (`Retry-After`).

use std::time::{Duration, SystemTime};

/// Why a request to an upstream registry failed.
///
/// `Clone` because one failure is handed to every client waiting on the same
/// fill; so every payload is an owned `String`, never a source error.
/// Messages carry no credentials, tokens or signed URLs' queries.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub(crate) enum UpstreamError {
    /// The upstream answered 404.
    #[error("upstream has no such content")]
    NotFound,
    /// 401 or 403, still after one authentication attempt (or from the token
    /// endpoint itself).
    #[error("upstream denied access: the repository does not exist there, or wharf's credentials for it are missing or wrong")]
    Unauthorized,
    /// 429; `retry_after` is the upstream's `Retry-After`, when it sent one.
    #[error("upstream is rate limiting us")]
    TooManyRequests { retry_after: Option<Duration> },
    /// Any other status the request did not expect (5xx, odd 4xx, 3xx that
    /// is not a redirect).
    #[error("upstream answered with status {0}")]
    Status(u16),
    /// Connecting, waiting for response headers, or waiting for the next body
    /// chunk took longer than configured.
    #[error("upstream timed out")]
    Timeout,
    /// The connection failed: DNS, TCP, TLS, or the connection was lost.
    #[error("cannot reach upstream: {0}")]
    Connect(String),
    /// The upstream said something we cannot use: a malformed header or body,
    /// a response over its size limit, too many redirects.
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    /// No turn under the upstream's `max_concurrent_requests` came free
    /// within its `response_timeout`: wharf itself is at its cap, the
    /// upstream was never asked.
    #[error("too many requests to this upstream in flight; no turn came free in time")]
    Saturated,
    /// The client could not be built (for instance an unreadable CA file).
    #[error("upstream client configuration: {0}")]
    Config(String),
}

impl UpstreamError {
    /// The `kind` label of `wharf_upstream_errors_total`: timeout, connect
    /// or http (an answer that was a failure or unusable). None for what
    /// is not the upstream failing: 404 (an answer about content),
    /// wharf's own concurrency cap, a bad configuration.
    pub(crate) fn metric_kind(&self) -> Option<&'static str> {
        match self {
            UpstreamError::Timeout => Some("timeout"),
            UpstreamError::Connect(_) => Some("connect"),
            UpstreamError::Unauthorized
            | UpstreamError::TooManyRequests { .. }
            | UpstreamError::Status(_)
            | UpstreamError::Protocol(_) => Some("http"),
            UpstreamError::NotFound | UpstreamError::Saturated | UpstreamError::Config(_) => None,
        }
    }

    /// Whether trying the same idempotent request again may succeed: the
    /// failure was transient and on the path to the upstream, not an answer.
    /// 429 is deliberately absent: retrying at once only deepens a rate limit;
    /// so is `Saturated`: waiting again only lengthens the queue.
    pub(super) fn is_transient(&self) -> bool {
        match self {
            UpstreamError::Timeout | UpstreamError::Connect(_) => true,
            UpstreamError::Status(code) => matches!(code, 502..=504),
            UpstreamError::NotFound
            | UpstreamError::Unauthorized
            | UpstreamError::TooManyRequests { .. }
            | UpstreamError::Protocol(_)
            | UpstreamError::Saturated
            | UpstreamError::Config(_) => false,
        }
    }
}

/// Parses `Retry-After`: either delay-seconds or an HTTP-date, which is
/// turned into a delay from `now` (zero if already past).
pub(super) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok().map(Duration::from_secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_delay_seconds() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_accepts_an_http_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let later = "Sun, 06 Nov 1994 08:51:07 GMT";
        assert_eq!(parse_retry_after(later, now), Some(Duration::from_secs(90)));
        // A date already past means "now", not an error.
        let earlier = "Sun, 06 Nov 1994 08:00:00 GMT";
        assert_eq!(parse_retry_after(earlier, now), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_rejects_garbage() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("99999999999999999999999", now), None);
    }

    #[test]
    fn only_transport_failures_and_gateway_statuses_are_transient() {
        assert!(UpstreamError::Timeout.is_transient());
        assert!(UpstreamError::Connect("refused".into()).is_transient());
        for code in [502, 503, 504] {
            assert!(UpstreamError::Status(code).is_transient(), "{code}");
        }
        assert!(!UpstreamError::Status(500).is_transient());
        assert!(!UpstreamError::NotFound.is_transient());
        assert!(!UpstreamError::Unauthorized.is_transient());
        assert!(!UpstreamError::TooManyRequests { retry_after: None }.is_transient());
    }

    #[test]
    fn kinds_are_stable_metric_labels() {
        assert_eq!(UpstreamError::Status(503).metric_kind(), Some("http"));
        assert_eq!(UpstreamError::TooManyRequests { retry_after: None }.metric_kind(), Some("http"));
        assert_eq!(UpstreamError::Protocol("x".into()).metric_kind(), Some("http"));
        assert_eq!(UpstreamError::Connect("refused".into()).metric_kind(), Some("connect"));
        assert_eq!(UpstreamError::Timeout.metric_kind(), Some("timeout"));
        assert_eq!(UpstreamError::NotFound.metric_kind(), None);
        assert_eq!(UpstreamError::Saturated.metric_kind(), None);
    }
}
