//! Bounded disk: eviction of least recently used cached blobs, removal of
//! orphans and leftovers (`gc`), and re-hashing every object (`verify`).
//!
//! Owns *which* objects may go and when; the bytes themselves are
//! `storage`'s (removal, pins, totals, last uses) and what references them
//! is `metadata`'s. Never touches repositories' versions: evicted content
//! stays recorded and is fetched again on demand by the pull-through layer
//! (from its upstream, or an on-demand sync blob from its recorded remote).
//!
//! **Eviction takes only blobs a repository version records** (so they
//! can be fetched again), least recently used first. **Never evicted:**
//! manifests (small; tags are served from them while an upstream is down),
//! content of push repositories, of sync repositories whose remote's
//! policy is `immediate` (and other sync content without a recorded
//! source), of versions a distribution pins, anything pinned by a fill or
//! an upload's commit (or, in a cluster, being filled by any node), and
//! anything used since the oldest running sync started (a sync records what it fetched only at its end). **What gc removes:** objects no
//! repository version (of any age), uploaded blob, or remembered upstream
//! tag references, unused for [`GC_GRACE`] (recordings of fresh pulls are
//! batched, so a new object may not be referenced yet) and not pinned.

mod migrate;
mod select;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::StorageConfig;
use crate::metadata::{Metadata, MetadataError, Millis, StorageReferences};
use crate::metrics::StorageMetrics;
use crate::oci::Digest;
use crate::pullthrough::Recorder;
use crate::storage::{Storage, StorageError};
use crate::tasks::{Progress, TaskFailure};
use crate::upload::Uploads;

pub(crate) use select::{eviction_order, is_orphan};

/// How often objects' last uses go from memory to the metadata store.
const USE_FLUSH: Duration = Duration::from_secs(30);
/// After an eviction that could not get under the low watermark (the rest
/// is protected), the next attempt waits this long rather than rescanning
/// on every commit.
const EVICTION_BACKOFF: Duration = Duration::from_secs(10);
/// The eviction lease's name (see `Disk::evict_as_cluster`).
const EVICTION: &str = "eviction";
/// An orphan younger than this (by last use, else commit time) is kept.
pub(crate) const GC_GRACE: Duration = Duration::from_secs(3600);
/// The task resource gc and verify share: they run one at a time.
pub(crate) const STORAGE_RESOURCE: &str = "storage";
/// How many corrupt digests a verify task's error names.
const NAMED_MISMATCHES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub(crate) enum DiskError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// `storage.max_size` and its watermarks, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub(crate) max_size: u64,
    /// Eviction starts above this...
    pub(crate) high: u64,
    /// ...and stops at or below this.
    pub(crate) low: u64,
}

impl Bounds {
    pub(crate) fn of(cfg: &StorageConfig) -> Option<Bounds> {
        let max_size = cfg.max_size?;
        let at = |fraction: f64| (max_size as f64 * fraction) as u64;
        Some(Bounds { max_size, high: at(cfg.high_watermark), low: at(cfg.low_watermark) })
    }
}

/// What a gc run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct GcReport {
    pub(crate) orphans: u64,
    pub(crate) orphan_bytes: u64,
    pub(crate) uploads: u64,
    pub(crate) spool_files: u64,
    /// S3 multipart uploads a crash left behind, aborted.
    pub(crate) multipart_uploads: u64,
    /// Chunks of shared upload sessions no session records (a node died
    /// between storing and recording one), deleted.
    pub(crate) upload_chunks: u64,
}

/// What [`Disk`] works with.
pub(crate) struct DiskParts {
    pub(crate) storage: Storage,
    pub(crate) metadata: Metadata,
    pub(crate) metrics: StorageMetrics,
    pub(crate) uploads: Uploads,
    pub(crate) recorder: Recorder,
    /// With the `fs` backend and a `[storage.s3]` section: the bucket
    /// `migrate` copies the local objects into.
    pub(crate) migrate_to: Option<crate::storage::Remote>,
    /// In a cluster (a shared database and bucket): this node's name and
    /// `cluster.lease`. Eviction is then one node's at a time, from a
    /// listing of the bucket.
    pub(crate) cluster_node: Option<(String, Duration)>,
}

