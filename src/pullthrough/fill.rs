//! Coalesced blob fills: one upstream fetch per digest, however many clients
//! ask at once, teed into storage while clients stream it.
//!
//! The first request for a missing blob starts a *fill*: a task, detached
//! from any client, that receives the upstream body while a blocking-pool
//! writer appends it to a spool file and hashes it, the two in parallel
//! with a bounded queue between them. Clients (the first included) at the
//! live edge are handed zero-copy slices of the received frames from a
//! small window of recent ones; a client further behind (a late joiner, or
//! a reader that fell out of the window) is handed the older bytes as a
//! region of the spool file ([`Piece::OnDisk`]), which the API layer sends
//! without reading it into memory where the connection allows (`sendfile`)
//! and reads by position otherwise, then catches up with the window.
//! Memory stays flat: the window is bounded and only lets go of frames
//! already on disk, and a reader behind it holds no buffer of its own.
//!
//! **Invariant:** a client never receives a blob's last byte before the
//! whole blob was verified against its digest, so a wrong or truncated
//! upstream body always ends every client's response with an error, never
//! with a clean end. (For an upstream body of unknown length the clean end
//! itself is withheld until verification.)
//!
//! A fill outlives the client that started it (the cache and other clients
//! still want the bytes) but is bounded by `fill_timeout` and, between
//! chunks, by `idle_timeout`.
//!
//! **A full disk never costs a client its bytes.** When a write fails (no
//! space left, an I/O error) the fill goes on *through*: the spool file is
//! discarded, later chunks are only hashed (the last byte is still held
//! until the digest matched), nothing is committed, the error is logged
//! and counted (`wharf_storage_write_errors_total`), and the fill leaves
//! the table so the next request starts afresh (and is cached once space
//! returns). With nothing on disk to fall back on, the window keeps every
//! frame some reader still needs, and the upstream is read only as fast as
//! the slowest reader: memory stays bounded.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use futures_util::Stream;
use http_body_util::BodyExt;
use tokio::sync::watch;

use super::held::FetchedFor;
use super::{PullError, Target};
use crate::cluster::{Cluster, Source};
use crate::metrics::Metrics;
use crate::oci::Digest;
use crate::storage::{self, Ingest, IngestError, Storage, StorageError, READ_CHUNK};
use crate::telemetry;

/// A piece of a fill's body, in order.
pub(crate) enum Piece {
    /// Received bytes, a slice of a frame in the window (shared by every
    /// reader at the live edge).
    Received(Bytes),
    /// Bytes `[start, end)` of `file`, already written there (older than
    /// the window): the caller sends or reads them.
    OnDisk { file: Arc<File>, start: u64, end: u64 },
}

/// Where a fill stands; published to every client following it.
#[derive(Clone, Debug)]
pub(crate) enum FillState {
    /// Waiting for the upstream's response headers.
    Starting,
    /// Bytes are arriving; `received` of them so far (in memory and on
    /// their way to disk).
    Streaming { size: Option<u64>, received: u64 },
    /// All bytes verified; the blob is (or is about to be) committed.
    Done { size: u64 },
    Failed(PullError),
}

/// One in-flight fill, shared by every client reading it.
pub(crate) struct Fill {
    state: watch::Receiver<FillState>,
    /// The file clients read from: the spool file, or the committed object
    /// if the blob turned out to be stored already. Set before the state
    /// leaves `Starting`.
    file: OnceLock<Arc<File>>,
    /// How many bytes are on disk, readable through `file`. Updated by the
    /// writer without waking anyone: clients at the live edge read from
    /// `recent`, and bytes older than `recent` are on disk already.
    written: AtomicU64,
    /// The latest frames received, so clients at the live edge get them
    /// without a read back from disk (zero-copy slices of the same frames).
    recent: Mutex<Recent>,
    /// Set once a write failed: the bytes go through, uncached (see the
    /// module's notes).
    passthrough: AtomicBool,
    /// Where each reader of the body is; only consulted in pass-through,
    /// to know which frames nobody needs any more.
    readers: Mutex<Vec<Weak<Cursor>>>,
    /// Woken when a reader moves on or goes away, in pass-through: the
    /// receiver may be waiting for room in the window.
    advanced: tokio::sync::Notify,
    /// Whether the blob ended up in storage, set when the fill task ends
    /// (after the commit, which follows `Done`): for callers that must know
    /// the bytes survive a crash, such as a sync.
    stored: watch::Sender<Option<bool>>,
    /// The repository whose upstream the fill asks, and whether it asked:
    /// only then is the fill's answer that upstream's word on the blob
    /// (see `held`).
    fetched_for: FetchedFor,
    upstream_answered: AtomicBool,
}

