//! Push repositories: where a client's push lands, what a pushed manifest
//! must satisfy, and the version each change makes. Takes spec types and
//! verified bytes from the API; never sees HTTP types or SQL.
//!
//! A name a client pushes to is writable when it is a push repository's own
//! distribution (base_path = repository name, serving the latest version),
//! or when it is free: neither under an upstream's prefix nor served by a
//! distribution. A free name becomes a push repository, with a distribution
//! at the same base_path, on the first push. Everything else (pull-through
//! repositories and distributions of other repositories) is read-only.
//!
//! Each manifest PUT or DELETE, tag DELETE or blob DELETE is one metadata
//! transaction making one new version (none when nothing changed). Uploaded
//! blobs are not version content until a manifest references them.

use bytes::Bytes;

use super::Distributions;
use crate::metadata::{AtomicSignature, ContentType, Descriptor, Metadata, MetadataError, PushChange, RepositoryKind};
use crate::oci::media;
use crate::oci::{Algorithm, Digest, Reference, RepositoryName};
use crate::pullthrough::{manifest_facts, PullThrough};
use crate::storage::{IngestError, Storage, StorageError};

const READ_ONLY: &str = "repository is a read-only pull-through cache";
const SERVED_READ_ONLY: &str = "repository is served read-only by a distribution";
const SYNCED: &str = "repository is filled by syncs from a remote and takes no pushes";
const NOT_PUSH: &str = "a repository of this name exists and is not a push repository";

/// Why a push was refused or failed, by whose fault.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PushError {
    /// The client may not change this repository.
    #[error("{0}")]
    Denied(&'static str),
    /// Nothing to change: no push repository has this name.
    #[error("repository name not known to registry")]
    NameUnknown,
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest is larger than the limit of {limit} bytes")]
    ManifestTooLarge { limit: usize },
    #[error("manifest references {0}, which is not in the repository")]
    ManifestBlobUnknown(Digest),
    #[error("manifest has digest {actual}, not {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("manifest unknown")]
    ManifestUnknown,
    #[error("blob unknown to registry")]
    BlobUnknown,
    /// A signature PUT whose body is not one atomic signature of the
    /// manifest its path names, or reuses a name.
    #[error("signature invalid: {0}")]
    SignatureInvalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// A stored object whose bytes were not what its digest says is the
/// pusher's mismatch; anything else is storage's.
impl From<IngestError> for PushError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::DigestMismatch { expected, actual } => PushError::DigestMismatch { expected, actual },
            IngestError::Storage(s) => PushError::Storage(s),
        }
    }
}

/// A push repository a request may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Writable {
    pub(crate) repository: String,
}

/// A manifest stored by a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PushedManifest {
    pub(crate) digest: Digest,
    pub(crate) subject: Option<Digest>,
    /// The version it made; None when the push changed nothing.
    pub(crate) version: Option<u64>,
}

#[derive(Clone)]
pub(crate) struct Pushes {
    metadata: Metadata,
    storage: Storage,
    distributions: Distributions,
    pull: PullThrough,
}

/// Distribution names are `[A-Za-z0-9._-]{1,64}`; a repository name's
/// characters are all allowed but `/`.
fn distribution_name(repository: &RepositoryName) -> String {
    let mut name = repository.as_str().replace('/', ".");
    name.truncate(64);
    name
}

/// Layers a registry does not hold (non-distributable, or fetched from
/// elsewhere by their `urls`) need not be pushed first.
fn must_be_pushed(d: &Descriptor) -> bool {
    !d.media_type.as_deref().is_some_and(|m| m.contains("nondistributable") || m.contains(".foreign."))
}

impl Pushes {
    pub(crate) fn new(metadata: Metadata, storage: Storage, distributions: Distributions, pull: PullThrough) -> Pushes {
        Pushes { metadata, storage, distributions, pull }
    }

