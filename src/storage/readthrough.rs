//! Reading an object that has no local copy, with the S3 backend.
//!
//! A whole read starts (or joins) the object's *download*: a task,
//! detached from any reader, that streams the object from the bucket into
//! a spool file, hashing it, and renames it into the hot tier once it
//! matched its digest (if the tier admits its size). Readers do not wait
//! for the end: they follow the spool file as it grows ([`Arriving`]), and
//! the last byte is held back until the digest matched, so a corrupt
//! object ends every reader's body with an error, never with a clean end.
//! One download per digest at a time, however many readers ask.
//!
//! With the hot tier off (`storage.cache.max_size = "0"`) nothing would be
//! kept, so a whole read streams the bucket's answer straight to its
//! reader instead ([`InBucket`]), hashed on the way, the last chunk held
//! back until the digest matched: no local write, one GET per reader.
//!
//! A partial read (a `Range`) or a HEAD with no download in flight goes to
//! the bucket itself ([`InBucket`]): the range is passed through, nothing
//! is kept. Those bytes cannot be hashed against the digest (they are not
//! the whole object); the bucket only ever received verified objects, and
//! every whole read re-verifies.

use std::fs::File;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use tokio::sync::watch;

use super::{Storage, StorageError, StoredObject};
use crate::oci::{Digest, Hasher};

/// What a reader of an object means to do with it: with S3, whether a
/// read with no local copy downloads the object (and keeps a copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    /// Only its size (a HEAD).
    Head,
    /// All of it.
    Whole,
    /// A range of it.
    Part,
}

impl Want {
    pub(crate) fn body(self) -> bool {
        self != Want::Head
    }
}

/// An object opened to serve it, and where its bytes are.
#[derive(Clone)]
pub(crate) enum Opened {
    /// Complete on the local disk (with S3: in the hot tier).
    Local(StoredObject),
    /// Arriving from the bucket into a local file.
    Arriving(Arriving),
    /// Only in the bucket.
    InBucket(InBucket),
    /// For the client to fetch at `location` (`storage.s3.redirect`): a
    /// presigned URL of the object in the bucket.
    Elsewhere { size: u64, location: String },
}

impl Opened {
    pub(crate) fn size(&self) -> u64 {
        match self {
            Opened::Local(o) => o.size,
            Opened::Arriving(a) => a.size,
            Opened::InBucket(b) => b.size,
            Opened::Elsewhere { size, .. } => *size,
        }
    }
}

/// An object being downloaded from the bucket into `file`.
#[derive(Clone)]
pub(crate) struct Arriving {
    pub(crate) file: Arc<File>,
    pub(crate) size: u64,
    progress: watch::Receiver<Progress>,
}

#[derive(Clone, Debug)]
enum Progress {
    /// This many bytes are in the file.
    OnDisk(u64),
    /// All of them, and they match the digest.
    Verified,
    Failed(StorageError),
}

impl Arriving {
    /// Waits until bytes past `pos` may be sent: the end of what may (more
    /// than `pos`). The last byte waits for the digest to match.
    pub(crate) async fn releasable(&self, pos: u64) -> Result<u64, StorageError> {
        let mut rx = self.progress.clone();
        loop {
            match &*rx.borrow_and_update() {
                Progress::Verified => return Ok(self.size),
                Progress::Failed(e) => return Err(e.clone()),
                Progress::OnDisk(n) => {
                    let releasable = (*n).min(self.size.saturating_sub(1));
                    if releasable > pos {
                        return Ok(releasable);
                    }
                }
            }
            if rx.changed().await.is_err() {
                // The download is gone; its last word is final.
                return match &*rx.borrow() {
                    Progress::Verified => Ok(self.size),
                    Progress::Failed(e) => Err(e.clone()),
                    Progress::OnDisk(_) => Err(StorageError::Remote("a download ended without a result".into())),
                };
            }
        }
    }

    /// Waits for the whole object, verified.
    pub(crate) async fn complete(&self) -> Result<StoredObject, StorageError> {
        if self.size > 0 {
            self.releasable(self.size - 1).await?;
        }
        Ok(StoredObject { file: self.file.clone(), size: self.size })
    }
}

type Body = BoxStream<'static, Result<Bytes, StorageError>>;

/// An object only in the bucket, streamed from it.
#[derive(Clone)]
pub(crate) struct InBucket {
    storage: Storage,
    digest: Digest,
    pub(crate) size: u64,
    /// The body of a GET of the whole object already answered (a whole
    /// read with the hot tier off), for the first whole read to take.
    whole: Arc<Mutex<Option<Body>>>,
}

