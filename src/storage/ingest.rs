//! Writing into the store: [`Ingest`] (content whose digest is known
//! up front: a fill, a manifest, a download from the bucket) and
//! [`Partial`] (a client's upload, whose digest is known only at its end).
//! Both hash as they write and make bytes visible only under the digest
//! they hash to.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::follow::Follower;
use super::remote::PART_SIZE;
use super::{hash_file, IngestError, Storage, StorageError};

/// How the commit of a verified ingest gets it into the bucket, with S3.
pub(super) enum Upload {
    /// It came from the bucket.
    None,
    /// Uploaded now, whole.
    Whole,
    /// Its upload followed the writes: finished now.
    Following(Follower),
    /// Its bytes are in the bucket already under this key (a shared upload
    /// session's one chunk): copied there.
    Copy(String),
    /// Another node is uploading it (it was streamed from that node's
    /// fill): uploaded only if the bucket still lacks it after a moment.
    Relayed,
}
use crate::oci::{Digest, Hasher};

impl Storage {
    /// Starts ingesting content expected to hash to `expected`.
    pub(crate) fn begin(&self, expected: Digest) -> Result<Ingest, StorageError> {
        let n = self.inner.next_spool.fetch_add(1, Ordering::Relaxed);
        let path = self.inner.spool_dir.join(format!("{}-{n}", std::process::id()));
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
        let reader = Arc::new(File::open(&path)?);
        self.inner.lock_spool().insert(path.clone());
        Ok(Ingest {
            upload: true,
            storage: self.clone(),
            hasher: Some(Hasher::new(expected.algorithm())),
            expected,
            file: Some(file),
            reader,
            path,
            written: 0,
            committed: false,
            discarded: false,
            follower: None,
            follow: true,
        })
    }

    /// Stores a small in-memory object (a manifest) after checking its digest.
    pub(crate) async fn put_verified(&self, expected: &Digest, bytes: Bytes) -> Result<(), IngestError> {
        if self.stat(expected).await?.is_some() {
            return Ok(());
        }
        let mut ingest = self.begin(expected.clone())?;
        // Written, verified and committed in one trip to the blocking pool.
        tokio::task::spawn_blocking(move || -> Result<(), IngestError> {
            ingest.write_blocking(&bytes)?;
            ingest.verify()?;
            Ok(ingest.commit_blocking()?)
        })
        .await
        .map_err(StorageError::from)?
    }
}

/// Content on its way into the store. Dropped without [`Ingest::commit`],
/// the spool file is removed and nothing becomes visible.
pub(crate) struct Ingest {
    /// With S3: whether the commit uploads (false for a copy downloaded
    /// from the bucket).
    pub(super) upload: bool,
    storage: Storage,
    expected: Digest,
    // Options so the file and hasher can move into a blocking task per write.
    file: Option<File>,
    hasher: Option<Hasher>,
    reader: Arc<File>,
    path: PathBuf,
    written: u64,
    committed: bool,
    /// The bytes could not be stored: the spool file is gone, chunks are
    /// only hashed, and the ingest can no longer be committed.
    discarded: bool,
    /// With S3, the upload following the spool file (see [`super::follow`]).
    follower: Option<Follower>,
    /// Whether to start one.
    follow: bool,
}

impl Ingest {
    /// A read handle on the bytes written so far, for clients following the
    /// ingest (positional reads; survives the commit's rename).
    pub(crate) fn reader(&self) -> Arc<File> {
        self.reader.clone()
    }

    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// With S3: no upload follows the writes. Another node uploads the
    /// object; the commit uploads it only if the bucket still lacks it.
    pub(crate) fn follow_no_upload(&mut self) {
        self.follow = false;
    }

    /// Appends a chunk and feeds it to the hasher, on the calling thread:
    /// for a blocking-pool thread that owns the ingest.
    /// After [`Ingest::discard`] the chunk is only hashed. A failed write
    /// hashes nothing: the caller may discard and write the chunk again.
    pub(crate) fn write_blocking(&mut self, chunk: &[u8]) -> Result<(), StorageError> {
        let Some(hasher) = self.hasher.as_mut() else {
            return Err(StorageError::Io("ingest used after it was verified".into()));
        };
        match (self.file.as_mut(), self.discarded) {
            (Some(file), false) => file.write_all(chunk)?,
            (None, true) => {}
            _ => return Err(StorageError::Io("ingest has no file".into())),
        }
        hasher.update(chunk);
        self.written += chunk.len() as u64;
        if self.upload && !self.discarded {
            self.follow();
        }
        Ok(())
    }

