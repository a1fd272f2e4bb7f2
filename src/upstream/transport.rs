//! Sending one request to an upstream over the pooled hyper client: the
//! bound on waiting for response headers, redirects, and per-hop logging.
//! Authentication, retries and status meaning are the parent module's.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, LOCATION, USER_AGENT};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::UpstreamError;
use crate::config::UpstreamConfig;
use crate::metrics::Metrics;
use crate::telemetry;

/// Enough for CDN chains (registry -> storage -> edge), few enough to stop a loop.
const MAX_REDIRECTS: usize = 5;
/// How long an unused pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// What to send. Requests never carry a body: wharf only reads from upstreams.
pub(super) struct Outgoing<'a> {
    /// The operation, for metrics: head_manifest, get_blob, token, ...
    pub(super) op: &'static str,
    pub(super) method: Method,
    pub(super) uri: Uri,
    pub(super) accept: Option<&'static str>,
    /// Sent only to the origin `uri` names, never to a redirect target
    /// elsewhere (a CDN must not see the upstream's credentials).
    pub(super) authorization: Option<&'a HeaderValue>,
    pub(super) follow_redirects: bool,
}

pub(super) struct Answer {
    pub(super) response: Response<Incoming>,
    /// Whether the response came from the origin first addressed, rather
    /// than from a redirect target elsewhere.
    pub(super) from_origin: bool,
}

pub(super) struct Transport {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    response_timeout: Duration,
    user_agent: HeaderValue,
    /// The upstream's configured name, for logs and metric labels.
    upstream: String,
    metrics: Metrics,
}

/// Every upstream response is read into buffers of exactly this size, just
/// under the mmap threshold pinned in `crate::memory` (128 KiB): they come
/// from the heap, whose freed pages the next buffer reuses. hyper's
/// adaptive buffers grow to about 400 KiB, each a fresh `mmap` whose pages
/// the kernel zeroes on first touch; when a fill's frames are held a
/// little longer (a client at the live edge, a busy writer) that zeroing
/// doubled a cold blob's CPU (docs/BENCHMARKS.md).
const RECEIVE_BUFFER: usize = 120 << 10;

impl Transport {
    pub(super) fn new(cfg: &UpstreamConfig, tls: rustls::ClientConfig, metrics: Metrics) -> Transport {
        let mut http = HttpConnector::new();
        // The HTTPS connector wraps this one and needs https URLs let through.
        http.enforce_http(false);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        // HTTP/1.1 only, also over TLS: concurrent fills then each have a
        // connection of their own, decrypted on whichever thread is free,
        // where HTTP/2 would put every blob of an upstream through one
        // connection's task and its 16 KiB frames. A cold 256 MiB blob from
        // a TLS docker-registry: 750-780 MB/s against 460-470 over HTTP/2
        // (docs/BENCHMARKS.md).
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .http1_read_buf_exact_size(RECEIVE_BUFFER)
            .build(connector);
        Transport {
            client,
            response_timeout: cfg.response_timeout,
            user_agent: HeaderValue::from_static(concat!("wharf/", env!("CARGO_PKG_VERSION"))),
            upstream: cfg.name.clone(),
            metrics,
        }
    }

    /// Sends `out`, following up to [`MAX_REDIRECTS`] redirects when asked.
    /// A redirect target is only ever what the previous response named.
    pub(super) async fn send(&self, out: &Outgoing<'_>) -> Result<Answer, UpstreamError> {
        let first = Origin::of(&out.uri)?;
        let mut uri = out.uri.clone();
        let mut redirects = 0;
        loop {
            let from_origin = Origin::of(&uri)? == first;
            let authorization = out.authorization.filter(|_| from_origin);
            let response = self.send_hop(out.op, &out.method, &uri, out.accept, authorization).await?;
            if !(out.follow_redirects && is_redirect(response.status())) {
                return Ok(Answer { response, from_origin });
            }
            if redirects == MAX_REDIRECTS {
                return Err(UpstreamError::Protocol(format!("more than {MAX_REDIRECTS} redirects")));
            }
            redirects += 1;
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| UpstreamError::Protocol("redirect without a usable Location".into()))?;
            // 303 means "GET the new URL"; wharf only follows GET and HEAD,
            // for which keeping the method is the same thing.
            uri = resolve_location(&uri, location)?;
        }
    }

    /// One HTTP exchange, counted and timed in the upstream metrics.
    async fn send_hop(
        &self,
        op: &'static str,
        method: &Method,
        uri: &Uri,
        accept: Option<&'static str>,
        authorization: Option<&HeaderValue>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(uri.clone())
            .header(USER_AGENT, self.user_agent.clone());
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        if let Some(authorization) = authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        // The client request this one serves, so the two can be matched up
        // in the upstream's logs (not a secret: it is in wharf's own log).
        if let Some(id) = telemetry::current_id() {
            request = request.header(telemetry::REQUEST_ID, id);
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| UpstreamError::Protocol(format!("cannot build a request: {e}")))?;
        let started = Instant::now();
        let result = tokio::time::timeout(self.response_timeout, self.client.request(request)).await;
        let elapsed = started.elapsed();
        let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let url = loggable(uri);
        let result = match result {
            Ok(Ok(response)) => {
                tracing::debug!(
                    upstream = %self.upstream, %method, %url, status = response.status().as_u16(), elapsed_ms,
                    "upstream request"
                );
                Ok(response)
            }
            Ok(Err(e)) => {
                let error = classify(&e);
                tracing::debug!(upstream = %self.upstream, %method, %url, %error, elapsed_ms, "upstream request failed");
                Err(error)
            }
            Err(_) => {
                tracing::debug!(upstream = %self.upstream, %method, %url, elapsed_ms, "upstream response headers timed out");
                Err(UpstreamError::Timeout)
            }
        };
        let status = match &result {
            Ok(response) => response.status().as_str().to_owned(),
            // `classify` makes only these two.
            Err(e) => e.metric_kind().unwrap_or("connect").to_owned(),
        };
        self.metrics.upstream_requests.with_label_values(&[&self.upstream, op, &status]).inc();
        self.metrics.upstream_request_duration.with_label_values(&[&self.upstream, op]).observe(elapsed.as_secs_f64());
        result
    }
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Scheme, host and port: what decides whether credentials may be sent.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    pub(super) fn of(uri: &Uri) -> Result<Origin, UpstreamError> {
        let (scheme, default_port) = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => ("http", 80),
            Some(s) if s.eq_ignore_ascii_case("https") => ("https", 443),
            _ => return Err(UpstreamError::Protocol(format!("{} is not an http(s) URL", loggable(uri)))),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| UpstreamError::Protocol(format!("{} has no host", loggable(uri))))?;
        Ok(Origin {
            scheme: scheme.to_owned(),
            host: host.to_ascii_lowercase(),
            port: uri.port_u16().unwrap_or(default_port),
        })
    }
}

