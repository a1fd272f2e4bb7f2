//! Distributions: a base path serving a repository's latest version or a
//! pinned one.

use super::{count, i64_of, limit_of, repositories, u64_of};
use crate::metadata::changes;
use crate::metadata::db::{args, Db, Row};
use crate::metadata::{now_millis, Distribution, DistributionPatch, MetadataError, NewDistribution, Page, PageRequest};

const SELECT: &str = "SELECT d.name, d.base_path, r.name, d.version, d.private, d.description,
    d.created_at, d.updated_at FROM distributions d JOIN repositories r ON r.id = d.repository_id";

fn from_row(r: &Row<'_>) -> Result<Distribution, MetadataError> {
    Ok(Distribution {
        name: r.get(0)?,
        base_path: r.get(1)?,
        repository: r.get(2)?,
        version: r.get::<Option<i64>>(3)?.map(u64_of),
        private: r.get(4)?,
        description: r.get(5)?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
    })
}

pub(super) fn get(db: &Db<'_>, name: &str) -> Result<Option<Distribution>, MetadataError> {
    db.query_opt(&format!("{SELECT} WHERE d.name = ?1"), args![name], from_row)
}

pub(super) fn list(db: &Db<'_>, page: PageRequest) -> Result<Page<Distribution>, MetadataError> {
    let total = count(db, "FROM distributions", args![])?;
    let (limit, offset) = limit_of(page);
    let items = db.query_vec(&format!("{SELECT} ORDER BY d.name LIMIT ?1 OFFSET ?2"), args![limit, offset], from_row)?;
    Ok(Page { total, items })
}

/// Checks a distribution's target and base_path; returns the repository id.
fn check(db: &Db<'_>, name: &str, base_path: &str, repository: &str, version: Option<u64>) -> Result<i64, MetadataError> {
    let (repo, _) = repositories::resolve(db, repository, version)?;
    let taken: Option<String> = db.query_opt(
        "SELECT name FROM distributions WHERE base_path = ?1 AND name != ?2",
        args![base_path, name],
        |r| r.get(0),
    )?;
    if let Some(other) = taken {
        return Err(MetadataError::Conflict(format!("base_path {base_path:?} is already served by distribution {other:?}")));
    }
    Ok(repo.id)
}

pub(super) fn create(db: &Db<'_>, new: &NewDistribution) -> Result<Distribution, MetadataError> {
    if get(db, &new.name)?.is_some() {
        return Err(MetadataError::Conflict(format!("distribution {:?} already exists", new.name)));
    }
    let repo = check(db, &new.name, &new.base_path, &new.repository, new.version)?;
    let now = now_millis();
    db.execute(
        "INSERT INTO distributions (name, base_path, repository_id, version, private, description, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
        args![new.name, new.base_path, repo, new.version.map(i64_of), new.private, new.description, now],
    )?;
    db.notify(changes::DISTRIBUTIONS)?;
    get(db, &new.name)?.ok_or_else(|| MetadataError::Database("distribution vanished after insert".into()))
}

pub(super) fn update(db: &Db<'_>, name: &str, patch: &DistributionPatch) -> Result<Distribution, MetadataError> {
    let Some(mut d) = get(db, name)? else {
        return Err(MetadataError::NotFound(format!("distribution {name:?} does not exist")));
    };
    if let Some(b) = &patch.base_path {
        d.base_path = b.clone();
    }
    if let Some(r) = &patch.repository {
        // A new repository without a version given serves its latest.
        if *r != d.repository && patch.version.is_none() {
            d.version = None;
        }
        d.repository = r.clone();
    }
    if let Some(v) = patch.version {
        d.version = v;
    }
    if let Some(p) = patch.private {
        d.private = p;
    }
    if let Some(desc) = &patch.description {
        d.description = desc.clone();
    }
    let repo = check(db, name, &d.base_path, &d.repository, d.version)?;
    db.execute(
        "UPDATE distributions SET base_path = ?2, repository_id = ?3, version = ?4, private = ?5, description = ?6,
         updated_at = ?7 WHERE name = ?1",
        args![name, d.base_path, repo, d.version.map(i64_of), d.private, d.description, now_millis()],
    )?;
    db.notify(changes::DISTRIBUTIONS)?;
    get(db, name)?.ok_or_else(|| MetadataError::Database("distribution vanished after update".into()))
}

pub(super) fn delete(db: &Db<'_>, name: &str) -> Result<(), MetadataError> {
    match db.execute("DELETE FROM distributions WHERE name = ?1", args![name])? {
        0 => Err(MetadataError::NotFound(format!("distribution {name:?} does not exist"))),
        _ => db.notify(changes::DISTRIBUTIONS),
    }
}
