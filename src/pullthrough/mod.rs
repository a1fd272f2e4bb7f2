//! Pull-through: local content first, the upstream on a miss. Owns tag
//! freshness, manifest caching, coalesced blob fills and the streaming tee.
//! Takes spec types from the API layer and answers with content or a
//! [`PullError`]; never sees HTTP requests, never writes SQL or object keys.
//!
//! Freshness, in one place:
//! - a digest reference is served locally whenever present; once cached it
//!   never touches the upstream again;
//! - a tag's digest is trusted for the upstream's `tag_ttl`, then
//!   revalidated with a HEAD (a tag never seen is fetched with one GET by
//!   tag instead: nothing is here to compare with); if the upstream is
//!   unreachable, 5xx or 429 the last known digest is served (stale) and
//!   logged; a tag the upstream says is gone is gone.

mod blobs;
mod fill;
mod held;
mod recorder;
mod route;
mod tags;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use moka::future::Cache;

pub(crate) use fill::{Fill, Piece};
use fill::Fills;
use held::Held;
pub(crate) use recorder::{manifest_facts, Recorder};
pub(crate) use route::{RouteError, Target, Upstreams};
pub(crate) use tags::{paginate, TagsPage};
use tags::{TagEntry, TagKey, TagList, TtlExpiry, KNOWN_TAGS};

use crate::cluster::Cluster;
use crate::metadata::{ContentType, Metadata, MetadataError, Origin, RepositoryKind, RepositoryFilter, all_pages};
use crate::metrics::Metrics;
use crate::oci::media::{self, ManifestInfo};
use crate::oci::{Algorithm, Digest, RepositoryName, Reference, Tag};
use crate::storage::{Opened, Storage, StorageError};
use crate::telemetry;
use crate::upstream::{FetchedManifest, Upstream, UpstreamError};

/// Bytes of manifests kept in memory for fast tag and digest answers.
const MANIFEST_MEMORY: u64 = 64 << 20;

/// Everything that can go wrong below the API, by whose fault it is.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum PullError {
    // The client's request names nothing we have or can reach.
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("manifest unknown")]
    ManifestUnknown,
    #[error("blob unknown")]
    BlobUnknown,
    #[error("no representation of the manifest matches the Accept header")]
    NotAcceptable,
    #[error("requested range is not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    // The upstream failed us.
    #[error("upstream: {0}")]
    Upstream(UpstreamError),
    #[error("upstream sent content with digest {actual}, expected {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("upstream body ended after {got} of {expected} bytes")]
    Truncated { got: u64, expected: u64 },
    #[error("upstream body stalled")]
    Stalled,
    #[error("upstream body failed: {0}")]
    UpstreamBody(String),
    #[error("blob fill exceeded fill_timeout")]
    FillTimeout,
    #[error("upstream sent an unusable manifest: {0}")]
    InvalidManifest(String),
    // Our own failures.
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("{0}")]
    Internal(String),
}

impl PullError {
    /// Failures worth a warning in the log (the client's mistakes are not).
    pub(crate) fn is_upstream_fault(&self) -> bool {
        matches!(
            self,
            PullError::Upstream(_)
                | PullError::DigestMismatch { .. }
                | PullError::Truncated { .. }
                | PullError::Stalled
                | PullError::UpstreamBody(_)
                | PullError::FillTimeout
                | PullError::InvalidManifest(_)
        )
    }
}

impl PullError {
    /// The `kind` label of `wharf_upstream_errors_total` for a failure
    /// while a fill received or checked a body. Failures before the
    /// response headers (`Upstream`) are counted by the upstream client,
    /// once per attempt; 404 and our own failures are not upstream errors.
    pub(crate) fn upstream_error_kind(&self) -> Option<&'static str> {
        match self {
            PullError::DigestMismatch { .. } => Some("digest_mismatch"),
            PullError::Stalled | PullError::FillTimeout => Some("timeout"),
            // The connection ended or broke mid-body.
            PullError::Truncated { .. } | PullError::UpstreamBody(_) => Some("connect"),
            _ => None,
        }
    }

    /// An upstream error while fetching a manifest: 404 means the manifest
    /// is unknown, not the repository.
    fn from_manifest_fetch(e: UpstreamError) -> PullError {
        match e {
            UpstreamError::NotFound => PullError::ManifestUnknown,
            other => PullError::Upstream(other),
        }
    }

    /// An upstream error while fetching a blob: 404 means the blob is unknown.
    pub(crate) fn from_blob_fetch(e: UpstreamError) -> PullError {
        match e {
            UpstreamError::NotFound => PullError::BlobUnknown,
            other => PullError::Upstream(other),
        }
    }
}

