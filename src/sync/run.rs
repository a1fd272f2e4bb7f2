//! One sync: what the remote has within the tag filter, fetched and
//! verified, then applied to the repository as at most one version.
//!
//! 1. List every tag of the remote repository (all pages).
//! 2. Resolve the tags the filter takes, and the digests it names.
//! 3. Fetch every manifest reachable from them: index children, and
//!    signatures and other referrers (the referrers API where the remote
//!    has it, else the `sha256-<hex>` tag schema), plus cosign's
//!    `sha256-<hex>.sig|.att|.sbom` tags. Manifests are stored as fetched.
//! 4. Fetch the atomic signatures of every manifest found: from the
//!    remote's docker API extension when its `/v2/` answer carries
//!    `X-Registry-Supports-Signatures: 1`, and from its `sigstore` lookaside
//!    (`<sigstore>/<name>@<alg>=<hex>/signature-<n>`, n = 1, 2, ... until a
//!    404). They are stored with the version, as content. When every
//!    source was read, a mirror sync also drops the signatures of these
//!    manifests that the remote no longer lists.
//! 5. `immediate`: fetch every blob not stored yet, verified, through the
//!    same fills the registry port uses (a blob is fetched once even if a
//!    client pulls it meanwhile). `on_demand`: fetch only the configs (a
//!    few KiB each, and what the image is), and remember the remote as the
//!    other blobs' source.
//! 6. Apply the result in one transaction.
//!
//! Everything fetched is stored before the version is written, and stored
//! content is never fetched again: a sync cut short (canceled, a crash,
//! a failed remote) loses nothing it verified, and the next one continues
//! where it stopped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;

use futures_util::{stream, StreamExt, TryStreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::clients::{ClientError, Clients, DEFAULT_DOWNLOAD_CONCURRENCY};
use super::filter::TagFilter;
use crate::metrics::Metrics;
use crate::metadata::{AtomicSignature, ManifestFacts, Metadata, MetadataError, Remote, RepositoryKind, SyncContent, SyncMode, SyncPolicy};
use crate::oci::{media, Digest, Reference, Tag};
use crate::pullthrough::{manifest_facts, PullError, PullThrough, Target};
use crate::upstream::{Upstream, UpstreamError};

/// Bound on tag-list pages followed (at the reference registry's default
/// page size of 100: a hundred thousand tags).
const MAX_TAG_PAGES: usize = 1_000;
/// Suffixes of cosign's tag scheme for a manifest's signatures,
/// attestations and SBOMs.
const COSIGN_SUFFIXES: [&str; 3] = [".sig", ".att", ".sbom"];
/// Bound on the lookaside signatures read per manifest.
const MAX_LOOKASIDE_SIGNATURES: u32 = 64;
/// Bound on one lookaside signature's size (they are a few KiB).
const LOOKASIDE_SIGNATURE_LIMIT: usize = 1 << 20;
/// The only signature type clients read from the API extension, and its
/// schema version.
const ATOMIC: &str = "atomic";
const EXTENSION_SCHEMA_VERSION: u32 = 2;

/// Where a sync reports how far it got, and learns it was canceled.
pub(crate) trait Report: Send + Sync {
    fn set_total(&self, items: u64);
    fn add(&self, items: u64, bytes: u64);
    fn is_canceled(&self) -> bool;
}

#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum SyncError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("remote {remote:?} has no repository {name:?}")]
    NoRepository { remote: String, name: String },
    #[error("{what}: {error}")]
    Fetch { what: String, error: PullError },
    #[error("canceled")]
    Canceled,
}

/// What a sync asks for.
#[derive(Debug, Clone)]
pub(crate) struct SyncRequest {
    pub(crate) repository: String,
    pub(crate) remote: String,
    pub(crate) mirror: bool,
}

/// Runs syncs. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Syncer {
    metadata: Metadata,
    pull: PullThrough,
    clients: Clients,
    metrics: Metrics,
}

/// One run's state: the remote, its client, and what has been found.
struct Run<'a> {
    remote: Remote,
    target: Target,
    pull: &'a PullThrough,
    report: &'a dyn Report,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    concurrency: usize,
    total: u64,
}

impl Syncer {
    /// `metrics` counts how syncs end (`wharf_syncs_total`).
    pub(crate) fn new(metadata: Metadata, pull: PullThrough, clients: Clients, metrics: Metrics) -> Syncer {
        Syncer { metadata, pull, clients, metrics }
    }

