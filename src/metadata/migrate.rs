//! `wharf metadata migrate --to postgres://...`: copies a node's SQLite
//! metadata into an empty PostgreSQL database, then verifies the copy.
//!
//! The copy reads one snapshot of the SQLite database (a read transaction)
//! and writes every row in one PostgreSQL transaction: interrupted, it
//! leaves nothing behind and runs again from the start. Run against a
//! database that already holds exactly this metadata, it only verifies.
//! Verification compares each table's row count, and for every version of
//! every repository a hash of what it holds (tags, manifests, blobs,
//! signatures), read through the store on each engine.

use sha2::{Digest as _, Sha256};

use super::db::postgres::{self, Postgres};
use super::db::sqlite::Sqlite;
use super::db::{args, Args, Db, Owned, ToValue};
use super::store::{SqlStore, MIGRATIONS};
use super::{all_pages, ContentFilter, MetadataError, RepositoryFilter, Store};

/// Every table, parents before the tables whose rows refer to them.
pub(crate) const TABLES: &[&str] = &[
    "repositories",
    "repository_versions",
    "blobs",
    "manifests",
    "manifest_references",
    "tags",
    "repository_content",
    "distributions",
    "upstream_tags",
    "uploaded_blobs",
    "remotes",
    "tasks",
    "blob_sources",
    "signatures",
    "object_uses",
    "nodes",
    "signing_keys",
    "upload_sessions",
    "upload_chunks",
    "fills",
    "leases",
    "exports",
    "export_digests",
    "imports",
    "image_configs",
];

/// Tables whose `id` is a generated key: after rows are copied with their
/// ids, the next generated one must come after them.
const IDENTITY_TABLES: &[&str] =
    &["repositories", "blobs", "manifests", "tags", "distributions", "remotes", "tasks", "signatures", "exports"];

/// What a migration did, for the operator.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// (table, rows) in copy order.
    pub(crate) tables: Vec<(String, u64)>,
    /// Versions whose content hashes matched.
    pub(crate) versions_verified: u64,
    /// The target already held this metadata: nothing was copied.
    pub(crate) already_there: bool,
}

fn row_count(db: &Db<'_>, table: &str) -> Result<u64, MetadataError> {
    Ok(db.query_one::<i64>(&format!("SELECT COUNT(*) FROM {table}"), args![])?.max(0) as u64)
}