    /// Whether `name` may be pushed to, without creating anything: the
    /// push repository if it exists, None if the name is free.
    pub(crate) fn check(&self, name: &RepositoryName) -> Result<Option<Writable>, PushError> {
        if let Some(d) = self.distributions.lookup(name.as_str()) {
            return match d.kind {
                RepositoryKind::Push if d.repository == name.as_str() && d.version.is_none() => {
                    Ok(Some(Writable { repository: d.repository.clone() }))
                }
                RepositoryKind::PullThrough => Err(PushError::Denied(READ_ONLY)),
                RepositoryKind::Sync => Err(PushError::Denied(SYNCED)),
                RepositoryKind::Push => Err(PushError::Denied(SERVED_READ_ONLY)),
            };
        }
        // As for base_paths: a name whose first component is an upstream's
        // is that upstream's, even alone.
        let (first, _) = name.split_first();
        if self.distributions.is_upstream_name(first) {
            return Err(PushError::Denied(READ_ONLY));
        }
        Ok(None)
    }

    /// The push repository `name`, created (with its distribution) if the
    /// name is free.
    pub(crate) async fn writable(&self, name: &RepositoryName) -> Result<Writable, PushError> {
        if let Some(w) = self.check(name)? {
            return Ok(w);
        }
        let (repository, dist) = (name.to_string(), distribution_name(name));
        match self.metadata.run(move |s| s.create_push_repository(&repository, &dist)).await {
            Ok(()) => {}
            Err(MetadataError::Conflict(_)) => return Err(PushError::Denied(NOT_PUSH)),
            Err(e) => return Err(e.into()),
        }
        self.distributions.reload().await?;
        tracing::info!(repository = %name, "push repository created");
        self.check(name)?.ok_or(PushError::Denied(SERVED_READ_ONLY))
    }

    /// The push repository `name` if it exists (for deletes).
    pub(crate) fn existing(&self, name: &RepositoryName) -> Result<Writable, PushError> {
        self.check(name)?.ok_or(PushError::NameUnknown)
    }

    /// A blob was uploaded into `repo` (its bytes are committed).
    pub(crate) async fn blob_uploaded(&self, repo: &Writable, digest: &Digest, size: u64) -> Result<(), PushError> {
        let (repository, blob) =
            (repo.repository.clone(), Descriptor { digest: digest.clone(), media_type: None, size: Some(size) });
        Ok(self.metadata.run(move |s| s.add_uploaded_blob(&repository, &blob)).await?)
    }

    /// Mounts `digest` from the repository clients call `from` into
    /// `repo`, if `from` holds it and its bytes are stored. Whether it did.
    pub(crate) async fn mount(&self, repo: &Writable, digest: &Digest, from: &RepositoryName) -> Result<bool, PushError> {
        let Some(size) = self.storage.stat(digest).await? else { return Ok(false) };
        let (source, version) = match self.distributions.lookup(from.as_str()) {
            Some(d) => (d.repository.clone(), d.version),
            None => match self.pull.resolve(from, None) {
                Ok(target) => (self.pull.repository_of(&target), None),
                Err(_) => return Ok(false),
            },
        };
        let d = digest.clone();
        let held = match self.metadata.run(move |s| s.contains(&source, version, ContentType::Blob, &d)).await {
            Ok(held) => held,
            Err(MetadataError::NotFound(_)) => false,
            Err(e) => return Err(e.into()),
        };
        if held {
            self.blob_uploaded(repo, digest, size).await?;
        }
        Ok(held)
    }