    /// Tells the upload following the file (with S3) how far it is,
    /// starting one once the file passed a part's size.
    fn follow(&mut self) {
        if !self.follow {
            return;
        }
        match &mut self.follower {
            Some(follower) => follower.written(self.written),
            None if self.written >= PART_SIZE as u64 => {
                if let Some(remote) = &self.storage.inner.remote {
                    self.follower = Follower::start(remote, &self.expected, self.reader.clone(), self.written);
                }
            }
            None => {}
        }
    }

    /// Gives up storing (the disk is full or failing): the spool file is
    /// removed now, later chunks are only hashed so the bytes can still be
    /// verified for the clients reading them, and nothing is committed.
    /// Readers keep the bytes already written through [`Ingest::reader`].
    pub(crate) fn discard(&mut self) {
        self.file = None;
        self.discarded = true;
        // Aborts its upload.
        self.follower = None;
        let _ = std::fs::remove_file(&self.path);
        self.storage.inner.lock_spool().remove(&self.path);
    }

    pub(crate) fn is_discarded(&self) -> bool {
        self.discarded
    }

    /// Checks the digest of everything written. After this succeeds the
    /// bytes are known good and may be released to clients.
    pub(crate) fn verify(&mut self) -> Result<(), IngestError> {
        let hasher = self.hasher.take().ok_or_else(|| StorageError::Io("ingest already verified".into()))?;
        let actual = hasher.finish();
        if actual != self.expected {
            return Err(IngestError::DigestMismatch { expected: self.expected.clone(), actual });
        }
        Ok(())
    }

    /// Makes verified content durable and visible under its digest.
    pub(crate) async fn commit(mut self) -> Result<(), StorageError> {
        tokio::task::spawn_blocking(move || self.commit_blocking()).await?
    }

    /// [`Ingest::commit`], on the calling thread (it syncs: the blocking
    /// pool's).
    pub(super) fn commit_blocking(&mut self) -> Result<(), StorageError> {
        if self.hasher.is_some() {
            return Err(StorageError::Io("commit before verify".into()));
        }
        if self.discarded {
            return Err(StorageError::Io("the ingest's bytes were discarded".into()));
        }
        let file = self.file.take().ok_or_else(|| StorageError::Io("ingest has no file".into()))?;
        // Sync before the rename: after a power loss the object must not
        // exist with bytes that do not match its key.
        file.sync_data()?;
        if self.storage.inner.remote.is_some() {
            let storage = self.storage.clone();
            let upload = match (self.upload, self.follower.take()) {
                (false, _) => Upload::None,
                (true, Some(follower)) => Upload::Following(follower),
                (true, None) if !self.follow => Upload::Relayed,
                (true, None) => Upload::Whole,
            };
            let kept = storage.commit_remote_blocking(&self.expected, &self.reader, &self.path, self.written, upload)?;
            // Kept as a local copy (renamed) or not (still in the spool,
            // removed on drop); either way, in the bucket.
            if kept {
                self.committed = true;
                self.storage.inner.lock_spool().remove(&self.path);
            }
            return Ok(());
        }
        let target = self.storage.object_path(&self.expected)?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let replaced = target.exists();
        std::fs::rename(&self.path, &target)?;
        self.committed = true;
        self.storage.inner.lock_spool().remove(&self.path);
        self.storage.inner.committed(&self.expected, self.written, replaced);
        Ok(())
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: whatever is left is removed by gc or at the next
            // start.
            let _ = std::fs::remove_file(&self.path);
            self.storage.inner.lock_spool().remove(&self.path);
        }
    }
}

/// Content whose digest is known only at its end: a client's blob upload,
/// appended over many requests and possibly across restarts. Its file lives
/// under [`Storage::uploads_dir`] and is hashed (sha256) as it is written;
/// [`Partial::commit_blocking`] checks it against the digest the client
/// names and only then renames it into `objects/`, so an upload, like every
/// ingest, becomes an object only under its true digest.
///
/// Every method blocks: call them from the blocking pool.
pub(crate) struct Partial {
    file: File,
    path: PathBuf,
    sha256: Hasher,
    len: u64,
}


