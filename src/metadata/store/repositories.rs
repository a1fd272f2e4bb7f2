//! Repository rows: looking them up, resolving a version reference, and
//! listing them. Creating one is its kind's business (`pullthrough`,
//! `push`, `sync`).

use super::{count, limit_of, u64_of, i64_of};
use crate::metadata::db::{args, named, Db, Row};
use crate::metadata::{MetadataError, Page, PageRequest, Repository, RepositoryFilter, RepositoryKind, VersionRef};

pub(super) const REPO_COLUMNS: &str = "id, name, kind, upstream, remote_name, retain_versions, latest_version, created_at,
    description, remote, sync_mirror, sync_interval, next_sync_at, mirrored";

/// A repository and its row id.
pub(super) struct RepoRow {
    pub(super) id: i64,
    pub(super) repo: Repository,
}

pub(super) fn row(db: &Db<'_>, name: &str) -> Result<Option<RepoRow>, MetadataError> {
    db.query_opt(&format!("SELECT {REPO_COLUMNS} FROM repositories WHERE name = ?1"), args![name], from_row)?
        .transpose()
}

/// A row of [`REPO_COLUMNS`]; a kind this wharf does not know is an error
/// of that row alone.
pub(super) fn from_row(r: &Row<'_>) -> Result<Result<RepoRow, MetadataError>, MetadataError> {
    let kind: String = r.get(2)?;
    let retain: Option<i64> = r.get(5)?;
    let Some(kind) = RepositoryKind::parse(&kind) else {
        return Ok(Err(MetadataError::Database(format!("unknown repository kind {kind:?}"))));
    };
    Ok(Ok(RepoRow {
        id: r.get(0)?,
        repo: Repository {
            name: r.get(1)?,
            kind,
            upstream: r.get(3)?,
            remote_name: r.get(4)?,
            retain_versions: retain.and_then(|v| u32::try_from(v).ok()),
            latest_version: u64_of(r.get(6)?),
            created_at: r.get(7)?,
            description: r.get(8)?,
            remote: r.get(9)?,
            sync_mirror: r.get(10)?,
            sync_interval: r.get::<Option<i64>>(11)?.map(u64_of),
            next_sync_at: r.get(12)?,
            mirrored: r.get(13)?,
        },
    }))
}

pub(super) fn require(db: &Db<'_>, name: &str) -> Result<RepoRow, MetadataError> {
    row(db, name)?.ok_or_else(|| MetadataError::NotFound(format!("repository {name:?} does not exist")))
}

/// The repository and the version number `version` resolves to in it.
pub(super) fn resolve(db: &Db<'_>, name: &str, version: VersionRef) -> Result<(RepoRow, i64), MetadataError> {
    let row = require(db, name)?;
    let number = match version {
        None => row.repo.latest_version,
        Some(n) => {
            let exists: bool = db.query_one(
                "SELECT EXISTS (SELECT 1 FROM repository_versions WHERE repository_id = ?1 AND number = ?2)",
                args![row.id, i64_of(n)],
            )?;
            if !exists {
                return Err(MetadataError::NotFound(format!("repository {name:?} has no version {n}")));
            }
            n
        }
    };
    Ok((row, i64_of(number)))
}

pub(super) fn list(db: &Db<'_>, filter: &RepositoryFilter, page: PageRequest) -> Result<Page<Repository>, MetadataError> {
    let contains = filter.name_contains.as_ref().map(|s| {
        let escaped = s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        format!("%{escaped}%")
    });
    let kind = filter.kind.map(RepositoryKind::as_str);
    // lower() on both sides: LIKE ignores ASCII case on SQLite, not on
    // PostgreSQL.
    let from = "FROM repositories WHERE (CAST(:name AS TEXT) IS NULL OR name = :name)
        AND (CAST(:contains AS TEXT) IS NULL OR lower(name) LIKE lower(:contains) ESCAPE '\\')
        AND (CAST(:kind AS TEXT) IS NULL OR kind = :kind)";
    let (limit, offset) = limit_of(page);
    let total = count(db, from, named! {":name": filter.name, ":contains": contains, ":kind": kind})?;
    let rows = db.query_vec(
        &format!("SELECT {REPO_COLUMNS} {from} ORDER BY name LIMIT :limit OFFSET :offset"),
        named! {":name": filter.name, ":contains": contains, ":kind": kind, ":limit": limit, ":offset": offset},
        from_row,
    )?;
    let items = rows.into_iter().map(|r| r.map(|r| r.repo)).collect::<Result<_, _>>()?;
    Ok(Page { total, items })
}
