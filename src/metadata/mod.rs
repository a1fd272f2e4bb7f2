//! Metadata: repositories, their numbered versions, the content each version
//! holds (tags, manifests, blobs), distributions, remotes and background
//! tasks. Knows nothing of blob bytes, HTTP or upstreams.
//!
//! All SQL lives in [`sqlite`], behind the [`Store`] trait: the rest of wharf
//! sees typed records only, so a PostgreSQL backend for several nodes is a
//! second implementation of that trait, not a change to its callers.
//!
//! The version model: a content unit is a member of a repository from the
//! version that added it until the version that removed it (exclusive).
//! A version is therefore immutable once created, and a new version costs
//! rows for its changes only, never a copy of the whole content list.

mod sqlite;

use std::path::Path;
use std::sync::Arc;

use crate::oci::Digest;

pub(crate) use sqlite::SqliteStore;

/// The database file, under `storage.path`.
pub(crate) const DATABASE_FILE: &str = "wharf.db";

#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum MetadataError {
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts what exists (duplicate name, a version in use).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong (a value out of range).
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error("metadata database: {0}")]
    Database(String),
}

/// Milliseconds since the Unix epoch.
pub(crate) type Millis = i64;

pub(crate) fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How a repository gets its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RepositoryKind {
    /// Recorded from pulls through an upstream; read-only to clients.
    PullThrough,
    /// Filled by clients pushing into wharf.
    Push,
    /// Filled by syncing from a remote.
    Sync,
}

impl RepositoryKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RepositoryKind::PullThrough => "pull-through",
            RepositoryKind::Push => "push",
            RepositoryKind::Sync => "sync",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<RepositoryKind> {
        match s {
            "pull-through" => Some(RepositoryKind::PullThrough),
            "push" => Some(RepositoryKind::Push),
            "sync" => Some(RepositoryKind::Sync),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Repository {
    pub(crate) name: String,
    pub(crate) kind: RepositoryKind,
    /// Pull-through: the configured upstream's name.
    pub(crate) upstream: Option<String>,
    /// Pull-through: the repository's name at the upstream.
    pub(crate) remote_name: Option<String>,
    /// Versions kept; None keeps all.
    pub(crate) retain_versions: Option<u32>,
    pub(crate) latest_version: u64,
    pub(crate) created_at: Millis,
    pub(crate) description: Option<String>,
    /// Sync: the remote a scheduled sync takes content from.
    pub(crate) remote: Option<String>,
    /// Sync: whether a scheduled sync mirrors (removes what the remote no
    /// longer has) rather than adds.
    pub(crate) sync_mirror: bool,
    /// Sync: seconds between scheduled syncs; None syncs only when asked.
    pub(crate) sync_interval: Option<u64>,
    /// Sync: when the next scheduled sync is due (jitter included).
    pub(crate) next_sync_at: Option<Millis>,
    /// A sync in mirror mode has run: the repository refuses pushes.
    pub(crate) mirrored: bool,
}

/// A sync repository as the admin API creates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewRepository {
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) retain_versions: Option<u32>,
    pub(crate) remote: Option<String>,
    pub(crate) sync_mirror: bool,
    pub(crate) sync_interval: Option<u64>,
    pub(crate) next_sync_at: Option<Millis>,
}

/// Fields of a sync repository to change; None leaves a field as it is,
/// Some(None) clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RepositoryPatch {
    pub(crate) description: Option<Option<String>>,
    pub(crate) retain_versions: Option<Option<u32>>,
    pub(crate) remote: Option<Option<String>>,
    pub(crate) sync_mirror: Option<bool>,
    pub(crate) sync_interval: Option<Option<u64>>,
    pub(crate) next_sync_at: Option<Option<Millis>>,
}

