//! Repository versions: closing the version a change builds, its summary,
//! deleting a version (folding its changes into the next) and retention.

use super::repositories::{self, RepoRow};
use super::{count, i64_of, limit_of, u64_of, PRESENT};
use crate::metadata::db::{args, named, Db, Row};
use crate::metadata::{now_millis, Counts, MetadataError, Page, PageRequest, Summary, Version, VersionRef};

const VERSION_COLUMNS: &str = "number, created_at, base_version, added_tags, added_manifests, added_blobs,
    removed_tags, removed_manifests, removed_blobs, present_tags, present_manifests, present_blobs,
    added_signatures, removed_signatures, present_signatures";

fn from_row(repository: &str, r: &Row<'_>) -> Result<Version, MetadataError> {
    let n = |i: usize| -> Result<u64, MetadataError> { Ok(u64_of(r.get(i)?)) };
    Ok(Version {
        repository: repository.to_owned(),
        number: n(0)?,
        created_at: r.get(1)?,
        base_version: r.get::<Option<i64>>(2)?.map(u64_of),
        summary: Summary {
            added: Counts { tags: n(3)?, manifests: n(4)?, blobs: n(5)?, signatures: n(12)? },
            removed: Counts { tags: n(6)?, manifests: n(7)?, blobs: n(8)?, signatures: n(13)? },
            present: Counts { tags: n(9)?, manifests: n(10)?, blobs: n(11)?, signatures: n(14)? },
        },
    })
}

pub(super) fn list(db: &Db<'_>, repository: &str, page: PageRequest) -> Result<Page<Version>, MetadataError> {
    let repo = repositories::require(db, repository)?;
    let total = count(db, "FROM repository_versions WHERE repository_id = ?1", args![repo.id])?;
    let (limit, offset) = limit_of(page);
    let items = db.query_vec(
        &format!(
            "SELECT {VERSION_COLUMNS} FROM repository_versions WHERE repository_id = ?1
             ORDER BY number DESC LIMIT ?2 OFFSET ?3"
        ),
        args![repo.id, limit, offset],
        |r| from_row(repository, r),
    )?;
    Ok(Page { total, items })
}

pub(super) fn get(db: &Db<'_>, repository: &str, number: VersionRef) -> Result<Version, MetadataError> {
    let (repo, v) = repositories::resolve(db, repository, number)?;
    db.query_row(
        &format!("SELECT {VERSION_COLUMNS} FROM repository_versions WHERE repository_id = ?1 AND number = ?2"),
        args![repo.id, v],
        |r| from_row(repository, r),
    )
}

/// Counts of what version `v` added, removed and holds.
pub(super) fn summarize(db: &Db<'_>, repo: i64, v: i64) -> Result<Summary, MetadataError> {
    let mut s = Summary::default();
    db.for_each(
        &format!(
            "SELECT rc.content_type,
                    SUM(CASE WHEN rc.version_added = :v THEN 1 ELSE 0 END),
                    SUM(CASE WHEN rc.version_removed IS NOT NULL AND rc.version_removed = :v THEN 1 ELSE 0 END),
                    SUM(CASE WHEN {PRESENT} THEN 1 ELSE 0 END)
             FROM repository_content rc WHERE rc.repository_id = :repo GROUP BY rc.content_type"
        ),
        named! {":repo": repo, ":v": v},
        |r| {
            let kind: String = r.get(0)?;
            let (a, d, p) = (u64_of(r.get(1)?), u64_of(r.get(2)?), u64_of(r.get(3)?));
            for (counts, value) in [(&mut s.added, a), (&mut s.removed, d), (&mut s.present, p)] {
                match kind.as_str() {
                    "tag" => counts.tags = value,
                    "manifest" => counts.manifests = value,
                    "blob" => counts.blobs = value,
                    "signature" => counts.signatures = value,
                    _ => {}
                }
            }
            Ok(())
        },
    )?;
    Ok(s)
}

pub(super) fn write_summary(db: &Db<'_>, repo: i64, v: i64, s: &Summary) -> Result<(), MetadataError> {
    db.execute(
        "UPDATE repository_versions SET added_tags = ?3, added_manifests = ?4, added_blobs = ?5,
           removed_tags = ?6, removed_manifests = ?7, removed_blobs = ?8,
           present_tags = ?9, present_manifests = ?10, present_blobs = ?11,
           added_signatures = ?12, removed_signatures = ?13, present_signatures = ?14
         WHERE repository_id = ?1 AND number = ?2",
        args![
            repo,
            v,
            i64_of(s.added.tags),
            i64_of(s.added.manifests),
            i64_of(s.added.blobs),
            i64_of(s.removed.tags),
            i64_of(s.removed.manifests),
            i64_of(s.removed.blobs),
            i64_of(s.present.tags),
            i64_of(s.present.manifests),
            i64_of(s.present.blobs),
            i64_of(s.added.signatures),
            i64_of(s.removed.signatures),
            i64_of(s.present.signatures),
        ],
    )?;
    Ok(())
}

