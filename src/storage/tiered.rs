//! The S3 backend's half of [`Storage`]: committing verified files to the
//! bucket, and the bucket side of removal, verification and quarantine
//! (reading objects that have no local copy is [`super::readthrough`]'s).
//!
//! **Invariants** (besides the store's own: only verified bytes under a
//! digest's key):
//! - an object is in the bucket before any local copy of it is visible, so
//!   a local copy is never the only one and evicting it loses nothing;
//! - a download from the bucket is hashed as it is written and kept (or
//!   served) only if it matches its key, so a corrupt object in the bucket
//!   is an error, never bytes served under the wrong digest;
//! - one download per digest at a time, however many readers ask.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::ingest::Upload;

/// How often, and how far apart, a relayed blob's commit looks for the
/// filling node's upload before making its own.
const RELAYED_CHECKS: u32 = 20;
const RELAYED_PAUSE: Duration = Duration::from_millis(250);
use super::{hot::HotTier, now_millis, Remote, Storage, StorageError};
use crate::oci::{Digest, Hasher};

impl Storage {
    pub(super) fn remote(&self) -> Result<&Remote, StorageError> {
        self.inner.remote.as_ref().ok_or_else(|| StorageError::Io("no S3 backend".into()))
    }

    pub(super) fn hot(&self) -> Result<&HotTier, StorageError> {
        self.inner.hot.as_ref().ok_or_else(|| StorageError::Io("no hot tier".into()))
    }

    /// At start, in the background: the bucket's totals (retried until the
    /// bucket answers) and the multipart uploads a crash left behind.
    pub(super) fn spawn_remote_start(&self) {
        let storage = self.clone();
        tokio::spawn(async move {
            let (Ok(remote), Ok(hot)) = (storage.remote(), storage.hot()) else { return };
            let metrics = remote.metrics();
            metrics.hot_tier_capacity_bytes.set(hot.max() as i64);
            metrics.hot_tier_bytes.set(hot.usage().0 as i64);
            loop {
                match remote.list().await {
                    Ok(all) => {
                        storage.inner.bytes.store(all.iter().map(|o| o.size).sum(), Ordering::Relaxed);
                        storage.inner.objects_count.store(all.len() as u64, Ordering::Relaxed);
                        storage.inner.grown.notify_one();
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot list the S3 bucket; retrying in 30 s");
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                }
            }
            match remote.abort_leftovers().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(aborted = n, "aborted S3 multipart uploads left by an earlier run"),
                Err(e) => tracing::warn!(error = %e, "cannot abort S3 multipart uploads left by an earlier run"),
            }
        });
    }

    /// Aborts S3 multipart uploads a crash left behind; how many (0 on the
    /// local backend).
    pub(crate) async fn abort_upload_leftovers(&self) -> Result<u64, StorageError> {
        match &self.inner.remote {
            Some(remote) => remote.abort_leftovers().await,
            None => Ok(0),
        }
    }

    /// A read found a local copy: a hot-tier hit, with S3.
    pub(super) fn hot_hit(&self, digest: &Digest) {
        if let (Some(hot), Some(remote)) = (&self.inner.hot, &self.inner.remote) {
            hot.touch(digest);
            remote.metrics().hot_tier_requests.with_label_values(&["hit"]).inc();
        }
    }

    /// The commit of a verified file with S3: uploads it (or finishes the
    /// upload that followed its writes; nothing if it came from the
    /// bucket), then renames it into the hot tier if it admits the size. True if it was renamed (kept locally).
    /// Blocks: for the blocking pool.
    pub(super) fn commit_remote_blocking(
        &self,
        digest: &Digest,
        file: &Arc<File>,
        path: &Path,
        len: u64,
        upload: Upload,
    ) -> Result<bool, StorageError> {
        let remote = self.remote()?;
        let hot = self.hot()?;
        let added = match upload {
            Upload::None => None,
            Upload::Whole => Some(tokio::runtime::Handle::current().block_on(remote.upload(digest, file.clone(), len))?),
            Upload::Following(follower) => Some(follower.finish_blocking(len)?),
            Upload::Copy(key) => Some(tokio::runtime::Handle::current().block_on(remote.copy_key_to(&key, digest))?),
            Upload::Relayed => Some(self.upload_relayed_blocking(remote, digest, file, len)?),
        };
        if let Some(added) = added {
            // Counted once: a digest the bucket held already adds nothing.
            self.inner.committed(digest, len, !added);
        }
        if !hot.admits(len) {
            return Ok(false);
        }
        let target = self.object_path(digest)?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(path, &target)?;
        let metrics = remote.metrics();
        for (victim, size) in hot.inserted(digest, len) {
            if let Ok(p) = self.object_path(&victim) {
                let _ = std::fs::remove_file(p);
            }
            metrics.hot_tier_evictions.inc();
            metrics.hot_tier_evicted_bytes.inc_by(size);
        }
        metrics.hot_tier_bytes.set(hot.usage().0 as i64);
        Ok(true)
    }

