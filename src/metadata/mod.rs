//! Metadata: repositories, their numbered versions, the content each version
//! holds (tags, manifests, blobs), distributions, remotes and background
//! tasks. Knows nothing of blob bytes, HTTP or upstreams.
//!
//! All SQL lives in [`store`], behind the [`Store`] trait, written once for
//! both engines ([`db`]: SQLite embedded, PostgreSQL shared by a cluster):
//! the rest of wharf sees typed records only.
//!
//! The version model: a content unit is a member of a repository from the
//! version that added it until the version that removed it (exclusive).
//! A version is therefore immutable once created, and a new version costs
//! rows for its changes only, never a copy of the whole content list.

pub(crate) mod db;
pub(crate) mod migrate;
mod model;
mod store;

use std::path::Path;
use std::sync::Arc;

use crate::oci::Digest;

pub(crate) use model::*;
pub(crate) use store::SqlStore;
#[cfg(test)]
pub(crate) use store::tests::TestDb;
/// What other modules' tests record: [`store::tests`]'s builders.
#[cfg(test)]
pub(crate) mod testing {
    pub(crate) use super::store::tests::{digest, image, pulled};
}

/// What a node hears when metadata it keeps in memory changed, by its own
/// commit or another node's ([`Metadata::changes`]).
pub(crate) mod changes {
    /// The distributions: base paths, their targets.
    pub(crate) const DISTRIBUTIONS: &str = "distributions";
    /// The token signing keys (a rotation).
    pub(crate) const KEYS: &str = "keys";
    /// A repository version was made.
    pub(crate) const VERSIONS: &str = "versions";
    /// Image configs' facts were recorded (`Store::record_image_configs`).
    pub(crate) const IMAGE_CONFIGS: &str = "image_configs";
    /// The listening connection was made again: changes may have been
    /// missed, so whatever is kept is to be read again.
    pub(crate) const RESYNC: &str = "resync";
}

/// The database file, under `storage.path`.
pub(crate) const DATABASE_FILE: &str = "wharf.db";

