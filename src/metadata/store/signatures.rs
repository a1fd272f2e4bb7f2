//! Atomic container signatures: stored once per (manifest, bytes), members
//! of repository versions like any content (type 'signature'). A version
//! holds a signature only while it holds the signed manifest: whatever
//! takes a manifest out of a version takes its signatures too, and a copy
//! of a manifest brings the signatures the source version holds for it.

use std::collections::HashSet;

use super::content::{self, present_by_digest};
use super::repositories::{self, resolve};
use super::{digest_of, i64_of, versions, PRESENT};
use crate::metadata::db::{args, named, Db};
use crate::metadata::{
    AtomicSignature, ContentType, ManifestFacts, MetadataError, Page, PageRequest, RepositoryKind, SignatureItem, VersionRef,
};
use crate::oci::Digest;

fn upsert(db: &Db<'_>, s: &AtomicSignature) -> Result<i64, MetadataError> {
    let manifest = s.manifest.to_string();
    let digest = s.digest().to_string();
    db.execute(
        "INSERT INTO signatures (manifest_digest, digest, name, type, content) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT DO NOTHING",
        args![manifest, digest, s.name, s.kind, s.content],
    )?;
    db.query_one("SELECT id FROM signatures WHERE manifest_digest = ?1 AND digest = ?2", args![manifest, digest])
}

/// Adds `signatures` to version `v` (the version being built).
pub(super) fn add(db: &Db<'_>, repo: i64, signatures: &[AtomicSignature], v: i64) -> Result<(), MetadataError> {
    for s in signatures {
        let id = upsert(db, s)?;
        content::add(db, repo, ContentType::Signature, id, v)?;
    }
    Ok(())
}

/// Ends, at version `v`, the membership of every signature whose manifest
/// version `v` no longer holds.
pub(super) fn drop_orphans(db: &Db<'_>, repo: i64, v: i64) -> Result<(), MetadataError> {
    let orphans: Vec<i64> = db.query_vec(
        &format!(
            "SELECT s.id FROM repository_content rc JOIN signatures s ON s.id = rc.content_id
             WHERE rc.repository_id = :repo AND rc.content_type = 'signature' AND {PRESENT}
             AND NOT EXISTS (SELECT 1 FROM repository_content m JOIN manifests md ON md.id = m.content_id
                 WHERE m.repository_id = :repo AND m.content_type = 'manifest' AND md.digest = s.manifest_digest
                 AND m.version_added <= :v AND (m.version_removed IS NULL OR m.version_removed > :v))"
        ),
        named! {":repo": repo, ":v": v},
        |r| r.get(0),
    )?;
    for id in orphans {
        content::remove(db, repo, ContentType::Signature, id, v)?;
    }
    Ok(())
}

/// Ends, at version `v`, the membership of every signature of `manifests`
/// that is not among `listed` (matched by manifest and bytes): a mirror
/// sync's view of what the remote still signs. Signatures of other
/// manifests are left alone.
pub(super) fn drop_unlisted(
    db: &Db<'_>,
    repo: i64,
    v: i64,
    manifests: &[ManifestFacts],
    listed: &[AtomicSignature],
) -> Result<(), MetadataError> {
    let listed: HashSet<(String, String)> = listed
        .iter()
        .map(|s| (s.manifest.to_string(), s.digest().to_string()))
        .collect();
    let sql = format!(
        "SELECT s.id, s.digest FROM repository_content rc JOIN signatures s ON s.id = rc.content_id
         WHERE rc.repository_id = :repo AND rc.content_type = 'signature' AND s.manifest_digest = :manifest AND {PRESENT}"
    );
    for m in manifests {
        let manifest = m.digest.to_string();
        let held: Vec<(i64, String)> =
            db.query_vec(&sql, named! {":repo": repo, ":manifest": manifest, ":v": v}, |r| Ok((r.get(0)?, r.get(1)?)))?;
        for (id, digest) in held {
            if !listed.contains(&(manifest.clone(), digest)) {
                content::remove(db, repo, ContentType::Signature, id, v)?;
            }
        }
    }
    Ok(())
}

/// Ids of the signatures of manifest `manifest_id` in version `v`.
fn held(db: &Db<'_>, repo: i64, manifest_id: i64, v: i64) -> Result<Vec<i64>, MetadataError> {
    db.query_vec(
        &format!(
            "SELECT s.id FROM repository_content rc JOIN signatures s ON s.id = rc.content_id
             JOIN manifests m ON m.digest = s.manifest_digest
             WHERE rc.repository_id = :repo AND rc.content_type = 'signature' AND m.id = :manifest AND {PRESENT}
             ORDER BY s.id"
        ),
        named! {":repo": repo, ":manifest": manifest_id, ":v": v},
        |r| r.get(0),
    )
}

