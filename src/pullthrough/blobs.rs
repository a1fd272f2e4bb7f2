//! Blobs through the pull-through cache: stored bytes for a repository
//! that holds the digest, else its upstream's answer (a HEAD when the
//! bytes are here for another repository, else a fill); and the fills a
//! sync or a distribution asks for. Bytes never pass through here: a
//! [`BlobSource`] says where they are.

use super::fill::FillJob;
use super::{is_unavailable, BlobSource, ContentType, PullError, PullThrough, Target};
use crate::oci::Digest;
use crate::storage::{StorageError, Want};

impl PullThrough {
    /// A blob from storage only.
    pub(crate) async fn local_blob(&self, digest: &Digest, want: Want) -> Result<Option<BlobSource>, PullError> {
        Ok(self.storage.open_blob(digest, want).await?.map(|obj| {
            self.count("blob", "hit");
            BlobSource::Stored(obj)
        }))
    }

    /// A client's blob request for a pull-through name: its bytes stored,
    /// arriving, or (for a HEAD on a miss) only described by the upstream.
    /// Stored bytes are served only if the repository holds the digest;
    /// else the upstream decides (`held.rs`).
    pub(crate) async fn blob(&self, target: &Target, digest: &Digest, want: Want) -> Result<BlobSource, PullError> {
        if self.held.contains(target, digest) {
            return self.held_blob(target, digest, want).await;
        }
        // Boxed, as below.
        Box::pin(self.unheld_blob(target, digest, want)).await
    }

    /// A blob the caller knows `target`'s repository holds (a distribution
    /// checked its version): stored, or filled from the upstream.
    pub(crate) async fn held_blob(&self, target: &Target, digest: &Digest, want: Want) -> Result<BlobSource, PullError> {
        if let Some(obj) = or_miss(digest, self.storage.open_blob(digest, want).await)? {
            self.count("blob", "hit");
            return Ok(BlobSource::Stored(obj));
        }
        // Boxed: a stored blob, the common case, does not carry the space
        // of a fill or an upstream HEAD (see `manifest_with`).
        Box::pin(self.blob_not_stored(target, digest, want, true)).await
    }

    /// [`PullThrough::blob`] for a digest the repository is not known to
    /// hold.
    async fn unheld_blob(&self, target: &Target, digest: &Digest, want: Want) -> Result<BlobSource, PullError> {
        if self.recorded(target, digest, ContentType::Blob).await? {
            self.held.insert(target, digest).await;
            return self.held_blob(target, digest, want).await;
        }
        if or_miss(digest, self.storage.stat(digest).await)?.is_none() {
            // Nothing here: this request's own upstream request decides.
            return self.blob_not_stored(target, digest, want, false).await;
        }
        self.vouch_blob(target, digest, want).await?;
        self.held_blob(target, digest, want).await
    }

    /// Asks `target`'s upstream whether its repository has `digest`, which
    /// is here for another repository; Ok once it said yes.
    async fn vouch_blob(&self, target: &Target, digest: &Digest, want: Want) -> Result<(), PullError> {
        match target.upstream.head_blob(&target.repo, digest).await {
            Ok(_) => {
                self.held.insert(target, digest).await;
                Ok(())
            }
            // As for a HEAD on a miss (below): unknown, not a gateway error.
            Err(e) if !want.body() && is_unavailable(&e) => Err(PullError::BlobUnknown),
            Err(e) => Err(PullError::from_blob_fetch(e)),
        }
    }

    /// A blob not in storage. `held`: the repository is known to hold it;
    /// if not, only an answer of its own upstream lets it have the bytes.
    async fn blob_not_stored(&self, target: &Target, digest: &Digest, want: Want, held: bool) -> Result<BlobSource, PullError> {
        if !want.body() {
            if let Some(fill) = self.fills.get(digest) {
                self.count("blob", "coalesced");
                let size = fill.ready().await?;
                if !held && !fill.speaks_for(target) {
                    self.vouch_blob(target, digest, want).await?;
                }
                return Ok(BlobSource::Filling { fill, size, fetched: true });
            }
            // A HEAD is an existence check: when the upstream cannot be
            // asked, the blob is unknown here (404), not a gateway error, so
            // a client probing before a push goes on to upload.
            let head = match target.upstream.head_blob(&target.repo, digest).await {
                Ok(head) => head,
                Err(e) if is_unavailable(&e) => {
                    tracing::warn!(upstream = %target.upstream.config().name, repository = %target.repo, %digest, error = %e,
                        "upstream unavailable; a blob HEAD for an uncached blob answers unknown");
                    return Err(PullError::BlobUnknown);
                }
                Err(e) => return Err(PullError::from_blob_fetch(e)),
            };
            self.count("blob", "miss");
            self.held.insert(target, digest).await;
            return Ok(BlobSource::Remote { size: head.size });
        }
        let (fill, started) = self.fills.join_or_start(digest, || FillJob {
            storage: self.storage.clone(),
            target: target.clone(),
            digest: digest.clone(),
            metrics: self.metrics.clone(),
            cluster: self.cluster.clone(),
        });
        let result = match (started, fill.is_complete()) {
            (true, _) => "miss",
            (false, true) => "hit",
            (false, false) => "coalesced",
        };
        self.count("blob", result);
        let size = fill.ready().await?;
        // A fill of another repository's, or one that found the blob
        // stored meanwhile, is no answer of this repository's upstream.
        if !held && !fill.speaks_for(target) {
            self.vouch_blob(target, digest, want).await?;
        }
        self.held.insert(target, digest).await;
        Ok(BlobSource::Filling { fill, size, fetched: result != "hit" })
    }

    /// Makes sure a blob's bytes are stored, fetching them from `target`
    /// unless they are (joining a fill already in flight, so a sync and a
    /// client pulling the same blob fetch it once). Its size, once the blob
    /// is committed: a sync that counts it fetched never loses it to a
    /// crash.
    pub(crate) async fn fetch_blob(&self, target: &Target, digest: &Digest) -> Result<u64, PullError> {
        if let Some(size) = self.storage.stat(digest).await? {
            return Ok(size);
        }
        let (fill, _) = self.fills.join_or_start(digest, || FillJob {
            storage: self.storage.clone(),
            target: target.clone(),
            digest: digest.clone(),
            metrics: self.metrics.clone(),
            cluster: self.cluster.clone(),
        });
        fill.stored().await
    }

    /// Whether a blob's bytes are stored.
    pub(crate) async fn has_blob(&self, digest: &Digest) -> Result<bool, PullError> {
        Ok(self.storage.stat(digest).await?.is_some())
    }
}

/// A storage lookup for pull-through content, where an object store (S3)
/// that fails counts as a miss: the upstream still serves the client, and
/// the fill's commit fails and is counted (see `fill`).
pub(super) fn or_miss<T>(digest: &Digest, found: Result<Option<T>, StorageError>) -> Result<Option<T>, StorageError> {
    match found {
        Err(StorageError::Remote(e)) => {
            tracing::warn!(%digest, error = %e, "object storage failed; the blob is fetched from its upstream");
            Ok(None)
        }
        other => other,
    }
}
