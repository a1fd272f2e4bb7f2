//! Curation: copying content from one repository version into another
//! repository, removing content, and reverting a repository to an older
//! version. Each is one transaction making at most one new version of the
//! repository it changes, and only sync and push repositories are changed:
//! a pull-through repository records what its upstream served and nothing
//! else.
//!
//! A copy takes exactly what the source version holds that the chosen
//! content needs: an index's child manifests (those the version holds), every
//! manifest's config and layers, and its signatures: referrers (manifests
//! whose `subject` it is), cosign's `<alg>-<hex>.sig|.att|.sbom` tags, and
//! the atomic signatures the version holds for it. Removing a manifest takes
//! its atomic signatures with it.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::content::{self, present_by_digest, set_tag, tag_in_version, upsert_blob};
use super::repositories::{self, resolve, RepoRow};
use super::{digest_of, i64_of, u64_of, versions, PRESENT};
use crate::metadata::db::{args, named, Db};
use crate::metadata::{ContentType, Descriptor, MetadataError, RepositoryKind, VersionRef};
use crate::oci::Digest;

/// Suffixes of cosign's tag scheme: a manifest's signatures, attestations
/// and SBOMs are tagged `<alg>-<hex><suffix>`.
const COSIGN_SUFFIXES: [&str; 3] = [".sig", ".att", ".sbom"];

/// The repository `name` if curation may change it.
fn curated_repository(db: &Db<'_>, name: &str) -> Result<RepoRow, MetadataError> {
    let row = repositories::require(db, name)?;
    if row.repo.kind == RepositoryKind::PullThrough {
        return Err(MetadataError::Conflict(format!(
            "repository {name:?} is recorded by the pull-through cache; only sync and push repositories can be changed"
        )));
    }
    Ok(row)
}

/// The manifest `digest` names if version `v` of `repo` holds it.
fn held_manifest(db: &Db<'_>, repo: i64, digest: &str, v: i64) -> Result<Option<i64>, MetadataError> {
    db.query_opt(
        &format!(
            "SELECT m.id FROM repository_content rc JOIN manifests m ON m.id = rc.content_id
             WHERE rc.repository_id = :repo AND rc.content_type = 'manifest' AND m.digest = :digest AND {PRESENT}"
        ),
        named! {":repo": repo, ":digest": digest, ":v": v},
        |r| r.get(0),
    )
}