impl InBucket {
    fn new(storage: &Storage, digest: &Digest, size: u64, whole: Option<Body>) -> InBucket {
        InBucket { storage: storage.clone(), digest: digest.clone(), size, whole: Arc::new(Mutex::new(whole)) }
    }

    /// Its bytes `[start, end)`, streamed from the bucket: all of them
    /// verified (see [`verified`]), a range as the bucket sends it. Errors
    /// before the first byte (the bucket down, the object gone) come here,
    /// not in the stream.
    pub(crate) async fn read(
        &self,
        start: u64,
        end: u64,
    ) -> Result<impl Stream<Item = Result<Bytes, StorageError>> + Send + 'static, StorageError> {
        let whole = start == 0 && end == self.size;
        let taken = if whole { self.whole.lock().unwrap_or_else(|p| p.into_inner()).take() } else { None };
        let body = match taken {
            Some(body) => body,
            None => match self.storage.remote()?.get(&self.digest, start, Some(end)).await? {
                Some((_, body)) => body.boxed(),
                None => return Err(StorageError::Remote(format!("{} is no longer in the bucket", self.digest))),
            },
        };
        Ok(if whole {
            verified(self.storage.clone(), self.digest.clone(), self.size, body).left_stream()
        } else {
            body.right_stream()
        })
    }
}

/// The whole object's `body` as it arrives, hashed on the way; the last
/// chunk is held back until the digest matched, so a corrupt or short
/// object ends with an error (and is quarantined), never cleanly.
///
/// The hashing runs on a blocking-pool thread, fed the chunks (shared, not
/// copied) through a bounded queue, so it overlaps receiving and sending
/// rather than stalling the stream for each chunk.
fn verified(storage: Storage, digest: Digest, size: u64, body: Body) -> impl Stream<Item = Result<Bytes, StorageError>> + Send {
    struct Reading {
        body: Body,
        hashing: Option<tokio::sync::mpsc::Sender<Bytes>>,
        hashed: tokio::task::JoinHandle<Digest>,
        held: Option<Bytes>,
        seen: u64,
        storage: Storage,
        digest: Digest,
    }
    let (hashing, mut chunks) = tokio::sync::mpsc::channel::<Bytes>(HASH_QUEUE);
    let algorithm = digest.algorithm();
    let hashed = tokio::task::spawn_blocking(move || {
        let mut hasher = Hasher::new(algorithm);
        while let Some(chunk) = chunks.blocking_recv() {
            hasher.update(&chunk);
        }
        hasher.finish()
    });
    let start = Reading { body, hashing: Some(hashing), hashed, held: None, seen: 0, storage, digest };
    futures_util::stream::unfold(Some(start), move |reading| async move {
        let mut r = reading?;
        loop {
            match r.body.next().await {
                Some(Ok(chunk)) => {
                    r.seen += chunk.len() as u64;
                    let Some(hashing) = &r.hashing else { return None };
                    if hashing.send(chunk.clone()).await.is_err() {
                        return Some((Err(StorageError::Io("the hashing thread stopped".into())), None));
                    }
                    if let Some(previous) = r.held.replace(chunk) {
                        return Some((Ok(previous), Some(r)));
                    }
                }
                Some(Err(e)) => return Some((Err(e), None)),
                None => {
                    // Closing the queue lets the hasher finish.
                    r.hashing = None;
                    let actual = match (&mut r.hashed).await {
                        Ok(actual) => actual,
                        Err(e) => return Some((Err(StorageError::Io(format!("hashing failed: {e}"))), None)),
                    };
                    if r.seen == size && actual == r.digest {
                        return r.held.take().map(|last| (Ok(last), None));
                    }
                    let why = format!("the object of {} in the bucket read {} of {size} bytes hashing to {actual}", r.digest, r.seen);
                    if r.seen == size {
                        tracing::error!(digest = %r.digest, error = %why, "an object in the bucket does not match its digest; quarantining it");
                        let (storage, digest) = (r.storage.clone(), r.digest.clone());
                        tokio::spawn(async move {
                            if let Err(q) = storage.quarantine_remote(&digest).await {
                                tracing::error!(%digest, error = %q, "cannot quarantine the corrupt object");
                            }
                        });
                        return Some((Err(StorageError::Corrupt(why)), None));
                    }
                    return Some((Err(StorageError::Remote(why)), None));
                }
            }
        }
    })
}

