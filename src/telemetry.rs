//! Per-request telemetry of the registry port: the request id (a client's
//! `X-Request-Id` kept, else one made), what the request learned on its way
//! (its cache result, the upstream it went to) and, when its response body
//! has ended, the one access-log line and the HTTP metrics.
//!
//! The request's context lives in a tokio task-local for the duration of
//! the handler, so the upstream client can send the id on and the
//! pull-through layer can note the cache result without every signature in
//! between carrying them. A blob fill, detached from the request, is given
//! the context of the request that started it; a background task has its
//! own (`task-<id>`).
//!
//! Must not touch: routing, statuses, what a request does.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::api::body::{Body, BodyError};
use crate::metrics::{method_label, Metrics};

/// The header carrying a request's id, in and out, and on to upstreams.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// A client's id is kept only if it is this short and made of
/// [`is_id_char`]: it goes into logs and upstream requests verbatim.
const MAX_ID_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: Arc<RequestContext>;
}

/// What one request has learned so far.
pub(crate) struct RequestContext {
    id: HeaderValue,
    /// The most telling cache result noted (see [`cache_rank`]), 0 for none.
    cache: AtomicU8,
    upstream: OnceLock<String>,
}

impl RequestContext {
    /// A context for a request with `headers`: its `X-Request-Id` if usable,
    /// else a fresh id.
    pub(crate) fn new(headers: &HeaderMap) -> Arc<RequestContext> {
        let id = headers
            .get(REQUEST_ID)
            .filter(|v| !v.is_empty() && v.len() <= MAX_ID_LEN && v.as_bytes().iter().all(|b| is_id_char(*b)))
            .cloned()
            .unwrap_or_else(fresh_id);
        Arc::new(RequestContext { id, cache: AtomicU8::new(0), upstream: OnceLock::new() })
    }

    /// The context of background task `id`: upstream requests made for it
    /// carry `task-<id>`.
    pub(crate) fn for_task(id: u64) -> Arc<RequestContext> {
        let id = HeaderValue::from_str(&format!("task-{id}")).unwrap_or_else(|_| fresh_id());
        Arc::new(RequestContext { id, cache: AtomicU8::new(0), upstream: OnceLock::new() })
    }

    pub(crate) fn id(&self) -> &HeaderValue {
        &self.id
    }

    fn id_str(&self) -> &str {
        // Only visible ASCII gets in (`is_id_char`, `fresh_id`).
        self.id.to_str().unwrap_or("-")
    }

    fn cache(&self) -> &'static str {
        match self.cache.load(Ordering::Relaxed) {
            1 => "hit",
            2 => "coalesced",
            3 => "stale",
            4 => "miss",
            _ => "-",
        }
    }
}

fn is_id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@' | b'+' | b'=' | b'/')
}

/// A process-unique id: a random prefix drawn once, and a counter. Cheaper
/// than asking the kernel for randomness on every request, and unique
/// across restarts all the same.
fn fresh_id() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut b = [0u8; 8];
        // Without randomness the ids are still unique within the process.
        let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
        u64::from_le_bytes(b) ^ u64::from(std::process::id())
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // The prefix's 16 hex digits and the counter's low 8, written by hand:
    // `format!` here was a measurable part of a warm request.
    let mut text = [0u8; 24];
    let digits = (u128::from(prefix) << 32) | u128::from(n as u32);
    for (i, b) in text.iter_mut().enumerate() {
        *b = b"0123456789abcdef"[((digits >> (4 * (23 - i))) & 0xf) as usize];
    }
    // Hex digits only: always a valid header value.
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Runs a request's handler `f` with `ctx` as the current request. Unlike
/// [`scope`], its future holds `f` once: a request's future is moved into
/// place by hyper, so its size is paid on every request.
pub(crate) fn scope_request<F: Future>(ctx: Arc<RequestContext>, f: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(ctx, f)
}

