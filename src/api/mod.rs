//! The registry API: routes a request, calls the pull-through, repository
//! and upload layers, and shapes the HTTP response. Handlers are thin;
//! statuses and OCI codes are chosen only in [`error`]. The write side
//! (uploads, manifest PUT, DELETE) is in [`push`]; the docker API
//! extension for atomic signatures (`/extensions/v2/`) in [`signatures`].
//! Never touches storage keys or upstreams directly.

mod access;
pub(crate) mod body;
mod error;
pub(crate) mod flatpak;
mod head;
mod push;
pub(crate) mod range;
pub(crate) mod router;
mod signatures;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderName, HeaderValue, Method, Request, Response, StatusCode};

use crate::limits::{ClientAddr, RateLimits};
use crate::auth::{Auth, Principal};
use crate::metrics::Metrics;
use crate::oci::media::Accept;
use crate::oci::{Digest, Reference, RepositoryName};
use crate::pullthrough::{paginate, referrers_index, BlobSource, Piece, PullError, PullThrough, RouteError, TagsPage};
use crate::storage::{Opened, Want};
use crate::repository::{Distributions, Hosted, Pushes, Served};
use crate::telemetry::{self, Access, RequestContext};
use crate::sendfile::FileSender;
use crate::upload::Uploads;
use body::{full, Body};
use range::ByteRange;
pub(crate) use error::ApiError;
use router::Route;

// Header names every answer carries, as consts: made from text they are
// parsed on every insert.
const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub(crate) const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
/// Room for every header of a manifest or blob answer, the three `handle`
/// adds included, so the map never grows on the way.
const ANSWER_HEADERS: usize = 8;
const MAX_PAGE: usize = 10_000;

/// The registry API service; cheap to clone into each connection.
#[derive(Clone)]
pub(crate) struct Registry {
    pull: PullThrough,
    distributions: Distributions,
    hosted: Hosted,
    pushes: Pushes,
    uploads: Uploads,
    metrics: Metrics,
    limits: RateLimits,
    auth: Auth,
    max_manifest_size: usize,
    /// Flatpak's registry index, when `[flatpak] index` is on.
    flatpak: Option<flatpak::FlatpakIndex>,
}

/// What the registry needs for pushes.
pub(crate) struct PushParts {
    pub(crate) pushes: Pushes,
    pub(crate) uploads: Uploads,
    pub(crate) max_manifest_size: usize,
}

/// What a repository name in a request addresses: a distribution (served
/// from its repository version) or an upstream (pulled through).
enum Source {
    Hosted(std::sync::Arc<Served>),
    Upstream(crate::pullthrough::Target),
}

/// Query parameters the read API understands.
#[derive(Default)]
struct Query {
    n: Option<String>,
    last: Option<String>,
    ns: Option<String>,
    artifact_type: Option<String>,
    digest: Option<String>,
    /// A blob to mount, and (`from`) the repository it comes from.
    mount: Option<String>,
    from: Option<String>,
}

impl Query {
    fn parse(q: Option<&str>) -> Query {
        let mut out = Query::default();
        for (k, v) in form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
            match k.as_ref() {
                "n" => out.n = Some(v.into_owned()),
                "last" => out.last = Some(v.into_owned()),
                "ns" => out.ns = Some(v.into_owned()),
                "artifactType" => out.artifact_type = Some(v.into_owned()),
                "digest" => out.digest = Some(v.into_owned()),
                "mount" => out.mount = Some(v.into_owned()),
                "from" => out.from = Some(v.into_owned()),
                _ => {}
            }
        }
        out
    }

    fn n(&self) -> Result<Option<usize>, ApiError> {
        match &self.n {
            None => Ok(None),
            Some(s) => s
                .parse::<usize>()
                .map(|n| Some(n.min(MAX_PAGE)))
                .map_err(|_| ApiError::BadPagination(s.clone())),
        }
    }
}

