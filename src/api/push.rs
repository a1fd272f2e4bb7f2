//! The write side of the registry API: blob uploads (`/blobs/uploads/`),
//! manifest PUT, and manifest, tag and blob DELETE. Thin: headers and
//! query parameters in, [`Uploads`] and [`Pushes`] do the work, headers
//! out. Every handler takes the repository name first, so an access gate
//! can sit in front of them per (name, action).

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::body::Body;
use super::error::upload_range;
use super::{header_value, ApiError, Query, Registry};
use crate::oci::{Digest, Reference, RepositoryName};
use crate::repository::{PushError, Writable};
use crate::upload::{Chunk, UploadError, UploadId};

/// The response headers of an upload session's state.
fn upload_response(status: StatusCode, name: &RepositoryName, id: &UploadId, offset: u64) -> Result<Response<Body>, ApiError> {
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::LOCATION, header_value(&format!("/v2/{name}/blobs/uploads/{id}"))?);
    h.insert(header::RANGE, header_value(&upload_range(offset))?);
    h.insert("Docker-Upload-UUID", header_value(id.as_str())?);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    Ok(resp)
}

/// 201 for content now at `location`.
fn created(location: &str, digest: &Digest) -> Result<Response<Body>, ApiError> {
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = StatusCode::CREATED;
    let h = resp.headers_mut();
    h.insert(header::LOCATION, header_value(location)?);
    h.insert(super::DOCKER_CONTENT_DIGEST, header_value(&digest.to_string())?);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    Ok(resp)
}

fn accepted() -> Response<Body> {
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    resp
}

fn digest_param(value: Option<&str>) -> Result<Digest, ApiError> {
    let v = value.ok_or_else(|| ApiError::BadDigest("the digest parameter is required".into()))?;
    v.parse().map_err(|e| ApiError::BadDigest(format!("{v:?}: {e}")))
}

/// `Content-Range: <start>-<end>` (inclusive), as chunked uploads send it;
/// the `bytes <start>-<end>/<size>` form of RFC 9110 is read too.
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let v = v.trim();
    let v = v.strip_prefix("bytes ").or_else(|| v.strip_prefix("bytes=")).unwrap_or(v);
    let v = v.split('/').next()?;
    let (a, b) = v.split_once('-')?;
    let (start, end): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (end >= start).then_some((start, end))
}

/// Where a request's body claims to go in the upload.
fn chunk_of(headers: &HeaderMap) -> Result<Chunk, ApiError> {
    let length = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::BadRange(format!("Content-Length {v:?}")))?,
        ),
    };
    let range = match headers.get(header::CONTENT_RANGE) {
        None => None,
        Some(v) => Some(
            v.to_str().ok().and_then(parse_content_range).ok_or_else(|| ApiError::BadRange(format!("Content-Range {v:?}")))?,
        ),
    };
    match (range, length) {
        (Some((start, end)), Some(len)) if end - start + 1 != len => Err(ApiError::BadRange(format!(
            "Content-Range {start}-{end} is {} bytes, Content-Length says {len}",
            end - start + 1
        ))),
        (Some((start, end)), _) => Ok(Chunk { start: Some(start), len: Some(end - start + 1) }),
        (None, len) => Ok(Chunk { start: None, len }),
    }
}

impl Registry {
    /// `/v2/<name>/blobs/uploads/[<session>]`, every method.
    pub(super) async fn upload<B>(
        &self,
        name: &RepositoryName,
        session: Option<&str>,
        req: Request<B>,
        query: &Query,
    ) -> Result<Response<Body>, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: std::fmt::Display,
    {
        let method = req.method().clone();
        let Some(session) = session else {
            return match method {
                Method::POST => self.start_upload(name, req, query).await,
                _ => Err(UploadError::Unknown.into()),
            };
        };
        // Read-only names refuse before the session is even looked at.
        self.pushes.check(name)?;
        let id: UploadId = session.parse()?;
        match method {
            Method::GET | Method::HEAD => {
                let offset = self.uploads.offset(name, &id).await?;
                upload_response(StatusCode::NO_CONTENT, name, &id, offset)
            }
            Method::PATCH => {
                let chunk = chunk_of(req.headers())?;
                let offset = self.uploads.append(name, &id, chunk, req.into_body().into_data_stream()).await?;
                upload_response(StatusCode::ACCEPTED, name, &id, offset)
            }
            Method::PUT => {
                let digest = digest_param(query.digest.as_deref())?;
                let chunk = chunk_of(req.headers())?;
                let repo = self.pushes.writable(name).await?;
                // The pin keeps the new object from eviction and gc until
                // its repository row exists.
                let (size, _pin) = self.uploads.finish(name, &id, &digest, chunk, req.into_body().into_data_stream()).await?;
                self.blob_committed(name, &repo, &digest, size).await
            }
            Method::DELETE => {
                self.uploads.cancel(name, &id).await?;
                let mut resp = Response::new(Body::default());
                *resp.status_mut() = StatusCode::NO_CONTENT;
                Ok(resp)
            }
            _ => Err(ApiError::Unsupported("this method is not supported on an upload session")),
        }
    }

