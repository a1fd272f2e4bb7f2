//! Serves a distribution's repository version: manifests, blobs, tags and
//! referrers, each checked against the version's content first, so a
//! distribution never serves what its version does not hold.
//!
//! A version's content never changes, so what a tag names and whether a
//! digest is held are cached per version number, exactly: the request path
//! asks the database only which version is the latest. The one fact about
//! a repository that changes without a new version, the blobs uploaded to
//! a push repository and not yet in a manifest, is never cached: each
//! request for a blob of a push repository's latest content asks the
//! database.

use std::sync::Arc;

use bytes::Bytes;
use moka::future::Cache;

use super::Served;
use crate::metadata::{AtomicSignature, ContentType, Metadata, MetadataError, RepositoryKind};
use crate::oci::media::{self, Accept};
use crate::oci::{Digest, Reference};
use crate::storage::Want;
use crate::sync::Clients;
use crate::pullthrough::{paginate, referrers_index, BlobSource, Manifest, PullError, PullThrough, TagsPage, Target};

/// Answers remembered per (repository, version number).
const CACHED_ANSWERS: u64 = 100_000;

/// A version of a repository as a distribution's table named it:
/// (table generation, repository, version number). See `Served::generation`.
type VersionKey = (u64, Arc<str>, u64);

#[derive(Clone)]
pub(crate) struct Hosted {
    metadata: Metadata,
    pull: PullThrough,
    clients: Clients,
    tags: Cache<(VersionKey, String), Option<Digest>>,
    holds: Cache<(VersionKey, ContentType, Digest), bool>,
}

fn version_key(d: &Served, number: u64) -> VersionKey {
    (d.generation, Arc::from(d.repository.as_str()), number)
}

impl Hosted {
    pub(crate) fn new(metadata: Metadata, pull: PullThrough, clients: Clients) -> Hosted {
        Hosted {
            metadata,
            pull,
            clients,
            tags: Cache::new(CACHED_ANSWERS),
            holds: Cache::new(CACHED_ANSWERS),
        }
    }

    /// The version `d` serves now: its pinned one, or the repository's
    /// latest; None if the repository is gone.
    async fn version(&self, d: &Served) -> Result<Option<u64>, PullError> {
        if d.version.is_some() {
            return Ok(d.version);
        }
        let repository = d.repository.clone();
        Ok(self.metadata.run(move |s| s.repository(&repository)).await?.map(|r| r.latest_version))
    }

    fn origin(&self, d: &Served) -> Option<Target> {
        d.origin.as_ref().and_then(|(upstream, remote)| self.pull.target_for(upstream, remote))
    }

    async fn contains(&self, d: &Served, number: u64, kind: ContentType, digest: &Digest) -> Result<bool, PullError> {
        // A push repository's latest content includes its uploaded blobs,
        // which change without a new version: asked every time.
        let uploads_count = d.kind == RepositoryKind::Push && d.version.is_none() && kind == ContentType::Blob;
        let version = if uploads_count { None } else { Some(number) };
        let (repository, wanted) = (d.repository.clone(), digest.clone());
        let lookup = async move {
            match self.metadata.run(move |s| s.contains(&repository, version, kind, &wanted)).await {
                Ok(found) => Ok(found),
                // The version or the repository is gone: nothing to serve.
                Err(MetadataError::NotFound(_)) => Ok(false),
                Err(e) => Err(PullError::from(e)),
            }
        };
        if uploads_count {
            return lookup.await;
        }
        let key = (version_key(d, number), kind, digest.clone());
        self.holds.try_get_with(key, lookup).await.map_err(|e| (*e).clone())
    }

    /// The manifest `tag` names in the version `d` serves.
    async fn tag(&self, d: &Served, number: u64, tag: &str) -> Result<Option<Digest>, PullError> {
        let key = (version_key(d, number), tag.to_owned());
        let (repository, tag) = (d.repository.clone(), tag.to_owned());
        let lookup = async move {
            match self.metadata.run(move |s| s.resolve_tag(&repository, Some(number), &tag)).await {
                Ok(found) => Ok(found.map(|t| t.digest)),
                Err(MetadataError::NotFound(_)) => Ok(None),
                Err(e) => Err(PullError::from(e)),
            }
        };
        self.tags.try_get_with(key, lookup).await.map_err(|e| (*e).clone())
    }

    /// A manifest the version holds, from local storage, or on demand from
    /// the repository's upstream if its bytes are not here (`fetched` set).
    async fn load(&self, d: &Served, number: u64, digest: &Digest, fetched: &mut bool) -> Result<Arc<Manifest>, PullError> {
        if !self.contains(d, number, ContentType::Manifest, digest).await? {
            return Err(PullError::ManifestUnknown);
        }
        if let Some(m) = self.pull.local_manifest(digest).await? {
            return Ok(m);
        }
        *fetched = true;
        match self.origin(d) {
            Some(target) => self.pull.manifest_by_digest(&target, digest).await,
            None => Err(PullError::ManifestUnknown),
        }
    }