/// What a sync found at the remote, within its tag filter: every manifest
/// it takes (tagged ones, index children, signatures and other referrers)
/// and the tags. Manifests come before anything that refers to them is
/// needed, in no particular order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SyncContent {
    pub(crate) manifests: Vec<ManifestFacts>,
    pub(crate) tags: Vec<(String, Digest)>,
    /// Atomic signatures of manifests among `manifests`.
    pub(crate) signatures: Vec<AtomicSignature>,
    /// Whether `signatures` is the remote's whole listing for every
    /// manifest in `manifests` (every signature source it has was read).
    /// Only then does a mirror sync drop the signatures of those manifests
    /// that the remote no longer lists; a failed or impossible lookup
    /// leaves what the repository holds.
    pub(crate) signatures_listed: bool,
}

/// An atomic container signature ("simple signing"): opaque signed bytes
/// naming the manifest they sign, as the docker API extension and
/// lookaside stores carry them. wharf stores and serves them; it does not
/// check them (that is the client's policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AtomicSignature {
    /// The manifest signed.
    pub(crate) manifest: Digest,
    /// `<manifest digest>@<id>`, unique per manifest.
    pub(crate) name: String,
    /// `atomic` (the only type clients read).
    pub(crate) kind: String,
    /// The signature's bytes.
    pub(crate) content: Vec<u8>,
}

impl AtomicSignature {
    /// The digest of its bytes: with the manifest, what tells two
    /// signatures apart.
    pub(crate) fn digest(&self) -> Digest {
        Digest::of(crate::oci::Algorithm::Sha256, &self.content)
    }
}

/// How a sync changes its repository.
#[derive(Clone, Copy)]
pub(crate) enum SyncMode<'a> {
    /// Adds what the remote has; tags that moved follow the remote.
    Additive,
    /// Also removes tags the remote no longer has, among those `in_scope`
    /// says the sync is responsible for, and then every manifest and blob
    /// nothing kept needs any more, and (when the remote's listing was
    /// read) the signatures of synced manifests the remote no longer lists.
    Mirror { in_scope: &'a dyn Fn(&str) -> bool },
}

/// Counts per content type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) tags: u64,
    pub(crate) manifests: u64,
    pub(crate) blobs: u64,
    /// Atomic container signatures.
    pub(crate) signatures: u64,
}

/// What a version changed relative to the one before it, and what it holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) added: Counts,
    pub(crate) removed: Counts,
    pub(crate) present: Counts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version {
    pub(crate) repository: String,
    pub(crate) number: u64,
    pub(crate) created_at: Millis,
    pub(crate) base_version: Option<u64>,
    pub(crate) summary: Summary,
}

/// One page of a listing and the total it was cut from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page<T> {
    pub(crate) total: u64,
    pub(crate) items: Vec<T>,
}

/// Every item of a paged listing, fetched a large page at a time.
pub(crate) fn all_pages<T>(
    mut list: impl FnMut(PageRequest) -> Result<Page<T>, MetadataError>,
) -> Result<Vec<T>, MetadataError> {
    let mut all = Vec::new();
    let mut page = PageRequest { limit: 1000, offset: 0 };
    loop {
        let listed = list(page)?;
        let n = listed.items.len() as u64;
        all.extend(listed.items);
        if n < u64::from(page.limit) {
            return Ok(all);
        }
        page.offset += n;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageRequest {
    pub(crate) limit: u32,
    pub(crate) offset: u64,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest { limit: 100, offset: 0 }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct RepositoryFilter {
    /// Exactly this name.
    pub(crate) name: Option<String>,
    /// Names containing this.
    pub(crate) name_contains: Option<String>,
    pub(crate) kind: Option<RepositoryKind>,
}

/// Which content of a version to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ContentType {
    Tag,
    Manifest,
    Blob,
    /// An atomic container signature of a manifest.
    Signature,
}

impl ContentType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ContentType::Tag => "tag",
            ContentType::Manifest => "manifest",
            ContentType::Blob => "blob",
            ContentType::Signature => "signature",
        }
    }
}

