//! Content-addressed storage: verified ingest, and reads. Owns the bytes,
//! on the local disk and (with the S3 backend) in a bucket; knows nothing
//! of repositories, tags, HTTP or upstreams.
//!
//! Layout under `storage.path` (object keys are [`layout`]'s, the same in
//! a bucket):
//!
//! ```text
//! objects/blobs/<alg>/<hex[0..2]>/<hex>   verified content (blobs and manifests); with S3, the hot tier
//! spool/<pid>-<n>                          in-progress ingests; emptied at start
//! uploads/<session>/                       clients' upload sessions (a [`Partial`] and the
//!                                          upload layer's state); kept across restarts
//! quarantine/<alg>-<hex>-<millis>          objects `verify` found corrupt (never served)
//! s3-multipart/<id>                        S3 multipart uploads in progress (see [`remote`])
//! ```
//!
//! In the bucket, beside the objects: `uploads/` holds the chunks of upload
//! sessions a cluster shares ([`sessions`]).
//!
//! **Backends.** With `fs` the local `objects/` is the store. With `s3` the
//! bucket is (see [`remote`]), and `objects/` holds copies of recently used
//! objects, at most `storage.cache.max_size` bytes ([`hot`]): a commit
//! uploads the verified spool file, then keeps it as a local copy if the
//! hot tier admits it; a read of an object with no local copy downloads it
//! once (however many ask), verifies it, and keeps it as one ([`tiered`]).
//!
//! Also owns what is cheap to know only here: the running totals of stored
//! bytes and objects (counted once at open, adjusted on every commit and
//! removal), each object's last use (kept in memory; the `gc` module
//! flushes it to metadata in batches), and which digests a fill or upload
//! is writing right now ([`Storage::pin`]), which removal never touches.
//!
//! **Invariant:** an object exists under `objects/blobs/<alg>/..../<hex>` only
//! if its bytes hash to that digest. Bytes are written to a spool file,
//! hashed as they are written, synced, and renamed into place only after the
//! digest matched; a reader can never observe a partial object.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use object_store::local::LocalFileSystem;

use crate::oci::{Digest, Hasher};

mod follow;
mod hot;
mod ingest;
pub(crate) mod layout;
mod readthrough;
mod remote;
mod sessions;
mod tiered;

pub(crate) use ingest::{Ingest, Partial};
pub(crate) use readthrough::{Arriving, Opened, Want};
pub(crate) use remote::Remote;
pub(crate) use tiered::Copied;
use hot::HotTier;

/// Reads are served in chunks of this size: large enough that per-chunk
/// overhead (a blocking-pool hop, a frame) is small against the copy.
pub(crate) const READ_CHUNK: usize = 256 * 1024;

#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum StorageError {
    #[error("storage I/O error: {0}")]
    Io(String),
    #[error("object is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The filesystem has no space (or the quota none) for a write; only
    /// the readiness probe tells this apart from other I/O errors.
    #[error("disk full: {0}")]
    Full(String),
    /// The object store (S3) failed or could not be reached.
    #[error("object storage: {0}")]
    Remote(String),
    /// An object read back does not match its digest.
    #[error("corrupt object: {0}")]
    Corrupt(String),
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        StorageError::Io(e.to_string())
    }
}

impl From<object_store::Error> for StorageError {
    fn from(e: object_store::Error) -> Self {
        StorageError::Io(e.to_string())
    }
}

impl From<tokio::task::JoinError> for StorageError {
    fn from(e: tokio::task::JoinError) -> Self {
        StorageError::Io(format!("blocking task failed: {e}"))
    }
}

/// Why an ingest was not committed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum IngestError {
    #[error("content digest {actual} does not match the expected {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A handle on the content store; cheap to clone.
#[derive(Clone)]
pub(crate) struct Storage {
    inner: Arc<Inner>,
}

