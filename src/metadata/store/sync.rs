//! Sync repositories: creating and changing them, applying a sync's result
//! (one version at most), and where on-demand blobs can be fetched.

use std::collections::{HashMap, HashSet};

use super::content::{self, add_manifest, id_by_digest, set_tag};
use super::repositories::{self, RepoRow, REPO_COLUMNS};
use super::{i64_of, versions, PRESENT};
use crate::metadata::db::{args, named, Db};
use crate::metadata::{
    now_millis, ContentType, MetadataError, Millis, NewRepository, Repository, RepositoryKind, RepositoryPatch,
    SyncContent, SyncMode,
};
use crate::oci::Digest;

pub(super) fn create_repository(db: &Db<'_>, new: &NewRepository) -> Result<Repository, MetadataError> {
    if let Some(existing) = repositories::row(db, &new.name)? {
        return Err(MetadataError::Conflict(format!(
            "repository {:?} exists (a {} repository)",
            new.name,
            existing.repo.kind.as_str()
        )));
    }
    let now = now_millis();
    let id: i64 = db.query_one(
        "INSERT INTO repositories (name, kind, retain_versions, latest_version, created_at, description, remote,
                                   sync_mirror, sync_interval, next_sync_at)
         VALUES (?1, 'sync', ?2, 0, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
        args![
            new.name,
            new.retain_versions.map(i64::from),
            now,
            new.description,
            new.remote,
            new.sync_mirror,
            new.sync_interval.map(i64_of),
            new.next_sync_at,
        ],
    )?;
    db.execute("INSERT INTO repository_versions (repository_id, number, created_at) VALUES (?1, 0, ?2)", args![id, now])?;
    Ok(repositories::require(db, &new.name)?.repo)
}

/// The sync repository `name`; other kinds are a `Conflict` naming `what`
/// was refused.
fn sync_repository(db: &Db<'_>, name: &str, what: &str) -> Result<RepoRow, MetadataError> {
    let row = repositories::require(db, name)?;
    if row.repo.kind != RepositoryKind::Sync {
        return Err(MetadataError::Conflict(format!(
            "repository {name:?} is a {} repository; only sync repositories {what}",
            row.repo.kind.as_str()
        )));
    }
    Ok(row)
}

pub(super) fn update_repository(db: &Db<'_>, name: &str, patch: &RepositoryPatch) -> Result<Repository, MetadataError> {
    let row = sync_repository(db, name, "are changed through the API")?;
    let mut r = row.repo;
    if let Some(v) = &patch.description {
        r.description.clone_from(v);
    }
    if let Some(v) = patch.retain_versions {
        r.retain_versions = v;
    }
    if let Some(v) = &patch.remote {
        r.remote.clone_from(v);
    }
    if let Some(v) = patch.sync_mirror {
        r.sync_mirror = v;
    }
    if let Some(v) = patch.sync_interval {
        r.sync_interval = v;
    }
    if let Some(v) = patch.next_sync_at {
        r.next_sync_at = v;
    }
    db.execute(
        "UPDATE repositories SET description = ?2, retain_versions = ?3, remote = ?4, sync_mirror = ?5,
                                 sync_interval = ?6, next_sync_at = ?7
         WHERE id = ?1",
        args![
            row.id,
            r.description,
            r.retain_versions.map(i64::from),
            r.remote,
            r.sync_mirror,
            r.sync_interval.map(i64_of),
            r.next_sync_at,
        ],
    )?;
    Ok(r)
}

pub(super) fn delete_repository(db: &Db<'_>, name: &str) -> Result<(), MetadataError> {
    let row = repositories::require(db, name)?;
    if row.repo.kind == RepositoryKind::PullThrough {
        return Err(MetadataError::Conflict(format!(
            "repository {name:?} is recorded by the pull-through cache and cannot be deleted"
        )));
    }
    let served: Option<String> =
        db.query_opt("SELECT name FROM distributions WHERE repository_id = ?1 LIMIT 1", args![row.id], |r| r.get(0))?;
    if let Some(d) = served {
        return Err(MetadataError::Conflict(format!(
            "repository {name:?} is served by distribution {d:?}; delete or repoint it first"
        )));
    }
    db.execute("DELETE FROM repositories WHERE id = ?1", args![row.id])?;
    Ok(())
}