impl From<UpstreamError> for PullError {
    fn from(e: UpstreamError) -> Self {
        PullError::Upstream(e)
    }
}

/// The upstream is down or refusing load, so a known tag may be served stale.
fn is_unavailable(e: &UpstreamError) -> bool {
    match e {
        UpstreamError::Timeout
        | UpstreamError::Connect(_)
        | UpstreamError::TooManyRequests { .. }
        | UpstreamError::Saturated => true,
        UpstreamError::Status(s) => *s >= 500,
        _ => false,
    }
}

/// A manifest as stored: its exact bytes and what they are.
#[derive(Debug)]
pub(crate) struct Manifest {
    pub(crate) digest: Digest,
    pub(crate) bytes: Bytes,
    pub(crate) info: ManifestInfo,
    /// Its answer's header values, made once: a cached manifest is served
    /// many times, and formatting them was a measurable part of each answer.
    pub(crate) headers: ManifestHeaders,
}

/// The header values that describe a manifest in an answer.
#[derive(Debug)]
pub(crate) struct ManifestHeaders {
    /// `Content-Type`: the media type, None if it cannot be a header value
    /// (answered as an internal error, never sent mangled).
    pub(crate) content_type: Option<HeaderValue>,
    /// `Docker-Content-Digest`.
    pub(crate) digest: HeaderValue,
    /// `ETag`: the digest, quoted.
    pub(crate) etag: HeaderValue,
    /// `Content-Length` of the bytes.
    pub(crate) content_length: HeaderValue,
}

impl Manifest {
    pub(crate) fn new(digest: Digest, bytes: Bytes, info: ManifestInfo) -> Manifest {
        let text = digest.to_string();
        // A digest is `algorithm:hex`, always a valid header value.
        let value = |s: &str| HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("-"));
        let headers = ManifestHeaders {
            content_type: HeaderValue::from_str(&info.media_type).ok(),
            digest: value(&text),
            etag: value(&format!("\"{text}\"")),
            content_length: HeaderValue::from(bytes.len()),
        };
        Manifest { digest, bytes, info, headers }
    }
}

/// Where a blob's bytes will come from.
pub(crate) enum BlobSource {
    /// In storage (with S3, possibly still arriving from the bucket, or
    /// only there).
    Stored(Opened),
    /// Arriving from the upstream (this request started the fill or joined
    /// it); `size` when the upstream announced it. `fetched`: the bytes
    /// were not here when asked for (a miss or a coalesced request), even
    /// if the fill has finished since; false for a fill that had already
    /// finished (a hit).
    Filling { fill: Arc<Fill>, size: Option<u64>, fetched: bool },
    /// A HEAD on a miss, answered by the upstream without fetching.
    Remote { size: Option<u64> },
}

/// What a client's manifest request took, for its one cache count.
#[derive(Default)]
struct Lookup {
    /// Something was not here (a tag never seen, manifest bytes not
    /// stored) and the upstream was asked for it.
    fetched: AtomicBool,
    /// It waited for another request's answer instead of asking.
    joined: AtomicBool,
    /// A tag was answered from the last known digest.
    stale: AtomicBool,
}

impl Lookup {
    fn result(&self) -> &'static str {
        if self.stale.load(Ordering::Relaxed) {
            "stale"
        } else if self.fetched.load(Ordering::Relaxed) {
            "miss"
        } else if self.joined.load(Ordering::Relaxed) {
            "coalesced"
        } else {
            "hit"
        }
    }
}

