//! The S3 side of storage: one bucket (under an optional key prefix) holds
//! every verified object, under the keys of [`super::layout`].
//!
//! Nothing unverified is ever visible in the bucket: an object is uploaded
//! from a local file whose digest already matched (a fill's spool file,
//! an upload session's partial), or, for a fill, as parts while the file
//! is written, and a multipart upload becomes an object only at
//! `complete()`, which waits for the match. Each multipart upload in progress is noted
//! in a journal file under `<storage.path>/s3-multipart/` until it is
//! completed or aborted, so that uploads a crash left behind are aborted at
//! the next start (and by gc) without listing the bucket's uploads.
//!
//! Every request is counted and timed by operation (`wharf_s3_requests_total`,
//! `wharf_s3_request_duration_seconds`); retries with backoff are
//! object_store's, bounded by `storage.s3.max_retries`.

use std::fs::File;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::multipart::PartId;
use object_store::{BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, PutPayload, RetryConfig};

use super::{layout, read_exact_at, ObjectEntry, StorageError};
use crate::config::S3Config;
use crate::metrics::StorageMetrics;
use crate::oci::Digest;

/// Objects up to this size go up in one PUT; larger ones in parts of it.
/// S3 wants parts of at least 5 MiB (all but the last).
pub(crate) const PART_SIZE: usize = 8 << 20;
/// Parts of one upload in flight at once: each holds a part in memory.
const PARTS_IN_FLIGHT: usize = 2;

/// What a fill tells the upload following its spool file.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Following {
    /// This many bytes are in the file.
    Written(u64),
    /// All of them, this many, matched the digest: complete the upload.
    Verified(u64),
    /// Nothing will be committed: abort it.
    Abandoned,
}

/// A handle on the bucket; cheap to clone.
#[derive(Clone)]
pub(crate) struct Remote {
    store: Arc<AmazonS3>,
    /// Empty, or ending in `/`.
    prefix: String,
    journal: PathBuf,
    metrics: StorageMetrics,
    describe: String,
    /// This process's mark on its journal notes: a note without it was
    /// left by an earlier run.
    owner: String,
    /// With `redirect`: how long a presigned URL is valid.
    redirect: Option<Duration>,
}