impl Registry {
    pub(crate) fn new(
        pull: PullThrough,
        distributions: Distributions,
        hosted: Hosted,
        push: PushParts,
        metrics: Metrics,
        auth: Auth,
    ) -> Registry {
        let PushParts { pushes, uploads, max_manifest_size } = push;
        let limits = RateLimits::new(&Default::default(), &metrics);
        Registry { pull, distributions, hosted, pushes, uploads, metrics, max_manifest_size, limits, auth, flatpak: None }
    }

    /// Serves Flatpak's registry index (`/index/static`, `/index/dynamic`).
    pub(crate) fn with_flatpak_index(self, index: flatpak::FlatpakIndex) -> Registry {
        Registry { flatpak: Some(index), ..self }
    }

    /// Enforces `limits` on every request (none by default).
    pub(crate) fn with_limits(self, limits: RateLimits) -> Registry {
        Registry { limits, ..self }
    }

    /// Distributions first: an operator's base_path wins over the default
    /// upstream (base_paths under an upstream's name are refused).
    fn source(&self, name: &RepositoryName, query: &Query) -> Result<Source, ApiError> {
        if let Some(d) = self.distributions.lookup(name.as_str()) {
            return Ok(Source::Hosted(d));
        }
        let target = self.pull.resolve(name, query.ns.as_deref())?;
        telemetry::note_upstream(&target.upstream.config().name);
        Ok(Source::Upstream(target))
    }

    /// Serves one request; never fails (errors become OCI error responses).
    /// Its id, access-log line and HTTP metrics are `telemetry`'s.
    pub(crate) async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
        B::Error: std::fmt::Display,
    {
        let ctx = RequestContext::new(req.headers());
        let mut record = Access::begin(&self.metrics, ctx.clone(), req.method().clone(), req.uri().clone());
        let path = req.uri().path();
        let route = if path == access::TOKEN_PATH { Ok(None) } else { router::route(path).map(Some) };
        record.route(match &route {
            Ok(None) => "token",
            Ok(Some(r)) => r.kind(),
            Err(_) => "unknown",
        });
        let head_only = req.method() == Method::HEAD;
        let request_id = ctx.id().clone();
        // The error's response is made in the request's scope, so its log
        // line carries the request id.
        let mut resp = telemetry::scope_request(ctx, async {
            match self.dispatch(req, route).await {
                Ok(resp) => resp,
                Err(e) => e.into_response(head_only),
            }
        })
        .await;
        resp.headers_mut().insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
        // Clients learn it from `/v2/`, answered 401 or not (their first
        // probe is anonymous); on every answer, like the API version.
        resp.headers_mut().insert(signatures::SUPPORTS_SIGNATURES, HeaderValue::from_static("1"));
        resp.headers_mut().insert(telemetry::REQUEST_ID, request_id);
        record.respond(resp)
    }

