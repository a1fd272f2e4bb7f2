//! The admin subcommands (`repository`, `content`, `distribution`,
//! `remote`, `task`, ...): their flags, and the one admin API request each
//! makes (`task show --wait` repeats its request until the task finishes). Planning a request is
//! pure, so the mapping from flags to method, path and body is testable
//! without a server; sending is `admin_client`'s, printing is `output`'s.
//! The subcommand and flag names are a contract operators' scripts rely on.

use std::fmt;
use std::str::FromStr;

use clap::{Args, Subcommand, ValueEnum};
use http::Method;
use serde_json::{Map, Value};

use super::admin_client::api_path;
use super::output::View;

#[derive(Subcommand, Debug)]
pub(crate) enum AdminCommand {
    /// Repositories and their versions.
    #[command(subcommand)]
    Repository(RepositoryCommand),
    /// The tags, manifests and blobs in a repository version.
    #[command(subcommand)]
    Content(ContentCommand),
    /// Distributions: names under which a repository (version) is served.
    #[command(subcommand)]
    Distribution(DistributionCommand),
    /// Remotes: registries that sync repositories take content from.
    #[command(subcommand)]
    Remote(RemoteCommand),
    /// Background tasks (syncs, exports, imports, builds): list, show, wait for, log, cancel.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Users: hash a password for the config, list the configured users.
    #[command(subcommand)]
    User(UserCommand),
    /// Token signing keys: list them, rotate the current one.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Storage housekeeping: gc and verify, as tasks.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Exports for air-gapped sites: create (a task), list, show, delete.
    #[command(subcommand)]
    Export(super::export_commands::ExportCommand),
    /// Import an export (as a task): checked whole before anything is
    /// stored, then one new version per repository.
    Import(super::export_commands::ImportArgs),
}

#[derive(Subcommand, Debug)]
pub(crate) enum StorageCommand {
    /// Remove expired upload sessions, spool leftovers and objects no
    /// repository version references (unused for an hour), as a task.
    /// Waits for it with its progress unless --no-wait.
    Gc(StorageTask),
    /// Re-hash every stored object, quarantining any that does not match
    /// its digest, as a task. Waits for it unless --no-wait.
    Verify(StorageTask),
    /// Copy every object of the local store into the bucket of
    /// [storage.s3] (verified, resumable), as a task; then set
    /// storage.backend = "s3" and restart. Waits for it unless --no-wait.
    Migrate(StorageMigrate),
}