/// Deletes version `n`, folding its changes into the next version so every
/// other version keeps exactly its content.
pub(super) fn delete(db: &Db<'_>, repo: &RepoRow, n: i64) -> Result<(), MetadataError> {
    let name = &repo.repo.name;
    let base: Option<Option<i64>> = db.query_opt(
        "SELECT base_version FROM repository_versions WHERE repository_id = ?1 AND number = ?2",
        args![repo.id, n],
        |r| r.get(0),
    )?;
    let Some(base) = base else {
        return Err(MetadataError::NotFound(format!("repository {name:?} has no version {n}")));
    };
    let next: Option<i64> =
        db.query_one("SELECT MIN(number) FROM repository_versions WHERE repository_id = ?1 AND number > ?2", args![repo.id, n])?;
    let Some(next) = next else {
        return Err(MetadataError::Conflict(format!("version {n} is the latest version of {name:?} and cannot be deleted")));
    };
    let pinned: Option<String> = db.query_opt(
        "SELECT name FROM distributions WHERE repository_id = ?1 AND version = ?2 LIMIT 1",
        args![repo.id, n],
        |r| r.get(0),
    )?;
    if let Some(d) = pinned {
        return Err(MetadataError::Conflict(format!("version {n} of {name:?} is pinned by distribution {d:?}")));
    }
    let id = repo.id;
    // Content that lived in version n only disappears with it.
    db.execute(
        "DELETE FROM repository_content WHERE repository_id = ?1 AND version_added = ?2 AND version_removed = ?3",
        args![id, n, next],
    )?;
    db.execute("UPDATE repository_content SET version_added = ?3 WHERE repository_id = ?1 AND version_added = ?2", args![id, n, next])?;
    db.execute(
        "UPDATE repository_content SET version_removed = ?3 WHERE repository_id = ?1 AND version_removed = ?2",
        args![id, n, next],
    )?;
    // Removed in n and added back in next: one unbroken membership again.
    db.execute(
        "UPDATE repository_content AS a SET version_removed = (
             SELECT b.version_removed FROM repository_content b WHERE b.repository_id = a.repository_id
             AND b.content_type = a.content_type AND b.content_id = a.content_id AND b.version_added = ?2)
         WHERE a.repository_id = ?1 AND a.version_removed = ?2 AND EXISTS (
             SELECT 1 FROM repository_content b WHERE b.repository_id = a.repository_id
             AND b.content_type = a.content_type AND b.content_id = a.content_id AND b.version_added = ?2)",
        args![id, next],
    )?;
    db.execute(
        "DELETE FROM repository_content AS b WHERE b.repository_id = ?1 AND b.version_added = ?2 AND EXISTS (
             SELECT 1 FROM repository_content a WHERE a.repository_id = b.repository_id
             AND a.content_type = b.content_type AND a.content_id = b.content_id
             AND a.version_added < ?2 AND a.version_removed IS NOT DISTINCT FROM b.version_removed)",
        args![id, next],
    )?;
    db.execute("DELETE FROM repository_versions WHERE repository_id = ?1 AND number = ?2", args![id, n])?;
    db.execute(
        "UPDATE repository_versions SET base_version = ?3 WHERE repository_id = ?1 AND number = ?2 AND base_version = ?4",
        args![id, next, base, n],
    )?;
    let summary = summarize(db, id, next)?;
    write_summary(db, id, next, &summary)
}

/// Deletes every version but the newest `retain` and those a distribution
/// pins.
fn apply_retention(db: &Db<'_>, repo: &RepoRow, retain: u32) -> Result<(), MetadataError> {
    let doomed: Vec<i64> = db.query_vec(
        "SELECT v.number FROM repository_versions v WHERE v.repository_id = ?1
         AND NOT EXISTS (SELECT 1 FROM distributions d WHERE d.repository_id = v.repository_id AND d.version = v.number)
         AND v.number NOT IN (SELECT number FROM repository_versions WHERE repository_id = ?1 ORDER BY number DESC LIMIT ?2)
         ORDER BY v.number",
        args![repo.id, i64::from(retain)],
        |r| r.get(0),
    )?;
    for n in doomed {
        delete(db, repo, n)?;
    }
    Ok(())
}

/// Makes the changes written at `v` (the latest version + 1) a new
/// version, unless there are none; applies retention. The new number.
pub(super) fn close(db: &Db<'_>, repo: &mut RepoRow, v: i64) -> Result<Option<u64>, MetadataError> {
    // Any change of membership makes a version.
    let changed: bool = db.query_one(
        "SELECT EXISTS (SELECT 1 FROM repository_content WHERE repository_id = ?1 AND (version_added = ?2 OR version_removed = ?2))",
        args![repo.id, v],
    )?;
    if !changed {
        return Ok(None);
    }
    let summary = summarize(db, repo.id, v)?;
    db.execute(
        "INSERT INTO repository_versions (repository_id, number, created_at, base_version) VALUES (?1, ?2, ?3, ?4)",
        args![repo.id, v, now_millis(), v - 1],
    )?;
    write_summary(db, repo.id, v, &summary)?;
    db.execute("UPDATE repositories SET latest_version = ?2 WHERE id = ?1", args![repo.id, v])?;
    db.notify(crate::metadata::changes::VERSIONS)?;
    repo.repo.latest_version = u64_of(v);
    if let Some(retain) = repo.repo.retain_versions {
        apply_retention(db, repo, retain)?;
    }
    Ok(Some(u64_of(v)))
}