/// Copies the SQLite store at `source` into `target` and verifies the
/// copy. `progress` hears one line per step.
pub(crate) fn migrate(
    source: &std::path::Path,
    target: postgres::Target,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, MetadataError> {
    let sqlite = Sqlite::open(source, MIGRATIONS)?;
    let pg = Postgres::open(target, MIGRATIONS)?;
    let mut report = Report::default();
    let source_counts = sqlite.read(|db| TABLES.iter().map(|t| row_count(db, t)).collect::<Result<Vec<_>, _>>())?;
    let target_counts = pg.read(|db| TABLES.iter().map(|t| row_count(db, t)).collect::<Result<Vec<_>, _>>())?;
    if target_counts.iter().any(|&n| n > 0) {
        if target_counts != source_counts {
            let (table, n) =
                TABLES.iter().zip(&target_counts).find(|(_, n)| **n > 0).map(|(t, n)| (*t, *n)).unwrap_or(("?", 0));
            return Err(MetadataError::Conflict(format!(
                "the target database already holds other metadata ({n} rows in {table}); migrate into an empty database"
            )));
        }
        progress("the target database already holds as many rows as this node's: verifying only");
        report.already_there = true;
    } else {
        copy(&sqlite, &pg, &mut report, progress)?;
    }
    let copied = pg.read(|db| TABLES.iter().map(|t| row_count(db, t)).collect::<Result<Vec<_>, _>>())?;
    for ((table, want), got) in TABLES.iter().zip(&source_counts).zip(&copied) {
        if want != got {
            return Err(MetadataError::Database(format!("{table}: {want} rows in SQLite, {got} in PostgreSQL")));
        }
    }
    report.versions_verified = verify(&SqlStore::Sqlite(sqlite), &SqlStore::Postgres(pg), progress)?;
    Ok(report)
}

fn copy(sqlite: &Sqlite, pg: &Postgres, report: &mut Report, progress: &mut dyn FnMut(&str)) -> Result<(), MetadataError> {
    sqlite.read(|src| {
        // One snapshot: rows written meanwhile (a wharf still running)
        // are not half copied.
        src.execute_batch("BEGIN")?;
        let copied = pg.write(|dst| {
            for table in TABLES {
                let cols = super::db::sqlite::columns(src, table)?;
                let list = cols.join(", ");
                let placeholders: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
                let insert = format!("INSERT INTO {table} ({list}) VALUES ({})", placeholders.join(", "));
                let mut rows = 0u64;
                src.for_each(&format!("SELECT {list} FROM {table}"), args![], |r| {
                    let values = (0..cols.len()).map(|i| r.value(i)).collect::<Result<Vec<Owned>, _>>()?;
                    if let Some(i) = values.iter().position(|v| matches!(v, Owned::Real(_))) {
                        return Err(MetadataError::Database(format!("{table}.{} holds a REAL, which no column of wharf's does", cols[i])));
                    }
                    let bound: Vec<&dyn ToValue> = values.iter().map(|v| v as &dyn ToValue).collect();
                    dst.execute(&insert, Args::Positional(&bound))?;
                    rows += 1;
                    Ok(())
                })?;
                progress(&format!("copied {rows} rows of {table}"));
                report.tables.push(((*table).to_owned(), rows));
            }
            postgres::restart_identities(dst, IDENTITY_TABLES)
        });
        src.execute_batch("COMMIT")?;
        copied
    })
}

/// Compares every version of every repository on both stores; the number
/// of versions compared.
fn verify(a: &dyn Store, b: &dyn Store, progress: &mut dyn FnMut(&str)) -> Result<u64, MetadataError> {
    let repos = all_pages(|page| a.repositories(&RepositoryFilter::default(), page))?;
    let mut versions = 0;
    for repo in &repos {
        let numbers: Vec<u64> = all_pages(|page| a.versions(&repo.name, page))?.into_iter().map(|v| v.number).collect();
        for n in numbers {
            let (ha, hb) = (content_hash(a, &repo.name, n)?, content_hash(b, &repo.name, n)?);
            if ha != hb {
                return Err(MetadataError::Database(format!(
                    "version {n} of {:?} differs after the copy (content hash {ha} against {hb})",
                    repo.name
                )));
            }
            versions += 1;
        }
    }
    progress(&format!("verified {versions} versions of {} repositories", repos.len()));
    Ok(versions)
}

/// A hash over what version `n` of `repository` holds, one line per item in
/// the store's order.
pub(crate) fn content_hash(store: &dyn Store, repository: &str, n: u64) -> Result<String, MetadataError> {
    let mut h = Sha256::new();
    let v = Some(n);
    let all = ContentFilter::default();
    let version = store.version(repository, v)?;
    h.update(format!("{repository} {n} {:?}\n", version.summary.present).as_bytes());
    for t in all_pages(|p| store.tags(repository, v, &all, p))? {
        h.update(format!("tag {} {}\n", t.name, t.digest).as_bytes());
    }
    for m in all_pages(|p| store.manifests(repository, v, &all, p))? {
        h.update(format!("manifest {} {} {}\n", m.facts.digest, m.facts.media_type, m.facts.size).as_bytes());
    }
    for b in all_pages(|p| store.blobs(repository, v, &all, p))? {
        h.update(format!("blob {} {:?}\n", b.digest, b.size).as_bytes());
    }
    for s in all_pages(|p| store.signature_items(repository, v, None, p))? {
        h.update(format!("signature {} {}\n", s.manifest, s.digest).as_bytes());
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_the_migrations_make_is_copied() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Sqlite::open(&dir.path().join("wharf.db"), MIGRATIONS).unwrap();
        let mut tables: Vec<String> = sqlite
            .read(|db| {
                db.query_vec(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
                    args![],
                    |r| r.get(0),
                )
            })
            .unwrap();
        tables.sort();
        let mut copied: Vec<String> = TABLES.iter().map(|t| (*t).to_owned()).collect();
        copied.sort();
        assert_eq!(tables, copied, "a table missing from TABLES would not be migrated");
    }
}
