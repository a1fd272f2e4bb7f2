//! Every metric wharf exports, defined in one place, and their text
//! exposition for the admin port's `GET /metrics`. Callers increment the
//! public fields; nothing here knows about requests or upstreams.
//!
//! Labels are bounded: never a repository, tag, digest or path. `route` is
//! one of [`ROUTES`], `method` one of [`METHODS`], `upstream` a configured
//! upstream's (or remote's) name, `status` an HTTP status code.

use std::sync::Arc;

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The `route` label's values: the registry route table's kinds, the token
/// endpoint, and `unknown` for anything that did not route. (Checked
/// against the route table by a test.)
pub(crate) const ROUTES: &[&str] =
    &["base", "catalog", "manifest", "blob", "blob_upload", "tags", "referrers", "signatures", "flatpak_index", "token", "unknown"];
/// The `method` label's values; any other method is `other`.
pub(crate) const METHODS: &[&str] = &["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "other"];

/// Request durations from a fast cache hit (milliseconds) to a large blob
/// streamed from a slow upstream (minutes).
const DURATION_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
/// Upstream response headers: milliseconds on a LAN, seconds over the internet.
const UPSTREAM_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Every metric, shared: a clone is one reference count, so a request can
/// carry its own handle.
#[derive(Clone)]
pub(crate) struct Metrics(Arc<MetricSet>);

impl std::ops::Deref for Metrics {
    type Target = MetricSet;

    fn deref(&self) -> &MetricSet {
        &self.0
    }
}

pub(crate) struct MetricSet {
    registry: Registry,
    /// Registry-port requests; `route`, `method`, `status`.
    pub(crate) http_requests: IntCounterVec,
    /// From a request's arrival to the end of its response body; `route`.
    pub(crate) http_request_duration: HistogramVec,
    /// Registry-port requests whose response has not ended.
    pub(crate) http_in_flight: IntGauge,
    /// `kind` = blob|manifest, `result` = hit|miss|stale|coalesced.
    pub(crate) cache_requests: IntCounterVec,
    /// `source` = cache|upstream.
    pub(crate) served_bytes: IntCounterVec,
    /// Each HTTP exchange with an upstream (every hop, retry and token
    /// fetch); `upstream`, `op`, `status` (the code, or `timeout` /
    /// `connect` when no response came).
    pub(crate) upstream_requests: IntCounterVec,
    /// Time to an upstream's response headers; `upstream`, `op`.
    pub(crate) upstream_request_duration: HistogramVec,
    /// The part of `served_bytes` sent with `sendfile` (stored blobs, and
    /// fills' bytes already on disk).
    pub(crate) sendfile_bytes: IntCounter,
    pub(crate) upstream_bytes: IntCounterVec,
    /// `kind` = timeout|connect|digest_mismatch|http.
    pub(crate) upstream_errors: IntCounterVec,
    pub(crate) fills_in_flight: IntGauge,
    /// Fills whose bytes came from another node's fill of the same blob
    /// (a cluster), not from an upstream.
    pub(crate) cluster_relayed_fills: IntCounter,
    /// Requests refused by an inbound rate limit; `scope` = ip|user.
    pub(crate) rate_limited: IntCounterVec,
    /// Requests waiting for a turn under an upstream's
    /// `max_concurrent_requests`; `upstream` is a configured name.
    pub(crate) upstream_requests_waiting: IntGaugeVec,
    /// Background tasks that ended; `kind` (sync, ...), `state` =
    /// completed|failed|canceled.
    pub(crate) tasks: IntCounterVec,
    /// Syncs that ended; `result` = new_version|unchanged|failed|canceled.
    pub(crate) syncs: IntCounterVec,
    /// Every metric family name registered, for the tests that check the
    /// dashboard and alert rules against it.
    #[cfg_attr(not(test), allow(dead_code))]
    names: Vec<String>,
    /// Disk use: see [`StorageMetrics`].
    pub(crate) storage: StorageMetrics,
    /// Connections of both ports: see [`ConnectionMetrics`].
    pub(crate) connections: ConnectionMetrics,
    /// Series every warm request touches, resolved once: a label lookup
    /// hashes its values and takes a lock.
    hot: HotSeries,
}

/// Pre-resolved series of the request path.
struct HotSeries {
    /// `wharf_http_request_duration_seconds` by position in [`ROUTES`].
    durations: Vec<Histogram>,
    /// `wharf_cache_requests_total` by [`CACHE_KINDS`] × [`CACHE_RESULTS`].
    cache: Vec<IntCounter>,
}

const CACHE_KINDS: &[&str] = &["blob", "manifest"];
const CACHE_RESULTS: &[&str] = &["hit", "miss", "stale", "coalesced"];

/// Disk use and its bounds, kept by the `gc` module.
#[derive(Clone)]
pub(crate) struct StorageMetrics {
    pub(crate) bytes: IntGauge,
    pub(crate) objects: IntGauge,
    /// `storage.max_size`; 0 when unbounded.
    pub(crate) capacity_bytes: IntGauge,
    pub(crate) evictions: IntCounter,
    pub(crate) evicted_bytes: IntCounter,
    /// Fills whose bytes could not be written (a full disk): served
    /// through, not cached.
    pub(crate) write_errors: IntCounter,
    /// S3 requests (the S3 backend); `op` (head, get, put, put_part, ...),
    /// `result` = ok|not_found|error.
    pub(crate) s3_requests: IntCounterVec,
    /// Time to an S3 response; `op`.
    pub(crate) s3_request_duration: HistogramVec,
    /// Bytes sent to and received from S3 as object bodies; `direction` =
    /// upload|download.
    pub(crate) s3_bytes: IntCounterVec,
    /// Reads of an object with the S3 backend; `result` = hit (a local
    /// copy) | miss (downloaded).
    pub(crate) hot_tier_requests: IntCounterVec,
    pub(crate) hot_tier_bytes: IntGauge,
    pub(crate) hot_tier_capacity_bytes: IntGauge,
    pub(crate) hot_tier_evictions: IntCounter,
    pub(crate) hot_tier_evicted_bytes: IntCounter,
    /// Blob GETs answered with a redirect to a presigned URL.
    pub(crate) s3_redirects: IntCounter,
}

impl StorageMetrics {
    fn register(r: &mut Registrar) -> Result<StorageMetrics, prometheus::Error> {
        let m = StorageMetrics {
            bytes: IntGauge::new("wharf_storage_bytes", "Bytes of stored blobs and manifests")?,
            objects: IntGauge::new("wharf_storage_objects", "Stored blobs and manifests")?,
            capacity_bytes: IntGauge::new(
                "wharf_storage_capacity_bytes",
                "The cap on stored bytes (storage.max_size); 0 when unbounded",
            )?,
            evictions: IntCounter::new("wharf_evictions_total", "Cached blobs evicted to stay under storage.max_size")?,
            evicted_bytes: IntCounter::new("wharf_evicted_bytes_total", "Bytes of cached blobs evicted")?,
            write_errors: IntCounter::new(
                "wharf_storage_write_errors_total",
                "Fills that could not be written to storage (served through, not cached)",
            )?,
            s3_requests: r.add(IntCounterVec::new(
                Opts::new("wharf_s3_requests_total", "Requests to the S3 backend, by operation and result (ok, not_found, error)"),
                &["op", "result"],
            )?)?,
            s3_request_duration: r.add(HistogramVec::new(
                HistogramOpts::new("wharf_s3_request_duration_seconds", "Time to the S3 backend's response, by operation")
                    .buckets(UPSTREAM_BUCKETS.to_vec()),
                &["op"],
            )?)?,
            s3_bytes: r.add(IntCounterVec::new(
                Opts::new("wharf_s3_bytes_total", "Object bytes uploaded to and downloaded from the S3 backend"),
                &["direction"],
            )?)?,
            hot_tier_requests: r.add(IntCounterVec::new(
                Opts::new(
                    "wharf_hot_tier_requests_total",
                    "Object reads with the S3 backend: hit (a local copy) or miss (downloaded from S3)",
                ),
                &["result"],
            )?)?,
            hot_tier_bytes: r.add(IntGauge::new("wharf_hot_tier_bytes", "Bytes of local copies in the hot tier")?)?,
            hot_tier_capacity_bytes: r.add(IntGauge::new(
                "wharf_hot_tier_capacity_bytes",
                "The hot tier's bound (storage.cache.max_size); 0 without S3 or with the tier off",
            )?)?,
            hot_tier_evictions: r.add(IntCounter::new(
                "wharf_hot_tier_evictions_total",
                "Local copies deleted to keep the hot tier under its bound (the bucket keeps the object)",
            )?)?,
            hot_tier_evicted_bytes: r.add(IntCounter::new(
                "wharf_hot_tier_evicted_bytes_total",
                "Bytes of local copies evicted from the hot tier",
            )?)?,
            s3_redirects: r.add(IntCounter::new(
                "wharf_s3_redirects_total",
                "Blob GETs answered with a redirect to a presigned URL of the object (storage.s3.redirect)",
            )?)?,
        };
        r.register(Box::new(m.bytes.clone()))?;
        r.register(Box::new(m.objects.clone()))?;
        r.register(Box::new(m.capacity_bytes.clone()))?;
        r.register(Box::new(m.evictions.clone()))?;
        r.register(Box::new(m.evicted_bytes.clone()))?;
        r.register(Box::new(m.write_errors.clone()))?;
        Ok(m)
    }
}

/// Connections of the listening ports, kept by the `server` module; every
/// series carries `port` = registry|admin.
#[derive(Clone)]
pub(crate) struct ConnectionMetrics {
    open: IntGaugeVec,
    refused: IntCounterVec,
    timed_out: IntCounterVec,
    accept_errors: IntCounterVec,
    malformed: IntCounterVec,
}

/// The series of one port, resolved once.
#[derive(Clone)]
pub(crate) struct PortConnections {
    /// Connections accepted and not yet closed.
    pub(crate) open: IntGauge,
    /// Connections closed at once because their client address held
    /// `server.max_connections_per_ip` already.
    pub(crate) refused: IntCounter,
    /// Connections closed for sending no whole request head within
    /// `server.header_timeout` of being accepted.
    pub(crate) header_timeouts: IntCounter,
    /// Connections closed after `server.idle_timeout` with no request.
    pub(crate) idle_timeouts: IntCounter,
    /// Failed `accept` calls (out of file descriptors and the like).
    pub(crate) accept_errors: IntCounter,
    /// Connections hyper ended on a request it could not parse, answered
    /// by it (400, 414, 431, no body) before wharf saw a request.
    pub(crate) malformed: IntCounter,
}

/// The `port` label's values.
const PORTS: &[&str] = &["registry", "admin"];

impl ConnectionMetrics {
    fn register(r: &mut Registrar) -> Result<ConnectionMetrics, prometheus::Error> {
        let m = ConnectionMetrics {
            open: r.add(IntGaugeVec::new(
                Opts::new("wharf_connections_open", "Connections accepted and not yet closed, by port"),
                &["port"],
            )?)?,
            refused: r.add(IntCounterVec::new(
                Opts::new(
                    "wharf_connections_refused_total",
                    "Connections closed at once: their client address was at server.max_connections_per_ip",
                ),
                &["port"],
            )?)?,
            timed_out: r.add(IntCounterVec::new(
                Opts::new(
                    "wharf_connections_timed_out_total",
                    "Connections closed without a request: timeout=header (none within server.header_timeout \
                     of the accept) or idle (none within server.idle_timeout of the last response)",
                ),
                &["port", "timeout"],
            )?)?,
            accept_errors: r.add(IntCounterVec::new(
                Opts::new("wharf_accept_errors_total", "Failed accepts (such as no file descriptor left), by port"),
                &["port"],
            )?)?,
            malformed: r.add(IntCounterVec::new(
                Opts::new(
                    "wharf_malformed_requests_total",
                    "HTTP/1 connections ended on a request head that could not be parsed (answered 400, 414 or 431 \
                     without a body)",
                ),
                &["port"],
            )?)?,
        };
        // Exported at 0 from the start, so that "never happened" is not
        // "not exported".
        for port in PORTS {
            m.port(port);
        }
        Ok(m)
    }

    /// The series of `port` (one of registry, admin).
    pub(crate) fn port(&self, port: &str) -> PortConnections {
        PortConnections {
            open: self.open.with_label_values(&[port]),
            refused: self.refused.with_label_values(&[port]),
            header_timeouts: self.timed_out.with_label_values(&[port, "header"]),
            idle_timeouts: self.timed_out.with_label_values(&[port, "idle"]),
            accept_errors: self.accept_errors.with_label_values(&[port]),
            malformed: self.malformed.with_label_values(&[port]),
        }
    }
}

impl Metrics {
    pub(crate) fn new() -> Result<Metrics, prometheus::Error> {
        let mut r = Registrar { registry: Registry::new(), names: Vec::new() };
        let http_requests = r.add(IntCounterVec::new(
            Opts::new("wharf_http_requests_total", "Registry API requests by route kind, method and status"),
            &["route", "method", "status"],
        )?)?;
        let http_request_duration = r.add(HistogramVec::new(
            HistogramOpts::new(
                "wharf_http_request_duration_seconds",
                "Registry API requests from arrival to the end of the response body, by route kind",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route"],
        )?)?;
        let http_in_flight = r.add(IntGauge::new(
            "wharf_http_in_flight_requests",
            "Registry API requests whose response has not ended",
        )?)?;
        let cache_requests = r.add(IntCounterVec::new(
            Opts::new("wharf_cache_requests_total", "Blob and manifest lookups by cache result"),
            &["kind", "result"],
        )?)?;
        let served_bytes = r.add(IntCounterVec::new(
            Opts::new("wharf_served_bytes_total", "Blob bytes sent to clients, by where they came from"),
            &["source"],
        )?)?;
        let sendfile_bytes = r.add(IntCounter::new(
            "wharf_sendfile_bytes_total",
            "Blob bytes sent zero-copy (sendfile) from local files, part of wharf_served_bytes_total",
        )?)?;
        let upstream_requests = r.add(IntCounterVec::new(
            Opts::new(
                "wharf_upstream_requests_total",
                "HTTP exchanges with upstreams by operation and status (timeout or connect when none came)",
            ),
            &["upstream", "op", "status"],
        )?)?;
        let upstream_request_duration = r.add(HistogramVec::new(
            HistogramOpts::new(
                "wharf_upstream_request_duration_seconds",
                "Time from sending an upstream request to its response headers",
            )
            .buckets(UPSTREAM_BUCKETS.to_vec()),
            &["upstream", "op"],
        )?)?;
        let upstream_bytes = r.add(IntCounterVec::new(
            Opts::new("wharf_upstream_bytes_total", "Blob bytes received from upstreams"),
            &["upstream"],
        )?)?;
        let upstream_errors = r.add(IntCounterVec::new(
            Opts::new("wharf_upstream_errors_total", "Failed upstream requests and fills by kind"),
            &["upstream", "kind"],
        )?)?;
        let fills_in_flight =
            r.add(IntGauge::new("wharf_fills_in_flight", "Blob fills from upstreams in progress")?)?;
        let cluster_relayed_fills = r.add(IntCounter::new(
            "wharf_cluster_relayed_fills_total",
            "Blob fills streamed from another node's fill of the same blob instead of an upstream",
        )?)?;
        let rate_limited = r.add(IntCounterVec::new(
            Opts::new("wharf_rate_limited_total", "Requests refused with 429 by an inbound rate limit"),
            &["scope"],
        )?)?;
        let upstream_requests_waiting = r.add(IntGaugeVec::new(
            Opts::new(
                "wharf_upstream_requests_waiting",
                "Requests waiting for a turn under an upstream's max_concurrent_requests",
            ),
            &["upstream"],
        )?)?;
        let tasks = r.add(IntCounterVec::new(
            Opts::new("wharf_tasks_total", "Background tasks that ended, by kind and final state"),
            &["kind", "state"],
        )?)?;
        let syncs = r.add(IntCounterVec::new(
            Opts::new("wharf_syncs_total", "Repository syncs that ended, by result"),
            &["result"],
        )?)?;
        let build_info = r.add(IntGaugeVec::new(
            Opts::new("wharf_build_info", "Always 1; the version of the running wharf"),
            &["version"],
        )?)?;
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        // RSS, open fds, CPU seconds, start time, threads (Linux /proc).
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;

        // Series a dashboard divides by or alerts on are exported from the
        // start, at 0, so "never happened" is not "not exported".
        for scope in ["ip", "user"] {
            rate_limited.with_label_values(&[scope]);
        }
        let hot = HotSeries {
            durations: ROUTES.iter().map(|route| http_request_duration.with_label_values(&[route])).collect(),
            cache: CACHE_KINDS
                .iter()
                .flat_map(|kind| CACHE_RESULTS.iter().map(move |result| [*kind, *result]))
                .map(|labels| cache_requests.with_label_values(&labels))
                .collect(),
        };
        for source in ["cache", "upstream"] {
            served_bytes.with_label_values(&[source]);
        }
        for result in ["new_version", "unchanged", "failed", "canceled"] {
            syncs.with_label_values(&[result]);
        }
        let storage = StorageMetrics::register(&mut r)?;
        let connections = ConnectionMetrics::register(&mut r)?;
        Ok(Metrics(Arc::new(MetricSet {
            hot,
            storage,
            connections,
            registry: r.registry,
            http_requests,
            http_request_duration,
            http_in_flight,
            cache_requests,
            served_bytes,
            sendfile_bytes,
            upstream_requests,
            upstream_request_duration,
            upstream_bytes,
            upstream_errors,
            fills_in_flight,
            cluster_relayed_fills,
            rate_limited,
            upstream_requests_waiting,
            tasks,
            syncs,
            names: r.names,
        })))
    }

    pub(crate) fn cache(&self, kind: &str, result: &str) {
        let at = |list: &[&str], v: &str| list.iter().position(|x| *x == v);
        match (at(CACHE_KINDS, kind), at(CACHE_RESULTS, result)) {
            (Some(k), Some(r)) => self.hot.cache[k * CACHE_RESULTS.len() + r].inc(),
            _ => self.cache_requests.with_label_values(&[kind, result]).inc(),
        }
    }

    /// Observes a registry request's duration under its route kind.
    pub(crate) fn observe_request(&self, route: &str, seconds: f64) {
        match ROUTES.iter().position(|r| *r == route) {
            Some(i) => self.hot.durations[i].observe(seconds),
            None => self.http_request_duration.with_label_values(&[route]).observe(seconds),
        }
    }

    /// An upstream's error and byte series, at 0, so that a rate of errors
    /// exists before the first error.
    pub(crate) fn init_upstream(&self, upstream: &str) {
        for kind in ["timeout", "connect", "digest_mismatch", "http"] {
            self.upstream_errors.with_label_values(&[upstream, kind]);
        }
        self.upstream_bytes.with_label_values(&[upstream]);
    }

    /// Every metric family name registered here (histograms without their
    /// `_bucket`, `_sum` and `_count` series).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        TextEncoder::new().encode_to_string(&self.registry.gather()).unwrap_or_else(|e| {
            tracing::error!(error = %e, "could not encode metrics");
            String::new()
        })
    }
}

