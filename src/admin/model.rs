//! The admin API's JSON: response and request bodies, their OpenAPI
//! schemas, and the conversions from metadata records and upstream
//! configs. What a field is called and whether it may be null is decided
//! here and only here. No I/O.
//!
//! Names mirror the metadata records they render (`model::Repository` is
//! the JSON of `metadata::Repository`), so the OpenAPI schemas read as the
//! contract does.

use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::route::VersionSel;
use crate::auth;
use crate::config::UpstreamConfig;
use crate::metadata::{self, Millis, PageRequest};
use crate::repository::CopySelection;

/// RFC 3339 UTC with milliseconds (`2026-11-25T10:00:00.123Z`).
pub(crate) fn timestamp(ms: Millis) -> String {
    // Stored times are never before 1970; clamp rather than fail if one is.
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// A repository named in the path. The pattern is what the router accepts
/// once decoded: no control characters, no empty component.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct RepositoryPath {
    /// The repository name, percent-encoded (`docker.io%2Flibrary%2Fdebian`).
    #[param(pattern = r"^[^/\u0000-\u001F\u007F-\u009F]+(/[^/\u0000-\u001F\u007F-\u009F]+)*$")]
    pub(crate) name: String,
}

/// A repository version named in the path.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct VersionPath {
    /// The repository name, percent-encoded (`docker.io%2Flibrary%2Fdebian`).
    #[param(pattern = r"^[^/\u0000-\u001F\u007F-\u009F]+(/[^/\u0000-\u001F\u007F-\u009F]+)*$")]
    pub(crate) name: String,
    /// A version number, or `latest`.
    #[param(value_type = String, pattern = "^([0-9]{1,19}|latest)$")]
    pub(crate) number: VersionSel,
}

/// A distribution named in the path.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct DistributionPath {
    /// The distribution name.
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub(crate) name: String,
}

/// A remote named in the path.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct RemotePath {
    /// The remote name.
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub(crate) name: String,
}

/// A task named in the path.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct TaskPath {
    /// The task's id.
    #[param(minimum = 1)]
    pub(crate) id: u64,
}

/// `limit` and `offset` of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Pagination {
    /// Results per page.
    #[param(minimum = 1, maximum = 1000, default = 100, required = false)]
    pub(crate) limit: u32,
    /// Results to skip.
    #[param(minimum = 0, default = 0, required = false)]
    pub(crate) offset: u64,
}

impl From<Pagination> for PageRequest {
    fn from(p: Pagination) -> Self {
        PageRequest { limit: p.limit, offset: p.offset }
    }
}

/// One listing page type per item type: concrete names read better in the
/// OpenAPI document than generic instantiations.
macro_rules! page {
    ($(#[$doc:meta])* $page:ident of $item:ident) => {
        $(#[$doc])*
        #[derive(Debug, Serialize, ToSchema)]
        pub(crate) struct $page {
            /// How many results there are in all, over every page.
            count: u64,
            limit: u32,
            offset: u64,
            results: Vec<$item>,
        }

        impl $page {
            pub(crate) fn new(count: u64, page: Pagination, results: Vec<$item>) -> $page {
                $page { count, limit: page.limit, offset: page.offset, results }
            }
        }
    };
}

page!(/// A page of repositories, by name.
    RepositoryPage of Repository);
page!(/// A page of a repository's versions, newest first.
    VersionPage of Version);
page!(/// A page of the tags in a version, by name.
    TagPage of Tag);
page!(/// A page of the manifests in a version, by digest.
    ManifestPage of Manifest);
page!(/// A page of the blobs in a version, by digest.
    BlobPage of Blob);
page!(/// A page of the atomic signatures in a version, by manifest digest.
    SignaturePage of Signature);
page!(/// A page of distributions, by name.
    DistributionPage of Distribution);
page!(/// A page of remotes, by name.
    RemotePage of Remote);
page!(/// A page of tasks, newest first.
    TaskPage of Task);
page!(/// A page of the configured upstreams, in configuration order.
    UpstreamPage of Upstream);
page!(/// A page of the configured users, by name.
    UserPage of User);
page!(/// A page of the configured rules, in configuration order.
    RulePage of Rule);
page!(/// A page of the token signing keys: the current one first.
    SigningKeyPage of SigningKey);

/// How a repository gets its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RepositoryKind {
    PullThrough,
    Push,
    Sync,
}

impl From<metadata::RepositoryKind> for RepositoryKind {
    fn from(k: metadata::RepositoryKind) -> Self {
        match k {
            metadata::RepositoryKind::PullThrough => RepositoryKind::PullThrough,
            metadata::RepositoryKind::Push => RepositoryKind::Push,
            metadata::RepositoryKind::Sync => RepositoryKind::Sync,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Repository {
    #[schema(example = "docker.io/library/debian")]
    name: String,
    kind: RepositoryKind,
    /// The configured upstream it comes from; null unless pull-through.
    #[schema(required = true)]
    upstream: Option<String>,
    /// Its name at that upstream; null unless pull-through.
    #[schema(required = true)]
    remote_name: Option<String>,
    /// Versions kept; null keeps all.
    #[schema(required = true)]
    retain_versions: Option<u32>,
    latest_version: u64,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(required = true)]
    description: Option<String>,
    /// Sync: the remote a scheduled sync takes content from (and a sync
    /// that names none); null otherwise.
    #[schema(required = true)]
    remote: Option<String>,
    /// Sync: scheduled syncs mirror rather than add.
    sync_mirror: bool,
    /// Sync: seconds between scheduled syncs; null syncs only when asked.
    #[schema(required = true)]
    sync_interval: Option<u64>,
    /// Sync: when the next scheduled sync is due (jitter included).
    #[schema(required = true, format = DateTime)]
    next_sync_at: Option<String>,
    /// A sync in mirror mode has run: the repository refuses pushes.
    mirrored: bool,
}

impl From<metadata::Repository> for Repository {
    fn from(r: metadata::Repository) -> Self {
        Repository {
            name: r.name,
            kind: r.kind.into(),
            upstream: r.upstream,
            remote_name: r.remote_name,
            retain_versions: r.retain_versions,
            latest_version: r.latest_version,
            created_at: timestamp(r.created_at),
            description: r.description,
            remote: r.remote,
            sync_mirror: r.sync_mirror,
            sync_interval: r.sync_interval,
            next_sync_at: r.next_sync_at.map(timestamp),
            mirrored: r.mirrored,
        }
    }
}

/// Body of `POST /api/v1/repositories`: a sync repository, empty until
/// synced.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewRepository {
    /// A repository name as clients address it (`team/app`); not under an
    /// upstream's path prefix.
    #[schema(example = "foo")]
    name: String,
    #[serde(default)]
    description: Option<String>,
    /// Versions kept; null keeps all.
    #[serde(default)]
    #[schema(minimum = 1)]
    retain_versions: Option<u32>,
    /// The remote a sync takes content from when it names none.
    #[serde(default)]
    remote: Option<String>,
    /// Scheduled syncs mirror (default: they add).
    #[serde(default)]
    sync_mirror: bool,
    /// Seconds between scheduled syncs (60 or more; needs `remote`).
    #[serde(default)]
    #[schema(minimum = 60)]
    sync_interval: Option<u64>,
}

impl From<NewRepository> for metadata::NewRepository {
    fn from(n: NewRepository) -> Self {
        metadata::NewRepository {
            name: n.name,
            description: n.description,
            retain_versions: n.retain_versions,
            remote: n.remote,
            sync_mirror: n.sync_mirror,
            sync_interval: n.sync_interval,
            // The service schedules the first sync.
            next_sync_at: None,
        }
    }
}

/// Body of `POST /api/v1/repositories/{name}/sync`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SyncRepository {
    /// The remote to sync from; default: the repository's `remote`.
    #[serde(default)]
    pub(crate) remote: Option<String>,
    /// Also remove what the remote no longer has (within its tag filter).
    /// Default false: add only.
    #[serde(default)]
    pub(crate) mirror: bool,
}

/// Body of `PATCH /api/v1/repositories/{name}` (sync repositories): the
/// fields to change. Absent stays; the nullable fields may be null.
#[derive(Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RepositoryChanges {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u32>, minimum = 1)]
    retain_versions: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    remote: Option<Option<String>>,
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = bool)]
    sync_mirror: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u64>, minimum = 60)]
    sync_interval: Option<Option<u64>>,
}