struct Inner {
    objects: LocalFileSystem,
    objects_dir: PathBuf,
    spool_dir: PathBuf,
    uploads_dir: PathBuf,
    quarantine_dir: PathBuf,
    next_spool: AtomicU64,
    /// Bytes and count of committed objects.
    bytes: AtomicU64,
    objects_count: AtomicU64,
    /// Last use (millis since the epoch) of objects used since the last
    /// [`Storage::take_uses`]. A std mutex: held for one map insert.
    uses: std::sync::Mutex<HashMap<Digest, u64>>,
    /// Digests being written (by a fill or an upload's commit), with how
    /// many writers each. Removal checks it under the same lock, so a
    /// pinned object is never removed. A std mutex: held for a map
    /// operation, or for one unlink by [`Storage::remove_unpinned`].
    pins: std::sync::Mutex<HashMap<Digest, usize>>,
    /// Spool files of ingests still alive, so gc removes only leftovers.
    live_spool: std::sync::Mutex<HashSet<PathBuf>>,
    /// Woken after a commit added bytes: an evictor waits on it.
    grown: tokio::sync::Notify,
    /// The bucket holding every object, with the S3 backend; `objects/` is
    /// then the hot tier, kept by `hot`.
    remote: Option<Remote>,
    hot: Option<HotTier>,
    /// Downloads from the bucket in progress, one per digest however many
    /// readers wait for it (see [`tiered`]).
    reads: readthrough::Downloads,
}

/// A stored object as found on disk.
#[derive(Debug, Clone)]
pub(crate) struct ObjectEntry {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    /// Last modification, millis since the epoch: the commit time.
    pub(crate) modified: u64,
}

/// Keeps a digest from being removed while it is written; see
/// [`Storage::pin`].
pub(crate) struct Pin {
    storage: Storage,
    digest: Digest,
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Pin").field(&self.digest).finish()
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut pins = self.storage.inner.lock_pins();
        if let Some(n) = pins.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.digest);
            }
        }
    }
}