pub(super) fn due_syncs(db: &Db<'_>, now: Millis) -> Result<Vec<Repository>, MetadataError> {
    let rows = db.query_vec(
        &format!(
            "SELECT {REPO_COLUMNS} FROM repositories
             WHERE kind = 'sync' AND sync_interval IS NOT NULL AND next_sync_at IS NOT NULL AND next_sync_at <= ?1
             ORDER BY next_sync_at"
        ),
        args![now],
        repositories::from_row,
    )?;
    rows.into_iter().map(|r| r.map(|r| r.repo)).collect()
}

pub(super) fn apply_sync(
    db: &Db<'_>,
    name: &str,
    remote: &str,
    content: &SyncContent,
    mode: SyncMode<'_>,
) -> Result<Option<u64>, MetadataError> {
    let mut repo = sync_repository(db, name, "are synced")?;
    let mirror = matches!(mode, SyncMode::Mirror { .. });
    let v = apply_content(db, &repo, content, mode, "the sync did not fetch")?;
    db.execute(
        "UPDATE repositories SET remote = coalesce(remote, ?2), mirrored = CASE WHEN ?3 = 1 THEN 1 ELSE mirrored END
         WHERE id = ?1",
        args![repo.id, remote, mirror],
    )?;
    versions::close(db, &mut repo, v)
}

/// Writes `content` into the next version of `repo` (which the caller
/// closes): its manifests, tags and signatures added, and in mirror mode
/// whatever it does not hold removed. A tag or signature naming a
/// manifest `content` lacks is refused (`missing` says why it lacks it).
/// The version's number.
pub(super) fn apply_content(
    db: &Db<'_>,
    repo: &RepoRow,
    content: &SyncContent,
    mode: SyncMode<'_>,
    missing: &str,
) -> Result<i64, MetadataError> {
    let v = i64_of(repo.repo.latest_version) + 1;
    for facts in &content.manifests {
        add_manifest(db, repo.id, facts, None, v)?;
    }
    let synced: HashSet<&Digest> = content.manifests.iter().map(|m| &m.digest).collect();
    for (tag, digest) in &content.tags {
        let manifest = match id_by_digest(db, "manifests", digest)? {
            Some(id) if synced.contains(digest) => id,
            _ => return Err(MetadataError::Invalid(format!("tag {tag:?} names manifest {digest}, which {missing}"))),
        };
        set_tag(db, repo.id, tag, manifest, v)?;
    }
    for s in &content.signatures {
        if !synced.contains(&s.manifest) {
            return Err(MetadataError::Invalid(format!("a signature names manifest {}, which {missing}", s.manifest)));
        }
    }
    super::signatures::add(db, repo.id, &content.signatures, v)?;
    if let SyncMode::Mirror { in_scope } = mode {
        let synced_tags: HashSet<&str> = content.tags.iter().map(|(t, _)| t.as_str()).collect();
        let synced: HashSet<String> = content.manifests.iter().map(|m| m.digest.to_string()).collect();
        prune(db, repo.id, v, &synced, &synced_tags, in_scope)?;
        super::signatures::drop_orphans(db, repo.id, v)?;
        if content.signatures_listed {
            super::signatures::drop_unlisted(db, repo.id, v, &content.manifests, &content.signatures)?;
        }
    }
    Ok(v)
}