#[derive(Args, Debug)]
pub(crate) struct StorageMigrate {
    /// Where to: the bucket configured in [storage.s3].
    #[arg(long, value_enum)]
    to: MigrateTarget,
    /// Print the task and return at once instead of waiting for it.
    #[arg(long)]
    no_wait: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum MigrateTarget {
    S3,
}

#[derive(Args, Debug)]
pub(crate) struct StorageTask {
    /// Print the task and return at once instead of waiting for it.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum UserCommand {
    /// Read a password (from the terminal without echo, or one line of
    /// standard input) and print its argon2id hash for `password_hash`.
    /// Runs locally; needs no running wharf.
    HashPassword,
    /// List the configured users and the rules that cover each.
    List {
        #[command(flatten)]
        page: Page,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum AuthCommand {
    /// List the token signing keys: the current one and retired ones that
    /// still verify tokens they signed.
    Keys {
        #[command(flatten)]
        page: Page,
    },
    /// Make a new signing key. Tokens signed by the old one stay valid
    /// until they expire (auth.token_ttl); no client has to log in again.
    RotateKey,
}

#[derive(Subcommand, Debug)]
pub(crate) enum RepositoryCommand {
    /// List repositories.
    List {
        /// Only repositories whose name contains S.
        #[arg(long, value_name = "S")]
        name_contains: Option<String>,
        /// Only repositories of this kind.
        #[arg(long, value_enum)]
        kind: Option<RepositoryKind>,
        #[command(flatten)]
        page: Page,
    },
    /// Show one repository.
    Show {
        #[command(flatten)]
        name: NameArg,
    },
    /// List a repository's versions, newest first, or show one with --number.
    Versions {
        #[command(flatten)]
        name: NameArg,
        /// Show this version (a number or `latest`) with its content summary.
        #[arg(long, value_name = "N", conflicts_with_all = ["limit", "offset"])]
        number: Option<VersionRef>,
        #[command(flatten)]
        page: Page,
    },
    /// Create a sync repository (empty until synced from a remote).
    Create(RepositoryCreate),
    /// Change a sync repository; only the fields given are sent.
    Update(RepositoryUpdate),
    /// Delete a sync or push repository with every version.
    Delete {
        #[command(flatten)]
        name: NameArg,
    },
    /// Sync a repository from a remote, as a task. Waits for it with a
    /// progress bar (on a terminal) unless --no-wait.
    Sync(RepositorySync),
    /// Build an image from a Containerfile into a push repository (one
    /// new version), as a task. Waits for it with the step it is at unless
    /// --no-wait, then prints its log.
    Build(super::build_commands::RepositoryBuild),
    /// Copy tags (chosen by glob) from a repository version into a sync or
    /// push repository, each with its manifest, index children, blobs and
    /// signatures.
    CopyTags(CopyTags),
    /// Copy manifests, by digest, from a repository version into a sync or
    /// push repository, with their index children, blobs and signatures
    /// (no tags but their cosign signature tags).
    CopyManifests(CopyManifests),
    /// Remove tags, and manifests with every tag naming them and the blobs
    /// and child manifests nothing else in the repository needs.
    Remove(RemoveContent),
    /// Make an older version's content the latest again, as a new version.
    Revert(Revert),
}

/// Settings of a sync repository, for create and update.
#[derive(Args, Debug)]
pub(crate) struct RepositoryFields {
    /// A description (update: an empty one clears it).
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
    /// Versions to keep (the newest; versions a distribution pins stay).
    #[arg(long, value_name = "N")]
    retain_versions: Option<u32>,
    /// The remote a sync uses when it names none, and scheduled syncs use.
    #[arg(long, value_name = "R")]
    remote: Option<String>,
    /// How often to sync on schedule, e.g. `6h`, `1d` (at least 1m; needs a
    /// remote). Up to a tenth of it is added at random.
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    sync_interval: Option<u64>,
}

#[derive(Args, Debug)]
pub(crate) struct RepositoryCreate {
    /// The repository's name, as clients will address it (`team/app`).
    #[arg(long, value_name = "NAME")]
    name: String,
    #[command(flatten)]
    fields: RepositoryFields,
    /// Scheduled syncs mirror (remove what the remote no longer has).
    #[arg(long)]
    sync_mirror: bool,
}

/// A field `repository update --unset` clears.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RepositoryOptional {
    Description,
    RetainVersions,
    Remote,
    SyncInterval,
}

impl RepositoryOptional {
    fn field(self) -> &'static str {
        match self {
            RepositoryOptional::Description => "description",
            RepositoryOptional::RetainVersions => "retain_versions",
            RepositoryOptional::Remote => "remote",
            RepositoryOptional::SyncInterval => "sync_interval",
        }
    }
}

#[derive(Args, Debug)]
pub(crate) struct RepositoryUpdate {
    /// The sync repository to change.
    #[arg(long, value_name = "NAME")]
    name: String,
    #[command(flatten)]
    fields: RepositoryFields,
    /// Whether scheduled syncs mirror.
    #[arg(long, value_name = "BOOL")]
    sync_mirror: Option<bool>,
    /// Clear an optional field (repeatable).
    #[arg(long, value_enum, value_name = "FIELD")]
    unset: Vec<RepositoryOptional>,
}

#[derive(Args, Debug)]
pub(crate) struct RepositorySync {
    /// The sync repository.
    #[arg(long, value_name = "NAME")]
    name: String,
    /// The remote to sync from [default: the repository's remote].
    #[arg(long, value_name = "R")]
    remote: Option<String>,
    /// Also remove what the remote no longer has (only among the tags the
    /// remote's filter covers).
    #[arg(long)]
    mirror: bool,
    /// Print the task and return at once instead of waiting for it.
    #[arg(long)]
    no_wait: bool,
}

/// `6h`, `90m`, `1d`: whole seconds.
fn parse_interval(s: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 6h or 30m: {e}"))?;
    Ok(d.as_secs())
}

/// Where a copy goes and where it comes from.
#[derive(Args, Debug)]
pub(crate) struct CopyEnds {
    /// The repository to copy into (a sync or push repository).
    #[arg(long, value_name = "DEST")]
    name: String,
    /// The repository to copy from (of any kind).
    #[arg(long, value_name = "SRC")]
    source: String,
    /// The source's version: a number or `latest` [default: latest].
    #[arg(long, value_name = "N")]
    source_version: Option<VersionRef>,
}

#[derive(Args, Debug)]
pub(crate) struct CopyTags {
    #[command(flatten)]
    ends: CopyEnds,
    /// Copy the tags matching this glob (`*` any characters, `?` one);
    /// repeatable [default: every tag].
    #[arg(long = "tag", value_name = "GLOB")]
    tags: Vec<String>,
}

#[derive(Args, Debug)]
pub(crate) struct CopyManifests {
    #[command(flatten)]
    ends: CopyEnds,
    /// A manifest to copy (sha256:...); repeatable.
    #[arg(long = "digest", value_name = "D", required = true)]
    digests: Vec<String>,
}

#[derive(Args, Debug)]
pub(crate) struct RemoveContent {
    /// The repository to remove from (a sync or push repository).
    #[arg(long, value_name = "R")]
    name: String,
    /// A tag to remove (its manifest stays); repeatable.
    #[arg(long = "tag", value_name = "T")]
    tags: Vec<String>,
    /// A manifest to remove, with every tag naming it; repeatable.
    #[arg(long = "digest", value_name = "D")]
    digests: Vec<String>,
}

#[derive(Args, Debug)]
pub(crate) struct Revert {
    /// The repository to revert (a sync or push repository).
    #[arg(long, value_name = "R")]
    name: String,
    /// The version whose content becomes the latest again.
    #[arg(long, value_name = "N")]
    version: u64,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ContentCommand {
    /// List the tags, manifests, blobs or atomic signatures in a repository version.
    List(ContentList),
}

#[derive(Args, Debug)]
pub(crate) struct ContentList {
    /// The repository, e.g. docker.io/library/debian.
    #[arg(long, value_name = "R")]
    repository: String,
    /// The version: a number or `latest` [default: latest].
    #[arg(long, value_name = "N")]
    version: Option<VersionRef>,
    /// Which content to list.
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    content_type: ContentType,
    /// Only the manifest or blob with this digest (signatures: those of
    /// the manifest with this digest).
    #[arg(long, value_name = "D")]
    digest: Option<String>,
    /// Only the tag with this name.
    #[arg(long, value_name = "T")]
    tag_name: Option<String>,
    #[command(flatten)]
    page: Page,
}

#[derive(Subcommand, Debug)]
pub(crate) enum DistributionCommand {
    /// Create a distribution.
    Create(DistributionCreate),
    /// Change a distribution; only the fields given are sent.
    Update(DistributionUpdate),
    /// Delete a distribution.
    Delete {
        #[command(flatten)]
        name: NameArg,
    },
    /// List distributions.
    List {
        #[command(flatten)]
        page: Page,
    },
    /// Show one distribution.
    Show {
        #[command(flatten)]
        name: NameArg,
    },
}

#[derive(Args, Debug)]
pub(crate) struct DistributionCreate {
    /// The distribution's name: 1-64 of [A-Za-z0-9._-].
    #[arg(long, value_name = "N")]
    name: String,
    /// The repository name clients pull it as.
    #[arg(long, value_name = "P")]
    base_path: String,
    /// The repository it serves.
    #[arg(long, value_name = "R")]
    repository: String,
    /// Serve this version of the repository [default: always the latest].
    #[arg(long, value_name = "V")]
    version: Option<u64>,
    /// Make it private.
    #[arg(long)]
    private: bool,
    #[arg(long, value_name = "D")]
    description: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct DistributionUpdate {
    /// The distribution to change.
    #[arg(long, value_name = "N")]
    name: String,
    /// A new base path.
    #[arg(long, value_name = "P")]
    base_path: Option<String>,
    /// Serve another repository.
    #[arg(long, value_name = "R")]
    repository: Option<String>,
    /// Pin this version of the repository.
    #[arg(long, value_name = "V")]
    version: Option<u64>,
    /// Unpin: always serve the latest version.
    #[arg(long, conflicts_with = "version")]
    latest: bool,
    /// Make it private or public.
    #[arg(long, value_name = "true|false", action = clap::ArgAction::Set)]
    private: Option<bool>,
    /// A new description; an empty one clears it.
    #[arg(long, value_name = "D")]
    description: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum RemoteCommand {
    /// Create a remote.
    Create(Box<RemoteCreate>),
    /// Change a remote; only the fields given are sent.
    Update(Box<RemoteUpdate>),
    /// Delete a remote.
    Delete {
        #[command(flatten)]
        name: NameArg,
    },
    /// List remotes.
    List {
        #[command(flatten)]
        page: Page,
    },
    /// Show one remote (never its credentials).
    Show {
        #[command(flatten)]
        name: NameArg,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum TaskCommand {
    /// List tasks, newest first.
    List {
        /// Only tasks in this state.
        #[arg(long, value_enum)]
        state: Option<TaskState>,
        /// Only tasks of this kind, e.g. sync.
        #[arg(long, value_name = "K")]
        kind: Option<String>,
        /// Only tasks working on this resource (a repository name).
        #[arg(long, value_name = "R")]
        resource: Option<String>,
        #[command(flatten)]
        page: Page,
    },
    /// Show one task and its progress.
    Show {
        /// The task's id.
        #[arg(long, value_name = "N")]
        id: u64,
        /// Wait until the task has finished, with a progress bar on stderr
        /// when it is a terminal; exit 1 if it failed, 130 if it was canceled.
        #[arg(long)]
        wait: bool,
    },
    /// Print a task's log (a build's steps and output, an export's files).
    Log {
        /// The task's id.
        #[arg(long, value_name = "N")]
        id: u64,
        /// Keep printing what the task logs until it finishes.
        #[arg(long)]
        follow: bool,
    },
    /// Cancel a task: a waiting one at once, a running one at its next check.
    Cancel {
        /// The task's id.
        #[arg(long, value_name = "N")]
        id: u64,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TaskState {
    Waiting,
    Running,
    Completed,
    Failed,
    Canceled,
}

impl TaskState {
    fn as_str(self) -> &'static str {
        match self {
            TaskState::Waiting => "waiting",
            TaskState::Running => "running",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Canceled => "canceled",
        }
    }
}

/// When a sync fetches blobs.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SyncPolicy {
    /// Every blob, during the sync.
    Immediate,
    /// Image configs during the sync, layers on first pull, through the
    /// registry port.
    #[value(name = "on_demand", alias = "on-demand")]
    OnDemand,
}

impl SyncPolicy {
    fn as_str(self) -> &'static str {
        match self {
            SyncPolicy::Immediate => "immediate",
            SyncPolicy::OnDemand => "on_demand",
        }
    }
}

/// The fields of a remote that `remote create` and `remote update` share.
#[derive(Args, Debug)]
pub(crate) struct RemoteFields {
    /// The remote registry's base URL (http:// or https://).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// The repository's name at the remote, e.g. library/debian.
    #[arg(long, value_name = "NAME")]
    upstream_name: Option<String>,
    /// Tag globs (`*`, `?`) or digests to sync, comma-separated [default: every tag].
    #[arg(long, value_name = "GLOBS", value_delimiter = ',')]
    include_tags: Option<Vec<String>>,
    /// Tag globs never synced, comma-separated.
    #[arg(long, value_name = "GLOBS", value_delimiter = ',')]
    exclude_tags: Option<Vec<String>>,
    /// When blobs are fetched [server default: immediate].
    #[arg(long, value_enum)]
    policy: Option<SyncPolicy>,
    /// Username for the remote; the password comes from --password or
    /// $WHARF_REMOTE_PASSWORD (better: not in the process list).
    #[arg(long, value_name = "U", requires = "password", conflicts_with = "credentials_from")]
    username: Option<String>,
    /// The password for --username (ignored without it, so the variable
    /// may stay set in a shell).
    #[arg(long, value_name = "P", env = "WHARF_REMOTE_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Use the credentials of this configured upstream.
    #[arg(long, value_name = "UPSTREAM")]
    credentials_from: Option<String>,
    /// Verify the remote's TLS certificate.
    #[arg(long, value_name = "true|false", action = clap::ArgAction::Set)]
    tls_verify: Option<bool>,
    /// A PEM file of certificates to trust for the remote (its text is sent).
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<std::path::PathBuf>,
    /// URL of a signature lookaside store.
    #[arg(long, value_name = "URL")]
    sigstore: Option<String>,
    /// Downloads at once (1-64).
    #[arg(long, value_name = "N")]
    download_concurrency: Option<u32>,
    /// Requests per second to the remote.
    #[arg(long, value_name = "N")]
    rate_limit: Option<u32>,
}

#[derive(Args, Debug)]
pub(crate) struct RemoteCreate {
    /// The remote's name: 1-64 of [A-Za-z0-9._-].
    #[arg(long, value_name = "N")]
    name: String,
    #[command(flatten)]
    fields: RemoteFields,
}

/// A remote field `remote update --unset` clears.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RemoteOptional {
    Credentials,
    CredentialsFrom,
    CaCert,
    Sigstore,
    DownloadConcurrency,
    RateLimit,
}

impl RemoteOptional {
    fn field(self) -> &'static str {
        match self {
            RemoteOptional::Credentials => "credentials",
            RemoteOptional::CredentialsFrom => "credentials_from",
            RemoteOptional::CaCert => "ca_cert",
            RemoteOptional::Sigstore => "sigstore",
            RemoteOptional::DownloadConcurrency => "download_concurrency",
            RemoteOptional::RateLimit => "rate_limit",
        }
    }
}

#[derive(Args, Debug)]
pub(crate) struct RemoteUpdate {
    /// The remote to change.
    #[arg(long, value_name = "N")]
    name: String,
    /// A new name.
    #[arg(long, value_name = "N")]
    rename: Option<String>,
    #[command(flatten)]
    fields: RemoteFields,
    /// Clear an optional field (repeatable).
    #[arg(long, value_enum, value_name = "FIELD")]
    unset: Vec<RemoteOptional>,
}

/// A repository or distribution name, as `--name R` or positionally.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub(crate) struct NameArg {
    /// The name (or give it without --name).
    #[arg(long = "name", value_name = "NAME")]
    flag: Option<String>,
    /// The name, as with --name.
    #[arg(value_name = "NAME")]
    positional: Option<String>,
}

impl NameArg {
    fn get(&self) -> &str {
        // clap's group makes exactly one of the two present.
        self.flag.as_deref().or(self.positional.as_deref()).unwrap_or_default()
    }
}

/// `--limit` and `--offset` of a listing; the server applies its defaults
/// (100 and 0) when they are not given.
#[derive(Args, Debug)]
pub(crate) struct Page {
    /// At most N results (the server allows 1-1000) [default: 100].
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
    /// Skip the first N results.
    #[arg(long, value_name = "N")]
    offset: Option<u64>,
}

impl Page {
    pub(crate) fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if let Some(limit) = self.limit {
            query.push(("limit", limit.to_string()));
        }
        if let Some(offset) = self.offset {
            query.push(("offset", offset.to_string()));
        }
        query
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RepositoryKind {
    PullThrough,
    Push,
    Sync,
}

impl RepositoryKind {
    fn as_str(self) -> &'static str {
        match self {
            RepositoryKind::PullThrough => "pull-through",
            RepositoryKind::Push => "push",
            RepositoryKind::Sync => "sync",
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ContentType {
    Tag,
    Manifest,
    Blob,
    /// Atomic container signatures of the version's manifests.
    Signature,
}

/// A version number, or `latest`, which the API resolves itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VersionRef {
    Number(u64),
    Latest,
}

impl FromStr for VersionRef {
    type Err = String;

