//! Every metric wharf exports, defined in one place. Labels are bounded:
//! never a repository, tag or digest.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

#[derive(Clone)]
pub(crate) struct Metrics {
    registry: Registry,
    /// `kind` = blob|manifest, `result` = hit|miss|stale|coalesced.
    pub(crate) cache_requests: IntCounterVec,
    /// `source` = cache|upstream.
    pub(crate) served_bytes: IntCounterVec,
    /// The part of `served_bytes` sent with `sendfile` (stored blobs, and
    /// fills' bytes already on disk).
    pub(crate) sendfile_bytes: IntCounter,
    pub(crate) upstream_bytes: IntCounterVec,
    /// `kind` = timeout|connect|digest_mismatch|http|...
    pub(crate) upstream_errors: IntCounterVec,
    pub(crate) fills_in_flight: IntGauge,
    /// Requests refused by an inbound rate limit; `scope` = ip|user.
    pub(crate) rate_limited: IntCounterVec,
    /// Requests waiting for a turn under an upstream's
    /// `max_concurrent_requests`; `upstream` is a configured name.
    pub(crate) upstream_requests_waiting: IntGaugeVec,
}

impl Metrics {
    pub(crate) fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let cache_requests = IntCounterVec::new(
            Opts::new("wharf_cache_requests_total", "Blob and manifest lookups by cache result"),
            &["kind", "result"],
        )?;
        let served_bytes = IntCounterVec::new(
            Opts::new("wharf_served_bytes_total", "Blob bytes sent to clients, by where they came from"),
            &["source"],
        )?;
        let sendfile_bytes = IntCounter::new(
            "wharf_sendfile_bytes_total",
            "Blob bytes sent zero-copy (sendfile) from local files, part of wharf_served_bytes_total",
        )?;
        let upstream_bytes = IntCounterVec::new(
            Opts::new("wharf_upstream_bytes_total", "Blob bytes received from upstreams"),
            &["upstream"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new("wharf_upstream_errors_total", "Failed upstream fetches by kind"),
            &["upstream", "kind"],
        )?;
        let fills_in_flight = IntGauge::new("wharf_fills_in_flight", "Blob fills from upstreams in progress")?;
        registry.register(Box::new(cache_requests.clone()))?;
        registry.register(Box::new(served_bytes.clone()))?;
        registry.register(Box::new(sendfile_bytes.clone()))?;
        registry.register(Box::new(upstream_bytes.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        let rate_limited = IntCounterVec::new(
            Opts::new("wharf_rate_limited_total", "Requests refused with 429 by an inbound rate limit"),
            &["scope"],
        )?;
        let upstream_requests_waiting = IntGaugeVec::new(
            Opts::new(
                "wharf_upstream_requests_waiting",
                "Requests waiting for a turn under an upstream's max_concurrent_requests",
            ),
            &["upstream"],
        )?;
        registry.register(Box::new(fills_in_flight.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(upstream_requests_waiting.clone()))?;
        // Both scopes are exported from the start, at 0, so a dashboard
        // need not tell "never limited" from "not exported".
        for scope in ["ip", "user"] {
            rate_limited.with_label_values(&[scope]);
        }
        Ok(Metrics {
            registry,
            cache_requests,
            served_bytes,
            sendfile_bytes,
            upstream_bytes,
            upstream_errors,
            fills_in_flight,
            rate_limited,
            upstream_requests_waiting,
        })
    }

    pub(crate) fn cache(&self, kind: &str, result: &str) {
        self.cache_requests.with_label_values(&[kind, result]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        TextEncoder::new().encode_to_string(&self.registry.gather()).unwrap_or_else(|e| {
            tracing::error!(error = %e, "could not encode metrics");
            String::new()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_metrics() {
        let m = Metrics::new().unwrap();
        m.cache("blob", "hit");
        m.fills_in_flight.inc();
        let text = m.render();
        assert!(text.contains("wharf_cache_requests_total{kind=\"blob\",result=\"hit\"} 1"), "{text}");
        assert!(text.contains("wharf_fills_in_flight 1"), "{text}");
        assert!(text.contains("wharf_rate_limited_total{scope=\"ip\"} 0"), "{text}");
        assert!(text.contains("wharf_rate_limited_total{scope=\"user\"} 0"), "{text}");
    }
}
