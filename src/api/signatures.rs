//! The docker API extension for atomic container signatures ("simple
//! signing"), on the registry port: `GET /extensions/v2/<name>/signatures/<digest>`
//! lists the signatures the served version holds for a manifest, `PUT`
//! there adds one to a push repository. Thin: JSON in and out; what a
//! version holds is `repository`'s, and the access gate runs first (a GET
//! needs `pull`, a PUT `push`, like the manifest itself).
//!
//! The JSON is what OpenShift's registry and containers/image speak:
//! `{"signatures":[{"schemaVersion":2,"type":"atomic","name":"<digest>@<id>","content":"<base64>"}]}`.

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};

use super::body::Body;
use super::push::read_manifest;
use super::{json_response, ApiError, Query, Registry, Source};
use crate::metadata::AtomicSignature;
use crate::oci::{Digest, RepositoryName};
use crate::repository::PushError;

/// Set on the registry port's answers (`/v2/` is where clients look):
/// skopeo and podman then read and write signatures here.
// A const name: parsing a header name from text costs more than the rest
// of a warm manifest answer.
pub(super) const SUPPORTS_SIGNATURES: HeaderName = HeaderName::from_static("x-registry-supports-signatures");
const SCHEMA_VERSION: u32 = 2;
const ATOMIC: &str = "atomic";
/// A signature is a few KiB of signed JSON; its base64 in a JSON body is
/// refused past this.
const MAX_SIGNATURE_BODY: usize = 1 << 20;

#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    #[serde(rename = "schemaVersion", alias = "version")]
    version: u32,
    #[serde(rename = "type")]
    kind: String,
    name: String,
    content: String,
}

#[derive(serde::Serialize)]
struct Listing {
    signatures: Vec<Entry>,
}

impl Registry {
    pub(super) async fn signatures<B>(
        &self,
        req: Request<B>,
        name: &RepositoryName,
        digest: &Digest,
        query: &Query,
    ) -> Result<Response<Body>, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: std::fmt::Display,
    {
        let method = req.method().clone();
        match method {
            Method::GET | Method::HEAD => self.list_signatures(name, digest, query, &method).await,
            Method::PUT => self.put_signature(name, digest, req).await,
            _ => Err(ApiError::Unsupported("the signatures extension takes GET and PUT")),
        }
    }

    async fn list_signatures(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        query: &Query,
        method: &Method,
    ) -> Result<Response<Body>, ApiError> {
        let held = match self.source(name, query)? {
            Source::Hosted(d) => self.hosted.signatures(&d, digest).await?,
            // The pull-through cache records no signatures; an empty list
            // (not an error) lets clients that ask for them pull.
            Source::Upstream(_) => Vec::new(),
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let signatures = held
            .into_iter()
            .map(|s| Entry { version: SCHEMA_VERSION, kind: s.kind, name: s.name, content: b64.encode(&s.content) })
            .collect();
        let json = serde_json::to_vec(&Listing { signatures })
            .map_err(|e| ApiError::Pull(crate::pullthrough::PullError::Internal(format!("signatures listing: {e}"))))?;
        Ok(json_response(StatusCode::OK, Bytes::from(json), method))
    }

    async fn put_signature<B>(&self, name: &RepositoryName, digest: &Digest, req: Request<B>) -> Result<Response<Body>, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: std::fmt::Display,
    {
        let repo = self.pushes.existing(name)?;
        let body = read_manifest(req.into_body(), MAX_SIGNATURE_BODY).await?;
        let signature = parse_put(digest, &body).map_err(|m| ApiError::Push(PushError::SignatureInvalid(m)))?;
        self.pushes.add_signature(&repo, signature).await?;
        let mut resp = Response::new(Body::default());
        *resp.status_mut() = StatusCode::CREATED;
        resp.headers_mut().insert(http::header::CONTENT_LENGTH, HeaderValue::from(0));
        Ok(resp)
    }
}

/// One signature as `PUT` sends it, checked: schema version 2, type
/// `atomic`, a name `<digest>@<id>` for the manifest the path names, and
/// content in base64.
fn parse_put(digest: &Digest, body: &[u8]) -> Result<AtomicSignature, String> {
    let e: Entry = serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
    if e.version != SCHEMA_VERSION || e.kind != ATOMIC {
        return Err(format!("only schemaVersion {SCHEMA_VERSION} signatures of type {ATOMIC:?} are stored"));
    }
    let id = e.name.strip_prefix(&format!("{digest}@")).unwrap_or_default();
    if id.is_empty() || id.len() > 255 || id.contains('/') {
        return Err(format!("name {:?} is not \"{digest}@<id>\"", e.name));
    }
    let content = base64::engine::general_purpose::STANDARD
        .decode(e.content.as_bytes())
        .map_err(|err| format!("content is not base64: {err}"))?;
    if content.is_empty() {
        return Err("content is empty".into());
    }
    Ok(AtomicSignature { manifest: digest.clone(), name: e.name, kind: e.kind, content })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_body_is_one_atomic_signature_of_the_path_digest() {
        let d: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let body = |v: u32, t: &str, name: &str, c: &str| {
            format!(r#"{{"schemaVersion":{v},"type":"{t}","name":"{name}","content":"{c}"}}"#).into_bytes()
        };
        let ok = parse_put(&d, &body(2, "atomic", &format!("{d}@abc"), "aGk=")).unwrap();
        assert_eq!((ok.name.as_str(), ok.content.as_slice()), (format!("{d}@abc").as_str(), &b"hi"[..]));
        assert!(parse_put(&d, &body(1, "atomic", &format!("{d}@abc"), "aGk=")).is_err());
        assert!(parse_put(&d, &body(2, "other", &format!("{d}@abc"), "aGk=")).is_err());
        assert!(parse_put(&d, &body(2, "atomic", &format!("sha256:{}@abc", "b".repeat(64)), "aGk=")).is_err());
        assert!(parse_put(&d, &body(2, "atomic", &format!("{d}@"), "aGk=")).is_err());
        assert!(parse_put(&d, &body(2, "atomic", &format!("{d}@abc"), "%%")).is_err());
        assert!(parse_put(&d, &body(2, "atomic", &format!("{d}@abc"), "")).is_err());
        assert!(parse_put(&d, b"{}").is_err());
    }
}
