//! Push repositories: created by the first push with a distribution named
//! after them, changed one push at a time (each change a version), and the
//! blobs uploaded to them before any manifest names them.

use super::repositories::{self, RepoRow};
use super::{content, distributions, i64_of, signatures, versions, PRESENT};
use crate::metadata::db::{args, named, Db};
use crate::metadata::{now_millis, ContentType, Descriptor, MetadataError, PushChange, RepositoryKind};
use crate::oci::Digest;

/// The push repository `name`; any other kind refuses pushes.
pub(super) fn repository(db: &Db<'_>, name: &str) -> Result<RepoRow, MetadataError> {
    let row = repositories::require(db, name)?;
    if row.repo.kind != RepositoryKind::Push {
        return Err(MetadataError::Conflict(format!(
            "repository {name:?} is a {} repository; only push repositories accept pushes",
            row.repo.kind.as_str()
        )));
    }
    Ok(row)
}

pub(super) fn create_repository(db: &Db<'_>, name: &str, distribution: &str) -> Result<(), MetadataError> {
    let id = match repositories::row(db, name)? {
        Some(row) if row.repo.kind != RepositoryKind::Push => {
            return Err(MetadataError::Conflict(format!(
                "repository {name:?} exists and is a {} repository",
                row.repo.kind.as_str()
            )))
        }
        Some(row) => row.id,
        None => {
            let now = now_millis();
            let id: i64 = db.query_one(
                "INSERT INTO repositories (name, kind, latest_version, created_at) VALUES (?1, 'push', 0, ?2) RETURNING id",
                args![name, now],
            )?;
            db.execute("INSERT INTO repository_versions (repository_id, number, created_at) VALUES (?1, 0, ?2)", args![id, now])?;
            id
        }
    };
    let served: bool = db.query_one("SELECT EXISTS (SELECT 1 FROM distributions WHERE base_path = ?1)", args![name])?;
    if served {
        return Ok(());
    }
    for n in 1..=1000 {
        let candidate = numbered(distribution, n);
        if distributions::get(db, &candidate)?.is_some() {
            continue;
        }
        let now = now_millis();
        db.execute(
            "INSERT INTO distributions (name, base_path, repository_id, version, private, description, created_at, updated_at)
             VALUES (?1, ?2, ?3, NULL, 0, 'created by the first push', ?4, ?4)",
            args![candidate, name, id, now],
        )?;
        return db.notify(crate::metadata::changes::DISTRIBUTIONS);
    }
    Err(MetadataError::Conflict(format!("no free distribution name like {distribution:?}")))
}

pub(super) fn add_uploaded_blob(db: &Db<'_>, repository: &str, blob: &Descriptor) -> Result<(), MetadataError> {
    let repo = self::repository(db, repository)?;
    let id = content::upsert_blob(db, blob)?;
    db.execute(
        "INSERT INTO uploaded_blobs (repository_id, blob_id, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        args![repo.id, id, now_millis()],
    )?;
    Ok(())
}

pub(super) fn push(db: &Db<'_>, repository: &str, change: &PushChange) -> Result<Option<u64>, MetadataError> {
    let mut repo = self::repository(db, repository)?;
    let v = i64_of(repo.repo.latest_version) + 1;
    apply(db, repo.id, change, v)?;
    versions::close(db, &mut repo, v)
}