/// The manifest tag `name` names in version `v`: (id, digest).
fn held_tag(db: &Db<'_>, repo: i64, name: &str, v: i64) -> Result<Option<(i64, String)>, MetadataError> {
    db.query_opt(
        &format!(
            "SELECT m.id, m.digest FROM repository_content rc JOIN tags t ON t.id = rc.content_id
             JOIN manifests m ON m.id = t.manifest_id
             WHERE rc.repository_id = :repo AND rc.content_type = 'tag' AND t.name = :name AND {PRESENT}"
        ),
        named! {":repo": repo, ":name": name, ":v": v},
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Every tag in version `v`: (name, manifest id, manifest digest).
fn held_tags(db: &Db<'_>, repo: i64, v: i64) -> Result<Vec<(String, i64, String)>, MetadataError> {
    db.query_vec(
        &format!(
            "SELECT t.name, m.id, m.digest FROM repository_content rc JOIN tags t ON t.id = rc.content_id
             JOIN manifests m ON m.id = t.manifest_id
             WHERE rc.repository_id = :repo AND rc.content_type = 'tag' AND {PRESENT} ORDER BY t.name"
        ),
        named! {":repo": repo, ":v": v},
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
}

/// What manifest `id` points at, by kind (`config`, `layer`, `manifest`).
fn pointed_at(db: &Db<'_>, id: i64) -> Result<Vec<(String, Descriptor)>, MetadataError> {
    db.query_vec(
        "SELECT kind, digest, media_type, size FROM manifest_references WHERE manifest_id = ?1",
        args![id],
        |r| {
            let size: Option<i64> = r.get(3)?;
            let d = Descriptor { digest: digest_of(r.get(1)?)?, media_type: r.get(2)?, size: size.map(u64_of) };
            Ok((r.get(0)?, d))
        },
    )
}

/// Manifests in version `v` whose subject is `digest`: (id, digest).
fn held_referrers(db: &Db<'_>, repo: i64, digest: &str, v: i64) -> Result<Vec<(i64, String)>, MetadataError> {
    db.query_vec(
        &format!(
            "SELECT m.id, m.digest FROM repository_content rc JOIN manifests m ON m.id = rc.content_id
             WHERE rc.repository_id = :repo AND rc.content_type = 'manifest' AND m.subject = :subject AND {PRESENT}"
        ),
        named! {":repo": repo, ":subject": digest, ":v": v},
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// What a copy takes from the source version.
#[derive(Debug, Default)]
struct Selection {
    /// Manifest ids.
    manifests: BTreeSet<i64>,
    /// Tag name → manifest id.
    tags: BTreeMap<String, i64>,
}

/// Adds to `selection` the manifests in `start` (id, digest) and, within
/// version `v` of `repo`, everything they need: children the version
/// holds, referrers, and cosign-tagged signatures with their tags.
fn close_over(
    db: &Db<'_>,
    repo: i64,
    v: i64,
    start: Vec<(i64, String)>,
    selection: &mut Selection,
) -> Result<(), MetadataError> {
    let mut work = start;
    let mut seen: HashSet<String> = HashSet::new();
    while let Some((id, digest)) = work.pop() {
        if !seen.insert(digest.clone()) {
            continue;
        }
        selection.manifests.insert(id);
        for (kind, d) in pointed_at(db, id)? {
            if kind != "manifest" {
                continue;
            }
            let child = d.digest.to_string();
            // An index lists children the version may not hold (a
            // pull-through index whose other platforms nobody pulled):
            // a copy takes what the version holds, no more.
            if let Some(child_id) = held_manifest(db, repo, &child, v)? {
                work.push((child_id, child));
            }
        }
        work.extend(held_referrers(db, repo, &digest, v)?);
        let stem = digest.replacen(':', "-", 1);
        for suffix in COSIGN_SUFFIXES {
            let name = format!("{stem}{suffix}");
            if let Some((signature, signature_digest)) = held_tag(db, repo, &name, v)? {
                selection.tags.insert(name, signature);
                work.push((signature, signature_digest));
            }
        }
    }
    Ok(())
}

/// Writes `selection` into `dest` as its next version; the new number,
/// or None if `dest` already held all of it.
fn apply_copy(
    db: &Db<'_>,
    (src, sv): (i64, i64),
    dest: &mut RepoRow,
    selection: &Selection,
) -> Result<Option<u64>, MetadataError> {
    let v = i64_of(dest.repo.latest_version) + 1;
    super::signatures::copy(db, src, sv, dest.id, v, selection.manifests.iter().copied())?;
    for &manifest in &selection.manifests {
        content::add(db, dest.id, ContentType::Manifest, manifest, v)?;
        for (kind, d) in pointed_at(db, manifest)? {
            if kind != "manifest" {
                let blob = upsert_blob(db, &d)?;
                content::add(db, dest.id, ContentType::Blob, blob, v)?;
            }
        }
    }
    for (name, &manifest) in &selection.tags {
        set_tag(db, dest.id, name, manifest, v)?;
    }
    versions::close(db, dest, v)
}

pub(super) fn copy_tags(
    db: &Db<'_>,
    source: &str,
    source_version: VersionRef,
    dest: &str,
    select: &dyn Fn(&str) -> bool,
) -> Result<Option<u64>, MetadataError> {
    let mut dest = curated_repository(db, dest)?;
    let (src, sv) = resolve(db, source, source_version)?;
    let mut selection = Selection::default();
    let mut start = Vec::new();
    for (name, id, digest) in held_tags(db, src.id, sv)? {
        if select(&name) {
            selection.tags.insert(name, id);
            start.push((id, digest));
        }
    }
    close_over(db, src.id, sv, start, &mut selection)?;
    apply_copy(db, (src.id, sv), &mut dest, &selection)
}

pub(super) fn copy_manifests(
    db: &Db<'_>,
    source: &str,
    source_version: VersionRef,
    dest: &str,
    digests: &[Digest],
) -> Result<Option<u64>, MetadataError> {
    let mut dest = curated_repository(db, dest)?;
    let (src, sv) = resolve(db, source, source_version)?;
    let mut start = Vec::new();
    for digest in digests {
        let digest = digest.to_string();
        let Some(id) = held_manifest(db, src.id, &digest, sv)? else {
            return Err(MetadataError::NotFound(format!("manifest {digest} is not in version {sv} of {source:?}")));
        };
        start.push((id, digest));
    }
    let mut selection = Selection::default();
    close_over(db, src.id, sv, start, &mut selection)?;
    apply_copy(db, (src.id, sv), &mut dest, &selection)
}

/// Whether a manifest present in version `v` points at `digest` as one of
/// `kinds` (`'config', 'layer'` or `'manifest'`).
fn referenced(db: &Db<'_>, repo: i64, digest: &str, kinds: &str, v: i64) -> Result<bool, MetadataError> {
    db.query_one(
        &format!(
            "SELECT EXISTS (SELECT 1 FROM repository_content rc JOIN manifest_references mr ON mr.manifest_id = rc.content_id
             WHERE rc.repository_id = :repo AND rc.content_type = 'manifest' AND mr.digest = :digest
             AND mr.kind IN ({kinds}) AND {PRESENT})"
        ),
        named! {":repo": repo, ":digest": digest, ":v": v},
    )
}

/// Tags in version `v` naming manifest `id`.
fn tags_naming(db: &Db<'_>, repo: i64, id: i64, v: i64) -> Result<Vec<i64>, MetadataError> {
    db.query_vec(
        &format!(
            "SELECT t.id FROM repository_content rc JOIN tags t ON t.id = rc.content_id
             WHERE rc.repository_id = :repo AND rc.content_type = 'tag' AND t.manifest_id = :id AND {PRESENT}"
        ),
        named! {":repo": repo, ":id": id, ":v": v},
        |r| r.get(0),
    )
}

pub(super) fn remove(db: &Db<'_>, name: &str, tags: &[String], manifests: &[Digest]) -> Result<Option<u64>, MetadataError> {
    let mut repo = curated_repository(db, name)?;
    let v = i64_of(repo.repo.latest_version) + 1;
    // Everything named must be there before anything goes, so a later
    // name cannot miss what an earlier one took with it.
    let mut tag_ids = BTreeSet::new();
    for tag in tags {
        let Some((id, _)) = tag_in_version(db, repo.id, tag, v)? else {
            return Err(MetadataError::NotFound(format!("tag {tag:?} is not in repository {name:?}")));
        };
        tag_ids.insert(id);
    }
    let mut manifest_ids = BTreeSet::new();
    for digest in manifests {
        let Some(id) = present_by_digest(db, repo.id, ContentType::Manifest, digest, v)? else {
            return Err(MetadataError::NotFound(format!("manifest {digest} is not in repository {name:?}")));
        };
        manifest_ids.insert(id);
    }
    for id in tag_ids {
        content::remove(db, repo.id, ContentType::Tag, id, v)?;
    }
    // Each removed manifest takes its tags; then the children and blobs
    // it pointed at go too, unless something that stays still needs them.
    let mut work: Vec<i64> = manifest_ids.into_iter().collect();
    let mut gone = HashSet::new();
    let mut blobs: BTreeMap<String, Descriptor> = BTreeMap::new();
    while let Some(id) = work.pop() {
        if !gone.insert(id) {
            continue;
        }
        for tag in tags_naming(db, repo.id, id, v)? {
            content::remove(db, repo.id, ContentType::Tag, tag, v)?;
        }
        content::remove(db, repo.id, ContentType::Manifest, id, v)?;
        for (kind, d) in pointed_at(db, id)? {
            if kind != "manifest" {
                blobs.insert(d.digest.to_string(), d);
                continue;
            }
            let child = d.digest.to_string();
            let Some(child_id) = held_manifest(db, repo.id, &child, v)? else { continue };
            let tagged = !tags_naming(db, repo.id, child_id, v)?.is_empty();
            if !tagged && !referenced(db, repo.id, &child, "'manifest'", v)? {
                work.push(child_id);
            }
        }
    }
    for (digest, d) in blobs {
        let Some(id) = present_by_digest(db, repo.id, ContentType::Blob, &d.digest, v)? else { continue };
        if !referenced(db, repo.id, &digest, "'config', 'layer'", v)? {
            content::remove(db, repo.id, ContentType::Blob, id, v)?;
        }
    }
    super::signatures::drop_orphans(db, repo.id, v)?;
    versions::close(db, &mut repo, v)
}

/// Ids of the content of `kind` in version `v`.
fn content_ids(db: &Db<'_>, repo: i64, kind: ContentType, v: i64) -> Result<HashSet<i64>, MetadataError> {
    let ids = db.query_vec(
        &format!(
            "SELECT rc.content_id FROM repository_content rc
             WHERE rc.repository_id = :repo AND rc.content_type = :kind AND {PRESENT}"
        ),
        named! {":repo": repo, ":kind": kind.as_str(), ":v": v},
        |r| r.get(0),
    )?;
    Ok(ids.into_iter().collect())
}

pub(super) fn revert(db: &Db<'_>, name: &str, version: u64) -> Result<Option<u64>, MetadataError> {
    let mut repo = curated_repository(db, name)?;
    let (_, target) = resolve(db, name, Some(version))?;
    let v = i64_of(repo.repo.latest_version) + 1;
    for kind in [ContentType::Tag, ContentType::Manifest, ContentType::Blob, ContentType::Signature] {
        let want = content_ids(db, repo.id, kind, target)?;
        // Nothing is written at `v` yet: this is the latest version's content.
        let have = content_ids(db, repo.id, kind, v)?;
        for &id in have.difference(&want) {
            content::remove(db, repo.id, kind, id, v)?;
        }
        for &id in want.difference(&have) {
            content::add(db, repo.id, kind, id, v)?;
        }
    }
    versions::close(db, &mut repo, v)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{blob, counts, digest, image, open};
    use super::super::SqlStore;
    use crate::metadata::{
        all_pages, Change, ContentFilter, ContentType, Descriptor, IndexChild, ManifestFacts, MetadataError,
        NewRepository, Origin, PushChange, Recording, Store, SyncContent, SyncMode, VersionRef,
    };
    use crate::oci::Digest;

    /// Tags (name, digest), manifests and blobs of a version, sorted.
    type Listing = (Vec<(String, Digest)>, Vec<Digest>, Vec<Digest>);

    fn listing(s: &SqlStore, repo: &str, v: VersionRef) -> Listing {
        let all = ContentFilter::default();
        let tags = all_pages(|p| s.tags(repo, v, &all, p)).unwrap().into_iter().map(|t| (t.name, t.digest)).collect();
        let mut manifests: Vec<Digest> =
            all_pages(|p| s.manifests(repo, v, &all, p)).unwrap().into_iter().map(|m| m.facts.digest).collect();
        let mut blobs: Vec<Digest> = all_pages(|p| s.blobs(repo, v, &all, p)).unwrap().into_iter().map(|b| b.digest).collect();
        manifests.sort();
        blobs.sort();
        (tags, manifests, blobs)
    }

    fn digests(seeds: &[&str]) -> Vec<Digest> {
        let mut out: Vec<Digest> = seeds.iter().map(|s| digest(s)).collect();
        out.sort();
        out
    }

    fn tag_names(s: &SqlStore, repo: &str, v: VersionRef) -> Vec<String> {
        s.tag_names(repo, v).unwrap()
    }

    fn push_repo(s: &SqlStore, name: &str) {
        s.create_push_repository(name, &name.replace('/', ".")).unwrap();
    }

    fn sync_repo(s: &SqlStore, name: &str, retain_versions: Option<u32>) {
        let new = NewRepository {
            name: name.into(),
            description: None,
            retain_versions,
            remote: None,
            sync_mirror: false,
            sync_interval: None,
            next_sync_at: None,
        };
        s.create_repository(&new).unwrap();
    }

    fn put(s: &SqlStore, repo: &str, facts: &ManifestFacts, tag: Option<&str>) {
        let change = PushChange::Manifest { facts: facts.clone(), tag: tag.map(str::to_owned) };
        s.push(repo, &change).unwrap();
    }

    fn index(seed: &str, children: &[&ManifestFacts]) -> ManifestFacts {
        let mut index = image(seed, &[]);
        index.media_type = crate::oci::media::OCI_INDEX.into();
        index.config = None;
        index.children = children
            .iter()
            .map(|c| IndexChild {
                descriptor: Descriptor { digest: c.digest.clone(), media_type: Some(c.media_type.clone()), size: Some(c.size) },
                platform: None,
            })
            .collect();
        index
    }

    /// A signature manifest whose subject is `of`.
    fn referrer(seed: &str, of: &ManifestFacts) -> ManifestFacts {
        let mut m = image(seed, &[&format!("{seed}-payload")]);
        m.subject = Some(of.digest.clone());
        m
    }

    /// cosign's tag for a signature of `of`.
    fn cosign_tag(of: &ManifestFacts, suffix: &str) -> String {
        format!("{}{suffix}", of.digest.to_string().replacen(':', "-", 1))
    }

    fn all(_: &str) -> bool {
        true
    }

    #[test]
    fn a_copied_tag_brings_its_index_children_their_blobs_and_signatures() {
        let (_d, s) = open();
        push_repo(&s, "team/src");
        let (amd, arm) = (image("amd", &["l1", "shared"]), image("arm", &["l2", "shared"]));
        let multi = index("multi", &[&amd, &arm]);
        let by_subject = referrer("sig-amd", &amd);
        let cosign = image("cosign-multi", &["c1"]);
        let other = image("other", &["l3"]);
        put(&s, "team/src", &amd, None);
        put(&s, "team/src", &arm, None);
        put(&s, "team/src", &multi, Some("multi"));
        put(&s, "team/src", &by_subject, None);
        put(&s, "team/src", &cosign, Some(&cosign_tag(&multi, ".sig")));
        put(&s, "team/src", &other, Some("other"));
        push_repo(&s, "team/dest");

        let only_multi = |t: &str| t == "multi";
        assert_eq!(s.copy_tags("team/src", None, "team/dest", &only_multi).unwrap(), Some(1));
        let (tags, manifests, blobs) = listing(&s, "team/dest", None);
        assert_eq!(
            tags,
            [("multi".to_owned(), multi.digest.clone()), (cosign_tag(&multi, ".sig"), cosign.digest.clone())],
            "the tag asked for and the cosign tag of what it names"
        );
        assert_eq!(manifests, digests(&["multi", "amd", "arm", "sig-amd", "cosign-multi"]));
        let want_blobs = digests(&[
            "amd-config", "arm-config", "l1", "l2", "shared", "sig-amd-config", "sig-amd-payload", "cosign-multi-config", "c1",
        ]);
        assert_eq!(blobs, want_blobs);
        let v1 = s.version("team/dest", Some(1)).unwrap();
        assert_eq!((v1.base_version, v1.summary.added, v1.summary.present), (Some(0), counts(2, 5, 9), counts(2, 5, 9)));
        assert!(!s.contains("team/dest", None, ContentType::Manifest, &other.digest).unwrap());
        assert_eq!(s.referrers("team/dest", None, &amd.digest).unwrap()[0].facts.digest, by_subject.digest);
    }

    #[test]
    fn globs_choose_tags_and_copying_what_is_there_makes_no_version() {
        let (_d, s) = open();
        push_repo(&s, "team/src");
        for (seed, tag) in [("a", "v1.0"), ("b", "v1.1"), ("c", "v2.0"), ("a", "latest")] {
            put(&s, "team/src", &image(seed, &[&format!("{seed}-layer")]), Some(tag));
        }
        sync_repo(&s, "mirror/app", None);
        let v1 = |t: &str| t.starts_with("v1.");
        assert_eq!(s.copy_tags("team/src", None, "mirror/app", &v1).unwrap(), Some(1));
        assert_eq!(tag_names(&s, "mirror/app", None), ["v1.0", "v1.1"]);
        assert_eq!(s.copy_tags("team/src", None, "mirror/app", &v1).unwrap(), None, "nothing new");
        assert_eq!(s.copy_tags("team/src", None, "mirror/app", &|t: &str| t == "nope").unwrap(), None, "nothing chosen");
        // `latest` names a manifest already there: only the tag is new.
        assert_eq!(s.copy_tags("team/src", None, "mirror/app", &all).unwrap(), Some(2));
        let v2 = s.version("mirror/app", Some(2)).unwrap();
        assert_eq!(v2.summary.added, counts(2, 1, 2), "latest, v2.0 and c's manifest, config and layer");
        assert_eq!(v2.summary.removed, counts(0, 0, 0));
        assert_eq!(v2.summary.present, counts(4, 3, 6));
        assert_eq!(s.repository("mirror/app").unwrap().unwrap().latest_version, 2);
    }

    #[test]
    fn a_copied_tag_moves_in_the_destination_and_its_old_manifest_stays() {
        let (_d, s) = open();
        push_repo(&s, "team/src");
        push_repo(&s, "team/dest");
        let (old, new) = (image("old", &["l1"]), image("new", &["l2"]));
        put(&s, "team/dest", &old, Some("app"));
        put(&s, "team/src", &new, Some("app"));
        assert_eq!(s.copy_tags("team/src", None, "team/dest", &all).unwrap(), Some(2));
        let (tags, manifests, _) = listing(&s, "team/dest", None);
        assert_eq!(tags, [("app".to_owned(), new.digest.clone())]);
        assert_eq!(manifests, digests(&["old", "new"]));
        let v2 = s.version("team/dest", None).unwrap();
        assert_eq!((v2.summary.added, v2.summary.removed), (counts(1, 1, 2), counts(1, 0, 0)));
        assert_eq!(listing(&s, "team/dest", Some(1)).0, [("app".to_owned(), old.digest.clone())], "version 1 unchanged");
    }

    #[test]
    fn a_copy_reads_the_source_version_asked_for() {
        let (_d, s) = open();
        push_repo(&s, "team/src");
        push_repo(&s, "team/dest");
        put(&s, "team/src", &image("first", &["l1"]), Some("app")); // v1
        put(&s, "team/src", &image("second", &["l2"]), Some("app")); // v2
        assert_eq!(s.copy_tags("team/src", Some(1), "team/dest", &all).unwrap(), Some(1));
        assert_eq!(listing(&s, "team/dest", None).0, [("app".to_owned(), digest("first"))]);
        assert!(matches!(s.copy_tags("team/src", Some(9), "team/dest", &all), Err(MetadataError::NotFound(_))));
        assert!(matches!(s.copy_tags("no/such", None, "team/dest", &all), Err(MetadataError::NotFound(_))));
        assert!(matches!(s.copy_tags("team/src", None, "no/such", &all), Err(MetadataError::NotFound(_))));
    }

    #[test]
    fn copying_manifests_takes_no_tags_but_their_cosign_tags() {
        let (_d, s) = open();
        push_repo(&s, "team/src");
        push_repo(&s, "team/dest");
        let app = image("app", &["l1"]);
        let att = image("att", &["a1"]);
        let nested = referrer("sbom-of-att", &att);
        put(&s, "team/src", &app, Some("1.0"));
        put(&s, "team/src", &att, Some(&cosign_tag(&app, ".att")));
        put(&s, "team/src", &nested, None);
        put(&s, "team/src", &image("unrelated", &["u1"]), Some(&cosign_tag(&image("elsewhere", &[]), ".sig")));

        assert_eq!(s.copy_manifests("team/src", None, "team/dest", std::slice::from_ref(&app.digest)).unwrap(), Some(1));
        let (tags, manifests, blobs) = listing(&s, "team/dest", None);
        assert_eq!(tags, [(cosign_tag(&app, ".att"), att.digest.clone())], "no 1.0");
        assert_eq!(manifests, digests(&["app", "att", "sbom-of-att"]), "a signature's own referrer comes too");
        assert_eq!(blobs.len(), 6);

        let missing = digest("never-pushed");
        let err = s.copy_manifests("team/src", None, "team/dest", &[app.digest.clone(), missing.clone()]).unwrap_err();
        assert!(matches!(&err, MetadataError::NotFound(m) if m.contains(&missing.to_string())), "{err:?}");
        assert_eq!(s.repository("team/dest").unwrap().unwrap().latest_version, 1);
    }

    #[test]
    fn pull_through_repositories_are_sources_only() {
        let (_d, s) = open();
        let pulled = Recording {
            repository: "up/app".into(),
            origin: Origin { upstream: "up".into(), remote_name: "app".into(), retain_versions: None },
            change: Change::Manifest { facts: image("m1", &["l1"]), tag: Some("1".into()) },
        };
        s.record(&[pulled]).unwrap();
        push_repo(&s, "team/dest");
        assert_eq!(s.copy_tags("up/app", None, "team/dest", &all).unwrap(), Some(1));
        assert_eq!(listing(&s, "team/dest", None).1, digests(&["m1"]));

        let refused = [
            s.copy_tags("team/dest", None, "up/app", &all),
            s.copy_manifests("team/dest", None, "up/app", &[digest("m1")]),
            s.remove_content("up/app", &["1".into()], &[]),
            s.revert("up/app", 0),
        ];
        for r in refused {
            assert!(matches!(&r, Err(MetadataError::Conflict(m)) if m.contains("recorded by the pull-through cache")), "{r:?}");
        }
        assert_eq!(s.repository("up/app").unwrap().unwrap().latest_version, 1);
    }

    #[test]
    fn removing_a_manifest_takes_its_tags_and_what_nothing_else_needs() {
        let (_d, s) = open();
        push_repo(&s, "team/app");
        let (amd, arm, shared_child) = (image("amd", &["l1", "common"]), image("arm", &["l2"]), image("kept", &["l3"]));
        let multi = index("multi", &[&amd, &arm, &shared_child]);
        let other = index("other", &[&shared_child]);
        let keeps_common = image("keeps-common", &["common"]);
        for (m, tag) in [(&amd, None), (&arm, Some("arm-only")), (&shared_child, None), (&multi, Some("1")), (&other, Some("o"))] {
            put(&s, "team/app", m, tag);
        }
        put(&s, "team/app", &multi, Some("latest"));
        put(&s, "team/app", &keeps_common, Some("c"));
        let before = s.repository("team/app").unwrap().unwrap().latest_version;

        let v = s.remove_content("team/app", &[], std::slice::from_ref(&multi.digest)).unwrap().unwrap();
        let (tags, manifests, blobs) = listing(&s, "team/app", None);
        assert_eq!(tags.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["arm-only", "c", "o"], "1 and latest went");
        assert_eq!(manifests, digests(&["arm", "kept", "other", "keeps-common"]), "amd went; arm is tagged, kept is listed");
        assert_eq!(blobs, digests(&["arm-config", "l2", "kept-config", "l3", "keeps-common-config", "common"]));
        let summary = s.version("team/app", Some(v)).unwrap().summary;
        assert_eq!((summary.added, summary.removed), (counts(0, 0, 0), counts(2, 2, 2)));
        assert_eq!(tag_names(&s, "team/app", Some(before)), ["1", "arm-only", "c", "latest", "o"], "older versions keep theirs");

        assert_eq!(s.remove_content("team/app", &["o".into(), "c".into()], &[]).unwrap(), Some(v + 1));
        assert_eq!(listing(&s, "team/app", None).1.len(), 4, "removing a tag leaves its manifest");
    }

    #[test]
    fn removing_what_is_not_there_is_not_found_and_changes_nothing() {
        let (_d, s) = open();
        push_repo(&s, "team/app");
        let app = image("app", &["l1"]);
        put(&s, "team/app", &app, Some("1"));
        put(&s, "team/app", &app, Some("2"));
        let unknown_tag = s.remove_content("team/app", &["1".into(), "nope".into()], &[]);
        assert!(matches!(&unknown_tag, Err(MetadataError::NotFound(m)) if m.contains("\"nope\"")), "{unknown_tag:?}");
        let unknown_manifest = s.remove_content("team/app", &["1".into()], &[digest("nope")]);
        assert!(
            matches!(&unknown_manifest, Err(MetadataError::NotFound(m)) if m.contains(&digest("nope").to_string())),
            "{unknown_manifest:?}"
        );
        assert_eq!(tag_names(&s, "team/app", None), ["1", "2"], "a refused removal removes nothing");
        assert_eq!(s.remove_content("team/app", &["1".into(), "1".into()], &[]).unwrap(), Some(3), "a repeated name is one");
        assert_eq!(tag_names(&s, "team/app", None), ["2"]);
        // A tag and the manifest it names, together: one version.
        let v = s.remove_content("team/app", &["2".into()], std::slice::from_ref(&app.digest)).unwrap();
        assert_eq!(v, Some(4));
        assert_eq!(listing(&s, "team/app", None), (vec![], vec![], vec![]));
        assert!(matches!(s.remove_content("no/such", &["1".into()], &[]), Err(MetadataError::NotFound(_))));
    }

    #[test]
    fn revert_makes_the_latest_version_equal_an_older_one_and_leaves_the_rest_alone() {
        let (_d, s) = open();
        push_repo(&s, "team/app");
        let (a, b, c) = (image("a", &["l1", "shared"]), image("b", &["l2", "shared"]), image("c", &["l3"]));
        put(&s, "team/app", &a, Some("1")); // v1
        put(&s, "team/app", &b, Some("2")); // v2
        put(&s, "team/app", &c, Some("1")); // v3: 1 moves to c
        s.remove_content("team/app", &["2".into()], std::slice::from_ref(&b.digest)).unwrap(); // v4
        s.add_uploaded_blob("team/app", &blob("uploaded")).unwrap();
        let history: Vec<Listing> = (0..=4).map(|v| listing(&s, "team/app", Some(v))).collect();

        assert_eq!(s.revert("team/app", 2).unwrap(), Some(5));
        assert_eq!(listing(&s, "team/app", None), history[2], "exactly version 2's content");
        let v5 = s.version("team/app", Some(5)).unwrap();
        assert_eq!(v5.base_version, Some(4));
        assert_eq!(v5.summary.present, s.version("team/app", Some(2)).unwrap().summary.present);
        assert_eq!(v5.summary.added, counts(2, 1, 2), "tag 1 at a, tag 2, manifest b, its config and l2");
        assert_eq!(v5.summary.removed, counts(1, 1, 2), "tag 1 at c, manifest c, its config and layer");
        for (v, before) in history.iter().enumerate() {
            assert_eq!(&listing(&s, "team/app", Some(v as u64)), before, "version {v} unchanged");
        }
        assert!(s.contains("team/app", None, ContentType::Blob, &digest("uploaded")).unwrap(), "uploads are left alone");

        assert_eq!(s.revert("team/app", 5).unwrap(), None, "already equal");
        assert_eq!(s.revert("team/app", 2).unwrap(), None, "already equal");
        assert_eq!(s.revert("team/app", 0).unwrap(), Some(6));
        assert_eq!(listing(&s, "team/app", None), (vec![], vec![], vec![]));
        assert!(matches!(s.revert("team/app", 42), Err(MetadataError::NotFound(_))));
        assert_eq!(s.revert("team/app", 3).unwrap(), Some(7));
        assert_eq!(listing(&s, "team/app", None), history[3]);
    }

    #[test]
    fn curation_applies_the_destinations_retention() {
        let (_d, s) = open();
        push_repo(&s, "team/src");
        sync_repo(&s, "kept/two", Some(2));
        for (i, seed) in ["a", "b", "c"].iter().enumerate() {
            let tag = format!("t{i}");
            put(&s, "team/src", &image(seed, &[seed]), Some(&tag));
            s.copy_tags("team/src", None, "kept/two", &|t: &str| t == tag).unwrap();
        }
        let numbers: Vec<u64> = all_pages(|p| s.versions("kept/two", p)).unwrap().iter().map(|v| v.number).collect();
        assert_eq!(numbers, [3, 2]);
        assert_eq!(tag_names(&s, "kept/two", Some(2)), ["t0", "t1"]);
        // A sync repository filled by a sync is curated the same way.
        let content = SyncContent { manifests: vec![image("d", &["d"])], tags: vec![("d".into(), digest("d"))], signatures: Vec::new(), signatures_listed: false };
        s.sync("kept/two", "r", &content, SyncMode::Additive).unwrap();
        assert_eq!(s.revert("kept/two", 3).unwrap(), Some(5));
        assert_eq!(tag_names(&s, "kept/two", None), ["t0", "t1", "t2"]);
    }
}