    /// Routes a request to its handler, after the rate limits and the
    /// access gate (`access.rs`): no handler sees a request it was not
    /// allowed. `route` is None for the token endpoint.
    async fn dispatch<B>(&self, req: Request<B>, route: Result<Option<Route>, router::RouteError>) -> Result<Response<Body>, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
        B::Error: std::fmt::Display,
    {
        head::check(&req)?;
        if let Some(ClientAddr(peer)) = req.extensions().get::<ClientAddr>() {
            self.limits.check_client(*peer, req.headers())?;
        }
        let Some(route) = route? else {
            return Box::pin(self.token(&req)).await;
        };
        let query = Query::parse(req.uri().query());
        let principal = self.admit(&req, &route, &query).await?;
        if let Some(user) = principal.user() {
            self.limits.check_user(user)?;
        }
        let method = req.method().clone();
        let read = method == Method::GET || method == Method::HEAD;
        match route {
            Route::Base if read => Ok(json_response(StatusCode::OK, Bytes::from_static(b"{}"), &method)),
            Route::Signatures { name, digest } => Box::pin(self.signatures(req, &name, &digest, &query)).await,
            Route::FlatpakIndex { dynamic } => Box::pin(self.flatpak_index(&req, &principal, dynamic)).await,
            Route::Catalog if read => Box::pin(self.catalog(&query, &method, &principal)).await,
            Route::Manifest { name, reference } if read => self.manifest(&req, &name, &reference, &query).await,
            Route::Blob { name, .. } if method == Method::HEAD && self.is_push_probe(&principal, &name, &query) => {
                Err(PullError::BlobUnknown.into())
            }
            Route::Blob { name, digest } if read => self.blob(&req, &name, &digest, &query).await,
            Route::Tags { name } if read => Box::pin(self.tags(&name, &query, &method)).await,
            Route::Referrers { name, digest } if read => Box::pin(self.referrers(&name, &digest, &query, &method)).await,
            Route::Upload { name, session } => Box::pin(self.upload(&name, session.as_deref(), req, &query)).await,
            Route::Manifest { name, reference } if method == Method::PUT => Box::pin(self.put_manifest(&name, &reference, req)).await,
            Route::Manifest { name, reference } if method == Method::DELETE => Box::pin(self.delete_manifest(&name, &reference)).await,
            Route::Blob { name, digest } if method == Method::DELETE => Box::pin(self.delete_blob(&name, &digest)).await,
            _ => Err(ApiError::Unsupported("this method is not supported here")),
        }
    }