impl From<RepositoryChanges> for metadata::RepositoryPatch {
    fn from(c: RepositoryChanges) -> Self {
        metadata::RepositoryPatch {
            description: c.description,
            retain_versions: c.retain_versions,
            remote: c.remote,
            sync_mirror: c.sync_mirror,
            sync_interval: c.sync_interval,
            next_sync_at: None,
        }
    }
}

/// Counts per content type.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ContentCounts {
    tag: u64,
    manifest: u64,
    blob: u64,
    /// Atomic container signatures.
    signature: u64,
}

impl From<metadata::Counts> for ContentCounts {
    fn from(c: metadata::Counts) -> Self {
        ContentCounts { tag: c.tags, manifest: c.manifests, blob: c.blobs, signature: c.signatures }
    }
}

/// What a version changed from its base, and what it holds.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ContentSummary {
    added: ContentCounts,
    removed: ContentCounts,
    present: ContentCounts,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Version {
    repository: String,
    /// Version 0 is the empty version every repository starts with.
    number: u64,
    #[schema(format = DateTime)]
    created_at: String,
    /// The version this one changed; null for version 0.
    #[schema(required = true)]
    base_version: Option<u64>,
    content_summary: ContentSummary,
}

impl From<metadata::Version> for Version {
    fn from(v: metadata::Version) -> Self {
        Version {
            repository: v.repository,
            number: v.number,
            created_at: timestamp(v.created_at),
            base_version: v.base_version,
            content_summary: ContentSummary {
                added: v.summary.added.into(),
                removed: v.summary.removed.into(),
                present: v.summary.present.into(),
            },
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Tag {
    name: String,
    /// The manifest the tag names.
    digest: String,
    media_type: String,
}

impl From<metadata::TagItem> for Tag {
    fn from(t: metadata::TagItem) -> Self {
        Tag { name: t.name, digest: t.digest.to_string(), media_type: t.media_type }
    }
}

/// Content a manifest points at.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Descriptor {
    digest: String,
    #[schema(required = true)]
    media_type: Option<String>,
    #[schema(required = true)]
    size: Option<u64>,
}

impl From<metadata::Descriptor> for Descriptor {
    fn from(d: metadata::Descriptor) -> Self {
        Descriptor { digest: d.digest.to_string(), media_type: d.media_type, size: d.size }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Platform {
    #[schema(example = "linux")]
    os: String,
    #[schema(example = "arm64")]
    architecture: String,
    #[schema(required = true, example = "v8")]
    variant: Option<String>,
}

impl From<metadata::Platform> for Platform {
    fn from(p: metadata::Platform) -> Self {
        Platform { os: p.os, architecture: p.architecture, variant: p.variant }
    }
}

/// A manifest an index lists, with the platform the index gives it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct IndexChild {
    digest: String,
    #[schema(required = true)]
    media_type: Option<String>,
    #[schema(required = true)]
    size: Option<u64>,
    #[schema(required = true)]
    platform: Option<Platform>,
}

impl From<metadata::IndexChild> for IndexChild {
    fn from(c: metadata::IndexChild) -> Self {
        IndexChild {
            digest: c.descriptor.digest.to_string(),
            media_type: c.descriptor.media_type,
            size: c.descriptor.size,
            platform: c.platform.map(Into::into),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Manifest {
    digest: String,
    media_type: String,
    size: u64,
    #[schema(required = true)]
    artifact_type: Option<String>,
    /// The digest of the manifest this one refers to (a referrer's subject).
    #[schema(required = true)]
    subject: Option<String>,
    /// From the index that lists this manifest, or else its image config
    /// when that is cached.
    #[schema(required = true)]
    platform: Option<Platform>,
    /// Image manifests: the config blob.
    #[schema(required = true)]
    config: Option<Descriptor>,
    /// Image manifests: the layers (artifact manifests: the blobs).
    layers: Vec<Descriptor>,
    /// Indexes: the manifests listed.
    children: Vec<IndexChild>,
}

impl From<metadata::ManifestItem> for Manifest {
    fn from(item: metadata::ManifestItem) -> Self {
        let (m, platform) = (item.facts, item.platform);
        Manifest {
            digest: m.digest.to_string(),
            media_type: m.media_type,
            size: m.size,
            artifact_type: m.artifact_type,
            subject: m.subject.map(|d| d.to_string()),
            platform: platform.map(Into::into),
            config: m.config.map(Into::into),
            layers: m.layers.into_iter().map(Into::into).collect(),
            children: m.children.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Blob {
    digest: String,
    #[schema(required = true)]
    media_type: Option<String>,
    #[schema(required = true)]
    size: Option<u64>,
    /// Whether the bytes are in local storage now (else they are fetched
    /// from the upstream when first asked for).
    cached: bool,
}

impl Blob {
    pub(crate) fn new(b: metadata::BlobItem, cached: bool) -> Blob {
        Blob { digest: b.digest.to_string(), media_type: b.media_type, size: b.size, cached }
    }
}

/// An atomic container signature a version holds (its bytes are served on
/// the registry port's `/extensions/v2/<name>/signatures/<digest>`).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Signature {
    /// The manifest signed.
    manifest_digest: String,
    /// The digest of the signature's bytes.
    digest: String,
    /// `<manifest digest>@<id>`, as its source named it.
    name: String,
    /// `atomic`.
    #[serde(rename = "type")]
    kind: String,
}

impl From<metadata::SignatureItem> for Signature {
    fn from(s: metadata::SignatureItem) -> Self {
        Signature { manifest_digest: s.manifest.to_string(), digest: s.digest.to_string(), name: s.name, kind: s.kind }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Distribution {
    #[schema(example = "debian-stable")]
    name: String,
    #[schema(example = "debian")]
    base_path: String,
    #[schema(example = "docker.io/library/debian")]
    repository: String,
    /// The pinned version; null serves the latest.
    #[schema(required = true)]
    version: Option<u64>,
    private: bool,
    #[schema(required = true)]
    description: Option<String>,
    /// Where clients pull from: `<wharf-host>/<registry_path>:<tag>`.
    #[schema(example = "debian")]
    registry_path: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

impl From<metadata::Distribution> for Distribution {
    fn from(d: metadata::Distribution) -> Self {
        Distribution {
            registry_path: d.base_path.clone(),
            name: d.name,
            base_path: d.base_path,
            repository: d.repository,
            version: d.version,
            private: d.private,
            description: d.description,
            created_at: timestamp(d.created_at),
            updated_at: timestamp(d.updated_at),
        }
    }
}

/// Where a task is: `waiting` for its turn, `running`, or finished
/// (`completed`, `failed`, `canceled`); a finished task never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TaskState {
    Waiting,
    Running,
    Completed,
    Failed,
    Canceled,
}

impl From<metadata::TaskState> for TaskState {
    fn from(s: metadata::TaskState) -> Self {
        match s {
            metadata::TaskState::Waiting => TaskState::Waiting,
            metadata::TaskState::Running => TaskState::Running,
            metadata::TaskState::Completed => TaskState::Completed,
            metadata::TaskState::Failed => TaskState::Failed,
            metadata::TaskState::Canceled => TaskState::Canceled,
        }
    }
}

/// How far a task has come; a running task's is at most a second old.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TaskProgress {
    items_done: u64,
    /// How many items there are in all; null until the task knows.
    #[schema(required = true)]
    items_total: Option<u64>,
    bytes_done: u64,
}

/// Something a task made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum CreatedResource {
    /// A new version of a repository.
    RepositoryVersion {
        #[schema(example = "docker.io/library/debian")]
        repository: String,
        number: u64,
    },
    /// An export, written into `directory`.
    Export {
        id: u64,
        #[schema(example = "/mnt/transfer/wharf-export-4")]
        directory: String,
    },
}

impl From<metadata::CreatedResource> for CreatedResource {
    fn from(c: metadata::CreatedResource) -> Self {
        match c {
            metadata::CreatedResource::RepositoryVersion { repository, number } => {
                CreatedResource::RepositoryVersion { repository, number }
            }
            metadata::CreatedResource::Export { id, directory } => CreatedResource::Export { id, directory },
        }
    }
}

/// A background task (a repository sync).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Task {
    id: u64,
    /// What the task does: `sync`, `gc` or `verify`.
    #[schema(example = "sync")]
    kind: String,
    /// What it works on (a repository); tasks on one resource run one at a time.
    #[schema(required = true, example = "docker.io/library/debian")]
    resource: Option<String>,
    /// The parameters it was started with.
    #[schema(value_type = Object)]
    params: serde_json::Value,
    state: TaskState,
    progress: TaskProgress,
    /// Why it failed or was canceled; null otherwise.
    #[schema(required = true)]
    error: Option<String>,
    /// What it made (filled in when it finishes).
    created_resources: Vec<CreatedResource>,
    /// The step it is at, or was at last (a build's `STEP 3/7: COPY ...`);
    /// null for work without steps. Its whole log: `GET .../log`.
    #[schema(required = true, example = "STEP 3/7: COPY tool /usr/local/bin/tool")]
    step: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(required = true, format = DateTime)]
    started_at: Option<String>,
    #[schema(required = true, format = DateTime)]
    finished_at: Option<String>,
    /// The node that runs it (`[cluster] node_name`); null for tasks
    /// recorded before tasks had nodes.
    #[schema(required = true, example = "edge-01")]
    node: Option<String>,
}

impl Task {
    pub(crate) fn state(&self) -> TaskState {
        self.state
    }
}

impl From<metadata::Task> for Task {
    fn from(t: metadata::Task) -> Self {
        Task {
            id: t.id,
            kind: t.kind,
            resource: t.resource,
            params: t.params,
            state: t.state.into(),
            progress: TaskProgress {
                items_done: t.progress.items_done,
                items_total: t.progress.items_total,
                bytes_done: t.progress.bytes_done,
            },
            error: t.error,
            created_resources: t.created_resources.into_iter().map(Into::into).collect(),
            step: t.step,
            created_at: timestamp(t.created_at),
            started_at: t.started_at.map(timestamp),
            finished_at: t.finished_at.map(timestamp),
            node: t.node,
        }
    }
}

/// A configured upstream. Credentials are never shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct Upstream {
    #[schema(example = "docker.io")]
    name: String,
    #[schema(example = "https://registry-1.docker.io")]
    url: String,
    /// Un-prefixed names go to this upstream.
    default: bool,
    /// How long a tag's digest is trusted before it is revalidated.
    tag_ttl_seconds: u64,
    /// Versions kept per repository of this upstream; null keeps all.
    #[schema(required = true)]
    retain_versions: Option<u32>,
}

impl From<&UpstreamConfig> for Upstream {
    fn from(u: &UpstreamConfig) -> Self {
        Upstream {
            name: u.name.clone(),
            // The URL carries no user info (the config refuses it), so
            // printing it shows no secret.
            url: u.url.to_string().trim_end_matches('/').to_owned(),
            default: u.default,
            tag_ttl_seconds: u.tag_ttl.as_secs(),
            retain_versions: u.retain_versions,
        }
    }
}

/// Body of `POST /api/v1/distributions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewDistribution {
    /// 1-64 characters of `[A-Za-z0-9._-]`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$", example = "debian-stable")]
    name: String,
    /// A valid repository name, not another distribution's and not under
    /// a configured upstream's name.
    #[schema(example = "debian", max_length = 255, pattern = r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$")]
    base_path: String,
    #[schema(example = "docker.io/library/debian")]
    repository: String,
    /// A version to pin; absent or null serves the latest.
    #[serde(default)]
    #[schema(value_type = Option<u64>)]
    version: Option<VersionNumber>,
    #[serde(default)]
    private: bool,
    #[serde(default)]
    description: Option<String>,
}

impl From<NewDistribution> for metadata::NewDistribution {
    fn from(n: NewDistribution) -> Self {
        metadata::NewDistribution {
            name: n.name,
            base_path: n.base_path,
            repository: n.repository,
            version: n.version.map(|v| v.0),
            private: n.private,
            description: n.description,
        }
    }
}

/// Body of `PATCH /api/v1/distributions/{name}`: the fields to change.
/// An absent field stays as it is; `version` and `description` may be
/// null (serve the latest version; no description), the others may not.
#[derive(Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DistributionChanges {
    /// A valid repository name, as for creation.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = String, max_length = 255, pattern = r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$")]
    base_path: Option<String>,
    /// A new repository; without `version` the distribution then serves
    /// its latest version.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = String)]
    repository: Option<String>,
    /// A version to pin, or null to serve the latest.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u64>)]
    version: Option<Option<VersionNumber>>,
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = bool)]
    private: Option<bool>,
    /// A new description, or null to remove it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
}

impl From<DistributionChanges> for metadata::DistributionPatch {
    fn from(c: DistributionChanges) -> Self {
        metadata::DistributionPatch {
            base_path: c.base_path,
            repository: c.repository,
            version: c.version.map(|v| v.map(|n| n.0)),
            private: c.private,
            description: c.description,
        }
    }
}

/// When a sync fetches blobs: `immediate` (all of them, during the sync)
/// or `on_demand` (image configs during the sync, layers on first pull,
/// through the registry port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SyncPolicy {
    Immediate,
    OnDemand,
}

