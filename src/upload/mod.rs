//! Blob upload sessions: the state machine behind `POST`, `PATCH`, `PUT`,
//! `GET` and `DELETE` on `/v2/<name>/blobs/uploads/`. Owns each session's
//! directory under `storage.path/uploads/<id>/` (the bytes, a
//! [`storage::Partial`], and a small state file) and its lifetime. Takes a
//! body as a stream of byte chunks; never sees HTTP types, repositories'
//! content or SQL.
//!
//! - **Bytes stream to disk.** A request's body goes through a bounded queue
//!   to a blocking-pool writer that appends and hashes it, so an upload of
//!   any size holds a few frames in memory at most.
//! - **Nothing half-uploaded is ever visible.** The session's bytes become
//!   an object only through [`storage::Partial::commit_blocking`], which
//!   checks the digest the client names first; a mismatch stores nothing.
//! - **Sessions survive a restart.** After each request the bytes are synced
//!   and the state file (repository, offset, times) is replaced atomically.
//!   A session is loaded on first use: its bytes are re-hashed up to the
//!   recorded offset (a request cut short leaves nothing after it). A
//!   session whose state is unreadable is refused as unknown and removed.
//! - **Abandoned sessions go.** A session untouched for `upload_timeout` is
//!   deleted by a periodic sweep.
//!
//! One request works on a session at a time: each session has an async
//! mutex, held for the whole request (a second request on the same session
//! waits its turn, and then sees the offset the first one left).
//!
//! **Shared sessions** (a cluster: PostgreSQL metadata and the S3 backend;
//! see [`shared`]): a session is known to every node. Each request's bytes
//! are also stored in the bucket as a chunk, and the session's size in the
//! database is advanced by compare-and-set, so a session started on one
//! node is continued or finished on any, and two nodes appending at once
//! never both succeed. A node's local files are then a copy it brings up
//! to date from the chunks before it appends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::metadata::{Metadata, MetadataError};
use crate::oci::{Digest, RepositoryName};
use crate::storage::{IngestError, Partial, Pin, Storage, StorageError};

mod shared;

const STATE_FILE: &str = "state.json";
const DATA_FILE: &str = "data";
/// Body chunks queued for a session's writer; hyper's frames are at most a
/// few hundred KiB, so this bounds an upload's memory to a few MiB.
const WRITE_QUEUE: usize = 8;

/// Why an upload request failed, by whose fault.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    /// No such session in this repository (never started, finished,
    /// cancelled, expired, or its state was unreadable).
    #[error("upload session unknown")]
    Unknown,
    /// A chunk that does not start where the upload stands.
    #[error("chunk starts at {start}, but the upload has {offset} bytes")]
    OutOfOrder { start: u64, offset: u64 },
    /// The body was not what the request's headers announced.
    #[error("upload chunk invalid: {0}")]
    Invalid(String),
    /// The client's body failed before its end.
    #[error("upload body failed: {0}")]
    Body(String),
    /// The bytes do not hash to the digest the client named.
    #[error("uploaded content has digest {actual}, not {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The shared sessions' database failed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

impl From<tokio::task::JoinError> for UploadError {
    fn from(e: tokio::task::JoinError) -> Self {
        UploadError::Storage(StorageError::from(e))
    }
}

/// A session's id: a random UUID, so a valid id is also a safe directory
/// name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct UploadId(String);

impl UploadId {
    fn random() -> Result<UploadId, UploadError> {
        let mut b = crate::random::bytes::<16>().map_err(|e| StorageError::Io(format!("no randomness for an upload id: {e}")))?;
        // RFC 9562 version 4 (random), variant 10.
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex::encode(b);
        Ok(UploadId(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UploadId {
    type Err = UploadError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s.len() == 36
            && s.bytes().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == b'-',
                _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
            });
        if ok {
            Ok(UploadId(s.to_owned()))
        } else {
            Err(UploadError::Unknown)
        }
    }
}

impl std::fmt::Display for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a chunk claims to go (from `Content-Range` and `Content-Length`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// Must be the upload's current offset.
    pub(crate) start: Option<u64>,
    /// The body's length, when announced: a body of another length is
    /// refused and leaves the upload as it was.
    pub(crate) len: Option<u64>,
}

/// The state file: what a restarted wharf needs to resume a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    repository: String,
    /// Bytes received, synced, and hashed so far.
    offset: u64,
    started_at: u64,
    updated_at: u64,
}