/// Mirror mode: removes the in-scope tags the sync did not bring, then
/// every manifest that nothing kept reaches (a kept tag, a synced
/// manifest, an index listing it, or a kept manifest it is a referrer of),
/// then every blob no kept manifest references.
fn prune(
    db: &Db<'_>,
    repo: i64,
    v: i64,
    synced: &HashSet<String>,
    synced_tags: &HashSet<&str>,
    in_scope: &dyn Fn(&str) -> bool,
) -> Result<(), MetadataError> {
    let tags: Vec<(i64, String, String)> = db.query_vec(
        &format!(
            "SELECT t.id, t.name, m.digest FROM repository_content rc JOIN tags t ON t.id = rc.content_id
             JOIN manifests m ON m.id = t.manifest_id
             WHERE rc.repository_id = :repo AND rc.content_type = 'tag' AND {PRESENT}"
        ),
        named! {":repo": repo, ":v": v},
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let mut kept: HashSet<String> = synced.clone();
    for (id, name, digest) in tags {
        if in_scope(&name) && !synced_tags.contains(name.as_str()) {
            content::remove(db, repo, ContentType::Tag, id, v)?;
        } else {
            kept.insert(digest);
        }
    }
    // Every manifest present: its id, subject, and what it references.
    struct Held {
        id: i64,
        subject: Option<String>,
        children: Vec<String>,
        blobs: Vec<String>,
    }
    let mut held: HashMap<String, Held> = HashMap::new();
    db.for_each(
        &format!(
            "SELECT m.id, m.digest, m.subject FROM repository_content rc JOIN manifests m ON m.id = rc.content_id
             WHERE rc.repository_id = :repo AND rc.content_type = 'manifest' AND {PRESENT}"
        ),
        named! {":repo": repo, ":v": v},
        |r| {
            let digest: String = r.get(1)?;
            held.insert(digest, Held { id: r.get(0)?, subject: r.get(2)?, children: Vec::new(), blobs: Vec::new() });
            Ok(())
        },
    )?;
    for h in held.values_mut() {
        db.for_each("SELECT kind, digest FROM manifest_references WHERE manifest_id = ?1", args![h.id], |r| {
            let (kind, digest): (String, String) = (r.get(0)?, r.get(1)?);
            if kind == "manifest" {
                h.children.push(digest);
            } else {
                h.blobs.push(digest);
            }
            Ok(())
        })?;
    }
    // Reachability to a fixed point: children of kept manifests, and
    // manifests whose subject is kept (signatures, attestations).
    let mut work: Vec<String> = kept.iter().cloned().collect();
    loop {
        while let Some(d) = work.pop() {
            if let Some(h) = held.get(&d) {
                for c in &h.children {
                    if kept.insert(c.clone()) {
                        work.push(c.clone());
                    }
                }
            }
        }
        let referrers: Vec<String> = held
            .iter()
            .filter(|(d, h)| !kept.contains(*d) && h.subject.as_ref().is_some_and(|s| kept.contains(s)))
            .map(|(d, _)| d.clone())
            .collect();
        if referrers.is_empty() {
            break;
        }
        for d in referrers {
            kept.insert(d.clone());
            work.push(d);
        }
    }
    let mut kept_blobs: HashSet<&str> = HashSet::new();
    for (d, h) in &held {
        if kept.contains(d) {
            kept_blobs.extend(h.blobs.iter().map(String::as_str));
        } else {
            content::remove(db, repo, ContentType::Manifest, h.id, v)?;
        }
    }
    let blobs: Vec<(i64, String)> = db.query_vec(
        &format!(
            "SELECT b.id, b.digest FROM repository_content rc JOIN blobs b ON b.id = rc.content_id
             WHERE rc.repository_id = :repo AND rc.content_type = 'blob' AND {PRESENT}"
        ),
        named! {":repo": repo, ":v": v},
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    for (id, digest) in blobs {
        if !kept_blobs.contains(digest.as_str()) {
            content::remove(db, repo, ContentType::Blob, id, v)?;
        }
    }
    Ok(())
}

/// One statement: only the first node to see the due run moves it on.
pub(super) fn claim_schedule(db: &Db<'_>, repository: &str, seen: Millis, next: Millis) -> Result<bool, MetadataError> {
    let moved = db.execute(
        "UPDATE repositories SET next_sync_at = ?3 WHERE name = ?1 AND kind = 'sync' AND next_sync_at = ?2",
        args![repository, seen, next],
    )?;
    Ok(moved == 1)
}

pub(super) fn add_blob_sources(db: &Db<'_>, digests: &[Digest], remote: &str, remote_name: &str) -> Result<(), MetadataError> {
    for d in digests {
        db.execute(
            "INSERT INTO blob_sources (digest, remote, remote_name) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            args![d.to_string(), remote, remote_name],
        )?;
    }
    Ok(())
}

pub(super) fn blob_sources(db: &Db<'_>, digest: &Digest) -> Result<Vec<(String, String)>, MetadataError> {
    db.query_vec(
        "SELECT remote, remote_name FROM blob_sources WHERE digest = ?1 ORDER BY remote",
        args![digest.to_string()],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::{counts, image, open, sync_repository};
    use super::super::SqlStore;
    use crate::metadata::{ContentFilter, ManifestFacts, NewRepository, PageRequest, Store, SyncContent, SyncMode};
    use crate::oci::Digest;

    fn content(manifests: &[&ManifestFacts], tags: &[(&str, &ManifestFacts)]) -> SyncContent {
        SyncContent {
            signatures: Vec::new(),
            signatures_listed: false,
            manifests: manifests.iter().map(|m| (*m).clone()).collect(),
            tags: tags.iter().map(|(t, m)| ((*t).to_owned(), m.digest.clone())).collect(),
        }
    }

    fn tags(s: &SqlStore, v: Option<u64>) -> Vec<(String, Digest)> {
        let page = PageRequest { limit: 1000, offset: 0 };
        let listed = s.tags("foo", v, &ContentFilter::default(), page).unwrap();
        listed.items.into_iter().map(|t| (t.name, t.digest)).collect()
    }

    fn manifests(s: &SqlStore, v: Option<u64>) -> Vec<Digest> {
        let page = PageRequest { limit: 1000, offset: 0 };
        s.manifests("foo", v, &ContentFilter::default(), page).unwrap().items.into_iter().map(|m| m.facts.digest).collect()
    }

    #[test]
    fn an_additive_sync_adds_once_and_a_repeat_makes_no_version() {
        let (_d, s) = open();
        sync_repository(&s, "foo");
        let (a, b) = (image("a", &["l1", "l2"]), image("b", &["l2", "l3"]));
        let c = content(&[&a, &b], &[("1.0", &a), ("2.0", &b)]);
        assert_eq!(s.sync("foo", "r", &c, SyncMode::Additive).unwrap(), Some(1));
        let v1 = s.version("foo", Some(1)).unwrap();
        assert_eq!(v1.summary.added, counts(2, 2, 5), "two configs and three distinct layers");
        assert_eq!(s.sync("foo", "r", &c, SyncMode::Additive).unwrap(), None, "nothing changed, no version");
        let repo = s.repository("foo").unwrap().unwrap();
        assert_eq!((repo.remote.as_deref(), repo.mirrored), (Some("r"), false));
    }

    #[test]
    fn a_mirror_sync_removes_what_the_remote_dropped_within_its_scope_only() {
        let (_d, s) = open();
        sync_repository(&s, "foo");
        let (a, b, c) = (image("a", &["l1"]), image("b", &["l2"]), image("c", &["l3"]));
        // A signature of `a` (by subject) comes along with it.
        let mut sig = image("sig-a", &["s1"]);
        sig.subject = Some(a.digest.clone());
        let first = content(&[&a, &b, &c, &sig], &[("v1", &a), ("v2", &b), ("latest", &c)]);
        assert_eq!(s.sync("foo", "r", &first, SyncMode::Additive).unwrap(), Some(1));

        // Upstream dropped v2; the filter covers v* only, so `latest` stays.
        let second = content(&[&a, &sig], &[("v1", &a)]);
        let in_scope = |t: &str| t.starts_with('v');
        assert_eq!(s.sync("foo", "r", &second, SyncMode::Mirror { in_scope: &in_scope }).unwrap(), Some(2));
        let held: Vec<String> = tags(&s, None).into_iter().map(|(t, _)| t).collect();
        assert_eq!(held, ["latest", "v1"]);
        let mut want = vec![a.digest.clone(), c.digest.clone(), sig.digest.clone()];
        want.sort();
        let mut got = manifests(&s, None);
        got.sort();
        assert_eq!(got, want, "b went with its tag; the signature stays with a");
        let v2 = s.version("foo", Some(2)).unwrap();
        assert_eq!(v2.summary.removed, counts(1, 1, 2), "v2, its manifest, its config and layer");
        assert!(s.repository("foo").unwrap().unwrap().mirrored);
        // Version 1 is untouched.
        assert_eq!(tags(&s, Some(1)).len(), 3);
    }

    #[test]
    fn a_moved_tag_follows_the_remote_and_mirror_drops_the_old_manifest() {
        let (_d, s) = open();
        sync_repository(&s, "foo");
        let (old, new) = (image("old", &["l1"]), image("new", &["l2"]));
        s.sync("foo", "r", &content(&[&old], &[("app", &old)]), SyncMode::Additive).unwrap();
        s.sync("foo", "r", &content(&[&new], &[("app", &new)]), SyncMode::Additive).unwrap();
        assert_eq!(tags(&s, None), [("app".to_owned(), new.digest.clone())]);
        assert_eq!(manifests(&s, None).len(), 2, "additive keeps the old manifest");
        let all = |_: &str| true;
        s.sync("foo", "r", &content(&[&new], &[("app", &new)]), SyncMode::Mirror { in_scope: &all }).unwrap();
        assert_eq!(manifests(&s, None), std::slice::from_ref(&new.digest));
    }

    #[test]
    fn index_children_are_kept_through_their_index() {
        let (_d, s) = open();
        sync_repository(&s, "foo");
        let (amd, arm) = (image("amd", &["l1"]), image("arm", &["l2"]));
        let mut index = image("index", &[]);
        index.config = None;
        index.media_type = crate::oci::media::OCI_INDEX.into();
        index.children = [&amd, &arm]
            .iter()
            .map(|m| crate::metadata::IndexChild {
                descriptor: crate::metadata::Descriptor { digest: m.digest.clone(), media_type: None, size: Some(1) },
                platform: None,
            })
            .collect();
        let all = |_: &str| true;
        let c = content(&[&index, &amd, &arm], &[("multi", &index)]);
        s.sync("foo", "r", &c, SyncMode::Mirror { in_scope: &all }).unwrap();
        assert_eq!(manifests(&s, None).len(), 3);
        // A later mirror sync that lists only the tag's manifest keeps the children.
        let c = content(&[&index], &[("multi", &index)]);
        assert_eq!(s.sync("foo", "r", &c, SyncMode::Mirror { in_scope: &all }).unwrap(), None);
    }

    #[test]
    fn only_sync_repositories_sync_and_served_ones_are_not_deleted() {
        let (_d, s) = open();
        s.create_push_repository("pushed", "pushed").unwrap();
        let err = s.sync("pushed", "r", &SyncContent::default(), SyncMode::Additive).unwrap_err();
        assert!(matches!(err, crate::metadata::MetadataError::Conflict(m) if m.contains("only sync repositories")));
        sync_repository(&s, "foo");
        assert!(matches!(s.create_repository(&NewRepository {
            name: "foo".into(), description: None, retain_versions: None, remote: None,
            sync_mirror: false, sync_interval: None, next_sync_at: None,
        }), Err(crate::metadata::MetadataError::Conflict(_))));
        let d = crate::metadata::NewDistribution {
            name: "foo".into(), base_path: "foo".into(), repository: "foo".into(), version: None, private: false, description: None,
        };
        s.create_distribution(&d).unwrap();
        assert!(matches!(s.delete_repository("foo"), Err(crate::metadata::MetadataError::Conflict(_))));
        s.delete_distribution("foo").unwrap();
        s.delete_repository("foo").unwrap();
        assert!(s.repository("foo").unwrap().is_none());
    }
}