impl From<metadata::SyncPolicy> for SyncPolicy {
    fn from(p: metadata::SyncPolicy) -> Self {
        match p {
            metadata::SyncPolicy::Immediate => SyncPolicy::Immediate,
            metadata::SyncPolicy::OnDemand => SyncPolicy::OnDemand,
        }
    }
}

impl From<SyncPolicy> for metadata::SyncPolicy {
    fn from(p: SyncPolicy) -> Self {
        match p {
            SyncPolicy::Immediate => metadata::SyncPolicy::Immediate,
            SyncPolicy::OnDemand => metadata::SyncPolicy::OnDemand,
        }
    }
}

/// A remote as the API shows it. Credentials are never shown:
/// `has_credentials` says whether it has its own.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Remote {
    #[schema(example = "debian")]
    name: String,
    /// Base URL of the remote registry's API.
    #[schema(example = "https://registry-1.docker.io")]
    url: String,
    /// The repository's name at the remote.
    #[schema(example = "library/debian")]
    upstream_name: String,
    /// Tag globs (`*`, `?`) and manifest digests to sync; empty syncs every tag.
    #[schema(example = json!(["12*", "bookworm"]))]
    include_tags: Vec<String>,
    /// Tag globs never synced.
    #[schema(example = json!(["*-rc*"]))]
    exclude_tags: Vec<String>,
    policy: SyncPolicy,
    /// Whether the remote has its own credentials (never shown).
    has_credentials: bool,
    /// The configured upstream whose credentials it uses, if any.
    #[schema(required = true)]
    credentials_from: Option<String>,
    /// False skips TLS certificate verification.
    tls_verify: bool,
    /// PEM certificates trusted for the remote besides the system's.
    #[schema(required = true)]
    ca_cert: Option<String>,
    /// URL of a signature lookaside store: a sync reads each manifest's atomic
    /// signatures from `<sigstore>/<upstream_name>@sha256=<hex>/signature-<n>`.
    #[schema(required = true)]
    sigstore: Option<String>,
    /// Downloads at once; null is wharf's default.
    #[schema(required = true, minimum = 1, maximum = 64)]
    download_concurrency: Option<u32>,
    /// Requests per second to the remote; null is unlimited.
    #[schema(required = true, minimum = 1)]
    rate_limit: Option<u32>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

