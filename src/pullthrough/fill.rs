//! Coalesced blob fills: one upstream fetch per digest, however many clients
//! ask at once, teed into storage while clients stream it.
//!
//! The first request for a missing blob starts a *fill*: a task, detached
//! from any client, that streams the upstream body into a spool file while
//! hashing it. Every client (the first included) reads the spool file by
//! position, up to what has been written, and waits on a `watch` channel for
//! more. Late joiners get the bytes already received, then follow live.
//! Memory stays flat: bytes live on disk, never in a per-client buffer.
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

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures_util::Stream;
use http_body_util::BodyExt;
use tokio::sync::watch;

use super::{PullError, Target};
use crate::metrics::Metrics;
use crate::oci::Digest;
use crate::storage::{self, IngestError, Storage, READ_CHUNK};

/// Where a fill stands; published to every client following it.
#[derive(Clone, Debug)]
pub(crate) enum FillState {
    /// Waiting for the upstream's response headers.
    Starting,
    /// Bytes are arriving; `written` of them are on disk.
    Streaming { size: Option<u64>, written: u64 },
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
}

/// The table of fills in flight, keyed by digest.
#[derive(Clone, Default)]
pub(crate) struct Fills {
    // A std Mutex: held only for a map lookup or insert, never across an await.
    map: Arc<Mutex<HashMap<Digest, Arc<Fill>>>>,
}

/// What a fill needs to run.
pub(crate) struct FillJob {
    pub(crate) storage: Storage,
    pub(crate) target: Target,
    pub(crate) digest: Digest,
    pub(crate) metrics: Metrics,
}

impl Fills {
    /// The fill in flight for `digest`, if any.
    pub(crate) fn get(&self, digest: &Digest) -> Option<Arc<Fill>> {
        self.lock().get(digest).cloned()
    }

    /// Joins the fill for `digest`, starting one if none is in flight.
    /// Returns whether this call started it.
    pub(crate) fn join_or_start(&self, digest: &Digest, job: impl FnOnce() -> FillJob) -> (Arc<Fill>, bool) {
        let (fill, tx) = {
            let mut map = self.lock();
            if let Some(existing) = map.get(digest) {
                return (existing.clone(), false);
            }
            let (tx, rx) = watch::channel(FillState::Starting);
            let fill = Arc::new(Fill { state: rx, file: OnceLock::new() });
            map.insert(digest.clone(), fill.clone());
            (fill, tx)
        };
        tokio::spawn(run(job(), fill.clone(), tx, self.clone()));
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
        }
    }
}

impl Fill {
    /// All bytes are on local disk and verified (the commit may still be
    /// under way): a request joining now is served locally.
    pub(crate) fn is_complete(&self) -> bool {
        matches!(*self.state.borrow(), FillState::Done { .. })
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

    /// The bytes `[start, end)` (`end` = the blob's end when `None`) as they
    /// become available and safe to release.
    pub(crate) fn body(
        self: Arc<Self>,
        start: u64,
        end: Option<u64>,
    ) -> impl Stream<Item = Result<Bytes, PullError>> + Send + 'static {
        let rx = self.state.clone();
        futures_util::stream::unfold(Some((self, rx, start)), move |cursor| async move {
            let (fill, mut rx, pos) = cursor?;
            loop {
                let state = rx.borrow_and_update().clone();
                let (releasable, total) = match &state {
                    FillState::Starting => (0, None),
                    // Hold back the last byte until the digest is verified.
                    FillState::Streaming { size, written } => {
                        (size.map_or(*written, |s| (*written).min(s.saturating_sub(1))), *size)
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
                    let Some(file) = fill.file.get() else {
                        return Some((Err(ended_unexpectedly()), None));
                    };
                    let len = (limit - pos).min(READ_CHUNK as u64) as usize;
                    return match storage::read_at(file.clone(), pos, len).await {
                        Ok(bytes) => {
                            let next = pos + bytes.len() as u64;
                            Some((Ok(bytes), Some((fill, rx, next))))
                        }
                        Err(e) => Some((Err(e.into()), None)),
                    };
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
    job.metrics.fills_in_flight.inc();
    let outcome = match tokio::time::timeout(fill_timeout, fetch(&job, &fill, &tx)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(PullError::FillTimeout),
    };
    match outcome {
        Ok(()) => {}
        Err(e) => {
            if e.is_upstream_fault() {
                tracing::warn!(digest = %job.digest, upstream = %cfg.name, error = %e, "blob fill failed");
            }
            if let Some(kind) = e.upstream_error_kind() {
                job.metrics.upstream_errors.with_label_values(&[&cfg.name, kind]).inc();
            }
            tx.send_replace(FillState::Failed(e));
        }
    }
    fills.remove(&job.digest, &fill);
    job.metrics.fills_in_flight.dec();
}

async fn fetch(
    job: &FillJob,
    fill: &Fill,
    tx: &watch::Sender<FillState>,
) -> Result<(), PullError> {
    // The blob may have been committed between the caller's lookup and this
    // fill starting; then serve it from storage.
    if let Some(obj) = job.storage.open_object(&job.digest).await? {
        let _ = fill.file.set(obj.file);
        tx.send_replace(FillState::Done { size: obj.size });
        return Ok(());
    }
    let mut ingest = job.storage.begin(job.digest.clone())?;
    let _ = fill.file.set(ingest.reader());
    let upstream = &job.target.upstream;
    let response = upstream.get_blob(&job.target.repo, &job.digest).await.map_err(PullError::from_blob_fetch)?;
    let size = response.size;
    tx.send_replace(FillState::Streaming { size, written: 0 });
    let mut body = response.body;
    loop {
        // The upstream body enforces idle_timeout between chunks itself.
        let frame = match body.frame().await {
            None => break,
            Some(Err(crate::upstream::UpstreamError::Timeout)) => return Err(PullError::Stalled),
            Some(Err(e)) => return Err(PullError::UpstreamBody(e.to_string())),
            Some(Ok(frame)) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        let len = data.len() as u64;
        if size.is_some_and(|s| ingest.written() + len > s) {
            return Err(PullError::UpstreamBody("more bytes than Content-Length".into()));
        }
        ingest.write(data).await?;
        job.metrics.upstream_bytes.with_label_values(&[&upstream.config().name]).inc_by(len);
        let written = ingest.written();
        tx.send_modify(|s| {
            if let FillState::Streaming { written: w, .. } = s {
                *w = written;
            }
        });
    }
    let written = ingest.written();
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
    if let Err(e) = ingest.commit().await {
        // Clients got verified bytes; only the cache copy is lost.
        tracing::error!(digest = %job.digest, error = %e, "could not commit a verified blob; it will be fetched again");
    }
    Ok(())
}