/// The pull-through cache. Cheap to clone.
#[derive(Clone)]
pub(crate) struct PullThrough {
    upstreams: Upstreams,
    storage: Storage,
    metadata: Metadata,
    recorder: Recorder,
    metrics: Metrics,
    fills: Fills,
    /// What each pull-through repository may be answered from local
    /// content (`held.rs`).
    held: Held,
    manifests: Cache<Digest, Arc<Manifest>>,
    tags: Cache<TagKey, TagEntry>,
    tag_lists: Cache<(String, RepositoryName), TagList>,
    max_manifest_size: usize,
    /// With a cluster port: fills coordinated across the nodes.
    cluster: Option<Cluster>,
    /// The tags remembered in metadata (see [`PullThrough::remember`]),
    /// also in memory: served when neither the upstream nor the database
    /// can be asked.
    known_tags: moka::sync::Cache<TagKey, Option<Digest>>,
}

impl PullThrough {
    pub(crate) fn new(
        upstreams: Upstreams,
        storage: Storage,
        metadata: Metadata,
        recorder: Recorder,
        metrics: Metrics,
        max_manifest_size: usize,
    ) -> PullThrough {
        let manifests = Cache::builder()
            .max_capacity(MANIFEST_MEMORY)
            .weigher(|_, m: &Arc<Manifest>| u32::try_from(m.bytes.len()).unwrap_or(u32::MAX))
            .build();
        let tags = Cache::builder().max_capacity(100_000).expire_after(TtlExpiry).build();
        let tag_lists = Cache::builder().max_capacity(1_000).expire_after(TtlExpiry).build();
        PullThrough {
            upstreams,
            storage,
            metadata,
            recorder,
            metrics,
            fills: Fills::default(),
            held: Held::default(),
            manifests,
            tags,
            tag_lists,
            max_manifest_size,
            cluster: None,
            known_tags: moka::sync::Cache::new(KNOWN_TAGS),
        }
    }

    /// Coordinates this node's fills with the other nodes of `cluster`.
    pub(crate) fn with_cluster(mut self, cluster: Option<Cluster>) -> PullThrough {
        self.cluster = cluster;
        self
    }

    /// The fill of `digest` in progress on this node, if any (for another
    /// node of the cluster).
    pub(crate) fn fill_in_flight(&self, digest: &Digest) -> Option<Arc<Fill>> {
        self.fills.get(digest)
    }

    /// The upstream table, which a reload replaces.
    pub(crate) fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    /// Whether `name` is a configured upstream's (a path prefix).
    pub(crate) fn is_upstream_name(&self, name: &str) -> bool {
        self.upstreams.by_name(name).is_some()
    }

    pub(crate) fn resolve(&self, name: &RepositoryName, ns: Option<&str>) -> Result<Target, PullError> {
        Ok(self.upstreams.resolve(name, ns)?)
    }

    /// How many blob fills have ended, or None while one is in flight.
    pub(crate) fn fills_ended_if_idle(&self) -> Option<u64> {
        self.fills.ended_if_idle()
    }

    /// The upstream `name` leads to (see [`Upstreams::upstream_for`]).
    pub(crate) fn upstream_for(&self, name: &RepositoryName, ns: Option<&str>) -> Result<Upstream, PullError> {
        Ok(self.upstreams.upstream_for(name, ns)?)
    }

    // -- manifests ---------------------------------------------------------

    /// The manifest `reference` names, after negotiation with `accept`; a
    /// client's request, counted once as a hit, miss, stale or coalesced
    /// lookup, whatever its outcome.
    pub(crate) async fn manifest(
        &self,
        target: &Target,
        reference: &Reference,
        accept: &media::Accept,
    ) -> Result<Arc<Manifest>, PullError> {
        let lookup = Lookup::default();
        let manifest = self.lookup_manifest(target, reference, accept, &lookup).await;
        self.count("manifest", lookup.result());
        manifest
    }

