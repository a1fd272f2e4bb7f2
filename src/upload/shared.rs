//! Upload sessions shared by a cluster's nodes: the session's size and
//! chunks in the metadata database, its bytes in the bucket. A node's own
//! files for a session are a copy, brought up to date from the chunks
//! before it appends (or cut back to the shared size, if a request of its
//! own failed before it was recorded).

use super::{load, now_secs, write_body, write_state, Slot, State, UploadError, UploadId, Uploads, DATA_FILE};
use crate::metadata::{Metadata, SharedUpload, UploadChunk};
use crate::oci::RepositoryName;
use crate::storage::{Partial, StorageError};

impl Uploads {
    fn metadata(&self) -> Result<&Metadata, UploadError> {
        self.inner.shared.as_ref().ok_or(UploadError::Unknown)
    }

    /// The shared session `id` of `repository`; Unknown if there is none.
    pub(super) async fn shared_session(&self, repository: &RepositoryName, id: &UploadId) -> Result<SharedUpload, UploadError> {
        let sid = id.to_string();
        match self.metadata()?.run(move |s| s.upload(&sid)).await? {
            Some(session) if session.repository == repository.as_str() => Ok(session),
            _ => Err(UploadError::Unknown),
        }
    }

    /// Loads the local copy of a shared session into `slot` and brings it
    /// to the shared size: chunks other nodes appended are downloaded (and
    /// hashed as they are written), bytes never recorded are dropped.
    pub(super) async fn catch_up(&self, repository: &RepositoryName, id: &UploadId, slot: &mut Slot) -> Result<(), UploadError> {
        let session = match self.shared_session(repository, id).await {
            Ok(session) => session,
            Err(UploadError::Unknown) => {
                // Finished, cancelled or expired elsewhere: the copy goes.
                if self.dir(id).exists() {
                    self.remove(id, slot).await;
                }
                return Err(UploadError::Unknown);
            }
            Err(e) => return Err(e),
        };
        let (mut state, mut partial) = match slot.loaded.take() {
            Some(loaded) => loaded,
            None => self.load_copy(id, &session).await?,
        };
        let dir = self.dir(id);
        if partial.len() > session.size {
            drop(partial);
            let (path, size) = (dir.join(DATA_FILE), session.size);
            partial = tokio::task::spawn_blocking(move || Partial::reopen(&path, size)).await??;
        }
        for chunk in &session.chunks {
            let have = partial.len();
            if chunk.end <= have {
                continue;
            }
            if chunk.start > have {
                return Err(StorageError::Io(format!("upload {id}: no chunk holds bytes {have} to {}", chunk.start)).into());
            }
            let body = Box::pin(self.inner.storage.upload_chunk(&chunk.key, have - chunk.start).await?);
            partial = write_body(partial, body).await.map_err(|e| match e {
                UploadError::Body(e) => UploadError::Storage(StorageError::Remote(e)),
                e => e,
            })?;
            if partial.len() != chunk.end {
                return Err(StorageError::Remote(format!(
                    "upload chunk {} has {} bytes, {} were recorded",
                    chunk.key,
                    partial.len() - chunk.start,
                    chunk.end - chunk.start
                ))
                .into());
            }
        }
        if state.offset != partial.len() {
            state.offset = partial.len();
            state.updated_at = now_secs();
            let (dir, st) = (dir.clone(), state.clone());
            partial = tokio::task::spawn_blocking(move || -> Result<Partial, UploadError> {
                partial.sync_blocking()?;
                write_state(&dir, &st)?;
                Ok(partial)
            })
            .await??;
        }
        slot.loaded = Some((state, partial));
        Ok(())
    }

    /// This node's copy of a shared session, as on disk; a new empty one
    /// if it has none (or an unreadable one).
    async fn load_copy(&self, id: &UploadId, session: &SharedUpload) -> Result<(State, Partial), UploadError> {
        let dir = self.dir(id);
        let repository = session.repository.clone();
        let loaded = tokio::task::spawn_blocking(move || -> Result<(State, Partial), UploadError> {
            match load(&dir) {
                Ok(loaded) => return Ok(loaded),
                Err(UploadError::Unknown) => {}
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "local copy of an upload session unreadable; fetching it again");
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
            std::fs::create_dir_all(&dir).map_err(StorageError::from)?;
            let _ = std::fs::remove_file(dir.join(DATA_FILE));
            let partial = Partial::create(&dir.join(DATA_FILE))?;
            let now = now_secs();
            let state = State { repository, offset: 0, started_at: now, updated_at: now };
            write_state(&dir, &state)?;
            Ok((state, partial))
        })
        .await??;
        Ok(loaded)
    }