    async fn manifest<B>(
        &self,
        req: &Request<B>,
        name: &RepositoryName,
        reference: &Reference,
        query: &Query,
    ) -> Result<Response<Body>, ApiError> {
        let accept = Accept::parse(req.headers().get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()));
        let manifest = match self.source(name, query)? {
            // Boxed: its future is large, and inline it would make every
            // request's future carry (and copy) that space.
            Source::Hosted(d) => Box::pin(self.hosted.manifest(&d, reference, &accept)).await?,
            Source::Upstream(target) => self.pull.manifest(&target, reference, &accept).await?,
        };
        let etag = &manifest.headers.etag;
        let not_modified = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().as_bytes() == etag.as_bytes()));
        let (status, body) = if not_modified {
            (StatusCode::NOT_MODIFIED, Body::default())
        } else if req.method() == Method::HEAD {
            (StatusCode::OK, Body::default())
        } else {
            (StatusCode::OK, full(manifest.bytes.clone()))
        };
        let content_type = manifest.headers.content_type.clone().ok_or_else(|| {
            PullError::Internal(format!("media type {:?} cannot be a header value", manifest.info.media_type))
        })?;
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.reserve(ANSWER_HEADERS);
        h.insert(header::CONTENT_TYPE, content_type);
        if status == StatusCode::OK {
            h.insert(header::CONTENT_LENGTH, manifest.headers.content_length.clone());
        }
        h.insert(DOCKER_CONTENT_DIGEST, manifest.headers.digest.clone());
        h.insert(header::ETAG, etag.clone());
        Ok(resp)
    }

    async fn blob<B>(
        &self,
        req: &Request<B>,
        name: &RepositoryName,
        digest: &Digest,
        query: &Query,
    ) -> Result<Response<Body>, ApiError> {
        let head_only = req.method() == Method::HEAD;
        let range = req.headers().get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(ByteRange::parse);
        // With S3, what a read with no local copy fetches from the bucket.
        let want = match (head_only, &range) {
            (true, _) => Want::Head,
            (false, Some(_)) => Want::Part,
            (false, None) => Want::Whole,
        };
        let source = match self.source(name, query)? {
            // Boxed, as for manifests.
            Source::Hosted(d) => Box::pin(self.hosted.blob(&d, digest, want)).await?,
            Source::Upstream(target) => self.pull.blob(&target, digest, want).await?,
        };
        if let BlobSource::Stored(Opened::Elsewhere { location, .. }) = &source {
            return redirect(digest, location);
        }
        let size = match &source {
            BlobSource::Stored(obj) => Some(obj.size()),
            BlobSource::Filling { size, .. } | BlobSource::Remote { size } => *size,
        };
        // A range is honoured only when the size is known; otherwise the
        // whole blob is sent (RFC 9110 lets a server ignore Range).
        let span = match (range, size) {
            (Some(r), Some(size)) => r.resolve(size).map_err(|_| PullError::RangeNotSatisfiable { size })?,
            _ => None,
        };
        let (start, end) = match (span, size) {
            (Some((s, e)), _) => (s, Some(e)),
            (None, Some(size)) => (0, Some(size)),
            (None, None) => (0, None),
        };
        let body = if head_only {
            Body::default()
        } else {
            match source {
                BlobSource::Stored(obj) => {
                    let end = end.unwrap_or(obj.size());
                    // The opaque zero-copy capability of a plain HTTP/1.x
                    // connection, if this request came on one.
                    let sender = req.extensions().get::<FileSender>().cloned();
                    let zero_copied = self.metrics.sendfile_bytes.clone();
                    match obj {
                        Opened::Local(obj) => {
                            self.counted("cache", body::stored_range(obj.file, start, end, sender, zero_copied))
                        }
                        Opened::Arriving(a) => self.counted("cache", body::arriving_range(a, start, end, sender, zero_copied)),
                        Opened::InBucket(b) => {
                            let bytes = b.read(start, end).await.map_err(PullError::from)?;
                            self.counted("cache", bytes)
                        }
                        // Answered above.
                        Opened::Elsewhere { .. } => Body::default(),
                    }
                }
                BlobSource::Filling { fill, fetched, .. } => {
                    let source = if fetched { "upstream" } else { "cache" };
                    let sender = req.extensions().get::<FileSender>().cloned();
                    let zero_copied = self.metrics.sendfile_bytes.clone();
                    // Bytes a reader behind the fill's window finds on disk
                    // go out as stored bytes do: zero-copy where possible.
                    let pieces = fill.body(start, end).flat_map(move |piece| match piece {
                        Ok(Piece::Received(bytes)) => futures_util::stream::iter([Ok(bytes)]).left_stream(),
                        Ok(Piece::OnDisk { file, start, end }) => {
                            body::stored_range(file, start, end, sender.clone(), zero_copied.clone())
                                .map(|r| r.map_err(PullError::from))
                                .right_stream()
                        }
                        Err(e) => futures_util::stream::iter([Err(e)]).left_stream(),
                    });
                    self.counted(source, pieces)
                }
                BlobSource::Remote { .. } => Body::default(),
            }
        };
        let mut resp = Response::new(body);
        let h = resp.headers_mut();
        h.reserve(ANSWER_HEADERS + 1);
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        h.insert(DOCKER_CONTENT_DIGEST, header_value(&digest.to_string())?);
        h.insert(header::ETAG, header_value(&format!("\"{digest}\""))?);
        if size.is_some() {
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        }
        if let Some(end) = end {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
        }
        if let (Some((s, e)), Some(size)) = (span, size) {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            resp.headers_mut()
                .insert(header::CONTENT_RANGE, header_value(&format!("bytes {s}-{}/{size}", e - 1))?);
        }
        Ok(resp)
    }

    /// A blob body that counts the bytes it sends as served from `source`.
    fn counted<E>(&self, source: &str, s: impl futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static) -> Body
    where
        E: Into<body::BodyError> + 'static,
    {
        let served = self.metrics.served_bytes.with_label_values(&[source]);
        body::stream(s.inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                served.inc_by(bytes.len() as u64);
            }
        }))
    }

    async fn tags(&self, name: &RepositoryName, query: &Query, method: &Method) -> Result<Response<Body>, ApiError> {
        let n = query.n()?;
        let page = match self.source(name, query)? {
            Source::Hosted(d) => self.hosted.tags(&d, n, query.last.as_deref()).await?,
            Source::Upstream(target) => self.pull.tags(&target, n, query.last.as_deref()).await?,
        };
        let json = serde_json::json!({ "name": name.as_str(), "tags": page.tags });
        paged_response(&format!("/v2/{name}/tags/list"), n, &page, json, method)
    }

    async fn catalog(&self, query: &Query, method: &Method, principal: &Principal) -> Result<Response<Body>, ApiError> {
        let n = query.n()?;
        // Pull-through repositories as clients address them, and every
        // distribution's base_path: those the client may pull.
        let mut all = self.pull.repository_names().await?;
        all.extend(self.distributions.base_paths());
        all.retain(|name| self.listed(principal, name));
        all.sort();
        all.dedup();
        let page = paginate(&all, n, query.last.as_deref());
        let json = serde_json::json!({ "repositories": page.tags });
        paged_response("/v2/_catalog", n, &page, json, method)
    }

    async fn referrers(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        query: &Query,
        method: &Method,
    ) -> Result<Response<Body>, ApiError> {
        let artifact_type = query.artifact_type.as_deref();
        let index = match self.source(name, query) {
            Ok(Source::Hosted(d)) => self.hosted.referrers(&d, digest, artifact_type).await?,
            Ok(Source::Upstream(target)) => self.pull.referrers(&target, digest, artifact_type).await?,
            // A name no repository has yet, that a push would create: it
            // has no referrers, which the spec answers with an empty
            // index, never a 404.
            Err(ApiError::Pull(PullError::Route(RouteError::NoUpstream(_)))) if matches!(self.pushes.check(name), Ok(None)) => {
                referrers_index(Vec::new())
            }
            Err(e) => return Err(e),
        };
        let mut resp = json_response(StatusCode::OK, index, method);
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::oci::media::OCI_INDEX));
        if query.artifact_type.is_some() {
            resp.headers_mut().insert("OCI-Filters-Applied", HeaderValue::from_static("artifactType"));
        }
        Ok(resp)
    }
}