    /// Counts a sync that ended: new_version, unchanged, failed or canceled.
    pub(crate) fn count(&self, result: &str) {
        self.metrics.syncs.with_label_values(&[result]).inc();
    }

    pub(crate) fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Stores again a blob `repository` holds whose bytes were evicted (or
    /// never fetched, synced on demand): from the pull-through
    /// repository's upstream, or a remote a sync recorded as its source.
    /// Through the same verified fills a client's pull uses. Its size.
    pub(crate) async fn refetch(&self, repository: &crate::metadata::Repository, digest: &Digest) -> Result<u64, String> {
        let mut targets = Vec::new();
        if let (Some(upstream), Some(name)) = (&repository.upstream, &repository.remote_name) {
            targets.extend(self.pull.target_for(upstream, name));
        }
        let wanted = digest.clone();
        let sources = self.metadata.run(move |s| s.blob_sources(&wanted)).await.map_err(|e| e.to_string())?;
        for (remote, name) in sources {
            match self.clients.source(&remote, &name).await {
                Ok(target) => targets.extend(target),
                Err(e) => tracing::warn!(%remote, %digest, error = %e, "blob source unusable"),
            }
        }
        let mut last = format!("{digest} is not stored and {:?} names no upstream or remote to fetch it from", repository.name);
        for target in targets {
            match self.pull.fetch_blob(&target, digest).await {
                Ok(size) => return Ok(size),
                Err(e) => last = format!("{digest} is not stored, and fetching it again failed: {e}"),
            }
        }
        Err(last)
    }

    /// Checks a sync can start: the repository is a sync repository and
    /// the remote exists. Touches no network.
    pub(crate) async fn check(&self, req: &SyncRequest) -> Result<Remote, MetadataError> {
        let (repository, remote) = (req.repository.clone(), req.remote.clone());
        self.metadata
            .run(move |s| {
                let repo = s
                    .repository(&repository)?
                    .ok_or_else(|| MetadataError::NotFound(format!("repository {repository:?} does not exist")))?;
                if repo.kind != RepositoryKind::Sync {
                    return Err(MetadataError::Conflict(format!(
                        "repository {repository:?} is a {} repository; only sync repositories are synced",
                        repo.kind.as_str()
                    )));
                }
                s.remote(&remote)?.ok_or_else(|| MetadataError::Invalid(format!("remote {remote:?} does not exist")))
            })
            .await
    }

    /// Runs one sync to its end: the new version's number, or None when
    /// the repository already held exactly what the remote has.
    pub(crate) async fn run(&self, req: &SyncRequest, report: &dyn Report) -> Result<Option<u64>, SyncError> {
        let remote = self.check(req).await?;
        let filter = TagFilter::new(&remote.include_tags, &remote.exclude_tags).map_err(MetadataError::Invalid)?;
        let target = self.clients.target(&remote, None)?;
        let limiter = remote
            .rate_limit
            .and_then(NonZeroU32::new)
            .map(|n| Arc::new(RateLimiter::direct(Quota::per_second(n))));
        let concurrency = remote.download_concurrency.unwrap_or(DEFAULT_DOWNLOAD_CONCURRENCY) as usize;
        let mut run = Run { remote, target, pull: &self.pull, report, limiter, concurrency, total: 0 };

        let all_tags = run.list_tags().await?;
        let wanted: Vec<&String> = all_tags.iter().filter(|t| filter.takes_tag(t)).collect();
        run.grow(wanted.len() as u64 + filter.digests().len() as u64);
        let mut tags = run.resolve_tags(&wanted).await?;
        let mut roots: Vec<Digest> = tags.iter().map(|(_, d)| d.clone()).collect();
        roots.extend(filter.digests().iter().cloned());
        let (manifests, signature_tags) = run.manifests(roots, &all_tags).await?;
        tags.extend(signature_tags);
        let lookaside = self.clients.lookaside(&run.remote)?;
        let (signatures, signatures_listed) = run.signatures(&manifests, lookaside.as_ref()).await?;

        let blobs = blobs_of(&manifests);
        match run.remote.policy {
            SyncPolicy::Immediate => run.fetch_blobs(&blobs).await?,
            SyncPolicy::OnDemand => {
                // Configs are fetched now (a few KiB each): what an image
                // is (its platform, its labels) is then known without a
                // client, e.g. to the Flatpak index. Layers wait for one.
                let configs = configs_of(&manifests);
                run.fetch_blobs(&configs).await?;
                let mut missing = Vec::new();
                for d in blobs.iter().filter(|d| !configs.contains(d)) {
                    if !self.pull.has_blob(d).await.map_err(|e| fetch_error(format!("blob {d}"), e))? {
                        missing.push(d.clone());
                    }
                }
                let (remote, name) = (run.remote.name.clone(), run.remote.upstream_name.clone());
                self.metadata.run(move |s| s.add_blob_sources(&missing, &remote, &name)).await?;
            }
        }
        if report.is_canceled() {
            return Err(SyncError::Canceled);
        }

        let content = SyncContent { manifests, tags, signatures, signatures_listed };
        let (repository, remote_name, mirror) = (req.repository.clone(), run.remote.name.clone(), req.mirror);
        let created = self
            .metadata
            .run(move |s| {
                // Only the tags the filter takes: a cosign tag outside it
                // (the signature of an image another sync brought) stays.
                let in_scope = |t: &str| filter.takes_tag(t);
                let mode = if mirror { SyncMode::Mirror { in_scope: &in_scope } } else { SyncMode::Additive };
                s.sync(&repository, &remote_name, &content, mode)
            })
            .await?;
        Ok(created)
    }
}

impl Run<'_> {
    fn grow(&mut self, items: u64) {
        self.total += items;
        self.report.set_total(self.total);
    }

