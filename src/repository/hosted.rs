//! Serves a distribution's repository version: manifests, blobs, tags and
//! referrers, each checked against the version's content first, so a
//! distribution never serves what its version does not hold.

use std::sync::Arc;

use bytes::Bytes;

use super::Served;
use crate::metadata::{ContentType, Metadata, MetadataError};
use crate::oci::media::{self, Accept};
use crate::oci::{Digest, Reference};
use crate::pullthrough::{paginate, BlobSource, Manifest, PullError, PullThrough, TagsPage, Target};

#[derive(Clone)]
pub(crate) struct Hosted {
    metadata: Metadata,
    pull: PullThrough,
}

impl Hosted {
    pub(crate) fn new(metadata: Metadata, pull: PullThrough) -> Hosted {
        Hosted { metadata, pull }
    }

    fn origin(&self, d: &Served) -> Option<Target> {
        d.origin.as_ref().and_then(|(upstream, remote)| self.pull.target_for(upstream, remote))
    }

    async fn contains(&self, d: &Served, kind: ContentType, digest: &Digest) -> Result<bool, PullError> {
        let (repository, version, digest) = (d.repository.clone(), d.version, digest.clone());
        match self.metadata.run(move |s| s.contains(&repository, version, kind, &digest)).await {
            Ok(found) => Ok(found),
            // The pinned version was deleted under us, or the repository:
            // nothing to serve.
            Err(MetadataError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// A manifest the version holds, from local storage, or on demand from
    /// the repository's upstream if its bytes are not here.
    async fn load(&self, d: &Served, digest: &Digest) -> Result<Arc<Manifest>, PullError> {
        if !self.contains(d, ContentType::Manifest, digest).await? {
            return Err(PullError::ManifestUnknown);
        }
        if let Some(m) = self.pull.local_manifest(digest).await? {
            return Ok(m);
        }
        match self.origin(d) {
            Some(target) => self.pull.manifest_by_digest(&target, digest).await,
            None => Err(PullError::ManifestUnknown),
        }
    }

    pub(crate) async fn manifest(&self, d: &Served, reference: &Reference, accept: &Accept) -> Result<Arc<Manifest>, PullError> {
        let (digest, by_digest) = match reference {
            Reference::Digest(digest) => (digest.clone(), true),
            Reference::Tag(tag) => {
                let (repository, version, tag) = (d.repository.clone(), d.version, tag.to_string());
                match self.metadata.run(move |s| s.resolve_tag(&repository, version, &tag)).await {
                    Ok(Some(t)) => (t.digest, false),
                    Ok(None) | Err(MetadataError::NotFound(_)) => return Err(PullError::ManifestUnknown),
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let manifest = self.load(d, &digest).await?;
        match media::negotiate(&manifest.info, accept, by_digest) {
            media::Negotiated::AsStored => Ok(manifest),
            media::Negotiated::Child(child) => self.load(d, &child).await,
            media::Negotiated::NotAcceptable => Err(PullError::NotAcceptable),
        }
    }

    pub(crate) async fn blob(&self, d: &Served, digest: &Digest, want_body: bool) -> Result<BlobSource, PullError> {
        if !self.contains(d, ContentType::Blob, digest).await? {
            return Err(PullError::BlobUnknown);
        }
        match self.origin(d) {
            // Stored bytes first; a miss fills from the upstream.
            Some(target) => self.pull.blob(&target, digest, want_body).await,
            None => self.pull.local_blob(digest).await?.ok_or(PullError::BlobUnknown),
        }
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
            .filter(|m| artifact_type.is_none_or(|t| m.artifact_type.as_deref() == Some(t)))
            .map(|m| {
                let mut entry = serde_json::json!({
                    "mediaType": m.media_type,
                    "digest": m.digest.to_string(),
                    "size": m.size,
                });
                if let Some(t) = m.artifact_type {
                    entry["artifactType"] = serde_json::Value::String(t);
                }
                if let Some(a) = m.annotations.and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok()) {
                    entry["annotations"] = a;
                }
                entry
            })
            .collect();
        let index = serde_json::json!({ "schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests });
        Ok(Bytes::from(index.to_string()))
    }
}