/// Chunks of a streamed read queued for its hasher (S3 clients hand over
/// chunks of tens of KiB: a few MiB at most).
const HASH_QUEUE: usize = 64;

/// Downloaded bytes are written to the spool in batches of about this
/// size: one trip to the blocking pool each.
const WRITE_BATCH: usize = 1 << 20;

/// The downloads in flight, one per digest.
pub(super) type Downloads = std::sync::Mutex<std::collections::HashMap<Digest, Slot>>;
type Slot = Arc<tokio::sync::OnceCell<Option<Opened>>>;

impl Storage {
    /// [`Storage::open_blob`] for an object with no local copy, with S3.
    /// `to_client`: the reader sends the bytes on and can take them as a
    /// stream ([`InBucket`]); otherwise a whole read is always a file.
    pub(super) async fn open_remote(&self, digest: &Digest, want: Want, to_client: bool) -> Result<Option<Opened>, StorageError> {
        let remote = self.remote()?;
        if want == Want::Whole && to_client && self.hot()?.max() == 0 {
            // Nothing would be kept: straight from the bucket.
            let Some((size, body)) = remote.get(digest, 0, None).await? else { return Ok(None) };
            remote.metrics().hot_tier_requests.with_label_values(&["miss"]).inc();
            return Ok(Some(Opened::InBucket(InBucket::new(self, digest, size, Some(body.boxed())))));
        }
        if want == Want::Whole {
            return self.read_through(digest).await;
        }
        if let Some(Some(Opened::Arriving(a))) = self.in_flight(digest) {
            return Ok(Some(Opened::Arriving(a)));
        }
        let size = remote.head(digest).await?;
        Ok(size.map(|size| Opened::InBucket(InBucket::new(self, digest, size, None))))
    }

    /// Where a client finds the object of `digest`: a presigned URL (the
    /// object is in the bucket whenever it is here at all).
    pub(super) async fn redirect(&self, remote: &super::Remote, digest: &Digest) -> Result<Option<Opened>, StorageError> {
        let Some(size) = self.stat(digest).await? else { return Ok(None) };
        let location = remote.presigned(digest).await?;
        remote.metrics().s3_redirects.inc();
        self.inner.used(digest);
        Ok(Some(Opened::Elsewhere { size, location }))
    }