    /// Waits for the rate limit and checks for a cancel: before every
    /// request to the remote.
    async fn turn(&self) -> Result<(), SyncError> {
        if self.report.is_canceled() {
            return Err(SyncError::Canceled);
        }
        if let Some(l) = &self.limiter {
            l.until_ready().await;
        }
        Ok(())
    }

    async fn list_tags(&self) -> Result<Vec<String>, SyncError> {
        self.turn().await?;
        match self.target.upstream.all_tags(&self.target.repo, MAX_TAG_PAGES).await {
            Ok(all) => Ok(all),
            Err(UpstreamError::NotFound) => Err(SyncError::NoRepository {
                remote: self.remote.name.clone(),
                name: self.remote.upstream_name.clone(),
            }),
            Err(e) => Err(fetch_error("tag list".into(), e.into())),
        }
    }

    /// What each tag points at now, `download_concurrency` at a time. A
    /// tag deleted while listing is skipped.
    async fn resolve_tags(&self, wanted: &[&String]) -> Result<Vec<(String, Digest)>, SyncError> {
        let owned: Vec<String> = wanted.iter().map(|t| (*t).clone()).collect();
        let resolved: Vec<Option<(String, Digest)>> = stream::iter(owned)
            .map(|tag| async move {
                self.turn().await?;
                let what = || format!("tag {tag:?}");
                let parsed: Tag = tag.parse().map_err(|e| fetch_error(what(), PullError::Internal(format!("{e}"))))?;
                let reference = Reference::Tag(parsed.clone());
                let digest = match self.target.upstream.head_manifest(&self.target.repo, &reference).await {
                    Ok(head) => head.digest,
                    Err(UpstreamError::NotFound) => return Ok(None),
                    Err(e) => return Err(fetch_error(what(), e.into())),
                };
                let digest = match digest {
                    Some(d) => d,
                    // No digest header: fetch (and store) by tag.
                    None => {
                        self.turn().await?;
                        match self.pull.fetch_manifest_by_tag(&self.target, &parsed).await {
                            Ok(d) => d,
                            Err(PullError::ManifestUnknown) => return Ok(None),
                            Err(e) => return Err(fetch_error(what(), e)),
                        }
                    }
                };
                self.report.add(1, 0);
                Ok(Some((tag, digest)))
            })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        Ok(resolved.into_iter().flatten().collect())
    }