/// Runs `f` with `ctx` as the current request (if any).
pub(crate) async fn scope<F: Future>(ctx: Option<Arc<RequestContext>>, f: F) -> F::Output {
    match ctx {
        Some(ctx) => CURRENT.scope(ctx, f).await,
        None => f.await,
    }
}

/// The current request's context, to hand to work it starts elsewhere.
pub(crate) fn current() -> Option<Arc<RequestContext>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// The current request's id, for an upstream request made on its behalf.
pub(crate) fn current_id() -> Option<HeaderValue> {
    CURRENT.try_with(|c| c.id.clone()).ok()
}

/// The current request's id as text for a log line, `-` outside a request.
pub(crate) fn log_id() -> String {
    CURRENT.try_with(|c| c.id_str().to_owned()).unwrap_or_else(|_| "-".to_owned())
}

/// Notes a cache result for the current request's log line. A request that
/// looks up several things (a tag, then its manifest) is logged with the
/// most telling: miss over stale over coalesced over hit.
pub(crate) fn note_cache(result: &str) {
    let rank = cache_rank(result);
    let _ = CURRENT.try_with(|c| c.cache.fetch_max(rank, Ordering::Relaxed));
}

fn cache_rank(result: &str) -> u8 {
    match result {
        "hit" => 1,
        "coalesced" => 2,
        "stale" => 3,
        "miss" => 4,
        _ => 0,
    }
}

/// Notes the upstream the current request was routed to.
pub(crate) fn note_upstream(name: &str) {
    let _ = CURRENT.try_with(|c| c.upstream.get_or_init(|| name.to_owned()).len());
}

/// One registry request being accounted: counted in flight from
/// [`Access::begin`] until its response body ends or is dropped, then
/// logged and counted once. A request dropped before its response existed
/// (the client went away) is counted with status 499.
pub(crate) struct Access {
    metrics: Metrics,
    ctx: Arc<RequestContext>,
    started: Instant,
    method: Method,
    /// For the log line; a clone shares the request's bytes.
    uri: http::Uri,
    route: &'static str,
    status: Option<http::StatusCode>,
    bytes: u64,
    /// The response's Content-Length, if it had one.
    length: Option<u64>,
    /// The body reached its end (rather than an error or a hang-up).
    complete: bool,
}

impl Access {
    pub(crate) fn begin(metrics: &Metrics, ctx: Arc<RequestContext>, method: Method, uri: http::Uri) -> Access {
        metrics.http_in_flight.inc();
        Access {
            metrics: metrics.clone(),
            ctx,
            started: Instant::now(),
            method,
            uri,
            route: "unknown",
            status: None,
            bytes: 0,
            length: None,
            complete: false,
        }
    }

    /// The route kind (one of `metrics::ROUTES`), once known.
    pub(crate) fn route(&mut self, route: &'static str) {
        self.route = route;
    }

    /// The response, whose body now carries this record to its end.
    pub(crate) fn respond(mut self, resp: http::Response<Body>) -> http::Response<Body> {
        self.status = Some(resp.status());
        self.length = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let (parts, body) = resp.into_parts();
        http::Response::from_parts(parts, Counted { inner: body, access: self }.boxed_unsync())
    }
}

impl Drop for Access {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        // 499: the client went away before there was a response (nginx's code).
        let status = self.status.unwrap_or(CLIENT_CLOSED);
        let m = &self.metrics;
        m.http_in_flight.dec();
        m.http_requests.with_label_values(&[self.route, method_label(&self.method), status.as_str()]).inc();
        m.observe_request(self.route, elapsed.as_secs_f64());
        tracing::info!(
            request_id = self.ctx.id_str(),
            method = %self.method,
            route = self.route,
            path = self.uri.path(),
            status = status.as_u16(),
            bytes = self.bytes,
            complete = self.complete,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            cache = self.ctx.cache(),
            upstream = self.ctx.upstream.get().map_or("-", String::as_str),
            "request"
        );
    }
}

const CLIENT_CLOSED: http::StatusCode = match http::StatusCode::from_u16(499) {
    Ok(s) => s,
    Err(_) => http::StatusCode::BAD_REQUEST,
};

