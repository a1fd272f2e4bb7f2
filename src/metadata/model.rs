//! The records the store keeps and hands out: repositories, versions and
//! their summaries, content items, distributions, remotes, tasks, and the
//! errors. Plain data, no SQL.

use crate::oci::Digest;

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
    /// The database cannot be reached (down, restarting, the network):
    /// worth trying again later, unlike [`MetadataError::Database`].
    #[error("metadata database unavailable: {0}")]
    Unavailable(String),
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

/// What an image's config says that the registry index shows: its
/// platform and labels (a JSON object's text). All `None`: not an image
/// config, or unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageConfig {
    pub(crate) digest: Digest,
    pub(crate) os: Option<String>,
    pub(crate) architecture: Option<String>,
    pub(crate) variant: Option<String>,
    pub(crate) labels: Option<String>,
}

/// A tagged manifest as the registry index reads it: an image with its
/// config's facts (once read), or an index with its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexedManifest {
    pub(crate) digest: Digest,
    pub(crate) media_type: String,
    /// A JSON object's text.
    pub(crate) annotations: Option<String>,
    pub(crate) config: Option<ImageConfig>,
    pub(crate) children: Vec<IndexedManifest>,
}

/// What a distribution serves, for the registry index: (tag, manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexedRepository {
    pub(crate) base_path: String,
    pub(crate) tags: Vec<(String, IndexedManifest)>,
}

/// Everything the registry index shows, and when any of it last changed
/// (a served version made, a distribution changed, a config's facts
/// recorded): the same on every node that reads the same metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct IndexSnapshot {
    pub(crate) repositories: Vec<IndexedRepository>,
    pub(crate) last_modified: Millis,
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
    /// An export's files, in `directory`.
    Export { id: u64, directory: String },
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
    /// The step it is at, or was last (a build's `STEP 3/7: COPY ...`).
    pub(crate) step: Option<String>,
    pub(crate) created_at: Millis,
    pub(crate) started_at: Option<Millis>,
    pub(crate) finished_at: Option<Millis>,
    /// The node that runs it (None: recorded before tasks had nodes).
    pub(crate) node: Option<String>,
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
    /// Several manifests at once (a build: its images, and the index over
    /// them), each with the tags that name it: one version.
    Manifests(Vec<(ManifestFacts, Vec<String>)>),
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

/// A blob upload session shared by a cluster's nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SharedUpload {
    pub(crate) repository: String,
    /// Bytes the session holds: the end of its last chunk.
    pub(crate) size: u64,
    pub(crate) updated_at: Millis,
    /// In order, each starting where the one before ended.
    pub(crate) chunks: Vec<UploadChunk>,
}

/// Bytes `[start, end)` of a shared upload session, stored as the object
/// `key` (a storage key, not a digest: unverified bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UploadChunk {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) key: String,
}

/// Who fills a blob for a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FillClaim {
    /// This node: it fetches from the upstream.
    Claimed,
    /// Another node, reached at `address` (its cluster port).
    Filling { node: String, address: String },
    /// The other node's fill ended as this one looked: look again.
    Ended,
}

/// A repository version an export carried.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ExportedVersion {
    pub(crate) repository: String,
    pub(crate) version: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExportState {
    Writing,
    Complete,
    Failed,
}

impl ExportState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ExportState::Writing => "writing",
            ExportState::Complete => "complete",
            ExportState::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<ExportState, MetadataError> {
        match s {
            "writing" => Ok(ExportState::Writing),
            "complete" => Ok(ExportState::Complete),
            "failed" => Ok(ExportState::Failed),
            other => Err(MetadataError::Database(format!("unknown export state {other:?}"))),
        }
    }
}

/// An export, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExportRecord {
    pub(crate) id: u64,
    pub(crate) created_at: Millis,
    /// The export's directory.
    pub(crate) path: String,
    /// The export it builds on (incremental), if any.
    pub(crate) base: Option<u64>,
    pub(crate) repositories: Vec<ExportedVersion>,
    pub(crate) state: ExportState,
    /// Bytes of the archive, once complete.
    pub(crate) size: u64,
    /// Files in the archive, once complete.
    pub(crate) files: u64,
    pub(crate) error: Option<String>,
    /// Its own random id, which the import side records (None for
    /// exports made before exports had one).
    pub(crate) uuid: Option<String>,
}

/// A repository an export carries, as an import writes it (the import
/// task, next, makes them).
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub(crate) struct ImportedRepository {
    pub(crate) name: String,
    pub(crate) kind: RepositoryKind,
    /// Pull-through: the upstream's name and the name there.
    pub(crate) upstream: Option<String>,
    pub(crate) remote_name: Option<String>,
    /// Exactly what the new version holds.
    pub(crate) content: SyncContent,
}