/// The narrow interface every metadata backend implements. Blocking calls:
/// the [`Metadata`] handle runs them off the async runtime.
pub(crate) trait Store: Send + Sync + 'static {
    /// Applies recordings; each repository they touch gets at most one new
    /// version, and only if something changed. One transaction.
    fn record(&self, batch: &[Recording]) -> Result<Vec<Created>, MetadataError>;

    fn repositories(&self, filter: &RepositoryFilter, page: PageRequest) -> Result<Page<Repository>, MetadataError>;
    fn repository(&self, name: &str) -> Result<Option<Repository>, MetadataError>;
    fn versions(&self, repository: &str, page: PageRequest) -> Result<Page<Version>, MetadataError>;
    fn version(&self, repository: &str, number: VersionRef) -> Result<Version, MetadataError>;
    /// Deletes a version that is neither the latest nor pinned by a
    /// distribution; its changes fold into the next version.
    fn delete_version(&self, repository: &str, number: u64) -> Result<(), MetadataError>;

    fn tags(&self, repository: &str, version: VersionRef, filter: &ContentFilter, page: PageRequest)
        -> Result<Page<TagItem>, MetadataError>;
    fn manifests(&self, repository: &str, version: VersionRef, filter: &ContentFilter, page: PageRequest)
        -> Result<Page<ManifestItem>, MetadataError>;
    fn blobs(&self, repository: &str, version: VersionRef, filter: &ContentFilter, page: PageRequest)
        -> Result<Page<BlobItem>, MetadataError>;

    /// The manifest `tag` names in a version, if the version has that tag.
    fn resolve_tag(&self, repository: &str, version: VersionRef, tag: &str) -> Result<Option<TagItem>, MetadataError>;
    /// Whether a version holds this manifest or blob (`Manifest` or `Blob`),
    /// directly or as something one of its manifests points at. A push
    /// repository holds exactly its content (everything in it was pushed),
    /// and its latest content (`version` None, never a number) also shows
    /// its uploaded blobs.
    fn contains(&self, repository: &str, version: VersionRef, kind: ContentType, digest: &Digest)
        -> Result<bool, MetadataError>;
    /// Every tag name in a version, sorted.
    fn tag_names(&self, repository: &str, version: VersionRef) -> Result<Vec<String>, MetadataError>;
    /// Manifests in a version whose `subject` is `digest`.
    fn referrers(&self, repository: &str, version: VersionRef, digest: &Digest) -> Result<Vec<ManifestItem>, MetadataError>;

    /// Creates the push repository `name` (kind `push`, empty version 0)
    /// unless it exists, and a distribution serving its latest version at
    /// base_path `name`, named `distribution` (or `distribution-2`, ... if
    /// taken), unless some distribution already serves that base_path. One
    /// transaction. A repository of that name that is not a push repository
    /// is a `Conflict`.
    /// Creates an empty sync repository (version 0); `Conflict` if the
    /// name is taken.
    fn create_repository(&self, new: &NewRepository) -> Result<Repository, MetadataError>;
    /// Changes a sync repository; other kinds are a `Conflict`.
    fn update_repository(&self, name: &str, patch: &RepositoryPatch) -> Result<Repository, MetadataError>;
    /// Deletes a sync or push repository with every version; `Conflict`
    /// while a distribution serves it, or for a pull-through repository.
    fn delete_repository(&self, name: &str) -> Result<(), MetadataError>;
    /// Sync repositories whose scheduled sync is due at `now`.
    fn due_syncs(&self, now: Millis) -> Result<Vec<Repository>, MetadataError>;
    /// Applies a sync's result to a sync repository in one transaction: at
    /// most one new version (its number), none if nothing changed. Records
    /// `remote` as where the repository last synced from, and a mirror
    /// sync marks it mirrored.
    fn sync(&self, repository: &str, remote: &str, content: &SyncContent, mode: SyncMode<'_>)
        -> Result<Option<u64>, MetadataError>;
    /// Remembers that these blobs can be fetched from `remote` (as
    /// `remote_name` there) until their bytes are stored.
    fn add_blob_sources(&self, digests: &[Digest], remote: &str, remote_name: &str) -> Result<(), MetadataError>;
    /// Where a blob not stored yet can be fetched: (remote, name there).
    fn blob_sources(&self, digest: &Digest) -> Result<Vec<(String, String)>, MetadataError>;
    /// The atomic signatures of `manifest` in a version of `repository`,
    /// in the order they were added.
    fn signatures(&self, repository: &str, version: VersionRef, manifest: &Digest)
        -> Result<Vec<AtomicSignature>, MetadataError>;
    /// The atomic signatures in a version (only those of `manifest` if
    /// given), by manifest digest and then in the order they were added.
    fn signature_items(&self, repository: &str, version: VersionRef, manifest: Option<&Digest>, page: PageRequest)
        -> Result<Page<SignatureItem>, MetadataError>;
    /// Adds a signature to a push repository whose latest version holds its
    /// manifest: one new version (None if it was there already).
    fn add_signature(&self, repository: &str, signature: &AtomicSignature) -> Result<Option<u64>, MetadataError>;

    /// What eviction and gc must know of the content: see [`StorageReferences`].
    fn storage_references(&self) -> Result<StorageReferences, MetadataError>;
    /// Records objects' last uses (millis), keeping the later of two.
    fn record_uses(&self, uses: &[(Digest, Millis)]) -> Result<(), MetadataError>;
    /// Up to `limit` recorded manifests after id `after` whose config is
    /// not read yet: (manifest id, config digest), in id order.
    fn unread_configs(&self, after: u64, limit: u64) -> Result<Vec<(u64, Digest)>, MetadataError>;
    /// What was read of image configs (a config seen again is kept as it was).
    fn record_image_configs(&self, configs: &[ImageConfig]) -> Result<(), MetadataError>;
    #[cfg(test)]
    fn image_config(&self, digest: &Digest) -> Result<Option<ImageConfig>, MetadataError>;
    /// Every distribution's tagged manifests at the version it serves, with
    /// what the registry index shows of them.
    fn index_snapshot(&self) -> Result<IndexSnapshot, MetadataError>;
    /// Every recorded last use, by digest.
    fn last_uses(&self) -> Result<std::collections::HashMap<String, Millis>, MetadataError>;
    /// Forgets the last uses of objects no longer stored.
    fn forget_uses(&self, digests: &[Digest]) -> Result<(), MetadataError>;

    /// Copies into `dest` the tags of `source`'s version (None: the latest)
    /// that `select` takes, each with its manifest and everything that
    /// needs: an index's child manifests, every manifest's config and
    /// layers, and its signatures (manifests whose subject it is, and
    /// cosign's `<alg>-<hex>.sig|.att|.sbom` tags for it), as far as the
    /// source version holds them. A copied tag that names another
    /// manifest in `dest` moves; that manifest stays. One transaction, at
    /// most one new version of `dest` (its number), none if `dest` already
    /// held it all. `dest` must be a sync or push repository (else
    /// `Conflict`); a push repository's uploaded blobs are left alone.
    fn copy_tags(&self, source: &str, source_version: VersionRef, dest: &str, select: &dyn Fn(&str) -> bool)
        -> Result<Option<u64>, MetadataError>;
    /// As `copy_tags`, from manifests named by digest, with no tags but
    /// the cosign tags of the manifests copied. A digest the source
    /// version does not hold is `NotFound`.
    fn copy_manifests(&self, source: &str, source_version: VersionRef, dest: &str, digests: &[Digest])
        -> Result<Option<u64>, MetadataError>;
    /// Removes tags, and manifests with every tag naming them; then the
    /// blobs and child manifests of removed manifests that nothing left
    /// in the repository needs (no remaining manifest points at them, no
    /// tag names them). A name the latest version does not hold is
    /// `NotFound` and nothing changes. At most one new version; sync and
    /// push repositories only.
    fn remove_content(&self, repository: &str, tags: &[String], manifests: &[Digest])
        -> Result<Option<u64>, MetadataError>;
    /// Makes a new latest version whose content is exactly that of
    /// `version` (`NotFound` if there is none); no version if the latest
    /// already holds exactly that. Sync and push repositories only.
    fn revert(&self, repository: &str, version: u64) -> Result<Option<u64>, MetadataError>;

    fn create_push_repository(&self, name: &str, distribution: &str) -> Result<(), MetadataError>;
    /// Makes `blob` an uploaded blob of the push repository: visible in
    /// its latest version without being version content.
    fn add_uploaded_blob(&self, repository: &str, blob: &Descriptor) -> Result<(), MetadataError>;
    /// Applies one push change: the new version's number, or None when the
    /// change left the version content as it was. `NotFound` when what a
    /// delete names is not in the repository.
    fn push(&self, repository: &str, change: &PushChange) -> Result<Option<u64>, MetadataError>;

    /// What an upstream's tag pointed at when last confirmed.
    fn upstream_tag(&self, upstream: &str, remote_name: &str, tag: &str) -> Result<Option<Digest>, MetadataError>;
    /// Remembers (or, with None, forgets) what an upstream's tag points at.
    fn set_upstream_tag(&self, upstream: &str, remote_name: &str, tag: &str, digest: Option<&Digest>)
        -> Result<(), MetadataError>;

    /// Stores a new remote (its times are set here); `Conflict` if the
    /// name is taken.
    fn create_remote(&self, remote: &Remote) -> Result<Remote, MetadataError>;
    /// Changes a remote in one transaction: `change` gets the stored
    /// remote and may refuse (its error is returned, nothing is written).
    fn update_remote(&self, name: &str, change: &mut dyn FnMut(&mut Remote) -> Result<(), MetadataError>)
        -> Result<Remote, MetadataError>;
    fn delete_remote(&self, name: &str) -> Result<(), MetadataError>;
    fn remote(&self, name: &str) -> Result<Option<Remote>, MetadataError>;
    fn remotes(&self, page: PageRequest) -> Result<Page<Remote>, MetadataError>;

    /// Stores a new task, `waiting`, to be run by `node`, with its
    /// creation time.
    fn create_task(&self, node: &str, kind: &str, resource: Option<&str>, params: &serde_json::Value)
        -> Result<Task, MetadataError>;
    fn task(&self, id: u64) -> Result<Option<Task>, MetadataError>;
    /// Tasks matching `filter`, newest first.
    fn tasks(&self, filter: &TaskFilter, page: PageRequest) -> Result<Page<Task>, MetadataError>;
    /// A waiting task becomes `running`, with its start time, unless its
    /// resource is busy on any node (another task on it running, or an
    /// earlier one waiting): then None, and it stays waiting. `Conflict`
    /// unless it is waiting (a cancel may have finished it first).
    fn start_task(&self, id: u64) -> Result<Option<Task>, MetadataError>;
    /// Records a running task's progress (nothing if it is not running):
    /// its counts, the step it is at (kept when None), and `log` appended
    /// to its log. Whether a cancel was asked for it, on any node.
    fn task_progress(&self, id: u64, progress: TaskProgress, step: Option<&str>, log: &str) -> Result<bool, MetadataError>;
    /// Task `id`'s log ("" when it wrote none); None if there is no such task.
    fn task_log(&self, id: u64) -> Result<Option<String>, MetadataError>;
    /// Whether a cancel was asked for task `id`, on any node.
    fn cancel_requested(&self, id: u64) -> Result<bool, MetadataError>;
    /// Ends a waiting or running task in `state` (a finished one, else
    /// `Invalid`). `Conflict` if it had already finished: a finished task
    /// never changes.
    fn finish_task(&self, id: u64, state: TaskState, error: Option<&str>, created: &[CreatedResource])
        -> Result<Task, MetadataError>;
    /// Cancels a waiting task at once (`canceled`, with `message` as its
    /// error); a running one is marked for its runner, on whichever node,
    /// to stop, and returned as it is. `Conflict` if it had finished,
    /// `NotFound` if there is no such task.
    fn cancel_task(&self, id: u64, message: &str) -> Result<Task, MetadataError>;
    /// Fails every waiting or running task of `node` (and those recorded
    /// before tasks had nodes) with `message`; how many. At its start, none
    /// of a node's tasks can still be running: they were its last
    /// process's.
    fn interrupt_tasks(&self, node: &str, message: &str) -> Result<u64, MetadataError>;
    /// Records that `node`, started at `started_at`, is alive now.
    fn node_heartbeat(&self, node: &str, started_at: Millis) -> Result<(), MetadataError>;
    /// Fails the waiting and running tasks of every node whose last
    /// heartbeat is older than `before`: their runner is gone. How many.
    fn fail_orphaned_tasks(&self, before: Millis) -> Result<u64, MetadataError>;
    /// Claims the scheduled sync of `repository` that was due at `seen`,
    /// moving its next run to `next`; false if another node claimed it
    /// first (or the schedule changed), so a schedule fires once however
    /// many nodes look.
    fn claim_sync_schedule(&self, repository: &str, seen: Millis, next: Millis) -> Result<bool, MetadataError>;

    /// The signing key document `name`, if any node stored one.
    fn signing_keys(&self, name: &str) -> Result<Option<String>, MetadataError>;
    /// Stores key document `document` as `name` if the stored one is still
    /// `expected` (None: there is none yet); false, and nothing written,
    /// if another node changed it first.
    fn swap_signing_keys(&self, name: &str, expected: Option<&str>, document: &str) -> Result<bool, MetadataError>;

    /// Claims the fill of `digest` for `node` (whose cluster port is
    /// `address`), unless another node fills it already; with
    /// `taking_over`, a claim of that node (which stopped answering) is
    /// taken.
    fn claim_fill(&self, digest: &Digest, node: &str, address: &str, taking_over: Option<&str>) -> Result<FillClaim, MetadataError>;
    /// Ends `node`'s claim on the fill of `digest`.
    fn release_fill(&self, digest: &Digest, node: &str) -> Result<(), MetadataError>;
    /// Ends every fill claim of `node`; how many.
    fn release_fills(&self, node: &str) -> Result<u64, MetadataError>;
    /// Every digest some node is filling.
    fn fills_in_flight(&self) -> Result<Vec<String>, MetadataError>;
    /// Takes or renews lease `name` for `node` until `until`, unless
    /// another node holds it past `now`; whether `node` holds it now.
    fn take_lease(&self, name: &str, node: &str, now: Millis, until: Millis) -> Result<bool, MetadataError>;

    /// Records export `uuid` being written into `path`, building on `base`
    /// (which must be complete).
    fn create_export(&self, uuid: &str, path: &str, base: Option<u64>, repositories: &[ExportedVersion]) -> Result<ExportRecord, MetadataError>;
    fn export(&self, id: u64) -> Result<Option<ExportRecord>, MetadataError>;
    /// Exports, newest first.
    fn exports(&self, page: PageRequest) -> Result<Page<ExportRecord>, MetadataError>;
    /// Marks an export complete: its archive's size and files, and every
    /// digest it carried.
    fn complete_export(&self, id: u64, size: u64, files: u64, digests: &[String]) -> Result<(), MetadataError>;
    fn fail_export(&self, id: u64, error: &str) -> Result<(), MetadataError>;
    /// Every digest export `id` and the exports it builds on carried.
    fn export_chain_digests(&self, id: u64) -> Result<std::collections::HashSet<String>, MetadataError>;
    /// Forgets an export no other builds on (its files are the caller's).
    fn delete_export(&self, id: u64) -> Result<ExportRecord, MetadataError>;

    /// (The import task, next, calls this and [`Store::imported`].)
    ///
    /// Imports export `uuid` (made as number `export_id`, building on
    /// `base_uuid`) in one transaction: each repository's new version,
    /// None where it held that content already. `Conflict` if it was
    /// imported before, or its base was not.
    #[allow(dead_code)]
    fn import_export(
        &self,
        uuid: &str,
        export_id: u64,
        base_uuid: Option<&str>,
        repositories: &[ImportedRepository],
    ) -> Result<Vec<(String, Option<u64>)>, MetadataError>;
    /// Whether export `uuid` was imported here.
    #[allow(dead_code)]
    fn imported(&self, uuid: &str) -> Result<bool, MetadataError>;

    /// Starts an upload session shared by the cluster's nodes, empty.
    fn create_upload(&self, id: &str, repository: &str) -> Result<(), MetadataError>;
    /// A shared upload session, with its chunks in order.
    fn upload(&self, id: &str) -> Result<Option<SharedUpload>, MetadataError>;
    /// Appends `chunk` to a shared session if it still holds exactly
    /// `chunk.start` bytes; false (nothing recorded) if not, or if it is
    /// gone.
    fn append_upload(&self, id: &str, chunk: &UploadChunk) -> Result<bool, MetadataError>;
    /// Ends a shared session if it holds `size` bytes (whatever it holds
    /// if None): its chunks, for the caller to delete; None if it is gone
    /// or was changed first.
    fn end_upload(&self, id: &str, size: Option<u64>) -> Result<Option<Vec<UploadChunk>>, MetadataError>;
    /// Ends the shared sessions untouched since `before`: their ids and
    /// chunks.
    fn expire_uploads(&self, before: Millis) -> Result<Vec<(String, Vec<UploadChunk>)>, MetadataError>;

    /// A trivial query, for readiness: the database is open and answers.
    fn ping(&self) -> Result<(), MetadataError>;

    fn create_distribution(&self, new: &NewDistribution) -> Result<Distribution, MetadataError>;
    fn update_distribution(&self, name: &str, patch: &DistributionPatch) -> Result<Distribution, MetadataError>;
    fn delete_distribution(&self, name: &str) -> Result<(), MetadataError>;
    fn distribution(&self, name: &str) -> Result<Option<Distribution>, MetadataError>;
    fn distributions(&self, page: PageRequest) -> Result<Page<Distribution>, MetadataError>;
}