    /// `POST /v2/<name>/blobs/uploads/`: a session, a monolithic upload
    /// (`?digest=`), or a cross-repository mount (`?mount=&from=`).
    async fn start_upload<B>(&self, name: &RepositoryName, req: Request<B>, query: &Query) -> Result<Response<Body>, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: std::fmt::Display,
    {
        let repo = self.pushes.writable(name).await?;
        if let Some(mount) = query.mount.as_deref() {
            let digest = digest_param(Some(mount))?;
            let from = query.from.as_deref().and_then(|f| f.parse::<RepositoryName>().ok());
            if let Some(from) = from {
                if self.pushes.mount(&repo, &digest, &from).await? {
                    return created(&format!("/v2/{name}/blobs/{digest}"), &digest);
                }
            }
            // Not mountable: an ordinary session instead, as the spec says.
        } else if query.digest.is_some() {
            let digest = digest_param(query.digest.as_deref())?;
            let chunk = chunk_of(req.headers())?;
            let id = self.uploads.start(name).await?;
            let (size, _pin) = self.uploads.finish(name, &id, &digest, chunk, req.into_body().into_data_stream()).await?;
            return self.blob_committed(name, &repo, &digest, size).await;
        }
        let id = self.uploads.start(name).await?;
        upload_response(StatusCode::ACCEPTED, name, &id, 0)
    }

    async fn blob_committed(&self, name: &RepositoryName, repo: &Writable, digest: &Digest, size: u64) -> Result<Response<Body>, ApiError> {
        self.pushes.blob_uploaded(repo, digest, size).await?;
        created(&format!("/v2/{name}/blobs/{digest}"), digest)
    }

    /// `PUT /v2/<name>/manifests/<reference>`.
    pub(super) async fn put_manifest<B>(
        &self,
        name: &RepositoryName,
        reference: &Reference,
        req: Request<B>,
    ) -> Result<Response<Body>, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: std::fmt::Display,
    {
        let repo = self.pushes.writable(name).await?;
        let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = read_manifest(req.into_body(), self.max_manifest_size).await?;
        let pushed = self.pushes.put_manifest(&repo, reference, content_type.as_deref(), bytes).await?;
        let mut resp = created(&format!("/v2/{name}/manifests/{}", pushed.digest), &pushed.digest)?;
        if let Some(subject) = &pushed.subject {
            resp.headers_mut().insert("OCI-Subject", header_value(&subject.to_string())?);
        }
        Ok(resp)
    }

    /// `DELETE /v2/<name>/manifests/<digest>` (the manifest and its tags)
    /// or `.../manifests/<tag>` (the tag only).
    pub(super) async fn delete_manifest(&self, name: &RepositoryName, reference: &Reference) -> Result<Response<Body>, ApiError> {
        let repo = self.pushes.existing(name)?;
        self.pushes.delete_manifest(&repo, reference).await?;
        Ok(accepted())
    }

    /// `DELETE /v2/<name>/blobs/<digest>`.
    pub(super) async fn delete_blob(&self, name: &RepositoryName, digest: &Digest) -> Result<Response<Body>, ApiError> {
        let repo = self.pushes.existing(name)?;
        self.pushes.delete_blob(&repo, digest).await?;
        Ok(accepted())
    }
}

/// A manifest body, refused once it grows past `limit` (it is held in
/// memory, as manifests are).
pub(super) async fn read_manifest<B>(mut body: B, limit: usize) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin,
    B::Error: std::fmt::Display,
{
    let too_large = || ApiError::Push(PushError::ManifestTooLarge { limit });
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large());
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::Push(PushError::ManifestInvalid(format!("body failed: {e}"))))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse_in_both_forms() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 100-199/1000"), Some((100, 199)));
        assert_eq!(parse_content_range(" 5-5 "), Some((5, 5)));
        assert_eq!(parse_content_range("9-2"), None);
        assert_eq!(parse_content_range("abc"), None);
        assert_eq!(parse_content_range("-5"), None);
    }

    #[test]
    fn a_chunk_takes_its_start_from_the_range_and_its_length_from_either_header() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        let c = chunk_of(&headers(&[("content-range", "10-19"), ("content-length", "10")])).unwrap();
        assert_eq!(c, Chunk { start: Some(10), len: Some(10) });
        let c = chunk_of(&headers(&[("content-range", "10-19")])).unwrap();
        assert_eq!(c, Chunk { start: Some(10), len: Some(10) });
        assert_eq!(chunk_of(&headers(&[("content-length", "7")])).unwrap(), Chunk { start: None, len: Some(7) });
        assert_eq!(chunk_of(&HeaderMap::new()).unwrap(), Chunk { start: None, len: None });
        assert!(chunk_of(&headers(&[("content-range", "10-19"), ("content-length", "5")])).is_err());
        assert!(chunk_of(&headers(&[("content-range", "bogus")])).is_err());
    }
}