/// A content descriptor as manifests carry them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Descriptor {
    pub(crate) digest: Digest,
    pub(crate) media_type: Option<String>,
    pub(crate) size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Platform {
    pub(crate) os: String,
    pub(crate) architecture: String,
    pub(crate) variant: Option<String>,
}

/// A child manifest an index lists, with the platform the index gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexChild {
    pub(crate) descriptor: Descriptor,
    pub(crate) platform: Option<Platform>,
}

/// What wharf knows of a manifest from its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ManifestFacts {
    pub(crate) digest: Digest,
    pub(crate) media_type: String,
    pub(crate) size: u64,
    pub(crate) artifact_type: Option<String>,
    pub(crate) subject: Option<Digest>,
    /// Image manifests: the config blob.
    pub(crate) config: Option<Descriptor>,
    /// Image manifests: layers (artifact manifests: blobs).
    pub(crate) layers: Vec<Descriptor>,
    /// Indexes: the child manifests listed.
    pub(crate) children: Vec<IndexChild>,
    /// The manifest's annotations, as a JSON object's text.
    pub(crate) annotations: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TagItem {
    pub(crate) name: String,
    pub(crate) digest: Digest,
    pub(crate) media_type: String,
}

/// A manifest in a version: what was recorded of it, and the platform an
/// index that lists it gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ManifestItem {
    pub(crate) facts: ManifestFacts,
    pub(crate) platform: Option<Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobItem {
    pub(crate) digest: Digest,
    pub(crate) media_type: Option<String>,
    pub(crate) size: Option<u64>,
}

/// An atomic signature in a version, as listings show it (not its bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignatureItem {
    /// The manifest signed.
    pub(crate) manifest: Digest,
    /// The digest of the signature's bytes.
    pub(crate) digest: Digest,
    pub(crate) name: String,
    pub(crate) kind: String,
}

/// Narrows a content listing.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContentFilter {
    pub(crate) digest: Option<Digest>,
    /// Tags only: exactly this tag name.
    pub(crate) tag: Option<String>,
}

/// Where a repository served by a distribution came from, so a blob whose
/// bytes are not cached can be fetched on demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Distribution {
    pub(crate) name: String,
    pub(crate) base_path: String,
    pub(crate) repository: String,
    /// Pinned version; None serves the latest.
    pub(crate) version: Option<u64>,
    pub(crate) private: bool,
    pub(crate) description: Option<String>,
    pub(crate) created_at: Millis,
    pub(crate) updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewDistribution {
    pub(crate) name: String,
    pub(crate) base_path: String,
    pub(crate) repository: String,
    pub(crate) version: Option<u64>,
    pub(crate) private: bool,
    pub(crate) description: Option<String>,
}

/// Fields to change; None leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DistributionPatch {
    pub(crate) base_path: Option<String>,
    pub(crate) repository: Option<String>,
    /// Some(None) unpins (serve the latest version).
    pub(crate) version: Option<Option<u64>>,
    pub(crate) private: Option<bool>,
    /// Some(None) clears the description.
    pub(crate) description: Option<Option<String>>,
}

/// When a sync fetches the blobs of what it syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyncPolicy {
    /// Every blob during the sync.
    Immediate,
    /// Manifests and tags only; blobs through the pull-through fill on
    /// first pull.
    OnDemand,
}

impl SyncPolicy {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SyncPolicy::Immediate => "immediate",
            SyncPolicy::OnDemand => "on_demand",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<SyncPolicy> {
        match s {
            "immediate" => Some(SyncPolicy::Immediate),
            "on_demand" => Some(SyncPolicy::OnDemand),
            _ => None,
        }
    }
}

/// A username and password for a remote. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct RemoteCredentials {
    pub(crate) username: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for RemoteCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCredentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// Where a sync repository's content comes from. Checked by