    /// The commit of a blob streamed from another node's fill: that node
    /// completes its upload as it verifies, a moment before this one got
    /// the last byte; waited for (a few seconds at most) rather than
    /// uploaded twice. Whether this node uploaded it.
    fn upload_relayed_blocking(&self, remote: &Remote, digest: &Digest, file: &Arc<File>, len: u64) -> Result<bool, StorageError> {
        let runtime = tokio::runtime::Handle::current();
        for _ in 0..RELAYED_CHECKS {
            if runtime.block_on(remote.head(digest))?.is_some() {
                return Ok(false);
            }
            std::thread::sleep(RELAYED_PAUSE);
        }
        runtime.block_on(remote.upload(digest, file.clone(), len))
    }

    /// Drops the local copy of `digest`, if any.
    fn drop_local_copy(&self, digest: &Digest) {
        if let Ok(p) = self.object_path(digest) {
            let _ = std::fs::remove_file(p);
        }
        if let (Some(hot), Some(remote)) = (&self.inner.hot, &self.inner.remote) {
            hot.removed(digest);
            remote.metrics().hot_tier_bytes.set(hot.usage().0 as i64);
        }
    }

    /// [`Storage::remove_unpinned`] with S3: from the bucket and the hot tier.
    pub(super) async fn remove_remote_unpinned(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        if self.inner.lock_pins().contains_key(digest) {
            return Ok(None);
        }
        let remote = self.remote()?;
        let Some(size) = remote.head(digest).await? else {
            self.drop_local_copy(digest);
            return Ok(None);
        };
        // A fill that pins the digest between this check and the delete
        // finds the object gone at its next read and fetches it again.
        if self.inner.lock_pins().contains_key(digest) {
            return Ok(None);
        }
        remote.delete(digest).await?;
        self.drop_local_copy(digest);
        self.inner.forgot(size);
        Ok(Some(size))
    }

    /// [`Storage::verify_object`] with S3: streams the bucket's object and
    /// hashes it (a local copy is dropped if the bucket's is corrupt).
    pub(super) async fn verify_remote(&self, digest: &Digest) -> Result<bool, StorageError> {
        let Some((_, mut body)) = self.remote()?.get(digest, 0, None).await? else { return Ok(true) };
        let mut hasher = Hasher::new(digest.algorithm());
        while let Some(chunk) = body.next().await {
            hasher.update(&chunk?);
        }
        Ok(hasher.finish() == *digest)
    }

    /// [`Storage::quarantine`] with S3: under `quarantine/` in the bucket,
    /// and no local copy.
    pub(super) async fn quarantine_remote(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        let remote = self.remote()?;
        let Some(size) = remote.head(digest).await? else { return Ok(None) };
        remote.quarantine(digest, &super::layout::quarantine_name(digest, now_millis())).await?;
        self.drop_local_copy(digest);
        self.inner.forgot(size);
        Ok(Some(size))
    }
}

/// What [`Storage::copy_to`] did with one object.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Copied {
    /// The bucket held it already, at the same size.
    Present,
    /// Read, verified and uploaded.
    Uploaded,
    /// Its bytes do not match its digest: not uploaded (quarantined).
    Corrupt,
    /// Gone from the disk meanwhile (evicted, removed by gc).
    Gone,
}

impl Storage {
    /// Copies the local object of `digest` into `remote` (moving a local
    /// store to S3): verified first (a corrupt object is quarantined, never
    /// uploaded), uploaded unless the bucket holds it already (so a copy
    /// cut short resumes where it stopped), then checked by size.
    pub(crate) async fn copy_to(&self, remote: &Remote, digest: &Digest) -> Result<Copied, StorageError> {
        let Some(local) = self.open_local(digest)? else { return Ok(Copied::Gone) };
        if remote.head(digest).await? == Some(local.size) {
            return Ok(Copied::Present);
        }
        let file = local.file.clone();
        let expected = digest.clone();
        let good = tokio::task::spawn_blocking(move || -> Result<bool, StorageError> {
            let mut hasher = Hasher::new(expected.algorithm());
            super::hash_file(&file, local.size, &mut hasher)?;
            Ok(hasher.finish() == expected)
        })
        .await??;
        if !good {
            self.quarantine(digest).await?;
            return Ok(Copied::Corrupt);
        }
        // Not counted in this store's totals: they are the disk's until the
        // backend switches.
        remote.upload(digest, local.file, local.size).await?;
        match remote.head(digest).await? {
            Some(size) if size == local.size => Ok(Copied::Uploaded),
            other => Err(StorageError::Remote(format!(
                "{}: {digest} was uploaded ({} bytes) but the bucket reports {other:?}",
                remote.describe(),
                local.size
            ))),
        }
    }
}