/// A session's in-memory side, behind its async mutex.
#[derive(Default)]
struct Slot {
    /// None until loaded from disk (or after a request was cut short,
    /// which drops what it was writing: the next request reloads).
    loaded: Option<(State, Partial)>,
    /// Finished, cancelled or expired: whoever waited for the lock finds
    /// the session gone.
    gone: bool,
}

type SlotRef = Arc<tokio::sync::Mutex<Slot>>;

/// The upload sessions; cheap to clone.
#[derive(Clone)]
pub(crate) struct Uploads {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Storage,
    timeout: Duration,
    /// With a cluster: where the sessions are shared (the bytes are in
    /// `storage`'s bucket).
    shared: Option<Metadata>,
    // A std mutex: held for a map lookup or insert only. The sessions'
    // own locks are async, held across a request's awaits by design.
    slots: Mutex<HashMap<UploadId, SlotRef>>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Uploads {
    /// Opens the sessions under `storage`'s uploads directory, deleting
    /// those abandoned for longer than `timeout`. With `shared` (and a
    /// bucket), sessions are shared with the other nodes of a cluster.
    pub(crate) async fn open(storage: Storage, timeout: Duration, shared: Option<Metadata>) -> Uploads {
        let shared = shared.filter(|_| storage.has_bucket());
        let uploads = Uploads { inner: Arc::new(Inner { storage, timeout, shared, slots: Mutex::new(HashMap::new()) }) };
        let removed = uploads.sweep().await;
        if removed > 0 {
            tracing::info!(removed, "abandoned upload sessions deleted");
        }
        uploads
    }

    /// Sweeps abandoned sessions periodically, for as long as wharf runs.
    pub(crate) fn spawn_sweeper(&self) {
        let uploads = self.clone();
        let every = (self.inner.timeout / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let removed = uploads.sweep().await;
                if removed > 0 {
                    tracing::info!(removed, "abandoned upload sessions deleted");
                }
            }
        });
    }

    fn dir(&self, id: &UploadId) -> PathBuf {
        self.inner.storage.uploads_dir().join(id.as_str())
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<UploadId, SlotRef>> {
        // Single inserts and removes only: a poisoned map is still consistent.
        self.inner.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn slot(&self, id: &UploadId) -> SlotRef {
        self.slots().entry(id.clone()).or_default().clone()
    }

    /// Starts a session in `repository`.
    pub(crate) async fn start(&self, repository: &RepositoryName) -> Result<UploadId, UploadError> {
        let id = UploadId::random()?;
        let dir = self.dir(&id);
        let now = now_secs();
        let state = State { repository: repository.to_string(), offset: 0, started_at: now, updated_at: now };
        let partial = tokio::task::spawn_blocking({
            let state = state.clone();
            move || -> Result<Partial, UploadError> {
                std::fs::create_dir(&dir).map_err(StorageError::from)?;
                let partial = Partial::create(&dir.join(DATA_FILE))?;
                write_state(&dir, &state)?;
                Ok(partial)
            }
        })
        .await??;
        if let Some(metadata) = &self.inner.shared {
            let (sid, repo) = (id.to_string(), repository.to_string());
            if let Err(e) = metadata.run(move |s| s.create_upload(&sid, &repo)).await {
                let mut slot = Slot::default();
                self.remove(&id, &mut slot).await;
                return Err(e.into());
            }
        }
        let slot = self.slot(&id);
        slot.lock().await.loaded = Some((state, partial));
        Ok(id)
    }

    /// Locks the session, loading it from disk if needed; Unknown unless
    /// it exists and belongs to `repository`.
    async fn lock(
        &self,
        repository: &RepositoryName,
        id: &UploadId,
    ) -> Result<tokio::sync::OwnedMutexGuard<Slot>, UploadError> {
        let mut slot = self.slot(id).lock_owned().await;
        if slot.gone {
            return Err(UploadError::Unknown);
        }
        if self.inner.shared.is_some() {
            self.catch_up(repository, id, &mut slot).await?;
            return Ok(slot);
        }
        if slot.loaded.is_none() {
            let dir = self.dir(id);
            let loaded = tokio::task::spawn_blocking(move || load(&dir)).await?;
            match loaded {
                Ok(l) => slot.loaded = Some(l),
                Err(e) => {
                    // Unreadable or missing: the session cannot be resumed.
                    if !matches!(e, UploadError::Unknown) {
                        tracing::warn!(upload = %id, error = %e, "upload session cannot be resumed; deleting it");
                    }
                    self.remove(id, &mut slot).await;
                    return Err(UploadError::Unknown);
                }
            }
        }
        match &slot.loaded {
            Some((state, _)) if state.repository == repository.as_str() => Ok(slot),
            _ => Err(UploadError::Unknown),
        }
    }

    /// Deletes a session's directory and forgets it.
    async fn remove(&self, id: &UploadId, slot: &mut Slot) {
        slot.gone = true;
        slot.loaded = None;
        let dir = self.dir(id);
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(upload = %id, error = %e, "could not delete an upload session");
            }
        }
        self.slots().remove(id);
    }

    /// How many bytes the session holds.
    pub(crate) async fn offset(&self, repository: &RepositoryName, id: &UploadId) -> Result<u64, UploadError> {
        if self.inner.shared.is_some() {
            return Ok(self.shared_session(repository, id).await?.size);
        }
        let slot = self.lock(repository, id).await?;
        Ok(slot.loaded.as_ref().map_or(0, |(s, _)| s.offset))
    }

    /// Appends `body` to the session; the new offset. On any failure the
    /// session stays as it was before this request.
    pub(crate) async fn append<S, E>(
        &self,
        repository: &RepositoryName,
        id: &UploadId,
        chunk: Chunk,
        body: S,
    ) -> Result<u64, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let mut slot = self.lock(repository, id).await?;
        self.append_locked(id, &mut slot, chunk, body, true).await
    }

    /// Appends `body`; with shared sessions and `share`, also as a chunk
    /// in the bucket, recorded for the other nodes.
    async fn append_locked<S, E>(
        &self,
        id: &UploadId,
        slot: &mut Slot,
        chunk: Chunk,
        body: S,
        share: bool,
    ) -> Result<u64, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let Some((mut state, partial)) = slot.loaded.take() else { return Err(UploadError::Unknown) };
        if let Some(start) = chunk.start {
            if start != state.offset {
                let offset = state.offset;
                slot.loaded = Some((state, partial));
                return Err(UploadError::OutOfOrder { start, offset });
            }
        }
        let before = partial.len();
        // From here on, `slot.loaded` stays None until the chunk is safely
        // recorded: if this request fails or is dropped, the next one
        // reloads the session as of its last recorded offset.
        let partial = write_body(partial, body).await?;
        let received = partial.len() - before;
        if let Some(len) = chunk.len {
            if received != len {
                return Err(UploadError::Invalid(format!("received {received} bytes, {len} were announced")));
            }
        }
        let dir = self.dir(id);
        let partial = tokio::task::spawn_blocking(move || -> Result<Partial, UploadError> {
            partial.sync_blocking()?;
            Ok(partial)
        })
        .await??;
        if share && received > 0 && self.inner.shared.is_some() {
            // Fails, or another node appended first: the local bytes past
            // the shared size are dropped at the next reload.
            self.share_chunk(id, &partial, before).await?;
        }
        state.offset = partial.len();
        state.updated_at = now_secs();
        let state = tokio::task::spawn_blocking(move || -> Result<State, UploadError> {
            write_state(&dir, &state)?;
            Ok(state)
        })
        .await??;
        let offset = state.offset;
        slot.loaded = Some((state, partial));
        Ok(offset)
    }

    /// Appends the optional last chunk, verifies everything against
    /// `digest` and commits it as that object; the session ends either way
    /// once the bytes are all in (a wrong digest deletes the session and
    /// stores nothing). The blob's size, and a pin that keeps the object
    /// from removal until the caller has recorded it.
    pub(crate) async fn finish<S, E>(
        &self,
        repository: &RepositoryName,
        id: &UploadId,
        digest: &Digest,
        chunk: Chunk,
        body: S,
    ) -> Result<(u64, Pin), UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let mut slot = self.lock(repository, id).await?;
        let shared_size = slot.loaded.as_ref().map_or(0, |(s, _)| s.offset);
        // The last chunk is not shared: the session ends with this request.
        self.append_locked(id, &mut slot, chunk, body, false).await?;
        // With shared sessions, claimed from the other nodes first.
        let chunks = match &self.inner.shared {
            Some(_) => Some(self.end_shared(repository, id, Some(shared_size), &mut slot).await?),
            None => None,
        };
        let Some((_, partial)) = slot.loaded.take() else { return Err(UploadError::Unknown) };
        // One chunk holding every byte: the object is a copy of it.
        let copy_from = match chunks.as_deref() {
            Some([only]) if only.start == 0 && only.end == partial.len() => Some(only.key.clone()),
            _ => None,
        };
        let storage = self.inner.storage.clone();
        let pin = storage.pin(digest);
        let expected = digest.clone();
        let committed =
            tokio::task::spawn_blocking(move || partial.commit_blocking(&storage, &expected, copy_from)).await?;
        if let Some(chunks) = chunks {
            self.delete_chunks(chunks);
        }
        self.remove(id, &mut slot).await;
        let size = committed.map_err(|e| match e {
            IngestError::DigestMismatch { expected, actual } => UploadError::DigestMismatch { expected, actual },
            IngestError::Storage(s) => UploadError::Storage(s),
        })?;
        Ok((size, pin))
    }

    /// Cancels a session: its bytes are deleted.
    pub(crate) async fn cancel(&self, repository: &RepositoryName, id: &UploadId) -> Result<(), UploadError> {
        if self.inner.shared.is_some() {
            let mut slot = self.slot(id).lock_owned().await;
            let chunks = self.end_shared(repository, id, None, &mut slot).await?;
            self.delete_chunks(chunks);
            self.remove(id, &mut slot).await;
            return Ok(());
        }
        let mut slot = self.lock(repository, id).await?;
        self.remove(id, &mut slot).await;
        Ok(())
    }

    /// Deletes sessions untouched for longer than the timeout (and any
    /// whose state cannot be read); how many.
    pub(crate) async fn sweep(&self) -> usize {
        let cutoff = now_secs().saturating_sub(self.inner.timeout.as_secs());
        let mut removed = self.sweep_before(cutoff).await;
        if self.inner.shared.is_some() {
            removed += self.sweep_shared(cutoff).await;
        }
        removed
    }

    async fn sweep_before(&self, cutoff: u64) -> usize {
        let root = self.inner.storage.uploads_dir().to_owned();
        let listed = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<(String, Option<u64>)>> {
            let mut out = Vec::new();
            for entry in std::fs::read_dir(&root)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                out.push((name, read_state(&entry.path()).ok().map(|s| s.updated_at)));
            }
            Ok(out)
        })
        .await;
        let listed = match listed {
            Ok(Ok(listed)) => listed,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot list upload sessions");
                return 0;
            }
            Err(e) => {
                tracing::warn!(error = %e, "upload sweep failed");
                return 0;
            }
        };
        let mut removed = 0;
        for (name, updated_at) in listed {
            if updated_at.is_some_and(|t| t >= cutoff) {
                continue;
            }
            let Ok(id) = name.parse::<UploadId>() else {
                // Not a session directory wharf made: leave it alone.
                continue;
            };
            // A session in use right now is not abandoned.
            let Ok(mut slot) = self.slot(&id).try_lock_owned() else { continue };
            // Touched since it was listed?
            if slot.loaded.as_ref().is_some_and(|(s, _)| s.updated_at >= cutoff) {
                continue;
            }
            self.remove(&id, &mut slot).await;
            removed += 1;
        }
        removed
    }
}

