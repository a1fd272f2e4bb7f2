//! Which digests a pull-through repository may be answered from local
//! content. Bytes are stored once per digest and shared by every
//! repository; access is not. A client asking `<upstream>/<repo>` for a
//! digest gets stored bytes only when that repository holds the digest:
//! its recorded content says so, or its upstream vouched for it (a tag of
//! that repository named it, a manifest of it referenced it, or the
//! upstream answered a request for it there). Otherwise the upstream is
//! asked, exactly as if nothing were cached, and its answer decides.
//!
//! This memory holds positive answers only, and a pull-through repository
//! never loses content: it cannot be curated or deleted, eviction keeps
//! what it removed recorded, and a tag the upstream drops leaves its
//! manifest in the repository. So no entry can outlive the fact it holds;
//! capacity alone evicts, and an evicted entry is asked of the metadata
//! again.

use std::future::Future;

use moka::future::Cache;
use sha2::{Digest as _, Sha256};

use super::route::Target;
use super::PullError;
use crate::oci::media;
use crate::oci::Digest;

/// (repository, digest) pairs remembered as held.
const REMEMBERED: u64 = 100_000;

/// 128 bits of SHA-256 over (upstream, repository, digest): a lookup
/// allocates nothing, and a false "held" would take a collision of 128
/// bits.
type Key = [u8; 16];

/// Where a fill's bytes are fetched from: a pull-through repository
/// (`<upstream>\0<repository>`), so a request for another repository
/// knows the fill's answer is not its upstream's answer for it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct FetchedFor(pub(super) String);

impl FetchedFor {
    pub(crate) fn of(target: &Target) -> FetchedFor {
        FetchedFor(format!("{}\0{}", target.upstream.config().name, target.repo))
    }
}

/// The memory of what each pull-through repository holds; cheap to clone.
#[derive(Clone)]
pub(super) struct Held {
    cache: Cache<Key, ()>,
}

impl Default for Held {
    fn default() -> Held {
        Held { cache: Cache::new(REMEMBERED) }
    }
}

fn key(target: &Target, digest: &Digest) -> Key {
    let mut h = Sha256::new();
    h.update(target.upstream.config().name.as_bytes());
    h.update([0]);
    h.update(target.repo.as_str().as_bytes());
    h.update([0]);
    h.update(digest.algorithm().as_str().as_bytes());
    h.update(b":");
    h.update(digest.hex().as_bytes());
    let full = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

impl Held {
    pub(super) fn contains(&self, target: &Target, digest: &Digest) -> bool {
        self.cache.contains_key(&key(target, digest))
    }

    pub(super) async fn insert(&self, target: &Target, digest: &Digest) {
        self.cache.insert(key(target, digest), ()).await;
    }

    /// Held once `ask` (the repository's records, or its upstream) says
    /// so. Concurrent requests for the same (repository, digest) wait for
    /// one answer instead of each asking.
    pub(super) async fn vouch(
        &self,
        target: &Target,
        digest: &Digest,
        ask: impl Future<Output = Result<(), PullError>>,
    ) -> Result<(), PullError> {
        self.cache.try_get_with(key(target, digest), ask).await.map_err(|e| (*e).clone())
    }

    /// `manifest`, vouched for in `target`, and everything it references:
    /// the references first, so an entry for a manifest entered here means
    /// its references are entered too (callers skip a held manifest).
    pub(super) async fn insert_manifest(&self, target: &Target, digest: &Digest, bytes: &[u8]) {
        self.insert_references(target, bytes).await;
        self.insert(target, digest).await;
    }

    /// What a held manifest references (config, layers, an index's
    /// manifests): they belong to the same image, as the recorded content
    /// of a repository counts them.
    pub(super) async fn insert_references(&self, target: &Target, bytes: &[u8]) {
        if let Ok(refs) = media::references(bytes) {
            let all = refs.config.iter().chain(&refs.layers).chain(&refs.blobs).chain(&refs.manifests);
            for d in all {
                self.insert(target, &d.digest).await;
            }
        }
    }
}