/// The async handle on the metadata store. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Metadata {
    store: Arc<dyn Store>,
    /// Changes committed ([`changes`]): by any node on PostgreSQL, by
    /// this process on SQLite.
    changes: tokio::sync::broadcast::Sender<String>,
}

/// Changes waiting for a slow subscriber before it loses some (and is told
/// so, as a lag: then it reads everything again).
const CHANGES_KEPT: usize = 64;

impl Metadata {
    /// Opens (creating and migrating as needed) the SQLite store under
    /// `storage_root`.
    #[cfg(test)]
    pub(crate) async fn open(storage_root: &Path) -> Result<Metadata, MetadataError> {
        Self::from_config(storage_root, &crate::config::MetadataConfig::default()).await
    }

    /// The store `[metadata]` names: PostgreSQL at its `url` (listening
    /// for other nodes' changes), or the embedded SQLite database under
    /// `storage_root`. Migrated as needed.
    pub(crate) async fn from_config(
        storage_root: &Path,
        config: &crate::config::MetadataConfig,
    ) -> Result<Metadata, MetadataError> {
        let (changes, _) = tokio::sync::broadcast::channel(CHANGES_KEPT);
        let (open, listen) = match &config.url {
            None => {
                let path = storage_root.join(DATABASE_FILE);
                let changes = changes.clone();
                (Box::new(move || SqlStore::open_sqlite_announcing(&path, changes)) as Box<dyn FnOnce() -> Result<SqlStore, MetadataError> + Send>, None)
            }
            Some(url) => {
                let target = db::postgres::Target::parse(
                    url,
                    config.password.as_deref(),
                    config.max_connections,
                    config.ca_file.as_deref(),
                )?;
                let listen = Some(target.clone());
                (Box::new(move || SqlStore::open_postgres(target)) as Box<dyn FnOnce() -> Result<SqlStore, MetadataError> + Send>, listen)
            }
        };
        let store = tokio::task::spawn_blocking(open).await.map_err(|e| MetadataError::Database(e.to_string()))??;
        if let Some(target) = listen {
            db::postgres::listen(target, changes.clone())
                .map_err(|e| MetadataError::Database(format!("cannot start the change listener: {e}")))?;
        }
        Ok(Metadata { store: Arc::new(store), changes })
    }

    /// Where the store is, for messages: the SQLite file or the PostgreSQL
    /// database (its password left out).
    pub(crate) fn describe(storage_root: &Path, config: &crate::config::MetadataConfig) -> String {
        match &config.url {
            None => storage_root.join(DATABASE_FILE).display().to_string(),
            Some(url) => crate::config::redact_url(url),
        }
    }

    /// The store itself, for code that already runs off the async runtime
    /// (the blocking pool, or before it starts): its calls block.
    pub(crate) fn blocking(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Whether the store is shared with other nodes (PostgreSQL).
    pub(crate) fn is_shared(config: &crate::config::MetadataConfig) -> bool {
        config.url.is_some()
    }

    /// Topics ([`changes`]) changed, as they commit (this node's changes
    /// included).
    pub(crate) fn changes(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    /// Runs a blocking store call on the blocking pool.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, MetadataError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, MetadataError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| MetadataError::Database(format!("metadata task failed: {e}")))?
    }
}