    /// A client's manifest request, counted once as a cache hit or miss.
    pub(crate) async fn manifest(&self, d: &Served, reference: &Reference, accept: &Accept) -> Result<Arc<Manifest>, PullError> {
        let mut fetched = false;
        let manifest = self.lookup_manifest(d, reference, accept, &mut fetched).await;
        // Not found here is a miss too, as it is for pull-through.
        self.pull.count("manifest", if fetched || manifest.is_err() { "miss" } else { "hit" });
        manifest
    }

    async fn lookup_manifest(
        &self,
        d: &Served,
        reference: &Reference,
        accept: &Accept,
        fetched: &mut bool,
    ) -> Result<Arc<Manifest>, PullError> {
        let Some(number) = self.version(d).await? else { return Err(PullError::ManifestUnknown) };
        let (digest, by_digest) = match reference {
            Reference::Digest(digest) => (digest.clone(), true),
            Reference::Tag(tag) => match self.tag(d, number, tag.as_str()).await? {
                Some(digest) => (digest, false),
                None => return Err(PullError::ManifestUnknown),
            },
        };
        let manifest = self.load(d, number, &digest, fetched).await?;
        match media::negotiate(&manifest.info, accept, by_digest) {
            media::Negotiated::AsStored => Ok(manifest),
            media::Negotiated::Child(child) => self.load(d, number, &child, fetched).await,
            media::Negotiated::NotAcceptable => Err(PullError::NotAcceptable),
        }
    }

    /// The atomic signatures the version `d` serves holds for `digest`, a
    /// manifest it holds.
    pub(crate) async fn signatures(&self, d: &Served, digest: &Digest) -> Result<Vec<AtomicSignature>, PullError> {
        let Some(number) = self.version(d).await? else { return Err(PullError::ManifestUnknown) };
        if !self.contains(d, number, ContentType::Manifest, digest).await? {
            return Err(PullError::ManifestUnknown);
        }
        let (repository, digest) = (d.repository.clone(), digest.clone());
        Ok(self.metadata.run(move |s| s.signatures(&repository, Some(number), &digest)).await?)
    }

    pub(crate) async fn blob(&self, d: &Served, digest: &Digest, want: Want) -> Result<BlobSource, PullError> {
        let Some(number) = self.version(d).await? else { return Err(PullError::BlobUnknown) };
        if !self.contains(d, number, ContentType::Blob, digest).await? {
            return Err(PullError::BlobUnknown);
        }
        match self.origin(d) {
            // Stored bytes first; a miss fills from the upstream.
            Some(target) => self.pull.held_blob(&target, digest, want).await,
            None => match self.pull.local_blob(digest, want).await? {
                Some(stored) => Ok(stored),
                None => self.fetch_from_source(digest, want).await,
            },
        }
    }

    /// A blob synced on demand: fetched through the remote its sync
    /// recorded as its source (the first one still configured).
    async fn fetch_from_source(&self, digest: &Digest, want: Want) -> Result<BlobSource, PullError> {
        let wanted = digest.clone();
        let sources = self.metadata.run(move |s| s.blob_sources(&wanted)).await?;
        for (remote, name) in sources {
            match self.clients.source(&remote, &name).await {
                Ok(Some(target)) => return self.pull.held_blob(&target, digest, want).await,
                Ok(None) => {}
                Err(e) => tracing::warn!(%remote, %digest, error = %e, "on-demand blob source unusable"),
            }
        }
        Err(PullError::BlobUnknown)
    }

    pub(crate) async fn tags(&self, d: &Served, n: Option<usize>, last: Option<&str>) -> Result<TagsPage, PullError> {
        let (repository, version) = (d.repository.clone(), d.version);
        let names = match self.metadata.run(move |s| s.tag_names(&repository, version)).await {
            Ok(names) => names,
            Err(MetadataError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(paginate(&names, n, last))
    }

    /// The version's manifests whose subject is `digest`, as an OCI index.
    pub(crate) async fn referrers(&self, d: &Served, digest: &Digest, artifact_type: Option<&str>) -> Result<Bytes, PullError> {
        let (repository, version, subject) = (d.repository.clone(), d.version, digest.clone());
        let found = match self.metadata.run(move |s| s.referrers(&repository, version, &subject)).await {
            Ok(found) => found,
            Err(MetadataError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let manifests: Vec<serde_json::Value> = found
            .into_iter()
            .map(|item| {
                // The spec: an image manifest without an `artifactType`
                // has its config's media type as its artifact type.
                let m = item.facts;
                let config_type = m.config.as_ref().and_then(|c| c.media_type.clone());
                let artifact_type = m.artifact_type.clone().or(config_type);
                (m, artifact_type)
            })
            .filter(|(_, found)| artifact_type.is_none_or(|t| found.as_deref() == Some(t)))
            .map(|(m, artifact_type)| {
                let mut entry = serde_json::json!({
                    "mediaType": m.media_type,
                    "digest": m.digest.to_string(),
                    "size": m.size,
                });
                if let Some(t) = artifact_type {
                    entry["artifactType"] = serde_json::Value::String(t);
                }
                if let Some(a) = m.annotations.and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok()) {
                    entry["annotations"] = a;
                }
                entry
            })
            .collect();
        Ok(referrers_index(manifests))
    }
}