    async fn lookup_manifest(
        &self,
        target: &Target,
        reference: &Reference,
        accept: &media::Accept,
        lookup: &Lookup,
    ) -> Result<Arc<Manifest>, PullError> {
        // A tag's digest is the upstream's word for this repository; a
        // digest asked for directly must be one the repository holds.
        let (manifest, tag) = match reference {
            Reference::Digest(d) => {
                let asked = !self.held.contains(target, d);
                if asked {
                    Box::pin(self.held.vouch(target, d, self.vouch_manifest(target, d, lookup))).await?;
                }
                let manifest = self.manifest_with(target, d, lookup).await?;
                // Held by the vouch, which had no bytes for its references.
                if asked {
                    Box::pin(self.held.insert_references(target, &manifest.bytes)).await;
                }
                (manifest, None)
            }
            Reference::Tag(t) => {
                let digest = self.resolve_tag(target, t, lookup).await?;
                (self.manifest_with(target, &digest, lookup).await?, Some(t.as_str()))
            }
        };
        // Boxed: a warm request, the common case, finds it held already
        // and does not carry the space of the inserts (see `manifest_with`).
        if !self.held.contains(target, &manifest.digest) {
            Box::pin(self.held.insert_manifest(target, &manifest.digest, &manifest.bytes)).await;
        }
        self.record(target, tag, &manifest).await;
        match media::negotiate(&manifest.info, accept, tag.is_none()) {
            media::Negotiated::AsStored => Ok(manifest),
            // An index's manifests are held with it.
            media::Negotiated::Child(child) => {
                let child = self.manifest_with(target, &child, lookup).await?;
                if !self.held.contains(target, &child.digest) {
                    Box::pin(self.held.insert_manifest(target, &child.digest, &child.bytes)).await;
                }
                self.record(target, None, &child).await;
                Ok(child)
            }
            media::Negotiated::NotAcceptable => Err(PullError::NotAcceptable),
        }
    }

