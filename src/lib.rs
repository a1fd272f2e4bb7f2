//! wharf: a pull-through caching registry for OCI and Docker images.
//!
//! # Layout
//!
//! Data flows one way; an arrow means "may call":
//!
//! ```text
//! cli -> app -> server -> api (router, access, handlers, error) -> repository -> pullthrough -> { storage, metadata }
//!                           \-> auth, limits, flatpak (index)     \-> upload -> storage        \-> upstream
//!             -> admin (health, metrics, the admin REST API) -> { auth, metadata, repository, storage, tasks }
//!             -> tasks (background work: when it runs, its progress and outcome) -> metadata
//!             -> gc (eviction, orphan gc, verify) -> { storage, metadata, upload }
//!             -> cluster port -> pullthrough (a fill in progress, for another node)
//! pullthrough -> cluster (who fills a blob; another node's fill) -> metadata
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
//! - `upload`: blob upload sessions (resumable, across restarts too, shared by a cluster).
//! - `cluster`: one upstream fetch per blob for a cluster; the cluster port.
//! - `storage`: content-addressed objects, verified ingest.
//! - `metadata`: repositories, versions, content, distributions, remotes and tasks (SQLite or PostgreSQL).
//! - `sync`: remotes, their checks and tag filters; later the sync runs.
//! - `tasks`: background tasks: limits, per-resource order, progress, cancel.
//! - `limits`: inbound rate limits per client IP and per user.
//! - `auth`: users, rules, password and token checks, the token endpoint.
//! - `metrics`: every Prometheus metric.
//! - `telemetry`: request ids, the access log line and the HTTP metrics of a request.
//! - `gc`: bounded disk: LRU eviction, orphan and leftover removal, verify.
//! - `memory`: gives the allocator's free memory back after bursts of fills.
//! - `flatpak`: Flatpak's registry index, from what the metadata records of
//!   each served image (its config's facts read once, in the background).

pub(crate) mod admin;
pub(crate) mod api;
pub(crate) mod app;
pub(crate) mod auth;
pub(crate) mod build;
pub(crate) mod cluster;
pub(crate) mod flatpak;
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
pub(crate) mod random;
pub(crate) mod repository;
pub(crate) mod sendfile;
pub(crate) mod server;
pub(crate) mod storage;
pub(crate) mod sync;
pub(crate) mod tasks;
pub(crate) mod telemetry;
pub(crate) mod tls;
pub(crate) mod transfer;
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

/// Entry points for the fuzz targets (`tests/fuzz/`) only: the parsers that
/// a client's or an upstream's bytes reach, called as the server calls
/// them, with what they decided given back for the targets to check. Not
/// an API.
#[doc(hidden)]
pub mod fuzz {
    use std::path::Path;

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    /// The service tokens are checked for.
    const SERVICE: &str = "wharf";

    /// Routes a request path: the route's kind (a metrics label) and the
    /// repository name it addresses, or the error's text.
    pub fn route(path: &str) -> Result<(&'static str, Option<String>), String> {
        use crate::api::router::Route;
        let route = crate::api::router::route(path).map_err(|e| e.to_string())?;
        let name = match &route {
            Route::Base | Route::Catalog | Route::FlatpakIndex { .. } => None,
            Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::Upload { name, .. }
            | Route::Tags { name }
            | Route::Referrers { name, .. }
            | Route::Signatures { name, .. } => Some(name.to_string()),
        };
        Ok((route.kind(), name))
    }

    /// The route kinds [`route`] may give.
    pub fn route_kinds() -> &'static [&'static str] {
        crate::metrics::ROUTES
    }

    /// A `Range` header against a blob of `size` bytes: None when ignored
    /// (the whole blob is served), Some(Err) for a 416, Some(Ok(None)) for
    /// the whole blob, Some(Ok(Some((start, end)))) for a 206 of that span.
    #[allow(clippy::type_complexity)]
    pub fn range(header: &str, size: u64) -> Option<Result<Option<(u64, u64)>, ()>> {
        crate::api::range::ByteRange::parse(header).map(|r| r.resolve(size).map_err(|_| ()))
    }

    /// What a push decides about manifest bytes: whether their nesting is
    /// within bounds, the media type `inspect` recognised, whether the
    /// image-spec check passed and whether the references parsed. Each step
    /// runs on its own, so a target can hold them against each other.
    #[derive(Debug)]
    pub struct Manifest {
        pub depth_ok: bool,
        pub media_type: Option<String>,
        pub valid: Option<bool>,
        pub references_ok: bool,
    }

    /// The maximum nesting a manifest may have.
    pub const MANIFEST_MAX_DEPTH: usize = crate::oci::media::MAX_DEPTH;

    pub fn manifest(bytes: &[u8]) -> Manifest {
        use crate::oci::media;
        let info = media::inspect(bytes).ok();
        Manifest {
            depth_ok: media::check_depth(bytes).is_ok(),
            valid: info.as_ref().map(|i| media::validate(bytes, i.kind).is_ok()),
            media_type: info.map(|i| i.media_type),
            references_ok: media::references(bytes).is_ok(),
        }
    }

    /// `s` parsed as a digest, a repository name, a tag and a reference;
    /// each that parsed, as it displays.
    pub fn names(s: &str) -> [Option<String>; 4] {
        use crate::oci::{Digest, Reference, RepositoryName, Tag};
        [
            s.parse::<Digest>().ok().map(|d| d.to_string()),
            s.parse::<RepositoryName>().ok().map(|n| n.to_string()),
            s.parse::<Tag>().ok().map(|t| t.as_str().to_owned()),
            s.parse::<Reference>().ok().map(|r| r.to_string()),
        ]
    }

    /// The bearer token an `Authorization` header holds, if it holds one
    /// (Basic credentials are decoded and dropped).
    pub fn bearer(value: &str) -> Option<&str> {
        match crate::auth::credentials(value) {
            crate::auth::Credentials::Bearer(token) => Some(token),
            crate::auth::Credentials::Basic { .. } | crate::auth::Credentials::Invalid(_) => None,
        }
    }

    /// A signing key in `dir`, and the token checks the registry makes.
    pub struct Tokens(crate::auth::keys::KeyRing);

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    impl Tokens {
        pub fn open(dir: &Path) -> Result<Tokens, String> {
            crate::auth::keys::KeyRing::open(dir, now()).map(Tokens).map_err(|e| e.to_string())
        }

        /// Checks a token as a bearer request's is checked.
        pub fn verify(&self, token: &str) -> bool {
            crate::auth::token::verify(&self.0, token, SERVICE, now()).is_ok()
        }

        /// Signs `claims` (any bytes) with the current key and checks the
        /// token: the claims parse is reached only by signed tokens.
        pub fn verify_signed(&self, claims: &[u8]) -> Result<bool, String> {
            let header = format!(r#"{{"alg":"ES256","typ":"JWT","kid":"{}"}}"#, self.0.current_kid());
            let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
            let (_, signature) = self.0.sign(input.as_bytes()).map_err(|e| e.to_string())?;
            Ok(self.verify(&format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))))
        }
    }
}
