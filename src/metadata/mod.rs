//! Metadata about cached content: which repositories exist per upstream and
//! what each cached tag pointed at when last seen. Knows nothing of blobs'
//! bytes, HTTP or upstreams.
//!
//! Kept as small JSON files under `storage.path/meta` behind this narrow
//! interface; the repository-version store replaces the backend, not the
//! callers.
//!
//! ```text
//! meta/repositories/<upstream>/<repo...>/_tags/<tag>.json   TagRecord
//! meta/repositories/<upstream>/<repo...>/_seen              marker: content cached
//! ```
//! Repository components never start with `_` (name grammar), so the
//! markers cannot collide with a repository path.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::oci::{Digest, RepositoryName, Tag};

#[derive(Debug, Clone, thiserror::Error)]
#[error("metadata I/O error: {0}")]
pub(crate) struct MetadataError(String);

impl From<std::io::Error> for MetadataError {
    fn from(e: std::io::Error) -> Self {
        MetadataError(e.to_string())
    }
}

/// What a tag resolved to when last confirmed with the upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TagRecord {
    pub(crate) digest: Digest,
}

#[derive(Clone)]
pub(crate) struct Metadata {
    inner: Arc<Inner>,
}

struct Inner {
    repos: PathBuf,
    tmp: PathBuf,
    next_tmp: AtomicU64,
}

impl Metadata {
    pub(crate) async fn open(storage_root: &Path) -> Result<Metadata, MetadataError> {
        let root = storage_root.join("meta");
        let repos = root.join("repositories");
        let tmp = root.join("tmp");
        tokio::fs::create_dir_all(&repos).await?;
        if tokio::fs::try_exists(&tmp).await? {
            tokio::fs::remove_dir_all(&tmp).await?;
        }
        tokio::fs::create_dir_all(&tmp).await?;
        Ok(Metadata { inner: Arc::new(Inner { repos, tmp, next_tmp: AtomicU64::new(0) }) })
    }

    fn repo_dir(&self, upstream: &str, repo: &RepositoryName) -> PathBuf {
        // Both parts are validated names: safe path components.
        let mut dir = self.inner.repos.join(upstream);
        for c in repo.components() {
            dir.push(c);
        }
        dir
    }

    /// Writes via a temp file and rename so a crash never leaves a torn record.
    async fn write_atomic(&self, path: &Path, bytes: Vec<u8>) -> Result<(), MetadataError> {
        let n = self.inner.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = self.inner.tmp.join(format!("{}-{n}", std::process::id()));
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::write(&tmp, bytes).await?;
        tokio::fs::rename(&tmp, path).await?;
        Ok(())
    }

    pub(crate) async fn tag(
        &self,
        upstream: &str,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<TagRecord>, MetadataError> {
        let path = self.repo_dir(upstream, repo).join("_tags").join(format!("{tag}.json"));
        match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| MetadataError(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn put_tag(
        &self,
        upstream: &str,
        repo: &RepositoryName,
        tag: &Tag,
        record: &TagRecord,
    ) -> Result<(), MetadataError> {
        let dir = self.repo_dir(upstream, repo);
        let bytes = serde_json::to_vec(record).map_err(|e| MetadataError(e.to_string()))?;
        self.write_atomic(&dir.join("_tags").join(format!("{tag}.json")), bytes).await?;
        self.mark_seen(&dir).await
    }

    pub(crate) async fn remove_tag(&self, upstream: &str, repo: &RepositoryName, tag: &Tag) -> Result<(), MetadataError> {
        let path = self.repo_dir(upstream, repo).join("_tags").join(format!("{tag}.json"));
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Records that `repo` has cached content (for the catalog).
    pub(crate) async fn note_repository(&self, upstream: &str, repo: &RepositoryName) -> Result<(), MetadataError> {
        self.mark_seen(&self.repo_dir(upstream, repo)).await
    }

    async fn mark_seen(&self, dir: &Path) -> Result<(), MetadataError> {
        let marker = dir.join("_seen");
        if tokio::fs::try_exists(&marker).await? {
            return Ok(());
        }
        self.write_atomic(&marker, Vec::new()).await
    }

    /// Tags recorded for `repo`, sorted.
    pub(crate) async fn tags(&self, upstream: &str, repo: &RepositoryName) -> Result<Vec<String>, MetadataError> {
        let dir = self.repo_dir(upstream, repo).join("_tags");
        let mut out = Vec::new();
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        while let Some(entry) = entries.next_entry().await? {
            if let Some(tag) = entry.file_name().to_str().and_then(|n| n.strip_suffix(".json")) {
                out.push(tag.to_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every repository with cached content, as `<upstream>/<repo>`, sorted.
    pub(crate) async fn repositories(&self) -> Result<Vec<String>, MetadataError> {
        let root = self.inner.repos.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &root, &mut out)?;
            out.sort();
            Ok(out)
        })
        .await
        .map_err(|e| MetadataError(e.to_string()))?
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), MetadataError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == "_seen" {
            // The upstream directory itself holds no repository.
            if let Ok(rel) = dir.strip_prefix(root) {
                if rel.components().count() >= 2 {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        } else if !name.starts_with('_') && entry.file_type()?.is_dir() {
            walk(root, &entry.path(), out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tags_and_repositories_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metadata::open(dir.path()).await.unwrap();
        let repo: RepositoryName = "library/alpine".parse().unwrap();
        let tag: Tag = "3.20".parse().unwrap();
        let rec = TagRecord { digest: crate::oci::Digest::of(crate::oci::Algorithm::Sha256, b"m") };
        assert_eq!(m.tag("docker.io", &repo, &tag).await.unwrap(), None);
        m.put_tag("docker.io", &repo, &tag, &rec).await.unwrap();
        m.note_repository("quay", &"org/a/b".parse().unwrap()).await.unwrap();

        let m = Metadata::open(dir.path()).await.unwrap();
        assert_eq!(m.tag("docker.io", &repo, &tag).await.unwrap(), Some(rec));
        assert_eq!(m.tags("docker.io", &repo).await.unwrap(), vec!["3.20"]);
        assert_eq!(m.repositories().await.unwrap(), vec!["docker.io/library/alpine", "quay/org/a/b"]);
        m.remove_tag("docker.io", &repo, &tag).await.unwrap();
        assert!(m.tags("docker.io", &repo).await.unwrap().is_empty());
    }
}