    /// Validates and stores a manifest pushed as `reference`, and makes the
    /// version that holds it.
    pub(crate) async fn put_manifest(
        &self,
        repo: &Writable,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<PushedManifest, PushError> {
        let (digest, tag) = match reference {
            Reference::Digest(expected) => {
                let actual = Digest::of(expected.algorithm(), &bytes);
                if actual != *expected {
                    return Err(PushError::DigestMismatch { expected: expected.clone(), actual });
                }
                (actual, None)
            }
            Reference::Tag(tag) => (Digest::of(Algorithm::Sha256, &bytes), Some(tag.to_string())),
        };
        let info = media::inspect(&bytes).map_err(|e| PushError::ManifestInvalid(e.to_string()))?;
        media::validate(&bytes, info.kind).map_err(|e| PushError::ManifestInvalid(e.to_string()))?;
        if let (Some(declared), Some(sent)) = (declared_media_type(&bytes), content_type) {
            let sent = sent.split(';').next().unwrap_or_default().trim();
            if !sent.eq_ignore_ascii_case(&declared) {
                return Err(PushError::ManifestInvalid(format!(
                    "Content-Type {sent:?} does not match the manifest's mediaType {declared:?}"
                )));
            }
        }
        let refs = media::references(&bytes).map_err(|e| PushError::ManifestInvalid(e.to_string()))?;
        let subject = refs.subject.as_ref().map(|s| s.digest.clone());
        let facts = manifest_facts(&digest, &info.media_type, bytes.len() as u64, refs);
        self.check_references(repo, &facts).await?;
        self.storage.put_verified(&digest, bytes).await.map_err(PushError::from)?;
        let repository = repo.repository.clone();
        let change = PushChange::Manifest { facts, tag };
        let version = self.metadata.run(move |s| s.push(&repository, &change)).await?;
        if let Some(v) = version {
            tracing::info!(repository = %repo.repository, version = v, %digest, "repository version created");
        }
        Ok(PushedManifest { digest, subject, version })
    }

    /// Stores an image config a build made (verified under its digest).
    pub(crate) async fn put_config(&self, bytes: &[u8]) -> Result<(), PushError> {
        let digest = Digest::of(Algorithm::Sha256, bytes);
        self.storage.put_verified(&digest, Bytes::copy_from_slice(bytes)).await.map_err(PushError::from)
    }

    /// Stores what a build made into `repo` as one version: `manifests`
    /// (bytes, and the tags naming each; an index after its children),
    /// whose blobs are stored already (written by the build, or a base's).
    /// The version made; None when the repository held all of it.
    pub(crate) async fn put_built(&self, repo: &Writable, manifests: Vec<(Bytes, Vec<String>)>) -> Result<Option<u64>, PushError> {
        let mut change = Vec::new();
        for (bytes, tags) in manifests {
            let digest = Digest::of(Algorithm::Sha256, &bytes);
            let info = media::inspect(&bytes).map_err(|e| PushError::ManifestInvalid(e.to_string()))?;
            media::validate(&bytes, info.kind).map_err(|e| PushError::ManifestInvalid(e.to_string()))?;
            let refs = media::references(&bytes).map_err(|e| PushError::ManifestInvalid(e.to_string()))?;
            let facts = manifest_facts(&digest, &info.media_type, bytes.len() as u64, refs);
            for d in facts.config.iter().chain(&facts.layers) {
                if self.storage.stat(&d.digest).await?.is_none() {
                    return Err(PushError::ManifestBlobUnknown(d.digest.clone()));
                }
            }
            self.storage.put_verified(&digest, bytes).await.map_err(PushError::from)?;
            change.push((facts, tags));
        }
        let repository = repo.repository.clone();
        let version = self.metadata.run(move |s| s.push(&repository, &PushChange::Manifests(change))).await?;
        if let Some(v) = version {
            tracing::info!(repository = %repo.repository, version = v, "repository version created by a build");
        }
        Ok(version)
    }

    /// Every blob a manifest references is in the repository (uploaded or
    /// in its latest version) with its bytes stored, and every child
    /// manifest an index lists is in the repository.
    async fn check_references(&self, repo: &Writable, facts: &crate::metadata::ManifestFacts) -> Result<(), PushError> {
        let blobs: Vec<Digest> =
            facts.config.iter().chain(&facts.layers).filter(|d| must_be_pushed(d)).map(|d| d.digest.clone()).collect();
        let children: Vec<Digest> = facts.children.iter().map(|c| c.descriptor.digest.clone()).collect();
        let repository = repo.repository.clone();
        let to_check = blobs.clone();
        let missing = self
            .metadata
            .run(move |s| {
                for d in &to_check {
                    if !s.contains(&repository, None, ContentType::Blob, d)? {
                        return Ok(Some(d.clone()));
                    }
                }
                for d in &children {
                    if !s.contains(&repository, None, ContentType::Manifest, d)? {
                        return Ok(Some(d.clone()));
                    }
                }
                Ok(None)
            })
            .await?;
        if let Some(d) = missing {
            return Err(PushError::ManifestBlobUnknown(d));
        }
        for d in blobs {
            if self.storage.stat(&d).await?.is_none() {
                return Err(PushError::ManifestBlobUnknown(d));
            }
        }
        Ok(())
    }

    /// Deletes a manifest (by digest, with every tag pointing at it) or a
    /// tag (by tag). The version it made.
    pub(crate) async fn delete_manifest(&self, repo: &Writable, reference: &Reference) -> Result<Option<u64>, PushError> {
        let change = match reference {
            Reference::Digest(digest) => PushChange::DeleteManifest { digest: digest.clone() },
            Reference::Tag(tag) => PushChange::DeleteTag { tag: tag.to_string() },
        };
        let repository = repo.repository.clone();
        match self.metadata.run(move |s| s.push(&repository, &change)).await {
            Ok(v) => Ok(v),
            Err(MetadataError::NotFound(_)) => Err(PushError::ManifestUnknown),
            Err(e) => Err(e.into()),
        }
    }

    /// Adds an atomic signature of a manifest the repository's latest
    /// version holds. The version it made; None if it was there already.
    pub(crate) async fn add_signature(&self, repo: &Writable, signature: AtomicSignature) -> Result<Option<u64>, PushError> {
        let repository = repo.repository.clone();
        match self.metadata.run(move |s| s.add_signature(&repository, &signature)).await {
            Ok(v) => Ok(v),
            Err(MetadataError::NotFound(_)) => Err(PushError::ManifestUnknown),
            Err(MetadataError::Conflict(m)) => Err(PushError::SignatureInvalid(m)),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a blob from the repository (its bytes stay in storage: other
    /// repositories may hold the same digest).
    pub(crate) async fn delete_blob(&self, repo: &Writable, digest: &Digest) -> Result<Option<u64>, PushError> {
        let change = PushChange::DeleteBlob { digest: digest.clone() };
        let repository = repo.repository.clone();
        match self.metadata.run(move |s| s.push(&repository, &change)).await {
            Ok(v) => Ok(v),
            Err(MetadataError::NotFound(_)) => Err(PushError::BlobUnknown),
            Err(e) => Err(e.into()),
        }
    }
}

/// The `mediaType` a manifest declares, if it declares one.
fn declared_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Declared {
        media_type: Option<String>,
    }
    serde_json::from_slice::<Declared>(bytes).ok()?.media_type
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_names_come_from_the_repository_name() {
        let name = |s: &str| distribution_name(&s.parse().unwrap());
        assert_eq!(name("team/app"), "team.app");
        assert_eq!(name("a"), "a");
        assert_eq!(name("x/".repeat(40).trim_end_matches('/')).len(), 64);
    }

    #[test]
    fn declared_media_types_and_foreign_layers() {
        assert_eq!(declared_media_type(br#"{"mediaType":"a/b","x":1}"#).as_deref(), Some("a/b"));
        assert_eq!(declared_media_type(br#"{"schemaVersion":2}"#), None);
        let d = |m: &str| Descriptor {
            digest: Digest::of(Algorithm::Sha256, b""),
            media_type: Some(m.into()),
            size: None,
        };
        assert!(!must_be_pushed(&d("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip")));
        assert!(!must_be_pushed(&d("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip")));
        assert!(must_be_pushed(&d(media::OCI_MANIFEST)));
    }
}
