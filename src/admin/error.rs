//! The one place that turns admin API errors into HTTP statuses and the
//! `{"error": {"code", "message"}}` body. The mapping is an exhaustive
//! match: a new variant does not compile until someone decides what an
//! operator sees. Knows nothing of routes or handlers.

use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::body::{full, Body};
use crate::auth::AuthError;
use crate::metadata::MetadataError;
use crate::storage::StorageError;

/// The challenge of a 401: Basic, which curl and the `wharf` command speak
/// (a bearer token with `registry:admin:*` is accepted too).
const ADMIN_CHALLENGE: &str = "Basic realm=\"wharf admin\"";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AdminError {
    /// The path names nothing, or names a thing that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A bad parameter, path segment or body.
    #[error("{0}")]
    Invalid(String),
    /// The request contradicts what exists.
    #[error("{0}")]
    Conflict(String),
    /// `allow` is the `Allow` header: the methods the path does take.
    #[error("method {method} is not allowed here; use {allow}")]
    MethodNotAllowed { method: String, allow: &'static str },
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// No credentials, or wrong ones; the answer carries a Basic challenge.
    #[error("{0}")]
    Unauthorized(String),
    /// Signed in without the admin role.
    #[error("{0}")]
    Forbidden(String),
    /// wharf failed (database, storage): not the caller's fault.
    #[error("{0}")]
    Internal(String),
    /// Something wharf needs (the metadata database) cannot be reached
    /// now: try again later.
    #[error("{0}")]
    Unavailable(String),
}

impl From<MetadataError> for AdminError {
    fn from(e: MetadataError) -> Self {
        match e {
            MetadataError::NotFound(m) => AdminError::NotFound(m),
            MetadataError::Conflict(m) => AdminError::Conflict(m),
            MetadataError::Invalid(m) => AdminError::Invalid(m),
            MetadataError::Database(_) => AdminError::Internal(e.to_string()),
            MetadataError::Unavailable(_) => AdminError::Unavailable(e.to_string()),
        }
    }
}

impl From<AuthError> for AdminError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthenticated { message, .. } => AdminError::Unauthorized(message),
            AuthError::Denied(m) => AdminError::Forbidden(m),
            AuthError::BadRequest(m) => AdminError::Invalid(m),
            AuthError::Internal(m) => AdminError::Internal(m),
        }
    }
}

impl From<StorageError> for AdminError {
    fn from(e: StorageError) -> Self {
        AdminError::Internal(e.to_string())
    }
}

/// The machine-readable part of an error; scripts branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorCode {
    NotFound,
    Invalid,
    Conflict,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    Unauthorized,
    Forbidden,
    Internal,
    Unavailable,
}

/// Every error response's body.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    code: ErrorCode,
    /// One sentence for a person.
    message: String,
}

impl AdminError {
    fn classify(&self) -> (StatusCode, ErrorCode) {
        match self {
            AdminError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            AdminError::Invalid(_) => (StatusCode::BAD_REQUEST, ErrorCode::Invalid),
            AdminError::Conflict(_) => (StatusCode::CONFLICT, ErrorCode::Conflict),
            AdminError::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed),
            AdminError::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge),
            AdminError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorCode::UnsupportedMediaType)
            }
            AdminError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
            AdminError::Forbidden(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            AdminError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
            AdminError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
        }
    }

    pub(crate) fn into_response(self) -> Response<Body> {
        let (status, code) = self.classify();
        // Logged once, here; an operator's mistakes are the operator's to
        // read in the response, not noise in the log.
        if status.is_server_error() {
            tracing::warn!(error = %self, status = status.as_u16(), "admin request failed");
        }
        let body = ErrorBody { error: ErrorDetail { code, message: self.to_string() } };
        // Serialising two strings cannot fail; the fallback keeps the
        // status right even so.
        let json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let len = json.len();
        let mut resp = Response::new(full(json));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        if let AdminError::MethodNotAllowed { allow, .. } = &self {
            h.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let AdminError::Unauthorized(_) = &self {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(ADMIN_CHALLENGE));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn render(e: AdminError) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let (parts, body) = e.into_response().into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn errors_render_as_one_code_and_message_with_the_matching_status() {
        let cases = [
            (AdminError::NotFound("repository \"x\" does not exist".into()), 404, "not_found"),
            (AdminError::Invalid("limit must be 1-1000".into()), 400, "invalid"),
            (AdminError::Conflict("base_path taken".into()), 409, "conflict"),
            (AdminError::PayloadTooLarge { limit: 65536 }, 413, "payload_too_large"),
            (AdminError::UnsupportedMediaType("send JSON".into()), 415, "unsupported_media_type"),
            (AdminError::Unauthorized("sign in".into()), 401, "unauthorized"),
            (AdminError::Forbidden("not an admin".into()), 403, "forbidden"),
            (AdminError::Internal("disk on fire".into()), 500, "internal"),
        ];
        for (e, status, code) in cases {
            let message = e.to_string();
            let (s, h, j) = render(e).await;
            assert_eq!(s.as_u16(), status, "{code}");
            assert_eq!(h[header::CONTENT_TYPE], "application/json");
            assert_eq!(j, serde_json::json!({"error": {"code": code, "message": message}}));
        }
    }

    #[tokio::test]
    async fn method_not_allowed_names_the_allowed_methods_in_the_allow_header() {
        let (s, h, j) = render(AdminError::MethodNotAllowed { method: "PUT".into(), allow: "GET, HEAD" }).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(h[header::ALLOW], "GET, HEAD");
        assert_eq!(j["error"]["code"], "method_not_allowed");
        assert_eq!(j["error"]["message"], "method PUT is not allowed here; use GET, HEAD");
    }

    #[test]
    fn metadata_errors_keep_their_message_and_map_by_whose_fault() {
        assert_eq!(AdminError::from(MetadataError::NotFound("n".into())), AdminError::NotFound("n".into()));
        assert_eq!(AdminError::from(MetadataError::Conflict("c".into())), AdminError::Conflict("c".into()));
        assert_eq!(AdminError::from(MetadataError::Invalid("i".into())), AdminError::Invalid("i".into()));
        assert_eq!(
            AdminError::from(MetadataError::Database("locked".into())),
            AdminError::Internal("metadata database: locked".into())
        );
    }
}