    /// Every manifest reachable from `roots`, fetched and stored, with the
    /// cosign tags found for them.
    async fn manifests(
        &mut self,
        roots: Vec<Digest>,
        all_tags: &[String],
    ) -> Result<(Vec<ManifestFacts>, Vec<(String, Digest)>), SyncError> {
        let tag_set: HashSet<&str> = all_tags.iter().map(String::as_str).collect();
        let mut found: HashMap<Digest, ManifestFacts> = HashMap::new();
        let mut order: Vec<Digest> = Vec::new();
        let mut signature_tags: Vec<(String, Digest)> = Vec::new();
        // Every digest is queued (and counted in the total) once.
        let mut queued: HashSet<Digest> = HashSet::new();
        let mut queue: VecDeque<Digest> = roots.into_iter().filter(|d| queued.insert(d.clone())).collect();
        self.grow(queue.len() as u64);
        // Unknown until asked once: a remote without the API answers 404.
        let mut referrers_api: Option<bool> = None;
        while let Some(digest) = queue.pop_front() {
            self.turn().await?;
            let manifest = self
                .pull
                .manifest_by_digest(&self.target, &digest)
                .await
                .map_err(|e| fetch_error(format!("manifest {digest}"), e))?;
            let refs = media::references(&manifest.bytes)
                .map_err(|e| fetch_error(format!("manifest {digest}"), PullError::InvalidManifest(e.to_string())))?;
            let facts = manifest_facts(&digest, &manifest.info.media_type, manifest.bytes.len() as u64, refs);
            self.report.add(1, manifest.bytes.len() as u64);
            let mut next: Vec<Digest> = facts.children.iter().map(|c| c.descriptor.digest.clone()).collect();
            // Cosign's tags for this manifest.
            let stem = format!("{}-{}", digest.algorithm().as_str(), digest.hex());
            for suffix in COSIGN_SUFFIXES {
                let tag = format!("{stem}{suffix}");
                if tag_set.contains(tag.as_str()) {
                    if let Some(d) = self.resolve_one(&tag).await? {
                        signature_tags.push((tag, d.clone()));
                        next.push(d);
                    }
                }
            }
            // Referrers: the API, or the tag schema's index.
            if referrers_api != Some(false) {
                self.turn().await?;
                match self.target.upstream.referrers(&self.target.repo, &digest, None).await {
                    Ok(r) => {
                        referrers_api = Some(true);
                        next.extend(index_digests(&r.bytes));
                    }
                    Err(UpstreamError::NotFound) => referrers_api = Some(false),
                    Err(e) => return Err(fetch_error(format!("referrers of {digest}"), e.into())),
                }
            }
            if referrers_api == Some(false) && tag_set.contains(stem.as_str()) {
                if let Some(index) = self.resolve_one(&stem).await? {
                    self.turn().await?;
                    let m = self
                        .pull
                        .manifest_by_digest(&self.target, &index)
                        .await
                        .map_err(|e| fetch_error(format!("referrers index {index}"), e))?;
                    next.extend(index_digests(&m.bytes));
                }
            }
            let before = queue.len();
            queue.extend(next.into_iter().filter(|d| queued.insert(d.clone())));
            self.grow((queue.len() - before) as u64);
            order.push(digest.clone());
            found.insert(digest, facts);
        }
        let manifests = order.into_iter().filter_map(|d| found.remove(&d)).collect();
        Ok((manifests, signature_tags))
    }

    /// The atomic signatures of `manifests`: through the remote's API
    /// extension if it offers it, and from its lookaside store if it has
    /// one; each (manifest, bytes) once. The flag says whether that is the
    /// remote's whole listing: false when it has no source to read, or
    /// when asking whether it serves the extension failed (it may hold
    /// signatures there that this sync did not see). A failed listing
    /// fails the sync, so it never reaches the flag.
    async fn signatures(
        &mut self,
        manifests: &[ManifestFacts],
        lookaside: Option<&Upstream>,
    ) -> Result<(Vec<AtomicSignature>, bool), SyncError> {
        self.turn().await?;
        let (api, probed) = match self.target.upstream.supports_signatures().await {
            Ok(api) => (api, true),
            Err(e) => {
                tracing::warn!(remote = %self.remote.name, error = %e, "cannot ask whether the remote serves signatures");
                (false, false)
            }
        };
        if !api && lookaside.is_none() {
            return Ok((Vec::new(), false));
        }
        self.grow(manifests.len() as u64);
        let this = &*self;
        let digests: Vec<Digest> = manifests.iter().map(|m| m.digest.clone()).collect();
        let found: Vec<Vec<AtomicSignature>> = stream::iter(digests)
            .map(|digest| async move {
                let mut out = Vec::new();
                if api {
                    out.extend(this.extension_signatures(&digest).await?);
                }
                if let Some(store) = lookaside {
                    out.extend(this.lookaside_signatures(store, &digest).await?);
                }
                this.report.add(1, out.iter().map(|s| s.content.len() as u64).sum());
                Ok::<_, SyncError>(out)
            })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        let mut seen = HashSet::new();
        let found = found.into_iter().flatten().filter(|s| seen.insert((s.manifest.clone(), s.content.clone()))).collect();
        Ok((found, probed))
    }