impl From<metadata::Remote> for Remote {
    fn from(r: metadata::Remote) -> Self {
        Remote {
            name: r.name,
            url: r.url,
            upstream_name: r.upstream_name,
            include_tags: r.include_tags,
            exclude_tags: r.exclude_tags,
            policy: r.policy.into(),
            has_credentials: r.credentials.is_some(),
            credentials_from: r.credentials_from,
            tls_verify: r.tls_verify,
            ca_cert: r.ca_cert,
            sigstore: r.sigstore,
            download_concurrency: r.download_concurrency,
            rate_limit: r.rate_limit,
            created_at: timestamp(r.created_at),
            updated_at: timestamp(r.updated_at),
        }
    }
}

/// A username and password for a remote; write-only.
#[derive(Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Credentials {
    username: String,
    #[schema(format = Password)]
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

impl From<Credentials> for metadata::RemoteCredentials {
    fn from(c: Credentials) -> Self {
        metadata::RemoteCredentials { username: c.username, password: c.password }
    }
}

fn default_true() -> bool {
    true
}

fn default_policy() -> SyncPolicy {
    SyncPolicy::Immediate
}

/// Body of `POST /api/v1/remotes`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewRemote {
    /// 1-64 characters of `[A-Za-z0-9._-]`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$", example = "debian")]
    name: String,
    /// `http://` or `https://`, no user info, query or fragment.
    #[schema(example = "https://registry-1.docker.io")]
    url: String,
    #[schema(example = "library/debian")]
    upstream_name: String,
    #[serde(default)]
    include_tags: Vec<String>,
    #[serde(default)]
    exclude_tags: Vec<String>,
    /// Default `immediate`.
    #[serde(default = "default_policy")]
    #[schema(default = "immediate")]
    policy: SyncPolicy,
    /// Write-only; not with `credentials_from`.
    #[serde(default)]
    credentials: Option<Credentials>,
    /// A configured upstream whose credentials to use.
    #[serde(default)]
    credentials_from: Option<String>,
    /// Default true.
    #[serde(default = "default_true")]
    #[schema(default = true)]
    tls_verify: bool,
    #[serde(default)]
    ca_cert: Option<String>,
    #[serde(default)]
    sigstore: Option<String>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 64)]
    download_concurrency: Option<u32>,
    #[serde(default)]
    #[schema(minimum = 1)]
    rate_limit: Option<u32>,
}