/// One reader's position in a fill; dropped with its body stream.
struct Cursor {
    pos: AtomicU64,
    fill: Arc<Fill>,
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.fill.advanced.notify_waiters();
    }
}

/// A window of recently received frames, keyed by offset.
#[derive(Default)]
struct Recent {
    frames: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

/// How much of a fill's most recent bytes stay in memory for clients at
/// the live edge. Frames leave the window only once on disk; a reader
/// behind it is sent spool regions, so a small window costs little and
/// bounds a herd's memory (1 MiB: docs/BENCHMARKS.md).
const RECENT_BYTES: usize = 1 << 20;

/// The table of fills in flight, keyed by digest.
#[derive(Clone, Default)]
pub(crate) struct Fills {
    // A std Mutex: held only for a map lookup or insert, never across an await.
    map: Arc<Mutex<HashMap<Digest, Arc<Fill>>>>,
    /// Fills that have left the table so far.
    ended: Arc<AtomicU64>,
}

/// What a fill needs to run.
pub(crate) struct FillJob {
    pub(crate) storage: Storage,
    pub(crate) target: Target,
    pub(crate) digest: Digest,
    pub(crate) metrics: Metrics,
    /// With a cluster port: where the cluster says the bytes come from.
    pub(crate) cluster: Option<Cluster>,
}

impl Fill {
    fn new(state: watch::Receiver<FillState>, fetched_for: FetchedFor) -> Fill {
        Fill {
            fetched_for,
            upstream_answered: AtomicBool::new(false),
            state,
            file: OnceLock::new(),
            written: AtomicU64::new(0),
            recent: Mutex::new(Recent::default()),
            passthrough: AtomicBool::new(false),
            readers: Mutex::new(Vec::new()),
            advanced: tokio::sync::Notify::new(),
            stored: watch::Sender::new(None),
        }
    }
}

impl Fills {
    /// The fill in flight for `digest`, if any.
    pub(crate) fn get(&self, digest: &Digest) -> Option<Arc<Fill>> {
        self.lock().get(digest).cloned()
    }

