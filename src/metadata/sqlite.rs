//! The SQLite backend: every SQL statement wharf runs is in this file.
//!
//! WAL mode with one writer connection (behind a mutex: SQLite allows one
//! writer at a time anyway, and a mutex queues writers without busy-retry
//! loops) and a small pool of reader connections, which WAL lets run beside
//! the writer. `synchronous = NORMAL`: a power loss may drop the last
//! commits, never leave the database inconsistent.
//!
//! Migrations are numbered files applied in order inside one transaction
//! each; `PRAGMA user_version` records how many ran.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{named_params, params, Connection, OptionalExtension, Transaction};

use super::{
    now_millis, AtomicSignature, BlobItem, Millis, NewRepository, RepositoryPatch, SyncContent, SyncMode, Change, ContentFilter, ContentType, Counts, Created, Descriptor, Distribution,
    DistributionPatch, IndexChild, ManifestFacts, ManifestItem, MetadataError, NewDistribution, Origin, Page,
    PageRequest, Platform, PushChange, Recording, Remote, RemoteCredentials, Repository, RepositoryFilter, RepositoryKind,
    Store, Summary, SyncPolicy, TagItem, Task, TaskFilter, TaskProgress, TaskState, Version, VersionRef,
    CreatedResource, SignatureItem,
};
use crate::oci::Digest;

mod curate;
mod signatures;
mod storage;
mod sync;

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_push.sql"),
    include_str!("migrations/0003_remotes_tasks.sql"),
    include_str!("migrations/0004_sync.sql"),
    include_str!("migrations/0005_signatures.sql"),
    include_str!("migrations/0006_object_uses.sql"),
    include_str!("migrations/0007_signature_counts.sql"),
];
/// Reader connections, opened once and shared; a read waits for a free
/// one rather than opening another (opening costs far more than a read).
const READERS: usize = 8;

/// Membership of `rc` in version `:v`.
const PRESENT: &str = "rc.version_added <= :v AND (rc.version_removed IS NULL OR rc.version_removed > :v)";

impl From<rusqlite::Error> for MetadataError {
    fn from(e: rusqlite::Error) -> Self {
        MetadataError::Database(e.to_string())
    }
}

pub(crate) struct SqliteStore {
    // One writer: SQLite serialises writers anyway; the mutex makes them
    // queue here instead of failing with SQLITE_BUSY.
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    reader_free: std::sync::Condvar,
}

fn lock_error<T>(_: std::sync::PoisonError<T>) -> MetadataError {
    MetadataError::Database("a metadata connection was poisoned by an earlier panic".into())
}

fn connect(path: &Path) -> Result<Connection, MetadataError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), MetadataError> {
    let applied: usize = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?.try_into().unwrap_or(0);
    if applied > MIGRATIONS.len() {
        return Err(MetadataError::Database(format!(
            "the database has schema version {applied}, newer than this wharf knows ({}); run a newer wharf",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(migration = i + 1, "metadata schema migrated");
    }
    Ok(())
}

impl SqliteStore {
    pub(crate) fn open(path: &Path) -> Result<SqliteStore, MetadataError> {
        let mut writer = connect(path)?;
        migrate(&mut writer)?;
        let readers = (0..READERS).map(|_| connect(path)).collect::<Result<Vec<_>, _>>()?;
        Ok(SqliteStore {
            writer: Mutex::new(writer),
            readers: Mutex::new(readers),
            reader_free: std::sync::Condvar::new(),
        })
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, MetadataError>) -> Result<T, MetadataError> {
        let conn = {
            let mut readers = self.readers.lock().map_err(lock_error)?;
            loop {
                if let Some(c) = readers.pop() {
                    break c;
                }
                readers = self.reader_free.wait(readers).map_err(lock_error)?;
            }
        };
        // Returned to the pool however `f` ends, even by a panic.
        let lease = Lease { store: self, conn: Some(conn) };
        match &lease.conn {
            Some(conn) => f(conn),
            None => Err(MetadataError::Database("reader lease lost its connection".into())),
        }
    }

    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, MetadataError>) -> Result<T, MetadataError> {
        let mut conn = self.writer.lock().map_err(lock_error)?;
        let tx = conn.transaction()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

/// A reader connection out of the pool, put back when dropped.
struct Lease<'a> {
    store: &'a SqliteStore,
    conn: Option<Connection>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            match self.store.readers.lock() {
                Ok(mut readers) => readers.push(conn),
                Err(poisoned) => poisoned.into_inner().push(conn),
            }
            self.store.reader_free.notify_one();
        }
    }
}

// -- row helpers --------------------------------------------------------------

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn digest_of(s: String) -> Result<Digest, MetadataError> {
    s.parse().map_err(|e| MetadataError::Database(format!("stored digest {s:?} is invalid: {e}")))
}

fn limit_of(page: PageRequest) -> (i64, i64) {
    (i64::from(page.limit), i64_of(page.offset))
}

const REPO_COLUMNS: &str = "id, name, kind, upstream, remote_name, retain_versions, latest_version, created_at,
    description, remote, sync_mirror, sync_interval, next_sync_at, mirrored";

struct RepoRow {
    id: i64,
    repo: Repository,
}

fn repository_row(conn: &Connection, name: &str) -> Result<Option<RepoRow>, MetadataError> {
    conn.query_row(
        &format!("SELECT {REPO_COLUMNS} FROM repositories WHERE name = ?1"),
        [name],
        repo_from_row,
    )
    .optional()?
    .transpose()
}

fn repo_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<RepoRow, MetadataError>> {
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
            sync_interval: r.get::<_, Option<i64>>(11)?.map(u64_of),
            next_sync_at: r.get(12)?,
            mirrored: r.get(13)?,
        },
    }))
}

fn require_repository(conn: &Connection, name: &str) -> Result<RepoRow, MetadataError> {
    repository_row(conn, name)?.ok_or_else(|| MetadataError::NotFound(format!("repository {name:?} does not exist")))
}

/// The repository and the version number `version` resolves to in it.
fn resolve(conn: &Connection, name: &str, version: VersionRef) -> Result<(RepoRow, i64), MetadataError> {
    let row = require_repository(conn, name)?;
    let number = match version {
        None => row.repo.latest_version,
        Some(n) => {
            let exists: bool = conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM repository_versions WHERE repository_id = ?1 AND number = ?2)",
                params![row.id, i64_of(n)],
                |r| r.get(0),
            )?;
            if !exists {
                return Err(MetadataError::NotFound(format!("repository {name:?} has no version {n}")));
            }
            n
        }
    };
    Ok((row, i64_of(number)))
}

fn version_from_row(repository: &str, r: &rusqlite::Row<'_>) -> rusqlite::Result<Version> {
    let n = |i: usize| -> rusqlite::Result<u64> { Ok(u64_of(r.get(i)?)) };
    Ok(Version {
        repository: repository.to_owned(),
        number: n(0)?,
        created_at: r.get(1)?,
        base_version: r.get::<_, Option<i64>>(2)?.map(u64_of),
        summary: Summary {
            added: Counts { tags: n(3)?, manifests: n(4)?, blobs: n(5)?, signatures: n(12)? },
            removed: Counts { tags: n(6)?, manifests: n(7)?, blobs: n(8)?, signatures: n(13)? },
            present: Counts { tags: n(9)?, manifests: n(10)?, blobs: n(11)?, signatures: n(14)? },
        },
    })
}

const VERSION_COLUMNS: &str = "number, created_at, base_version, added_tags, added_manifests, added_blobs,
    removed_tags, removed_manifests, removed_blobs, present_tags, present_manifests, present_blobs,
    added_signatures, removed_signatures, present_signatures";

// -- recording ------------------------------------------------------------------

fn get_or_create_repository(tx: &Transaction<'_>, name: &str, origin: &Origin) -> Result<RepoRow, MetadataError> {
    if let Some(mut row) = repository_row(tx, name)? {
        // The upstream's config is the source of truth for retention.
        if row.repo.retain_versions != origin.retain_versions {
            tx.execute(
                "UPDATE repositories SET retain_versions = ?2 WHERE id = ?1",
                params![row.id, origin.retain_versions.map(i64::from)],
            )?;
            row.repo.retain_versions = origin.retain_versions;
        }
        return Ok(row);
    }
    let now = now_millis();
    tx.execute(
        "INSERT INTO repositories (name, kind, upstream, remote_name, retain_versions, latest_version, created_at)
         VALUES (?1, 'pull-through', ?2, ?3, ?4, 0, ?5)",
        params![name, origin.upstream, origin.remote_name, origin.retain_versions.map(i64::from), now],
    )?;
    let id = tx.last_insert_rowid();
    // Every repository starts with the empty version 0.
    tx.execute("INSERT INTO repository_versions (repository_id, number, created_at) VALUES (?1, 0, ?2)", params![id, now])?;
    require_repository(tx, name)
}

fn upsert_blob(tx: &Transaction<'_>, d: &Descriptor) -> Result<i64, MetadataError> {
    tx.execute(
        "INSERT INTO blobs (digest, media_type, size) VALUES (?1, ?2, ?3)
         ON CONFLICT (digest) DO UPDATE SET media_type = coalesce(media_type, excluded.media_type),
                                            size = coalesce(size, excluded.size)",
        params![d.digest.to_string(), d.media_type, d.size.map(i64_of)],
    )?;
    Ok(tx.query_row("SELECT id FROM blobs WHERE digest = ?1", [d.digest.to_string()], |r| r.get(0))?)
}

fn upsert_manifest(tx: &Transaction<'_>, f: &ManifestFacts) -> Result<i64, MetadataError> {
    let digest = f.digest.to_string();
    if let Some(id) = tx.query_row("SELECT id FROM manifests WHERE digest = ?1", [&digest], |r| r.get(0)).optional()? {
        return Ok(id);
    }
    tx.execute(
        "INSERT INTO manifests (digest, media_type, size, artifact_type, subject, annotations) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![digest, f.media_type, i64_of(f.size), f.artifact_type, f.subject.as_ref().map(|s| s.to_string()), f.annotations],
    )?;
    let id = tx.last_insert_rowid();
    let mut insert = tx.prepare(
        "INSERT INTO manifest_references (manifest_id, position, kind, digest, media_type, size, os, architecture, variant)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut position = 0i64;
    let mut add = |kind: &str, d: &Descriptor, p: Option<&Platform>| -> Result<(), MetadataError> {
        insert.execute(params![
            id,
            position,
            kind,
            d.digest.to_string(),
            d.media_type,
            d.size.map(i64_of),
            p.map(|p| &p.os),
            p.map(|p| &p.architecture),
            p.and_then(|p| p.variant.as_ref()),
        ])?;
        position += 1;
        Ok(())
    };
    if let Some(c) = &f.config {
        add("config", c, None)?;
    }
    for l in &f.layers {
        add("layer", l, None)?;
    }
    for c in &f.children {
        add("manifest", &c.descriptor, c.platform.as_ref())?;
    }
    Ok(id)
}

fn upsert_tag(tx: &Transaction<'_>, name: &str, manifest_id: i64) -> Result<i64, MetadataError> {
    tx.execute("INSERT OR IGNORE INTO tags (name, manifest_id) VALUES (?1, ?2)", params![name, manifest_id])?;
    Ok(tx.query_row("SELECT id FROM tags WHERE name = ?1 AND manifest_id = ?2", params![name, manifest_id], |r| r.get(0))?)
}

/// Makes content a member of version `v` (the version being built).
fn add_content(tx: &Transaction<'_>, repo: i64, kind: ContentType, id: i64, v: i64) -> Result<(), MetadataError> {
    let present: bool = tx.query_row(
        &format!(
            "SELECT EXISTS (SELECT 1 FROM repository_content rc WHERE rc.repository_id = :repo
             AND rc.content_type = :kind AND rc.content_id = :id AND {PRESENT})"
        ),
        named_params! {":repo": repo, ":kind": kind.as_str(), ":id": id, ":v": v},
        |r| r.get(0),
    )?;
    if present {
        return Ok(());
    }
    // Removed earlier in this same version: undo the removal.
    let undone = tx.execute(
        "UPDATE repository_content SET version_removed = NULL
         WHERE repository_id = ?1 AND content_type = ?2 AND content_id = ?3 AND version_removed = ?4",
        params![repo, kind.as_str(), id, v],
    )?;
    if undone == 0 {
        tx.execute(
            "INSERT INTO repository_content (repository_id, content_type, content_id, version_added) VALUES (?1, ?2, ?3, ?4)",
            params![repo, kind.as_str(), id, v],
        )?;
    }
    Ok(())
}

