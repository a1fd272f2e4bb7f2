//! Exports for air-gapped sites: their records, and the digests each
//! carried (for incremental exports).

use std::collections::HashSet;

use super::{i64_of, limit_of, u64_of};
use crate::metadata::db::{args, Db, Row};
use crate::metadata::{now_millis, ExportRecord, ExportState, ExportedVersion, MetadataError, Page, PageRequest};

const COLUMNS: &str = "id, created_at, path, base, repositories, state, size, files, error, uuid";

fn record(r: &Row<'_>) -> Result<ExportRecord, MetadataError> {
    let repositories: String = r.get(4)?;
    let repositories: Vec<ExportedVersion> = serde_json::from_str(&repositories)
        .map_err(|e| MetadataError::Database(format!("stored export repositories unreadable: {e}")))?;
    let state: String = r.get(5)?;
    Ok(ExportRecord {
        id: u64_of(r.get(0)?),
        created_at: r.get(1)?,
        path: r.get(2)?,
        base: r.get::<Option<i64>>(3)?.map(u64_of),
        repositories,
        state: ExportState::parse(&state)?,
        size: u64_of(r.get(6)?),
        files: u64_of(r.get(7)?),
        error: r.get(8)?,
        uuid: r.get(9)?,
    })
}

/// Records an export being written; `base` must be a complete export.
pub(super) fn create(
    db: &Db<'_>,
    uuid: &str,
    path: &str,
    base: Option<u64>,
    repositories: &[ExportedVersion],
) -> Result<ExportRecord, MetadataError> {
    if let Some(base) = base {
        match get(db, base)? {
            Some(b) if b.state == ExportState::Complete => {}
            Some(_) => return Err(MetadataError::Conflict(format!("export {base} is not complete: nothing can build on it"))),
            None => return Err(MetadataError::NotFound(format!("no export {base}"))),
        }
    }
    let json = serde_json::to_string(repositories).map_err(|e| MetadataError::Invalid(e.to_string()))?;
    let id: i64 = db.query_one(
        "INSERT INTO exports (created_at, path, base, repositories, state, uuid) VALUES (?1, ?2, ?3, ?4, 'writing', ?5) RETURNING id",
        args![now_millis(), path, base.map(i64_of), json, uuid],
    )?;
    get(db, u64_of(id))?.ok_or_else(|| MetadataError::Database("the export just recorded is gone".into()))
}

pub(super) fn get(db: &Db<'_>, id: u64) -> Result<Option<ExportRecord>, MetadataError> {
    db.query_opt(&format!("SELECT {COLUMNS} FROM exports WHERE id = ?1"), args![i64_of(id)], record)
}

pub(super) fn list(db: &Db<'_>, page: PageRequest) -> Result<Page<ExportRecord>, MetadataError> {
    let total: i64 = db.query_one("SELECT COUNT(*) FROM exports", args![])?;
    let (limit, offset) = limit_of(page);
    let items = db.query_vec(
        &format!("SELECT {COLUMNS} FROM exports ORDER BY id DESC LIMIT ?1 OFFSET ?2"),
        args![limit, offset],
        record,
    )?;
    Ok(Page { items, total: u64_of(total) })
}

/// Marks an export complete with what it wrote and the digests it carried.
pub(super) fn complete(db: &Db<'_>, id: u64, size: u64, files: u64, digests: &[String]) -> Result<(), MetadataError> {
    let changed = db.execute(
        "UPDATE exports SET state = 'complete', size = ?2, files = ?3 WHERE id = ?1 AND state = 'writing'",
        args![i64_of(id), i64_of(size), i64_of(files)],
    )?;
    if changed != 1 {
        return Err(MetadataError::Conflict(format!("export {id} is not being written")));
    }
    for digest in digests {
        db.execute(
            "INSERT INTO export_digests (export, digest) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            args![i64_of(id), digest],
        )?;
    }
    Ok(())
}

pub(super) fn fail(db: &Db<'_>, id: u64, error: &str) -> Result<(), MetadataError> {
    db.execute(
        "UPDATE exports SET state = 'failed', error = ?2 WHERE id = ?1 AND state = 'writing'",
        args![i64_of(id), error],
    )?;
    Ok(())
}

/// Every digest `id` and the exports it builds on carried.
pub(super) fn chain_digests(db: &Db<'_>, id: u64) -> Result<HashSet<String>, MetadataError> {
    let mut all = HashSet::new();
    let mut next = Some(id);
    let mut seen = HashSet::new();
    while let Some(id) = next {
        if !seen.insert(id) {
            break;
        }
        let export = get(db, id)?.ok_or_else(|| MetadataError::NotFound(format!("no export {id}")))?;
        db.for_each("SELECT digest FROM export_digests WHERE export = ?1", args![i64_of(id)], |r| {
            all.insert(r.get::<String>(0)?);
            Ok(())
        })?;
        next = export.base;
    }
    Ok(all)
}

pub(super) fn delete(db: &Db<'_>, id: u64) -> Result<ExportRecord, MetadataError> {
    let export = get(db, id)?.ok_or_else(|| MetadataError::NotFound(format!("no export {id}")))?;
    let built_on: i64 = db.query_one("SELECT COUNT(*) FROM exports WHERE base = ?1", args![i64_of(id)])?;
    if built_on > 0 {
        return Err(MetadataError::Conflict(format!("export {id} is the base of {built_on} other export(s)")));
    }
    db.execute("DELETE FROM export_digests WHERE export = ?1", args![i64_of(id)])?;
    db.execute("DELETE FROM exports WHERE id = ?1", args![i64_of(id)])?;
    Ok(export)
}
