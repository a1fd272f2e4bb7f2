//! The one place that turns errors into HTTP statuses and OCI error JSON.
//! The mapping is an exhaustive match: a new error variant does not compile
//! until someone decides what a client should see.

use http::{header, HeaderValue, Response, StatusCode};

use super::body::{full, Body};
use super::head::HeadError;
use super::router::RouteError;
use crate::limits::RetryAfter;
use crate::auth::AuthError;
use crate::flatpak::served::IndexError;
use crate::oci::ErrorCode;
use crate::pullthrough::{PullError, RouteError as UpstreamRouteError};
use crate::repository::PushError;
use crate::upload::UploadError;
use crate::upstream::UpstreamError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("invalid pagination parameter n: {0:?}")]
    BadPagination(String),
    /// The client (by IP, or by user) is over its inbound rate limit.
    #[error("too many requests; retry after {} s", .0.seconds())]
    RateLimited(RetryAfter),
    /// Authentication or authorization refused the request.
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Push(#[from] PushError),
    #[error(transparent)]
    Upload(#[from] UploadError),
    /// A `digest` or `mount` query parameter that is missing or no digest.
    #[error("invalid digest parameter: {0}")]
    BadDigest(String),
    /// A `Content-Range` or `Content-Length` that cannot describe a chunk.
    #[error("invalid chunk range: {0}")]
    BadRange(String),
    /// A URI or headers over wharf's limits (`head.rs`).
    #[error(transparent)]
    Head(#[from] HeadError),
    /// The Flatpak index: a query it does not understand, or an index
    /// that cannot be loaded.
    #[error(transparent)]
    Index(#[from] crate::flatpak::served::IndexError),
}

impl From<RetryAfter> for ApiError {
    fn from(r: RetryAfter) -> Self {
        ApiError::RateLimited(r)
    }
}

impl ApiError {
    /// Status, OCI code, and extra headers for this error.
    fn classify(&self) -> (StatusCode, ErrorCode, Option<(header::HeaderName, HeaderValue)>) {
        use ErrorCode as C;
        let plain = |code: ErrorCode| (code.status(), code, None);
        let gateway = |status: StatusCode| (status, C::Unknown, None);
        match self {
            ApiError::Route(RouteError::NotFound) => plain(C::NotFound),
            ApiError::Route(RouteError::Name(_)) => plain(C::NameInvalid),
            ApiError::Route(RouteError::Digest(_)) => plain(C::DigestInvalid),
            // A tag that cannot exist names no manifest.
            ApiError::Route(RouteError::Tag(_)) => plain(C::ManifestUnknown),
            ApiError::Unsupported(_) => plain(C::Unsupported),
            ApiError::BadPagination(_) => plain(C::PaginationNumberInvalid),
            ApiError::RateLimited(retry_after) => (
                StatusCode::TOO_MANY_REQUESTS,
                C::TooManyRequests,
                Some((header::RETRY_AFTER, HeaderValue::from(retry_after.seconds()))),
            ),
            ApiError::Auth(e) => match e {
                AuthError::Unauthenticated { challenge, .. } => (
                    StatusCode::UNAUTHORIZED,
                    C::Unauthorized,
                    Some((header::WWW_AUTHENTICATE, challenge.header_value())),
                ),
                AuthError::Denied(_) => plain(C::Denied),
                // A malformed token request: the spec has no code for it.
                AuthError::BadRequest(_) => (StatusCode::BAD_REQUEST, C::Unsupported, None),
                AuthError::Internal(_) => gateway(StatusCode::INTERNAL_SERVER_ERROR),
            },
            ApiError::BadDigest(_) => plain(C::DigestInvalid),
            ApiError::BadRange(_) => plain(C::RangeInvalid),
            // The protocol defines no errors: a plain 400 with the reason.
            ApiError::Index(IndexError::Query(_)) => (StatusCode::BAD_REQUEST, C::Unsupported, None),
            ApiError::Index(IndexError::Metadata(_)) => gateway(StatusCode::SERVICE_UNAVAILABLE),
            // The spec has no code for an oversized head.
            ApiError::Head(HeadError::UriTooLong { .. }) => (StatusCode::URI_TOO_LONG, C::Unsupported, None),
            ApiError::Head(HeadError::HeadersTooLarge { .. }) => {
                (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, C::Unsupported, None)
            }
            ApiError::Push(e) => match e {
                PushError::Denied(_) => plain(C::Denied),
                PushError::NameUnknown => plain(C::NameUnknown),
                PushError::ManifestInvalid(_) => plain(C::ManifestInvalid),
                // The spec's status for a manifest over the registry's
                // limit; its code table has no better code than this.
                PushError::ManifestTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, C::ManifestInvalid, None),
                PushError::ManifestBlobUnknown(_) => plain(C::ManifestBlobUnknown),
                PushError::DigestMismatch { .. } => plain(C::DigestInvalid),
                PushError::ManifestUnknown => plain(C::ManifestUnknown),
                PushError::BlobUnknown => plain(C::BlobUnknown),
                // The extension defines no error codes: a plain 400.
                PushError::SignatureInvalid(_) => (StatusCode::BAD_REQUEST, C::Unsupported, None),
                PushError::Storage(_) | PushError::Metadata(_) => gateway(StatusCode::INTERNAL_SERVER_ERROR),
            },
            ApiError::Upload(e) => match e {
                UploadError::Unknown => plain(C::BlobUploadUnknown),
                // Where the upload stands, so the client can resume.
                UploadError::OutOfOrder { offset, .. } => (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    C::RangeInvalid,
                    HeaderValue::from_str(&upload_range(*offset)).ok().map(|v| (header::RANGE, v)),
                ),
                UploadError::Invalid(_) | UploadError::Body(_) => plain(C::BlobUploadInvalid),
                UploadError::DigestMismatch { .. } => plain(C::DigestInvalid),
                UploadError::Storage(_) | UploadError::Metadata(_) => gateway(StatusCode::INTERNAL_SERVER_ERROR),
            },
            ApiError::Pull(e) => match e {
                PullError::Route(UpstreamRouteError::NoUpstream(_)) => plain(C::NameUnknown),
                PullError::Route(UpstreamRouteError::Name(_)) => plain(C::NameInvalid),
                PullError::ManifestUnknown | PullError::NotAcceptable => plain(C::ManifestUnknown),
                PullError::BlobUnknown => plain(C::BlobUnknown),
                PullError::RangeNotSatisfiable { size } => (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    C::RangeInvalid,
                    HeaderValue::from_str(&format!("bytes */{size}")).ok().map(|v| (header::CONTENT_RANGE, v)),
                ),
                PullError::Upstream(u) => match u {
                    UpstreamError::NotFound => plain(C::NameUnknown),
                    // Docker Hub answers 401 for repositories that do not
                    // exist; to a client that is an unknown name.
                    UpstreamError::Unauthorized => plain(C::NameUnknown),
                    UpstreamError::TooManyRequests { retry_after } => (
                        StatusCode::TOO_MANY_REQUESTS,
                        C::TooManyRequests,
                        retry_after
                            .and_then(|d| HeaderValue::from_str(&d.as_secs().max(1).to_string()).ok())
                            .map(|v| (header::RETRY_AFTER, v)),
                    ),
                    UpstreamError::Timeout => gateway(StatusCode::GATEWAY_TIMEOUT),
                    // wharf's own cap on requests to the upstream is full:
                    // overloaded, not broken; the client may try again.
                    UpstreamError::Saturated => gateway(StatusCode::SERVICE_UNAVAILABLE),
                    UpstreamError::Status(_) | UpstreamError::Connect(_) | UpstreamError::Protocol(_) => {
                        gateway(StatusCode::BAD_GATEWAY)
                    }
                    UpstreamError::Config(_) => gateway(StatusCode::INTERNAL_SERVER_ERROR),
                },
                PullError::Stalled | PullError::FillTimeout => gateway(StatusCode::GATEWAY_TIMEOUT),
                PullError::DigestMismatch { .. }
                | PullError::Truncated { .. }
                | PullError::UpstreamBody(_)
                | PullError::InvalidManifest(_) => gateway(StatusCode::BAD_GATEWAY),
                PullError::Storage(_) | PullError::Metadata(_) | PullError::Internal(_) => {
                    gateway(StatusCode::INTERNAL_SERVER_ERROR)
                }
            },
        }
    }

    pub(crate) fn into_response(self, head_only: bool) -> Response<Body> {
        let (status, code, extra) = self.classify();
        // Logged once, here. A refused upstream login is a 404 to the
        // client, but the operator must see that the credentials are wrong.
        let refused = matches!(self, ApiError::Pull(PullError::Upstream(UpstreamError::Unauthorized)));
        if status.is_server_error() || refused {
            tracing::warn!(request_id = %crate::telemetry::log_id(), error = %self, status = status.as_u16(), "request failed");
        }
        let json = serde_json::json!({
            "errors": [{ "code": code.as_str(), "message": self.to_string(), "detail": serde_json::Value::Null }]
        })
        .to_string();
        let len = json.len();
        let body = if head_only { Body::default() } else { full(json) };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        if let Some((name, value)) = extra {
            h.insert(name, value);
        }
        resp
    }
}

/// The `Range` header of an upload holding `offset` bytes: `0-<last>`,
/// and `0-0` for an empty one, as the reference registry says.
pub(crate) fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::time::Duration;

    async fn render(e: ApiError) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let resp = e.into_response(false);
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn errors_render_as_oci_json_with_spec_statuses() {
        let (s, _, j) = render(PullError::ManifestUnknown.into()).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(j["errors"][0]["code"], "MANIFEST_UNKNOWN");
        let (s, _, j) = render(PullError::Route(UpstreamRouteError::NoUpstream("x".into())).into()).await;
        assert_eq!((s, j["errors"][0]["code"].as_str()), (StatusCode::NOT_FOUND, Some("NAME_UNKNOWN")));
        let (s, _, j) = render(PushError::Denied("read-only").into()).await;
        assert_eq!((s, j["errors"][0]["code"].as_str()), (StatusCode::FORBIDDEN, Some("DENIED")));
        let (s, _, j) = render(ApiError::Unsupported("push")).await;
        assert_eq!((s, j["errors"][0]["code"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("UNSUPPORTED")));
        let (s, _, j) = render(HeadError::UriTooLong { len: 9000 }.into()).await;
        assert_eq!((s, j["errors"][0]["code"].as_str()), (StatusCode::URI_TOO_LONG, Some("UNSUPPORTED")));
        let (s, _, j) = render(HeadError::HeadersTooLarge { len: 40000 }.into()).await;
        assert_eq!((s, j["errors"][0]["code"].as_str()), (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, Some("UNSUPPORTED")));
    }

    #[tokio::test]
    async fn auth_refusals_are_401_with_the_challenge_or_403_denied() {
        let tmp = tempfile::tempdir().unwrap();
        let config = crate::config::Config::load(None, std::iter::empty()).unwrap();
        let auth = crate::auth::Auth::open(&config.auth, tmp.path(), None).unwrap();
        let req = http::Request::builder().uri("/v2/").header("Host", "r.test").body(()).unwrap();
        let scope = crate::auth::Scope::None;
        let caller = crate::auth::Caller::of(&req);
        let e = auth.refuse(caller, &scope, crate::auth::Decision::Challenge, "pull x").unwrap_err();
        let (s, h, j) = render(e.into()).await;
        assert_eq!((s, j["errors"][0]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("UNAUTHORIZED")));
        assert_eq!(h[header::WWW_AUTHENTICATE], "Bearer realm=\"http://r.test/token\",service=\"wharf\"");
        let e = auth.refuse(caller, &scope, crate::auth::Decision::Deny, "pull x").unwrap_err();
        let (s, h, j) = render(e.into()).await;
        assert_eq!((s, j["errors"][0]["code"].as_str()), (StatusCode::FORBIDDEN, Some("DENIED")));
        assert!(h.get(header::WWW_AUTHENTICATE).is_none());
    }

    #[tokio::test]
    async fn push_errors_take_the_spec_codes() {
        let code = |e: ApiError| async move {
            let (s, h, j) = render(e).await;
            (s.as_u16(), j["errors"][0]["code"].as_str().unwrap_or_default().to_owned(), h)
        };
        let (s, c, h) = code(UploadError::OutOfOrder { start: 0, offset: 10 }.into()).await;
        assert_eq!((s, c.as_str(), h.get(header::RANGE).unwrap().to_str().unwrap()), (416, "RANGE_INVALID", "0-9"));
        assert_eq!(code(UploadError::Unknown.into()).await.1, "BLOB_UPLOAD_UNKNOWN");
        let d = crate::oci::Digest::of(crate::oci::Algorithm::Sha256, b"");
        let (s, c, _) = code(UploadError::DigestMismatch { expected: d.clone(), actual: d.clone() }.into()).await;
        assert_eq!((s, c.as_str()), (400, "DIGEST_INVALID"));
        let (s, c, _) = code(PushError::ManifestBlobUnknown(d).into()).await;
        assert_eq!((s, c.as_str()), (400, "MANIFEST_BLOB_UNKNOWN"));
        let (s, c, _) = code(PushError::ManifestTooLarge { limit: 1 }.into()).await;
        assert_eq!((s, c.as_str()), (413, "MANIFEST_INVALID"));
        let (s, c, _) = code(PushError::Denied("read-only").into()).await;
        assert_eq!((s, c.as_str()), (403, "DENIED"));
        assert_eq!(upload_range(0), "0-0");
        assert_eq!(upload_range(1), "0-0");
        assert_eq!(upload_range(100), "0-99");
    }

    /// RFC 9110 section 15.5.17: a 416 to a byte range names the
    /// representation's length, so the client can ask again.
    #[tokio::test]
    async fn an_unsatisfiable_range_is_416_with_the_blob_size() {
        let (s, h, j) = render(PullError::RangeNotSatisfiable { size: 1000 }.into()).await;
        assert_eq!((s, j["errors"][0]["code"].as_str()), (StatusCode::RANGE_NOT_SATISFIABLE, Some("RANGE_INVALID")));
        assert_eq!(h[header::CONTENT_RANGE], "bytes */1000");
        let (_, h, _) = render(PullError::RangeNotSatisfiable { size: u64::MAX }.into()).await;
        assert_eq!(h[header::CONTENT_RANGE], "bytes */18446744073709551615");
    }

    #[tokio::test]
    async fn upstream_failures_become_gateway_errors_and_429_keeps_retry_after() {
        let (s, h, j) = render(PullError::Upstream(UpstreamError::TooManyRequests { retry_after: Some(Duration::from_secs(7)) }).into()).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(j["errors"][0]["code"], "TOOMANYREQUESTS");
        assert_eq!(h.get(header::RETRY_AFTER).unwrap(), "7");
        assert_eq!(render(PullError::Upstream(UpstreamError::Timeout).into()).await.0, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(render(PullError::Upstream(UpstreamError::Status(503)).into()).await.0, StatusCode::BAD_GATEWAY);
        assert_eq!(render(PullError::Upstream(UpstreamError::Connect("refused".into())).into()).await.0, StatusCode::BAD_GATEWAY);
    }

    #[tokio::test]
    async fn an_inbound_rate_limit_is_429_with_retry_after_in_whole_seconds() {
        let (s, h, j) = render(ApiError::RateLimited(RetryAfter::new(Duration::from_millis(1200)))).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(j["errors"][0]["code"], "TOOMANYREQUESTS");
        assert_eq!(h.get(header::RETRY_AFTER).unwrap(), "2");
    }
}
