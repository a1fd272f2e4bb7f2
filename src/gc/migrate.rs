//! Moving a local store into S3 (`wharf storage migrate --to s3`): every
//! object of `objects/` copied into the bucket of `[storage.s3]`, each
//! verified before it is uploaded and checked after. Metadata does not
//! change: keys are digests, the same on disk and in the bucket. A run cut
//! short resumes where it stopped (objects the bucket holds are skipped);
//! the local objects stay, to become the hot tier once `storage.backend`
//! is "s3".

use super::Disk;
use crate::storage::Copied;
use crate::tasks::{Progress, TaskFailure};

/// How many corrupt objects a failed migration names.
const NAMED: usize = 10;

impl Disk {
    /// Whether this store can be migrated: the `fs` backend with a bucket
    /// configured.
    pub(crate) fn can_migrate(&self) -> bool {
        self.inner.migrate_to.is_some()
    }

    /// Copies every local object into the bucket. Progress: objects
    /// handled, bytes uploaded. Fails, naming them, if any object was
    /// corrupt (quarantined, not copied), or at the first S3 error (the
    /// next run resumes).
    pub(crate) async fn migrate(&self, progress: &Progress) -> Result<(), TaskFailure> {
        let Some(remote) = &self.inner.migrate_to else {
            return Err(TaskFailure::Failed(
                "nothing to migrate to: set [storage.s3] (and keep storage.backend = \"fs\" until the copy is done)".into(),
            ));
        };
        let storage = &self.inner.storage;
        let objects = storage.list_objects().await.map_err(|e| TaskFailure::Failed(e.to_string()))?;
        progress.set_total(objects.len() as u64);
        tracing::info!(objects = objects.len(), to = remote.describe(), "storage migrate started");
        let (mut uploaded, mut present, mut corrupt) = (0u64, 0u64, Vec::new());
        for object in objects {
            if progress.is_canceled() {
                return Err(TaskFailure::Canceled);
            }
            let copied = storage.copy_to(remote, &object.digest).await.map_err(|e| {
                TaskFailure::Failed(format!("{}: {e} (run the migration again to resume)", object.digest))
            })?;
            let bytes = match copied {
                Copied::Uploaded => {
                    uploaded += 1;
                    object.size
                }
                Copied::Present => {
                    present += 1;
                    0
                }
                Copied::Corrupt => {
                    tracing::error!(digest = %object.digest, "stored object does not match its digest; quarantined, not migrated");
                    corrupt.push(object.digest.to_string());
                    0
                }
                Copied::Gone => 0,
            };
            progress.add(1, bytes);
        }
        self.publish();
        tracing::info!(uploaded, present, corrupt = corrupt.len(), to = remote.describe(), "storage migrate finished");
        if corrupt.is_empty() {
            return Ok(());
        }
        let more = corrupt.len().saturating_sub(NAMED);
        Err(TaskFailure::Failed(format!(
            "{} object(s) did not match their digest and were quarantined, not migrated: {}{}",
            corrupt.len(),
            corrupt.iter().take(NAMED).cloned().collect::<Vec<_>>().join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        )))
    }
}