impl Partial {
    /// Creates an empty partial at `path` (which must be under the uploads
    /// directory: the commit is a rename into `objects/`).
    pub(crate) fn create(path: &Path) -> Result<Partial, StorageError> {
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        Ok(Partial { file, path: path.to_owned(), sha256: Hasher::new(crate::oci::Algorithm::Sha256), len: 0 })
    }

    /// Reopens the partial at `path` with its first `len` bytes, the ones
    /// known to be complete (anything after them, from a request cut short,
    /// is dropped), and re-hashes them: the hasher's state is not on disk.
    pub(crate) fn reopen(path: &Path, len: u64) -> Result<Partial, StorageError> {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
        let on_disk = file.metadata()?.len();
        if on_disk < len {
            return Err(StorageError::Io(format!("{} has {on_disk} bytes, {len} were recorded", path.display())));
        }
        if on_disk > len {
            file.set_len(len)?;
        }
        let mut sha256 = Hasher::new(crate::oci::Algorithm::Sha256);
        hash_file(&file, len, &mut sha256)?;
        let mut partial = Partial { file, path: path.to_owned(), sha256, len };
        use std::io::Seek;
        partial.file.seek(std::io::SeekFrom::Start(len))?;
        Ok(partial)
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The sha256 digest of the bytes written so far (content made here,
    /// such as a built layer, learns its digest at its end).
    pub(crate) fn digest(&self) -> Digest {
        self.sha256.clone().finish()
    }

    /// A handle for positional reads of the bytes written so far.
    pub(crate) fn reader(&self) -> Result<Arc<File>, StorageError> {
        Ok(Arc::new(self.file.try_clone()?))
    }

    pub(crate) fn write_blocking(&mut self, chunk: &[u8]) -> Result<(), StorageError> {
        self.file.write_all(chunk)?;
        self.sha256.update(chunk);
        self.len += chunk.len() as u64;
        Ok(())
    }

    /// Makes the bytes written so far durable.
    pub(crate) fn sync_blocking(&self) -> Result<(), StorageError> {
        Ok(self.file.sync_data()?)
    }

    /// Verifies the bytes against `expected` and makes them the object of
    /// that digest. A sha512 digest costs one read of the bytes (uploads
    /// are hashed with sha256 as they arrive, the algorithm nearly every
    /// client uses). On a mismatch nothing is stored; the partial is left
    /// for its owner to delete. The object's size on success.
    ///
    /// With `key` (and S3), the bucket holds these bytes already under
    /// that key (a shared session's one chunk): the object is made by a
    /// copy in the bucket rather than a second upload.
    pub(crate) fn commit_blocking(self, storage: &Storage, expected: &Digest, key: Option<String>) -> Result<u64, IngestError> {
        let actual = match expected.algorithm() {
            crate::oci::Algorithm::Sha256 => self.sha256.finish(),
            alg => {
                let mut h = Hasher::new(alg);
                hash_file(&self.file, self.len, &mut h)?;
                h.finish()
            }
        };
        if actual != *expected {
            return Err(IngestError::DigestMismatch { expected: expected.clone(), actual });
        }
        // Synced before the rename, as every ingest: after a power loss the
        // object must not exist with bytes that do not match its key.
        self.file.sync_data().map_err(StorageError::from)?;
        if storage.inner.remote.is_some() {
            let file = Arc::new(self.file);
            // S3 copies objects of up to 5 GiB in one request.
            let upload = match key {
                Some(key) if self.len <= 5 << 30 => Upload::Copy(key),
                _ => Upload::Whole,
            };
            if !storage.commit_remote_blocking(expected, &file, &self.path, self.len, upload)? {
                // Not kept locally: the bucket holds the only copy needed.
                let _ = std::fs::remove_file(&self.path);
            }
            return Ok(self.len);
        }
        let target = storage.inner.objects.path_to_filesystem(&Storage::key(expected)).map_err(StorageError::from)?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(StorageError::from)?;
        }
        let replaced = target.exists();
        std::fs::rename(&self.path, &target).map_err(StorageError::from)?;
        storage.inner.committed(expected, self.len, replaced);
        Ok(self.len)
    }
}