/// Streams `body` into `partial` through a blocking-pool writer; the
/// partial back on success. On failure the partial is dropped (the session
/// reloads as of its last recorded offset).
async fn write_body<S, E>(partial: Partial, mut body: S) -> Result<Partial, UploadError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    let (queue, mut chunks) = tokio::sync::mpsc::channel::<Bytes>(WRITE_QUEUE);
    let writer = tokio::task::spawn_blocking(move || -> Result<Partial, StorageError> {
        let mut partial = partial;
        while let Some(chunk) = chunks.blocking_recv() {
            partial.write_blocking(&chunk)?;
        }
        Ok(partial)
    });
    let mut failed = None;
    while let Some(next) = body.next().await {
        match next {
            Ok(chunk) if chunk.is_empty() => {}
            Ok(chunk) => {
                if queue.send(chunk).await.is_err() {
                    // The writer stopped: its error is the one to report.
                    break;
                }
            }
            Err(e) => {
                failed = Some(e.to_string());
                break;
            }
        }
    }
    drop(queue);
    let partial = writer.await??;
    match failed {
        Some(e) => Err(UploadError::Body(e)),
        None => Ok(partial),
    }
}

fn read_state(dir: &Path) -> Result<State, UploadError> {
    let bytes = std::fs::read(dir.join(STATE_FILE)).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => UploadError::Unknown,
        _ => UploadError::Storage(e.into()),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| UploadError::Storage(StorageError::Io(format!("unreadable upload state: {e}"))))
}

