//! The client wharf uses to talk to one remote registry (an upstream) over
//! the OCI distribution API: manifests, blobs, tags and referrers.
//!
//! It owns everything about reaching that registry: the pooled HTTP/1.1
//! client (over TLS too: see `transport.rs`) and its TLS trust, token and
//! basic authentication, timeouts, retries of idempotent requests, and
//! redirects. It must not touch local storage, and knows nothing of wharf's
//! own HTTP server: callers get spec types and bytes (or a body to stream),
//! never a server request or response.
//!
//! Repository names given here are already the upstream's names: mapping
//! `alpine` to `library/alpine` for Docker Hub is the caller's job.

mod auth;
mod body;
mod concurrency;
mod error;
mod tls;
mod transport;

// Test code unwraps freely: a failed unwrap is a failed test.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod test_support;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LINK, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use hyper::body::Incoming;
use serde::Deserialize;

pub(crate) use body::ResponseBody;
pub(crate) use error::UpstreamError;

use crate::config::UpstreamConfig;
use crate::metrics::Metrics;
use crate::oci::media::{ACCEPT_ALL_MANIFESTS, OCI_INDEX};
use crate::oci::{Digest, Reference, RepositoryName};
use auth::{BearerToken, Challenge, TokenCache};
use concurrency::{Concurrency, Permit};
use transport::{Answer, Outgoing, Transport};

/// Referrers responses are buffered; the same bound as manifests.
const REFERRERS_LIMIT: usize = 4 << 20;
/// A tags list is buffered too; an unpaginated list for a repository with
/// many tags runs to megabytes, so the bound is looser than for manifests.
const TAGS_LIST_LIMIT: usize = 16 << 20;
/// A signatures listing of the docker API extension is buffered too.
const SIGNATURES_LIMIT: usize = 4 << 20;
/// Token responses are small JSON documents.
const TOKEN_RESPONSE_LIMIT: usize = 1 << 20;

const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
const OCI_FILTERS_APPLIED: &str = "oci-filters-applied";
/// Set by registries that offer the docker signatures API extension.
const SUPPORTS_SIGNATURES: &str = "x-registry-supports-signatures";

/// What a manifest HEAD tells about the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ManifestHead {
    /// `Docker-Content-Digest`, when the upstream sent one.
    pub(crate) digest: Option<Digest>,
    /// `Content-Type`, as sent.
    pub(crate) media_type: Option<String>,
    /// `Content-Length`.
    pub(crate) size: Option<u64>,
}