/// Applies a push change to version `v` (the version being built).
fn apply(db: &Db<'_>, repo: i64, change: &PushChange, v: i64) -> Result<(), MetadataError> {
    match change {
        PushChange::Manifest { facts, tag } => {
            content::add_manifest(db, repo, facts, tag.as_deref(), v)?;
            for d in facts.config.iter().chain(&facts.layers) {
                db.execute(
                    "DELETE FROM uploaded_blobs WHERE repository_id = ?1 AND blob_id = (SELECT id FROM blobs WHERE digest = ?2)",
                    args![repo, d.digest.to_string()],
                )?;
            }
        }
        PushChange::Manifests(manifests) => {
            for (facts, tags) in manifests {
                apply(db, repo, &PushChange::Manifest { facts: facts.clone(), tag: None }, v)?;
                for tag in tags {
                    apply(db, repo, &PushChange::Manifest { facts: facts.clone(), tag: Some(tag.clone()) }, v)?;
                }
            }
        }
        PushChange::DeleteManifest { digest } => {
            let Some(id) = content::present_by_digest(db, repo, ContentType::Manifest, digest, v)? else {
                return Err(MetadataError::NotFound(format!("manifest {digest} is not in the repository")));
            };
            let tags: Vec<i64> = db.query_vec(
                &format!(
                    "SELECT t.id FROM repository_content rc JOIN tags t ON t.id = rc.content_id
                     WHERE rc.repository_id = :repo AND rc.content_type = 'tag' AND t.manifest_id = :id AND {PRESENT}"
                ),
                named! {":repo": repo, ":id": id, ":v": v},
                |r| r.get(0),
            )?;
            for tag in tags {
                content::remove(db, repo, ContentType::Tag, tag, v)?;
            }
            content::remove(db, repo, ContentType::Manifest, id, v)?;
            signatures::drop_orphans(db, repo, v)?;
        }
        PushChange::DeleteTag { tag } => {
            let Some((id, _)) = content::tag_in_version(db, repo, tag, v)? else {
                return Err(MetadataError::NotFound(format!("tag {tag:?} is not in the repository")));
            };
            content::remove(db, repo, ContentType::Tag, id, v)?;
        }
        PushChange::DeleteBlob { digest } => {
            let uploaded = match content::id_by_digest(db, "blobs", digest)? {
                Some(id) => db.execute("DELETE FROM uploaded_blobs WHERE repository_id = ?1 AND blob_id = ?2", args![repo, id])?,
                None => 0,
            };
            match content::present_by_digest(db, repo, ContentType::Blob, digest, v)? {
                Some(id) => content::remove(db, repo, ContentType::Blob, id, v)?,
                None if uploaded > 0 => {}
                None => return Err(MetadataError::NotFound(format!("blob {digest} is not in the repository"))),
            }
        }
    }
    Ok(())
}

/// `contains` for a push repository: whether its version `v` holds
/// `digest`; its latest content (`latest`: asked for as the latest, not by
/// number) also holds the blobs uploaded to it, which no version records
/// until a manifest references them.
pub(super) fn contains(db: &Db<'_>, repo: &RepoRow, (v, latest): (i64, bool), kind: ContentType, digest: &Digest) -> Result<bool, MetadataError> {
    if matches!(kind, ContentType::Tag | ContentType::Signature) {
        return Err(MetadataError::Invalid(format!("{}s are not looked up by digest", kind.as_str())));
    }
    if content::present_by_digest(db, repo.id, kind, digest, v)?.is_some() {
        return Ok(true);
    }
    if kind != ContentType::Blob || !latest {
        return Ok(false);
    }
    db.query_one(
        "SELECT EXISTS (SELECT 1 FROM uploaded_blobs u JOIN blobs b ON b.id = u.blob_id
         WHERE u.repository_id = ?1 AND b.digest = ?2)",
        args![repo.id, digest.to_string()],
    )
}

/// `base`, or `base-n` cut to fit the name length.
pub(super) fn numbered(base: &str, n: u32) -> String {
    if n <= 1 {
        return base.to_owned();
    }
    let suffix = format!("-{n}");
    let keep = base.len().min(MAX_DISTRIBUTION_NAME.saturating_sub(suffix.len()));
    // Distribution names are ASCII, so any byte index is a char boundary;
    // `get` keeps this panic-free all the same.
    format!("{}{suffix}", base.get(..keep).unwrap_or(base))
}

/// Distribution names are at most this long (the repository layer checks
/// the characters).
const MAX_DISTRIBUTION_NAME: usize = 64;