    /// Whether the pull-through repository of `target` has `digest` in its
    /// recorded content (it may be recorded with nothing in memory: after
    /// a restart, or once the memory of held digests let it go).
    async fn recorded(&self, target: &Target, digest: &Digest, kind: ContentType) -> Result<bool, PullError> {
        let (repository, wanted) = (self.repository_of(target), digest.clone());
        match self.metadata.run(move |s| s.contains(&repository, None, kind, &wanted)).await {
            Ok(held) => Ok(held),
            Err(MetadataError::NotFound(_)) => Ok(false),
            // Without the database the upstream decides, as for content
            // never recorded: pulls go on while it is away.
            Err(MetadataError::Unavailable(e)) => {
                tracing::warn!(repository = %self.repository_of(target), %digest, error = %e,
                    "metadata database unavailable; asking the upstream whether the repository holds it");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the repository of `target` holds the manifest `digest`,
    /// which it is not known to: its recorded content decides, else its
    /// upstream does, as if nothing were cached (bytes here for another
    /// repository prove nothing about this one). Ok once it does; the
    /// bytes are then in memory or storage.
    async fn vouch_manifest(&self, target: &Target, digest: &Digest, lookup: &Lookup) -> Result<(), PullError> {
        if self.recorded(target, digest, ContentType::Manifest).await? {
            return Ok(());
        }
        lookup.fetched.store(true, Ordering::Relaxed);
        let here = self.manifests.contains_key(digest) || self.storage.stat(digest).await?.is_some();
        if here {
            let reference = Reference::Digest(digest.clone());
            target.upstream.head_manifest(&target.repo, &reference).await.map_err(PullError::from_manifest_fetch)?;
            return Ok(());
        }
        // Not here: this repository's own fetch, never joined to a load
        // another repository's request has in flight.
        let fetched = target
            .upstream
            .get_manifest(&target.repo, &Reference::Digest(digest.clone()), self.max_manifest_size)
            .await
            .map_err(PullError::from_manifest_fetch)?;
        let manifest = self.store_manifest(target, digest, fetched.bytes).await?;
        self.manifests.insert(digest.clone(), manifest).await;
        Ok(())
    }

    /// Counts a client's lookup, and notes it for the request's log line.
    pub(crate) fn count(&self, kind: &str, result: &str) {
        self.metrics.cache(kind, result);
        telemetry::note_cache(result);
    }

    /// The pull-through repository a target's content is recorded in.
    pub(crate) fn origin(&self, target: &Target) -> Origin {
        let cfg = target.upstream.config();
        Origin { upstream: cfg.name.clone(), remote_name: target.repo.to_string(), retain_versions: cfg.retain_versions }
    }

    /// The name of the pull-through repository a target's content is
    /// recorded in (`<upstream>/<remote name>`).
    pub(crate) fn repository_of(&self, target: &Target) -> String {
        recorder::repository_name(&self.origin(target))
    }

    async fn record(&self, target: &Target, tag: Option<&str>, manifest: &Manifest) {
        let key = (target.upstream.config().name.as_str(), target.repo.as_str());
        let origin = || self.origin(target);
        self.recorder.manifest(key, origin, tag, &manifest.digest, &manifest.info.media_type, &manifest.bytes).await;
    }

    /// Verifies, stores and caches a manifest fetched by tag: its digest
    /// is the one the upstream named (checked against the bytes) or, when
    /// it named none, the bytes' sha256.
    async fn keep_fetched_manifest(&self, target: &Target, fetched: FetchedManifest) -> Result<Digest, PullError> {
        let digest = fetched.digest.unwrap_or_else(|| Digest::of(Algorithm::Sha256, &fetched.bytes));
        let manifest = self.store_manifest(target, &digest, fetched.bytes).await?;
        self.manifests.insert(digest.clone(), manifest).await;
        Ok(digest)
    }

    /// The target a pull-through repository's content comes from, if its
    /// upstream is still configured.
    pub(crate) fn target_for(&self, upstream: &str, remote_name: &str) -> Option<Target> {
        let upstream = self.upstreams.by_name(upstream)?;
        let repo = remote_name.parse().ok()?;
        Some(Target { upstream, repo })
    }

    /// A manifest from memory or local storage only.
    pub(crate) async fn local_manifest(&self, digest: &Digest) -> Result<Option<Arc<Manifest>>, PullError> {
        if let Some(m) = self.manifests.get(digest).await {
            return Ok(Some(m));
        }
        let Some(bytes) = self.storage.read_small(digest, self.max_manifest_size).await? else {
            return Ok(None);
        };
        let info = media::inspect(&bytes).map_err(|e| PullError::Internal(format!("stored manifest {digest}: {e}")))?;
        let m = Arc::new(Manifest::new(digest.clone(), bytes, info));
        self.manifests.insert(digest.clone(), m.clone()).await;
        Ok(Some(m))
    }

    /// A manifest by digest: memory, then storage, then the upstream (one
    /// fetch at a time per digest).
    pub(crate) async fn manifest_by_digest(&self, target: &Target, digest: &Digest) -> Result<Arc<Manifest>, PullError> {
        self.manifest_with(target, digest, &Lookup::default()).await
    }

    async fn manifest_with(&self, target: &Target, digest: &Digest, lookup: &Lookup) -> Result<Arc<Manifest>, PullError> {
        // A cached manifest builds no load (boxed, as for tags).
        match self.manifests.get(digest).await {
            Some(manifest) => Ok(manifest),
            None => Box::pin(self.loaded_manifest(target, digest, lookup)).await,
        }
    }

    /// The manifest after a load, this request's or (coalesced) another's.
    async fn loaded_manifest(&self, target: &Target, digest: &Digest, lookup: &Lookup) -> Result<Arc<Manifest>, PullError> {
        let known = self.manifests.contains_key(digest);
        let entry = self
            .manifests
            .entry(digest.clone())
            .or_try_insert_with(self.load_manifest(target, digest, lookup))
            .await
            .map_err(|e| (*e).clone())?;
        if !entry.is_fresh() && !known {
            lookup.joined.store(true, Ordering::Relaxed);
        }
        Ok(entry.into_value())
    }

    async fn load_manifest(&self, target: &Target, digest: &Digest, lookup: &Lookup) -> Result<Arc<Manifest>, PullError> {
        if let Some(bytes) = self.storage.read_small(digest, self.max_manifest_size).await? {
            let info = media::inspect(&bytes).map_err(|e| PullError::Internal(format!("stored manifest {digest}: {e}")))?;
            return Ok(Arc::new(Manifest::new(digest.clone(), bytes, info)));
        }
        lookup.fetched.store(true, Ordering::Relaxed);
        let fetched = target
            .upstream
            .get_manifest(&target.repo, &Reference::Digest(digest.clone()), self.max_manifest_size)
            .await
            .map_err(PullError::from_manifest_fetch)?;
        self.store_manifest(target, digest, fetched.bytes).await
    }

    /// Verifies and stores manifest bytes the upstream sent for `digest`.
    async fn store_manifest(&self, target: &Target, digest: &Digest, bytes: Bytes) -> Result<Arc<Manifest>, PullError> {
        let actual = Digest::of(digest.algorithm(), &bytes);
        if actual != *digest {
            self.metrics.upstream_errors.with_label_values(&[&target.upstream.config().name, "digest_mismatch"]).inc();
            return Err(PullError::DigestMismatch { expected: digest.clone(), actual });
        }
        let info = media::inspect(&bytes).map_err(|e| PullError::InvalidManifest(e.to_string()))?;
        match self.storage.put_verified(digest, bytes.clone()).await {
            Ok(()) => {}
            Err(crate::storage::IngestError::DigestMismatch { expected, actual }) => {
                return Err(PullError::DigestMismatch { expected, actual })
            }
            // A full (or failing) disk: the verified bytes are served all
            // the same, from memory; the next miss fetches them again.
            Err(crate::storage::IngestError::Storage(e)) => {
                tracing::error!(%digest, error = %e, "cannot store a manifest; serving it without caching it");
                self.metrics.storage.write_errors.inc();
            }
        }
        Ok(Arc::new(Manifest::new(digest.clone(), bytes, info)))
    }

    // -- listings ------------------------------------------------------------

    /// Pull-through repositories, named as clients address them
    /// (`<upstream>/<repo>`).
    pub(crate) async fn repository_names(&self) -> Result<Vec<String>, PullError> {
        Ok(self
            .metadata
            .run(|s| {
                let filter = RepositoryFilter { kind: Some(RepositoryKind::PullThrough), ..Default::default() };
                Ok(all_pages(|page| s.repositories(&filter, page))?.into_iter().map(|r| r.name).collect())
            })
            .await?)
    }

    /// The referrers of `digest` as an OCI image index. Uses the upstream's
    /// referrers API, or, where the upstream has none, the tag schema
    /// (`<alg>-<hex>` tag holding an index of referrers).
    pub(crate) async fn referrers(
        &self,
        target: &Target,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Bytes, PullError> {
        let (entries, filtered) = match target.upstream.referrers(&target.repo, digest, artifact_type).await {
            Ok(r) => (index_entries(&r.bytes)?, r.filter_applied),
            Err(UpstreamError::NotFound) => {
                let fallback: Result<Tag, _> = format!("{}-{}", digest.algorithm().as_str(), digest.hex()).parse();
                let accept = media::Accept::parse([media::OCI_INDEX].into_iter());
                let entries = match fallback {
                    Ok(tag) => match self.manifest(target, &Reference::Tag(tag), &accept).await {
                        Ok(m) if m.info.kind == media::ManifestKind::OciIndex => index_entries(&m.bytes)?,
                        Ok(_) | Err(PullError::ManifestUnknown) | Err(PullError::NotAcceptable) => Vec::new(),
                        Err(e) => return Err(e),
                    },
                    Err(_) => Vec::new(),
                };
                (entries, false)
            }
            Err(e) => return Err(e.into()),
        };
        let manifests: Vec<serde_json::Value> = entries
            .into_iter()
            .filter(|e| filtered || artifact_type.is_none_or(|t| e.get("artifactType").and_then(|v| v.as_str()) == Some(t)))
            .collect();
        Ok(referrers_index(manifests))
    }
}

/// The referrers API's answer: an OCI image index of `manifests`.
pub(crate) fn referrers_index(manifests: Vec<serde_json::Value>) -> Bytes {
    let index = serde_json::json!({ "schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests });
    Bytes::from(index.to_string())
}

fn index_entries(bytes: &[u8]) -> Result<Vec<serde_json::Value>, PullError> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| PullError::InvalidManifest(format!("referrers index: {e}")))?;
    Ok(v.get("manifests").and_then(|m| m.as_array()).cloned().unwrap_or_default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn a_manifest_carries_its_answer_headers() {
        let bytes = Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#);
        let digest = Digest::of(Algorithm::Sha256, &bytes);
        let m = Manifest::new(digest.clone(), bytes.clone(), media::inspect(&bytes).unwrap());
        assert_eq!(m.headers.digest, digest.to_string().as_str());
        assert_eq!(m.headers.etag, format!("\"{digest}\"").as_str());
        assert_eq!(m.headers.content_length, bytes.len().to_string().as_str());
        assert_eq!(m.headers.content_type.as_ref().unwrap(), "application/vnd.oci.image.manifest.v1+json");
    }
}
