//! Tags through the pull-through cache: what a tag points at (trusted
//! for the upstream's `tag_ttl`, then revalidated), what it pointed at
//! when last confirmed (in metadata, and in memory for when the database
//! is away), and tag listings.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{is_unavailable, recorder, Lookup, PullError, PullThrough, RouteError, Target};
use crate::metadata::MetadataError;
use crate::oci::{Digest, Reference, RepositoryName, Tag};
use crate::upstream::{FetchedManifest, ManifestHead, UpstreamError};

/// How long a stale tag answer is reused before the upstream is asked again.
const STALE_RECHECK: Duration = Duration::from_secs(10);
/// Bound on upstream tag-list pages followed for one listing.
const MAX_TAG_PAGES: usize = 1_000;

/// A page of tags.
#[derive(Debug, Serialize)]
pub(crate) struct TagsPage {
    pub(crate) tags: Vec<String>,
    #[serde(skip)]
    pub(crate) has_more: bool,
}

/// `<upstream>\0<repository>:<tag>`: one string, so a lookup allocates once.
/// No two keys collide: by their grammars an upstream's name holds no `\0`,
/// and neither a repository name nor a tag holds `:`.
#[derive(Clone, Hash, PartialEq, Eq)]
pub(super) struct TagKey(String);

/// Tags remembered in memory for when the database is away.
pub(super) const KNOWN_TAGS: u64 = 100_000;

impl TagKey {
    pub(super) fn new(upstream: &str, repo: &RepositoryName, tag: &Tag) -> TagKey {
        let mut key = String::with_capacity(upstream.len() + repo.as_str().len() + tag.as_str().len() + 2);
        key.push_str(upstream);
        key.push('\0');
        key.push_str(repo.as_str());
        key.push(':');
        key.push_str(tag.as_str());
        TagKey(key)
    }
}

#[derive(Clone)]
pub(super) struct TagEntry {
    digest: Digest,
    ttl: Duration,
    /// The upstream could not be asked; this is the last known answer.
    stale: bool,
}

/// What the upstream said about a tag: the manifest itself (a tag never
/// seen) or its HEAD (a revalidation).
enum TagAnswer {
    Fetched(FetchedManifest),
    Head(ManifestHead),
}

/// A repository's full tag list as last fetched.
#[derive(Clone)]
pub(super) struct TagList {
    tags: Arc<Vec<String>>,
    ttl: Duration,
}

/// Cache entries live as long as the answer they hold may be trusted.
pub(super) struct TtlExpiry;

trait Ttl {
    fn ttl(&self) -> Duration;
}

impl Ttl for TagEntry {
    fn ttl(&self) -> Duration {
        self.ttl
    }
}

impl Ttl for TagList {
    fn ttl(&self) -> Duration {
        self.ttl
    }
}

impl<K, V: Ttl> moka::Expiry<K, V> for TtlExpiry {
    fn expire_after_create(&self, _: &K, value: &V, _: std::time::Instant) -> Option<Duration> {
        Some(value.ttl())
    }
}