    fn downloads(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Digest, Slot>> {
        // Only inserts and removes happen under it: a poisoned map is whole.
        self.inner.reads.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn in_flight(&self, digest: &Digest) -> Option<Option<Opened>> {
        self.downloads().get(digest).and_then(|slot| slot.get().cloned())
    }

    /// Forgets `slot` as the download of `digest`, if it still is.
    fn download_ended(&self, digest: &Digest, slot: &Slot) {
        let mut downloads = self.downloads();
        if downloads.get(digest).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            downloads.remove(digest);
        }
    }

    /// The object of `digest` from the bucket: its download started, or
    /// joined if one is in flight.
    pub(super) async fn read_through(&self, digest: &Digest) -> Result<Option<Opened>, StorageError> {
        let slot = self.downloads().entry(digest.clone()).or_default().clone();
        let opened = slot.get_or_try_init(|| self.start_download(digest, slot.clone())).await.cloned();
        // A download in flight leaves the table when it ends; anything else
        // (found locally, not in the bucket, failed to start) now.
        if !matches!(opened, Ok(Some(Opened::Arriving(_)))) {
            self.download_ended(digest, &slot);
        }
        opened
    }

    async fn start_download(&self, digest: &Digest, slot: Slot) -> Result<Option<Opened>, StorageError> {
        // A reader that just missed another's download finds its copy.
        if let Some(found) = self.open_local(digest)? {
            return Ok(Some(Opened::Local(found)));
        }
        // Held until the download ends: gc does not delete the object from
        // the bucket while a local copy of it is being made.
        let pin = self.pin(digest);
        let remote = self.remote()?;
        let Some((size, body)) = remote.get(digest, 0, None).await? else { return Ok(None) };
        remote.metrics().hot_tier_requests.with_label_values(&["miss"]).inc();
        let mut ingest = self.begin(digest.clone())?;
        ingest.upload = false;
        let (tx, progress) = watch::channel(Progress::OnDisk(0));
        let arriving = Arriving { file: ingest.reader(), size, progress };
        let storage = self.clone();
        let digest = digest.clone();
        tokio::spawn(async move {
            if let Err(e) = storage.download(&digest, ingest, body, size, &tx).await {
                if let StorageError::Corrupt(why) = &e {
                    // Never served, and out of the way of the next fill,
                    // whose upload would otherwise find the key taken.
                    tracing::error!(%digest, error = %why, "an object in the bucket does not match its digest; quarantining it");
                    if let Err(q) = storage.quarantine_remote(&digest).await {
                        tracing::error!(%digest, error = %q, "cannot quarantine the corrupt object");
                    }
                } else {
                    tracing::warn!(%digest, error = %e, "downloading an object from the bucket failed");
                }
            }
            drop(pin);
            storage.download_ended(&digest, &slot);
        });
        Ok(Some(Opened::Arriving(arriving)))
    }

    /// Writes the bucket's `body` to `ingest`, telling readers how far it
    /// is, then verifies it and keeps it as a local copy if the hot tier
    /// admits it. A failure is told to readers too.
    async fn download(
        &self,
        digest: &Digest,
        ingest: super::Ingest,
        body: impl Stream<Item = Result<Bytes, StorageError>> + Unpin,
        size: u64,
        tx: &watch::Sender<Progress>,
    ) -> Result<(), StorageError> {
        let outcome = self.write_and_verify(digest, ingest, body, size, tx).await;
        if let Err(e) = &outcome {
            tx.send_replace(Progress::Failed(e.clone()));
        }
        outcome
    }

    async fn write_and_verify(
        &self,
        digest: &Digest,
        mut ingest: super::Ingest,
        mut body: impl Stream<Item = Result<Bytes, StorageError>> + Unpin,
        size: u64,
        tx: &watch::Sender<Progress>,
    ) -> Result<(), StorageError> {
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batched = 0;
        loop {
            let next = body.next().await.transpose()?;
            let end = next.is_none();
            if let Some(bytes) = next {
                batched += bytes.len();
                batch.push(bytes);
            }
            if batched >= WRITE_BATCH || (end && !batch.is_empty()) {
                let chunks = std::mem::take(&mut batch);
                batched = 0;
                ingest = tokio::task::spawn_blocking(move || -> Result<_, StorageError> {
                    for chunk in chunks {
                        ingest.write_blocking(&chunk)?;
                    }
                    Ok(ingest)
                })
                .await??;
                if ingest.written() > size {
                    return Err(StorageError::Corrupt(format!("the object of {digest} is longer than its {size} bytes")));
                }
                tx.send_replace(Progress::OnDisk(ingest.written()));
            }
            if end {
                break;
            }
        }
        if ingest.written() != size {
            return Err(StorageError::Remote(format!("the object of {digest} ended after {} of {size} bytes", ingest.written())));
        }
        let describe = self.describe();
        let digest = digest.clone();
        let tx = tx.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            if let Err(e) = ingest.verify() {
                return Err(StorageError::Corrupt(format!("{describe}: the object of {digest}: {e}")));
            }
            tx.send_replace(Progress::Verified);
            // Readers have their bytes; only the local copy is at stake.
            if let Err(e) = ingest.commit_blocking() {
                tracing::warn!(%digest, error = %e, "cannot keep a local copy of an object read from the bucket");
            }
            Ok(())
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Hasher;

    type Feed = tokio::sync::mpsc::UnboundedSender<Result<Bytes, StorageError>>;

    fn digest_of(data: &[u8]) -> Digest {
        let mut h = Hasher::new(crate::oci::Algorithm::Sha256);
        h.update(data);
        h.finish()
    }

    /// A download of `size` bytes claimed to hash to `digest`, fed by hand
    /// through the returned sender (closing it ends the body).
    async fn downloading(storage: &Storage, digest: &Digest, size: u64) -> (Feed, Arriving, tokio::task::JoinHandle<Result<(), StorageError>>) {
        let (feed, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let body = Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        let ingest = storage.begin(digest.clone()).unwrap();
        let (tx, progress) = watch::channel(Progress::OnDisk(0));
        let arriving = Arriving { file: ingest.reader(), size, progress };
        let (storage, digest) = (storage.clone(), digest.clone());
        let task = tokio::spawn(async move { storage.download(&digest, ingest, body, size, &tx).await });
        (feed, arriving, task)
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn readers_get_bytes_as_they_arrive_and_the_last_one_only_once_verified() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).await.unwrap();
        let bytes = data(3 << 20);
        let digest = digest_of(&bytes);
        let (feed, arriving, task) = downloading(&storage, &digest, bytes.len() as u64).await;
        // More than one write batch, and far from the end.
        feed.send(Ok(Bytes::copy_from_slice(&bytes[..1 << 20]))).unwrap();
        feed.send(Ok(Bytes::copy_from_slice(&bytes[1 << 20..(3 << 19)]))).unwrap();
        // Bounded: a download that published nothing before its end would
        // keep this waiting.
        let upto = tokio::time::timeout(std::time::Duration::from_secs(10), arriving.releasable(0))
            .await
            .expect("bytes released before the body ended")
            .unwrap();
        assert!(upto >= 1 << 20 && upto < bytes.len() as u64, "the first batch is readable before the rest came: {upto}");
        let mut first = vec![0u8; upto as usize];
        std::os::unix::fs::FileExt::read_exact_at(&*arriving.file, &mut first, 0).unwrap();
        assert_eq!(first, bytes[..upto as usize]);

        feed.send(Ok(Bytes::copy_from_slice(&bytes[3 << 19..]))).unwrap();
        drop(feed);
        assert_eq!(arriving.releasable(bytes.len() as u64 - 1).await.unwrap(), bytes.len() as u64);
        task.await.unwrap().unwrap();
        let kept = storage.open_local(&digest).unwrap().expect("kept once verified");
        assert_eq!(kept.size, bytes.len() as u64);
    }

    /// The hot tier off: a whole read straight from the bucket is hashed on
    /// the way and ends cleanly only if it matched.
    #[tokio::test]
    async fn a_streamed_whole_read_ends_cleanly_only_when_its_digest_matched() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).await.unwrap();
        let good = data(300_000);
        let digest = digest_of(&good);
        let chunks = |bytes: &[u8]| -> Body {
            let pieces: Vec<Result<Bytes, StorageError>> = bytes.chunks(64 << 10).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
            futures_util::stream::iter(pieces).boxed()
        };
        let read = |body: Body, size: u64| {
            let s = verified(storage.clone(), digest.clone(), size, body);
            async move { s.collect::<Vec<_>>().await }
        };

        let items = read(chunks(&good), good.len() as u64).await;
        let bytes: Vec<u8> = items.iter().flat_map(|i| i.as_ref().unwrap().to_vec()).collect();
        assert_eq!(bytes, good);

        let mut bad = good.clone();
        bad[299_999] ^= 1;
        let items = read(chunks(&bad), good.len() as u64).await;
        let sent: usize = items.iter().filter_map(|i| i.as_ref().ok()).map(Bytes::len).sum();
        assert!(matches!(items.last(), Some(Err(StorageError::Corrupt(_)))), "ends with an error");
        assert!(sent < good.len(), "the last chunk is never sent: {sent}");

        let items = read(chunks(&good[..200_000]), good.len() as u64).await;
        assert!(matches!(items.last(), Some(Err(StorageError::Remote(_)))), "a short object ends with an error");
    }