/// A manifest read whole. Its bytes are not verified here: the caller checks
/// them against the digest it asked for, or against `digest`.
#[derive(Clone, Debug)]
pub(crate) struct FetchedManifest {
    pub(crate) bytes: Bytes,
    /// `Docker-Content-Digest`, when the upstream sent one.
    pub(crate) digest: Option<Digest>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BlobHead {
    /// `Content-Length`.
    pub(crate) size: Option<u64>,
}

/// A blob whose response headers have arrived. Streaming (and verifying) the
/// body is the caller's; a failure while streaming is never retried here.
#[derive(Debug)]
pub(crate) struct BlobResponse {
    /// `Content-Length` of the final (possibly redirected) response.
    pub(crate) size: Option<u64>,
    /// Yields `Bytes` frames; errors are `UpstreamError` (a stall longer than
    /// the upstream's `idle_timeout` is `Timeout`).
    pub(crate) body: ResponseBody,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TagsPage {
    pub(crate) tags: Vec<String>,
    /// The upstream sent `Link: <...>; rel="next"`.
    pub(crate) has_more: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Referrers {
    /// The image index listing the referrers, as the upstream sent it.
    pub(crate) bytes: Bytes,
    /// An `artifactType` filter was asked for and the upstream says it
    /// applied it (`OCI-Filters-Applied`); if false, the caller filters.
    pub(crate) filter_applied: bool,
}

/// A client for one upstream registry. Cheap to clone; clones share the
/// connection pool and the token cache.
#[derive(Clone)]
pub(crate) struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: UpstreamConfig,
    /// `scheme://host[:port][/prefix]`, without a trailing slash.
    base: String,
    transport: Transport,
    tokens: TokenCache,
    /// Set once the upstream has asked for Basic credentials, so that later
    /// requests send them without a 401 round trip first.
    wants_basic: AtomicBool,
    /// The cap on requests in flight (`max_concurrent_requests`).
    concurrency: Concurrency,
    metrics: Metrics,
}

/// A response whose status was a success, holding its request's turn under
/// the concurrency cap until it is dropped or its body is taken.
struct Exchange {
    response: Response<Incoming>,
    permit: Permit,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("name", &self.inner.cfg.name).field("base", &self.inner.base).finish()
    }
}

/// Credentials sent with a request, remembered to interpret a 401.
enum Sent {
    Nothing,
    Basic(HeaderValue),
    Bearer(BearerToken),
}

impl Sent {
    fn header(&self) -> Option<HeaderValue> {
        match self {
            Sent::Nothing => None,
            Sent::Basic(h) => Some(h.clone()),
            Sent::Bearer(t) => Some(t.header()),
        }
    }
}

impl Upstream {
    /// Builds the client: TLS trust (a bad `ca_file` is an error), the
    /// connection pool, the token cache and the concurrency cap, whose
    /// waiting requests `metrics` counts. Opens no connection.
    pub(crate) fn new(cfg: &UpstreamConfig, metrics: &Metrics) -> Result<Upstream, UpstreamError> {
        let scheme = cfg.url.scheme_str().unwrap_or("https");
        let authority = cfg
            .url
            .authority()
            .ok_or_else(|| UpstreamError::Config(format!("upstream {} url has no host", cfg.name)))?;
        let base = format!("{scheme}://{authority}{}", cfg.url.path().trim_end_matches('/'));
        let tls = tls::client_config(cfg)?;
        metrics.init_upstream(&cfg.name);
        Ok(Upstream {
            inner: Arc::new(Inner {
                cfg: cfg.clone(),
                base,
                transport: Transport::new(cfg, tls, metrics.clone()),
                tokens: TokenCache::new(),
                wants_basic: AtomicBool::new(false),
                concurrency: Concurrency::new(
                    cfg.max_concurrent_requests,
                    cfg.response_timeout,
                    metrics.upstream_requests_waiting.with_label_values(&[&cfg.name]),
                ),
                metrics: metrics.clone(),
            }),
        })
    }

    pub(crate) fn config(&self) -> &UpstreamConfig {
        &self.inner.cfg
    }

    /// `GET /v2/` without credentials, once: whether the upstream answers
    /// at all. Any HTTP status counts as an answer (401 is the usual one).
    /// For the readiness report; bypasses the concurrency cap, as it is
    /// tiny and must not wait behind fills.
    pub(crate) async fn ping(&self) -> Result<StatusCode, UpstreamError> {
        Ok(self.anonymous_base().await?.response.status())
    }

    /// `GET /v2/` without credentials, no retry and no turn: the answer a
    /// client's first, anonymous probe gets.
    async fn anonymous_base(&self) -> Result<Answer, UpstreamError> {
        let out = Outgoing {
            op: "ping",
            method: Method::GET,
            uri: self.uri("/v2/", "")?,
            accept: None,
            authorization: None,
            follow_redirects: false,
        };
        self.inner.transport.send(&out).await
    }

    /// `HEAD /v2/<repo>/manifests/<reference>`, accepting every manifest type.
    pub(crate) async fn head_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<ManifestHead, UpstreamError> {
        let uri = &self.uri(&format!("/v2/{repo}/manifests/{reference}"), "")?;
        self.with_retries("head_manifest", || async move {
            let exchange = self.request("head_manifest", Method::HEAD, uri, Some(ACCEPT_ALL_MANIFESTS), repo).await?;
            let headers = exchange.response.headers();
            Ok(ManifestHead {
                digest: content_digest(headers)?,
                media_type: content_type(headers)?,
                size: content_length(headers)?,
            })
        })
        .await
    }