impl PullThrough {
    /// What `tag` pointed at when last confirmed with the upstream.
    async fn last_known(&self, target: &Target, tag: &Tag) -> Result<Option<Digest>, PullError> {
        let key = TagKey::new(&target.upstream.config().name, &target.repo, tag);
        let (upstream, remote, tag) = (target.upstream.config().name.clone(), target.repo.to_string(), tag.to_string());
        match self.metadata.run(move |s| s.upstream_tag(&upstream, &remote, &tag)).await {
            Ok(known) => {
                self.known_tags.insert(key, known.clone());
                Ok(known)
            }
            Err(MetadataError::Unavailable(e)) => {
                let known = self.known_tags.get(&key).flatten();
                if known.is_some() {
                    tracing::warn!(repository = %target.repo, error = %e, "metadata database unavailable; serving the tag this node last knew");
                }
                Ok(known)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Remembers what `tag` points at now, durably before the client gets
    /// its answer, so the tag can be served after a crash while the upstream
    /// is down. Written only when the tag is new or moved.
    /// Never fails the request: the memory of a tag is only a fallback
    /// for when the upstream is down, so a write that fails (a full disk)
    /// is logged and the answer served all the same.
    async fn remember(&self, target: &Target, tag: &Tag, digest: Option<Digest>) -> Result<(), PullError> {
        self.known_tags.insert(TagKey::new(&target.upstream.config().name, &target.repo, tag), digest.clone());
        let (upstream, remote, tag) = (target.upstream.config().name.clone(), target.repo.to_string(), tag.to_string());
        let (name, t) = (remote.clone(), tag.clone());
        if let Err(e) = self.metadata.run(move |s| s.set_upstream_tag(&upstream, &remote, &tag, digest.as_ref())).await {
            tracing::error!(repository = %name, tag = %t, error = %e, "cannot remember what an upstream tag points at");
        }
        Ok(())
    }

    pub(super) async fn resolve_tag(&self, target: &Target, tag: &Tag, lookup: &Lookup) -> Result<Digest, PullError> {
        let key = TagKey::new(&target.upstream.config().name, &target.repo, tag);
        // A fresh tag, the common case, builds no revalidation: that future
        // is large, and every request would otherwise carry and copy its
        // space (boxed, it is allocated only when needed).
        let entry = match self.tags.get(&key).await {
            Some(entry) => entry,
            None => Box::pin(self.revalidated_tag(key, target, tag, lookup)).await?,
        };
        if entry.stale {
            lookup.stale.store(true, Ordering::Relaxed);
        }
        Ok(entry.digest)
    }

    /// The tag's entry after a revalidation, this request's or (coalesced)
    /// another's.
    async fn revalidated_tag(&self, key: TagKey, target: &Target, tag: &Tag, lookup: &Lookup) -> Result<TagEntry, PullError> {
        let known = self.tags.contains_key(&key);
        let entry = self
            .tags
            .entry(key)
            .or_try_insert_with(self.revalidate_tag(target, tag, lookup))
            .await
            .map_err(|e| (*e).clone())?;
        if !entry.is_fresh() && !known {
            // Absent when asked, yet not inserted by this call: another
            // request's revalidation answered.
            lookup.joined.store(true, Ordering::Relaxed);
        }
        Ok(entry.into_value())
    }

    /// Asks the upstream what `tag` points at now; runs at most once at a
    /// time per tag (concurrent requests wait for this answer).
    async fn revalidate_tag(&self, target: &Target, tag: &Tag, lookup: &Lookup) -> Result<TagEntry, PullError> {
        let cfg = target.upstream.config();
        let recorded = self.last_known(target, tag).await?;
        if recorded.is_none() {
            lookup.fetched.store(true, Ordering::Relaxed);
        }
        let reference = Reference::Tag(tag.clone());
        // A tag never seen here names a manifest that is almost never here
        // either: one GET answers what a HEAD and then a GET by digest
        // would, a round trip sooner. A known tag is revalidated with a
        // HEAD, which costs no bytes when it has not moved.
        let answer = if recorded.is_none() {
            let max = self.max_manifest_size;
            target.upstream.get_manifest(&target.repo, &reference, max).await.map(TagAnswer::Fetched)
        } else {
            target.upstream.head_manifest(&target.repo, &reference).await.map(TagAnswer::Head)
        };
        let digest = match answer {
            Ok(TagAnswer::Fetched(fetched)) => self.keep_fetched_manifest(target, fetched).await?,
            Ok(TagAnswer::Head(head)) => match head.digest {
                Some(d) => {
                    self.manifest_with(target, &d, lookup).await?;
                    d
                }
                // The upstream did not name the digest: fetch by tag.
                None => self.fetch_manifest_by_tag(target, tag).await?,
            },
            Err(UpstreamError::NotFound) => {
                if recorded.is_some() {
                    self.remember(target, tag, None).await?;
                    self.recorder.tag_removed(&self.origin(target), tag.as_str()).await;
                }
                return Err(PullError::ManifestUnknown);
            }
            Err(e) if is_unavailable(&e) => match recorded {
                Some(digest) if self.storage.stat(&digest).await?.is_some() => {
                    tracing::warn!(upstream = %cfg.name, repository = %target.repo, %tag, error = %e,
                        "upstream unavailable; serving the last known manifest for the tag");
                    return Ok(TagEntry { digest, ttl: cfg.tag_ttl.min(STALE_RECHECK), stale: true });
                }
                _ => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        };
        if recorded.as_ref() != Some(&digest) {
            self.remember(target, tag, Some(digest.clone())).await?;
        }
        Ok(TagEntry { digest, ttl: cfg.tag_ttl, stale: false })
    }

    /// Fetches and stores the manifest `tag` names, for an upstream that
    /// does not say the digest on a HEAD; its digest.
    pub(crate) async fn fetch_manifest_by_tag(&self, target: &Target, tag: &Tag) -> Result<Digest, PullError> {
        let fetched = target
            .upstream
            .get_manifest(&target.repo, &Reference::Tag(tag.clone()), self.max_manifest_size)
            .await
            .map_err(PullError::from_manifest_fetch)?;
        self.keep_fetched_manifest(target, fetched).await
    }

    /// Tags of a repository, sorted and paginated here (upstreams differ:
    /// the reference registry ignores `n` and `last` and does not sort).
    /// The upstream's whole list is cached for `tag_ttl`, so paging through
    /// it costs one upstream listing; when the upstream is unavailable the
    /// locally known tags are listed.
    pub(crate) async fn tags(&self, target: &Target, n: Option<usize>, last: Option<&str>) -> Result<TagsPage, PullError> {
        let cfg = target.upstream.config();
        let key = (cfg.name.clone(), target.repo.clone());
        let listed = self
            .tag_lists
            .entry(key)
            .or_try_insert_with(self.list_all_tags(target))
            .await
            .map_err(|e| (*e).clone())?;
        Ok(paginate(&listed.into_value().tags, n, last))
    }

    async fn list_all_tags(&self, target: &Target) -> Result<TagList, PullError> {
        let cfg = target.upstream.config();
        match target.upstream.all_tags(&target.repo, MAX_TAG_PAGES).await {
            Ok(all) => Ok(TagList { tags: Arc::new(all), ttl: cfg.tag_ttl }),
            Err(UpstreamError::NotFound) => Err(PullError::Route(RouteError::NoUpstream(target.repo.to_string()))),
            Err(e) if is_unavailable(&e) => {
                tracing::warn!(upstream = %cfg.name, repository = %target.repo, error = %e,
                    "upstream unavailable; listing the locally known tags");
                let repository = recorder::repository_name(&self.origin(target));
                let known = match self.metadata.run(move |s| s.tag_names(&repository, None)).await {
                    Ok(names) => names,
                    Err(MetadataError::NotFound(_)) => Vec::new(),
                    Err(e) => return Err(e.into()),
                };
                Ok(TagList { tags: Arc::new(known), ttl: cfg.tag_ttl.min(STALE_RECHECK) })
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Pagination as the spec describes: of the lexically sorted `all`, the
/// entries after `last`, at most `n`.
pub(crate) fn paginate(all: &[String], n: Option<usize>, last: Option<&str>) -> TagsPage {
    let start = last.map_or(0, |l| all.partition_point(|t| t.as_str() <= l));
    let rest = &all[start..];
    let take = n.unwrap_or(rest.len()).min(rest.len());
    TagsPage { tags: rest[..take].to_vec(), has_more: take < rest.len() }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn pagination_follows_last_and_n() {
        let all = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let p = paginate(&all, Some(2), None);
        assert_eq!((p.tags, p.has_more), (vec!["a".to_owned(), "b".to_owned()], true));
        let p = paginate(&all, Some(2), Some("b"));
        assert_eq!((p.tags, p.has_more), (vec!["c".to_owned()], false));
        let p = paginate(&all, Some(2), Some("a0"));
        assert_eq!((p.tags, p.has_more), (vec!["b".to_owned(), "c".to_owned()], false));
        let p = paginate(&all, None, Some("zz"));
        assert!(p.tags.is_empty() && !p.has_more);
        assert_eq!(paginate(&all, Some(0), None).tags.len(), 0);
    }

    #[test]
    fn tag_keys_differ_whenever_their_parts_do() {
        let key = |up: &str, repo: &str, tag: &str| TagKey::new(up, &repo.parse().unwrap(), &tag.parse().unwrap());
        let base = key("hub", "library/alpine", "3.20");
        assert!(base == key("hub", "library/alpine", "3.20"));
        for other in [
            key("hub2", "library/alpine", "3.20"),
            key("hub", "library/alpin", "3.20"),
            key("hub", "library/alpine", "3.2"),
            key("hub", "library/alpine.3", "20"),
            key("hu", "b/library/alpine", "3.20"),
        ] {
            assert!(base != other);
        }
    }
}
