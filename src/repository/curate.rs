//! Curation as the admin API asks for it: copying tags (chosen by glob) or
//! manifests (by digest) from a repository version into a sync or push
//! repository, removing tags and manifests, and reverting a repository to
//! one of its older versions. Checks what it is given (names, globs,
//! digests, tags) and leaves the rest to the metadata store, one
//! transaction and at most one new version each. Never sees HTTP or SQL.
//!
//! Copies move metadata only: blobs and manifests are shared by digest,
//! so the destination serves the bytes wharf already stores.

use crate::metadata::{Metadata, MetadataError};
use crate::oci::{Digest, RepositoryName, Tag};
use crate::sync::filter::TagGlob;

/// What a copy takes from its source version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CopySelection {
    /// The tags matching any of these globs (`*`, `?`); every tag when
    /// there are none.
    Tags(Vec<String>),
    /// These manifests, by digest; at least one.
    Manifests(Vec<String>),
}

/// The curation service. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Curation {
    metadata: Metadata,
}

fn repository_name(name: &str, what: &str) -> Result<String, MetadataError> {
    let parsed: RepositoryName =
        name.parse().map_err(|e| MetadataError::Invalid(format!("{what} {name:?} is not a valid repository name: {e}")))?;
    Ok(parsed.to_string())
}

fn digests(list: &[String], what: &str) -> Result<Vec<Digest>, MetadataError> {
    list.iter()
        .map(|d| d.parse().map_err(|e| MetadataError::Invalid(format!("{what}: {d:?} is not a valid digest: {e}"))))
        .collect()
}

fn globs(list: &[String]) -> Result<Vec<TagGlob>, MetadataError> {
    list.iter().map(|g| g.parse().map_err(|e| MetadataError::Invalid(format!("tags: {e}")))).collect()
}

impl Curation {
    pub(crate) fn new(metadata: Metadata) -> Curation {
        Curation { metadata }
    }

    /// Copies from `source` (its version `source_version`, None: the
    /// latest) into `dest`: the new version of `dest`, or None when it
    /// already held everything chosen.
    pub(crate) async fn copy(
        &self,
        dest: &str,
        source: &str,
        source_version: Option<u64>,
        selection: CopySelection,
    ) -> Result<Option<u64>, MetadataError> {
        let dest = repository_name(dest, "repository")?;
        let source = repository_name(source, "source")?;
        match selection {
            CopySelection::Tags(patterns) => {
                let globs = globs(&patterns)?;
                self.metadata
                    .run(move |s| {
                        let select = |tag: &str| globs.is_empty() || globs.iter().any(|g| g.matches(tag));
                        s.copy_tags(&source, source_version, &dest, &select)
                    })
                    .await
            }
            CopySelection::Manifests(list) => {
                if list.is_empty() {
                    return Err(MetadataError::Invalid("manifests: name at least one manifest digest".into()));
                }
                let digests = digests(&list, "manifests")?;
                self.metadata.run(move |s| s.copy_manifests(&source, source_version, &dest, &digests)).await
            }
        }
    }

    /// Removes tags, and manifests with their tags and whatever of theirs
    /// nothing else in the repository needs.
    pub(crate) async fn remove(
        &self,
        repository: &str,
        tags: Vec<String>,
        manifests: Vec<String>,
    ) -> Result<Option<u64>, MetadataError> {
        let repository = repository_name(repository, "repository")?;
        if tags.is_empty() && manifests.is_empty() {
            return Err(MetadataError::Invalid("nothing to remove: name at least one tag or manifest".into()));
        }
        for tag in &tags {
            tag.parse::<Tag>().map_err(|e| MetadataError::Invalid(format!("tags: {e}")))?;
        }
        let manifests = digests(&manifests, "manifests")?;
        self.metadata.run(move |s| s.remove_content(&repository, &tags, &manifests)).await
    }