/// Copies the signatures version `sv` of `src` holds for each of
/// `manifests` into version `v` of `dest`.
pub(super) fn copy(
    db: &Db<'_>,
    src: i64,
    sv: i64,
    dest: i64,
    v: i64,
    manifests: impl IntoIterator<Item = i64>,
) -> Result<(), MetadataError> {
    for manifest in manifests {
        for id in held(db, src, manifest, sv)? {
            content::add(db, dest, ContentType::Signature, id, v)?;
        }
    }
    Ok(())
}

pub(super) fn list(db: &Db<'_>, repository: &str, version: VersionRef, manifest: &Digest) -> Result<Vec<AtomicSignature>, MetadataError> {
    let (repo, v) = resolve(db, repository, version)?;
    db.query_vec(
        &format!(
            "SELECT s.name, s.type, s.content FROM repository_content rc JOIN signatures s ON s.id = rc.content_id
             WHERE rc.repository_id = :repo AND rc.content_type = 'signature' AND s.manifest_digest = :manifest AND {PRESENT}
             ORDER BY s.id"
        ),
        named! {":repo": repo.id, ":manifest": manifest.to_string(), ":v": v},
        |r| Ok(AtomicSignature { manifest: manifest.clone(), name: r.get(0)?, kind: r.get(1)?, content: r.get(2)? }),
    )
}

pub(super) fn items(
    db: &Db<'_>,
    at: (&str, VersionRef, PageRequest),
    manifest: Option<&Digest>,
) -> Result<Page<SignatureItem>, MetadataError> {
    let manifest = manifest.map(ToString::to_string);
    content::page(
        db,
        at,
        ("signatures s ON s.id = rc.content_id", "signature"),
        ("(CAST(:manifest AS TEXT) IS NULL OR s.manifest_digest = :manifest)", &[(":manifest", &manifest)]),
        ("s.manifest_digest, s.digest, s.name, s.type", "s.manifest_digest, s.id"),
        |r| {
            Ok(SignatureItem {
                manifest: digest_of(r.get(0)?)?,
                digest: digest_of(r.get(1)?)?,
                name: r.get(2)?,
                kind: r.get(3)?,
            })
        },
    )
}