/// Ends content's membership at version `v` (the version being built).
fn remove_content(tx: &Transaction<'_>, repo: i64, kind: ContentType, id: i64, v: i64) -> Result<(), MetadataError> {
    // Added in this same version: it never existed in any other.
    tx.execute(
        "DELETE FROM repository_content WHERE repository_id = ?1 AND content_type = ?2 AND content_id = ?3
         AND version_added = ?4",
        params![repo, kind.as_str(), id, v],
    )?;
    tx.execute(
        "UPDATE repository_content SET version_removed = ?4 WHERE repository_id = ?1 AND content_type = ?2
         AND content_id = ?3 AND version_removed IS NULL",
        params![repo, kind.as_str(), id, v],
    )?;
    Ok(())
}

/// The tag named `name` in version `v`: (tag id, manifest id).
fn tag_in_version(tx: &Connection, repo: i64, name: &str, v: i64) -> Result<Option<(i64, i64)>, MetadataError> {
    Ok(tx
        .query_row(
            &format!(
                "SELECT t.id, t.manifest_id FROM repository_content rc JOIN tags t ON t.id = rc.content_id
                 WHERE rc.repository_id = :repo AND rc.content_type = 'tag' AND t.name = :name AND {PRESENT}"
            ),
            named_params! {":repo": repo, ":name": name, ":v": v},
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Adds a manifest, its config and layers, and (if given) the tag naming
/// it (moving the tag if it named another manifest) to version `v`.
fn add_manifest(tx: &Transaction<'_>, repo: i64, facts: &ManifestFacts, tag: Option<&str>, v: i64) -> Result<(), MetadataError> {
    let manifest = upsert_manifest(tx, facts)?;
    add_content(tx, repo, ContentType::Manifest, manifest, v)?;
    for d in facts.config.iter().chain(&facts.layers) {
        let blob = upsert_blob(tx, d)?;
        add_content(tx, repo, ContentType::Blob, blob, v)?;
    }
    if let Some(name) = tag {
        set_tag(tx, repo, name, manifest, v)?;
    }
    Ok(())
}

/// Makes tag `name` name `manifest` in version `v`, moving it if it named
/// another manifest (which stays).
fn set_tag(tx: &Transaction<'_>, repo: i64, name: &str, manifest: i64, v: i64) -> Result<(), MetadataError> {
    match tag_in_version(tx, repo, name, v)? {
        Some((_, m)) if m == manifest => {}
        existing => {
            if let Some((old, _)) = existing {
                remove_content(tx, repo, ContentType::Tag, old, v)?;
            }
            let tag = upsert_tag(tx, name, manifest)?;
            add_content(tx, repo, ContentType::Tag, tag, v)?;
        }
    }
    Ok(())
}

fn apply_change(tx: &Transaction<'_>, repo: i64, change: &Change, v: i64) -> Result<(), MetadataError> {
    match change {
        Change::Manifest { facts, tag } => add_manifest(tx, repo, facts, tag.as_deref(), v)?,
        Change::TagRemoved { tag } => {
            if let Some((old, _)) = tag_in_version(tx, repo, tag, v)? {
                remove_content(tx, repo, ContentType::Tag, old, v)?;
            }
        }
    }
    Ok(())
}

/// Counts of what version `v` added, removed and holds.
fn summarize(conn: &Connection, repo: i64, v: i64) -> Result<Summary, MetadataError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT rc.content_type, SUM(rc.version_added = :v), SUM(rc.version_removed IS NOT NULL AND rc.version_removed = :v),
                SUM({PRESENT})
         FROM repository_content rc WHERE rc.repository_id = :repo GROUP BY rc.content_type"
    ))?;
    let mut rows = stmt.query(named_params! {":repo": repo, ":v": v})?;
    let mut s = Summary::default();
    while let Some(r) = rows.next()? {
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
    }
    Ok(s)
}