    /// Stores the bytes `partial` holds from `start` on as a chunk and
    /// records it, if the session still holds exactly `start` bytes.
    pub(super) async fn share_chunk(&self, id: &UploadId, partial: &Partial, start: u64) -> Result<(), UploadError> {
        let end = partial.len();
        let key = self.inner.storage.put_upload_chunk(id.as_str(), partial.reader()?, start, end).await?;
        let chunk = UploadChunk { start, end, key: key.clone() };
        let sid = id.to_string();
        let appended = self.metadata()?.run(move |s| s.append_upload(&sid, &chunk)).await;
        if !matches!(appended, Ok(true)) {
            self.inner.storage.delete_upload_chunks(&[key]).await;
        }
        if appended? {
            return Ok(());
        }
        // Another node appended first, or ended the session.
        let sid = id.to_string();
        match self.metadata()?.run(move |s| s.upload(&sid)).await? {
            Some(now) => Err(UploadError::OutOfOrder { start, offset: now.size }),
            None => Err(UploadError::Unknown),
        }
    }

    /// Ends shared session `id` of `repository` for every node if it holds
    /// `size` bytes (whatever it holds if None): its chunks, whose objects
    /// the caller deletes.
    pub(super) async fn end_shared(
        &self,
        repository: &RepositoryName,
        id: &UploadId,
        size: Option<u64>,
        slot: &mut Slot,
    ) -> Result<Vec<UploadChunk>, UploadError> {
        let session = match self.shared_session(repository, id).await {
            Ok(session) => session,
            Err(e) => {
                if matches!(e, UploadError::Unknown) {
                    self.remove(id, slot).await;
                }
                return Err(e);
            }
        };
        let sid = id.to_string();
        match self.metadata()?.run(move |s| s.end_upload(&sid, size)).await? {
            Some(chunks) => Ok(chunks),
            None => {
                // Changed by another node since: this request's bytes are
                // dropped at the next reload.
                slot.loaded = None;
                Err(UploadError::OutOfOrder { start: size.unwrap_or(session.size), offset: session.size.max(size.unwrap_or(0)) })
            }
        }
    }

    /// Deletes a finished session's chunks, in the background.
    pub(super) fn delete_chunks(&self, chunks: Vec<UploadChunk>) {
        if chunks.is_empty() {
            return;
        }
        let storage = self.inner.storage.clone();
        tokio::spawn(async move {
            let keys: Vec<String> = chunks.into_iter().map(|c| c.key).collect();
            storage.delete_upload_chunks(&keys).await;
        });
    }

    /// Ends the shared sessions untouched since `cutoff` (seconds), and
    /// drops this node's copies of sessions that ended elsewhere; how many
    /// sessions ended.
    pub(super) async fn sweep_shared(&self, cutoff: u64) -> usize {
        let Ok(metadata) = self.metadata() else { return 0 };
        let before = i64::try_from(cutoff.saturating_mul(1000)).unwrap_or(i64::MAX);
        let expired = match metadata.run(move |s| s.expire_uploads(before)).await {
            Ok(expired) => expired,
            Err(e) => {
                tracing::warn!(error = %e, "cannot expire shared upload sessions");
                return 0;
            }
        };
        let ended = expired.len();
        for (_, chunks) in expired {
            let keys: Vec<String> = chunks.into_iter().map(|c| c.key).collect();
            self.inner.storage.delete_upload_chunks(&keys).await;
        }
        let root = self.inner.storage.uploads_dir().to_owned();
        let local = tokio::task::spawn_blocking(move || -> Vec<String> {
            std::fs::read_dir(&root)
                .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default()
        })
        .await
        .unwrap_or_default();
        for name in local {
            let Ok(id) = name.parse::<UploadId>() else { continue };
            let sid = id.to_string();
            if !matches!(metadata.run(move |s| s.upload(&sid)).await, Ok(None)) {
                continue;
            }
            let Ok(mut slot) = self.slot(&id).try_lock_owned() else { continue };
            self.remove(&id, &mut slot).await;
        }
        ended
    }

    /// Deletes chunks in the bucket that no shared session records and
    /// that are older than `grace` (left by a node that died between
    /// storing a chunk and recording it); how many.
    pub(crate) async fn remove_orphan_chunks(&self, grace: std::time::Duration) -> Result<u64, UploadError> {
        let Ok(metadata) = self.metadata() else { return Ok(0) };
        let cutoff = (now_secs().saturating_sub(grace.as_secs())).saturating_mul(1000);
        let mut removed = 0;
        // Each session looked up once: its recorded chunks, or None.
        let mut sessions = std::collections::HashMap::<String, Option<Vec<String>>>::new();
        for (key, session, modified) in self.inner.storage.list_upload_chunks().await? {
            if modified >= cutoff {
                continue;
            }
            if !sessions.contains_key(&session) {
                let sid = session.clone();
                let recorded = metadata.run(move |s| s.upload(&sid)).await?;
                sessions.insert(session.clone(), recorded.map(|u| u.chunks.into_iter().map(|c| c.key).collect()));
            }
            let recorded = sessions.get(&session).and_then(Option::as_ref).is_some_and(|keys| keys.contains(&key));
            if !recorded {
                self.inner.storage.delete_upload_chunks(&[key]).await;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