    /// `GET /extensions/v2/<name>/signatures/<digest>`: the entries of
    /// schema version 2 and type `atomic` (what clients read), others
    /// ignored. A manifest the remote knows no signatures of (404) has none.
    async fn extension_signatures(&self, digest: &Digest) -> Result<Vec<AtomicSignature>, SyncError> {
        self.turn().await?;
        let what = || format!("signatures of {digest}");
        let bytes = match self.target.upstream.signatures(&self.target.repo, digest).await {
            Ok(b) => b,
            Err(UpstreamError::NotFound) => return Ok(Vec::new()),
            Err(e) => return Err(fetch_error(what(), e.into())),
        };
        parse_extension_listing(digest, &bytes)
            .map_err(|m| fetch_error(what(), UpstreamError::Protocol(m).into()))
    }

    /// `<sigstore>/<name>@<alg>=<hex>/signature-<n>` for n = 1, 2, ...
    /// until the store answers 404.
    async fn lookaside_signatures(&self, store: &Upstream, digest: &Digest) -> Result<Vec<AtomicSignature>, SyncError> {
        let mut out = Vec::new();
        for n in 1..=MAX_LOOKASIDE_SIGNATURES {
            self.turn().await?;
            let path = format!(
                "/{}@{}={}/signature-{n}",
                self.remote.upstream_name,
                digest.algorithm().as_str(),
                digest.hex()
            );
            match store.get_file(&path, &self.target.repo, LOOKASIDE_SIGNATURE_LIMIT).await {
                Ok(bytes) => out.push(lookaside_signature(digest, bytes.to_vec())),
                Err(UpstreamError::NotFound) => break,
                Err(e) => return Err(fetch_error(format!("lookaside signature {path}"), e.into())),
            }
        }
        Ok(out)
    }

    async fn resolve_one(&mut self, tag: &str) -> Result<Option<Digest>, SyncError> {
        let tag = tag.to_owned();
        self.grow(1);
        Ok(self.resolve_tags(&[&tag]).await?.into_iter().next().map(|(_, d)| d))
    }

    /// Fetches every blob not stored yet, `download_concurrency` at a time.
    async fn fetch_blobs(&mut self, blobs: &[Digest]) -> Result<(), SyncError> {
        self.grow(blobs.len() as u64);
        let this = &*self;
        stream::iter(blobs.iter().cloned())
            .map(|digest| async move {
                if this.pull.has_blob(&digest).await.map_err(|e| fetch_error(format!("blob {digest}"), e))? {
                    this.report.add(1, 0);
                    return Ok(());
                }
                this.turn().await?;
                let size = this
                    .pull
                    .fetch_blob(&this.target, &digest)
                    .await
                    .map_err(|e| fetch_error(format!("blob {digest}"), e))?;
                this.report.add(1, size);
                Ok::<(), SyncError>(())
            })
            .buffer_unordered(self.concurrency)
            .try_collect::<()>()
            .await
    }
}

fn fetch_error(what: String, error: PullError) -> SyncError {
    SyncError::Fetch { what, error }
}

/// The distinct configs of the manifests.
fn configs_of(manifests: &[ManifestFacts]) -> Vec<Digest> {
    let mut seen = HashSet::new();
    manifests.iter().filter_map(|m| m.config.as_ref()).filter(|d| seen.insert(d.digest.clone())).map(|d| d.digest.clone()).collect()
}

/// The distinct blobs the manifests reference, foreign layers (which
/// registries do not serve) left out.
fn blobs_of(manifests: &[ManifestFacts]) -> Vec<Digest> {
    let mut seen = HashSet::new();
    manifests
        .iter()
        .flat_map(|m| m.config.iter().chain(&m.layers))
        .filter(|d| !d.media_type.as_deref().is_some_and(|t| t.contains("foreign") || t.contains("nondistributable")))
        .filter(|d| seen.insert(d.digest.clone()))
        .map(|d| d.digest.clone())
        .collect()
}

