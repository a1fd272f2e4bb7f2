//! With S3, the upload of an ingest (a pull-through fill) follows its spool
//! file as it is written: a multipart upload whose parts go up as soon as
//! their bytes are on disk, while clients are still streaming the fill,
//! completed only once the whole file matched its digest and aborted
//! otherwise ([`Remote::upload_following`]). The commit then waits for the
//! last part instead of the whole object.
//!
//! An upload is started only once an ingest passed one part's size: a
//! smaller object goes up in one PUT at its commit, as before.

use std::fs::File;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::remote::{Following, PART_SIZE};
use super::{Remote, StorageError};
use crate::oci::Digest;

/// The upload following one ingest. Dropped without [`Follower::finish_blocking`],
/// it is aborted.
pub(super) struct Follower {
    progress: watch::Sender<Following>,
    upload: Option<JoinHandle<Result<bool, StorageError>>>,
    /// Parts whose bytes were announced so far.
    parts_told: u64,
}

impl Follower {
    /// Starts following `file`, `written` bytes long so far, if the caller
    /// runs inside the runtime (the blocking pool does).
    pub(super) fn start(remote: &Remote, digest: &Digest, file: Arc<File>, written: u64) -> Option<Follower> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (progress, told) = watch::channel(Following::Written(written));
        let (remote, digest) = (remote.clone(), digest.clone());
        let upload = runtime.spawn(async move { remote.upload_following(&digest, file, told).await });
        Some(Follower { progress, upload: Some(upload), parts_told: written / PART_SIZE as u64 })
    }

    /// `written` bytes are in the file now; the upload hears of it once a
    /// part more is complete (one wake-up a part, not a chunk).
    pub(super) fn written(&mut self, written: u64) {
        let parts = written / PART_SIZE as u64;
        if parts > self.parts_told {
            self.parts_told = parts;
            self.progress.send_replace(Following::Written(written));
        }
    }

    /// The file, `len` bytes, matched its digest: completes the upload and
    /// waits for it (blocks: for the blocking pool). Whether it uploaded
    /// (not if the bucket held the object already).
    pub(super) fn finish_blocking(mut self, len: u64) -> Result<bool, StorageError> {
        let upload = self.upload.take().ok_or_else(|| StorageError::Io("upload already finished".into()))?;
        self.progress.send_replace(Following::Verified(len));
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| StorageError::Io(e.to_string()))?;
        runtime.block_on(upload)?
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if self.upload.is_some() {
            // The task aborts the multipart upload and ends on its own.
            self.progress.send_replace(Following::Abandoned);
        }
    }
}