impl From<NewRemote> for crate::sync::NewRemote {
    fn from(n: NewRemote) -> Self {
        crate::sync::NewRemote {
            name: n.name,
            url: n.url,
            upstream_name: n.upstream_name,
            include_tags: n.include_tags,
            exclude_tags: n.exclude_tags,
            policy: n.policy.into(),
            credentials: n.credentials.map(Into::into),
            credentials_from: n.credentials_from,
            tls_verify: n.tls_verify,
            ca_cert: n.ca_cert,
            sigstore: n.sigstore,
            download_concurrency: n.download_concurrency,
            rate_limit: n.rate_limit,
        }
    }
}

/// Body of `PATCH /api/v1/remotes/{name}`: the fields to change. An absent
/// field stays as it is; the optional fields may be null (removed), the
/// others may not. Setting `credentials` clears `credentials_from` and the
/// reverse.
#[derive(Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RemoteChanges {
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = String, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    name: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = String)]
    url: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = String)]
    upstream_name: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = Vec<String>)]
    include_tags: Option<Vec<String>>,
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = Vec<String>)]
    exclude_tags: Option<Vec<String>>,
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = SyncPolicy)]
    policy: Option<SyncPolicy>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Credentials>)]
    credentials: Option<Option<Credentials>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    credentials_from: Option<Option<String>>,
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = bool)]
    tls_verify: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    ca_cert: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    sigstore: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 64)]
    download_concurrency: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u32>, minimum = 1)]
    rate_limit: Option<Option<u32>>,
}