/// `sync::remote` before it is stored; the store keeps what it is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Remote {
    pub(crate) name: String,
    /// Base URL of the registry API, `http` or `https`, no trailing slash.
    pub(crate) url: String,
    /// The repository's name at the remote (`library/debian`).
    pub(crate) upstream_name: String,
    /// Tag globs (`*`, `?`) and digests to sync; empty syncs every tag.
    pub(crate) include_tags: Vec<String>,
    /// Tag globs never synced.
    pub(crate) exclude_tags: Vec<String>,
    pub(crate) policy: SyncPolicy,
    pub(crate) credentials: Option<RemoteCredentials>,
    /// Use the credentials of this configured upstream instead.
    pub(crate) credentials_from: Option<String>,
    pub(crate) tls_verify: bool,
    /// PEM certificates trusted for the remote, besides the system's.
    pub(crate) ca_cert: Option<String>,
    /// URL of a signature lookaside store.
    pub(crate) sigstore: Option<String>,
    /// Downloads at once; None is the default.
    pub(crate) download_concurrency: Option<u32>,
    /// Requests per second; None is unlimited.
    pub(crate) rate_limit: Option<u32>,
    pub(crate) created_at: Millis,
    pub(crate) updated_at: Millis,
}

/// Where a background task is in its life. The last three are finished:
/// a finished task never changes again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TaskState {
    Waiting,
    Running,
    Completed,
    Failed,
    Canceled,
}

impl TaskState {
    pub(crate) const ALL: [TaskState; 5] =
        [TaskState::Waiting, TaskState::Running, TaskState::Completed, TaskState::Failed, TaskState::Canceled];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TaskState::Waiting => "waiting",
            TaskState::Running => "running",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Canceled => "canceled",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|state| state.as_str() == s)
    }

    pub(crate) fn is_finished(self) -> bool {
        match self {
            TaskState::Waiting | TaskState::Running => false,
            TaskState::Completed | TaskState::Failed | TaskState::Canceled => true,
        }
    }
}

/// How far a task has come. `items_total` is None until the work knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TaskProgress {
    pub(crate) items_done: u64,
    pub(crate) items_total: Option<u64>,
    pub(crate) bytes_done: u64,
}

/// Something a task made, recorded when it finishes. Stored as JSON in the
/// task's row, in this shape.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum CreatedResource {
    RepositoryVersion { repository: String, number: u64 },
}

/// A background task (a repository sync, storage gc or verify; later import).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Task {
    pub(crate) id: u64,
    /// What the task does (`sync`, `gc`, `verify`).
    pub(crate) kind: String,
    /// What it works on (a repository name); tasks on the same resource
    /// run one at a time.
    pub(crate) resource: Option<String>,
    /// The task's parameters, as given when it was submitted.
    pub(crate) params: serde_json::Value,
    pub(crate) state: TaskState,
    pub(crate) progress: TaskProgress,
    /// Why it failed or was canceled; None otherwise.
    pub(crate) error: Option<String>,
    pub(crate) created_resources: Vec<CreatedResource>,
    pub(crate) created_at: Millis,
    pub(crate) started_at: Option<Millis>,
    pub(crate) finished_at: Option<Millis>,
}

/// Narrows a task listing; every field given must match exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TaskFilter {
    pub(crate) state: Option<TaskState>,
    pub(crate) kind: Option<String>,
    pub(crate) resource: Option<String>,
}

/// The repository a pull-through recording belongs to, as created on first use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) upstream: String,
    pub(crate) remote_name: String,
    pub(crate) retain_versions: Option<u32>,
}