/// Resolves a `Location` against the URL that answered with it: absolute,
/// scheme-relative (`//host/path`), absolute-path or path-relative.
pub(super) fn resolve_location(base: &Uri, location: &str) -> Result<Uri, UpstreamError> {
    let location = location.trim();
    let bad = |why: &str| UpstreamError::Protocol(format!("redirect Location {why}"));
    let scheme = base.scheme_str().ok_or_else(|| bad("has no base scheme"))?;
    let authority = base.authority().ok_or_else(|| bad("has no base host"))?;
    let absolute = if location.is_empty() {
        return Err(bad("is empty"));
    } else if location.starts_with("//") {
        format!("{scheme}:{location}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else if has_scheme(location) {
        location.to_owned()
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        let dir = if dir.is_empty() { "/" } else { dir };
        format!("{scheme}://{authority}{dir}{location}")
    };
    let uri: Uri = absolute.parse().map_err(|_| bad("is not a valid URL"))?;
    // Checks the scheme (http or https only) and that a host is present.
    Origin::of(&uri)?;
    Ok(uri)
}

/// RFC 3986: `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )` then `:`.
fn has_scheme(s: &str) -> bool {
    match s.split_once(':') {
        Some((scheme, _)) => {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

/// A URL fit for logs: no query, because redirect targets are often signed
/// storage URLs whose query is a credential.
pub(super) fn loggable(uri: &Uri) -> String {
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}{}", uri.path()),
        _ => uri.path().to_owned(),
    }
}

/// Maps a client failure. A connect timeout surfaces as an I/O `TimedOut`
/// somewhere in the source chain; everything else is a transport failure,
/// described by its whole chain (hyper's top-level message says little).
fn classify(e: &hyper_util::client::legacy::Error) -> UpstreamError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return UpstreamError::Timeout;
        }
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    UpstreamError::Connect(message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    fn resolve(base: &str, location: &str) -> Result<String, UpstreamError> {
        resolve_location(&base.parse().unwrap(), location).map(|u| u.to_string())
    }

    #[test]
    fn locations_resolve_against_the_answering_url() {
        let base = "https://reg.example:5000/prefix/v2/a/blobs/sha256:00";
        assert_eq!(resolve(base, "https://cdn.example/x?sig=1").unwrap(), "https://cdn.example/x?sig=1");
        assert_eq!(resolve(base, "//cdn.example/x").unwrap(), "https://cdn.example/x");
        assert_eq!(resolve(base, "/other/path?q").unwrap(), "https://reg.example:5000/other/path?q");
        assert_eq!(resolve(base, "sibling").unwrap(), "https://reg.example:5000/prefix/v2/a/blobs/sibling");
        // A digest-like relative reference is a path, not a scheme.
        assert_eq!(resolve(base, "./sha256:ff").unwrap(), "https://reg.example:5000/prefix/v2/a/blobs/./sha256:ff");
    }

    #[test]
    fn locations_that_are_not_http_urls_are_refused() {
        let base = "https://reg.example/v2/a";
        assert!(matches!(resolve(base, ""), Err(UpstreamError::Protocol(_))));
        assert!(matches!(resolve(base, "file:///etc/passwd"), Err(UpstreamError::Protocol(_))));
        assert!(matches!(resolve(base, "https://bad host/"), Err(UpstreamError::Protocol(_))));
    }

    #[test]
    fn origins_compare_scheme_host_and_effective_port() {
        let o = |s: &str| Origin::of(&s.parse().unwrap()).unwrap();
        assert_eq!(o("https://Reg.Example/v2/"), o("https://reg.example:443/x"));
        assert_ne!(o("https://reg.example/"), o("http://reg.example/"));
        assert_ne!(o("http://127.0.0.1:1000/"), o("http://127.0.0.1:1001/"));
        assert_ne!(o("https://reg.example/"), o("https://cdn.reg.example/"));
    }

    #[test]
    fn logged_urls_drop_the_query() {
        let u: Uri = "https://cdn.example/blob?X-Amz-Signature=secret".parse().unwrap();
        assert_eq!(loggable(&u), "https://cdn.example/blob");
    }
}