impl Remote {
    /// Builds the client; nothing is sent until the first request, so a
    /// bucket that cannot be reached does not stop wharf from starting.
    pub(crate) fn new(cfg: &S3Config, root: &FsPath, metrics: StorageMetrics) -> Result<Remote, StorageError> {
        // Not `from_env`: ambient AWS_* variables change nothing unless the
        // operator asked for them.
        let mut builder =
            if cfg.credentials_from_env { AmazonS3Builder::from_env() } else { AmazonS3Builder::new() };
        // The client options replace the builder's whole set: first.
        let mut options = ClientOptions::new()
            .with_timeout(cfg.request_timeout)
            .with_connect_timeout(Duration::from_secs(10))
            .with_allow_http(cfg.allow_http);
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca).map_err(|e| StorageError::Io(format!("{}: {e}", ca.display())))?;
            let cert = object_store::Certificate::from_pem(&pem)
                .map_err(|e| StorageError::Io(format!("{}: {e}", ca.display())))?;
            options = options.with_root_certificate(cert);
        }
        builder = builder
            .with_client_options(options)
            .with_allow_http(cfg.allow_http)
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_virtual_hosted_style_request(cfg.virtual_hosted_style)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: cfg.max_retries as usize,
                retry_timeout: cfg.request_timeout * (cfg.max_retries + 1),
            });
        if let Some(endpoint) = &cfg.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let (Some(id), Some(secret)) = (&cfg.access_key_id, &cfg.secret_access_key) {
            builder = builder.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(token) = &cfg.session_token {
                builder = builder.with_token(token);
            }
        }
        let store = builder.build().map_err(|e| StorageError::Io(format!("S3 set-up: {e}")))?;
        // Every series exists from the start, so rates and alerts see 0.
        for op in ["head", "get", "put", "put_part", "create_multipart", "complete_multipart", "abort_multipart", "list", "delete", "copy"] {
            for result in ["ok", "error"] {
                metrics.s3_requests.with_label_values(&[op, result]);
            }
        }
        for direction in ["upload", "download"] {
            metrics.s3_bytes.with_label_values(&[direction]);
        }
        for result in ["hit", "miss"] {
            metrics.hot_tier_requests.with_label_values(&[result]);
        }
        let journal = root.join("s3-multipart");
        std::fs::create_dir_all(&journal)?;
        let describe = format!(
            "s3://{}/{}{}",
            cfg.bucket,
            cfg.prefix,
            cfg.endpoint.as_deref().map(|e| format!(" at {e}")).unwrap_or_default()
        );
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let owner = format!("{}-{}", std::process::id(), started.as_nanos());
        let redirect = cfg.redirect.then_some(cfg.redirect_expiry);
        Ok(Remote { store: Arc::new(store), prefix: cfg.prefix.clone(), journal, metrics, describe, owner, redirect })
    }

    pub(crate) fn metrics(&self) -> &StorageMetrics {
        &self.metrics
    }

    /// `s3://bucket/prefix at endpoint`, for logs and errors.
    pub(crate) fn describe(&self) -> &str {
        &self.describe
    }

    /// This process's mark, unique among the writers of one bucket.
    pub(crate) fn owner(&self) -> &str {
        &self.owner
    }

    /// Whether blob GETs are redirected to the bucket.
    pub(crate) fn redirects(&self) -> bool {
        self.redirect.is_some()
    }

    /// A presigned GET URL of the object of `digest`, valid for the
    /// configured expiry. Signed locally: no request to the bucket.
    pub(crate) async fn presigned(&self, digest: &Digest) -> Result<String, StorageError> {
        use object_store::signer::Signer;
        let expiry = self.redirect.unwrap_or(Duration::from_secs(20 * 60));
        match self.store.signed_url(http::Method::GET, &self.object_path(digest), expiry).await {
            Ok(url) => Ok(url.to_string()),
            Err(e) => Err(self.error("presign", e)),
        }
    }

    fn path(&self, key: &str) -> Path {
        Path::from(format!("{}{key}", self.prefix))
    }

    fn object_path(&self, digest: &Digest) -> Path {
        self.path(&layout::object_key(digest))
    }

    /// Times and counts one request.
    async fn observed<T>(
        &self,
        op: &'static str,
        request: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> object_store::Result<T> {
        let started = Instant::now();
        let result = request.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(object_store::Error::NotFound { .. }) => "not_found",
            Err(_) => "error",
        };
        self.metrics.s3_requests.with_label_values(&[op, outcome]).inc();
        self.metrics.s3_request_duration.with_label_values(&[op]).observe(started.elapsed().as_secs_f64());
        result
    }

    /// The size of the object of `digest`, if the bucket holds it.
    pub(crate) async fn head(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        match self.observed("head", self.store.head(&self.object_path(digest))).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("head", e)),
        }
    }

    /// Readiness: a HEAD of a key that never exists answers 404 when the
    /// bucket is reachable and the credentials are good.
    pub(crate) async fn probe(&self) -> Result<(), StorageError> {
        match self.observed("head", self.store.head(&self.path("wharf-readiness-probe"))).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("probe", e)),
        }
    }

    /// The object's size and its bytes `[start, end)` (`end` = its end when
    /// `None`), as S3 sends them; None if the bucket does not hold it.
    pub(crate) async fn get(
        &self,
        digest: &Digest,
        start: u64,
        end: Option<u64>,
    ) -> Result<Option<(u64, impl Stream<Item = Result<Bytes, StorageError>> + Send + 'static)>, StorageError> {
        self.get_path(self.object_path(digest), start, end).await
    }

    async fn get_path(
        &self,
        path: Path,
        start: u64,
        end: Option<u64>,
    ) -> Result<Option<(u64, impl Stream<Item = Result<Bytes, StorageError>> + Send + 'static)>, StorageError> {
        let range = match end {
            Some(end) => Some(GetRange::Bounded(start..end)),
            None if start > 0 => Some(GetRange::Offset(start)),
            None => None,
        };
        let options = GetOptions { range, ..GetOptions::default() };
        let result = match self.observed("get", self.store.get_opts(&path, options)).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error("get", e)),
        };
        let describe = self.describe.clone();
        let downloaded = self.metrics.s3_bytes.with_label_values(&["download"]);
        let size = result.meta.size;
        Ok(Some((size, result.into_stream().map(move |chunk| match chunk {
            Ok(bytes) => {
                downloaded.inc_by(bytes.len() as u64);
                Ok(bytes)
            }
            Err(e) => Err(StorageError::Remote(format!("{describe}: reading an object: {e}"))),
        }))))
    }

    /// Uploads the first `len` bytes of `file` (already verified against
    /// `digest`) as the object of `digest`, unless the bucket holds it
    /// already; visible only once whole. Whether it uploaded.
    pub(crate) async fn upload(&self, digest: &Digest, file: Arc<File>, len: u64) -> Result<bool, StorageError> {
        if self.head(digest).await?.is_some() {
            return Ok(false);
        }
        self.put_file(&self.object_path(digest), file, 0, len).await?;
        Ok(true)
    }

    /// Uploads bytes `[start, end)` of `file` as the object at `path`: one
    /// PUT, or a multipart upload when larger than a part.
    async fn put_file(&self, path: &Path, file: Arc<File>, start: u64, end: u64) -> Result<(), StorageError> {
        let len = end - start;
        if len <= PART_SIZE as u64 {
            let bytes = read_exact_at(file, start, len as usize).await?;
            self.observed("put", self.store.put(path, PutPayload::from(bytes)))
                .await
                .map_err(|e| self.error("put", e))?;
        } else {
            let (id, note) = self.create_multipart(path).await?;
            let parts = self.upload_parts(path, &id, file, start, end).await;
            self.end_multipart(path, &id, &note, parts).await?;
        }
        self.metrics.s3_bytes.with_label_values(&["upload"]).inc_by(len);
        Ok(())
    }

    /// Stores bytes `[start, end)` of `file` under `key` (outside the
    /// objects' keys: unverified bytes, such as an upload session's
    /// chunk).
    pub(crate) async fn put_key(&self, key: &str, file: Arc<File>, start: u64, end: u64) -> Result<(), StorageError> {
        self.put_file(&self.path(key), file, start, end).await
    }

    /// The bytes stored under `key` from `start` on; None if there are none.
    pub(crate) async fn get_key(
        &self,
        key: &str,
        start: u64,
    ) -> Result<Option<impl Stream<Item = Result<Bytes, StorageError>> + Send + 'static>, StorageError> {
        Ok(self.get_path(self.path(key), start, None).await?.map(|(_, body)| body))
    }

    /// Deletes what is stored under `key` (gone already is fine).
    pub(crate) async fn delete_key(&self, key: &str) -> Result<(), StorageError> {
        match self.observed("delete", self.store.delete(&self.path(key))).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", e)),
        }
    }

    /// Makes the bytes under `key` the object of `digest` by a copy inside
    /// the bucket (the caller verified them), unless it holds the object
    /// already. Whether it copied.
    pub(crate) async fn copy_key_to(&self, key: &str, digest: &Digest) -> Result<bool, StorageError> {
        if self.head(digest).await?.is_some() {
            return Ok(false);
        }
        self.observed("copy", self.store.copy(&self.path(key), &self.object_path(digest)))
            .await
            .map_err(|e| self.error("copy", e))?;
        Ok(true)
    }

    /// Starts a multipart upload to `path`, noted in the journal until it
    /// ends: its id and the note.
    async fn create_multipart(&self, path: &Path) -> Result<(String, PathBuf), StorageError> {
        let id = self
            .observed("create_multipart", self.store.create_multipart(path))
            .await
            .map_err(|e| self.error("create_multipart", e))?;
        let note = self.journal.join(journal_name(&id));
        std::fs::write(&note, format!("{}\n{id}\n{}\n", path.as_ref(), self.owner))?;
        Ok((id, note))
    }

    /// Completes the multipart upload with `parts`, or aborts it if they
    /// failed (or completing does); the journal note goes once it ended.
    async fn end_multipart(
        &self,
        path: &Path,
        id: &String,
        note: &FsPath,
        parts: Result<Vec<PartId>, StorageError>,
    ) -> Result<(), StorageError> {
        let completed = match parts {
            Ok(parts) => self
                .observed("complete_multipart", self.store.complete_multipart(path, id, parts))
                .await
                .map(|_| ())
                .map_err(|e| self.error("complete_multipart", e)),
            Err(e) => Err(e),
        };
        if completed.is_ok() || self.observed("abort_multipart", self.store.abort_multipart(path, id)).await.is_ok() {
            let _ = std::fs::remove_file(note);
        }
        completed
    }

    /// Part `index` of a multipart upload: bytes `[start, end)` of `file`.
    async fn put_part(&self, path: &Path, id: &String, index: usize, file: Arc<File>, start: u64, end: u64) -> Result<PartId, StorageError> {
        let bytes = read_exact_at(file, start, (end - start) as usize).await?;
        self.observed("put_part", self.store.put_part(path, id, index, PutPayload::from(bytes)))
            .await
            .map_err(|e| self.error("put_part", e))
    }

    async fn upload_parts(&self, path: &Path, id: &String, file: Arc<File>, from: u64, to: u64) -> Result<Vec<PartId>, StorageError> {
        let parts = (to - from).div_ceil(PART_SIZE as u64) as usize;
        futures_util::stream::iter(0..parts)
            .map(|i| {
                let start = from + (i * PART_SIZE) as u64;
                self.put_part(path, id, i, file.clone(), start, (start + PART_SIZE as u64).min(to))
            })
            .buffered(PARTS_IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await
    }

    /// Uploads the object of `digest` while `file` is still being written
    /// (a fill's spool file), a part as soon as its bytes are on disk, as
    /// `progress` tells; completed only once it says the whole file was
    /// verified, aborted if it says the ingest was abandoned (or goes away
    /// without a word). Whether it uploaded: not if the bucket held the
    /// object already.
    pub(crate) async fn upload_following(
        &self,
        digest: &Digest,
        file: Arc<File>,
        mut progress: tokio::sync::watch::Receiver<Following>,
    ) -> Result<bool, StorageError> {
        if self.head(digest).await?.is_some() {
            return Ok(false);
        }
        let path = self.object_path(digest);
        let (id, note) = self.create_multipart(&path).await?;
        let parts = self.follow_parts(&path, &id, file, &mut progress).await;
        let len = match &parts {
            Ok((_, len)) => *len,
            Err(_) => 0,
        };
        self.end_multipart(&path, &id, &note, parts.map(|(parts, _)| parts)).await?;
        self.metrics.s3_bytes.with_label_values(&["upload"]).inc_by(len);
        Ok(true)
    }

    /// The parts of [`Remote::upload_following`], each started once its
    /// bytes are on disk, one at a time until the file is verified, then
    /// at most [`PARTS_IN_FLIGHT`] at once; and the verified length.
    async fn follow_parts(
        &self,
        path: &Path,
        id: &String,
        file: Arc<File>,
        progress: &mut tokio::sync::watch::Receiver<Following>,
    ) -> Result<(Vec<PartId>, u64), StorageError> {
        let part = PART_SIZE as u64;
        let mut parts = Vec::new();
        let mut in_flight = futures_util::stream::FuturesOrdered::new();
        let mut next = 0usize;
        loop {
            let (on_disk, verified) = match *progress.borrow_and_update() {
                Following::Written(n) => (n, None),
                Following::Verified(len) => (len, Some(len)),
                Following::Abandoned => return Err(StorageError::Remote("the fill was abandoned".into())),
            };
            // One part at a time while the fill streams: it keeps pace with
            // the fill and leaves the CPU to it (two at once slowed a cold
            // pull by half in the load benchmark); the rest at full speed.
            let limit = if verified.is_some() { PARTS_IN_FLIGHT } else { 1 };
            while in_flight.len() < limit {
                let start = next as u64 * part;
                // A full part, or with the length known, the last one.
                let end = verified.map_or(start + part, |len| (start + part).min(len));
                if start >= end || end > on_disk {
                    break;
                }
                in_flight.push_back(self.put_part(path, id, next, file.clone(), start, end));
                next += 1;
            }
            if let Some(len) = verified {
                if in_flight.is_empty() && next as u64 * part >= len {
                    return Ok((parts, len));
                }
            }
            tokio::select! {
                Some(done) = in_flight.next(), if !in_flight.is_empty() => parts.push(done?),
                changed = progress.changed() => {
                    if changed.is_err() {
                        return Err(StorageError::Remote("the fill ended without a word".into()));
                    }
                }
            }
        }
    }

    /// Aborts the multipart uploads a crash left behind (noted in the
    /// journal); how many.
    pub(crate) async fn abort_leftovers(&self) -> Result<u64, StorageError> {
        let mut aborted = 0;
        for entry in std::fs::read_dir(&self.journal)? {
            let note = entry?.path();
            let Ok(text) = std::fs::read_to_string(&note) else { continue };
            let mut lines = text.lines();
            let (Some(key), Some(id), owner) = (lines.next(), lines.next(), lines.next()) else {
                let _ = std::fs::remove_file(&note);
                continue;
            };
            if owner == Some(self.owner.as_str()) {
                // An upload of this process, still running.
                continue;
            }
            match self.observed("abort_multipart", self.store.abort_multipart(&Path::from(key), &id.to_owned())).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    let _ = std::fs::remove_file(&note);
                    aborted += 1;
                }
                Err(e) => return Err(self.error("abort_multipart", e)),
            }
        }
        Ok(aborted)
    }

    /// Every object in the bucket (under the prefix), by digest.
    pub(crate) async fn list(&self) -> Result<Vec<ObjectEntry>, StorageError> {
        Ok(self
            .list_keys(layout::OBJECTS)
            .await?
            .into_iter()
            .filter_map(|(key, size, modified)| {
                Some(ObjectEntry { digest: layout::parse_object_key(&key)?, size, modified })
            })
            .collect())
    }

    /// Every key under `prefix` (a [`layout`] prefix), without the
    /// bucket's own prefix, with its size and last modification (millis).
    pub(crate) async fn list_keys(&self, prefix: &str) -> Result<Vec<(String, u64, u64)>, StorageError> {
        let started = Instant::now();
        let listed: Result<Vec<_>, _> = self.store.list(Some(&self.path(prefix))).try_collect().await;
        let outcome = if listed.is_ok() { "ok" } else { "error" };
        self.metrics.s3_requests.with_label_values(&["list", outcome]).inc();
        self.metrics.s3_request_duration.with_label_values(&["list"]).observe(started.elapsed().as_secs_f64());
        let listed = listed.map_err(|e| self.error("list", e))?;
        Ok(listed
            .into_iter()
            .filter_map(|meta| {
                let key = meta.location.as_ref().strip_prefix(self.prefix.as_str())?.to_owned();
                Some((key, meta.size, meta.last_modified.timestamp_millis().max(0) as u64))
            })
            .collect())
    }

    /// Deletes the object of `digest` (gone already is fine).
    pub(crate) async fn delete(&self, digest: &Digest) -> Result<(), StorageError> {
        match self.observed("delete", self.store.delete(&self.object_path(digest))).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", e)),
        }
    }

    /// Moves the object of `digest` under `quarantine/`, where nothing
    /// serves it (a copy, then a delete).
    pub(crate) async fn quarantine(&self, digest: &Digest, name: &str) -> Result<(), StorageError> {
        let to = self.path(&format!("quarantine/{name}"));
        self.observed("copy", self.store.copy(&self.object_path(digest), &to))
            .await
            .map_err(|e| self.error("copy", e))?;
        self.delete(digest).await
    }

    fn error(&self, op: &str, e: object_store::Error) -> StorageError {
        StorageError::Remote(format!("{}: {op}: {e}", self.describe))
    }
}

/// A journal file's name for an upload id (ids are opaque strings).
fn journal_name(id: &str) -> String {
    let digest = Digest::of(crate::oci::Algorithm::Sha256, id.as_bytes());
    digest.hex()[..32].to_owned()
}