    /// Joins the fill for `digest`, starting one if none is in flight.
    /// Returns whether this call started it.
    pub(crate) fn join_or_start(&self, digest: &Digest, job: impl FnOnce() -> FillJob) -> (Arc<Fill>, bool) {
        let (fill, tx, job) = {
            let mut map = self.lock();
            if let Some(existing) = map.get(digest) {
                return (existing.clone(), false);
            }
            let (tx, rx) = watch::channel(FillState::Starting);
            let job = job();
            let fill = Arc::new(Fill::new(rx, FetchedFor::of(&job.target)));
            map.insert(digest.clone(), fill.clone());
            (fill, tx, job)
        };
        // The fill is detached from the request, but its upstream requests
        // carry the id of the request that started it.
        tokio::spawn(telemetry::scope(telemetry::current(), run(job, fill.clone(), tx, self.clone())));
        (fill, true)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<Fill>>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single insert/remove), so a poisoned lock is still usable.
        self.map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remove(&self, digest: &Digest, fill: &Arc<Fill>) {
        let mut map = self.lock();
        if map.get(digest).is_some_and(|f| Arc::ptr_eq(f, fill)) {
            map.remove(digest);
            self.ended.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many fills have ended, or None while one is in flight.
    pub(crate) fn ended_if_idle(&self) -> Option<u64> {
        let map = self.lock();
        map.is_empty().then(|| self.ended.load(Ordering::Relaxed))
    }
}

impl Fill {
    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        // Only pushes and pops happen under this lock; a poisoned one is
        // still consistent.
        self.recent.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a received frame at `offset` and lets go of the oldest frames
    /// that are already on disk once the window is full.
    fn push_recent(&self, offset: u64, frame: Bytes) {
        let mut recent = self.recent();
        recent.bytes += frame.len();
        recent.frames.push_back((offset, frame));
        self.trim(&mut recent);
    }

    /// Lets go of the oldest frames nobody needs from memory while the
    /// window is over its size: frames on disk, or in pass-through,
    /// frames every reader has passed. The window's size after.
    fn trim(&self, recent: &mut Recent) -> usize {
        let needed_from = if self.passthrough.load(Ordering::Acquire) {
            self.slowest_reader()
        } else {
            self.written.load(Ordering::Acquire)
        };
        while recent.bytes > RECENT_BYTES {
            match recent.frames.front() {
                Some((off, f)) if off + f.len() as u64 <= needed_from => {
                    recent.bytes -= f.len();
                    recent.frames.pop_front();
                }
                _ => break,
            }
        }
        recent.bytes
    }

    /// The position of the reader furthest behind (the end of time if
    /// none is left); forgets readers that are gone.
    fn slowest_reader(&self) -> u64 {
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        readers.retain(|r| r.strong_count() > 0);
        readers.iter().filter_map(Weak::upgrade).map(|c| c.pos.load(Ordering::Acquire)).min().unwrap_or(u64::MAX)
    }

    /// In pass-through, waits until the window has room: until readers
    /// have moved past enough of it. Otherwise returns at once.
    async fn make_room(&self) {
        loop {
            let advanced = self.advanced.notified();
            tokio::pin!(advanced);
            // Registered before the check, so a reader moving on between
            // the check and the wait is not missed.
            advanced.as_mut().enable();
            if !self.passthrough.load(Ordering::Acquire) {
                return;
            }
            let size = {
                let mut recent = self.recent();
                self.trim(&mut recent)
            };
            if size <= RECENT_BYTES {
                return;
            }
            advanced.await;
        }
    }

    /// The bytes from `pos` up to `limit` (at most one frame's worth) if
    /// they are still in the window.
    fn recent_bytes(&self, pos: u64, limit: u64) -> Option<Bytes> {
        let recent = self.recent();
        let (off, frame) = recent.frames.iter().find(|(off, f)| *off <= pos && pos < off + f.len() as u64)?;
        let start = (pos - off) as usize;
        let end = ((limit.min(off + frame.len() as u64)) - off) as usize;
        Some(frame.slice(start..end))
    }

    /// All bytes are on local disk and verified (the commit may still be
    /// under way): a request joining now is served locally.
    pub(crate) fn is_complete(&self) -> bool {
        matches!(*self.state.borrow(), FillState::Done { .. })
    }

    /// Whether the upstream of `target`'s repository answered this fill:
    /// then a request for that repository may take the fill's bytes
    /// without asking again. Meaningful once [`Fill::ready`] returned.
    pub(crate) fn speaks_for(&self, target: &Target) -> bool {
        self.upstream_answered.load(Ordering::Acquire) && self.fetched_for == FetchedFor::of(target)
    }

    /// Waits for the upstream's answer: the blob's size (if the upstream
    /// said), or why the fill failed.
    pub(crate) async fn ready(&self) -> Result<Option<u64>, PullError> {
        let mut rx = self.state.clone();
        loop {
            let state = rx.borrow_and_update().clone();
            match state {
                FillState::Starting => {}
                FillState::Streaming { size, .. } => return Ok(size),
                FillState::Done { size } => return Ok(Some(size)),
                FillState::Failed(e) => return Err(e),
            }
            if rx.changed().await.is_err() {
                return Err(ended_unexpectedly());
            }
        }
    }

    /// Waits until every byte is stored and verified: the blob's size, or
    /// why the fill failed (a fill that went through uncached failed).
    pub(crate) async fn done(&self) -> Result<u64, PullError> {
        let mut rx = self.state.clone();
        loop {
            let state = rx.borrow_and_update().clone();
            match state {
                FillState::Done { .. } if self.passthrough.load(Ordering::Acquire) => {
                    return Err(PullError::Storage(storage::StorageError::Io(
                        "the blob could not be written to storage (is the disk full?)".into(),
                    )))
                }
                FillState::Done { size } => return Ok(size),
                FillState::Failed(e) => return Err(e),
                FillState::Starting | FillState::Streaming { .. } => {}
            }
            if rx.changed().await.is_err() {
                return match rx.borrow().clone() {
                    FillState::Done { size } => Ok(size),
                    FillState::Failed(e) => Err(e),
                    _ => Err(ended_unexpectedly()),
                };
            }
        }
    }

    /// Waits until the fill task has ended with the blob committed to
    /// storage (synced and renamed, so it survives a crash): its size. A
    /// verified blob whose commit failed is an error here, though its
    /// clients got their bytes.
    pub(crate) async fn stored(&self) -> Result<u64, PullError> {
        let size = self.done().await?;
        let mut rx = self.stored.subscribe();
        let stored = match rx.wait_for(Option::is_some).await {
            Ok(stored) => *stored,
            Err(_) => return Err(ended_unexpectedly()),
        };
        match stored {
            Some(true) => Ok(size),
            _ => Err(PullError::Storage(storage::StorageError::Io(
                "the blob was verified but could not be committed to storage".into(),
            ))),
        }
    }

    /// The bytes `[start, end)` (`end` = the blob's end when `None`) as they
    /// become available and safe to release.
    pub(crate) fn body(
        self: Arc<Self>,
        start: u64,
        end: Option<u64>,
    ) -> impl Stream<Item = Result<Piece, PullError>> + Send + 'static {
        let rx = self.state.clone();
        let cursor = Arc::new(Cursor { pos: AtomicU64::new(start), fill: self.clone() });
        self.readers.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::downgrade(&cursor));
        futures_util::stream::unfold(Some((self, rx, start, cursor)), move |state| async move {
            let (fill, mut rx, pos, cursor) = state?;
            // What the previous item handed out is the reader's now.
            cursor.pos.store(pos, Ordering::Release);
            if fill.passthrough.load(Ordering::Acquire) {
                fill.advanced.notify_waiters();
            }
            loop {
                let state = rx.borrow_and_update().clone();
                let (releasable, total) = match &state {
                    FillState::Starting => (0, None),
                    // Hold back the last byte until the digest is verified.
                    FillState::Streaming { size, received } => {
                        (size.map_or(*received, |s| (*received).min(s.saturating_sub(1))), *size)
                    }
                    FillState::Done { size } => (*size, Some(*size)),
                    FillState::Failed(e) => return Some((Err(e.clone()), None)),
                };
                let until = end.or(total);
                if until.is_some_and(|u| pos >= u) {
                    return None;
                }
                let limit = until.map_or(releasable, |u| u.min(releasable));
                if pos < limit {
                    if let Some(bytes) = fill.recent_bytes(pos, limit) {
                        let next = pos + bytes.len() as u64;
                        return Some((Ok(Piece::Received(bytes)), Some((fill, rx, next, cursor))));
                    }
                    // Not in the window: older bytes, which are on disk.
                    let on_disk = fill.written.load(Ordering::Acquire).min(limit);
                    let Some(file) = fill.file.get().filter(|_| pos < on_disk) else {
                        return Some((Err(ended_unexpectedly()), None));
                    };
                    // A region, not bytes: this reader holds no buffer.
                    let end = on_disk.min(pos + READ_CHUNK as u64);
                    let piece = Piece::OnDisk { file: file.clone(), start: pos, end };
                    return Some((Ok(piece), Some((fill, rx, end, cursor))));
                }
                if matches!(state, FillState::Done { .. }) {
                    return None;
                }
                if rx.changed().await.is_err() {
                    // The leader is gone; its last state is final. Anything
                    // but Done/Failed means it died without saying why.
                    let last = rx.borrow().clone();
                    if !matches!(last, FillState::Done { .. } | FillState::Failed(_)) {
                        return Some((Err(ended_unexpectedly()), None));
                    }
                }
            }
        })
    }
}

fn ended_unexpectedly() -> PullError {
    PullError::Internal("blob fill ended without a result".into())
}

/// The fill task: fetch, tee to disk, verify, commit, and always leave a
/// final state for followers.
async fn run(job: FillJob, fill: Arc<Fill>, tx: watch::Sender<FillState>, fills: Fills) {
    let cfg = job.target.upstream.config();
    let fill_timeout = cfg.fill_timeout;
    // Held until the fill ends: eviction and gc never remove the object
    // while it is being filled or just committed.
    let _pin = job.storage.pin(&job.digest);
    job.metrics.fills_in_flight.inc();
    // Whether this node holds the cluster's claim on the fill.
    let mut claimed = false;
    let outcome = match tokio::time::timeout(fill_timeout, fetch(&job, &fill, &tx, &fills, &mut claimed)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(PullError::FillTimeout),
    };
    let stored = match outcome {
        Ok(stored) => stored,
        Err(e) => {
            if e.is_upstream_fault() {
                tracing::warn!(request_id = %telemetry::log_id(), digest = %job.digest, upstream = %cfg.name, error = %e, "blob fill failed");
            }
            if let Some(kind) = e.upstream_error_kind() {
                job.metrics.upstream_errors.with_label_values(&[&cfg.name, kind]).inc();
            }
            tx.send_replace(FillState::Failed(e));
            false
        }
    };
    fill.stored.send_replace(Some(stored));
    fills.remove(&job.digest, &fill);
    // After the commit: a node asking from now on finds the blob stored.
    if let (true, Some(cluster)) = (claimed, &job.cluster) {
        cluster.release(&job.digest);
    }
    job.metrics.fills_in_flight.dec();
}

/// Serves the fill from storage if the blob is stored (committed since
/// the caller looked, or by another node); whether it was.
async fn from_storage(job: &FillJob, fill: &Arc<Fill>, tx: &watch::Sender<FillState>) -> Result<bool, PullError> {
    let Some(obj) = super::blobs::or_miss(&job.digest, job.storage.open_object(&job.digest).await)? else {
        return Ok(false);
    };
    let _ = fill.file.set(obj.file);
    fill.written.store(obj.size, Ordering::Release);
    tx.send_replace(FillState::Done { size: obj.size });
    Ok(true)
}

/// Where the bytes come from: the upstream, unless another node of the
/// cluster fills the blob already. Sets `claimed` if this node took the
/// cluster's claim. None if the blob turned out to be stored (and the
/// fill is served from storage).
async fn source(
    job: &FillJob,
    fill: &Arc<Fill>,
    tx: &watch::Sender<FillState>,
    claimed: &mut bool,
) -> Result<Option<Source>, PullError> {
    let Some(cluster) = &job.cluster else { return Ok(Some(Source::Upstream { claimed: false })) };
    let mut source = cluster.source(&job.digest, None).await;
    if let Source::Ended { node } = source {
        // Its fill ended as this node asked: stored, or to be taken over.
        if from_storage(job, fill, tx).await? {
            return Ok(None);
        }
        source = match cluster.source(&job.digest, Some(node)).await {
            Source::Ended { .. } => Source::Upstream { claimed: false },
            other => other,
        };
    }
    if let Source::Upstream { claimed: true } = source {
        *claimed = true;
    }
    Ok(Some(source))
}

/// Ok(whether the blob is in storage now).
async fn fetch(
    job: &FillJob,
    fill: &Arc<Fill>,
    tx: &watch::Sender<FillState>,
    fills: &Fills,
    claimed: &mut bool,
) -> Result<bool, PullError> {
    // The blob may have been committed between the caller's lookup and this
    // fill starting; then serve it from storage.
    if from_storage(job, fill, tx).await? {
        return Ok(true);
    }
    let Some(source) = source(job, fill, tx, claimed).await? else { return Ok(true) };
    let mut ingest = job.storage.begin(job.digest.clone())?;
    let _ = fill.file.set(ingest.reader());
    let upstream = &job.target.upstream;
    let (size, body, upstream_bytes) = match source {
        Source::Upstream { .. } | Source::Ended { .. } => {
            let response = upstream.get_blob(&job.target.repo, &job.digest).await.map_err(PullError::from_blob_fetch)?;
            // Before the state leaves `Starting`, so whoever sees it sees this.
            fill.upstream_answered.store(true, Ordering::Release);
            let counter = job.metrics.upstream_bytes.with_label_values(&[&upstream.config().name]);
            (response.size, response.body, Some(counter))
        }
        Source::Peer { node, size, body } => {
            // The filling node uploads the object; this one keeps a copy
            // (and uploads it only if the bucket lacks it at its commit).
            ingest.follow_no_upload();
            job.metrics.cluster_relayed_fills.inc();
            tracing::debug!(digest = %job.digest, peer = %node, "streaming a blob another node is filling");
            (size, crate::upstream::ResponseBody::relayed(body, upstream.config().idle_timeout), None)
        }
    };
    tx.send_replace(FillState::Streaming { size, received: 0 });

    // Receiving (here) and writing + hashing (on a blocking thread) run in
    // parallel; the bounded queue between them is the backpressure that
    // keeps memory flat when the disk is slower than the network.
    let (queue, chunks) = tokio::sync::mpsc::channel::<Bytes>(WRITE_QUEUE);
    let writer = tokio::task::spawn_blocking({
        let (fill, fills, digest, metrics) = (fill.clone(), fills.clone(), job.digest.clone(), job.metrics.clone());
        move || write_chunks(ingest, chunks, &fill, |e| {
            tracing::error!(%digest, error = %e,
                "cannot write a blob fill to storage; serving it through to its clients without caching it");
            metrics.storage.write_errors.inc();
            // New requests start a fill of their own, which caches the
            // blob once there is room again.
            fills.remove(&digest, &fill);
        })
    });
    let received = receive(fill, tx, body, size, queue, upstream_bytes).await;
    let mut ingest = writer.await.map_err(|e| PullError::Internal(format!("blob writer failed: {e}")))??;
    let received = received?;
    let written = ingest.written();
    if written != received {
        return Err(PullError::Internal(format!("wrote {written} of {received} received bytes")));
    }
    if let Some(expected) = size {
        if written != expected {
            return Err(PullError::Truncated { got: written, expected });
        }
    }
    ingest.verify().map_err(|e| match e {
        IngestError::DigestMismatch { expected, actual } => PullError::DigestMismatch { expected, actual },
        IngestError::Storage(s) => PullError::Storage(s),
    })?;
    // Verified: clients may have the last byte now, while the commit syncs.
    tx.send_replace(FillState::Done { size: written });
    if ingest.is_discarded() {
        return Ok(false);
    }
    if let Err(e) = ingest.commit().await {
        job.metrics.storage.write_errors.inc();
        // Clients got verified bytes; only the cache copy is lost.
        tracing::error!(digest = %job.digest, error = %e, "could not commit a verified blob; it will be fetched again");
        return Ok(false);
    }
    Ok(true)
}

/// Frames of upstream body queued for the writer. hyper's frames are at
/// most a few hundred KiB, so this bounds a fill's memory to a few MiB.
const WRITE_QUEUE: usize = 8;

/// Pulls the upstream body into the queue; returns the byte count.
async fn receive(
    fill: &Fill,
    tx: &watch::Sender<FillState>,
    mut body: crate::upstream::ResponseBody,
    size: Option<u64>,
    queue: tokio::sync::mpsc::Sender<Bytes>,
    upstream_bytes: Option<prometheus::IntCounter>,
) -> Result<u64, PullError> {
    let mut received = 0u64;
    loop {
        // The upstream body enforces idle_timeout between chunks itself.
        let frame = match body.frame().await {
            None => return Ok(received),
            Some(Err(crate::upstream::UpstreamError::Timeout)) => return Err(PullError::Stalled),
            Some(Err(e)) => return Err(PullError::UpstreamBody(e.to_string())),
            Some(Ok(frame)) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        let len = data.len() as u64;
        if size.is_some_and(|s| received + len > s) {
            return Err(PullError::UpstreamBody("more bytes than Content-Length".into()));
        }
        // In pass-through, only as fast as the slowest reader.
        fill.make_room().await;
        // In the window first, then announced: a woken client finds it.
        fill.push_recent(received, data.clone());
        received += len;
        tx.send_modify(|s| {
            if let FillState::Streaming { received: r, .. } = s {
                *r = received;
            }
        });
        if let Some(counter) = &upstream_bytes {
            counter.inc_by(len);
        }
        if queue.send(data).await.is_err() {
            // The writer stopped: its error is the one to report.
            return Ok(received);
        }
    }
}

/// The blocking side of a fill: writes and hashes queued frames, and
/// records how much is on disk (no wake-ups: see `Fill::written`). The
/// first failed write switches the fill to pass-through (`failed` is told
/// why, once); from then on frames are only hashed.
fn write_chunks(
    mut ingest: Ingest,
    mut chunks: tokio::sync::mpsc::Receiver<Bytes>,
    fill: &Fill,
    failed: impl FnOnce(&StorageError),
) -> Result<Ingest, PullError> {
    let mut failed = Some(failed);
    while let Some(chunk) = chunks.blocking_recv() {
        if ingest.is_discarded() {
            ingest.write_blocking(&chunk)?;
            continue;
        }
        match ingest.write_blocking(&chunk) {
            Ok(()) => fill.written.store(ingest.written(), Ordering::Release),
            Err(e) => {
                // Set before the file goes: `written` stays where the disk
                // ended, and frames after it stay in memory for readers.
                fill.passthrough.store(true, Ordering::Release);
                ingest.discard();
                if let Some(f) = failed.take() {
                    f(&e);
                }
                // The failed chunk was not hashed: hash it now.
                ingest.write_blocking(&chunk)?;
            }
        }
    }
    Ok(ingest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill() -> Fill {
        let (_tx, rx) = watch::channel(FillState::Starting);
        Fill::new(rx, FetchedFor(String::new()))
    }

    /// A sync counts a blob fetched only once it is committed: `Done` comes
    /// before the commit's sync and rename, `stored` after them.
    #[tokio::test]
    async fn stored_waits_past_done_for_the_commit_and_reports_a_failed_one() {
        for committed in [true, false] {
            let (tx, rx) = watch::channel(FillState::Starting);
            let f = Arc::new(Fill::new(rx, FetchedFor(String::new())));
            tx.send_replace(FillState::Done { size: 3 });
            assert_eq!(f.done().await.unwrap(), 3);
            let waiter = tokio::spawn({
                let f = f.clone();
                async move { f.stored().await }
            });
            // The test runtime has one thread: the waiter runs until it blocks.
            tokio::task::yield_now().await;
            assert!(!waiter.is_finished(), "verified but not yet committed");
            f.stored.send_replace(Some(committed));
            let got = waiter.await.unwrap();
            if committed {
                assert_eq!(got.unwrap(), 3);
            } else {
                assert!(matches!(got, Err(PullError::Storage(_))), "{got:?}");
            }
        }
    }

    #[test]
    fn in_pass_through_the_window_keeps_what_the_slowest_reader_needs_and_no_more() {
        let f = Arc::new(fill());
        f.passthrough.store(true, Ordering::Release);
        let slow = Arc::new(Cursor { pos: AtomicU64::new(0), fill: f.clone() });
        let fast = Arc::new(Cursor { pos: AtomicU64::new(0), fill: f.clone() });
        f.readers.lock().unwrap().extend([Arc::downgrade(&slow), Arc::downgrade(&fast)]);
        let frame = |b: u8| Bytes::from(vec![b; 1 << 20]);
        for i in 0..6u8 {
            f.push_recent(u64::from(i) << 20, frame(i));
        }
        assert_eq!(f.recent().bytes, 6 << 20, "nothing is on disk: every frame a reader needs stays");
        fast.pos.store(6 << 20, Ordering::Release);
        assert_eq!(f.trim(&mut f.recent()), 6 << 20, "the slow reader still needs them");
        // Far enough along that what it still needs is the window's size.
        let slow_at = (6 << 20) - RECENT_BYTES as u64;
        slow.pos.store(slow_at, Ordering::Release);
        assert_eq!(f.trim(&mut f.recent()), RECENT_BYTES, "frames both passed go, down to the window's size");
        assert!(f.recent_bytes(slow_at, slow_at + (1 << 20)).is_some(), "the slow reader's next bytes are kept");
        assert!(f.recent_bytes(slow_at - 1, slow_at).is_none(), "and nothing before them");
        drop(slow);
        drop(fast);
        f.push_recent(6 << 20, frame(6));
        assert!(f.recent().bytes <= RECENT_BYTES, "readers gone: nothing is needed any more");
    }

    #[test]
    fn window_slices_frames_and_drops_only_frames_already_on_disk() {
        let f = fill();
        let frame = |b: u8| Bytes::from(vec![b; 1 << 20]);
        for i in 0..6u8 {
            f.push_recent(u64::from(i) << 20, frame(i));
        }
        // Nothing is on disk yet: the window must keep everything.
        assert_eq!(f.recent().bytes, 6 << 20);
        assert_eq!(f.recent_bytes(10, 20).unwrap(), Bytes::from(vec![0u8; 10]));
        // A slice never crosses a frame boundary, nor the limit.
        assert_eq!(f.recent_bytes((1 << 20) - 4, 8 << 20).unwrap().len(), 4);
        assert_eq!(f.recent_bytes(5 << 20, (5 << 20) + 3).unwrap(), Bytes::from(vec![5u8; 3]));

        // Once written, the oldest frames leave as new ones arrive.
        f.written.store(6 << 20, Ordering::Release);
        f.push_recent(6 << 20, frame(6));
        assert!(f.recent().bytes <= RECENT_BYTES, "window stays bounded: {}", f.recent().bytes);
        assert!(f.recent_bytes(0, 1).is_none(), "evicted bytes are read from disk instead");
        assert_eq!(f.recent_bytes(6 << 20, 7 << 20).unwrap().len(), 1 << 20);
        assert!(f.recent_bytes(7 << 20, 8 << 20).is_none(), "nothing beyond what was received");
    }
}