    /// `GET /v2/<repo>/manifests/<reference>`, read whole; a manifest over
    /// `max_size` bytes is refused with [`UpstreamError::Protocol`].
    pub(crate) async fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        max_size: usize,
    ) -> Result<FetchedManifest, UpstreamError> {
        let uri = &self.uri(&format!("/v2/{repo}/manifests/{reference}"), "")?;
        self.with_retries("get_manifest", || async move {
            let exchange = self.request("get_manifest", Method::GET, uri, Some(ACCEPT_ALL_MANIFESTS), repo).await?;
            let digest = content_digest(exchange.response.headers())?;
            let bytes = body::read_to_limit(self.body(exchange), max_size, "manifest").await?;
            Ok(FetchedManifest { bytes, digest })
        })
        .await
    }

    /// `HEAD /v2/<repo>/blobs/<digest>`, following redirects.
    pub(crate) async fn head_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<BlobHead, UpstreamError> {
        let uri = &self.uri(&format!("/v2/{repo}/blobs/{digest}"), "")?;
        self.with_retries("head_blob", || async move {
            let exchange = self.request("head_blob", Method::HEAD, uri, None, repo).await?;
            Ok(BlobHead { size: content_length(exchange.response.headers())? })
        })
        .await
    }

    /// `GET /v2/<repo>/blobs/<digest>`, following redirects. Returns once
    /// response headers arrive; retries happen only before that.
    pub(crate) async fn get_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<BlobResponse, UpstreamError> {
        let uri = &self.uri(&format!("/v2/{repo}/blobs/{digest}"), "")?;
        self.with_retries("get_blob", || async move {
            let exchange = self.request("get_blob", Method::GET, uri, None, repo).await?;
            let size = content_length(exchange.response.headers())?;
            Ok(BlobResponse { size, body: self.body(exchange) })
        })
        .await
    }

    /// `GET /v2/<repo>/tags/list?n=&last=`, relaying the pagination asked for.
    pub(crate) async fn tags_list(
        &self,
        repo: &RepositoryName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<TagsPage, UpstreamError> {
        // The serializer is not `Send`, so it must not live across an await.
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            if let Some(n) = n {
                query.append_pair("n", &n.to_string());
            }
            if let Some(last) = last {
                query.append_pair("last", last);
            }
            query.finish()
        };
        let uri = &self.uri(&format!("/v2/{repo}/tags/list"), &query)?;
        self.with_retries("tags_list", || async move {
            let exchange = self.request("tags_list", Method::GET, uri, Some("application/json"), repo).await?;
            let has_more = has_next_link(exchange.response.headers());
            let bytes = body::read_to_limit(self.body(exchange), TAGS_LIST_LIMIT, "tags list").await?;
            // `tags` may be null or absent for a repository without tags.
            #[derive(Deserialize)]
            struct TagsList {
                tags: Option<Vec<String>>,
            }
            let list: TagsList = serde_json::from_slice(&bytes)
                .map_err(|e| UpstreamError::Protocol(format!("tags list is not valid JSON: {e}")))?;
            Ok(TagsPage { tags: list.tags.unwrap_or_default(), has_more })
        })
        .await
    }

    /// Every tag of `repo`, following the `Link` pages (at most
    /// `max_pages`), sorted and without duplicates. A failure on any page
    /// fails the listing.
    pub(crate) async fn all_tags(&self, repo: &RepositoryName, max_pages: usize) -> Result<Vec<String>, UpstreamError> {
        let mut all: Vec<String> = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..max_pages {
            let page = self.tags_list(repo, None, cursor.as_deref()).await?;
            let next = page.tags.last().cloned();
            all.extend(page.tags);
            match next {
                Some(last) if page.has_more => cursor = Some(last),
                _ => break,
            }
        }
        all.sort();
        all.dedup();
        Ok(all)
    }