    fn from_str(s: &str) -> Result<VersionRef, String> {
        if s == "latest" {
            return Ok(VersionRef::Latest);
        }
        s.parse().map(VersionRef::Number).map_err(|_| format!("{s:?} is not a version number or `latest`"))
    }
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionRef::Number(n) => write!(f, "{n}"),
            VersionRef::Latest => f.write_str("latest"),
        }
    }
}

/// One admin API request and how to print its answer.
#[derive(Debug, PartialEq)]
pub(crate) struct Call {
    pub(crate) method: Method,
    /// Path and query under the admin URL.
    pub(crate) path: String,
    pub(crate) body: Option<Value>,
    pub(crate) view: View,
}

impl Call {
    fn get(path: String, view: View) -> Call {
        Call { method: Method::GET, path, body: None, view }
    }
}

/// Flags that parse but make no sense together; the message says which.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

/// The request `command` makes.
pub(crate) fn plan(command: &AdminCommand) -> Result<Call, UsageError> {
    Ok(match command {
        AdminCommand::Repository(RepositoryCommand::List { name_contains, kind, page }) => {
            let mut query = Vec::new();
            if let Some(s) = name_contains {
                query.push(("name_contains", s.clone()));
            }
            if let Some(kind) = kind {
                query.push(("kind", kind.as_str().to_owned()));
            }
            query.extend(page.query());
            Call::get(api_path(&["repositories"], &query), View::Repositories)
        }
        AdminCommand::Repository(RepositoryCommand::Show { name }) => {
            Call::get(api_path(&["repositories", name.get()], &[]), View::Repository)
        }
        AdminCommand::Repository(RepositoryCommand::Versions { name, number: Some(number), page: _ }) => {
            Call::get(api_path(&["repositories", name.get(), "versions", &number.to_string()], &[]), View::Version)
        }
        AdminCommand::Repository(RepositoryCommand::Versions { name, number: None, page }) => {
            Call::get(api_path(&["repositories", name.get(), "versions"], &page.query()), View::Versions)
        }
        AdminCommand::Repository(RepositoryCommand::Create(create)) => {
            let mut body = Map::new();
            body.insert("name".into(), create.name.clone().into());
            repository_fields(&create.fields, &mut body);
            if create.sync_mirror {
                body.insert("sync_mirror".into(), true.into());
            }
            Call {
                method: Method::POST,
                path: api_path(&["repositories"], &[]),
                body: Some(Value::Object(body)),
                view: View::Repository,
            }
        }
        AdminCommand::Repository(RepositoryCommand::Update(update)) => {
            let mut body = Map::new();
            repository_fields(&update.fields, &mut body);
            if let Some(mirror) = update.sync_mirror {
                body.insert("sync_mirror".into(), mirror.into());
            }
            for field in &update.unset {
                if body.contains_key(field.field()) {
                    return Err(UsageError(format!("{} is both set and unset", field.field())));
                }
                body.insert(field.field().into(), Value::Null);
            }
            if body.is_empty() {
                return Err(UsageError(
                    "nothing to change: give at least one of --description, --retain-versions, --remote, \
                     --sync-interval, --sync-mirror, --unset"
                        .into(),
                ));
            }
            Call {
                method: Method::PATCH,
                path: api_path(&["repositories", &update.name], &[]),
                body: Some(Value::Object(body)),
                view: View::Repository,
            }
        }
        AdminCommand::Repository(RepositoryCommand::Delete { name }) => Call {
            method: Method::DELETE,
            path: api_path(&["repositories", name.get()], &[]),
            body: None,
            view: View::Deleted { what: "repository", name: name.get().to_owned() },
        },
        AdminCommand::Repository(RepositoryCommand::Build(build)) => return build.plan().map(|(call, _)| call),
        AdminCommand::Repository(RepositoryCommand::Sync(sync)) => {
            let mut body = Map::new();
            if let Some(remote) = &sync.remote {
                body.insert("remote".into(), remote.clone().into());
            }
            if sync.mirror {
                body.insert("mirror".into(), true.into());
            }
            Call {
                method: Method::POST,
                path: api_path(&["repositories", &sync.name, "sync"], &[]),
                body: Some(Value::Object(body)),
                view: View::Task,
            }
        }
        AdminCommand::Repository(RepositoryCommand::CopyTags(copy)) => {
            let mut body = copy_body(&copy.ends);
            body.insert("tags".into(), copy.tags.clone().into());
            curate(&copy.ends.name, "copy", body)
        }
        AdminCommand::Repository(RepositoryCommand::CopyManifests(copy)) => {
            let mut body = copy_body(&copy.ends);
            body.insert("manifests".into(), copy.digests.clone().into());
            curate(&copy.ends.name, "copy", body)
        }
        AdminCommand::Repository(RepositoryCommand::Remove(remove)) => {
            if remove.tags.is_empty() && remove.digests.is_empty() {
                return Err(UsageError("nothing to remove: give at least one --tag or --digest".into()));
            }
            let mut body = Map::new();
            if !remove.tags.is_empty() {
                body.insert("tags".into(), remove.tags.clone().into());
            }
            if !remove.digests.is_empty() {
                body.insert("manifests".into(), remove.digests.clone().into());
            }
            curate(&remove.name, "remove", body)
        }
        AdminCommand::Repository(RepositoryCommand::Revert(revert)) => {
            let mut body = Map::new();
            body.insert("version".into(), revert.version.into());
            curate(&revert.name, "revert", body)
        }
        AdminCommand::Content(ContentCommand::List(list)) => content_list(list)?,
        AdminCommand::Distribution(DistributionCommand::Create(create)) => Call {
            method: Method::POST,
            path: api_path(&["distributions"], &[]),
            body: Some(create_body(create)),
            view: View::Distribution,
        },
        AdminCommand::Distribution(DistributionCommand::Update(update)) => Call {
            method: Method::PATCH,
            path: api_path(&["distributions", &update.name], &[]),
            body: Some(update_body(update)?),
            view: View::Distribution,
        },
        AdminCommand::Distribution(DistributionCommand::Delete { name }) => Call {
            method: Method::DELETE,
            path: api_path(&["distributions", name.get()], &[]),
            body: None,
            view: View::Deleted { what: "distribution", name: name.get().to_owned() },
        },
        AdminCommand::Distribution(DistributionCommand::List { page }) => {
            Call::get(api_path(&["distributions"], &page.query()), View::Distributions)
        }
        AdminCommand::Distribution(DistributionCommand::Show { name }) => {
            Call::get(api_path(&["distributions", name.get()], &[]), View::Distribution)
        }
        AdminCommand::Remote(RemoteCommand::Create(create)) => Call {
            method: Method::POST,
            path: api_path(&["remotes"], &[]),
            body: Some(remote_create_body(create)?),
            view: View::Remote,
        },
        AdminCommand::Remote(RemoteCommand::Update(update)) => Call {
            method: Method::PATCH,
            path: api_path(&["remotes", &update.name], &[]),
            body: Some(remote_update_body(update)?),
            view: View::Remote,
        },
        AdminCommand::Remote(RemoteCommand::Delete { name }) => Call {
            method: Method::DELETE,
            path: api_path(&["remotes", name.get()], &[]),
            body: None,
            view: View::Deleted { what: "remote", name: name.get().to_owned() },
        },
        AdminCommand::Remote(RemoteCommand::List { page }) => {
            Call::get(api_path(&["remotes"], &page.query()), View::Remotes)
        }
        AdminCommand::Remote(RemoteCommand::Show { name }) => {
            Call::get(api_path(&["remotes", name.get()], &[]), View::Remote)
        }
        AdminCommand::Task(TaskCommand::List { state, kind, resource, page }) => {
            let mut query = Vec::new();
            if let Some(state) = state {
                query.push(("state", state.as_str().to_owned()));
            }
            if let Some(kind) = kind {
                query.push(("kind", kind.clone()));
            }
            if let Some(resource) = resource {
                query.push(("resource", resource.clone()));
            }
            query.extend(page.query());
            Call::get(api_path(&["tasks"], &query), View::Tasks)
        }
        AdminCommand::Task(TaskCommand::Show { id, wait: _ }) => {
            Call::get(api_path(&["tasks", &id.to_string()], &[]), View::Task)
        }
        AdminCommand::Task(TaskCommand::Log { id, follow: _ }) => {
            Call::get(api_path(&["tasks", &id.to_string(), "log"], &[]), View::TaskLog)
        }
        AdminCommand::Task(TaskCommand::Cancel { id }) => Call {
            method: Method::POST,
            path: api_path(&["tasks", &id.to_string(), "cancel"], &[]),
            body: None,
            view: View::TaskCancel,
        },
        AdminCommand::User(UserCommand::List { page }) => Call::get(api_path(&["users"], &page.query()), View::Users),
        AdminCommand::User(UserCommand::HashPassword) => {
            return Err(UsageError("hash-password runs locally, not through the admin API".into()))
        }
        AdminCommand::Auth(AuthCommand::Keys { page }) => {
            Call::get(api_path(&["signing-keys"], &page.query()), View::SigningKeys)
        }
        AdminCommand::Storage(command) => Call {
            method: Method::POST,
            path: api_path(
                &[
                    "storage",
                    match command {
                        StorageCommand::Gc(_) => "gc",
                        StorageCommand::Verify(_) => "verify",
                        StorageCommand::Migrate(StorageMigrate { to: MigrateTarget::S3, .. }) => "migrate",
                    },
                ],
                &[],
            ),
            body: None,
            view: View::Task,
        },
        AdminCommand::Export(export) => return export.plan(),
        AdminCommand::Import(import) => return import.plan(),
        AdminCommand::Auth(AuthCommand::RotateKey) => Call {
            method: Method::POST,
            path: api_path(&["signing-keys"], &[]),
            body: None,
            view: View::SigningKey,
        },
    })
}

/// Whether `command` starts a task (its answer) and then waits for it.
pub(crate) fn waits_for_started_task(command: &AdminCommand) -> bool {
    matches!(
        command,
        AdminCommand::Repository(RepositoryCommand::Sync(RepositorySync { no_wait: false, .. }))
            | AdminCommand::Storage(StorageCommand::Gc(StorageTask { no_wait: false }))
            | AdminCommand::Storage(StorageCommand::Verify(StorageTask { no_wait: false }))
            | AdminCommand::Storage(StorageCommand::Migrate(StorageMigrate { no_wait: false, .. }))
    ) || matches!(command, AdminCommand::Export(export) if export.waits())
        || matches!(command, AdminCommand::Repository(RepositoryCommand::Build(b)) if !b.no_wait)
        || matches!(command, AdminCommand::Import(import) if import.waits())
}

/// The given repository fields as JSON; an empty description clears it.
fn repository_fields(f: &RepositoryFields, body: &mut Map<String, Value>) {
    if let Some(d) = &f.description {
        let value = if d.is_empty() { Value::Null } else { d.clone().into() };
        body.insert("description".into(), value);
    }
    if let Some(n) = f.retain_versions {
        body.insert("retain_versions".into(), n.into());
    }
    if let Some(r) = &f.remote {
        body.insert("remote".into(), r.clone().into());
    }
    if let Some(s) = f.sync_interval {
        body.insert("sync_interval".into(), s.into());
    }
}

/// The task `command` waits for to finish, instead of asking once.
pub(crate) fn task_to_wait_for(command: &AdminCommand) -> Option<u64> {
    match command {
        AdminCommand::Task(TaskCommand::Show { id, wait: true }) => Some(*id),
        _ => None,
    }
}

/// A copy's source, and its version only when one is given (the API's
/// default is the latest).
fn copy_body(ends: &CopyEnds) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("source".into(), ends.source.clone().into());
    if let Some(VersionRef::Number(n)) = ends.source_version {
        body.insert("source_version".into(), n.into());
    }
    body
}

/// A `POST /repositories/{name}/{action}` changing the repository's content.
fn curate(repository: &str, action: &str, body: Map<String, Value>) -> Call {
    Call {
        method: Method::POST,
        path: api_path(&["repositories", repository, action], &[]),
        body: Some(Value::Object(body)),
        view: View::Curated { repository: repository.to_owned() },
    }
}

fn content_list(list: &ContentList) -> Result<Call, UsageError> {
    let version = list.version.unwrap_or(VersionRef::Latest).to_string();
    let mut query = Vec::new();
    // The API filters tags by name, manifests and blobs by digest and
    // signatures by their manifest's digest; a filter the chosen type does
    // not have would be silently ignored.
    let (segment, view) = match list.content_type {
        ContentType::Tag => {
            if list.digest.is_some() {
                return Err(UsageError(
                    "--digest applies to --type manifest, blob or signature; for tags use --tag-name".into(),
                ));
            }
            if let Some(name) = &list.tag_name {
                query.push(("name", name.clone()));
            }
            ("tags", View::Tags)
        }
        ContentType::Manifest | ContentType::Blob | ContentType::Signature => {
            if list.tag_name.is_some() {
                return Err(UsageError("--tag-name applies to --type tag only".into()));
            }
            let (segment, key, view) = match list.content_type {
                ContentType::Manifest => ("manifests", "digest", View::Manifests),
                ContentType::Signature => ("signatures", "manifest", View::Signatures),
                _ => ("blobs", "digest", View::Blobs),
            };
            if let Some(digest) = &list.digest {
                query.push((key, digest.clone()));
            }
            (segment, view)
        }
    };
    query.extend(list.page.query());
    Ok(Call::get(api_path(&["repositories", &list.repository, "versions", &version, segment], &query), view))
}

/// The POST body: the required fields, and the optional ones only when
/// given, so the server's defaults apply otherwise.
fn create_body(create: &DistributionCreate) -> Value {
    let mut body = Map::new();
    body.insert("name".into(), create.name.clone().into());
    body.insert("base_path".into(), create.base_path.clone().into());
    body.insert("repository".into(), create.repository.clone().into());
    if let Some(version) = create.version {
        body.insert("version".into(), version.into());
    }
    if create.private {
        body.insert("private".into(), true.into());
    }
    if let Some(description) = &create.description {
        body.insert("description".into(), description.clone().into());
    }
    Value::Object(body)
}

/// The PATCH body: exactly the fields given, so nothing else changes.
/// `--latest` sends `"version": null`, which the API reads as "serve the
/// latest"; an empty `--description` sends null, which clears it.
fn update_body(update: &DistributionUpdate) -> Result<Value, UsageError> {
    let mut body = Map::new();
    if let Some(base_path) = &update.base_path {
        body.insert("base_path".into(), base_path.clone().into());
    }
    if let Some(repository) = &update.repository {
        body.insert("repository".into(), repository.clone().into());
    }
    if let Some(version) = update.version {
        body.insert("version".into(), version.into());
    }
    if update.latest {
        body.insert("version".into(), Value::Null);
    }
    if let Some(private) = update.private {
        body.insert("private".into(), private.into());
    }
    if let Some(description) = &update.description {
        let value = if description.is_empty() { Value::Null } else { description.clone().into() };
        body.insert("description".into(), value);
    }
    if body.is_empty() {
        return Err(UsageError(
            "nothing to change: give at least one of --base-path, --repository, --version, --latest, --private, --description"
                .into(),
        ));
    }
    Ok(Value::Object(body))
}

/// The given remote fields as JSON; reads `--ca-cert`'s file.
fn remote_fields(f: &RemoteFields, body: &mut Map<String, Value>) -> Result<(), UsageError> {
    let mut put = |key: &str, value: Value| {
        body.insert(key.into(), value);
    };
    if let Some(v) = &f.url {
        put("url", v.clone().into());
    }
    if let Some(v) = &f.upstream_name {
        put("upstream_name", v.clone().into());
    }
    // `--include-tags ""` is an empty list: every tag.
    let list = |v: &Vec<String>| Value::from(v.iter().filter(|t| !t.is_empty()).cloned().collect::<Vec<_>>());
    if let Some(v) = &f.include_tags {
        put("include_tags", list(v));
    }
    if let Some(v) = &f.exclude_tags {
        put("exclude_tags", list(v));
    }
    if let Some(v) = f.policy {
        put("policy", v.as_str().into());
    }
    if let (Some(username), Some(password)) = (&f.username, &f.password) {
        put("credentials", serde_json::json!({"username": username, "password": password}));
    }
    if let Some(v) = &f.credentials_from {
        put("credentials_from", v.clone().into());
    }
    if let Some(v) = f.tls_verify {
        put("tls_verify", v.into());
    }
    if let Some(path) = &f.ca_cert {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("--ca-cert {}: {e}", path.display())))?;
        put("ca_cert", pem.into());
    }
    if let Some(v) = &f.sigstore {
        put("sigstore", v.clone().into());
    }
    if let Some(v) = f.download_concurrency {
        put("download_concurrency", v.into());
    }
    if let Some(v) = f.rate_limit {
        put("rate_limit", v.into());
    }
    Ok(())
}