    #[tokio::test]
    async fn a_corrupt_or_short_object_never_releases_its_last_byte_and_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).await.unwrap();
        let good = data(2 << 20);
        let digest = digest_of(&good);
        let mut bad = good.clone();
        bad[1000] ^= 0xff;
        let size = good.len() as u64;

        let (feed, arriving, task) = downloading(&storage, &digest, size).await;
        feed.send(Ok(Bytes::from(bad))).unwrap();
        drop(feed);
        // Whether or not the download has checked the digest yet, what may
        // be released stops short of the last byte.
        match arriving.releasable(0).await {
            Ok(n) => assert!(n < size, "the last byte waits for the digest"),
            Err(e) => assert!(matches!(e, StorageError::Corrupt(_)), "{e}"),
        }
        assert!(matches!(arriving.releasable(size - 1).await, Err(StorageError::Corrupt(_))));
        assert!(matches!(task.await.unwrap(), Err(StorageError::Corrupt(_))));

        let (feed, arriving, task) = downloading(&storage, &digest, size).await;
        feed.send(Ok(Bytes::copy_from_slice(&good[..1 << 20]))).unwrap();
        drop(feed);
        assert!(matches!(arriving.complete().await, Err(StorageError::Remote(_))), "a short body is an error");
        assert!(task.await.unwrap().is_err());

        let (feed, arriving, task) = downloading(&storage, &digest, size).await;
        feed.send(Ok(Bytes::copy_from_slice(&good[..1 << 20]))).unwrap();
        feed.send(Err(StorageError::Remote("connection reset".into()))).unwrap();
        assert!(matches!(arriving.complete().await, Err(StorageError::Remote(_))), "a broken body is an error");
        assert!(task.await.unwrap().is_err());
        assert!(storage.open_local(&digest).unwrap().is_none(), "nothing unverified is kept");
    }
}