    /// Makes `version`'s content the repository's latest again, as a new
    /// version (None if the latest already holds exactly that).
    pub(crate) async fn revert(&self, repository: &str, version: u64) -> Result<Option<u64>, MetadataError> {
        let repository = repository_name(repository, "repository")?;
        self.metadata.run(move |s| s.revert(&repository, version)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn curation() -> (tempfile::TempDir, Curation) {
        let dir = tempfile::tempdir().unwrap();
        let metadata = Metadata::open(dir.path()).await.unwrap();
        (dir, Curation::new(metadata))
    }

    fn invalid(r: Result<Option<u64>, MetadataError>) -> String {
        match r {
            Err(MetadataError::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn bad_input_is_refused_before_the_store_is_asked() {
        let (_d, c) = curation().await;
        let tags = |g: &[&str]| CopySelection::Tags(g.iter().map(|s| (*s).to_owned()).collect());
        assert!(invalid(c.copy("team/dest", "team/src", None, tags(&["v1/*"])).await).starts_with("tags: tag pattern"));
        assert!(invalid(c.copy("team/dest", "team/src", None, tags(&[""])).await).contains("empty"));
        let e = invalid(c.copy("team/dest", "team/src", None, CopySelection::Manifests(vec![])).await);
        assert!(e.contains("at least one manifest"), "{e}");
        let e = invalid(c.copy("team/dest", "team/src", None, CopySelection::Manifests(vec!["sha256:xyz".into()])).await);
        assert!(e.starts_with("manifests: \"sha256:xyz\" is not a valid digest"), "{e}");
        assert!(invalid(c.copy("team/dest", "Team/Src", None, tags(&[])).await).starts_with("source \"Team/Src\""));
        assert!(invalid(c.copy("team//dest", "team/src", None, tags(&[])).await).starts_with("repository \"team//dest\""));
        assert!(invalid(c.remove("team/app", vec![], vec![]).await).starts_with("nothing to remove"));
        assert!(invalid(c.remove("team/app", vec!["no tag".into()], vec![]).await).starts_with("tags: "));
        assert!(invalid(c.remove("team/app", vec![], vec!["sha256:1".into()]).await).starts_with("manifests: "));
        assert!(invalid(c.revert("../etc", 1).await).starts_with("repository"));
    }

    fn manifest(seed: &str) -> crate::metadata::ManifestFacts {
        crate::metadata::ManifestFacts {
            digest: Digest::of(crate::oci::Algorithm::Sha256, seed.as_bytes()),
            media_type: crate::oci::media::OCI_MANIFEST.into(),
            size: 10,
            artifact_type: None,
            subject: None,
            config: None,
            layers: Vec::new(),
            children: Vec::new(),
            annotations: None,
        }
    }

    #[tokio::test]
    async fn globs_choose_the_tags_copied_and_no_glob_chooses_every_tag() {
        let (_d, c) = curation().await;
        c.metadata
            .run(|s| {
                for name in ["team/src", "team/some", "team/every"] {
                    s.create_push_repository(name, &name.replace('/', "."))?;
                }
                for (seed, tag) in [("a", "v1.0"), ("b", "v1.10"), ("c", "v10"), ("d", "latest")] {
                    let change = crate::metadata::PushChange::Manifest { facts: manifest(seed), tag: Some(tag.into()) };
                    s.push("team/src", &change)?;
                }
                Ok(())
            })
            .await
            .unwrap();
        let globs = CopySelection::Tags(vec!["v1.?".into(), "late*".into()]);
        assert_eq!(c.copy("team/some", "team/src", None, globs).await.unwrap(), Some(1));
        assert_eq!(c.copy("team/every", "team/src", None, CopySelection::Tags(vec![])).await.unwrap(), Some(1));
        let names = |repo: &'static str| c.metadata.run(move |s| s.tag_names(repo, None));
        assert_eq!(names("team/some").await.unwrap(), ["latest", "v1.0"]);
        assert_eq!(names("team/every").await.unwrap(), ["latest", "v1.0", "v1.10", "v10"]);
    }

    #[tokio::test]
    async fn well_formed_requests_reach_the_store() {
        let (_d, c) = curation().await;
        // The store answers: neither repository exists.
        for r in [
            c.copy("team/dest", "team/src", None, CopySelection::Tags(vec!["v1.*".into()])).await,
            c.copy("team/dest", "team/src", Some(2), CopySelection::Manifests(vec![format!("sha256:{}", "a".repeat(64))])).await,
            c.remove("team/app", vec!["1.0".into()], vec![]).await,
            c.revert("team/app", 1).await,
        ] {
            assert!(matches!(&r, Err(MetadataError::NotFound(m)) if m.contains("does not exist")), "{r:?}");
        }
    }
}
