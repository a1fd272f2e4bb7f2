//! The bucket side of upload sessions a cluster's nodes share (S3 backend):
//! each request's bytes are stored under an upload chunk key
//! ([`layout::upload_chunk_key`]), outside the objects' keys, so nothing
//! unverified is ever served; the upload layer records the chunks and
//! reads them back on whichever node continues the session.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;

use super::{layout, Storage, StorageError};

/// Numbers this process's chunk writes, for unique keys.
static NEXT_CHUNK: AtomicU64 = AtomicU64::new(0);

impl Storage {
    /// Whether upload sessions can be shared through the bucket: with the
    /// S3 backend.
    pub(crate) fn has_bucket(&self) -> bool {
        self.inner.remote.is_some()
    }

    /// Stores bytes `[start, end)` of `file` as a chunk of upload session
    /// `session`; its key.
    pub(crate) async fn put_upload_chunk(
        &self,
        session: &str,
        file: Arc<File>,
        start: u64,
        end: u64,
    ) -> Result<String, StorageError> {
        let remote = self.remote()?;
        let writer = format!("{}-{}", remote.owner(), NEXT_CHUNK.fetch_add(1, Ordering::Relaxed));
        let key = layout::upload_chunk_key(session, start, end, &writer);
        remote.put_key(&key, file, start, end).await?;
        Ok(key)
    }

    /// The bytes of an upload chunk from `skip` on.
    pub(crate) async fn upload_chunk(
        &self,
        key: &str,
        skip: u64,
    ) -> Result<impl Stream<Item = Result<Bytes, StorageError>> + Send + 'static, StorageError> {
        self.remote()?
            .get_key(key, skip)
            .await?
            .ok_or_else(|| StorageError::Remote(format!("upload chunk {key} is missing from the bucket")))
    }

    /// Deletes upload chunks; failures are logged (gc removes what is
    /// left).
    pub(crate) async fn delete_upload_chunks(&self, keys: &[String]) {
        let Ok(remote) = self.remote() else { return };
        for key in keys {
            if let Err(e) = remote.delete_key(key).await {
                tracing::warn!(key, error = %e, "cannot delete an upload chunk; gc will");
            }
        }
    }

    /// Every upload chunk in the bucket: its key, its session, and when
    /// it was written (millis).
    pub(crate) async fn list_upload_chunks(&self) -> Result<Vec<(String, String, u64)>, StorageError> {
        let Ok(remote) = self.remote() else { return Ok(Vec::new()) };
        Ok(remote
            .list_keys(layout::UPLOADS)
            .await?
            .into_iter()
            .filter_map(|(key, _, modified)| {
                let session = layout::upload_chunk_session(&key)?.to_owned();
                Some((key, session, modified))
            })
            .collect())
    }
}