impl Inner {
    fn lock_pins(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, usize>> {
        // Single inserts and removes: a poisoned map is still consistent.
        self.pins.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_spool(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        self.live_spool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that an object was used now.
    fn used(&self, digest: &Digest) {
        let now = now_millis();
        self.uses.lock().unwrap_or_else(|p| p.into_inner()).insert(digest.clone(), now);
    }

    /// Counts an object that just became visible at `target` (unless it
    /// replaced one already counted).
    fn committed(&self, digest: &Digest, size: u64, replaced: bool) {
        if !replaced {
            self.bytes.fetch_add(size, Ordering::Relaxed);
            self.objects_count.fetch_add(1, Ordering::Relaxed);
        }
        self.used(digest);
        self.grown.notify_one();
    }

    /// Uncounts an object of `size` bytes that was removed or quarantined.
    fn forgot(&self, size: u64) {
        self.bytes.fetch_sub(size.min(self.bytes.load(Ordering::Relaxed)), Ordering::Relaxed);
        self.objects_count.fetch_sub(1.min(self.objects_count.load(Ordering::Relaxed)), Ordering::Relaxed);
    }
}

fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A committed object opened for reading.
#[derive(Clone)]
pub(crate) struct StoredObject {
    pub(crate) file: Arc<File>,
    pub(crate) size: u64,
}

impl Storage {
    /// Opens (creating if needed) the store under `root` and discards spool
    /// leftovers from a previous run: they were never verified, so they are
    /// never served.
    pub(crate) async fn open(root: &Path) -> Result<Storage, StorageError> {
        Storage::open_with(root, None, 0).await
    }

    /// The store `config` describes: the local disk, or an S3 bucket with
    /// a hot tier.
    pub(crate) async fn from_config(
        config: &crate::config::StorageConfig,
        metrics: crate::metrics::StorageMetrics,
    ) -> Result<Storage, StorageError> {
        match &config.backend {
            crate::config::Backend::Fs => Storage::open(&config.path).await,
            crate::config::Backend::S3(s3) => {
                tokio::fs::create_dir_all(&config.path).await?;
                let remote = Remote::new(s3, &config.path, metrics)?;
                Storage::open_with(&config.path, Some(remote), config.cache_max_size).await
            }
        }
    }

    /// Where objects are kept, for the start-up log line.
    pub(crate) fn describe(&self) -> String {
        match &self.inner.remote {
            Some(remote) => format!("{} (hot tier in {})", remote.describe(), self.inner.objects_dir.display()),
            None => self.inner.objects_dir.display().to_string(),
        }
    }

    /// [`Storage::open`], with every object in `remote` (the S3 backend)
    /// and local copies of at most `hot_max` bytes. Nothing is asked of the
    /// bucket here: a bucket that cannot be reached does not stop a start
    /// (its totals are listed in the background; readiness reports it).
    pub(crate) async fn open_with(root: &Path, remote: Option<Remote>, hot_max: u64) -> Result<Storage, StorageError> {
        let objects_dir = root.join("objects");
        let spool_dir = root.join("spool");
        tokio::fs::create_dir_all(&objects_dir).await?;
        if tokio::fs::try_exists(&spool_dir).await? {
            tokio::fs::remove_dir_all(&spool_dir).await?;
        }
        tokio::fs::create_dir_all(&spool_dir).await?;
        let uploads_dir = root.join("uploads");
        tokio::fs::create_dir_all(&uploads_dir).await?;
        let quarantine_dir = root.join("quarantine");
        let objects = LocalFileSystem::new_with_prefix(&objects_dir)?;
        let mut storage = Storage {
            inner: Arc::new(Inner {
                objects,
                objects_dir,
                spool_dir,
                uploads_dir,
                quarantine_dir,
                next_spool: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                objects_count: AtomicU64::new(0),
                uses: std::sync::Mutex::new(HashMap::new()),
                pins: std::sync::Mutex::new(HashMap::new()),
                live_spool: std::sync::Mutex::new(HashSet::new()),
                grown: tokio::sync::Notify::new(),
                hot: None,
                remote: None,
                reads: std::sync::Mutex::new(HashMap::new()),
            }),
        };
        let local = storage.list_local().await?;
        let Some(remote) = remote else {
            // Counted once here; every commit and removal adjusts the totals.
            storage.inner.bytes.store(local.iter().map(|o| o.size).sum(), Ordering::Relaxed);
            storage.inner.objects_count.store(local.len() as u64, Ordering::Relaxed);
            return Ok(storage);
        };
        let Some(inner) = Arc::get_mut(&mut storage.inner) else {
            return Err(StorageError::Io("storage shared while opening".into()));
        };
        inner.hot = Some(HotTier::new(hot_max, local));
        inner.remote = Some(remote);
        storage.spawn_remote_start();
        Ok(storage)
    }

    /// Bytes and number of stored objects.
    pub(crate) fn usage(&self) -> (u64, u64) {
        (self.inner.bytes.load(Ordering::Relaxed), self.inner.objects_count.load(Ordering::Relaxed))
    }

    /// Sets the totals to a listing's (in a cluster, the bucket's, which
    /// holds what every node stored).
    pub(crate) fn recount(&self, bytes: u64, objects: u64) {
        self.inner.bytes.store(bytes, Ordering::Relaxed);
        self.inner.objects_count.store(objects, Ordering::Relaxed);
    }

    /// Resolves after a commit added bytes (or at once if one did since
    /// the last call): for the evictor.
    pub(crate) async fn grown(&self) {
        self.inner.grown.notified().await;
    }

    /// Last uses recorded since the previous call, emptied.
    pub(crate) fn take_uses(&self) -> HashMap<Digest, u64> {
        std::mem::take(&mut *self.inner.uses.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Keeps `digest` from removal until the pin is dropped: taken by a
    /// fill before it looks for the object, and by an upload's commit
    /// until its metadata row is written.
    pub(crate) fn pin(&self, digest: &Digest) -> Pin {
        *self.inner.lock_pins().entry(digest.clone()).or_insert(0) += 1;
        Pin { storage: self.clone(), digest: digest.clone() }
    }

    /// Every committed object (in the bucket, with S3). Files whose names
    /// are not digests are skipped.
    pub(crate) async fn list_objects(&self) -> Result<Vec<ObjectEntry>, StorageError> {
        match &self.inner.remote {
            Some(remote) => remote.list().await,
            None => self.list_local().await,
        }
    }

    /// Every object under `objects/`, walked from disk (blocking work, off
    /// the runtime).
    async fn list_local(&self) -> Result<Vec<ObjectEntry>, StorageError> {
        let root = self.inner.objects_dir.join(layout::OBJECTS);
        Ok(tokio::task::spawn_blocking(move || walk_objects(&root)).await??)
    }

    /// Removes an object unless a fill or upload has it pinned; the bytes
    /// freed (None: pinned, or already gone). Open readers keep their file.
    pub(crate) async fn remove_unpinned(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        if self.inner.remote.is_some() {
            return self.remove_remote_unpinned(digest).await;
        }
        let path = self.inner.objects.path_to_filesystem(&Self::key(digest))?;
        let storage = self.clone();
        let digest = digest.clone();
        tokio::task::spawn_blocking(move || -> Result<Option<u64>, StorageError> {
            let inner = &storage.inner;
            let pins = inner.lock_pins();
            if pins.contains_key(&digest) {
                return Ok(None);
            }
            let size = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            // Under the pins lock: a fill pinning now waits, then finds the
            // object gone and fetches it again.
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.into()),
            }
            drop(pins);
            inner.forgot(size);
            Ok(Some(size))
        })
        .await?
    }

    /// Re-hashes an object: true if its bytes still match its digest (or it
    /// is gone), false if they do not.
    pub(crate) async fn verify_object(&self, digest: &Digest) -> Result<bool, StorageError> {
        if self.inner.remote.is_some() {
            return self.verify_remote(digest).await;
        }
        let Some(obj) = self.open_local(digest)? else { return Ok(true) };
        let digest = digest.clone();
        tokio::task::spawn_blocking(move || -> Result<bool, StorageError> {
            let mut hasher = Hasher::new(digest.algorithm());
            hash_file(&obj.file, obj.size, &mut hasher)?;
            Ok(hasher.finish() == digest)
        })
        .await?
    }

    /// Moves a corrupt object out of `objects/` into `quarantine/`, where
    /// nothing serves it; the bytes it held (None: it was already gone).
    pub(crate) async fn quarantine(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        if self.inner.remote.is_some() {
            return self.quarantine_remote(digest).await;
        }
        let path = self.object_path(digest)?;
        let target = self.inner.quarantine_dir.join(layout::quarantine_name(digest, now_millis()));
        let storage = self.clone();
        tokio::task::spawn_blocking(move || -> Result<Option<u64>, StorageError> {
            let inner = &storage.inner;
            std::fs::create_dir_all(&inner.quarantine_dir)?;
            let size = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            std::fs::rename(&path, &target)?;
            inner.forgot(size);
            Ok(Some(size))
        })
        .await?
    }

    /// Removes spool files no live ingest owns (left by an ingest whose
    /// cleanup failed); how many.
    pub(crate) async fn remove_spool_leftovers(&self) -> Result<u64, StorageError> {
        let storage = self.clone();
        tokio::task::spawn_blocking(move || -> Result<u64, StorageError> {
            let inner = &storage.inner;
            let mut removed = 0;
            for entry in std::fs::read_dir(&inner.spool_dir)? {
                let path = entry?.path();
                let live = inner.lock_spool().contains(&path);
                if !live && std::fs::remove_file(&path).is_ok() {
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await?
    }

    /// Readiness: creates, writes, syncs and removes a small file in the
    /// spool, where every fill and ingest writes first; an error says why
    /// storage cannot take content now, [`StorageError::Full`] when it is
    /// for want of space. The probe is named like a spool
    /// file, so one left by a crash is emptied at the next start.
    pub(crate) async fn probe_writable(&self) -> Result<(), StorageError> {
        self.probe_spool().await?;
        let Some(remote) = &self.inner.remote else { return Ok(()) };
        // Not the request timeout and its retries: a probe answers quickly.
        match tokio::time::timeout(std::time::Duration::from_secs(5), remote.probe()).await {
            Ok(answer) => answer,
            Err(_) => Err(StorageError::Remote(format!("{}: no answer within 5 s", remote.describe()))),
        }
    }

    async fn probe_spool(&self) -> Result<(), StorageError> {
        let n = self.inner.next_spool.fetch_add(1, Ordering::Relaxed);
        let path = self.inner.spool_dir.join(format!("{}-{n}", std::process::id()));
        tokio::task::spawn_blocking(move || {
            let written = std::fs::File::create(&path).and_then(|mut f| {
                std::io::Write::write_all(&mut f, b"ready")?;
                f.sync_all()
            });
            let removed = std::fs::remove_file(&path);
            written.and(removed)
        })
        .await
        .map_err(|e| StorageError::Io(format!("readiness probe: {e}")))?
        .map_err(|e| {
            let message = format!("cannot write in {}: {e}", self.inner.spool_dir.display());
            if matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded) {
                StorageError::Full(message)
            } else {
                StorageError::Io(message)
            }
        })
    }

    /// A directory for scratch work on the same filesystem as the objects
    /// (a build's context and layers: committed by a rename), emptied at
    /// every start. gc's sweep of the spool takes files, never directories.
    pub(crate) fn spool_dir(&self) -> &Path {
        &self.inner.spool_dir
    }

    /// Where upload sessions live, one directory each. Unlike the spool it
    /// survives a restart, so a client can resume an upload; nothing in it
    /// is ever served (see [`Partial`]).
    pub(crate) fn uploads_dir(&self) -> &Path {
        &self.inner.uploads_dir
    }

    fn key(digest: &Digest) -> object_store::path::Path {
        object_store::path::Path::from(layout::object_key(digest))
    }

    /// Size of a committed object, if present.
    ///
    /// This and [`Storage::open_object`] call the kernel inline, on the
    /// calling thread: a stat or an open of a local path is answered from
    /// the kernel's caches in microseconds, less than a trip to the
    /// blocking pool and back costs (two thread wake-ups), which every
    /// request, warm or cold, used to pay (docs/BENCHMARKS.md).
    pub(crate) async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        match std::fs::metadata(self.object_path(digest)?) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Err(StorageError::Io(format!("the object of {digest} is not a file"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match &self.inner.remote {
                Some(remote) => remote.head(digest).await,
                None => Ok(None),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Where the object of `digest` lives on the local filesystem.
    fn object_path(&self, digest: &Digest) -> Result<PathBuf, StorageError> {
        Ok(self.inner.objects.path_to_filesystem(&Self::key(digest))?)
    }

    /// Opens a committed object to serve it, noting the use: its local copy,
    /// or (with S3) as `want` says, the object arriving from the bucket or
    /// only described by it (see [`readthrough`]). A local file stays
    /// readable even if the object is later removed.
    /// With `storage.s3.redirect`, a read of the body is answered with where
    /// the client finds it instead ([`Opened::Elsewhere`]).
    pub(crate) async fn open_blob(&self, digest: &Digest, want: Want) -> Result<Option<Opened>, StorageError> {
        match &self.inner.remote {
            Some(remote) if want.body() && remote.redirects() => self.redirect(remote, digest).await,
            _ => self.open_stored(digest, want, true).await,
        }
    }

    /// [`Storage::open_blob`], never redirecting; a whole read with no local
    /// copy is a file unless `to_client` (see [`readthrough`]).
    async fn open_stored(&self, digest: &Digest, want: Want, to_client: bool) -> Result<Option<Opened>, StorageError> {
        let found = match self.open_local(digest)? {
            Some(found) => {
                self.hot_hit(digest);
                Some(Opened::Local(found))
            }
            None if self.inner.remote.is_some() => self.open_remote(digest, want, to_client).await?,
            None => None,
        };
        if found.is_some() {
            self.inner.used(digest);
        }
        Ok(found)
    }

    /// [`Storage::open_blob`] for all of an object, complete and verified:
    /// with S3, waits for its download.
    pub(crate) async fn open_object(&self, digest: &Digest) -> Result<Option<StoredObject>, StorageError> {
        match self.open_stored(digest, Want::Whole, false).await? {
            None => Ok(None),
            Some(Opened::Local(found)) => Ok(Some(found)),
            Some(Opened::Arriving(a)) => Ok(Some(a.complete().await?)),
            Some(Opened::InBucket(_) | Opened::Elsewhere { .. }) => {
                Err(StorageError::Io("a whole read was not downloaded".into()))
            }
        }
    }

    /// The local object (with S3: the hot tier's copy), if there is one,
    /// without counting a use (inline: see [`Storage::stat`]).
    fn open_local(&self, digest: &Digest) -> Result<Option<StoredObject>, StorageError> {
        let file = match File::open(self.object_path(digest)?) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(StorageError::Io(format!("the object of {digest} is not a file")));
        }
        Ok(Some(StoredObject { file: Arc::new(file), size: meta.len() }))
    }

    /// Reads a small committed object (a manifest) whole, refusing more
    /// than `limit` bytes.
    pub(crate) async fn read_small(&self, digest: &Digest, limit: usize) -> Result<Option<Bytes>, StorageError> {
        let Some(obj) = self.open_object(digest).await? else { return Ok(None) };
        if obj.size > limit as u64 {
            return Err(StorageError::TooLarge { limit });
        }
        Ok(Some(read_exact_at(obj.file, 0, obj.size as usize).await?))
    }
}

/// Every object file under `root` (`objects/blobs`), by its digest.
fn walk_objects(root: &Path) -> std::io::Result<Vec<ObjectEntry>> {
    let mut found = Vec::new();
    let algorithms = match std::fs::read_dir(root) {
        Ok(dirs) => dirs,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for alg in algorithms {
        let alg = alg?;
        let alg_name = alg.file_name().to_string_lossy().into_owned();
        for prefix in std::fs::read_dir(alg.path())? {
            for object in std::fs::read_dir(prefix?.path())? {
                let object = object?;
                let name = object.file_name().to_string_lossy().into_owned();
                // object_store's own temporary files (and anything else that
                // is not `<hex>`) are not objects.
                let Ok(digest) = format!("{alg_name}:{name}").parse::<Digest>() else { continue };
                let meta = match object.metadata() {
                    Ok(m) => m,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as u64);
                found.push(ObjectEntry { digest, size: meta.len(), modified });
            }
        }
    }
    Ok(found)
}

/// Reads of a partial's bytes to re-hash them go in pieces of this size.
const REHASH_CHUNK: usize = 1 << 20;

/// Feeds the first `len` bytes of `file` to `hasher`, by position.
fn hash_file(file: &File, len: u64, hasher: &mut Hasher) -> Result<(), StorageError> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; REHASH_CHUNK];
    let mut pos = 0u64;
    while pos < len {
        let want = (len - pos).min(REHASH_CHUNK as u64) as usize;
        let n = file.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            return Err(StorageError::Io("partial upload is shorter than recorded".into()));
        }
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(())
}

/// Reads up to `len` bytes at `offset` (at least one, unless the file ends
/// first, which is an error: callers only ask for bytes that exist).
///
/// Positional, so one file serves many readers at once. Bytes already in
/// the page cache (the common case for warm blobs and for a fill's fresh
/// writes) are read inline with `RWF_NOWAIT`, which fails rather than
/// blocking on the disk; only then does the read move to the blocking pool.
/// A thread hand-off per chunk cost more CPU than the copy itself.
pub(crate) async fn read_at(file: Arc<File>, offset: u64, len: usize) -> Result<Bytes, StorageError> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let mut buf = BytesMut::zeroed(len);
    if NOWAIT_SUPPORTED.load(Ordering::Relaxed) {
        match read_cached(&file, &mut buf, offset) {
            Ok(0) => {}
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf.freeze());
            }
            Err(rustix::io::Errno::AGAIN) => {}
            Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS | rustix::io::Errno::INVAL) => {
                NOWAIT_SUPPORTED.store(false, Ordering::Relaxed);
            }
            Err(e) => return Err(std::io::Error::from(e).into()),
        }
    }
    let buf = tokio::task::spawn_blocking(move || -> std::io::Result<Bytes> {
        use std::os::unix::fs::FileExt;
        let n = file.read_at(&mut buf, offset)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "object shorter than expected"));
        }
        buf.truncate(n);
        Ok(buf.freeze())
    })
    .await??;
    Ok(buf)
}

/// Whether the kernel and filesystem honour `RWF_NOWAIT`; cleared on the
/// first refusal so unsupported systems stop trying.
static NOWAIT_SUPPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

fn read_cached(file: &File, buf: &mut [u8], offset: u64) -> Result<usize, rustix::io::Errno> {
    let mut slices = [std::io::IoSliceMut::new(buf)];
    rustix::io::preadv2(file, &mut slices, offset, rustix::io::ReadWriteFlags::NOWAIT)
}

/// Whether `[offset, offset + len)` of `file` is in the page cache, as far
/// as one-byte `RWF_NOWAIT` reads at its first byte, every [`READ_CHUNK`]
/// after it and its last byte can tell: cheap (a syscall per 256 KiB, no
/// buffer), and for a file read or written whole it is all or nothing in
/// practice. False when the kernel cannot say, so callers fall back to
/// [`read_at`], which never blocks a runtime thread on the disk.
pub(crate) fn probably_cached(file: &File, offset: u64, len: usize) -> bool {
    if len == 0 || !NOWAIT_SUPPORTED.load(Ordering::Relaxed) {
        return len == 0;
    }
    let last = offset + len as u64 - 1;
    let probes = (offset..last).step_by(READ_CHUNK).chain(std::iter::once(last));
    let mut byte = [0u8; 1];
    for at in probes {
        match read_cached(file, &mut byte, at) {
            Ok(1) => {}
            Ok(_) | Err(_) => return false,
        }
    }
    true
}

/// Reads exactly `len` bytes at `offset`.
pub(crate) async fn read_exact_at(file: Arc<File>, offset: u64, len: usize) -> Result<Bytes, StorageError> {
    let first = read_at(file.clone(), offset, len).await?;
    if first.len() == len {
        return Ok(first);
    }
    let mut whole = BytesMut::with_capacity(len);
    whole.extend_from_slice(&first);
    while whole.len() < len {
        let more = read_at(file.clone(), offset + whole.len() as u64, len - whole.len()).await?;
        whole.extend_from_slice(&more);
    }
    Ok(whole.freeze())
}

/// Streams `[start, end)` of a committed object in [`READ_CHUNK`] pieces.
pub(crate) fn stream_range(
    file: Arc<File>,
    start: u64,
    end: u64,
) -> impl Stream<Item = Result<Bytes, StorageError>> + Send + 'static {
    futures_util::stream::unfold((file, start), move |(file, pos)| async move {
        if pos >= end {
            return None;
        }
        let len = (end - pos).min(READ_CHUNK as u64) as usize;
        match read_at(file.clone(), pos, len).await {
            Ok(bytes) => {
                let next = pos + bytes.len() as u64;
                Some((Ok(bytes), (file, next)))
            }
            // End the stream after an error: the item carries it.
            Err(e) => Some((Err(e), (file, end))),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;
    use futures_util::TryStreamExt;

    async fn store() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).await.unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn verified_ingest_becomes_visible_only_at_commit() {
        let (_dir, s) = store().await;
        let data = Bytes::from(vec![7u8; READ_CHUNK * 2 + 5]);
        let digest = Digest::of(Algorithm::Sha256, &data);
        let mut ingest = s.begin(digest.clone()).unwrap();
        ingest.write_blocking(&data[..1000]).unwrap();
        ingest.write_blocking(&data[1000..]).unwrap();
        assert_eq!(s.stat(&digest).await.unwrap(), None, "invisible before commit");
        // A follower can already read what was written.
        let early = read_exact_at(ingest.reader(), 0, 1000).await.unwrap();
        assert_eq!(early, data.slice(..1000));
        ingest.verify().unwrap();
        ingest.commit().await.unwrap();
        let obj = s.open_object(&digest).await.unwrap().unwrap();
        assert_eq!(obj.size, data.len() as u64);
        let back: Vec<Bytes> = stream_range(obj.file, 0, obj.size).try_collect().await.unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back.concat(), data.to_vec());
    }

    #[test]
    fn a_fresh_write_probes_as_cached_and_bytes_past_the_end_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![3u8; 3 * READ_CHUNK + 10]).unwrap();
        let file = File::open(&path).unwrap();
        assert!(probably_cached(&file, 0, 0), "nothing to send is trivially there");
        if NOWAIT_SUPPORTED.load(Ordering::Relaxed) && read_cached(&file, &mut [0u8; 1], 0).is_ok() {
            assert!(probably_cached(&file, 0, 3 * READ_CHUNK + 10), "just written: in the page cache");
            assert!(probably_cached(&file, 7, 1));
        }
        assert!(!probably_cached(&file, 3 * READ_CHUNK as u64, 11), "one byte past the end");
        assert!(!probably_cached(&file, 10 * READ_CHUNK as u64, 5), "wholly past the end");
    }

    #[tokio::test]
    async fn mismatched_bytes_are_never_stored() {
        let (dir, s) = store().await;
        let digest = Digest::of(Algorithm::Sha256, b"expected");
        let mut ingest = s.begin(digest.clone()).unwrap();
        ingest.write_blocking(b"tampered").unwrap();
        assert!(matches!(ingest.verify(), Err(IngestError::DigestMismatch { .. })));
        drop(ingest);
        assert_eq!(s.stat(&digest).await.unwrap(), None);
        assert_eq!(std::fs::read_dir(dir.path().join("spool")).unwrap().count(), 0, "spool cleaned");
        assert!(s.put_verified(&digest, Bytes::from_static(b"tampered")).await.is_err());
        assert_eq!(s.stat(&digest).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_partial_survives_reopening_and_commits_only_under_its_digest() {
        let (dir, s) = store().await;
        let data = Bytes::from((0..3 * REHASH_CHUNK as u32 + 17).map(|i| i as u8).collect::<Vec<u8>>());
        let path = s.uploads_dir().join("p");
        let mut p = Partial::create(&path).unwrap();
        p.write_blocking(&data[..REHASH_CHUNK + 5]).unwrap();
        p.sync_blocking().unwrap();
        // A request cut short wrote more than was recorded.
        p.write_blocking(b"garbage").unwrap();
        drop(p);
        let mut p = Partial::reopen(&path, (REHASH_CHUNK + 5) as u64).unwrap();
        assert_eq!(p.len(), (REHASH_CHUNK + 5) as u64);
        p.write_blocking(&data[REHASH_CHUNK + 5..]).unwrap();
        let sha512 = Digest::of(Algorithm::Sha512, &data);
        let wrong = Digest::of(Algorithm::Sha256, b"other");
        assert!(matches!(p.commit_blocking(&s, &wrong, None), Err(IngestError::DigestMismatch { .. })));
        assert_eq!(s.stat(&wrong).await.unwrap(), None);
        let mut p = Partial::reopen(&path, data.len() as u64).unwrap();
        assert!(Partial::reopen(&path, data.len() as u64 + 1).is_err(), "shorter than recorded");
        p = Partial::reopen(&path, p.len()).unwrap();
        assert_eq!(p.commit_blocking(&s, &sha512, None).unwrap(), data.len() as u64);
        assert_eq!(s.read_small(&sha512, data.len()).await.unwrap().unwrap(), data);
        assert!(!path.exists(), "moved, not copied");
        assert!(dir.path().join("uploads").is_dir());
    }

    #[tokio::test]
    async fn totals_follow_commits_and_removals_and_a_pinned_object_is_never_removed() {
        let (dir, s) = store().await;
        let a = Bytes::from_static(b"first object");
        let b = Bytes::from(vec![1u8; 5000]);
        let (da, db) = (Digest::of(Algorithm::Sha256, &a), Digest::of(Algorithm::Sha256, &b));
        s.put_verified(&da, a.clone()).await.unwrap();
        s.put_verified(&db, b.clone()).await.unwrap();
        s.put_verified(&db, b.clone()).await.unwrap();
        assert_eq!(s.usage(), (a.len() as u64 + 5000, 2), "a second store of the same digest adds nothing");
        assert_eq!(Storage::open(dir.path()).await.unwrap().usage(), s.usage(), "counted again at open");
        assert!(s.take_uses().contains_key(&da), "a commit is a use");
        s.open_object(&db).await.unwrap().unwrap();
        assert_eq!(s.take_uses().keys().collect::<Vec<_>>(), vec![&db], "a read is a use");

        let pin = s.pin(&db);
        assert_eq!(s.remove_unpinned(&db).await.unwrap(), None, "pinned: kept");
        drop(pin);
        assert_eq!(s.remove_unpinned(&db).await.unwrap(), Some(5000));
        assert_eq!(s.remove_unpinned(&db).await.unwrap(), None, "already gone");
        assert_eq!(s.usage(), (a.len() as u64, 1));

        // Corrupted under its key: verify says so, quarantine moves it out.
        assert!(s.verify_object(&da).await.unwrap());
        let path = dir.path().join("objects/blobs/sha256").join(&da.hex()[..2]).join(da.hex());
        std::fs::write(&path, b"first objecT").unwrap();
        assert!(!s.verify_object(&da).await.unwrap());
        assert_eq!(s.quarantine(&da).await.unwrap(), Some(a.len() as u64));
        assert_eq!(s.stat(&da).await.unwrap(), None, "never served again");
        assert_eq!(s.usage(), (0, 0));
        assert_eq!(std::fs::read_dir(dir.path().join("quarantine")).unwrap().count(), 1);
        assert!(s.list_objects().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn gc_of_the_spool_spares_live_ingests_and_a_discarded_ingest_only_hashes() {
        let (dir, s) = store().await;
        let data = b"streamed through";
        let mut live = s.begin(Digest::of(Algorithm::Sha256, data)).unwrap();
        std::fs::write(dir.path().join("spool/leftover"), b"x").unwrap();
        assert_eq!(s.remove_spool_leftovers().await.unwrap(), 1);
        assert_eq!(std::fs::read_dir(dir.path().join("spool")).unwrap().count(), 1, "the live ingest's file stays");
        live.write_blocking(&data[..4]).unwrap();
        live.discard();
        assert_eq!(std::fs::read_dir(dir.path().join("spool")).unwrap().count(), 0, "discarded at once");
        live.write_blocking(&data[4..]).unwrap();
        live.verify().unwrap();
        assert!(live.commit().await.is_err(), "a discarded ingest is never committed");
        assert_eq!(s.usage(), (0, 0));
    }

    #[tokio::test]
    async fn reopening_discards_spool_leftovers_and_keeps_objects() {
        let (dir, s) = store().await;
        let digest = Digest::of(Algorithm::Sha512, b"manifest");
        s.put_verified(&digest, Bytes::from_static(b"manifest")).await.unwrap();
        let crashed = s.begin(Digest::of(Algorithm::Sha256, b"x")).unwrap();
        std::mem::forget(crashed); // as if the process died mid-ingest
        assert_eq!(std::fs::read_dir(dir.path().join("spool")).unwrap().count(), 1);
        let s2 = Storage::open(dir.path()).await.unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("spool")).unwrap().count(), 0);
        assert_eq!(s2.read_small(&digest, 100).await.unwrap().unwrap(), Bytes::from_static(b"manifest"));
        assert!(matches!(s2.read_small(&digest, 3).await, Err(StorageError::TooLarge { .. })));
    }
}
