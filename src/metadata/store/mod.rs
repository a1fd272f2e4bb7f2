//! The metadata store: every SQL statement wharf runs, written once for
//! both engines (see `db` for what differs between them), split by what
//! it keeps:
//!
//! - `repositories`: repository rows and looking them up;
//! - `versions`: closing, summarising, deleting and retaining versions;
//! - `content`: tags, manifests and blobs, their membership in versions,
//!   and listing them;
//! - `pullthrough`: recording pulls, and the tags an upstream named;
//! - `push`, `sync`, `curate`: the other ways versions are made;
//! - `signatures`, `distributions`, `remotes`, `tasks`;
//! - `keys`: the token signing keys a cluster's nodes share;
//! - `uploads`: the blob upload sessions a cluster's nodes share;
//! - `fills`: which node fetches a blob for the whole cluster, and leases;
//! - `exports`, `imports`: exports for air-gapped sites, the digests each
//!   carried, and the imports of them;
//! - `storage`: what eviction and gc need (references, last uses);
//! - `configs`: image configs' platform and labels, read once each.
//!
//! Migrations are numbered files applied in order, one transaction each,
//! on either engine.

use std::path::Path;

use super::db::postgres::{Postgres, Target};
use super::db::sqlite::Sqlite;
use super::db::Db;
use super::{
    AtomicSignature, BlobItem, ImageConfig, IndexSnapshot, ContentFilter, ContentType, Created, CreatedResource, Descriptor, Distribution,
    DistributionPatch, ExportRecord, ExportedVersion, FillClaim, ImportedRepository, ManifestItem, MetadataError, Millis, NewDistribution, NewRepository, Page, PageRequest,
    PushChange, Recording, Remote, Repository, RepositoryFilter, RepositoryPatch, SignatureItem, Store, SyncContent,
    SharedUpload, SyncMode, TagItem, Task, TaskFilter, TaskProgress, TaskState, UploadChunk, Version, VersionRef,
};
use crate::oci::Digest;

mod configs;
mod content;
mod curate;
mod distributions;
mod exports;
mod fills;
mod imports;
mod keys;
mod pullthrough;
mod push;
mod remotes;
mod repositories;
mod signatures;
mod storage;
mod sync;
mod tasks;
mod uploads;
mod versions;
#[cfg(test)]
pub(super) mod tests;

pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_initial.sql"),
    include_str!("../migrations/0002_push.sql"),
    include_str!("../migrations/0003_remotes_tasks.sql"),
    include_str!("../migrations/0004_sync.sql"),
    include_str!("../migrations/0005_signatures.sql"),
    include_str!("../migrations/0006_object_uses.sql"),
    include_str!("../migrations/0007_signature_counts.sql"),
    include_str!("../migrations/0008_cluster_tasks.sql"),
    include_str!("../migrations/0009_signing_keys.sql"),
    include_str!("../migrations/0010_upload_sessions.sql"),
    include_str!("../migrations/0011_fills.sql"),
    include_str!("../migrations/0012_leases.sql"),
    include_str!("../migrations/0013_exports.sql"),
    include_str!("../migrations/0014_imports.sql"),
    include_str!("../migrations/0015_task_log.sql"),
    include_str!("../migrations/0016_image_configs.sql"),
    include_str!("../migrations/0017_image_configs_recorded.sql"),
];

/// Membership of `rc` in version `:v`.
const PRESENT: &str = "rc.version_added <= :v AND (rc.version_removed IS NULL OR rc.version_removed > :v)";

/// The store on one of its engines.
pub(crate) enum SqlStore {
    Sqlite(Sqlite),
    Postgres(Postgres),
}

impl SqlStore {
    /// The embedded SQLite database at `path`, created and migrated as
    /// needed.
    #[cfg(test)]
    pub(crate) fn open_sqlite(path: &Path) -> Result<SqlStore, MetadataError> {
        Ok(SqlStore::Sqlite(Sqlite::open(path, MIGRATIONS)?))
    }

    /// The embedded SQLite database at `path`, telling `changes` what each
    /// committed transaction changed (as PostgreSQL's listener does).
    pub(crate) fn open_sqlite_announcing(path: &Path, changes: tokio::sync::broadcast::Sender<String>) -> Result<SqlStore, MetadataError> {
        let mut sqlite = Sqlite::open(path, MIGRATIONS)?;
        sqlite.announce_to(changes);
        Ok(SqlStore::Sqlite(sqlite))
    }

