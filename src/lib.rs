//! wharf: a pull-through caching registry for OCI and Docker images.
//!
//! # Layout
//!
//! Data flows one way; an arrow means "may call":
//!
//! ```text
//! cli -> app -> server -> api (router, access, handlers, error) -> repository -> pullthrough -> { storage, metadata }
//!                           \-> auth, limits                      \-> upload -> storage        \-> upstream
//!             -> admin (health, metrics, the admin REST API) -> { auth, metadata, repository, storage, tasks }
//!             -> tasks (background work: when it runs, its progress and outcome) -> metadata
//!             -> gc (eviction, orphan gc, verify) -> { storage, metadata, upload }
//! ```
//!
//! - [`config`]: raw TOML/env config validated into typed values.
//! - `oci`: spec vocabulary (names, tags, digests, media types, error codes).
//! - `server`: accept loop, hyper connections (plain or TLS), graceful drain.
//! - `tls`: the registry port's certificate, reloadable.
//! - `notify`: systemd readiness notifications (`Type=notify`).
//! - `api`: the registry route table, thin handlers, the one error mapping.
//! - `pullthrough`: upstream selection, tag freshness, coalesced fills, the tee.
//! - `upstream`: the remote registry client (auth, redirects, retries).
//! - `repository`: distributions, serving a repository version, push repositories,
//!   curation (copy, remove, revert).
//! - `upload`: blob upload sessions (resumable, across restarts too).
//! - `storage`: content-addressed objects, verified ingest.
//! - `metadata`: repositories, versions, content, distributions, remotes and tasks (SQLite).
//! - `sync`: remotes, their checks and tag filters; later the sync runs.
//! - `tasks`: background tasks: limits, per-resource order, progress, cancel.
//! - `limits`: inbound rate limits per client IP and per user.
//! - `auth`: users, rules, password and token checks, the token endpoint.
//! - `metrics`: every Prometheus metric.
//! - `telemetry`: request ids, the access log line and the HTTP metrics of a request.
//! - `gc`: bounded disk: LRU eviction, orphan and leftover removal, verify.
//! - `memory`: gives the allocator's free memory back after bursts of fills.

pub(crate) mod admin;
pub(crate) mod api;
pub(crate) mod app;
pub(crate) mod auth;
pub mod cli;
pub mod config;
pub(crate) mod gc;
pub(crate) mod limits;
pub(crate) mod memory;
pub(crate) mod metadata;
pub(crate) mod metrics;
pub(crate) mod notify;
pub mod oci;
pub(crate) mod pullthrough;
pub(crate) mod repository;
pub(crate) mod sendfile;
pub(crate) mod server;
pub(crate) mod storage;
pub(crate) mod sync;
pub(crate) mod tasks;
pub(crate) mod telemetry;
pub(crate) mod tls;
pub(crate) mod upload;
pub(crate) mod upstream;

/// Entry points for `benches/` only: the hot paths, callable from outside
/// the crate. Not an API.
#[doc(hidden)]
pub mod bench {
    use std::path::Path;

    /// Routes a registry path; true if it names an endpoint.
    pub fn route(path: &str) -> bool {
        crate::api::router::route(path).is_ok()
    }

    /// Hashes `bytes` with sha256 or sha512 in `chunk`-sized updates, as a
    /// fill does while streaming.
    pub fn hash(sha512: bool, bytes: &[u8], chunk: usize) -> String {
        let alg = if sha512 { crate::oci::Algorithm::Sha512 } else { crate::oci::Algorithm::Sha256 };
        let mut h = crate::oci::Hasher::new(alg);
        for c in bytes.chunks(chunk) {
            h.update(c);
        }
        h.finish().to_string()
    }

    /// The tee's write side: spools `chunks` to disk while hashing, verifies
    /// and commits, then reads the object back in serving-sized chunks.
    pub async fn tee(root: &Path, chunks: &[bytes::Bytes]) -> u64 {
        let mut h = crate::oci::Hasher::new(crate::oci::Algorithm::Sha256);
        chunks.iter().for_each(|c| h.update(c));
        let digest = h.finish();
        let storage = match crate::storage::Storage::open(root).await {
            Ok(s) => s,
            Err(e) => panic!("bench storage: {e}"),
        };
        let mut ingest = match storage.begin(digest.clone()) {
            Ok(i) => i,
            Err(e) => panic!("bench ingest: {e}"),
        };
        // As a fill's writer does: one blocking task writes and hashes.
        let owned = chunks.to_vec();
        let ingest = match tokio::task::spawn_blocking(move || {
            for c in &owned {
                ingest.write_blocking(c)?;
            }
            ingest.verify().map_err(|e| crate::storage::StorageError::Io(e.to_string()))?;
            Ok::<_, crate::storage::StorageError>(ingest)
        })
        .await
        {
            Ok(Ok(i)) => i,
            Ok(Err(e)) => panic!("bench write: {e}"),
            Err(e) => panic!("bench writer: {e}"),
        };
        if let Err(e) = ingest.commit().await {
            panic!("bench commit: {e}");
        }
        let Ok(Some(obj)) = storage.open_object(&digest).await else { panic!("bench: object missing") };
        use futures_util::StreamExt;
        let mut served = 0;
        let mut s = std::pin::pin!(crate::storage::stream_range(obj.file, 0, obj.size));
        while let Some(Ok(b)) = s.next().await {
            served += b.len() as u64;
        }
        served
    }
}