fn header_value(s: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(s).map_err(|_| ApiError::Pull(PullError::Internal(format!("invalid header value {s:?}"))))
}

fn json_response(status: StatusCode, json: Bytes, method: &Method) -> Response<Body> {
    let len = json.len();
    let body = if *method == Method::HEAD { Body::default() } else { full(json) };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// A blob GET answered with where to fetch it (`storage.s3.redirect`): 307,
/// so the client repeats the GET (and its `Range`) at the presigned URL.
fn redirect(digest: &Digest, location: &str) -> Result<Response<Body>, ApiError> {
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    let h = resp.headers_mut();
    h.insert(header::LOCATION, header_value(location)?);
    h.insert(DOCKER_CONTENT_DIGEST, header_value(&digest.to_string())?);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    Ok(resp)
}

/// A page of a listing as JSON, with a `Link` to the next page if any.
fn paged_response(
    path: &str,
    n: Option<usize>,
    page: &TagsPage,
    json: serde_json::Value,
    method: &Method,
) -> Result<Response<Body>, ApiError> {
    let mut resp = json_response(StatusCode::OK, Bytes::from(json.to_string()), method);
    if let Some(link) = next_link(path, n, page) {
        resp.headers_mut().insert(header::LINK, header_value(&link)?);
    }
    Ok(resp)
}

/// `Link: <path?n=N&last=L>; rel="next"` when another page follows.
fn next_link(path: &str, n: Option<usize>, page: &TagsPage) -> Option<String> {
    if !page.has_more {
        return None;
    }
    let last = page.tags.last()?;
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(n) = n {
        q.append_pair("n", &n.to_string());
    }
    q.append_pair("last", last);
    Some(format!("<{path}?{}>; rel=\"next\"", q.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_points_after_the_last_entry() {
        let page = TagsPage { tags: vec!["a".into(), "b c".into()], has_more: true };
        assert_eq!(next_link("/v2/x/tags/list", Some(2), &page).unwrap(), "</v2/x/tags/list?n=2&last=b+c>; rel=\"next\"");
        let done = TagsPage { tags: vec!["a".into()], has_more: false };
        assert_eq!(next_link("/v2/x/tags/list", Some(1), &done), None);
    }
}