/// The disk housekeeper. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Disk {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Storage,
    metadata: Metadata,
    metrics: StorageMetrics,
    bounds: Option<Bounds>,
    uploads: Uploads,
    /// Flushed before each survey, so what was just pulled is recorded
    /// (referenced) when eviction and gc look.
    recorder: Recorder,
    migrate_to: Option<crate::storage::Remote>,
    cluster_node: Option<(String, Duration)>,
    /// One removal pass at a time (eviction, gc): an async mutex, as a pass
    /// awaits the store and the disk.
    removing: tokio::sync::Mutex<()>,
}

impl Disk {
    pub(crate) fn new(parts: DiskParts, cfg: &StorageConfig) -> Disk {
        let DiskParts { storage, metadata, metrics, uploads, recorder, migrate_to, cluster_node } = parts;
        let bounds = Bounds::of(cfg);
        metrics.capacity_bytes.set(gauge(bounds.map_or(0, |b| b.max_size)));
        let disk = Disk {
            inner: Arc::new(Inner {
                storage,
                metadata,
                metrics,
                bounds,
                uploads,
                recorder,
                migrate_to,
                cluster_node,
                removing: tokio::sync::Mutex::new(()),
            }),
        };
        disk.publish();
        disk
    }

    /// Starts the background work: flushing last uses, and (when bounded)
    /// evicting whenever a commit takes the store past the high watermark.
    pub(crate) fn spawn(&self) {
        let flusher = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(USE_FLUSH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = flusher.flush_uses().await {
                    tracing::warn!(error = %e, "cannot record objects' last uses; retrying later");
                }
            }
        });
        let evictor = self.clone();
        tokio::spawn(async move { evictor.evict_forever().await });
    }

    /// Writes the last uses gathered in memory to the metadata store, one
    /// transaction. Lost on failure: those objects merely look older.
    pub(crate) async fn flush_uses(&self) -> Result<(), MetadataError> {
        let uses: Vec<(Digest, Millis)> =
            self.inner.storage.take_uses().into_iter().map(|(d, at)| (d, i64::try_from(at).unwrap_or(i64::MAX))).collect();
        if uses.is_empty() {
            return Ok(());
        }
        self.inner.metadata.run(move |s| s.record_uses(&uses)).await
    }

    /// The totals into the gauges.
    fn publish(&self) {
        let (bytes, objects) = self.inner.storage.usage();
        self.inner.metrics.bytes.set(gauge(bytes));
        self.inner.metrics.objects.set(gauge(objects));
    }

    async fn evict_forever(&self) {
        if let (Some((node, lease)), Some(bounds)) = (self.inner.cluster_node.clone(), self.inner.bounds) {
            return self.evict_as_cluster(node, lease, bounds).await;
        }
        // Whether the last pass ended over the high watermark: warned once,
        // not every pause.
        let mut stuck = false;
        loop {
            self.publish();
            if let Some(bounds) = self.inner.bounds {
                if self.inner.storage.usage().0 > bounds.high {
                    match self.evict(bounds).await {
                        Ok(()) => {}
                        Err(e) => tracing::error!(error = %e, "eviction failed"),
                    }
                    self.publish();
                    let stored = self.inner.storage.usage().0;
                    if stored > bounds.high {
                        if !stuck {
                            tracing::warn!(stored, high_watermark = bounds.high, max_size = bounds.max_size,
                                "cannot evict below the high watermark: the rest is protected, in use or not recorded yet");
                        }
                        stuck = true;
                        // Look again after a pause, even if nothing is
                        // committed meanwhile.
                        tokio::time::sleep(EVICTION_BACKOFF).await;
                        continue;
                    }
                    stuck = false;
                }
            }
            self.inner.storage.grown().await;
        }
    }

    /// Eviction in a cluster: one node at a time, the holder of the
    /// eviction lease, from a listing of the bucket (each node's own
    /// totals miss what the others stored). The holder looks once per
    /// `lease` (`cluster.lease`), or sooner once what it stored itself
    /// takes its count past the high watermark; the lease lasts three.
    async fn evict_as_cluster(&self, node: String, lease: Duration, bounds: Bounds) {
        let mut last_look: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                () = self.inner.storage.grown() => {}
                () = tokio::time::sleep(lease) => {}
            }
            self.publish();
            let due = last_look.is_none_or(|t| t.elapsed() >= lease)
                || self.inner.storage.usage().0 > bounds.high;
            if !due {
                continue;
            }
            let now = crate::metadata::now_millis();
            let until = now + i64::try_from((lease * 3).as_millis()).unwrap_or(i64::MAX);
            let name = node.clone();
            let held = match self.inner.metadata.run(move |s| s.take_lease(EVICTION, &name, now, until)).await {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take the eviction lease; trying again later");
                    false
                }
            };
            last_look = Some(tokio::time::Instant::now());
            if held {
                if let Err(e) = self.evict(bounds).await {
                    tracing::error!(error = %e, "eviction failed");
                }
                self.publish();
            }
            // Still over (the rest protected, or another node evicts):
            // the next look waits, rather than one per commit.
            if self.inner.storage.usage().0 > bounds.high {
                tokio::time::sleep(EVICTION_BACKOFF).await;
            }
        }
    }

    /// Evicts unprotected blobs, least recently used first, until the store
    /// is at or below the low watermark (or nothing evictable is left).
    /// In a cluster, the bucket's listing says how much is stored.
    pub(crate) async fn evict(&self, bounds: Bounds) -> Result<(), DiskError> {
        let _turn = self.inner.removing.lock().await;
        let clustered = self.inner.cluster_node.is_some();
        if !clustered && self.inner.storage.usage().0 <= bounds.high {
            return Ok(());
        }
        let (objects, refs, uses) = self.survey().await?;
        if clustered {
            let listed: u64 = objects.iter().map(|o| o.size).sum();
            self.inner.storage.recount(listed, objects.len() as u64);
        }
        let (total, _) = self.inner.storage.usage();
        if total <= bounds.high {
            return Ok(());
        }
        let order = eviction_order(objects, &refs, &uses);
        let mut removed = Vec::new();
        let (mut freed, start) = (0u64, total);
        for object in order {
            if self.inner.storage.usage().0 <= bounds.low {
                break;
            }
            // None: pinned by a fill or upload since the survey, or gone.
            if let Some(size) = self.inner.storage.remove_unpinned(&object.digest).await? {
                self.inner.metrics.evictions.inc();
                self.inner.metrics.evicted_bytes.inc_by(size);
                freed += size;
                removed.push(object.digest);
            }
        }
        let now = self.inner.storage.usage().0;
        if !removed.is_empty() {
            tracing::info!(evicted = removed.len(), freed, before = start, after = now, "evicted least recently used blobs");
        }
        self.forget(removed).await;
        Ok(())
    }

    /// Objects on disk, what references them, and their last uses (after
    /// flushing the ones in memory).
    async fn survey(&self) -> Result<(Vec<crate::storage::ObjectEntry>, StorageReferences, HashMap<String, Millis>), DiskError> {
        self.inner.recorder.flush().await;
        self.flush_uses().await?;
        let mut refs = self.inner.metadata.run(|s| s.storage_references()).await?;
        // What any node of a cluster is filling is kept whole: it may be
        // committed while this pass runs.
        let filling = self.inner.metadata.run(|s| s.fills_in_flight()).await?;
        refs.referenced.extend(filling.iter().cloned());
        refs.protected.extend(filling);
        let uses = self.inner.metadata.run(|s| s.last_uses()).await?;
        let objects = self.inner.storage.list_objects().await?;
        Ok((objects, refs, uses))
    }

    async fn forget(&self, removed: Vec<Digest>) {
        if removed.is_empty() {
            return;
        }
        if let Err(e) = self.inner.metadata.run(move |s| s.forget_uses(&removed)).await {
            tracing::warn!(error = %e, "cannot forget removed objects' last uses");
        }
    }

    /// Removes expired upload sessions, spool leftovers, and orphaned
    /// objects (see the module's notes). Progress: objects examined, bytes
    /// removed.
    pub(crate) async fn gc(&self, progress: &Progress) -> Result<GcReport, TaskFailure> {
        self.gc_inner(progress).await.map_err(|e| TaskFailure::Failed(e.to_string()))?
    }

    async fn gc_inner(&self, progress: &Progress) -> Result<Result<GcReport, TaskFailure>, DiskError> {
        let _turn = self.inner.removing.lock().await;
        let mut report = GcReport {
            uploads: self.inner.uploads.sweep().await as u64,
            spool_files: self.inner.storage.remove_spool_leftovers().await?,
            multipart_uploads: self.inner.storage.abort_upload_leftovers().await?,
            upload_chunks: self.inner.uploads.remove_orphan_chunks(GC_GRACE).await.map_err(|e| match e {
                crate::upload::UploadError::Metadata(e) => DiskError::Metadata(e),
                e => DiskError::Storage(StorageError::Io(e.to_string())),
            })?,
            ..GcReport::default()
        };
        let (objects, refs, uses) = self.survey().await?;
        progress.set_total(objects.len() as u64);
        let grace = i64::try_from(GC_GRACE.as_millis()).unwrap_or(i64::MAX);
        let now = crate::metadata::now_millis();
        let mut removed = Vec::new();
        for object in objects {
            if progress.is_canceled() {
                self.forget(removed).await;
                return Ok(Err(TaskFailure::Canceled));
            }
            let mut freed = 0;
            if is_orphan(&object, &refs, &uses, now.saturating_sub(grace)) {
                if let Some(size) = self.inner.storage.remove_unpinned(&object.digest).await? {
                    tracing::info!(digest = %object.digest, size, "removed an orphaned object");
                    report.orphans += 1;
                    report.orphan_bytes += size;
                    freed = size;
                    removed.push(object.digest);
                }
            }
            progress.add(1, freed);
        }
        self.forget(removed).await;
        self.publish();
        tracing::info!(orphans = report.orphans, bytes = report.orphan_bytes, uploads = report.uploads,
            spool_files = report.spool_files, multipart_uploads = report.multipart_uploads,
            upload_chunks = report.upload_chunks, "storage gc finished");
        Ok(Ok(report))
    }

    /// Re-hashes every object; any whose bytes do not match its digest is
    /// moved to quarantine (never served; fetched again on demand where it
    /// has a source, else unknown). Progress: objects checked, bytes read.
    /// Corrupt objects make the task fail, naming them.
    pub(crate) async fn verify(&self, progress: &Progress) -> Result<Vec<Digest>, TaskFailure> {
        let fail = |e: DiskError| TaskFailure::Failed(e.to_string());
        let objects = self.inner.storage.list_objects().await.map_err(|e| fail(e.into()))?;
        progress.set_total(objects.len() as u64);
        let mut corrupt = Vec::new();
        for object in objects {
            if progress.is_canceled() {
                return Err(TaskFailure::Canceled);
            }
            if !self.inner.storage.verify_object(&object.digest).await.map_err(|e| fail(e.into()))? {
                self.inner.storage.quarantine(&object.digest).await.map_err(|e| fail(e.into()))?;
                tracing::error!(digest = %object.digest, size = object.size,
                    "stored object does not match its digest; moved to quarantine");
                corrupt.push(object.digest);
            }
            progress.add(1, object.size);
        }
        self.publish();
        self.forget(corrupt.clone()).await;
        tracing::info!(corrupt = corrupt.len(), "storage verify finished");
        if corrupt.is_empty() {
            return Ok(corrupt);
        }
        let named: Vec<String> = corrupt.iter().take(NAMED_MISMATCHES).map(ToString::to_string).collect();
        let more = corrupt.len().saturating_sub(NAMED_MISMATCHES);
        Err(TaskFailure::Failed(format!(
            "{} object(s) did not match their digest and were quarantined: {}{}",
            corrupt.len(),
            named.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        )))
    }
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