/// The `method` label for an HTTP method: itself if in [`METHODS`], else `other`.
pub(crate) fn method_label(method: &http::Method) -> &'static str {
    METHODS.iter().copied().find(|m| *m == method.as_str()).unwrap_or("other")
}

/// Registers collectors, remembering their names.
struct Registrar {
    registry: Registry,
    names: Vec<String>,
}

impl Registrar {
    fn add<C: Collector + Clone + 'static>(&mut self, c: C) -> Result<C, prometheus::Error> {
        self.register(Box::new(c.clone()))?;
        Ok(c)
    }

    fn register(&mut self, c: Box<dyn Collector>) -> Result<(), prometheus::Error> {
        self.names.extend(c.desc().iter().map(|d| d.fq_name.clone()));
        self.registry.register(c)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn renders_registered_metrics() {
        let m = Metrics::new().unwrap();
        m.cache("blob", "hit");
        m.fills_in_flight.inc();
        let text = m.render();
        assert!(text.contains("wharf_cache_requests_total{kind=\"blob\",result=\"hit\"} 1"), "{text}");
        assert!(text.contains("wharf_cache_requests_total{kind=\"manifest\",result=\"stale\"} 0"), "{text}");
        assert!(text.contains("wharf_fills_in_flight 1"), "{text}");
        assert!(text.contains("wharf_rate_limited_total{scope=\"ip\"} 0"), "{text}");
        assert!(text.contains("wharf_rate_limited_total{scope=\"user\"} 0"), "{text}");
        assert!(text.contains(&format!("wharf_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))), "{text}");
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_open_fds "), "{text}");
    }

    #[test]
    fn names_lists_every_family_including_process_metrics() {
        let m = Metrics::new().unwrap();
        for name in ["wharf_http_requests_total", "wharf_http_request_duration_seconds", "process_cpu_seconds_total"] {
            assert!(m.names().iter().any(|n| n == name), "{name} in {:?}", m.names());
        }
    }

    /// Every `wharf_*` or `process_*` metric name in `text`, outside
    /// double quotes (label values, annotations).
    fn metric_names_in(text: &str) -> Vec<String> {
        let mut names = Vec::new();
        let bytes = text.as_bytes();
        let mut quoted = false;
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'"' {
                quoted = !quoted;
            }
            let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
            if !quoted && boundary && (text[i..].starts_with("wharf_") || text[i..].starts_with("process_")) {
                let len = text[i..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(text.len() - i);
                names.push(text[i..i + len].to_owned());
                i += len;
            } else {
                i += 1;
            }
        }
        names
    }

    fn assert_exported(names: &[String], what: &str) {
        let m = Metrics::new().unwrap();
        let exported = |n: &str| m.names().iter().any(|e| e == n);
        for name in names {
            let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            assert!(exported(name) || exported(base), "{what} uses {name}, which wharf does not export");
        }
    }

    #[test]
    fn the_dashboard_is_json_whose_queries_use_only_exported_metrics() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana-dashboard.json");
        let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let panels = dashboard["panels"].as_array().unwrap();
        let mut queries = Vec::new();
        for panel in panels {
            for target in panel["targets"].as_array().into_iter().flatten() {
                queries.push(target["expr"].as_str().unwrap().to_owned());
            }
        }
        for variable in dashboard["templating"]["list"].as_array().unwrap() {
            queries.push(variable["definition"].as_str().unwrap().to_owned());
        }
        let names: Vec<String> = queries.iter().flat_map(|q| metric_names_in(q)).collect();
        assert_exported(&names, "the dashboard");
        // What the dashboard is for: each of these is shown.
        for needed in ["wharf_cache_requests_total", "wharf_served_bytes_total", "wharf_upstream_request_duration_seconds_bucket",
            "wharf_storage_bytes", "wharf_evictions_total"]
        {
            assert!(names.iter().any(|n| n == needed), "the dashboard shows no {needed}");
        }
        let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
        for title in ["Cache hit ratio", "Bytes served by source", "Upstream latency (response headers)", "Disk use", "Evictions"] {
            assert!(titles.contains(&title), "no panel {title:?} in {titles:?}");
        }
    }

    #[test]
    fn the_alert_rules_use_only_exported_metrics() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/prometheus-alerts.yml");
        let rules = std::fs::read_to_string(path).unwrap();
        let names = metric_names_in(&rules);
        assert_exported(&names, "the alert rules");
        for needed in ["wharf_storage_capacity_bytes", "wharf_upstream_errors_total"] {
            assert!(names.iter().any(|n| n == needed), "no alert on {needed}");
        }
        assert!(rules.contains(r#"kind="digest_mismatch""#), "no alert on digest mismatches");
    }

    #[test]
    fn metric_names_are_found_in_queries() {
        let q = r#"sum(rate(wharf_a_total{x="wharf_not"}[5m])) / process_cpu_seconds_total + my_wharf_b"#;
        assert_eq!(metric_names_in(q), ["wharf_a_total", "process_cpu_seconds_total"]);
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&http::Method::GET), "GET");
        assert_eq!(method_label(&http::Method::from_bytes(b"BREW").unwrap()), "other");
    }

    #[test]
    fn connection_series_of_both_ports_are_exported_from_the_start() {
        let m = Metrics::new().unwrap();
        m.connections.port("registry").refused.inc();
        let text = m.render();
        assert!(text.contains("wharf_connections_refused_total{port=\"registry\"} 1"), "{text}");
        for port in PORTS {
            for series in [
                format!("wharf_connections_open{{port=\"{port}\"}} 0"),
                format!("wharf_connections_timed_out_total{{port=\"{port}\",timeout=\"header\"}} 0"),
                format!("wharf_connections_timed_out_total{{port=\"{port}\",timeout=\"idle\"}} 0"),
                format!("wharf_accept_errors_total{{port=\"{port}\"}} 0"),
                format!("wharf_malformed_requests_total{{port=\"{port}\"}} 0"),
            ] {
                assert!(text.contains(&series), "{series} in {text}");
            }
        }
    }

    #[test]
    fn renders_storage_metrics() {
        let m = Metrics::new().unwrap();
        m.storage.evicted_bytes.inc_by(5);
        let text = m.render();
        assert!(text.contains("wharf_evicted_bytes_total 5"), "{text}");
        assert!(text.contains("wharf_storage_capacity_bytes 0"), "{text}");
    }
}