impl From<RemoteChanges> for crate::sync::RemotePatch {
    fn from(c: RemoteChanges) -> Self {
        crate::sync::RemotePatch {
            name: c.name,
            url: c.url,
            upstream_name: c.upstream_name,
            include_tags: c.include_tags,
            exclude_tags: c.exclude_tags,
            policy: c.policy.map(Into::into),
            credentials: c.credentials.map(|c| c.map(Into::into)),
            credentials_from: c.credentials_from,
            tls_verify: c.tls_verify,
            ca_cert: c.ca_cert,
            sigstore: c.sigstore,
            download_concurrency: c.download_concurrency,
            rate_limit: c.rate_limit,
        }
    }
}

/// Body of `POST /api/v1/repositories/{name}/copy`: where to copy from,
/// and what: `tags` (globs; absent or empty takes every tag) or
/// `manifests` (digests), not both. Everything the chosen content needs
/// comes along: index children, configs and layers, signatures.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CopyContent {
    /// The repository to copy from (of any kind).
    #[schema(example = "docker.io/library/debian")]
    source: String,
    /// Its version to copy from; absent or null: the latest.
    #[serde(default)]
    #[schema(value_type = Option<u64>)]
    source_version: Option<VersionNumber>,
    /// Tag globs (`*` any run of characters, `?` one); a tag matching any
    /// is copied. Absent, null or empty: every tag.
    #[serde(default)]
    #[schema(example = json!(["v1.*", "latest"]))]
    tags: Option<Vec<String>>,
    /// Manifests to copy, by digest, without their tags.
    #[serde(default)]
    #[schema(example = json!(["sha256:6f0b4c0f64e1bd3cfcb4f2a7f8c9ef2b4d8c9e6a0b1c2d3e4f5a6b7c8d9e0f1a"]))]
    manifests: Option<Vec<String>>,
}

impl CopyContent {
    /// The source, its version (None: the latest) and what to copy; both
    /// `tags` and `manifests` is refused with a message.
    pub(crate) fn into_request(self) -> Result<(String, Option<u64>, CopySelection), String> {
        let selection = match (self.tags, self.manifests) {
            (Some(_), Some(_)) => return Err("give tags or manifests, not both".into()),
            (None, Some(manifests)) => CopySelection::Manifests(manifests),
            (tags, None) => CopySelection::Tags(tags.unwrap_or_default()),
        };
        Ok((self.source, self.source_version.map(|v| v.0), selection))
    }
}

/// Body of `POST /api/v1/repositories/{name}/remove`: at least one tag or
/// manifest. A manifest goes with every tag naming it, and with its
/// blobs and child manifests that nothing left in the repository needs.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RemoveContent {
    /// Tag names (not globs).
    #[serde(default)]
    pub(crate) tags: Vec<String>,
    /// Manifest digests.
    #[serde(default)]
    pub(crate) manifests: Vec<String>,
}

/// Body of `POST /api/v1/repositories/{name}/revert`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevertTo {
    /// The version whose content becomes the latest again.
    #[schema(value_type = u64)]
    version: VersionNumber,
}

impl RevertTo {
    pub(crate) fn version(&self) -> u64 {
        self.version.0
    }
}

/// The answer of a copy, remove or revert.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CurationResult {
    /// The version made; null when the repository already held exactly
    /// that, so no version was made.
    #[schema(required = true)]
    version: Option<u64>,
}

impl CurationResult {
    pub(crate) fn new(version: Option<u64>) -> CurationResult {
        CurationResult { version }
    }
}

/// A version number in a request body. JSON Schema counts `3.0` as an
/// integer, and so do tools that compute numbers as floats; a whole
/// number in either notation is accepted, anything else is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VersionNumber(u64);

impl<'de> Deserialize<'de> for VersionNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        if let Some(v) = n.as_u64() {
            return Ok(VersionNumber(v));
        }
        // Below 2^53 every whole f64 is exact, and no version gets near it.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        match n.as_f64() {
            Some(f) if f.fract() == 0.0 && (0.0..EXACT).contains(&f) => Ok(VersionNumber(f as u64)),
            _ => Err(serde::de::Error::custom(format!(
                "invalid value: {n}, expected a version number (a whole number, 0 or more)"
            ))),
        }
    }
}