fn remote_create_body(create: &RemoteCreate) -> Result<Value, UsageError> {
    let mut body = Map::new();
    body.insert("name".into(), create.name.clone().into());
    remote_fields(&create.fields, &mut body)?;
    for required in ["url", "upstream_name"] {
        if !body.contains_key(required) {
            return Err(UsageError(format!("remote create needs --{}", required.replace('_', "-"))));
        }
    }
    Ok(Value::Object(body))
}

fn remote_update_body(update: &RemoteUpdate) -> Result<Value, UsageError> {
    let mut body = Map::new();
    if let Some(name) = &update.rename {
        body.insert("name".into(), name.clone().into());
    }
    remote_fields(&update.fields, &mut body)?;
    for field in &update.unset {
        let key = field.field();
        if body.contains_key(key) {
            return Err(UsageError(format!("--unset {key} contradicts a value given for it")));
        }
        body.insert(key.into(), Value::Null);
    }
    if body.is_empty() {
        return Err(UsageError("nothing to change: give a field to set or --unset".into()));
    }
    Ok(Value::Object(body))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::*;

    #[derive(Parser)]
    struct Test {
        #[command(subcommand)]
        command: AdminCommand,
    }

    fn parse(args: &str) -> AdminCommand {
        let argv = std::iter::once("wharf").chain(args.split_whitespace());
        match Test::try_parse_from(argv) {
            Ok(t) => t.command,
            Err(e) => panic!("{args}: {e}"),
        }
    }

    fn call(args: &str) -> Call {
        plan(&parse(args)).unwrap()
    }

    fn refused(args: &str) -> bool {
        let argv = std::iter::once("wharf").chain(args.split_whitespace());
        Test::try_parse_from(argv).is_err()
    }

    #[test]
    fn repository_create_update_and_sync_plan_their_requests() {
        let c = call("repository create --name team/app --remote quay --sync-interval 6h --sync-mirror");
        assert_eq!((c.method, c.path.as_str()), (Method::POST, "/api/v1/repositories"));
        assert_eq!(
            c.body,
            Some(serde_json::json!({"name": "team/app", "remote": "quay", "sync_interval": 21600, "sync_mirror": true}))
        );
        let u = call("repository update --name team/app --description x --unset sync-interval");
        assert_eq!((u.method, u.path.as_str()), (Method::PATCH, "/api/v1/repositories/team%2Fapp"));
        assert_eq!(u.body, Some(serde_json::json!({"description": "x", "sync_interval": null})));
        assert!(plan(&parse("repository update --name a")).is_err(), "nothing to change");
        assert!(plan(&parse("repository update --name a --remote r --unset remote")).is_err());
        assert!(refused("repository create --name a --sync-interval often"));
        let sync = parse("repository sync --name team/app --mirror");
        let c = plan(&sync).unwrap();
        assert_eq!((c.method, c.path.as_str()), (Method::POST, "/api/v1/repositories/team%2Fapp/sync"));
        assert_eq!(c.body, Some(serde_json::json!({"mirror": true})));
        assert!(waits_for_started_task(&sync));
        assert!(!waits_for_started_task(&parse("repository sync --name a --remote r --no-wait")));
        let d = call("repository delete --name team/app");
        assert_eq!((d.method, d.path.as_str()), (Method::DELETE, "/api/v1/repositories/team%2Fapp"));
    }

    #[test]
    fn storage_gc_and_verify_start_tasks_and_wait_unless_told_not_to() {
        let gc = parse("storage gc");
        let c = plan(&gc).unwrap();
        assert_eq!((c.method, c.path.as_str(), c.body, c.view), (Method::POST, "/api/v1/storage/gc", None, View::Task));
        assert!(waits_for_started_task(&gc));
        let verify = parse("storage verify --no-wait");
        assert_eq!(plan(&verify).unwrap().path, "/api/v1/storage/verify");
        assert!(!waits_for_started_task(&verify));
        assert!(refused("storage compact"));
        let migrate = parse("storage migrate --to s3");
        assert_eq!(plan(&migrate).unwrap().path, "/api/v1/storage/migrate");
        assert!(waits_for_started_task(&migrate));
        assert!(!waits_for_started_task(&parse("storage migrate --to s3 --no-wait")));
        assert!(refused("storage migrate"), "--to is required");
        assert!(refused("storage migrate --to gcs"));
    }

    #[test]
    fn repository_list_sends_its_filters_as_a_query() {
        assert_eq!(call("repository list").path, "/api/v1/repositories");
        let c = call("repository list --name-contains lib/deb --kind pull-through --limit 5 --offset 10");
        assert_eq!(c.path, "/api/v1/repositories?name_contains=lib%2Fdeb&kind=pull-through&limit=5&offset=10");
        assert_eq!((c.method, c.view), (Method::GET, View::Repositories));
        assert!(refused("repository list --kind mirror"));
    }

    #[test]
    fn a_repository_is_named_by_flag_or_position_and_encoded() {
        let expected = "/api/v1/repositories/docker.io%2Flibrary%2Fdebian";
        assert_eq!(call("repository show --name docker.io/library/debian").path, expected);
        assert_eq!(call("repository show docker.io/library/debian").path, expected);
        assert!(refused("repository show"));
        assert!(refused("repository show a --name b"));
    }

    #[test]
    fn repository_versions_lists_or_shows_one() {
        let list = call("repository versions --name a/b --limit 3");
        assert_eq!((list.path.as_str(), list.view), ("/api/v1/repositories/a%2Fb/versions?limit=3", View::Versions));
        let one = call("repository versions --name a/b --number 7");
        assert_eq!((one.path.as_str(), one.view), ("/api/v1/repositories/a%2Fb/versions/7", View::Version));
        assert_eq!(call("repository versions a/b --number latest").path, "/api/v1/repositories/a%2Fb/versions/latest");
        assert!(refused("repository versions --name a/b --number seven"));
        assert!(refused("repository versions --name a/b --number 7 --offset 1"));
    }

    #[test]
    fn copy_tags_sends_the_globs_given_or_none_for_every_tag() {
        let c = call("repository copy-tags --name team/dest --source docker.io/library/debian --tag 12* --tag bookworm");
        assert_eq!((c.method.clone(), c.path.as_str()), (Method::POST, "/api/v1/repositories/team%2Fdest/copy"));
        assert_eq!(c.body, Some(json!({"source": "docker.io/library/debian", "tags": ["12*", "bookworm"]})));
        assert_eq!(c.view, View::Curated { repository: "team/dest".into() });
        let all = call("repository copy-tags --name team/dest --source team/src --source-version 3");
        assert_eq!(all.body, Some(json!({"source": "team/src", "source_version": 3, "tags": []})));
        let latest = call("repository copy-tags --name team/dest --source team/src --source-version latest");
        assert_eq!(latest.body, Some(json!({"source": "team/src", "tags": []})), "latest is the API's default");
        assert!(refused("repository copy-tags --name team/dest"), "--source is required");
        assert!(refused("repository copy-tags --source team/src"), "--name is required");
        assert!(refused("repository copy-tags --name a --source b --source-version three"));
    }

    #[test]
    fn copy_manifests_needs_a_digest() {
        let c = call("repository copy-manifests --name team/dest --source team/src --digest sha256:aa --digest sha256:bb");
        assert_eq!((c.method.clone(), c.path.as_str()), (Method::POST, "/api/v1/repositories/team%2Fdest/copy"));
        assert_eq!(c.body, Some(json!({"source": "team/src", "manifests": ["sha256:aa", "sha256:bb"]})));
        assert!(refused("repository copy-manifests --name team/dest --source team/src"));
        assert!(refused("repository copy-manifests --name team/dest --source team/src --digest d --tag t"));
    }

    #[test]
    fn remove_sends_tags_and_manifests_and_refuses_nothing() {
        let c = call("repository remove --name team/app --tag 1.0 --tag 1.1 --digest sha256:aa");
        assert_eq!((c.method.clone(), c.path.as_str()), (Method::POST, "/api/v1/repositories/team%2Fapp/remove"));
        assert_eq!(c.body, Some(json!({"tags": ["1.0", "1.1"], "manifests": ["sha256:aa"]})));
        assert_eq!(call("repository remove --name team/app --digest sha256:aa").body, Some(json!({"manifests": ["sha256:aa"]})));
        assert_eq!(call("repository remove --name team/app --tag x").body, Some(json!({"tags": ["x"]})));
        let e = plan(&parse("repository remove --name team/app")).unwrap_err();
        assert!(e.0.starts_with("nothing to remove"), "{e}");
    }

    #[test]
    fn revert_names_the_version() {
        let c = call("repository revert --name team/app --version 2");
        assert_eq!((c.method.clone(), c.path.as_str()), (Method::POST, "/api/v1/repositories/team%2Fapp/revert"));
        assert_eq!((c.body, c.view), (Some(json!({"version": 2})), View::Curated { repository: "team/app".into() }));
        assert!(refused("repository revert --name team/app"));
        assert!(refused("repository revert --name team/app --version latest"));
    }

    #[test]
    fn content_list_defaults_to_the_latest_version_and_filters_by_type() {
        let tags = call("content list --repository a/b --type tag --tag-name 11");
        assert_eq!(
            (tags.path.as_str(), tags.view),
            ("/api/v1/repositories/a%2Fb/versions/latest/tags?name=11", View::Tags)
        );
        let manifests = call("content list --repository a/b --version 3 --type manifest --digest sha256:ab --limit 2");
        assert_eq!(manifests.path, "/api/v1/repositories/a%2Fb/versions/3/manifests?digest=sha256%3Aab&limit=2");
        assert_eq!(manifests.view, View::Manifests);
        let blobs = call("content list --repository a/b --type blob --offset 100");
        assert_eq!(
            (blobs.path.as_str(), blobs.view),
            ("/api/v1/repositories/a%2Fb/versions/latest/blobs?offset=100", View::Blobs)
        );
        let signatures = call("content list --repository a/b --version 2 --type signature --digest sha256:ab");
        assert_eq!(
            (signatures.path.as_str(), signatures.view),
            ("/api/v1/repositories/a%2Fb/versions/2/signatures?manifest=sha256%3Aab", View::Signatures)
        );
        assert!(refused("content list --repository a/b"));
        assert!(refused("content list --repository a/b --type layer"));
    }

    #[test]
    fn content_filters_that_the_type_lacks_are_usage_errors() {
        let e = plan(&parse("content list --repository a/b --type manifest --tag-name 11")).unwrap_err();
        assert!(e.0.contains("--tag-name"), "{e}");
        let e = plan(&parse("content list --repository a/b --type tag --digest sha256:ab")).unwrap_err();
        assert!(e.0.contains("--digest"), "{e}");
        let e = plan(&parse("content list --repository a/b --type signature --tag-name 11")).unwrap_err();
        assert!(e.0.contains("--tag-name"), "{e}");
    }

    #[test]
    fn distribution_create_sends_only_the_fields_given() {
        let c = call("distribution create --name deb --base-path debian --repository docker.io/library/debian");
        assert_eq!((c.method.clone(), c.path.as_str()), (Method::POST, "/api/v1/distributions"));
        assert_eq!(
            c.body,
            Some(json!({"name": "deb", "base_path": "debian", "repository": "docker.io/library/debian"}))
        );
        let c = call(
            "distribution create --name deb --base-path debian --repository r --version 3 --private --description hi",
        );
        assert_eq!(
            c.body,
            Some(
                json!({"name": "deb", "base_path": "debian", "repository": "r", "version": 3, "private": true, "description": "hi"})
            )
        );
        assert!(refused("distribution create --name deb --base-path debian"));
    }

    #[test]
    fn distribution_update_patches_only_the_fields_given() {
        let c = call("distribution update --name deb --version 4");
        assert_eq!((c.method.clone(), c.path.as_str()), (Method::PATCH, "/api/v1/distributions/deb"));
        assert_eq!(c.body, Some(json!({"version": 4})));
        assert_eq!(call("distribution update --name deb --latest").body, Some(json!({"version": null})));
        assert_eq!(call("distribution update --name deb --private false").body, Some(json!({"private": false})));
        assert_eq!(
            call("distribution update --name deb --base-path b --repository r --private true --description d").body,
            Some(json!({"base_path": "b", "repository": "r", "private": true, "description": "d"}))
        );
        let cleared = DistributionUpdate {
            name: "deb".into(),
            base_path: None,
            repository: None,
            version: None,
            latest: false,
            private: None,
            description: Some(String::new()),
        };
        assert_eq!(update_body(&cleared).unwrap(), json!({"description": null}));
    }

    #[test]
    fn distribution_update_refuses_contradictions_and_empty_changes() {
        assert!(refused("distribution update --name deb --version 4 --latest"));
        assert!(refused("distribution update --name deb --private"));
        assert!(refused("distribution update --name deb --private maybe"));
        let e = plan(&parse("distribution update --name deb")).unwrap_err();
        assert!(e.0.starts_with("nothing to change"), "{e}");
    }

    #[test]
    fn remote_create_and_update_send_only_the_fields_given() {
        let c = call("remote create --name quay --url https://quay.io --upstream-name team/app --include-tags v1.*,latest --policy on_demand");
        assert_eq!((c.method.clone(), c.path.as_str(), c.view.clone()), (Method::POST, "/api/v1/remotes", View::Remote));
        assert_eq!(
            c.body,
            Some(json!({"name": "quay", "url": "https://quay.io", "upstream_name": "team/app",
                        "include_tags": ["v1.*", "latest"], "policy": "on_demand"}))
        );
        let e = plan(&parse("remote create --name quay --url https://quay.io")).unwrap_err();
        assert!(e.0.contains("--upstream-name"), "{e}");
        assert!(refused("remote create --name q --url u --upstream-name n --username bot"), "a username needs a password");

        let u = call("remote update --name quay --rate-limit 5 --unset credentials --unset sigstore --tls-verify false");
        assert_eq!((u.method.clone(), u.path.as_str()), (Method::PATCH, "/api/v1/remotes/quay"));
        assert_eq!(u.body, Some(json!({"rate_limit": 5, "tls_verify": false, "credentials": null, "sigstore": null})));
        assert_eq!(call("remote update --name quay --include-tags=").body, Some(json!({"include_tags": []})));
        assert!(plan(&parse("remote update --name quay")).is_err());
        assert!(plan(&parse("remote update --name quay --rate-limit 5 --unset rate-limit")).is_err());
    }

    #[test]
    fn remote_list_show_and_delete() {
        assert_eq!(call("remote list --limit 2").path, "/api/v1/remotes?limit=2");
        assert_eq!(call("remote show quay").view, View::Remote);
        let delete = call("remote delete --name quay");
        assert_eq!((delete.method, delete.path.as_str()), (Method::DELETE, "/api/v1/remotes/quay"));
    }

    #[test]
    fn task_commands_list_with_filters_show_and_cancel_by_id() {
        assert_eq!(call("task list").path, "/api/v1/tasks");
        let list = call("task list --state running --kind sync --resource docker.io/library/debian --limit 5");
        assert_eq!(list.path, "/api/v1/tasks?state=running&kind=sync&resource=docker.io%2Flibrary%2Fdebian&limit=5");
        assert_eq!((list.method, list.view), (Method::GET, View::Tasks));
        assert!(refused("task list --state done"));
        let show = parse("task show --id 7");
        assert_eq!((plan(&show).unwrap().path.as_str(), task_to_wait_for(&show)), ("/api/v1/tasks/7", None));
        let wait = parse("task show --id 7 --wait");
        assert_eq!((plan(&wait).unwrap().view, task_to_wait_for(&wait)), (View::Task, Some(7)));
        let cancel = call("task cancel --id 7");
        assert_eq!((cancel.method, cancel.path.as_str(), cancel.body), (Method::POST, "/api/v1/tasks/7/cancel", None));
        assert!(refused("task show"));
        assert!(refused("task show --id seven"));
        assert!(refused("task cancel --id -1"));
        assert_eq!(task_to_wait_for(&parse("remote list")), None);
    }

    #[test]
    fn distribution_list_show_and_delete() {
        assert_eq!(call("distribution list").path, "/api/v1/distributions");
        assert_eq!(call("distribution list --limit 1000").path, "/api/v1/distributions?limit=1000");
        let show = call("distribution show --name deb");
        assert_eq!((show.path.as_str(), show.view), ("/api/v1/distributions/deb", View::Distribution));
        let delete = call("distribution delete deb");
        assert_eq!((delete.method, delete.path.as_str()), (Method::DELETE, "/api/v1/distributions/deb"));
        assert_eq!(delete.view, View::Deleted { what: "distribution", name: "deb".into() });
    }
}