fn write_summary(tx: &Transaction<'_>, repo: i64, v: i64, s: &Summary) -> Result<(), MetadataError> {
    tx.execute(
        "UPDATE repository_versions SET added_tags = ?3, added_manifests = ?4, added_blobs = ?5,
           removed_tags = ?6, removed_manifests = ?7, removed_blobs = ?8,
           present_tags = ?9, present_manifests = ?10, present_blobs = ?11,
           added_signatures = ?12, removed_signatures = ?13, present_signatures = ?14
         WHERE repository_id = ?1 AND number = ?2",
        params![
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
fn delete_version_in(tx: &Transaction<'_>, repo: &RepoRow, n: i64) -> Result<(), MetadataError> {
    let name = &repo.repo.name;
    let base: Option<Option<i64>> = tx
        .query_row(
            "SELECT base_version FROM repository_versions WHERE repository_id = ?1 AND number = ?2",
            params![repo.id, n],
            |r| r.get(0),
        )
        .optional()?;
    let Some(base) = base else {
        return Err(MetadataError::NotFound(format!("repository {name:?} has no version {n}")));
    };
    let next: Option<i64> = tx.query_row(
        "SELECT MIN(number) FROM repository_versions WHERE repository_id = ?1 AND number > ?2",
        params![repo.id, n],
        |r| r.get(0),
    )?;
    let Some(next) = next else {
        return Err(MetadataError::Conflict(format!("version {n} is the latest version of {name:?} and cannot be deleted")));
    };
    let pinned: Option<String> = tx
        .query_row(
            "SELECT name FROM distributions WHERE repository_id = ?1 AND version = ?2 LIMIT 1",
            params![repo.id, n],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(d) = pinned {
        return Err(MetadataError::Conflict(format!("version {n} of {name:?} is pinned by distribution {d:?}")));
    }
    let id = repo.id;
    // Content that lived in version n only disappears with it.
    tx.execute(
        "DELETE FROM repository_content WHERE repository_id = ?1 AND version_added = ?2 AND version_removed = ?3",
        params![id, n, next],
    )?;
    tx.execute("UPDATE repository_content SET version_added = ?3 WHERE repository_id = ?1 AND version_added = ?2", params![id, n, next])?;
    tx.execute(
        "UPDATE repository_content SET version_removed = ?3 WHERE repository_id = ?1 AND version_removed = ?2",
        params![id, n, next],
    )?;
    // Removed in n and added back in next: one unbroken membership again.
    tx.execute(
        "UPDATE repository_content AS a SET version_removed = (
             SELECT b.version_removed FROM repository_content b WHERE b.repository_id = a.repository_id
             AND b.content_type = a.content_type AND b.content_id = a.content_id AND b.version_added = ?2)
         WHERE a.repository_id = ?1 AND a.version_removed = ?2 AND EXISTS (
             SELECT 1 FROM repository_content b WHERE b.repository_id = a.repository_id
             AND b.content_type = a.content_type AND b.content_id = a.content_id AND b.version_added = ?2)",
        params![id, next],
    )?;
    tx.execute(
        "DELETE FROM repository_content AS b WHERE b.repository_id = ?1 AND b.version_added = ?2 AND EXISTS (
             SELECT 1 FROM repository_content a WHERE a.repository_id = b.repository_id
             AND a.content_type = b.content_type AND a.content_id = b.content_id
             AND a.version_added < ?2 AND a.version_removed IS b.version_removed)",
        params![id, next],
    )?;
    tx.execute("DELETE FROM repository_versions WHERE repository_id = ?1 AND number = ?2", params![id, n])?;
    tx.execute(
        "UPDATE repository_versions SET base_version = ?3 WHERE repository_id = ?1 AND number = ?2 AND base_version = ?4",
        params![id, next, base, n],
    )?;
    let summary = summarize(tx, id, next)?;
    write_summary(tx, id, next, &summary)
}

/// Deletes every version but the newest `retain` and those a distribution
/// pins.
fn apply_retention(tx: &Transaction<'_>, repo: &RepoRow, retain: u32) -> Result<(), MetadataError> {
    let doomed: Vec<i64> = {
        let mut stmt = tx.prepare(
            "SELECT v.number FROM repository_versions v WHERE v.repository_id = ?1
             AND NOT EXISTS (SELECT 1 FROM distributions d WHERE d.repository_id = v.repository_id AND d.version = v.number)
             AND v.number NOT IN (SELECT number FROM repository_versions WHERE repository_id = ?1 ORDER BY number DESC LIMIT ?2)
             ORDER BY v.number",
        )?;
        let rows = stmt.query_map(params![repo.id, i64::from(retain)], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for n in doomed {
        delete_version_in(tx, repo, n)?;
    }
    Ok(())
}

fn record_repository(tx: &Transaction<'_>, name: &str, origin: &Origin, changes: &[&Change]) -> Result<Option<Created>, MetadataError> {
    let mut repo = get_or_create_repository(tx, name, origin)?;
    let latest = i64_of(repo.repo.latest_version);
    let v = latest + 1;
    for change in changes {
        apply_change(tx, repo.id, change, v)?;
    }
    Ok(close_version(tx, &mut repo, v)?.map(|number| Created { repository: name.to_owned(), number }))
}

/// Makes the changes written at `v` (the latest version + 1) a new
/// version, unless there are none; applies retention. The new number.
fn close_version(tx: &Transaction<'_>, repo: &mut RepoRow, v: i64) -> Result<Option<u64>, MetadataError> {
    // Any change of membership makes a version.
    let changed: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM repository_content WHERE repository_id = ?1 AND (version_added = ?2 OR version_removed = ?2))",
        params![repo.id, v],
        |r| r.get(0),
    )?;
    if !changed {
        return Ok(None);
    }
    let summary = summarize(tx, repo.id, v)?;
    tx.execute(
        "INSERT INTO repository_versions (repository_id, number, created_at, base_version) VALUES (?1, ?2, ?3, ?4)",
        params![repo.id, v, now_millis(), v - 1],
    )?;
    write_summary(tx, repo.id, v, &summary)?;
    tx.execute("UPDATE repositories SET latest_version = ?2 WHERE id = ?1", params![repo.id, v])?;
    repo.repo.latest_version = u64_of(v);
    if let Some(retain) = repo.repo.retain_versions {
        apply_retention(tx, repo, retain)?;
    }
    Ok(Some(u64_of(v)))
}

// -- push repositories -------------------------------------------------------------

/// The push repository `name`; any other kind refuses pushes.
fn push_repository(conn: &Connection, name: &str) -> Result<RepoRow, MetadataError> {
    let row = require_repository(conn, name)?;
    if row.repo.kind != RepositoryKind::Push {
        return Err(MetadataError::Conflict(format!(
            "repository {name:?} is a {} repository; only push repositories accept pushes",
            row.repo.kind.as_str()
        )));
    }
    Ok(row)
}

fn id_by_digest(conn: &Connection, table: &str, digest: &Digest) -> Result<Option<i64>, MetadataError> {
    Ok(conn
        .query_row(&format!("SELECT id FROM {table} WHERE digest = ?1"), [digest.to_string()], |r| r.get(0))
        .optional()?)
}

fn is_present(conn: &Connection, repo: i64, kind: ContentType, id: i64, v: i64) -> Result<bool, MetadataError> {
    Ok(conn.query_row(
        &format!(
            "SELECT EXISTS (SELECT 1 FROM repository_content rc WHERE rc.repository_id = :repo
             AND rc.content_type = :kind AND rc.content_id = :id AND {PRESENT})"
        ),
        named_params! {":repo": repo, ":kind": kind.as_str(), ":id": id, ":v": v},
        |r| r.get(0),
    )?)
}

/// The content of `kind` named by `digest` if version `v` holds it.
fn present_by_digest(conn: &Connection, repo: i64, kind: ContentType, digest: &Digest, v: i64) -> Result<Option<i64>, MetadataError> {
    let table = if kind == ContentType::Manifest { "manifests" } else { "blobs" };
    match id_by_digest(conn, table, digest)? {
        Some(id) if is_present(conn, repo, kind, id, v)? => Ok(Some(id)),
        _ => Ok(None),
    }
}

/// Applies a push change to version `v` (the version being built).
fn apply_push(tx: &Transaction<'_>, repo: i64, change: &PushChange, v: i64) -> Result<(), MetadataError> {
    match change {
        PushChange::Manifest { facts, tag } => {
            add_manifest(tx, repo, facts, tag.as_deref(), v)?;
            let mut forget = tx.prepare_cached(
                "DELETE FROM uploaded_blobs WHERE repository_id = ?1 AND blob_id = (SELECT id FROM blobs WHERE digest = ?2)",
            )?;
            for d in facts.config.iter().chain(&facts.layers) {
                forget.execute(params![repo, d.digest.to_string()])?;
            }
        }
        PushChange::DeleteManifest { digest } => {
            let Some(id) = present_by_digest(tx, repo, ContentType::Manifest, digest, v)? else {
                return Err(MetadataError::NotFound(format!("manifest {digest} is not in the repository")));
            };
            let tags: Vec<i64> = {
                let mut stmt = tx.prepare(&format!(
                    "SELECT t.id FROM repository_content rc JOIN tags t ON t.id = rc.content_id
                     WHERE rc.repository_id = :repo AND rc.content_type = 'tag' AND t.manifest_id = :id AND {PRESENT}"
                ))?;
                let rows = stmt.query_map(named_params! {":repo": repo, ":id": id, ":v": v}, |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            for tag in tags {
                remove_content(tx, repo, ContentType::Tag, tag, v)?;
            }
            remove_content(tx, repo, ContentType::Manifest, id, v)?;
            signatures::drop_orphans(tx, repo, v)?;
        }
        PushChange::DeleteTag { tag } => {
            let Some((id, _)) = tag_in_version(tx, repo, tag, v)? else {
                return Err(MetadataError::NotFound(format!("tag {tag:?} is not in the repository")));
            };
            remove_content(tx, repo, ContentType::Tag, id, v)?;
        }
        PushChange::DeleteBlob { digest } => {
            let uploaded = match id_by_digest(tx, "blobs", digest)? {
                Some(id) => tx.execute("DELETE FROM uploaded_blobs WHERE repository_id = ?1 AND blob_id = ?2", params![repo, id])?,
                None => 0,
            };
            match present_by_digest(tx, repo, ContentType::Blob, digest, v)? {
                Some(id) => remove_content(tx, repo, ContentType::Blob, id, v)?,
                None if uploaded > 0 => {}
                None => return Err(MetadataError::NotFound(format!("blob {digest} is not in the repository"))),
            }
        }
    }
    Ok(())
}

/// `base`, or `base-n` cut to fit the name length.
fn numbered(base: &str, n: u32) -> String {
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

// -- content listings -------------------------------------------------------------

/// A manifest's config, layers and (for an index) children.
type References = (Option<Descriptor>, Vec<Descriptor>, Vec<IndexChild>);

fn references(conn: &Connection, manifest_id: i64) -> Result<References, MetadataError> {
    let mut stmt = conn.prepare_cached(
        "SELECT kind, digest, media_type, size, os, architecture, variant FROM manifest_references
         WHERE manifest_id = ?1 ORDER BY position",
    )?;
    let mut rows = stmt.query([manifest_id])?;
    let (mut config, mut layers, mut children) = (None, Vec::new(), Vec::new());
    while let Some(r) = rows.next()? {
        let kind: String = r.get(0)?;
        let d = Descriptor {
            digest: digest_of(r.get(1)?)?,
            media_type: r.get(2)?,
            size: r.get::<_, Option<i64>>(3)?.map(u64_of),
        };
        match kind.as_str() {
            "config" => config = Some(d),
            "layer" => layers.push(d),
            _ => {
                let os: Option<String> = r.get(4)?;
                let architecture: Option<String> = r.get(5)?;
                let platform = match (os, architecture) {
                    (Some(os), Some(architecture)) => Some(Platform { os, architecture, variant: r.get(6)? }),
                    _ => None,
                };
                children.push(IndexChild { descriptor: d, platform });
            }
        }
    }
    Ok((config, layers, children))
}

/// The platform an index gives a manifest, if any index wharf knows lists it.
fn platform_of(conn: &Connection, digest: &str) -> Result<Option<Platform>, MetadataError> {
    Ok(conn
        .query_row(
            "SELECT os, architecture, variant FROM manifest_references
             WHERE kind = 'manifest' AND digest = ?1 AND os IS NOT NULL AND architecture IS NOT NULL LIMIT 1",
            [digest],
            |r| Ok(Platform { os: r.get(0)?, architecture: r.get(1)?, variant: r.get(2)? }),
        )
        .optional()?)
}

fn manifest_item(conn: &Connection, r: &rusqlite::Row<'_>) -> Result<ManifestItem, MetadataError> {
    let id: i64 = r.get(0)?;
    let digest: String = r.get(1)?;
    let (config, layers, children) = references(conn, id)?;
    let platform = platform_of(conn, &digest)?;
    let facts = ManifestFacts {
        digest: digest_of(digest)?,
        media_type: r.get(2)?,
        size: u64_of(r.get(3)?),
        artifact_type: r.get(4)?,
        subject: r.get::<_, Option<String>>(5)?.map(digest_of).transpose()?,
        config,
        layers,
        children,
        annotations: r.get(6)?,
    };
    Ok(ManifestItem { facts, platform })
}

/// One page of the content of type `kind` in a version: `join` names the
/// content table joined to `rc`, `filter` narrows it with `params`, and
/// `(columns, order)` say what to select and how to sort.
#[allow(clippy::too_many_arguments)]
fn content_page<T>(
    conn: &Connection,
    (repository, version, page): (&str, VersionRef, PageRequest),
    join: &str,
    kind: &str,
    filter: &str,
    params: &[(&str, &dyn rusqlite::ToSql)],
    (columns, order): (&str, &str),
    mut item: impl FnMut(&Connection, &rusqlite::Row<'_>) -> Result<T, MetadataError>,
) -> Result<Page<T>, MetadataError> {
    let (repo, v) = resolve(conn, repository, version)?;
    let from = format!(
        "FROM repository_content rc JOIN {join}
         WHERE rc.repository_id = :repo AND rc.content_type = '{kind}' AND {PRESENT} AND {filter}"
    );
    let (limit, offset) = limit_of(page);
    let mut all: Vec<(&str, &dyn rusqlite::ToSql)> = vec![(":repo", &repo.id), (":v", &v)];
    all.extend_from_slice(params);
    let total = count(conn, &from, &all)?;
    all.extend_from_slice(named_params! {":limit": limit, ":offset": offset});
    let mut stmt = conn.prepare(&format!("SELECT {columns} {from} ORDER BY {order} LIMIT :limit OFFSET :offset"))?;
    let mut rows = stmt.query(all.as_slice())?;
    let mut items = Vec::new();
    while let Some(r) = rows.next()? {
        items.push(item(conn, r)?);
    }
    Ok(Page { total, items })
}

fn count(conn: &Connection, sql: &str, p: &[(&str, &dyn rusqlite::ToSql)]) -> Result<u64, MetadataError> {
    Ok(u64_of(conn.query_row(&format!("SELECT COUNT(*) {sql}"), p, |r| r.get(0))?))
}

/// `contains` for a push repository: whether a push repository's version `v` holds `digest`; its latest
/// content (`latest`: asked for as the latest, not by number) also holds
/// the blobs uploaded to it, which no version records until a manifest
/// references them.
fn push_contains(conn: &Connection, repo: &RepoRow, (v, latest): (i64, bool), kind: ContentType, digest: &Digest) -> Result<bool, MetadataError> {
    if matches!(kind, ContentType::Tag | ContentType::Signature) {
        return Err(MetadataError::Invalid(format!("{}s are not looked up by digest", kind.as_str())));
    }
    if present_by_digest(conn, repo.id, kind, digest, v)?.is_some() {
        return Ok(true);
    }
    if kind != ContentType::Blob || !latest {
        return Ok(false);
    }
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM uploaded_blobs u JOIN blobs b ON b.id = u.blob_id
         WHERE u.repository_id = ?1 AND b.digest = ?2)",
        params![repo.id, digest.to_string()],
        |r| r.get(0),
    )?)
}

// -- distributions ----------------------------------------------------------------

const DISTRIBUTION_SELECT: &str = "SELECT d.name, d.base_path, r.name, d.version, d.private, d.description,
    d.created_at, d.updated_at FROM distributions d JOIN repositories r ON r.id = d.repository_id";

fn distribution_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Distribution> {
    Ok(Distribution {
        name: r.get(0)?,
        base_path: r.get(1)?,
        repository: r.get(2)?,
        version: r.get::<_, Option<i64>>(3)?.map(u64_of),
        private: r.get(4)?,
        description: r.get(5)?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
    })
}

fn distribution_in(conn: &Connection, name: &str) -> Result<Option<Distribution>, MetadataError> {
    Ok(conn
        .query_row(&format!("{DISTRIBUTION_SELECT} WHERE d.name = ?1"), [name], distribution_from_row)
        .optional()?)
}

/// Checks a distribution's target and base_path; returns the repository id.
fn check_distribution(
    tx: &Transaction<'_>,
    name: &str,
    base_path: &str,
    repository: &str,
    version: Option<u64>,
) -> Result<i64, MetadataError> {
    let (repo, _) = resolve(tx, repository, version)?;
    let taken: Option<String> = tx
        .query_row("SELECT name FROM distributions WHERE base_path = ?1 AND name != ?2", params![base_path, name], |r| r.get(0))
        .optional()?;
    if let Some(other) = taken {
        return Err(MetadataError::Conflict(format!("base_path {base_path:?} is already served by distribution {other:?}")));
    }
    Ok(repo.id)
}

// -- remotes ----------------------------------------------------------------------

const REMOTE_SELECT: &str = "SELECT name, url, upstream_name, include_tags, exclude_tags, policy, username, password,
    credentials_from, tls_verify, ca_cert, sigstore, download_concurrency, rate_limit, created_at, updated_at FROM remotes";

fn json_list(text: &str) -> Result<Vec<String>, MetadataError> {
    serde_json::from_str(text).map_err(|e| MetadataError::Database(format!("stored tag filter {text:?} is invalid: {e}")))
}

fn list_json(list: &[String]) -> String {
    // A list of strings always serialises.
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

fn remote_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Remote, MetadataError>> {
    let include: String = r.get(3)?;
    let exclude: String = r.get(4)?;
    let policy: String = r.get(5)?;
    let username: Option<String> = r.get(6)?;
    let password: Option<String> = r.get(7)?;
    let u32_col = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
    let remote = (|| {
        let Some(policy) = SyncPolicy::parse(&policy) else {
            return Err(MetadataError::Database(format!("unknown sync policy {policy:?}")));
        };
        Ok(Remote {
            name: r.get(0)?,
            url: r.get(1)?,
            upstream_name: r.get(2)?,
            include_tags: json_list(&include)?,
            exclude_tags: json_list(&exclude)?,
            policy,
            credentials: username.zip(password).map(|(username, password)| RemoteCredentials { username, password }),
            credentials_from: r.get(8)?,
            tls_verify: r.get(9)?,
            ca_cert: r.get(10)?,
            sigstore: r.get(11)?,
            download_concurrency: u32_col(r.get(12)?),
            rate_limit: u32_col(r.get(13)?),
            created_at: r.get(14)?,
            updated_at: r.get(15)?,
        })
    })();
    Ok(remote)
}

fn remote_in(conn: &Connection, name: &str) -> Result<Option<Remote>, MetadataError> {
    conn.query_row(&format!("{REMOTE_SELECT} WHERE name = ?1"), [name], remote_from_row).optional()?.transpose()
}

/// Writes every field of `r` to the remote now named `name` (a new row if
/// `insert`; then `name` is `r.name`).
fn write_remote(tx: &Transaction<'_>, name: &str, r: &Remote, insert: bool) -> Result<(), MetadataError> {
    let (username, password) = match &r.credentials {
        Some(c) => (Some(c.username.as_str()), Some(c.password.as_str())),
        None => (None, None),
    };
    let sql = if insert {
        "INSERT INTO remotes (url, upstream_name, include_tags, exclude_tags, policy, username, password,
           credentials_from, tls_verify, ca_cert, sigstore, download_concurrency, rate_limit, updated_at, name, created_at)
         VALUES (:url, :upstream_name, :include, :exclude, :policy, :username, :password, :credentials_from,
           :tls_verify, :ca_cert, :sigstore, :concurrency, :rate_limit, :updated_at, :new_name, :created_at)"
    } else {
        "UPDATE remotes SET name = :new_name, url = :url, upstream_name = :upstream_name, include_tags = :include,
           exclude_tags = :exclude, policy = :policy, username = :username, password = :password,
           credentials_from = :credentials_from, tls_verify = :tls_verify, ca_cert = :ca_cert, sigstore = :sigstore,
           download_concurrency = :concurrency, rate_limit = :rate_limit, updated_at = :updated_at
         WHERE name = :name"
    };
    let include = list_json(&r.include_tags);
    let exclude = list_json(&r.exclude_tags);
    let policy = r.policy.as_str();
    let concurrency = r.download_concurrency.map(i64::from);
    let rate_limit = r.rate_limit.map(i64::from);
    let mut p: Vec<(&str, &dyn rusqlite::ToSql)> = Vec::new();
    p.extend_from_slice(named_params! {
        ":new_name": r.name, ":url": r.url, ":upstream_name": r.upstream_name, ":include": include,
        ":exclude": exclude, ":policy": policy, ":username": username, ":password": password,
        ":credentials_from": r.credentials_from, ":tls_verify": r.tls_verify, ":ca_cert": r.ca_cert,
        ":sigstore": r.sigstore, ":concurrency": concurrency, ":rate_limit": rate_limit, ":updated_at": r.updated_at,
    });
    // Each statement takes exactly its own parameters: rusqlite refuses
    // a name the SQL does not use.
    if insert {
        p.push((":created_at", &r.created_at));
    } else {
        p.push((":name", &name));
    }
    tx.execute(sql, p.as_slice())?;
    Ok(())
}

// -- tasks ------------------------------------------------------------------------

const TASK_COLUMNS: &str = "id, kind, resource, params, state, items_done, items_total, bytes_done, error,
    created_resources, created_at, started_at, finished_at";
/// Every change to a task row carries this condition: a finished task
/// never changes.
const TASK_UNFINISHED: &str = "state IN ('waiting', 'running')";

fn task_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Task, MetadataError>> {
    let params: String = r.get(3)?;
    let state: String = r.get(4)?;
    let created: String = r.get(9)?;
    let id = u64_of(r.get(0)?);
    let task = (|| {
        let Some(state) = TaskState::parse(&state) else {
            return Err(MetadataError::Database(format!("task {id} has an unknown state {state:?}")));
        };
        let params = serde_json::from_str(&params)
            .map_err(|e| MetadataError::Database(format!("task {id} has invalid params: {e}")))?;
        let created_resources = serde_json::from_str(&created)
            .map_err(|e| MetadataError::Database(format!("task {id} has invalid created_resources: {e}")))?;
        Ok(Task {
            id,
            kind: r.get(1)?,
            resource: r.get(2)?,
            params,
            state,
            progress: TaskProgress {
                items_done: u64_of(r.get(5)?),
                items_total: r.get::<_, Option<i64>>(6)?.map(u64_of),
                bytes_done: u64_of(r.get(7)?),
            },
            error: r.get(8)?,
            created_resources,
            created_at: r.get(10)?,
            started_at: r.get(11)?,
            finished_at: r.get(12)?,
        })
    })();
    Ok(task)
}

fn task_in(conn: &Connection, id: u64) -> Result<Option<Task>, MetadataError> {
    conn.query_row(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"), [i64_of(id)], task_from_row).optional()?.transpose()
}

/// After an update that matched no unfinished row: why not.
fn unchanged_task(conn: &Connection, id: u64, doing: &str) -> MetadataError {
    match task_in(conn, id) {
        Ok(Some(t)) => MetadataError::Conflict(format!("task {id} is {}; {doing}", t.state.as_str())),
        Ok(None) => MetadataError::NotFound(format!("task {id} does not exist")),
        Err(e) => e,
    }
}

fn require_task(conn: &Connection, id: u64) -> Result<Task, MetadataError> {
    task_in(conn, id)?.ok_or_else(|| MetadataError::Database(format!("task {id} vanished during an update")))
}

impl Store for SqliteStore {
    fn record(&self, batch: &[Recording]) -> Result<Vec<Created>, MetadataError> {
        // Grouped per repository, in first-seen order: one version each.
        let mut groups: BTreeMap<&str, (usize, &Origin, Vec<&Change>)> = BTreeMap::new();
        for (i, r) in batch.iter().enumerate() {
            groups.entry(r.repository.as_str()).or_insert_with(|| (i, &r.origin, Vec::new())).2.push(&r.change);
        }
        let mut ordered: Vec<_> = groups.into_iter().collect();
        ordered.sort_by_key(|(_, (i, _, _))| *i);
        self.write(|tx| {
            let mut created = Vec::new();
            for (name, (_, origin, changes)) in &ordered {
                if let Some(c) = record_repository(tx, name, origin, changes)? {
                    created.push(c);
                }
            }
            Ok(created)
        })
    }

    fn repositories(&self, filter: &RepositoryFilter, page: PageRequest) -> Result<Page<Repository>, MetadataError> {
        self.read(|conn| {
            let contains = filter.name_contains.as_ref().map(|s| {
                let escaped = s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
                format!("%{escaped}%")
            });
            let kind = filter.kind.map(RepositoryKind::as_str);
            let from = "FROM repositories WHERE (:name IS NULL OR name = :name)
                AND (:contains IS NULL OR name LIKE :contains ESCAPE '\\')
                AND (:kind IS NULL OR kind = :kind)";
            let (limit, offset) = limit_of(page);
            let total = count(conn, from, named_params! {":name": filter.name, ":contains": contains, ":kind": kind})?;
            let mut stmt = conn.prepare(&format!(
                "SELECT {REPO_COLUMNS} {from} ORDER BY name LIMIT :limit OFFSET :offset"
            ))?;
            let rows = stmt.query_map(
                named_params! {":name": filter.name, ":contains": contains, ":kind": kind, ":limit": limit, ":offset": offset},
                repo_from_row,
            )?;
            let mut items = Vec::new();
            for row in rows {
                items.push(row??.repo);
            }
            Ok(Page { total, items })
        })
    }

    fn repository(&self, name: &str) -> Result<Option<Repository>, MetadataError> {
        self.read(|conn| Ok(repository_row(conn, name)?.map(|r| r.repo)))
    }

    fn versions(&self, repository: &str, page: PageRequest) -> Result<Page<Version>, MetadataError> {
        self.read(|conn| {
            let repo = require_repository(conn, repository)?;
            let total = count(conn, "FROM repository_versions WHERE repository_id = :repo", named_params! {":repo": repo.id})?;
            let (limit, offset) = limit_of(page);
            let mut stmt = conn.prepare(&format!(
                "SELECT {VERSION_COLUMNS} FROM repository_versions WHERE repository_id = ?1
                 ORDER BY number DESC LIMIT ?2 OFFSET ?3"
            ))?;
            let items = stmt
                .query_map(params![repo.id, limit, offset], |r| version_from_row(repository, r))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Page { total, items })
        })
    }

    fn version(&self, repository: &str, number: VersionRef) -> Result<Version, MetadataError> {
        self.read(|conn| {
            let (repo, v) = resolve(conn, repository, number)?;
            Ok(conn.query_row(
                &format!("SELECT {VERSION_COLUMNS} FROM repository_versions WHERE repository_id = ?1 AND number = ?2"),
                params![repo.id, v],
                |r| version_from_row(repository, r),
            )?)
        })
    }

    fn delete_version(&self, repository: &str, number: u64) -> Result<(), MetadataError> {
        self.write(|tx| {
            let repo = require_repository(tx, repository)?;
            delete_version_in(tx, &repo, i64_of(number))
        })
    }

    fn tags(&self, repository: &str, version: VersionRef, filter: &ContentFilter, page: PageRequest) -> Result<Page<TagItem>, MetadataError> {
        let digest = filter.digest.as_ref().map(|d| d.to_string());
        self.read(|conn| {
            content_page(
                conn,
                (repository, version, page),
                "tags t ON t.id = rc.content_id JOIN manifests m ON m.id = t.manifest_id",
                "tag",
                "(:tag IS NULL OR t.name = :tag) AND (:digest IS NULL OR m.digest = :digest)",
                named_params! {":tag": filter.tag, ":digest": digest},
                ("t.name, m.digest, m.media_type", "t.name"),
                |_, r| Ok(TagItem { name: r.get(0)?, digest: digest_of(r.get(1)?)?, media_type: r.get(2)? }),
            )
        })
    }

    fn manifests(&self, repository: &str, version: VersionRef, filter: &ContentFilter, page: PageRequest) -> Result<Page<ManifestItem>, MetadataError> {
        let digest = filter.digest.as_ref().map(|d| d.to_string());
        self.read(|conn| {
            content_page(
                conn,
                (repository, version, page),
                "manifests m ON m.id = rc.content_id",
                "manifest",
                "(:digest IS NULL OR m.digest = :digest)",
                named_params! {":digest": digest},
                ("m.id, m.digest, m.media_type, m.size, m.artifact_type, m.subject, m.annotations", "m.digest"),
                manifest_item,
            )
        })
    }

    fn blobs(&self, repository: &str, version: VersionRef, filter: &ContentFilter, page: PageRequest) -> Result<Page<BlobItem>, MetadataError> {
        let digest = filter.digest.as_ref().map(|d| d.to_string());
        self.read(|conn| {
            content_page(
                conn,
                (repository, version, page),
                "blobs b ON b.id = rc.content_id",
                "blob",
                "(:digest IS NULL OR b.digest = :digest)",
                named_params! {":digest": digest},
                ("b.digest, b.media_type, b.size", "b.digest"),
                |_, r| {
                    Ok(BlobItem {
                        digest: digest_of(r.get(0)?)?,
                        media_type: r.get(1)?,
                        size: r.get::<_, Option<i64>>(2)?.map(u64_of),
                    })
                },
            )
        })
    }

    fn resolve_tag(&self, repository: &str, version: VersionRef, tag: &str) -> Result<Option<TagItem>, MetadataError> {
        let filter = ContentFilter { digest: None, tag: Some(tag.to_owned()) };
        Ok(self.tags(repository, version, &filter, PageRequest { limit: 1, offset: 0 })?.items.into_iter().next())
    }

    fn contains(&self, repository: &str, version: VersionRef, kind: ContentType, digest: &Digest) -> Result<bool, MetadataError> {
        self.read(|conn| {
            let (repo, v) = resolve(conn, repository, version)?;
            if repo.repo.kind == RepositoryKind::Push {
                return push_contains(conn, &repo, (v, version.is_none()), kind, digest);
            }
            // Besides content recorded in the version: what its manifests
            // point at (an index's other platforms, and their layers), which
            // belongs to the same images and can be fetched on demand.
            let sql = match kind {
                ContentType::Manifest => format!(
                    "SELECT EXISTS (SELECT 1 FROM repository_content rc JOIN manifests c ON c.id = rc.content_id
                       WHERE rc.repository_id = :repo AND rc.content_type = 'manifest' AND c.digest = :digest AND {PRESENT})
                     OR EXISTS (SELECT 1 FROM repository_content rc JOIN manifest_references mr ON mr.manifest_id = rc.content_id
                       WHERE rc.repository_id = :repo AND rc.content_type = 'manifest' AND mr.kind = 'manifest'
                       AND mr.digest = :digest AND {PRESENT})"
                ),
                ContentType::Blob => format!(
                    "SELECT EXISTS (SELECT 1 FROM repository_content rc JOIN blobs c ON c.id = rc.content_id
                       WHERE rc.repository_id = :repo AND rc.content_type = 'blob' AND c.digest = :digest AND {PRESENT})
                     OR EXISTS (SELECT 1 FROM repository_content rc JOIN manifest_references mr ON mr.manifest_id = rc.content_id
                       WHERE rc.repository_id = :repo AND rc.content_type = 'manifest' AND mr.kind IN ('config', 'layer')
                       AND mr.digest = :digest AND {PRESENT})
                     OR EXISTS (SELECT 1 FROM repository_content rc
                       JOIN manifest_references child ON child.manifest_id = rc.content_id AND child.kind = 'manifest'
                       JOIN manifests m ON m.digest = child.digest
                       JOIN manifest_references mr ON mr.manifest_id = m.id AND mr.kind IN ('config', 'layer')
                       WHERE rc.repository_id = :repo AND rc.content_type = 'manifest' AND mr.digest = :digest AND {PRESENT})"
                ),
                ContentType::Tag | ContentType::Signature => {
                    return Err(MetadataError::Invalid(format!("{}s are not looked up by digest", kind.as_str())))
                }
            };
            Ok(conn.query_row(&sql, named_params! {":repo": repo.id, ":digest": digest.to_string(), ":v": v}, |r| r.get(0))?)
        })
    }

    fn tag_names(&self, repository: &str, version: VersionRef) -> Result<Vec<String>, MetadataError> {
        self.read(|conn| {
            let (repo, v) = resolve(conn, repository, version)?;
            let mut stmt = conn.prepare(&format!(
                "SELECT t.name FROM repository_content rc JOIN tags t ON t.id = rc.content_id
                 WHERE rc.repository_id = :repo AND rc.content_type = 'tag' AND {PRESENT} ORDER BY t.name"
            ))?;
            let names = stmt.query_map(named_params! {":repo": repo.id, ":v": v}, |r| r.get(0))?.collect::<Result<_, _>>()?;
            Ok(names)
        })
    }

    fn referrers(&self, repository: &str, version: VersionRef, digest: &Digest) -> Result<Vec<ManifestItem>, MetadataError> {
        self.read(|conn| {
            let (repo, v) = resolve(conn, repository, version)?;
            let mut stmt = conn.prepare(&format!(
                "SELECT m.id, m.digest, m.media_type, m.size, m.artifact_type, m.subject, m.annotations
                 FROM repository_content rc JOIN manifests m ON m.id = rc.content_id
                 WHERE rc.repository_id = :repo AND rc.content_type = 'manifest' AND m.subject = :subject AND {PRESENT}
                 ORDER BY m.digest"
            ))?;
            let mut rows = stmt.query(named_params! {":repo": repo.id, ":v": v, ":subject": digest.to_string()})?;
            let mut items = Vec::new();
            while let Some(r) = rows.next()? {
                items.push(manifest_item(conn, r)?);
            }
            Ok(items)
        })
    }

    fn create_repository(&self, new: &NewRepository) -> Result<Repository, MetadataError> {
        self.write(|tx| sync::create_repository(tx, new))
    }

    fn update_repository(&self, name: &str, patch: &RepositoryPatch) -> Result<Repository, MetadataError> {
        self.write(|tx| sync::update_repository(tx, name, patch))
    }

    fn delete_repository(&self, name: &str) -> Result<(), MetadataError> {
        self.write(|tx| sync::delete_repository(tx, name))
    }

    fn due_syncs(&self, now: Millis) -> Result<Vec<Repository>, MetadataError> {
        self.read(|conn| sync::due_syncs(conn, now))
    }

    fn sync(&self, repository: &str, remote: &str, content: &SyncContent, mode: SyncMode<'_>) -> Result<Option<u64>, MetadataError> {
        self.write(|tx| sync::apply_sync(tx, repository, remote, content, mode))
    }

    fn add_blob_sources(&self, digests: &[Digest], remote: &str, remote_name: &str) -> Result<(), MetadataError> {
        self.write(|tx| sync::add_blob_sources(tx, digests, remote, remote_name))
    }

    fn blob_sources(&self, digest: &Digest) -> Result<Vec<(String, String)>, MetadataError> {
        self.read(|conn| sync::blob_sources(conn, digest))
    }

    fn signatures(&self, repository: &str, version: VersionRef, manifest: &Digest) -> Result<Vec<AtomicSignature>, MetadataError> {
        self.read(|conn| signatures::list(conn, repository, version, manifest))
    }

    fn signature_items(&self, repository: &str, version: VersionRef, manifest: Option<&Digest>, page: PageRequest) -> Result<Page<SignatureItem>, MetadataError> {
        self.read(|conn| signatures::items(conn, (repository, version, page), manifest))
    }

    fn add_signature(&self, repository: &str, signature: &AtomicSignature) -> Result<Option<u64>, MetadataError> {
        self.write(|tx| signatures::push(tx, repository, signature))
    }

    fn storage_references(&self) -> Result<super::StorageReferences, MetadataError> {
        self.read(storage::storage_references)
    }

    fn record_uses(&self, uses: &[(Digest, Millis)]) -> Result<(), MetadataError> {
        self.write(|tx| storage::record_uses(tx, uses))
    }

    fn last_uses(&self) -> Result<std::collections::HashMap<String, Millis>, MetadataError> {
        self.read(storage::last_uses)
    }

    fn forget_uses(&self, digests: &[Digest]) -> Result<(), MetadataError> {
        self.write(|tx| storage::forget_uses(tx, digests))
    }

    fn copy_tags(
        &self,
        source: &str,
        source_version: VersionRef,
        dest: &str,
        select: &dyn Fn(&str) -> bool,
    ) -> Result<Option<u64>, MetadataError> {
        self.write(|tx| curate::copy_tags(tx, source, source_version, dest, select))
    }

    fn copy_manifests(&self, source: &str, source_version: VersionRef, dest: &str, digests: &[Digest]) -> Result<Option<u64>, MetadataError> {
        self.write(|tx| curate::copy_manifests(tx, source, source_version, dest, digests))
    }

    fn remove_content(&self, repository: &str, tags: &[String], manifests: &[Digest]) -> Result<Option<u64>, MetadataError> {
        self.write(|tx| curate::remove(tx, repository, tags, manifests))
    }

    fn revert(&self, repository: &str, version: u64) -> Result<Option<u64>, MetadataError> {
        self.write(|tx| curate::revert(tx, repository, version))
    }

    fn create_push_repository(&self, name: &str, distribution: &str) -> Result<(), MetadataError> {
        self.write(|tx| {
            let id = match repository_row(tx, name)? {
                Some(row) if row.repo.kind != RepositoryKind::Push => {
                    return Err(MetadataError::Conflict(format!(
                        "repository {name:?} exists and is a {} repository",
                        row.repo.kind.as_str()
                    )))
                }
                Some(row) => row.id,
                None => {
                    let now = now_millis();
                    tx.execute(
                        "INSERT INTO repositories (name, kind, latest_version, created_at) VALUES (?1, 'push', 0, ?2)",
                        params![name, now],
                    )?;
                    let id = tx.last_insert_rowid();
                    tx.execute(
                        "INSERT INTO repository_versions (repository_id, number, created_at) VALUES (?1, 0, ?2)",
                        params![id, now],
                    )?;
                    id
                }
            };
            let served: bool =
                tx.query_row("SELECT EXISTS (SELECT 1 FROM distributions WHERE base_path = ?1)", [name], |r| r.get(0))?;
            if served {
                return Ok(());
            }
            for n in 1..=1000 {
                let candidate = numbered(distribution, n);
                if distribution_in(tx, &candidate)?.is_some() {
                    continue;
                }
                let now = now_millis();
                tx.execute(
                    "INSERT INTO distributions (name, base_path, repository_id, version, private, description, created_at, updated_at)
                     VALUES (?1, ?2, ?3, NULL, 0, 'created by the first push', ?4, ?4)",
                    params![candidate, name, id, now],
                )?;
                return Ok(());
            }
            Err(MetadataError::Conflict(format!("no free distribution name like {distribution:?}")))
        })
    }

    fn add_uploaded_blob(&self, repository: &str, blob: &Descriptor) -> Result<(), MetadataError> {
        self.write(|tx| {
            let repo = push_repository(tx, repository)?;
            let id = upsert_blob(tx, blob)?;
            tx.execute(
                "INSERT OR IGNORE INTO uploaded_blobs (repository_id, blob_id, created_at) VALUES (?1, ?2, ?3)",
                params![repo.id, id, now_millis()],
            )?;
            Ok(())
        })
    }

    fn push(&self, repository: &str, change: &PushChange) -> Result<Option<u64>, MetadataError> {
        self.write(|tx| {
            let mut repo = push_repository(tx, repository)?;
            let v = i64_of(repo.repo.latest_version) + 1;
            apply_push(tx, repo.id, change, v)?;
            close_version(tx, &mut repo, v)
        })
    }

    fn upstream_tag(&self, upstream: &str, remote_name: &str, tag: &str) -> Result<Option<Digest>, MetadataError> {
        self.read(|conn| {
            conn.query_row(
                "SELECT digest FROM upstream_tags WHERE upstream = ?1 AND remote_name = ?2 AND tag = ?3",
                params![upstream, remote_name, tag],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .map(digest_of)
            .transpose()
        })
    }

    fn set_upstream_tag(&self, upstream: &str, remote_name: &str, tag: &str, digest: Option<&Digest>) -> Result<(), MetadataError> {
        // Outside a transaction: one statement, and the write lock is held
        // for as short as SQLite allows.
        let conn = self.writer.lock().map_err(lock_error)?;
        match digest {
            Some(d) => conn.execute(
                "INSERT INTO upstream_tags (upstream, remote_name, tag, digest) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (upstream, remote_name, tag) DO UPDATE SET digest = excluded.digest",
                params![upstream, remote_name, tag, d.to_string()],
            )?,
            None => conn.execute(
                "DELETE FROM upstream_tags WHERE upstream = ?1 AND remote_name = ?2 AND tag = ?3",
                params![upstream, remote_name, tag],
            )?,
        };
        Ok(())
    }

    fn create_distribution(&self, new: &NewDistribution) -> Result<Distribution, MetadataError> {
        self.write(|tx| {
            if distribution_in(tx, &new.name)?.is_some() {
                return Err(MetadataError::Conflict(format!("distribution {:?} already exists", new.name)));
            }
            let repo = check_distribution(tx, &new.name, &new.base_path, &new.repository, new.version)?;
            let now = now_millis();
            tx.execute(
                "INSERT INTO distributions (name, base_path, repository_id, version, private, description, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                params![new.name, new.base_path, repo, new.version.map(i64_of), new.private, new.description, now],
            )?;
            distribution_in(tx, &new.name)?.ok_or_else(|| MetadataError::Database("distribution vanished after insert".into()))
        })
    }

    fn update_distribution(&self, name: &str, patch: &DistributionPatch) -> Result<Distribution, MetadataError> {
        self.write(|tx| {
            let Some(mut d) = distribution_in(tx, name)? else {
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
            let repo = check_distribution(tx, name, &d.base_path, &d.repository, d.version)?;
            tx.execute(
                "UPDATE distributions SET base_path = ?2, repository_id = ?3, version = ?4, private = ?5, description = ?6,
                 updated_at = ?7 WHERE name = ?1",
                params![name, d.base_path, repo, d.version.map(i64_of), d.private, d.description, now_millis()],
            )?;
            distribution_in(tx, name)?.ok_or_else(|| MetadataError::Database("distribution vanished after update".into()))
        })
    }

    fn delete_distribution(&self, name: &str) -> Result<(), MetadataError> {
        self.write(|tx| match tx.execute("DELETE FROM distributions WHERE name = ?1", [name])? {
            0 => Err(MetadataError::NotFound(format!("distribution {name:?} does not exist"))),
            _ => Ok(()),
        })
    }

    fn create_remote(&self, remote: &Remote) -> Result<Remote, MetadataError> {
        self.write(|tx| {
            if remote_in(tx, &remote.name)?.is_some() {
                return Err(MetadataError::Conflict(format!("remote {:?} already exists", remote.name)));
            }
            let now = now_millis();
            let stored = Remote { created_at: now, updated_at: now, ..remote.clone() };
            write_remote(tx, &remote.name, &stored, true)?;
            Ok(stored)
        })
    }

    fn update_remote(
        &self,
        name: &str,
        change: &mut dyn FnMut(&mut Remote) -> Result<(), MetadataError>,
    ) -> Result<Remote, MetadataError> {
        self.write(|tx| {
            let Some(mut remote) = remote_in(tx, name)? else {
                return Err(MetadataError::NotFound(format!("remote {name:?} does not exist")));
            };
            change(&mut remote)?;
            if remote.name != name && remote_in(tx, &remote.name)?.is_some() {
                return Err(MetadataError::Conflict(format!("remote {:?} already exists", remote.name)));
            }
            remote.updated_at = now_millis();
            write_remote(tx, name, &remote, false)?;
            Ok(remote)
        })
    }

    fn delete_remote(&self, name: &str) -> Result<(), MetadataError> {
        self.write(|tx| match tx.execute("DELETE FROM remotes WHERE name = ?1", [name])? {
            0 => Err(MetadataError::NotFound(format!("remote {name:?} does not exist"))),
            _ => Ok(()),
        })
    }

    fn remote(&self, name: &str) -> Result<Option<Remote>, MetadataError> {
        self.read(|conn| remote_in(conn, name))
    }

    fn remotes(&self, page: PageRequest) -> Result<Page<Remote>, MetadataError> {
        self.read(|conn| {
            let total = count(conn, "FROM remotes", &[])?;
            let (limit, offset) = limit_of(page);
            let mut stmt = conn.prepare(&format!("{REMOTE_SELECT} ORDER BY name LIMIT ?1 OFFSET ?2"))?;
            let mut items = Vec::new();
            for row in stmt.query_map(params![limit, offset], remote_from_row)? {
                items.push(row??);
            }
            Ok(Page { total, items })
        })
    }

    fn distribution(&self, name: &str) -> Result<Option<Distribution>, MetadataError> {
        self.read(|conn| distribution_in(conn, name))
    }

    fn create_task(&self, kind: &str, resource: Option<&str>, params: &serde_json::Value) -> Result<Task, MetadataError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO tasks (kind, resource, params, state, created_at) VALUES (?1, ?2, ?3, 'waiting', ?4)",
                params![kind, resource, params.to_string(), now_millis()],
            )?;
            require_task(tx, u64_of(tx.last_insert_rowid()))
        })
    }

    fn task(&self, id: u64) -> Result<Option<Task>, MetadataError> {
        self.read(|conn| task_in(conn, id))
    }

    fn tasks(&self, filter: &TaskFilter, page: PageRequest) -> Result<Page<Task>, MetadataError> {
        self.read(|conn| {
            let state = filter.state.map(TaskState::as_str);
            let from = "FROM tasks WHERE (:state IS NULL OR state = :state) AND (:kind IS NULL OR kind = :kind)
                AND (:resource IS NULL OR resource = :resource)";
            let total = count(
                conn,
                from,
                named_params! {":state": state, ":kind": filter.kind, ":resource": filter.resource},
            )?;
            let (limit, offset) = limit_of(page);
            // Ids grow with every insert: the newest task has the largest.
            let mut stmt = conn.prepare(&format!(
                "SELECT {TASK_COLUMNS} {from} ORDER BY id DESC LIMIT :limit OFFSET :offset"
            ))?;
            let rows = stmt.query_map(
                named_params! {":state": state, ":kind": filter.kind, ":resource": filter.resource,
                               ":limit": limit, ":offset": offset},
                task_from_row,
            )?;
            let mut items = Vec::new();
            for row in rows {
                items.push(row??);
            }
            Ok(Page { total, items })
        })
    }

    fn start_task(&self, id: u64) -> Result<Task, MetadataError> {
        self.write(|tx| {
            let started = tx.execute(
                "UPDATE tasks SET state = 'running', started_at = ?2 WHERE id = ?1 AND state = 'waiting'",
                params![i64_of(id), now_millis()],
            )?;
            if started == 0 {
                return Err(unchanged_task(tx, id, "only a waiting task can start"));
            }
            require_task(tx, id)
        })
    }

    fn task_progress(&self, id: u64, progress: TaskProgress) -> Result<bool, MetadataError> {
        // One statement: outside a transaction, as short as SQLite allows.
        let conn = self.writer.lock().map_err(lock_error)?;
        let written = conn.execute(
            "UPDATE tasks SET items_done = ?2, items_total = ?3, bytes_done = ?4 WHERE id = ?1 AND state = 'running'",
            params![
                i64_of(id),
                i64_of(progress.items_done),
                progress.items_total.map(i64_of),
                i64_of(progress.bytes_done)
            ],
        )?;
        Ok(written > 0)
    }

    fn finish_task(
        &self,
        id: u64,
        state: TaskState,
        error: Option<&str>,
        created: &[CreatedResource],
    ) -> Result<Task, MetadataError> {
        if !state.is_finished() {
            return Err(MetadataError::Invalid(format!("a task cannot finish as {}", state.as_str())));
        }
        let created = serde_json::to_string(created)
            .map_err(|e| MetadataError::Invalid(format!("created resources of task {id}: {e}")))?;
        self.write(|tx| {
            let finished = tx.execute(
                &format!(
                    "UPDATE tasks SET state = ?2, error = ?3, created_resources = ?4, finished_at = ?5
                     WHERE id = ?1 AND {TASK_UNFINISHED}"
                ),
                params![i64_of(id), state.as_str(), error, created, now_millis()],
            )?;
            if finished == 0 {
                return Err(unchanged_task(tx, id, "a finished task never changes"));
            }
            require_task(tx, id)
        })
    }

    fn cancel_task(&self, id: u64, message: &str) -> Result<Task, MetadataError> {
        self.write(|tx| {
            let canceled = tx.execute(
                "UPDATE tasks SET state = 'canceled', error = ?2, finished_at = ?3 WHERE id = ?1 AND state = 'waiting'",
                params![i64_of(id), message, now_millis()],
            )?;
            match task_in(tx, id)? {
                None => Err(MetadataError::NotFound(format!("task {id} does not exist"))),
                // Canceled just now, or running: its runner stops it.
                Some(t) if canceled > 0 || t.state == TaskState::Running => Ok(t),
                Some(t) => Err(MetadataError::Conflict(format!("task {id} has already finished: it is {}", t.state.as_str()))),
            }
        })
    }

    fn interrupt_tasks(&self, message: &str) -> Result<u64, MetadataError> {
        self.write(|tx| {
            let n = tx.execute(
                &format!("UPDATE tasks SET state = 'failed', error = ?1, finished_at = ?2 WHERE {TASK_UNFINISHED}"),
                params![message, now_millis()],
            )?;
            Ok(n as u64)
        })
    }

    fn ping(&self) -> Result<(), MetadataError> {
        // A schema table, so the query reaches the database file, not only
        // the connection.
        self.read(|c| Ok(c.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)).map(|_| ())?))
    }

    fn distributions(&self, page: PageRequest) -> Result<Page<Distribution>, MetadataError> {
        self.read(|conn| {
            let total = count(conn, "FROM distributions", &[])?;
            let (limit, offset) = limit_of(page);
            let mut stmt = conn.prepare(&format!("{DISTRIBUTION_SELECT} ORDER BY d.name LIMIT ?1 OFFSET ?2"))?;
            let items = stmt.query_map(params![limit, offset], distribution_from_row)?.collect::<Result<_, _>>()?;
            Ok(Page { total, items })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;

    pub(super) fn digest(seed: &str) -> Digest {
        Digest::of(Algorithm::Sha256, seed.as_bytes())
    }

    pub(super) fn blob(seed: &str) -> Descriptor {
        Descriptor { digest: digest(seed), media_type: Some("application/octet-stream".into()), size: Some(seed.len() as u64) }
    }

    /// An image manifest named `seed` with a config and the given layers.
    pub(super) fn image(seed: &str, layers: &[&str]) -> ManifestFacts {
        ManifestFacts {
            digest: digest(seed),
            media_type: crate::oci::media::OCI_MANIFEST.into(),
            size: 100,
            artifact_type: None,
            subject: None,
            config: Some(blob(&format!("{seed}-config"))),
            layers: layers.iter().map(|l| blob(l)).collect(),
            children: Vec::new(),
            annotations: None,
        }
    }

    fn origin() -> Origin {
        Origin { upstream: "up".into(), remote_name: "app".into(), retain_versions: None }
    }

    pub(super) fn pulled(facts: ManifestFacts, tag: Option<&str>) -> Recording {
        Recording {
            repository: "up/app".into(),
            origin: origin(),
            change: Change::Manifest { facts, tag: tag.map(str::to_owned) },
        }
    }

    /// Creates a sync repository (no remote, additive, unscheduled).
    pub(super) fn sync_repository(s: &SqliteStore, name: &str) {
        let new = NewRepository {
            name: name.into(),
            description: None,
            retain_versions: None,
            remote: None,
            sync_mirror: false,
            sync_interval: None,
            next_sync_at: None,
        };
        s.create_repository(&new).unwrap();
    }

    pub(super) fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("wharf.db")).unwrap();
        (dir, store)
    }

    pub(super) fn counts(tags: u64, manifests: u64, blobs: u64) -> Counts {
        Counts { tags, manifests, blobs, signatures: 0 }
    }

    fn tag_of(s: &SqliteStore, v: VersionRef, tag: &str) -> Option<Digest> {
        s.resolve_tag("up/app", v, tag).unwrap().map(|t| t.digest)
    }

    #[test]
    fn pulls_make_versions_with_summaries_and_a_moved_tag_keeps_old_versions() {
        let (_d, s) = open();
        let created = s.record(&[pulled(image("m1", &["l1", "shared"]), Some("1"))]).unwrap();
        assert_eq!(created, vec![Created { repository: "up/app".into(), number: 1 }]);
        s.record(&[pulled(image("m2", &["l2", "shared"]), Some("2"))]).unwrap();
        s.record(&[pulled(image("m3", &["l3"]), Some("1"))]).unwrap();

        let v1 = s.version("up/app", Some(1)).unwrap();
        assert_eq!(v1.base_version, Some(0));
        assert_eq!(v1.summary.added, counts(1, 1, 3));
        assert_eq!(v1.summary.present, counts(1, 1, 3));
        let v2 = s.version("up/app", Some(2)).unwrap();
        assert_eq!(v2.summary.added, counts(1, 1, 2), "the shared layer is already present");
        assert_eq!(v2.summary.present, counts(2, 2, 5));
        let v3 = s.version("up/app", None).unwrap();
        assert_eq!(v3.number, 3);
        assert_eq!(v3.summary.added, counts(1, 1, 2));
        assert_eq!(v3.summary.removed, counts(1, 0, 0), "only the old tag leaves; its manifest stays");
        assert_eq!(v3.summary.present, counts(2, 3, 7));

        assert_eq!(tag_of(&s, Some(1), "1"), Some(digest("m1")));
        assert_eq!(tag_of(&s, Some(2), "1"), Some(digest("m1")));
        assert_eq!(tag_of(&s, None, "1"), Some(digest("m3")));
        assert_eq!(tag_of(&s, Some(1), "2"), None);
        assert_eq!(s.tag_names("up/app", None).unwrap(), vec!["1", "2"]);
        assert_eq!(s.versions("up/app", PageRequest::default()).unwrap().total, 4, "versions 0 to 3");
        let repo = s.repository("up/app").unwrap().unwrap();
        assert_eq!((repo.kind, repo.latest_version, repo.upstream.as_deref()), (RepositoryKind::PullThrough, 3, Some("up")));
    }

    #[test]
    fn recording_what_is_already_there_makes_no_version() {
        let (_d, s) = open();
        s.record(&[pulled(image("m1", &["l1"]), Some("1"))]).unwrap();
        assert!(s.record(&[pulled(image("m1", &["l1"]), Some("1"))]).unwrap().is_empty());
        assert!(s.record(&[pulled(image("m1", &["l1"]), None)]).unwrap().is_empty());
        assert_eq!(s.repository("up/app").unwrap().unwrap().latest_version, 1);
    }

    #[test]
    fn one_batch_is_one_version_even_when_a_tag_moves_twice() {
        let (_d, s) = open();
        s.record(&[pulled(image("m1", &["l1"]), Some("t"))]).unwrap();
        let created = s
            .record(&[pulled(image("m2", &["l2"]), Some("t")), pulled(image("m3", &["l3"]), Some("t"))])
            .unwrap();
        assert_eq!(created.len(), 1);
        let v2 = s.version("up/app", None).unwrap();
        assert_eq!(v2.summary.added.tags, 1);
        assert_eq!(v2.summary.removed.tags, 1);
        assert_eq!(tag_of(&s, None, "t"), Some(digest("m3")));
    }

    #[test]
    fn a_removed_tag_leaves_the_next_version() {
        let (_d, s) = open();
        s.record(&[pulled(image("m1", &["l1"]), Some("t"))]).unwrap();
        let gone = Recording { repository: "up/app".into(), origin: origin(), change: Change::TagRemoved { tag: "t".into() } };
        assert_eq!(s.record(std::slice::from_ref(&gone)).unwrap().len(), 1);
        assert_eq!(tag_of(&s, None, "t"), None);
        assert_eq!(tag_of(&s, Some(1), "t"), Some(digest("m1")));
        assert!(s.record(&[gone]).unwrap().is_empty(), "removing what is gone changes nothing");
    }

    #[test]
    fn deleting_a_version_keeps_every_other_version_exact() {
        let (_d, s) = open();
        s.record(&[pulled(image("m1", &["l1"]), Some("a"))]).unwrap(); // v1
        s.record(&[pulled(image("m2", &["l2"]), Some("a"))]).unwrap(); // v2: a -> m2
        s.record(&[pulled(image("m1", &["l1"]), Some("a"))]).unwrap(); // v3: a -> m1 again
        let before: Vec<_> = [Some(1), Some(3)].iter().map(|v| (tag_of(&s, *v, "a"), s.version("up/app", *v).unwrap().summary.present)).collect();
        s.delete_version("up/app", 2).unwrap();
        let after: Vec<_> = [Some(1), Some(3)].iter().map(|v| (tag_of(&s, *v, "a"), s.version("up/app", *v).unwrap().summary.present)).collect();
        assert_eq!(before, after);
        assert!(matches!(s.version("up/app", Some(2)), Err(MetadataError::NotFound(_))));
        let v3 = s.version("up/app", Some(3)).unwrap();
        assert_eq!(v3.base_version, Some(1));
        assert_eq!(v3.summary.added, counts(0, 1, 2), "m2 arrived after v1 and is still present");
        assert_eq!(v3.summary.removed, counts(0, 0, 0), "tag a is back where it was in v1");

        assert!(matches!(s.delete_version("up/app", 3), Err(MetadataError::Conflict(_))), "latest");
        assert!(matches!(s.delete_version("up/app", 9), Err(MetadataError::NotFound(_))));
    }

    #[test]
    fn retention_keeps_the_newest_versions_and_pinned_ones() {
        let (_d, s) = open();
        let keep2 = Origin { retain_versions: Some(2), ..origin() };
        let rec = |seed: &str, tag: &str| Recording {
            repository: "up/app".into(),
            origin: keep2.clone(),
            change: Change::Manifest { facts: image(seed, &[seed]), tag: Some(tag.into()) },
        };
        s.record(&[rec("m1", "1")]).unwrap();
        s.create_distribution(&NewDistribution {
            name: "pinned".into(),
            base_path: "pinned/app".into(),
            repository: "up/app".into(),
            version: Some(1),
            private: false,
            description: None,
        })
        .unwrap();
        for (i, m) in ["m2", "m3", "m4"].iter().enumerate() {
            s.record(&[rec(m, &format!("{}", i + 2))]).unwrap();
        }
        let numbers: Vec<u64> =
            s.versions("up/app", PageRequest::default()).unwrap().items.iter().map(|v| v.number).collect();
        assert_eq!(numbers, vec![4, 3, 1], "2 kept newest plus the pinned one");
        assert_eq!(s.version("up/app", None).unwrap().summary.present, counts(4, 4, 8));
        assert_eq!(tag_of(&s, Some(1), "1"), Some(digest("m1")));
    }

    #[test]
    fn content_listings_filter_and_page() {
        let (_d, s) = open();
        let mut index = image("idx", &[]);
        index.media_type = crate::oci::media::OCI_INDEX.into();
        index.config = None;
        index.children = vec![IndexChild {
            descriptor: Descriptor { digest: digest("m1"), media_type: Some(crate::oci::media::OCI_MANIFEST.into()), size: Some(100) },
            platform: Some(Platform { os: "linux".into(), architecture: "arm64".into(), variant: Some("v8".into()) }),
        }];
        s.record(&[pulled(index, Some("multi")), pulled(image("m1", &["l1", "l2"]), None)]).unwrap();
        let page = PageRequest { limit: 1, offset: 0 };
        let all = ContentFilter::default();
        let blobs = s.blobs("up/app", None, &all, page).unwrap();
        assert_eq!((blobs.total, blobs.items.len()), (3, 1));
        let one = ContentFilter { digest: Some(digest("l2")), tag: None };
        assert_eq!(s.blobs("up/app", None, &one, PageRequest::default()).unwrap().items[0].digest, digest("l2"));
        let manifests = s.manifests("up/app", Some(1), &all, PageRequest::default()).unwrap();
        assert_eq!(manifests.total, 2);
        let idx = manifests.items.iter().find(|m| m.facts.digest == digest("idx")).unwrap();
        assert_eq!(idx.facts.children.len(), 1);
        let child = manifests.items.iter().find(|m| m.facts.digest == digest("m1")).unwrap();
        assert_eq!(child.platform.as_ref().map(|p| p.architecture.as_str()), Some("arm64"));
        assert_eq!(child.facts.layers.len(), 2);
        let tags = s.tags("up/app", None, &ContentFilter { digest: None, tag: Some("multi".into()) }, page).unwrap();
        assert_eq!(tags.items[0].digest, digest("idx"));
        assert!(matches!(s.tags("up/app", Some(7), &all, page), Err(MetadataError::NotFound(_))));
        assert!(matches!(s.tags("no/such", None, &all, page), Err(MetadataError::NotFound(_))));
    }

    #[test]
    fn a_version_contains_what_its_manifests_point_at() {
        let (_d, s) = open();
        let mut index = image("idx", &[]);
        index.config = None;
        index.children = vec![IndexChild { descriptor: blob("other-platform"), platform: None }];
        s.record(&[pulled(index, Some("t")), pulled(image("m1", &["l1"]), None)]).unwrap();
        let has = |k, seed: &str| s.contains("up/app", None, k, &digest(seed)).unwrap();
        assert!(has(ContentType::Manifest, "idx"));
        assert!(has(ContentType::Manifest, "other-platform"), "listed by the index");
        assert!(has(ContentType::Blob, "l1"));
        assert!(!has(ContentType::Blob, "nope"));
        assert!(!has(ContentType::Manifest, "l1"));
    }

    #[test]
    fn distributions_check_their_target_and_base_path() {
        let (_d, s) = open();
        s.record(&[pulled(image("m1", &["l1"]), Some("1"))]).unwrap();
        let new = NewDistribution {
            name: "d1".into(),
            base_path: "apps/one".into(),
            repository: "up/app".into(),
            version: None,
            private: false,
            description: Some("first".into()),
        };
        let d = s.create_distribution(&new).unwrap();
        assert_eq!((d.repository.as_str(), d.version), ("up/app", None));
        assert!(matches!(s.create_distribution(&new), Err(MetadataError::Conflict(_))), "same name");
        let same_path = NewDistribution { name: "d2".into(), ..new.clone() };
        assert!(matches!(s.create_distribution(&same_path), Err(MetadataError::Conflict(_))), "same base_path");
        let bad_version = NewDistribution { name: "d3".into(), base_path: "x".into(), version: Some(5), ..new.clone() };
        assert!(matches!(s.create_distribution(&bad_version), Err(MetadataError::NotFound(_))));
        let no_repo = NewDistribution { name: "d4".into(), base_path: "y".into(), repository: "nope".into(), ..new.clone() };
        assert!(matches!(s.create_distribution(&no_repo), Err(MetadataError::NotFound(_))));

        let pinned = s
            .update_distribution("d1", &DistributionPatch { version: Some(Some(1)), description: Some(None), ..Default::default() })
            .unwrap();
        assert_eq!((pinned.version, pinned.description), (Some(1), None));
        assert!(matches!(s.delete_version("up/app", 1), Err(MetadataError::Conflict(_))));
        let latest = s.update_distribution("d1", &DistributionPatch { version: Some(None), ..Default::default() }).unwrap();
        assert_eq!(latest.version, None);
        assert_eq!(s.distributions(PageRequest::default()).unwrap().total, 1);
        s.delete_distribution("d1").unwrap();
        assert!(matches!(s.delete_distribution("d1"), Err(MetadataError::NotFound(_))));
    }

    fn pushed(s: &SqliteStore, change: PushChange) -> Option<u64> {
        s.push("team/app", &change).unwrap()
    }

    fn manifest_change(facts: ManifestFacts, tag: Option<&str>) -> PushChange {
        PushChange::Manifest { facts, tag: tag.map(str::to_owned) }
    }

    #[test]
    fn a_push_repository_comes_with_a_distribution_named_after_it() {
        let (_d, s) = open();
        s.create_distribution(&NewDistribution {
            name: "team.app".into(),
            base_path: "elsewhere".into(),
            repository: {
                s.record(&[pulled(image("m1", &["l1"]), None)]).unwrap();
                "up/app".into()
            },
            version: None,
            private: false,
            description: None,
        })
        .unwrap();
        s.create_push_repository("team/app", "team.app").unwrap();
        s.create_push_repository("team/app", "team.app").unwrap(); // again: nothing new
        let repo = s.repository("team/app").unwrap().unwrap();
        assert_eq!((repo.kind, repo.latest_version), (RepositoryKind::Push, 0));
        let all = s.distributions(PageRequest::default()).unwrap().items;
        let d = all.iter().find(|d| d.base_path == "team/app").unwrap();
        assert_eq!((d.name.as_str(), d.repository.as_str(), d.version), ("team.app-2", "team/app", None));
        assert_eq!(all.len(), 2);
        assert!(matches!(s.create_push_repository("up/app", "up.app"), Err(MetadataError::Conflict(_))));
        assert!(matches!(s.push("up/app", &PushChange::DeleteTag { tag: "x".into() }), Err(MetadataError::Conflict(_))));
        assert_eq!(numbered(&"x".repeat(64), 12).len(), 64);
    }

    #[test]
    fn uploaded_blobs_are_visible_in_the_latest_version_until_a_manifest_makes_them_content() {
        let (_d, s) = open();
        s.create_push_repository("team/app", "team.app").unwrap();
        let has_blob = |v: VersionRef, seed: &str| s.contains("team/app", v, ContentType::Blob, &digest(seed)).unwrap();
        s.add_uploaded_blob("team/app", &blob("m1-config")).unwrap();
        s.add_uploaded_blob("team/app", &blob("l1")).unwrap();
        s.add_uploaded_blob("team/app", &blob("stray")).unwrap();
        assert!(has_blob(None, "l1"), "uploaded: visible");
        assert!(!has_blob(None, "other"));
        assert_eq!(s.repository("team/app").unwrap().unwrap().latest_version, 0, "uploads make no version");

        assert_eq!(pushed(&s, manifest_change(image("m1", &["l1"]), Some("1"))), Some(1));
        let v1 = s.version("team/app", Some(1)).unwrap();
        assert_eq!(v1.summary.added, counts(1, 1, 2));
        assert!(has_blob(Some(1), "l1"), "now version content");
        assert!(has_blob(None, "stray"), "still an uploaded blob of the latest version");
        assert!(!has_blob(Some(0), "l1"));
        assert!(s.contains("team/app", None, ContentType::Manifest, &digest("m1")).unwrap());
        assert_eq!(pushed(&s, manifest_change(image("m1", &["l1"]), Some("1"))), None, "nothing changed");

        // Only pushed content counts: a layer of a manifest the index
        // lists is not implied in a push repository.
        let mut index = image("idx", &[]);
        index.config = None;
        index.children = vec![IndexChild { descriptor: blob("m1"), platform: None }];
        assert_eq!(pushed(&s, manifest_change(index, Some("multi"))), Some(2));
        assert!(!has_blob(None, "nope"));
    }

    #[test]
    fn deletes_make_versions_and_leave_older_versions_alone() {
        let (_d, s) = open();
        s.create_push_repository("team/app", "team.app").unwrap();
        pushed(&s, manifest_change(image("m1", &["l1"]), Some("a")));
        pushed(&s, manifest_change(image("m1", &["l1"]), Some("b")));
        pushed(&s, manifest_change(image("m2", &["l2"]), Some("c")));
        assert_eq!(s.tag_names("team/app", None).unwrap(), vec!["a", "b", "c"]);

        assert_eq!(pushed(&s, PushChange::DeleteTag { tag: "c".into() }), Some(4));
        assert_eq!(s.tag_names("team/app", None).unwrap(), vec!["a", "b"]);
        assert!(s.contains("team/app", None, ContentType::Manifest, &digest("m2")).unwrap(), "the manifest stays");

        assert_eq!(pushed(&s, PushChange::DeleteManifest { digest: digest("m1") }), Some(5));
        let v5 = s.version("team/app", None).unwrap();
        assert_eq!(v5.summary.removed, counts(2, 1, 0), "both tags go with the manifest");
        assert!(s.tag_names("team/app", None).unwrap().is_empty());
        assert_eq!(s.tag_names("team/app", Some(3)).unwrap(), vec!["a", "b", "c"], "old versions keep theirs");

        assert_eq!(pushed(&s, PushChange::DeleteBlob { digest: digest("l1") }), Some(6));
        assert!(!s.contains("team/app", None, ContentType::Blob, &digest("l1")).unwrap());
        assert!(s.contains("team/app", Some(5), ContentType::Blob, &digest("l1")).unwrap());

        s.add_uploaded_blob("team/app", &blob("up")).unwrap();
        assert_eq!(pushed(&s, PushChange::DeleteBlob { digest: digest("up") }), None, "uploads are outside versions");
        assert!(!s.contains("team/app", None, ContentType::Blob, &digest("up")).unwrap());

        for gone in [
            PushChange::DeleteBlob { digest: digest("up") },
            PushChange::DeleteTag { tag: "a".into() },
            PushChange::DeleteManifest { digest: digest("m1") },
            PushChange::DeleteManifest { digest: digest("never") },
        ] {
            assert!(matches!(s.push("team/app", &gone), Err(MetadataError::NotFound(_))), "{gone:?}");
        }
        assert_eq!(s.repository("team/app").unwrap().unwrap().latest_version, 6);
    }

    fn remote(name: &str) -> Remote {
        Remote {
            name: name.into(),
            url: "https://quay.io".into(),
            upstream_name: "team/app".into(),
            include_tags: vec!["v1.*".into(), "sha256:00".into()],
            exclude_tags: vec!["*-rc?".into()],
            policy: SyncPolicy::OnDemand,
            credentials: Some(RemoteCredentials { username: "bot".into(), password: "s3cret".into() }),
            credentials_from: None,
            tls_verify: false,
            ca_cert: Some("-----BEGIN CERTIFICATE-----".into()),
            sigstore: None,
            download_concurrency: Some(4),
            rate_limit: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn remotes_round_trip_and_change_in_one_transaction() {
        let (_d, s) = open();
        let created = s.create_remote(&remote("quay")).unwrap();
        assert!(created.created_at > 0);
        assert_eq!(s.remote("quay").unwrap().unwrap(), created, "every field comes back as stored");
        assert!(matches!(s.create_remote(&remote("quay")), Err(MetadataError::Conflict(_))));
        s.create_remote(&remote("another")).unwrap();

        let changed = s
            .update_remote("quay", &mut |r| {
                r.name = "quay2".into();
                r.credentials = None;
                r.credentials_from = Some("docker.io".into());
                Ok(())
            })
            .unwrap();
        assert_eq!((changed.name.as_str(), changed.credentials.as_ref()), ("quay2", None));
        assert!(s.remote("quay").unwrap().is_none());
        let refused = s.update_remote("quay2", &mut |r| {
            r.policy = SyncPolicy::Immediate;
            Err(MetadataError::Invalid("no".into()))
        });
        assert!(matches!(refused, Err(MetadataError::Invalid(_))));
        assert_eq!(s.remote("quay2").unwrap().unwrap().policy, SyncPolicy::OnDemand, "a refused change writes nothing");
        let taken = s.update_remote("quay2", &mut |r| {
            r.name = "another".into();
            Ok(())
        });
        assert!(matches!(taken, Err(MetadataError::Conflict(_))));
        assert!(matches!(s.update_remote("nope", &mut |_| Ok(())), Err(MetadataError::NotFound(_))));

        let page = s.remotes(PageRequest { limit: 1, offset: 1 }).unwrap();
        assert_eq!((page.total, page.items[0].name.as_str()), (2, "quay2"));
        s.delete_remote("quay2").unwrap();
        assert!(matches!(s.delete_remote("quay2"), Err(MetadataError::NotFound(_))));
        assert!(!format!("{:?}", remote("x")).contains("s3cret"), "Debug hides the password");
    }

    #[test]
    fn a_task_is_created_waiting_then_runs_progresses_and_finishes_once() {
        let (_d, s) = open();
        let params = serde_json::json!({"remote": "quay", "mirror": true});
        let t = s.create_task("sync", Some("team/app"), &params).unwrap();
        assert_eq!((t.state, t.kind.as_str(), t.resource.as_deref()), (TaskState::Waiting, "sync", Some("team/app")));
        assert_eq!((t.params.clone(), t.progress, t.started_at, t.finished_at), (params, TaskProgress::default(), None, None));
        assert!(t.created_at > 0);
        assert!(!s.task_progress(t.id, TaskProgress { items_done: 1, ..Default::default() }).unwrap(), "not running yet");

        let running = s.start_task(t.id).unwrap();
        assert_eq!(running.state, TaskState::Running);
        assert!(running.started_at.is_some());
        assert!(matches!(s.start_task(t.id), Err(MetadataError::Conflict(_))), "starts once");
        let p = TaskProgress { items_done: 3, items_total: Some(10), bytes_done: 12345 };
        assert!(s.task_progress(t.id, p).unwrap());
        assert_eq!(s.task(t.id).unwrap().unwrap().progress, p);

        let created = [CreatedResource::RepositoryVersion { repository: "team/app".into(), number: 2 }];
        let done = s.finish_task(t.id, TaskState::Completed, None, &created).unwrap();
        assert_eq!((done.state, done.created_resources.as_slice()), (TaskState::Completed, &created[..]));
        assert!(done.finished_at.is_some());
        assert_eq!(s.task(t.id).unwrap().unwrap(), done, "every field comes back as stored");

        // Finished: nothing changes it any more.
        assert!(matches!(s.finish_task(t.id, TaskState::Failed, Some("late"), &[]), Err(MetadataError::Conflict(_))));
        assert!(!s.task_progress(t.id, TaskProgress { items_done: 99, ..p }).unwrap());
        assert!(matches!(s.cancel_task(t.id, "stop"), Err(MetadataError::Conflict(_))));
        assert!(matches!(s.start_task(t.id), Err(MetadataError::Conflict(_))));
        assert_eq!(s.interrupt_tasks("restart").unwrap(), 0);
        assert_eq!(s.task(t.id).unwrap().unwrap(), done);

        assert!(matches!(s.finish_task(t.id, TaskState::Running, None, &[]), Err(MetadataError::Invalid(_))));
        assert!(matches!(s.finish_task(999, TaskState::Failed, None, &[]), Err(MetadataError::NotFound(_))));
        assert!(matches!(s.start_task(999), Err(MetadataError::NotFound(_))));
        assert!(s.task(999).unwrap().is_none());
    }

    #[test]
    fn cancel_ends_a_waiting_task_and_leaves_a_running_one_to_its_runner() {
        let (_d, s) = open();
        let waiting = s.create_task("sync", None, &serde_json::json!({})).unwrap();
        let canceled = s.cancel_task(waiting.id, "canceled by request").unwrap();
        assert_eq!((canceled.state, canceled.error.as_deref()), (TaskState::Canceled, Some("canceled by request")));
        assert!(canceled.finished_at.is_some());
        assert!(matches!(s.start_task(waiting.id), Err(MetadataError::Conflict(_))), "a canceled task never starts");
        assert!(matches!(s.cancel_task(waiting.id, "canceled by request"), Err(MetadataError::Conflict(_))));

        let running = s.create_task("sync", None, &serde_json::json!({})).unwrap();
        s.start_task(running.id).unwrap();
        let still = s.cancel_task(running.id, "canceled by request").unwrap();
        assert_eq!((still.state, still.error), (TaskState::Running, None));
        assert!(matches!(s.cancel_task(12345, "x"), Err(MetadataError::NotFound(_))));
    }

    #[test]
    fn tasks_list_newest_first_filtered_and_paged() {
        let (_d, s) = open();
        let none = serde_json::json!({});
        let a = s.create_task("sync", Some("a"), &none).unwrap();
        let b = s.create_task("gc", None, &none).unwrap();
        let c = s.create_task("sync", Some("b"), &none).unwrap();
        let d = s.create_task("sync", Some("a"), &none).unwrap();
        s.start_task(d.id).unwrap();
        let ids = |f: TaskFilter, page: PageRequest| {
            let listed = s.tasks(&f, page).unwrap();
            (listed.total, listed.items.iter().map(|t| t.id).collect::<Vec<_>>())
        };
        let all = PageRequest::default();
        assert_eq!(ids(TaskFilter::default(), all), (4, vec![d.id, c.id, b.id, a.id]));
        assert_eq!(ids(TaskFilter::default(), PageRequest { limit: 2, offset: 1 }), (4, vec![c.id, b.id]));
        let sync = TaskFilter { kind: Some("sync".into()), ..Default::default() };
        assert_eq!(ids(sync, all), (3, vec![d.id, c.id, a.id]));
        let on_a = TaskFilter { resource: Some("a".into()), ..Default::default() };
        assert_eq!(ids(on_a, all), (2, vec![d.id, a.id]));
        let running = TaskFilter { state: Some(TaskState::Running), ..Default::default() };
        assert_eq!(ids(running, all), (1, vec![d.id]));
        let waiting_gc = TaskFilter { state: Some(TaskState::Waiting), kind: Some("gc".into()), resource: None };
        assert_eq!(ids(waiting_gc, all), (1, vec![b.id]));
        let nothing = TaskFilter { kind: Some("verify".into()), ..Default::default() };
        assert_eq!(ids(nothing, all), (0, vec![]));
    }

    #[test]
    fn interrupting_fails_every_unfinished_task_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wharf.db");
        let none = serde_json::json!({});
        let (waiting, running, done) = {
            let s = SqliteStore::open(&path).unwrap();
            let waiting = s.create_task("sync", Some("a"), &none).unwrap();
            let running = s.create_task("sync", Some("b"), &none).unwrap();
            s.start_task(running.id).unwrap();
            s.task_progress(running.id, TaskProgress { items_done: 2, items_total: Some(5), bytes_done: 7 }).unwrap();
            let done = s.create_task("sync", Some("c"), &none).unwrap();
            s.start_task(done.id).unwrap();
            let done = s.finish_task(done.id, TaskState::Completed, None, &[]).unwrap();
            (waiting, running, done)
        };
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.interrupt_tasks("interrupted by a restart").unwrap(), 2);
        for id in [waiting.id, running.id] {
            let t = s.task(id).unwrap().unwrap();
            assert_eq!((t.state, t.error.as_deref()), (TaskState::Failed, Some("interrupted by a restart")));
            assert!(t.finished_at.is_some());
        }
        assert_eq!(s.task(running.id).unwrap().unwrap().progress.items_done, 2, "progress made is kept");
        assert_eq!(s.task(done.id).unwrap().unwrap(), done);
    }

    #[test]
    fn task_states_round_trip_through_their_names() {
        for state in TaskState::ALL {
            assert_eq!(TaskState::parse(state.as_str()), Some(state));
        }
        assert_eq!(TaskState::parse("cancelled"), None);
        let finished: Vec<_> = TaskState::ALL.into_iter().filter(|s| s.is_finished()).map(TaskState::as_str).collect();
        assert_eq!(finished, ["completed", "failed", "canceled"]);
    }

    #[test]
    fn the_store_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wharf.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.record(&[pulled(image("m1", &["l1"]), Some("1"))]).unwrap();
            s.set_upstream_tag("up", "app", "1", Some(&digest("m1"))).unwrap();
            s.set_upstream_tag("up", "app", "1", Some(&digest("m2"))).unwrap();
            s.set_upstream_tag("up", "app", "gone", Some(&digest("m2"))).unwrap();
            s.set_upstream_tag("up", "app", "gone", None).unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(tag_of(&s, None, "1"), Some(digest("m1")));
        assert_eq!(s.upstream_tag("up", "app", "1").unwrap(), Some(digest("m2")));
        assert_eq!(s.upstream_tag("up", "app", "gone").unwrap(), None);
        let filter = RepositoryFilter { name_contains: Some("p/a".into()), ..Default::default() };
        assert_eq!(s.repositories(&filter, PageRequest::default()).unwrap().total, 1);
        let filter = RepositoryFilter { name_contains: Some("%".into()), ..Default::default() };
        assert_eq!(s.repositories(&filter, PageRequest::default()).unwrap().total, 0, "LIKE wildcards are literal");
    }
}