pub(super) fn push(db: &Db<'_>, repository: &str, signature: &AtomicSignature) -> Result<Option<u64>, MetadataError> {
    let mut repo = repositories::require(db, repository)?;
    if repo.repo.kind != RepositoryKind::Push {
        return Err(MetadataError::Conflict(format!(
            "repository {repository:?} is a {} repository; only push repositories accept signatures",
            repo.repo.kind.as_str()
        )));
    }
    let v = i64_of(repo.repo.latest_version) + 1;
    // Looked up at `v`: nothing is written there yet, so this is the
    // latest version's content.
    if present_by_digest(db, repo.id, ContentType::Manifest, &signature.manifest, v)?.is_none() {
        return Err(MetadataError::NotFound(format!("manifest {} is not in repository {repository:?}", signature.manifest)));
    }
    let taken: Option<String> = db.query_opt(
        &format!(
            "SELECT s.digest FROM repository_content rc JOIN signatures s ON s.id = rc.content_id
             WHERE rc.repository_id = :repo AND rc.content_type = 'signature' AND s.name = :name AND {PRESENT}"
        ),
        named! {":repo": repo.id, ":name": signature.name, ":v": v},
        |r| r.get(0),
    )?;
    if let Some(existing) = taken {
        if existing != signature.digest().to_string() {
            return Err(MetadataError::Conflict(format!("a different signature is named {:?}", signature.name)));
        }
    }
    add(db, repo.id, std::slice::from_ref(signature), v)?;
    versions::close(db, &mut repo, v)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{image, open, sync_repository};
    use super::super::SqlStore;
    use crate::metadata::{AtomicSignature, ManifestFacts, PageRequest, PushChange, Store, SyncContent, SyncMode};
    use crate::oci::{Algorithm, Digest};

    fn sig(m: &ManifestFacts, id: &str) -> AtomicSignature {
        AtomicSignature {
            manifest: m.digest.clone(),
            name: format!("{}@{id}", m.digest),
            kind: "atomic".into(),
            content: format!("signed {id}").into_bytes(),
        }
    }

    fn names(s: &SqlStore, repo: &str, v: Option<u64>, m: &ManifestFacts) -> Vec<String> {
        s.signatures(repo, v, &m.digest).unwrap().into_iter().map(|s| s.name).collect()
    }

    #[test]
    fn signatures_are_version_content_that_follows_their_manifest() {
        let (_d, s) = open();
        sync_repository(&s, "src");
        let (a, b) = (image("a", &["l1"]), image("b", &["l2"]));
        let tags = vec![("a".to_owned(), a.digest.clone()), ("b".to_owned(), b.digest.clone())];
        let mut content =
            SyncContent { manifests: vec![a.clone(), b.clone()], tags, signatures: vec![sig(&a, "1")], signatures_listed: true };
        assert_eq!(s.sync("src", "r", &content, SyncMode::Additive).unwrap(), Some(1));
        assert_eq!(names(&s, "src", None, &a), [format!("{}@1", a.digest)]);
        assert!(names(&s, "src", None, &b).is_empty());

        // A new signature alone makes a version; the old version keeps its set.
        content.signatures.push(sig(&a, "2"));
        assert_eq!(s.sync("src", "r", &content, SyncMode::Additive).unwrap(), Some(2));
        assert_eq!(names(&s, "src", None, &a).len(), 2);
        assert_eq!(names(&s, "src", Some(1), &a).len(), 1, "version 1 never changes");
        assert_eq!(s.sync("src", "r", &content, SyncMode::Additive).unwrap(), None, "the same signatures again: no version");

        // A copy of the manifest brings its signatures.
        sync_repository(&s, "dest");
        assert_eq!(s.copy_manifests("src", None, "dest", std::slice::from_ref(&a.digest)).unwrap(), Some(1));
        assert_eq!(names(&s, "dest", None, &a).len(), 2);

        // Removing the manifest takes them; reverting brings them back.
        assert_eq!(s.remove_content("dest", &[], std::slice::from_ref(&a.digest)).unwrap(), Some(2));
        assert!(names(&s, "dest", None, &a).is_empty());
        assert_eq!(s.revert("dest", 1).unwrap(), Some(3));
        assert_eq!(names(&s, "dest", None, &a).len(), 2);

        // A mirror sync that drops the manifest drops its signatures.
        let all = |_: &str| true;
        let only_b = SyncContent {
            manifests: vec![b.clone()],
            tags: vec![("b".into(), b.digest.clone())],
            signatures: Vec::new(),
            signatures_listed: true,
        };
        assert_eq!(s.sync("src", "r", &only_b, SyncMode::Mirror { in_scope: &all }).unwrap(), Some(3));
        assert!(names(&s, "src", None, &a).is_empty());
        assert_eq!(names(&s, "src", Some(2), &a).len(), 2);

        // A signature of a manifest the sync did not bring is refused.
        let stray =
            SyncContent { manifests: vec![b.clone()], tags: Vec::new(), signatures: vec![sig(&a, "3")], signatures_listed: true };
        assert!(s.sync("src", "r", &stray, SyncMode::Additive).is_err());
    }

    #[test]
    fn a_push_repository_takes_a_signature_of_a_manifest_it_holds() {
        let (_d, s) = open();
        s.create_push_repository("team/app", "team.app").unwrap();
        let (a, b) = (image("a", &["l1"]), image("b", &["l2"]));
        s.push("team/app", &PushChange::Manifest { facts: a.clone(), tag: Some("1".into()) }).unwrap();
        let v = s.repository("team/app").unwrap().unwrap().latest_version;
        assert_eq!(s.add_signature("team/app", &sig(&a, "x")).unwrap(), Some(v + 1));
        assert_eq!(s.add_signature("team/app", &sig(&a, "x")).unwrap(), None, "already there");
        let mut other = sig(&a, "x");
        other.content = b"different".to_vec();
        assert!(matches!(s.add_signature("team/app", &other), Err(crate::metadata::MetadataError::Conflict(_))));
        assert!(matches!(s.add_signature("team/app", &sig(&b, "y")), Err(crate::metadata::MetadataError::NotFound(_))));
        // Deleting the manifest takes its signature.
        s.push("team/app", &PushChange::DeleteManifest { digest: a.digest.clone() }).unwrap();
        assert!(names(&s, "team/app", None, &a).is_empty());
    }

    #[test]
    fn a_mirror_sync_drops_signatures_the_remote_no_longer_lists_only_when_it_read_the_listing() {
        let (_d, s) = open();
        sync_repository(&s, "src");
        let (a, b) = (image("a", &["l1"]), image("b", &["l2"]));
        let tags = vec![("a".to_owned(), a.digest.clone()), ("b".to_owned(), b.digest.clone())];
        let content = |signatures: Vec<AtomicSignature>, listed: bool| SyncContent {
            manifests: vec![a.clone(), b.clone()],
            tags: tags.clone(),
            signatures,
            signatures_listed: listed,
        };
        let all = |_: &str| true;
        let mirror = SyncMode::Mirror { in_scope: &all };
        let v1 = content(vec![sig(&a, "1"), sig(&a, "2"), sig(&b, "3")], true);
        assert_eq!(s.sync("src", "r", &v1, SyncMode::Additive).unwrap(), Some(1));
        // The listing: every signature, by manifest, one page at a time.
        let listed = s.signature_items("src", Some(1), None, PageRequest { limit: 2, offset: 0 }).unwrap();
        assert_eq!(listed.total, 3);
        let mut order = [(&a, "1"), (&a, "2"), (&b, "3")];
        order.sort_by_key(|(m, _)| m.digest.to_string());
        let want: Vec<String> = order.iter().map(|(m, id)| format!("{}@{id}", m.digest)).collect();
        assert_eq!(listed.items.iter().map(|i| i.name.clone()).collect::<Vec<_>>(), want[..2]);
        let first = &listed.items[0];
        assert_eq!((first.kind.as_str(), &first.digest), ("atomic", &Digest::of(Algorithm::Sha256, &sig(order[0].0, order[0].1).content)));
        let of_b = s.signature_items("src", Some(1), Some(&b.digest), PageRequest::default()).unwrap();
        assert_eq!((of_b.total, of_b.items[0].manifest.clone()), (1, b.digest.clone()));

        // Additive: a signature the remote dropped stays.
        let dropped = content(vec![sig(&a, "1"), sig(&b, "3")], true);
        assert_eq!(s.sync("src", "r", &dropped, SyncMode::Additive).unwrap(), None);
        assert_eq!(names(&s, "src", None, &a).len(), 2);

        // Mirror, but the listing could not be read: nothing is wiped.
        assert_eq!(s.sync("src", "r", &content(Vec::new(), false), mirror).unwrap(), None);
        assert_eq!(names(&s, "src", None, &a).len(), 2);
        assert_eq!(names(&s, "src", None, &b).len(), 1);

        // Mirror with the listing read: the dropped one goes, in one version,
        // and the manifests and the other signatures stay.
        assert_eq!(s.sync("src", "r", &dropped, mirror).unwrap(), Some(2));
        assert_eq!(names(&s, "src", None, &a), [format!("{}@1", a.digest)]);
        assert_eq!(names(&s, "src", None, &b), [format!("{}@3", b.digest)]);
        assert_eq!(names(&s, "src", Some(1), &a).len(), 2, "version 1 never changes");
        let summary = s.version("src", None).unwrap().summary;
        assert_eq!(summary.present.manifests, 2);
        assert_eq!((summary.added.signatures, summary.removed.signatures, summary.present.signatures), (0, 1, 2));
        assert_eq!(s.version("src", Some(1)).unwrap().summary.added.signatures, 3);

        // A manifest the sync did not bring keeps its signatures: the
        // remote's listing was not read for it.
        let only_a = SyncContent {
            manifests: vec![a.clone()],
            tags: vec![("a".into(), a.digest.clone())],
            signatures: Vec::new(),
            signatures_listed: true,
        };
        let only_tag_a = |t: &str| t == "a";
        assert_eq!(s.sync("src", "r", &only_a, SyncMode::Mirror { in_scope: &only_tag_a }).unwrap(), Some(3));
        assert!(names(&s, "src", None, &a).is_empty());
        assert_eq!(names(&s, "src", None, &b).len(), 1);

        // The migration that added signature counts gives existing versions
        // the counts the store itself writes.
        let versions = |s: &SqlStore| s.versions("src", PageRequest::default()).unwrap().items;
        let written = versions(&s);
        let backfill = include_str!("../migrations/0007_signature_counts.sql");
        let update = &backfill[backfill.find("UPDATE").unwrap()..];
        s.write(|tx| {
            tx.execute_batch("UPDATE repository_versions SET added_signatures = 0, removed_signatures = 0, present_signatures = 0")?;
            tx.execute_batch(update)?;
            Ok(())
        })
        .unwrap();
        assert_eq!(versions(&s), written);
        assert!(written.iter().any(|v| v.summary.present.signatures > 0));
    }
}