/// A response body that counts what it sends; its [`Access`] is accounted
/// when it is dropped (hyper drops it at the end, or on a hang-up).
struct Counted {
    inner: Body,
    access: Access,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        // Both fields are Unpin (the inner body is boxed).
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.access.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => this.access.complete = true,
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        // hyper never polls a body that says it is empty (HEAD, 304), nor
        // one whose Content-Length it has sent in full.
        if self.inner.is_end_stream() || self.access.length == Some(self.access.bytes) {
            self.access.complete = true;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    fn with_id(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn a_clients_id_is_kept_when_usable_and_replaced_otherwise() {
        assert_eq!(RequestContext::new(&with_id("abc-123_x.y")).id(), "abc-123_x.y");
        let long = "a".repeat(MAX_ID_LEN + 1);
        for bad in ["has space", "quote\"", long.as_str(), ""] {
            let id = RequestContext::new(&with_id(bad)).id().clone();
            assert_ne!(id, bad);
            assert_eq!(id.len(), 24, "a fresh id replaces {bad:?}");
        }
        let (a, b) = (RequestContext::new(&HeaderMap::new()), RequestContext::new(&HeaderMap::new()));
        assert_ne!(a.id(), b.id(), "fresh ids differ");
        let (a, b) = (a.id().as_bytes(), b.id().as_bytes());
        assert!(a.iter().all(u8::is_ascii_hexdigit), "{a:?}");
        assert_eq!(a[..16], b[..16], "one prefix per process");
        let count = |id: &[u8]| u32::from_str_radix(std::str::from_utf8(&id[16..]).unwrap(), 16).unwrap();
        // Other tests make ids at the same time: later, not necessarily next.
        assert!(count(b) > count(a), "then a counter");
    }

    #[tokio::test]
    async fn notes_reach_the_current_request_and_the_most_telling_result_wins() {
        let ctx = RequestContext::new(&HeaderMap::new());
        scope(Some(ctx.clone()), async {
            note_cache("hit");
            note_cache("miss");
            note_cache("coalesced");
            note_upstream("up");
            note_upstream("other");
            assert_eq!(current_id().as_ref(), Some(ctx.id()));
        })
        .await;
        assert_eq!(ctx.cache(), "miss");
        assert_eq!(ctx.upstream.get().map(String::as_str), Some("up"));
        // Outside a request, notes go nowhere and there is no id.
        note_cache("hit");
        assert!(current_id().is_none());
    }

    #[tokio::test]
    async fn a_request_is_counted_once_when_its_body_ends() {
        let metrics = Metrics::new().unwrap();
        let mut access = Access::begin(&metrics, RequestContext::new(&HeaderMap::new()), Method::GET, http::Uri::from_static("/v2/"));
        access.route("blob");
        assert_eq!(metrics.http_in_flight.get(), 1);
        let resp = access.respond(http::Response::new(crate::api::body::full(Bytes::from_static(b"12345"))));
        assert_eq!(metrics.http_in_flight.get(), 1, "still in flight while the body is unsent");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 5);
        assert_eq!(metrics.http_in_flight.get(), 0);
        let text = metrics.render();
        assert!(text.contains(r#"wharf_http_requests_total{method="GET",route="blob",status="200"} 1"#), "{text}");
        assert!(text.contains(r#"wharf_http_request_duration_seconds_count{route="blob"} 1"#), "{text}");
    }

    #[test]
    fn a_request_dropped_before_its_response_counts_as_499() {
        let metrics = Metrics::new().unwrap();
        drop(Access::begin(&metrics, RequestContext::new(&HeaderMap::new()), Method::HEAD, http::Uri::from_static("/v2/")));
        assert_eq!(metrics.http_in_flight.get(), 0);
        assert!(metrics.render().contains(r#"wharf_http_requests_total{method="HEAD",route="unknown",status="499"} 1"#));
    }
}