/// The atomic signatures of `digest` in an API extension listing
/// (`{"signatures":[{"schemaVersion":2,"type":"atomic","name":..,"content":<base64>}]}`).
fn parse_extension_listing(digest: &Digest, bytes: &[u8]) -> Result<Vec<AtomicSignature>, String> {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    struct Entry {
        // OpenShift and containers/image name it `schemaVersion`.
        #[serde(rename = "schemaVersion", alias = "version", default)]
        version: u32,
        #[serde(rename = "type", default)]
        kind: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
        content: String,
    }
    #[derive(serde::Deserialize)]
    struct Listing {
        #[serde(default)]
        signatures: Vec<Entry>,
    }
    let listing: Listing = serde_json::from_slice(bytes).map_err(|e| format!("signatures listing: {e}"))?;
    let prefix = format!("{digest}@");
    let mut out = Vec::new();
    for e in listing.signatures {
        if e.version != EXTENSION_SCHEMA_VERSION || e.kind != ATOMIC {
            continue;
        }
        let content = base64::engine::general_purpose::STANDARD
            .decode(e.content.as_bytes())
            .map_err(|err| format!("signature {:?}: content is not base64: {err}", e.name))?;
        // A name that does not name this manifest is not this manifest's.
        if !e.name.starts_with(&prefix) || e.name.len() == prefix.len() || content.is_empty() {
            continue;
        }
        out.push(AtomicSignature { manifest: digest.clone(), name: e.name, kind: ATOMIC.into(), content });
    }
    Ok(out)
}

/// A lookaside file as a signature; its name comes from its bytes, so a
/// sync that reads it again names it the same.
fn lookaside_signature(digest: &Digest, content: Vec<u8>) -> AtomicSignature {
    let id = Digest::of(crate::oci::Algorithm::Sha256, &content);
    let name = format!("{digest}@{}", id.hex().get(..32).unwrap_or(id.hex()));
    AtomicSignature { manifest: digest.clone(), name, kind: ATOMIC.into(), content }
}

/// The manifests an image index (or a referrers listing) lists.
fn index_digests(bytes: &[u8]) -> Vec<Digest> {
    #[derive(serde::Deserialize)]
    struct Entry {
        digest: String,
    }
    #[derive(serde::Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Entry>,
    }
    serde_json::from_slice::<Index>(bytes)
        .map(|i| i.manifests.into_iter().filter_map(|e| e.digest.parse().ok()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_digests_reads_entries_and_ignores_junk() {
        let d = format!("sha256:{}", "b".repeat(64));
        let bytes = format!(r#"{{"schemaVersion":2,"manifests":[{{"digest":"{d}"}},{{"digest":"nope"}}]}}"#);
        assert_eq!(index_digests(bytes.as_bytes()).iter().map(ToString::to_string).collect::<Vec<_>>(), [d]);
        assert!(index_digests(b"not json").is_empty());
    }

    #[test]
    fn extension_listing_keeps_atomic_v2_entries_of_this_manifest() {
        let d: Digest = format!("sha256:{}", "c".repeat(64)).parse().unwrap();
        let other = format!("sha256:{}", "d".repeat(64));
        let listing = format!(
            r#"{{"signatures":[
                {{"schemaVersion":2,"type":"atomic","name":"{d}@one","content":"aGVsbG8="}},
                {{"version":2,"type":"atomic","name":"{d}@two","content":"d29ybGQ="}},
                {{"schemaVersion":1,"type":"atomic","name":"{d}@old","content":"aGVsbG8="}},
                {{"schemaVersion":2,"type":"cosign","name":"{d}@x","content":"aGVsbG8="}},
                {{"schemaVersion":2,"type":"atomic","name":"{other}@y","content":"aGVsbG8="}}
            ]}}"#
        );
        let got = parse_extension_listing(&d, listing.as_bytes()).unwrap();
        let got: Vec<(&str, &[u8])> = got.iter().map(|s| (s.name.as_str(), s.content.as_slice())).collect();
        assert_eq!(got, [(format!("{d}@one").as_str(), &b"hello"[..]), (format!("{d}@two").as_str(), &b"world"[..])]);
        assert!(parse_extension_listing(&d, b"nope").is_err());
        let bad = format!(r#"{{"signatures":[{{"schemaVersion":2,"type":"atomic","name":"{d}@z","content":"!!"}}]}}"#);
        assert!(parse_extension_listing(&d, bad.as_bytes()).is_err());
    }

    #[test]
    fn a_lookaside_signature_is_named_by_its_bytes() {
        let d: Digest = format!("sha256:{}", "c".repeat(64)).parse().unwrap();
        let a = lookaside_signature(&d, b"sig".to_vec());
        assert_eq!(a, lookaside_signature(&d, b"sig".to_vec()));
        assert_ne!(a.name, lookaside_signature(&d, b"other".to_vec()).name);
        assert!(a.name.starts_with(&format!("{d}@")));
    }
}