    /// `GET /v2/<repo>/referrers/<digest>[?artifactType=]`, read whole (at
    /// most 4 MiB). An upstream without the referrers API answers 404, which
    /// is [`UpstreamError::NotFound`]; falling back to the tag schema is the
    /// caller's decision.
    pub(crate) async fn referrers(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Referrers, UpstreamError> {
        let query = match artifact_type {
            Some(t) => form_urlencoded::Serializer::new(String::new()).append_pair("artifactType", t).finish(),
            None => String::new(),
        };
        let uri = &self.uri(&format!("/v2/{repo}/referrers/{digest}"), &query)?;
        self.with_retries("referrers", || async move {
            let exchange = self.request("referrers", Method::GET, uri, Some(OCI_INDEX), repo).await?;
            let filter_applied = artifact_type.is_some() && filters_applied(exchange.response.headers(), "artifactType");
            let bytes = body::read_to_limit(self.body(exchange), REFERRERS_LIMIT, "referrers index").await?;
            Ok(Referrers { bytes, filter_applied })
        })
        .await
    }

    /// Whether the registry offers the docker API extension for atomic
    /// signatures: its `/v2/` answer carries `X-Registry-Supports-Signatures: 1`.
    /// Asked anonymously and read from a 401 as from a 200, as clients do
    /// (their first probe is anonymous too).
    pub(crate) async fn supports_signatures(&self) -> Result<bool, UpstreamError> {
        self.with_retries("supports_signatures", || async move {
            let _turn = self.inner.concurrency.acquire().await?;
            let answer = self.anonymous_base().await?;
            let supported = header_str(answer.response.headers(), SUPPORTS_SIGNATURES)?.is_some_and(|v| v == "1");
            if answer.response.status() != StatusCode::UNAUTHORIZED {
                check_status(answer.response)?;
            }
            Ok(supported)
        })
        .await
    }

    /// `GET /extensions/v2/<repo>/signatures/<digest>`: the JSON listing of
    /// the manifest's atomic signatures, read whole (at most 4 MiB).
    pub(crate) async fn signatures(&self, repo: &RepositoryName, digest: &Digest) -> Result<Bytes, UpstreamError> {
        let uri = &self.uri(&format!("/extensions/v2/{repo}/signatures/{digest}"), "")?;
        self.with_retries("signatures", || async move {
            let exchange = self.request("signatures", Method::GET, uri, Some("application/json"), repo).await?;
            body::read_to_limit(self.body(exchange), SIGNATURES_LIMIT, "signatures listing").await
        })
        .await
    }

    /// `GET <url><path>`, read whole (at most `limit` bytes): a file of a
    /// static store such as a signature lookaside, for a client whose URL
    /// is the store's root. A missing file is [`UpstreamError::NotFound`].
    /// `repo` names the scope of a token the store may ask for.
    pub(crate) async fn get_file(&self, path: &str, repo: &RepositoryName, limit: usize) -> Result<Bytes, UpstreamError> {
        let uri = &self.uri(path, "")?;
        self.with_retries("get_file", || async move {
            let exchange = self.request("get_file", Method::GET, uri, None, repo).await?;
            body::read_to_limit(self.body(exchange), limit, "file").await
        })
        .await
    }

    // -----------------------------------------------------------------------
    // The request pipeline: retries around authentication around transport.

    fn uri(&self, path: &str, query: &str) -> Result<Uri, UpstreamError> {
        let url = if query.is_empty() {
            format!("{}{path}", self.inner.base)
        } else {
            format!("{}{path}?{query}", self.inner.base)
        };
        // Names, references and digests are validated, so this fails only on
        // a bug; it is still an error rather than a panic.
        url.parse().map_err(|e| UpstreamError::Protocol(format!("cannot form a request URL: {e}")))
    }

    /// The exchange's body, which keeps its turn under the cap to its end.
    fn body(&self, exchange: Exchange) -> ResponseBody {
        ResponseBody::new(exchange.response.into_body(), self.inner.cfg.idle_timeout, Some(exchange.permit))
    }

    /// Runs `attempt` again, after a short backoff, while it fails
    /// transiently and retries are left. Every operation here is idempotent,
    /// and an attempt ends before anything is handed to the caller.
    async fn with_retries<T, F, Fut>(&self, operation: &'static str, mut attempt: F) -> Result<T, UpstreamError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let mut retries = 0;
        loop {
            let result = attempt().await;
            if let Err(Some(kind)) = result.as_ref().map_err(UpstreamError::metric_kind) {
                self.inner.metrics.upstream_errors.with_label_values(&[&self.inner.cfg.name, kind]).inc();
            }
            match result {
                Err(error) if error.is_transient() && retries < self.inner.cfg.retries => {
                    let delay = backoff(retries);
                    retries += 1;
                    tracing::warn!(
                        request_id = %crate::telemetry::log_id(),
                        upstream = %self.inner.cfg.name,
                        operation,
                        retry = retries,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        %error,
                        "retrying upstream request"
                    );
                    tokio::time::sleep(delay).await;
                }
                result => return result,
            }
        }
    }

    /// One authenticated request whose status is a success; any other
    /// status becomes its error. It first waits for a turn under the
    /// concurrency cap; the turn covers authenticating (a token fetch
    /// included) and lasts as long as the returned exchange.
    async fn request(
        &self,
        op: &'static str,
        method: Method,
        uri: &Uri,
        accept: Option<&'static str>,
        repo: &RepositoryName,
    ) -> Result<Exchange, UpstreamError> {
        let permit = self.inner.concurrency.acquire().await?;
        let answer = self.send_authorized(op, method, uri, accept, repo).await?;
        Ok(Exchange { response: check_status(answer.response)?, permit })
    }

    /// Sends with whatever credentials are known to work; on a 401 from the
    /// upstream itself, answers its challenge once and sends again. A second
    /// 401 is [`UpstreamError::Unauthorized`].
    async fn send_authorized(
        &self,
        op: &'static str,
        method: Method,
        uri: &Uri,
        accept: Option<&'static str>,
        repo: &RepositoryName,
    ) -> Result<Answer, UpstreamError> {
        // Tokens are cached by the scope wharf needs, so a later request for
        // the same repository finds its token before sending anything.
        let scope = format!("repository:{repo}:pull");
        let sent = self.known_credentials(&scope).await;
        let send = |authorization: Option<HeaderValue>| {
            let method = method.clone();
            async move {
                let out = Outgoing {
                    op,
                    method,
                    uri: uri.clone(),
                    accept,
                    authorization: authorization.as_ref(),
                    follow_redirects: true,
                };
                self.inner.transport.send(&out).await
            }
        };
        let answer = send(sent.header()).await?;
        // A 401 from a redirect target is not the upstream's challenge to
        // answer; it is simply refused.
        if answer.response.status() != StatusCode::UNAUTHORIZED || !answer.from_origin {
            return Ok(answer);
        }
        let challenge = auth::select_challenge(
            answer.response.headers().get_all(WWW_AUTHENTICATE).iter().filter_map(|v| v.to_str().ok()),
        );
        drop(answer);
        let retry = match challenge {
            None => return Err(UpstreamError::Unauthorized),
            Some(Challenge::Basic) => {
                let credentials = self.inner.cfg.credentials.as_ref().ok_or(UpstreamError::Unauthorized)?;
                if matches!(sent, Sent::Basic(_)) {
                    // Those very credentials were just refused.
                    return Err(UpstreamError::Unauthorized);
                }
                self.inner.wants_basic.store(true, Ordering::Relaxed);
                Sent::Basic(auth::basic_header(credentials))
            }
            Some(Challenge::Bearer { realm, service, scope: asked }) => {
                if let Sent::Bearer(rejected) = &sent {
                    self.inner.tokens.forget(&scope, rejected).await;
                }
                let token_scope = asked.unwrap_or_else(|| scope.clone());
                let fetch = self.fetch_token(&realm, service.as_deref(), &token_scope);
                Sent::Bearer(self.inner.tokens.get_or_fetch(&scope, fetch).await?)
            }
        };
        let answer = send(retry.header()).await?;
        if answer.response.status() == StatusCode::UNAUTHORIZED {
            return Err(UpstreamError::Unauthorized);
        }
        Ok(answer)
    }

    async fn known_credentials(&self, scope: &str) -> Sent {
        if let Some(token) = self.inner.tokens.get(scope).await {
            return Sent::Bearer(token);
        }
        match &self.inner.cfg.credentials {
            Some(credentials) if self.inner.wants_basic.load(Ordering::Relaxed) => {
                Sent::Basic(auth::basic_header(credentials))
            }
            _ => Sent::Nothing,
        }
    }

    /// Asks the challenge's realm for a token: with the configured
    /// credentials as Basic if there are any, else anonymously.
    async fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<BearerToken, UpstreamError> {
        let basic = self.inner.cfg.credentials.as_ref().map(auth::basic_header);
        let out = Outgoing {
            op: "token",
            method: Method::GET,
            uri: auth::token_uri(realm, service, scope)?,
            accept: Some("application/json"),
            authorization: basic.as_ref(),
            follow_redirects: false,
        };
        let response = self.inner.transport.send(&out).await?.response;
        let status = response.status();
        if !status.is_success() {
            return Err(match status.as_u16() {
                401 | 403 => UpstreamError::Unauthorized,
                429 => UpstreamError::TooManyRequests { retry_after: retry_after(response.headers()) },
                // Deliberately not NotFound, even for 404: that would claim
                // the manifest or blob is missing, when it is the token
                // endpoint that failed.
                code => UpstreamError::Status(code),
            });
        }
        // Read within the turn of the request being authenticated.
        let body = ResponseBody::new(response.into_body(), self.inner.cfg.idle_timeout, None);
        let bytes = body::read_to_limit(body, TOKEN_RESPONSE_LIMIT, "token response").await?;
        auth::parse_token_response(&bytes)
    }
}

/// 100 ms, 300 ms, 900 ms, then 2 s: short, because a client is waiting.
fn backoff(retry: u32) -> Duration {
    let millis = 100u64.saturating_mul(3u64.saturating_pow(retry));
    Duration::from_millis(millis.min(2_000))
}

fn check_status(response: Response<Incoming>) -> Result<Response<Incoming>, UpstreamError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    Err(match status.as_u16() {
        404 => UpstreamError::NotFound,
        429 => UpstreamError::TooManyRequests { retry_after: retry_after(response.headers()) },
        401 | 403 => UpstreamError::Unauthorized,
        code => UpstreamError::Status(code),
    })
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    error::parse_retry_after(value, SystemTime::now())
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, UpstreamError> {
    headers
        .get(name)
        .map(|v| v.to_str().map(str::trim).map_err(|_| UpstreamError::Protocol(format!("{name} header is not text"))))
        .transpose()
}

fn content_digest(headers: &HeaderMap) -> Result<Option<Digest>, UpstreamError> {
    header_str(headers, DOCKER_CONTENT_DIGEST)?
        .map(|v| v.parse().map_err(|e| UpstreamError::Protocol(format!("Docker-Content-Digest {v:?}: {e}"))))
        .transpose()
}

fn content_type(headers: &HeaderMap) -> Result<Option<String>, UpstreamError> {
    Ok(header_str(headers, CONTENT_TYPE.as_str())?.filter(|v| !v.is_empty()).map(str::to_owned))
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, UpstreamError> {
    header_str(headers, CONTENT_LENGTH.as_str())?
        .map(|v| v.parse().map_err(|_| UpstreamError::Protocol(format!("Content-Length {v:?} is not a number"))))
        .transpose()
}

/// Whether any `Link` header has a link with relation `next` (RFC 8288;
/// `rel` may list several space-separated relations).
fn has_next_link(headers: &HeaderMap) -> bool {
    headers.get_all(LINK).iter().filter_map(|v| v.to_str().ok()).any(|value| {
        value
            .split([',', ';'])
            .map(str::trim)
            .filter(|part| !part.starts_with('<'))
            .filter_map(|part| part.split_once('='))
            .filter(|(name, _)| name.trim().eq_ignore_ascii_case("rel"))
            .any(|(_, rels)| rels.trim().trim_matches('"').split_whitespace().any(|r| r.eq_ignore_ascii_case("next")))
    })
}

/// Whether `OCI-Filters-Applied` (a comma-separated list) names `filter`.
fn filters_applied(headers: &HeaderMap, filter: &str) -> bool {
    headers
        .get_all(OCI_FILTERS_APPLIED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|f| f.trim() == filter)
}