/// A field that, when present, must have a value: `null` is an error
/// rather than a silent "leave as is". Absence is `#[serde(default)]`.
fn not_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// A field where `null` means something: present-and-null is `Some(None)`,
/// absent (via `#[serde(default)]`) is `None`.
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(json: &str) -> Result<DistributionChanges, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn patch_tells_an_absent_field_from_null() {
        assert_eq!(changes("{}").unwrap(), DistributionChanges::default());
        let unpin = changes(r#"{"version": null}"#).unwrap();
        assert_eq!(unpin.version, Some(None));
        assert_eq!(unpin.description, None);
        let pin = changes(r#"{"version": 3, "description": null}"#).unwrap();
        assert_eq!((pin.version, pin.description), (Some(Some(VersionNumber(3))), Some(None)));
        let patch = metadata::DistributionPatch::from(changes(r#"{"description": "x", "private": true}"#).unwrap());
        assert_eq!(patch.description, Some(Some("x".into())));
        assert_eq!(patch.private, Some(true));
        assert_eq!(patch.version, None);
    }

    #[test]
    fn patch_refuses_null_where_null_means_nothing_and_unknown_fields() {
        for field in ["base_path", "repository", "private"] {
            let err = changes(&format!(r#"{{"{field}": null}}"#)).unwrap_err();
            assert!(err.contains("invalid type: null"), "{field}: {err}");
        }
        let err = changes(r#"{"name": "x"}"#).unwrap_err();
        assert!(err.contains("unknown field `name`"), "{err}");
        let err = changes(r#"{"version": "3"}"#).unwrap_err();
        assert!(err.contains("invalid type: string"), "{err}");
        for bad in ["-1", "1.5", "-0.5", "1e300"] {
            let err = changes(&format!(r#"{{"version": {bad}}}"#)).unwrap_err();
            assert!(err.contains("expected a version number"), "{bad}: {err}");
        }
    }

    #[test]
    fn versions_are_whole_numbers_in_either_json_notation() {
        for (json, want) in [("0", 0), ("7", 7), ("7.0", 7), ("7e0", 7), ("18446744073709551615", u64::MAX)] {
            let v: VersionNumber = serde_json::from_str(json).unwrap();
            assert_eq!(v, VersionNumber(want), "{json}");
        }
        assert!(serde_json::from_str::<VersionNumber>("\"7\"").is_err());
    }

    #[test]
    fn new_distribution_defaults_optional_fields_and_refuses_unknown_ones() {
        let n: NewDistribution = serde_json::from_str(r#"{"name": "d", "base_path": "b", "repository": "r"}"#).unwrap();
        let n = metadata::NewDistribution::from(n);
        assert_eq!((n.version, n.private, n.description), (None, false, None));
        let err = serde_json::from_str::<NewDistribution>(r#"{"name": "d", "base_path": "b", "repository": "r", "pinned": 1}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `pinned`"), "{err}");
        let err = serde_json::from_str::<NewDistribution>(r#"{"name": "d"}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `base_path`"), "{err}");
    }

    #[test]
    fn remotes_never_show_credentials_and_patches_tell_absent_from_null() {
        let n: NewRemote = serde_json::from_str(
            r#"{"name": "q", "url": "https://quay.io", "upstream_name": "a/b",
                "credentials": {"username": "bot", "password": "s3cret"}}"#,
        )
        .unwrap();
        assert!(!format!("{n:?}").contains("s3cret"));
        let n = crate::sync::NewRemote::from(n);
        assert_eq!((n.policy, n.tls_verify), (metadata::SyncPolicy::Immediate, true), "defaults");
        let shown = Remote::from(metadata::Remote {
            name: n.name,
            url: n.url,
            upstream_name: n.upstream_name,
            include_tags: vec![],
            exclude_tags: vec![],
            policy: n.policy,
            credentials: n.credentials,
            credentials_from: None,
            tls_verify: true,
            ca_cert: None,
            sigstore: None,
            download_concurrency: None,
            rate_limit: None,
            created_at: 0,
            updated_at: 0,
        });
        let j = serde_json::to_string(&shown).unwrap();
        assert!(j.contains(r#""has_credentials":true"#) && !j.contains("s3cret") && !j.contains("bot"), "{j}");

        let c: RemoteChanges = serde_json::from_str(r#"{"credentials": null, "rate_limit": 3}"#).unwrap();
        assert_eq!((c.credentials, c.rate_limit, c.url), (Some(None), Some(Some(3)), None));
        let err = serde_json::from_str::<RemoteChanges>(r#"{"url": null}"#).unwrap_err();
        assert!(err.to_string().contains("invalid type: null"), "{err}");
        let err = serde_json::from_str::<RemoteChanges>(r#"{"policy": "lazy"}"#).unwrap_err();
        assert!(err.to_string().contains("immediate") && err.to_string().contains("on_demand"), "{err}");
    }

    #[test]
    fn a_copy_takes_tags_or_manifests_and_tags_default_to_every_tag() {
        let copy = |json: &str| serde_json::from_str::<CopyContent>(json).map_err(|e| e.to_string())?.into_request();
        assert_eq!(copy(r#"{"source": "a/b"}"#).unwrap(), ("a/b".into(), None, CopySelection::Tags(vec![])));
        assert_eq!(
            copy(r#"{"source": "a/b", "source_version": 3, "tags": ["v1.*"]}"#).unwrap(),
            ("a/b".into(), Some(3), CopySelection::Tags(vec!["v1.*".into()]))
        );
        assert_eq!(copy(r#"{"source": "a/b", "tags": null}"#).unwrap().2, CopySelection::Tags(vec![]));
        assert_eq!(
            copy(r#"{"source": "a/b", "source_version": null, "manifests": ["sha256:x"]}"#).unwrap(),
            ("a/b".into(), None, CopySelection::Manifests(vec!["sha256:x".into()]))
        );
        let both = copy(r#"{"source": "a/b", "tags": [], "manifests": []}"#).unwrap_err();
        assert_eq!(both, "give tags or manifests, not both");
        assert!(copy(r#"{"tags": []}"#).unwrap_err().contains("missing field `source`"));
        assert!(copy(r#"{"source": "a/b", "tag": ["x"]}"#).unwrap_err().contains("unknown field `tag`"));
        assert!(copy(r#"{"source": "a/b", "source_version": -1}"#).unwrap_err().contains("expected a version number"));

        let remove: RemoveContent = serde_json::from_str(r#"{"tags": ["1"]}"#).unwrap();
        assert_eq!((remove.tags, remove.manifests), (vec!["1".to_owned()], vec![]));
        assert!(serde_json::from_str::<RemoveContent>(r#"{"digests": []}"#).is_err());
        assert_eq!(serde_json::from_str::<RevertTo>(r#"{"version": 2.0}"#).unwrap().version(), 2);
        assert!(serde_json::from_str::<RevertTo>("{}").unwrap_err().to_string().contains("missing field `version`"));
        assert_eq!(serde_json::to_string(&CurationResult::new(None)).unwrap(), r#"{"version":null}"#);
        assert_eq!(serde_json::to_string(&CurationResult::new(Some(4))).unwrap(), r#"{"version":4}"#);
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_795_600_800_123), "2026-11-25T10:00:00.123Z");
        assert_eq!(timestamp(-5), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn tasks_show_their_progress_and_what_they_made_with_null_for_what_is_unset() {
        let task = |state, started_at, finished_at| metadata::Task {
            id: 1,
            kind: "sync".into(),
            resource: Some("foo".into()),
            params: serde_json::json!({"remote": "quay"}),
            state,
            progress: metadata::TaskProgress { items_done: 3, items_total: Some(10), bytes_done: 12345 },
            error: None,
            created_resources: vec![metadata::CreatedResource::RepositoryVersion { repository: "foo".into(), number: 2 }],
            step: Some("STEP 1/2: FROM scratch".into()),
            created_at: 0,
            started_at,
            finished_at,
            node: Some("edge-01".into()),
        };
        let j = serde_json::to_value(Task::from(task(metadata::TaskState::Running, Some(1), None))).unwrap();
        assert_eq!(
            j,
            serde_json::json!({
                "id": 1, "kind": "sync", "resource": "foo", "params": {"remote": "quay"}, "state": "running",
                "progress": {"items_done": 3, "items_total": 10, "bytes_done": 12345}, "error": null,
                "created_resources": [{"type": "repository_version", "repository": "foo", "number": 2}],
                "step": "STEP 1/2: FROM scratch",
                "created_at": "1970-01-01T00:00:00.000Z", "started_at": "1970-01-01T00:00:00.001Z", "finished_at": null,
                "node": "edge-01"
            })
        );
        let mut waiting = task(metadata::TaskState::Waiting, None, None);
        waiting.progress.items_total = None;
        let j = serde_json::to_value(Task::from(waiting)).unwrap();
        assert_eq!((j["state"].clone(), j["started_at"].clone()), (serde_json::json!("waiting"), serde_json::Value::Null));
        assert_eq!(j["progress"]["items_total"], serde_json::Value::Null);
        for state in metadata::TaskState::ALL {
            let shown = serde_json::to_value(TaskState::from(state)).unwrap();
            assert_eq!(shown, state.as_str(), "the API names a state as the store does");
        }
    }

    #[test]
    fn distributions_show_where_clients_pull_from() {
        let d = Distribution::from(metadata::Distribution {
            name: "debian-stable".into(),
            base_path: "debian".into(),
            repository: "docker.io/library/debian".into(),
            version: None,
            private: false,
            description: None,
            created_at: 0,
            updated_at: 1,
        });
        let j = serde_json::to_value(&d).unwrap();
        assert_eq!(j["registry_path"], "debian");
        assert_eq!(j["version"], serde_json::Value::Null);
        assert_eq!(j["updated_at"], "1970-01-01T00:00:00.001Z");
    }
}

/// An action a rule grants on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RuleAction {
    Pull,
    Push,
    Delete,
}

impl From<auth::Action> for RuleAction {
    fn from(a: auth::Action) -> Self {
        match a {
            auth::Action::Pull => RuleAction::Pull,
            auth::Action::Push => RuleAction::Push,
            auth::Action::Delete => RuleAction::Delete,
        }
    }
}

/// One `[[auth.rule]]`: these users may do these actions on repositories
/// matching any of these patterns (`*` matches any characters, `/`
/// included; `?` one character).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct Rule {
    /// Position in the configuration, from 0.
    index: usize,
    /// User names, `*` (any signed-in user) or `anonymous`.
    #[schema(example = json!(["alice", "*"]))]
    users: Vec<String>,
    #[schema(example = json!(["team/*"]))]
    repositories: Vec<String>,
    actions: Vec<RuleAction>,
}

impl Rule {
    pub(crate) fn new(index: usize, r: &auth::Rule) -> Rule {
        Rule {
            index,
            users: r.grantees.iter().map(|g| g.as_str().to_owned()).collect(),
            repositories: r.repositories.iter().map(|p| p.as_str().to_owned()).collect(),
            actions: r.actions.iter().map(RuleAction::from).collect(),
        }
    }
}

/// A configured user. The password hash is never shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct User {
    #[schema(example = "alice")]
    name: String,
    /// May use the admin API.
    admin: bool,
    /// The rules that name this user or `*`.
    rules: Vec<Rule>,
}

impl User {
    pub(crate) fn new(u: &auth::UserView, rules: &[auth::Rule]) -> User {
        User {
            name: u.name.clone(),
            admin: u.admin,
            rules: u.rules.iter().filter_map(|&i| rules.get(i).map(|r| Rule::new(i, r))).collect(),
        }
    }
}

/// A token signing key; only its id and dates, never key material.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct SigningKey {
    /// The `kid` in the header of the tokens it signs.
    #[schema(example = "3f9a0c1d2e4b5a69")]
    kid: String,
    #[schema(example = "ES256")]
    algorithm: &'static str,
    /// True for the key that signs new tokens; the others only verify
    /// tokens they signed, until `expires_at`.
    current: bool,
    created_at: String,
    #[schema(required = true)]
    retired_at: Option<String>,
    #[schema(required = true)]
    expires_at: Option<String>,
}

impl From<&auth::KeyInfo> for SigningKey {
    fn from(k: &auth::KeyInfo) -> Self {
        let secs = |s: u64| timestamp(i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX));
        SigningKey {
            kid: k.kid.clone(),
            algorithm: "ES256",
            current: k.current,
            created_at: secs(k.created_at),
            retired_at: k.retired_at.map(secs),
            expires_at: k.expires_at.map(secs),
        }
    }
}