/// Something a pull taught wharf about a repository.
// Nearly every change is a manifest, so boxing the large variant would
// add an allocation per recording and save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// A manifest was served; `tag` if it was asked for by that tag. An
    /// image manifest brings its config and layers along.
    Manifest { facts: ManifestFacts, tag: Option<String> },
    /// The upstream says the tag no longer exists.
    TagRemoved { tag: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recording {
    /// `<upstream-name>/<repo>`.
    pub(crate) repository: String,
    pub(crate) origin: Origin,
    pub(crate) change: Change,
}

/// What a client's push changes in a push repository; each is applied in
/// one transaction and makes at most one new version.
// A manifest is nearly every push; boxing it would save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PushChange {
    /// A manifest was pushed (by `tag`, if one was given). Its config and
    /// layers leave the uploaded blobs and become version content.
    Manifest { facts: ManifestFacts, tag: Option<String> },
    /// The manifest and every tag pointing at it leave the repository.
    DeleteManifest { digest: Digest },
    /// The tag leaves the repository; its manifest stays.
    DeleteTag { tag: String },
    /// The blob leaves the repository's content and its uploaded blobs.
    DeleteBlob { digest: Digest },
}

/// A version created by recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Created {
    pub(crate) repository: String,
    pub(crate) number: u64,
}

/// The digests storage housekeeping must respect, as digest strings.
#[derive(Debug, Default)]
pub(crate) struct StorageReferences {
    /// Referenced by some repository version (any, old ones too), an
    /// uploaded blob or a remembered upstream tag: not an orphan.
    pub(crate) referenced: std::collections::HashSet<String>,
    /// Never evicted: content of push repositories, of sync repositories
    /// whose remote's policy is `immediate` (and of other sync
    /// repositories, but for blobs with a recorded source), and of
    /// versions pinned by a distribution.
    pub(crate) protected: std::collections::HashSet<String>,
    /// Every manifest digest (eviction takes blobs only).
    pub(crate) manifests: std::collections::HashSet<String>,
    /// When the oldest running sync started: what it fetched is recorded
    /// only when it ends, so nothing used since then is touched.
    pub(crate) sync_running_since: Option<Millis>,
}

/// Resolves a version: `None` is the latest.
pub(crate) type VersionRef = Option<u64>;

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

    /// Stores a new task, `waiting`, with its creation time.
    fn create_task(&self, kind: &str, resource: Option<&str>, params: &serde_json::Value) -> Result<Task, MetadataError>;
    fn task(&self, id: u64) -> Result<Option<Task>, MetadataError>;
    /// Tasks matching `filter`, newest first.
    fn tasks(&self, filter: &TaskFilter, page: PageRequest) -> Result<Page<Task>, MetadataError>;
    /// A waiting task becomes `running`, with its start time. `Conflict`
    /// unless it is waiting (a cancel may have finished it first).
    fn start_task(&self, id: u64) -> Result<Task, MetadataError>;
    /// Records a running task's progress; false (and nothing written) if
    /// the task is not running.
    fn task_progress(&self, id: u64, progress: TaskProgress) -> Result<bool, MetadataError>;
    /// Ends a waiting or running task in `state` (a finished one, else
    /// `Invalid`). `Conflict` if it had already finished: a finished task
    /// never changes.
    fn finish_task(&self, id: u64, state: TaskState, error: Option<&str>, created: &[CreatedResource])
        -> Result<Task, MetadataError>;
    /// Cancels a waiting task at once (`canceled`, with `message` as its
    /// error); a running one is returned as it is, for its runner to stop.
    /// `Conflict` if it had finished, `NotFound` if there is no such task.
    fn cancel_task(&self, id: u64, message: &str) -> Result<Task, MetadataError>;
    /// Fails every waiting or running task with `message`; how many. At
    /// start, no task can still be running: they were the last process's.
    fn interrupt_tasks(&self, message: &str) -> Result<u64, MetadataError>;

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
}

impl Metadata {
    /// Opens (creating and migrating as needed) the SQLite store under
    /// `storage_root`.
    pub(crate) async fn open(storage_root: &Path) -> Result<Metadata, MetadataError> {
        let path = storage_root.join(DATABASE_FILE);
        let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
            .await
            .map_err(|e| MetadataError::Database(e.to_string()))??;
        Ok(Metadata { store: Arc::new(store) })
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