/// Replaces the state file atomically (write, sync, rename).
fn write_state(dir: &Path, state: &State) -> Result<(), UploadError> {
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let json = serde_json::to_vec(state).map_err(|e| StorageError::Io(format!("upload state: {e}")))?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(StorageError::from)?;
        f.write_all(&json).map_err(StorageError::from)?;
        f.sync_data().map_err(StorageError::from)?;
    }
    std::fs::rename(&tmp, dir.join(STATE_FILE)).map_err(StorageError::from)?;
    Ok(())
}

/// Loads a session from disk: its state, and its bytes re-hashed.
fn load(dir: &Path) -> Result<(State, Partial), UploadError> {
    let state = read_state(dir)?;
    let partial = Partial::reopen(&dir.join(DATA_FILE), state.offset)?;
    Ok((state, partial))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;

    async fn uploads(timeout: Duration) -> (tempfile::TempDir, Storage, Uploads) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).await.unwrap();
        let uploads = Uploads::open(storage.clone(), timeout, None).await;
        (dir, storage, uploads)
    }

    fn body(parts: &[&[u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin {
        futures_util::stream::iter(parts.iter().map(|p| Ok(Bytes::copy_from_slice(p))).collect::<Vec<_>>())
    }

    fn name(s: &str) -> RepositoryName {
        s.parse().unwrap()
    }

    const ANY: Chunk = Chunk { start: None, len: None };

    fn at(start: u64, len: u64) -> Chunk {
        Chunk { start: Some(start), len: Some(len) }
    }

    #[test]
    fn ids_are_random_uuids_and_only_uuids_parse() {
        let a = UploadId::random().unwrap();
        assert_ne!(a, UploadId::random().unwrap());
        assert_eq!(a.as_str().parse::<UploadId>().unwrap(), a);
        assert_eq!(&a.as_str()[14..15], "4");
        for bad in ["", "../../etc", "ABCDEFAB-0000-4000-8000-000000000000", "0000000000000000000000000000000000000"] {
            assert!(bad.parse::<UploadId>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn chunks_append_in_order_and_commit_under_the_digest() {
        let (_d, storage, u) = uploads(Duration::from_secs(60)).await;
        let repo = name("team/app");
        let id = u.start(&repo).await.unwrap();
        assert_eq!(u.offset(&repo, &id).await.unwrap(), 0);
        assert_eq!(u.append(&repo, &id, at(0, 5), body(&[b"hel", b"lo"])).await.unwrap(), 5);
        let err = u.append(&repo, &id, at(3, 2), body(&[b"xx"])).await.unwrap_err();
        assert!(matches!(err, UploadError::OutOfOrder { start: 3, offset: 5 }), "{err:?}");
        // A body shorter than announced leaves the upload as it was.
        let err = u.append(&repo, &id, at(5, 9), body(&[b" wo"])).await.unwrap_err();
        assert!(matches!(err, UploadError::Invalid(_)), "{err:?}");
        assert_eq!(u.offset(&repo, &id).await.unwrap(), 5);
        // Without a range, a streamed append.
        assert_eq!(u.append(&repo, &id, ANY, body(&[b" wor"])).await.unwrap(), 9);
        assert!(matches!(u.offset(&name("other/repo"), &id).await, Err(UploadError::Unknown)), "another repository's");
        let digest = Digest::of(Algorithm::Sha256, b"hello world");
        assert_eq!(u.finish(&repo, &id, &digest, at(9, 2), body(&[b"ld"])).await.unwrap().0, 11);
        assert_eq!(storage.read_small(&digest, 100).await.unwrap().unwrap(), Bytes::from_static(b"hello world"));
        assert!(matches!(u.offset(&repo, &id).await, Err(UploadError::Unknown)), "finished");
    }

    #[tokio::test]
    async fn a_wrong_digest_stores_nothing_and_ends_the_session() {
        let (_d, storage, u) = uploads(Duration::from_secs(60)).await;
        let repo = name("team/app");
        let id = u.start(&repo).await.unwrap();
        let claimed = Digest::of(Algorithm::Sha512, b"something else");
        let err = u.finish(&repo, &id, &claimed, ANY, body(&[b"data"])).await.unwrap_err();
        assert!(matches!(err, UploadError::DigestMismatch { .. }), "{err:?}");
        assert_eq!(storage.stat(&claimed).await.unwrap(), None);
        assert_eq!(storage.stat(&Digest::of(Algorithm::Sha256, b"data")).await.unwrap(), None);
        assert!(matches!(u.cancel(&repo, &id).await, Err(UploadError::Unknown)));
        assert_eq!(std::fs::read_dir(storage.uploads_dir()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_failed_body_leaves_the_last_recorded_offset() {
        let (_d, _s, u) = uploads(Duration::from_secs(60)).await;
        let repo = name("team/app");
        let id = u.start(&repo).await.unwrap();
        u.append(&repo, &id, ANY, body(&[b"abc"])).await.unwrap();
        let broken = futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"def")),
            Err(std::io::Error::other("connection reset")),
        ]);
        assert!(matches!(u.append(&repo, &id, ANY, broken).await, Err(UploadError::Body(_))));
        assert_eq!(u.offset(&repo, &id).await.unwrap(), 3);
        let digest = Digest::of(Algorithm::Sha256, b"abcxyz");
        assert_eq!(u.finish(&repo, &id, &digest, at(3, 3), body(&[b"xyz"])).await.unwrap().0, 6);
    }

    #[tokio::test]
    async fn sessions_resume_after_a_restart_and_unreadable_ones_are_refused() {
        let (dir, storage, u) = uploads(Duration::from_secs(60)).await;
        let repo = name("team/app");
        let id = u.start(&repo).await.unwrap();
        u.append(&repo, &id, ANY, body(&[b"first half, "])).await.unwrap();
        let broken = u.start(&repo).await.unwrap();
        drop(u);
        std::fs::write(storage.uploads_dir().join(broken.as_str()).join(STATE_FILE), b"{not json").unwrap();

        // A new process: the storage reopened, the session found on disk.
        let storage = Storage::open(dir.path()).await.unwrap();
        let u = Uploads::open(storage.clone(), Duration::from_secs(60), None).await;
        assert_eq!(u.offset(&repo, &id).await.unwrap(), 12);
        let digest = Digest::of(Algorithm::Sha256, b"first half, second half");
        u.append(&repo, &id, at(12, 7), body(&[b"second "])).await.unwrap();
        assert_eq!(u.finish(&repo, &id, &digest, ANY, body(&[b"half"])).await.unwrap().0, 23);
        assert!(storage.stat(&digest).await.unwrap().is_some());

        assert!(matches!(u.offset(&repo, &broken).await, Err(UploadError::Unknown)));
        assert!(!storage.uploads_dir().join(broken.as_str()).exists(), "an unreadable session is removed");
    }

    #[tokio::test]
    async fn abandoned_sessions_are_swept_and_active_ones_kept() {
        let (_d, storage, u) = uploads(Duration::from_secs(3600)).await;
        let repo = name("team/app");
        let old = u.start(&repo).await.unwrap();
        let fresh = u.start(&repo).await.unwrap();
        std::fs::create_dir(storage.uploads_dir().join("not-a-session")).unwrap();
        assert_eq!(u.sweep().await, 0, "nothing is an hour old");
        // Age one session by rewriting its state as if last touched long ago.
        let dir = storage.uploads_dir().join(old.as_str());
        let mut state = read_state(&dir).unwrap();
        state.updated_at -= 7200;
        write_state(&dir, &state).unwrap();
        u.slots().remove(&old); // as after a restart: known only on disk
        assert_eq!(u.sweep().await, 1);
        assert!(matches!(u.offset(&repo, &old).await, Err(UploadError::Unknown)));
        assert_eq!(u.offset(&repo, &fresh).await.unwrap(), 0);
        assert!(storage.uploads_dir().join("not-a-session").exists());
        // A cutoff in the future sweeps everything not in use.
        let _busy = u.slot(&fresh).lock_owned().await;
        assert_eq!(u.sweep_before(now_secs() + 10).await, 0, "in use");
    }
}