    /// A PostgreSQL database, migrated as needed.
    pub(crate) fn open_postgres(target: Target) -> Result<SqlStore, MetadataError> {
        Ok(SqlStore::Postgres(Postgres::open(target, MIGRATIONS)?))
    }

    fn read<T>(&self, f: impl FnOnce(&Db<'_>) -> Result<T, MetadataError>) -> Result<T, MetadataError> {
        match self {
            SqlStore::Sqlite(e) => e.read(f),
            SqlStore::Postgres(e) => e.read(f),
        }
    }

    /// `f` in one transaction, with no other writer beside it (on any node).
    fn write<T>(&self, f: impl FnOnce(&Db<'_>) -> Result<T, MetadataError>) -> Result<T, MetadataError> {
        match self {
            SqlStore::Sqlite(e) => e.write(f),
            SqlStore::Postgres(e) => e.write(f),
        }
    }

    /// `f` in one transaction that need not wait for other writers: its
    /// rows are kept consistent by compare-and-set (on SQLite, the one
    /// writer anyway).
    fn transaction<T>(&self, f: impl FnOnce(&Db<'_>) -> Result<T, MetadataError>) -> Result<T, MetadataError> {
        match self {
            SqlStore::Sqlite(e) => e.write(f),
            SqlStore::Postgres(e) => e.transaction(f),
        }
    }

    /// One statement that is atomic by itself, held as briefly as the
    /// engine allows: outside a transaction, and on PostgreSQL without the
    /// writers' lock.
    fn statement<T>(&self, f: impl FnOnce(&Db<'_>) -> Result<T, MetadataError>) -> Result<T, MetadataError> {
        match self {
            SqlStore::Sqlite(e) => e.statement(f),
            SqlStore::Postgres(e) => e.read(f),
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

impl Store for SqlStore {
    fn record(&self, batch: &[Recording]) -> Result<Vec<Created>, MetadataError> {
        let groups = pullthrough::group(batch);
        self.write(|db| pullthrough::record(db, &groups))
    }

    fn repositories(&self, filter: &RepositoryFilter, page: PageRequest) -> Result<Page<Repository>, MetadataError> {
        self.read(|db| repositories::list(db, filter, page))
    }

    fn repository(&self, name: &str) -> Result<Option<Repository>, MetadataError> {
        self.read(|db| Ok(repositories::row(db, name)?.map(|r| r.repo)))
    }

    fn versions(&self, repository: &str, page: PageRequest) -> Result<Page<Version>, MetadataError> {
        self.read(|db| versions::list(db, repository, page))
    }

    fn version(&self, repository: &str, number: VersionRef) -> Result<Version, MetadataError> {
        self.read(|db| versions::get(db, repository, number))
    }

    fn delete_version(&self, repository: &str, number: u64) -> Result<(), MetadataError> {
        self.write(|db| {
            let repo = repositories::require(db, repository)?;
            versions::delete(db, &repo, i64_of(number))
        })
    }

    fn tags(&self, repository: &str, version: VersionRef, filter: &ContentFilter, page: PageRequest) -> Result<Page<TagItem>, MetadataError> {
        self.read(|db| content::tags(db, (repository, version, page), filter))
    }

    fn manifests(&self, repository: &str, version: VersionRef, filter: &ContentFilter, page: PageRequest) -> Result<Page<ManifestItem>, MetadataError> {
        self.read(|db| content::manifests(db, (repository, version, page), filter))
    }

    fn blobs(&self, repository: &str, version: VersionRef, filter: &ContentFilter, page: PageRequest) -> Result<Page<BlobItem>, MetadataError> {
        self.read(|db| content::blobs(db, (repository, version, page), filter))
    }

    fn resolve_tag(&self, repository: &str, version: VersionRef, tag: &str) -> Result<Option<TagItem>, MetadataError> {
        let filter = ContentFilter { digest: None, tag: Some(tag.to_owned()) };
        Ok(self.tags(repository, version, &filter, PageRequest { limit: 1, offset: 0 })?.items.into_iter().next())
    }

    fn contains(&self, repository: &str, version: VersionRef, kind: ContentType, digest: &Digest) -> Result<bool, MetadataError> {
        self.read(|db| content::contains(db, repository, version, kind, digest))
    }

    fn tag_names(&self, repository: &str, version: VersionRef) -> Result<Vec<String>, MetadataError> {
        self.read(|db| content::tag_names(db, repository, version))
    }

    fn referrers(&self, repository: &str, version: VersionRef, digest: &Digest) -> Result<Vec<ManifestItem>, MetadataError> {
        self.read(|db| content::referrers(db, repository, version, digest))
    }

    fn create_repository(&self, new: &NewRepository) -> Result<Repository, MetadataError> {
        self.write(|db| sync::create_repository(db, new))
    }

    fn update_repository(&self, name: &str, patch: &RepositoryPatch) -> Result<Repository, MetadataError> {
        self.write(|db| sync::update_repository(db, name, patch))
    }

    fn delete_repository(&self, name: &str) -> Result<(), MetadataError> {
        self.write(|db| sync::delete_repository(db, name))
    }

    fn due_syncs(&self, now: Millis) -> Result<Vec<Repository>, MetadataError> {
        self.read(|db| sync::due_syncs(db, now))
    }

    fn sync(&self, repository: &str, remote: &str, content: &SyncContent, mode: SyncMode<'_>) -> Result<Option<u64>, MetadataError> {
        self.write(|db| sync::apply_sync(db, repository, remote, content, mode))
    }

    fn add_blob_sources(&self, digests: &[Digest], remote: &str, remote_name: &str) -> Result<(), MetadataError> {
        self.write(|db| sync::add_blob_sources(db, digests, remote, remote_name))
    }

    fn blob_sources(&self, digest: &Digest) -> Result<Vec<(String, String)>, MetadataError> {
        self.read(|db| sync::blob_sources(db, digest))
    }

    fn signatures(&self, repository: &str, version: VersionRef, manifest: &Digest) -> Result<Vec<AtomicSignature>, MetadataError> {
        self.read(|db| signatures::list(db, repository, version, manifest))
    }

    fn signature_items(&self, repository: &str, version: VersionRef, manifest: Option<&Digest>, page: PageRequest) -> Result<Page<SignatureItem>, MetadataError> {
        self.read(|db| signatures::items(db, (repository, version, page), manifest))
    }

    fn add_signature(&self, repository: &str, signature: &AtomicSignature) -> Result<Option<u64>, MetadataError> {
        self.write(|db| signatures::push(db, repository, signature))
    }

    fn storage_references(&self) -> Result<super::StorageReferences, MetadataError> {
        self.read(storage::storage_references)
    }

    fn record_uses(&self, uses: &[(Digest, Millis)]) -> Result<(), MetadataError> {
        self.write(|db| storage::record_uses(db, uses))
    }

    fn unread_configs(&self, after: u64, limit: u64) -> Result<Vec<(u64, Digest)>, MetadataError> {
        self.read(|db| configs::unread_configs(db, after, limit))
    }

    fn record_image_configs(&self, configs: &[ImageConfig]) -> Result<(), MetadataError> {
        // Rows of their own, each kept as first written: no writer to wait for.
        self.transaction(|db| configs::record_image_configs(db, configs))
    }

    fn index_snapshot(&self) -> Result<IndexSnapshot, MetadataError> {
        self.read(configs::index_snapshot)
    }

    #[cfg(test)]
    fn image_config(&self, digest: &Digest) -> Result<Option<ImageConfig>, MetadataError> {
        self.read(|db| configs::image_config(db, digest))
    }

    fn last_uses(&self) -> Result<std::collections::HashMap<String, Millis>, MetadataError> {
        self.read(storage::last_uses)
    }

    fn forget_uses(&self, digests: &[Digest]) -> Result<(), MetadataError> {
        self.write(|db| storage::forget_uses(db, digests))
    }

    fn copy_tags(
        &self,
        source: &str,
        source_version: VersionRef,
        dest: &str,
        select: &dyn Fn(&str) -> bool,
    ) -> Result<Option<u64>, MetadataError> {
        self.write(|db| curate::copy_tags(db, source, source_version, dest, select))
    }

    fn copy_manifests(&self, source: &str, source_version: VersionRef, dest: &str, digests: &[Digest]) -> Result<Option<u64>, MetadataError> {
        self.write(|db| curate::copy_manifests(db, source, source_version, dest, digests))
    }

    fn remove_content(&self, repository: &str, tags: &[String], manifests: &[Digest]) -> Result<Option<u64>, MetadataError> {
        self.write(|db| curate::remove(db, repository, tags, manifests))
    }

    fn revert(&self, repository: &str, version: u64) -> Result<Option<u64>, MetadataError> {
        self.write(|db| curate::revert(db, repository, version))
    }

    fn create_push_repository(&self, name: &str, distribution: &str) -> Result<(), MetadataError> {
        self.write(|db| push::create_repository(db, name, distribution))
    }

    fn add_uploaded_blob(&self, repository: &str, blob: &Descriptor) -> Result<(), MetadataError> {
        self.write(|db| push::add_uploaded_blob(db, repository, blob))
    }

    fn push(&self, repository: &str, change: &PushChange) -> Result<Option<u64>, MetadataError> {
        self.write(|db| push::push(db, repository, change))
    }

    fn upstream_tag(&self, upstream: &str, remote_name: &str, tag: &str) -> Result<Option<Digest>, MetadataError> {
        self.read(|db| pullthrough::upstream_tag(db, upstream, remote_name, tag))
    }

    fn set_upstream_tag(&self, upstream: &str, remote_name: &str, tag: &str, digest: Option<&Digest>) -> Result<(), MetadataError> {
        self.statement(|db| pullthrough::set_upstream_tag(db, upstream, remote_name, tag, digest))
    }

    fn create_distribution(&self, new: &NewDistribution) -> Result<Distribution, MetadataError> {
        self.write(|db| distributions::create(db, new))
    }

    fn update_distribution(&self, name: &str, patch: &DistributionPatch) -> Result<Distribution, MetadataError> {
        self.write(|db| distributions::update(db, name, patch))
    }

    fn delete_distribution(&self, name: &str) -> Result<(), MetadataError> {
        self.write(|db| distributions::delete(db, name))
    }

    fn create_remote(&self, remote: &Remote) -> Result<Remote, MetadataError> {
        self.write(|db| remotes::create(db, remote))
    }

    fn update_remote(
        &self,
        name: &str,
        change: &mut dyn FnMut(&mut Remote) -> Result<(), MetadataError>,
    ) -> Result<Remote, MetadataError> {
        self.write(|db| remotes::update(db, name, change))
    }

    fn delete_remote(&self, name: &str) -> Result<(), MetadataError> {
        self.write(|db| remotes::delete(db, name))
    }

    fn remote(&self, name: &str) -> Result<Option<Remote>, MetadataError> {
        self.read(|db| remotes::get(db, name))
    }

    fn remotes(&self, page: PageRequest) -> Result<Page<Remote>, MetadataError> {
        self.read(|db| remotes::list(db, page))
    }

    fn create_task(&self, node: &str, kind: &str, resource: Option<&str>, params: &serde_json::Value) -> Result<Task, MetadataError> {
        self.write(|db| tasks::create(db, node, kind, resource, params))
    }

    fn task(&self, id: u64) -> Result<Option<Task>, MetadataError> {
        self.read(|db| tasks::get(db, id))
    }

    fn tasks(&self, filter: &TaskFilter, page: PageRequest) -> Result<Page<Task>, MetadataError> {
        self.read(|db| tasks::list(db, filter, page))
    }

    fn start_task(&self, id: u64) -> Result<Option<Task>, MetadataError> {
        self.write(|db| tasks::start(db, id))
    }

    fn task_progress(&self, id: u64, progress: TaskProgress, step: Option<&str>, log: &str) -> Result<bool, MetadataError> {
        self.statement(|db| tasks::progress(db, id, progress, step, log))
    }

    fn task_log(&self, id: u64) -> Result<Option<String>, MetadataError> {
        self.read(|db| tasks::log(db, id))
    }

    fn cancel_requested(&self, id: u64) -> Result<bool, MetadataError> {
        self.read(|db| tasks::cancel_requested(db, id))
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
        self.write(|db| tasks::finish(db, id, state, error, &created))
    }

    fn cancel_task(&self, id: u64, message: &str) -> Result<Task, MetadataError> {
        self.write(|db| tasks::cancel(db, id, message))
    }

    fn interrupt_tasks(&self, node: &str, message: &str) -> Result<u64, MetadataError> {
        self.write(|db| tasks::interrupt(db, node, message))
    }

    fn node_heartbeat(&self, node: &str, started_at: Millis) -> Result<(), MetadataError> {
        self.statement(|db| tasks::heartbeat(db, node, started_at))
    }

    fn fail_orphaned_tasks(&self, before: Millis) -> Result<u64, MetadataError> {
        self.write(|db| tasks::fail_orphaned(db, before))
    }

    fn signing_keys(&self, name: &str) -> Result<Option<String>, MetadataError> {
        self.read(|db| keys::get(db, name))
    }

    fn swap_signing_keys(&self, name: &str, expected: Option<&str>, document: &str) -> Result<bool, MetadataError> {
        self.write(|db| keys::swap(db, name, expected, document))
    }

    fn claim_sync_schedule(&self, repository: &str, seen: Millis, next: Millis) -> Result<bool, MetadataError> {
        self.statement(|db| sync::claim_schedule(db, repository, seen, next))
    }

    fn claim_fill(&self, digest: &Digest, node: &str, address: &str, taking_over: Option<&str>) -> Result<FillClaim, MetadataError> {
        self.transaction(|db| fills::claim(db, &digest.to_string(), node, address, taking_over))
    }

    fn release_fill(&self, digest: &Digest, node: &str) -> Result<(), MetadataError> {
        self.statement(|db| fills::release(db, &digest.to_string(), node))
    }

    fn release_fills(&self, node: &str) -> Result<u64, MetadataError> {
        self.statement(|db| fills::release_all(db, node))
    }

    fn fills_in_flight(&self) -> Result<Vec<String>, MetadataError> {
        self.read(fills::in_flight)
    }

    fn take_lease(&self, name: &str, node: &str, now: Millis, until: Millis) -> Result<bool, MetadataError> {
        self.statement(|db| fills::take_lease(db, name, node, now, until))
    }

    fn create_export(&self, uuid: &str, path: &str, base: Option<u64>, repositories: &[ExportedVersion]) -> Result<ExportRecord, MetadataError> {
        self.write(|db| exports::create(db, uuid, path, base, repositories))
    }

    fn export(&self, id: u64) -> Result<Option<ExportRecord>, MetadataError> {
        self.read(|db| exports::get(db, id))
    }

    fn exports(&self, page: PageRequest) -> Result<Page<ExportRecord>, MetadataError> {
        self.read(|db| exports::list(db, page))
    }

    fn complete_export(&self, id: u64, size: u64, files: u64, digests: &[String]) -> Result<(), MetadataError> {
        self.write(|db| exports::complete(db, id, size, files, digests))
    }

    fn fail_export(&self, id: u64, error: &str) -> Result<(), MetadataError> {
        self.write(|db| exports::fail(db, id, error))
    }

    fn export_chain_digests(&self, id: u64) -> Result<std::collections::HashSet<String>, MetadataError> {
        self.read(|db| exports::chain_digests(db, id))
    }

    fn delete_export(&self, id: u64) -> Result<ExportRecord, MetadataError> {
        self.write(|db| exports::delete(db, id))
    }

    fn import_export(
        &self,
        uuid: &str,
        export_id: u64,
        base_uuid: Option<&str>,
        repositories: &[ImportedRepository],
    ) -> Result<Vec<(String, Option<u64>)>, MetadataError> {
        self.write(|db| imports::import(db, uuid, export_id, base_uuid, repositories))
    }

    fn imported(&self, uuid: &str) -> Result<bool, MetadataError> {
        self.read(|db| imports::imported(db, uuid))
    }

    fn create_upload(&self, id: &str, repository: &str) -> Result<(), MetadataError> {
        self.statement(|db| uploads::create(db, id, repository))
    }

    fn upload(&self, id: &str) -> Result<Option<SharedUpload>, MetadataError> {
        self.transaction(|db| uploads::get(db, id))
    }

    fn append_upload(&self, id: &str, chunk: &UploadChunk) -> Result<bool, MetadataError> {
        self.transaction(|db| uploads::append(db, id, chunk))
    }

    fn end_upload(&self, id: &str, size: Option<u64>) -> Result<Option<Vec<UploadChunk>>, MetadataError> {
        self.transaction(|db| uploads::end(db, id, size))
    }

    fn expire_uploads(&self, before: Millis) -> Result<Vec<(String, Vec<UploadChunk>)>, MetadataError> {
        self.transaction(|db| uploads::expire(db, before))
    }

    fn ping(&self) -> Result<(), MetadataError> {
        // A table, so the query reaches the database, not only the
        // connection.
        self.read(|db| db.query_one::<i64>("SELECT COUNT(*) FROM repositories WHERE id = 0", super::db::args![]).map(|_| ()))
    }

    fn distribution(&self, name: &str) -> Result<Option<Distribution>, MetadataError> {
        self.read(|db| distributions::get(db, name))
    }

    fn distributions(&self, page: PageRequest) -> Result<Page<Distribution>, MetadataError> {
        self.read(|db| distributions::list(db, page))
    }
}

/// `SELECT COUNT(*) {from}`.
fn count(db: &Db<'_>, from: &str, args: super::db::Args<'_>) -> Result<u64, MetadataError> {
    Ok(u64_of(db.query_one(&format!("SELECT COUNT(*) {from}"), args)?))
}
