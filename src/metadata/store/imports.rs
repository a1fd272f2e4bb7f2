//! Imports of exports: each repository an export carries becomes one new
//! version holding exactly the exported content (the repository created
//! with the exported kind if missing), all in one transaction, and the
//! import is recorded by the export's own id.

use super::repositories::{self, RepoRow};
use super::sync::apply_content;
use super::versions;
use crate::metadata::db::{args, Db};
use crate::metadata::{now_millis, ImportedRepository, MetadataError, SyncMode};

/// The repository `r` names, created with its kind if missing; a
/// `Conflict` if one of another kind has the name.
fn repository(db: &Db<'_>, r: &ImportedRepository) -> Result<RepoRow, MetadataError> {
    if let Some(row) = repositories::row(db, &r.name)? {
        if row.repo.kind != r.kind {
            return Err(MetadataError::Conflict(format!(
                "repository {:?} exists as a {} repository; the export has a {} one (map it to another name)",
                r.name,
                row.repo.kind.as_str(),
                r.kind.as_str()
            )));
        }
        return Ok(row);
    }
    let now = now_millis();
    let id: i64 = db.query_one(
        "INSERT INTO repositories (name, kind, upstream, remote_name, latest_version, created_at)
         VALUES (?1, ?2, ?3, ?4, 0, ?5) RETURNING id",
        args![r.name, r.kind.as_str(), r.upstream, r.remote_name, now],
    )?;
    // Every repository starts with the empty version 0.
    db.execute("INSERT INTO repository_versions (repository_id, number, created_at) VALUES (?1, 0, ?2)", args![id, now])?;
    repositories::require(db, &r.name)
}

/// Imports export `uuid` (number `export_id` where it was made, building
/// on `base_uuid`): each repository's new version (None where the content
/// was there already). A `Conflict` if it was imported before or its base
/// was not.
pub(super) fn import(
    db: &Db<'_>,
    uuid: &str,
    export_id: u64,
    base_uuid: Option<&str>,
    repositories: &[ImportedRepository],
) -> Result<Vec<(String, Option<u64>)>, MetadataError> {
    let done: bool = db.query_one("SELECT EXISTS (SELECT 1 FROM imports WHERE uuid = ?1)", args![uuid])?;
    if done {
        return Err(MetadataError::Conflict(format!("export {export_id} ({uuid}) was imported already")));
    }
    if let Some(base) = base_uuid {
        let based: bool = db.query_one("SELECT EXISTS (SELECT 1 FROM imports WHERE uuid = ?1)", args![base])?;
        if !based {
            return Err(MetadataError::Conflict(format!(
                "export {export_id} builds on export {base}, which was not imported here: import that first"
            )));
        }
    }
    let mut created = Vec::new();
    for r in repositories {
        let mut row = repository(db, r)?;
        let v = apply_content(db, &row, &r.content, SyncMode::Mirror { in_scope: &|_| true }, "the export does not carry")?;
        created.push((r.name.clone(), versions::close(db, &mut row, v)?));
    }
    let json: Vec<serde_json::Value> =
        created.iter().map(|(name, v)| serde_json::json!({"repository": name, "version": v})).collect();
    db.execute(
        "INSERT INTO imports (uuid, export_id, base_uuid, imported_at, versions) VALUES (?1, ?2, ?3, ?4, ?5)",
        args![uuid, super::i64_of(export_id), base_uuid, now_millis(), serde_json::Value::Array(json).to_string()],
    )?;
    Ok(created)
}

/// Whether export `uuid` was imported.
pub(super) fn imported(db: &Db<'_>, uuid: &str) -> Result<bool, MetadataError> {
    db.query_one("SELECT EXISTS (SELECT 1 FROM imports WHERE uuid = ?1)", args![uuid])
}
