//! Configuration: the raw TOML/environment shape, and its validation into the
//! typed [`Config`] the rest of wharf uses. Every error names the key at fault.
//! Nothing here opens sockets or touches storage.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::{self, Action, Actions, Grantee, PasswordHash, RepositoryPattern, Rule, User};
use crate::oci::is_valid_component;

mod build;
mod flatpak;
mod cluster;
mod limits;
mod metadata;
mod server;
mod storage;
pub(crate) use build::{BuildConfig, Runner as BuildRunner};
pub(crate) use flatpak::FlatpakConfig;
pub(crate) use cluster::ClusterConfig;
pub(crate) use limits::{IpNet, LimitsConfig, Rate};
pub(crate) use metadata::{redact as redact_url, MetadataConfig};
pub(crate) use server::{ServerConfig, TlsFiles};
pub(crate) use storage::{Backend, S3Config, StorageConfig};

/// Where `wharf serve` looks when `--config` is not given and the file exists.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "/etc/wharf/wharf.toml";
const ENV_PREFIX: &str = "WHARF_";

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(String),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.to_string() }
}

// ---------------------------------------------------------------------------
// Raw shape: what the file and environment may say. Unknown keys are errors.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: server::RawServer,
    #[serde(default)]
    storage: storage::RawStorage,
    #[serde(default = "default_upstreams")]
    upstream: Vec<RawUpstream>,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    limits: limits::RawLimits,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    push: RawPush,
    #[serde(default)]
    tasks: RawTasks,
    #[serde(default)]
    metadata: metadata::RawMetadata,
    #[serde(default)]
    cluster: cluster::RawCluster,
    #[serde(default)]
    build: build::RawBuild,
    #[serde(default)]
    flatpak: flatpak::RawFlatpak,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAuth {
    /// Empty: `http://<Host>/token` from each request.
    realm: String,
    service: String,
    token_ttl: String,
    basic: bool,
    open_metrics: bool,
    user: Vec<RawUser>,
    rule: Vec<RawRule>,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            realm: String::new(),
            service: "wharf".into(),
            token_ttl: "5m".into(),
            basic: false,
            open_metrics: true,
            user: Vec::new(),
            rule: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: String,
    password_hash: String,
    #[serde(default)]
    admin: bool,
}

/// Secrets never reach logs: Debug leaves the hash out.
impl fmt::Debug for RawUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawUser")
            .field("name", &self.name)
            .field("password_hash", &"<redacted>")
            .field("admin", &self.admin)
            .finish()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    users: Vec<String>,
    repositories: Vec<String>,
    actions: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPush {
    upload_timeout: String,
}

impl Default for RawPush {
    fn default() -> Self {
        RawPush { upload_timeout: "24h".into() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTasks {
    // Signed, so that a negative value is refused by validation with the
    // allowed range rather than by the parser.
    max_parallel: i64,
}

impl Default for RawTasks {
    fn default() -> Self {
        RawTasks { max_parallel: 4 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: String,
    url: String,
    #[serde(default)]
    default: bool,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    #[serde(default = "default_tag_ttl")]
    tag_ttl: String,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
    /// Treat as Docker Hub (one-component names get `library/`). Inferred
    /// from the URL's host when not set.
    docker_hub: Option<bool>,
    #[serde(default = "default_connect_timeout")]
    connect_timeout: String,
    #[serde(default = "default_response_timeout")]
    response_timeout: String,
    #[serde(default = "default_idle_timeout")]
    idle_timeout: String,
    #[serde(default = "default_fill_timeout")]
    fill_timeout: String,
    #[serde(default = "default_retries")]
    retries: u32,
    /// Versions kept per pull-through repository; absent keeps all.
    retain_versions: Option<u32>,
    #[serde(default = "default_max_concurrent_requests")]
    max_concurrent_requests: u32,
    /// Clients without credentials may pull through this upstream.
    #[serde(default = "default_true")]
    anonymous_pull: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    level: String,
    format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog { level: "info".into(), format: "text".into() }
    }
}

fn default_upstreams() -> Vec<RawUpstream> {
    vec![RawUpstream {
        name: "docker.io".into(),
        url: "https://registry-1.docker.io".into(),
        default: true,
        username: None,
        password: None,
        password_file: None,
        tag_ttl: default_tag_ttl(),
        ca_file: None,
        insecure: false,
        docker_hub: None,
        connect_timeout: default_connect_timeout(),
        response_timeout: default_response_timeout(),
        idle_timeout: default_idle_timeout(),
        fill_timeout: default_fill_timeout(),
        retries: default_retries(),
        retain_versions: None,
        max_concurrent_requests: default_max_concurrent_requests(),
        anonymous_pull: true,
    }]
}
fn default_true() -> bool {
    true
}
fn default_tag_ttl() -> String {
    "5m".into()
}
fn default_connect_timeout() -> String {
    "10s".into()
}
fn default_response_timeout() -> String {
    "30s".into()
}
fn default_idle_timeout() -> String {
    "60s".into()
}
fn default_fill_timeout() -> String {
    "1h".into()
}
fn default_retries() -> u32 {
    2
}
fn default_max_concurrent_requests() -> u32 {
    32
}

// ---------------------------------------------------------------------------
// Validated shape.

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) server: ServerConfig,
    pub(crate) storage: StorageConfig,
    pub(crate) upstreams: Vec<UpstreamConfig>,
    pub(crate) log: LogConfig,
    pub(crate) limits: LimitsConfig,
    pub(crate) auth: AuthConfig,
    pub(crate) push: PushConfig,
    pub(crate) tasks: TasksConfig,
    pub(crate) metadata: MetadataConfig,
    pub(crate) cluster: ClusterConfig,
    pub(crate) build: BuildConfig,
    pub(crate) flatpak: FlatpakConfig,
}

#[derive(Clone, Debug)]
pub(crate) struct PushConfig {
    /// An upload session untouched this long is abandoned and deleted.
    pub(crate) upload_timeout: Duration,
}

/// The most background tasks (syncs) that may run at once.
pub(crate) const MAX_PARALLEL_TASKS: usize = 64;

#[derive(Clone, Debug)]
pub(crate) struct TasksConfig {
    /// Background tasks running at once, 1 to [`MAX_PARALLEL_TASKS`]; more
    /// wait for a turn.
    pub(crate) max_parallel: usize,
}

/// `[auth]`: who may sign in and what they may do. Without users (the
/// default) nobody can sign in: anonymous clients pull what is public, the
/// admin API is open, and nobody may push or delete.
#[derive(Clone, Debug)]
pub(crate) struct AuthConfig {
    /// The token endpoint named in challenges; None derives
    /// `http://<Host>/token` from each request.
    pub(crate) realm: Option<String>,
    /// The `service` of challenges and the `aud` of tokens.
    pub(crate) service: String,
    pub(crate) token_ttl: Duration,
    /// Basic credentials accepted on `/v2/` itself, not only at `/token`.
    pub(crate) basic: bool,
    /// `/metrics` and the health endpoints need no credentials.
    pub(crate) open_metrics: bool,
    pub(crate) users: Vec<User>,
    pub(crate) rules: Vec<Rule>,
}

#[derive(Clone, Debug)]
pub(crate) struct LogConfig {
    pub(crate) level: String,
    pub(crate) format: LogFormat,
}

/// `log.format`: how each log line is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// For people: aligned fields, colours when stderr is a terminal.
    Text,
    /// One JSON object per line, every field at the top level (for
    /// journald, Loki, jq).
    Json,
}

#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) username: String,
    pub(crate) password: String,
}

/// Secrets never reach logs: Debug redacts the password.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Compared on reload: an upstream whose settings did not change keeps its
/// client (token cache, connections, concurrency cap).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct UpstreamConfig {
    /// Path prefix and containerd `ns` value; a valid name component.
    pub(crate) name: String,
    /// Base URL, scheme `http` or `https`, no trailing slash.
    pub(crate) url: http::Uri,
    /// `host[:port]` of `url`, also accepted as a containerd `ns` value.
    pub(crate) host: String,
    pub(crate) default: bool,
    pub(crate) docker_hub: bool,
    pub(crate) credentials: Option<Credentials>,
    pub(crate) tag_ttl: Duration,
    pub(crate) ca_file: Option<PathBuf>,
    /// PEM certificates trusted besides the system's, given as text (a
    /// remote's `ca_cert`).
    pub(crate) ca_pem: Option<String>,
    pub(crate) insecure: bool,
    pub(crate) connect_timeout: Duration,
    /// Bound on waiting for response headers.
    pub(crate) response_timeout: Duration,
    /// Bound on a body stalling between chunks.
    pub(crate) idle_timeout: Duration,
    /// Bound on one whole blob fill.
    pub(crate) fill_timeout: Duration,
    /// Extra attempts for idempotent requests that failed before any byte
    /// reached a client.
    pub(crate) retries: u32,
    /// Versions kept per pull-through repository of this upstream; None keeps all.
    pub(crate) retain_versions: Option<u32>,
    /// Requests to this upstream in flight at once, a blob's streamed body
    /// included; more wait for a turn.
    pub(crate) max_concurrent_requests: usize,
    /// Clients without credentials may pull through this upstream; when
    /// false, pulling needs a rule granting `pull`.
    pub(crate) anonymous_pull: bool,
}

impl Config {
    /// Reads `path` (if given) and `WHARF_<SECTION>__<KEY>` variables from
    /// `env`, then validates. `env` is passed in so tests need not mutate the
    /// process environment.
    pub(crate) fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::Load(format!("{}: no such file", path.display())));
            }
            builder = builder.add_source(
                config::File::from(path.to_path_buf()).format(config::FileFormat::Toml),
            );
        }
        // Only `WHARF_<SECTION>__<KEY>` variables are configuration; others
        // with the prefix (WHARF_ADMIN, WHARF_LOG, ...) belong to the CLI.
        let overrides: HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.strip_prefix(ENV_PREFIX).is_some_and(|rest| rest.contains("__")))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("WHARF")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(overrides)),
        );
        let merged = builder.build().map_err(|e| ConfigError::Load(e.to_string()))?;
        let raw: RawConfig = merged.try_deserialize().map_err(|e| ConfigError::Load(e.to_string()))?;
        raw.validate()
    }
}

impl Config {
    /// The keys that differ between `self` (running) and `new` but take
    /// effect only at a restart: the listeners, storage, and the parts built
    /// once at start. Everything else is applied by a reload.
    pub(crate) fn needs_restart(&self, new: &Config) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut check = |key: &'static str, changed: bool| {
            if changed {
                keys.push(key);
            }
        };
        check("server.listen", self.server.listen != new.server.listen);
        check("server.admin_listen", self.server.admin_listen != new.server.admin_listen);
        check("server.max_manifest_size", self.server.max_manifest_size != new.server.max_manifest_size);
        check("storage.path", self.storage.path != new.storage.path);
        check("storage.backend", self.storage.backend != new.storage.backend);
        check("metadata", self.metadata != new.metadata);
        check("cluster", self.cluster != new.cluster);
        check("storage.cache.max_size", self.storage.cache_max_size != new.storage.cache_max_size);
        // Certificates reload, but a plain port does not turn into TLS (or back).
        check("server.tls_cert", self.server.tls.is_some() != new.server.tls.is_some());
        check("push.upload_timeout", self.push.upload_timeout != new.push.upload_timeout);
        check("tasks.max_parallel", self.tasks.max_parallel != new.tasks.max_parallel);
        check("build", self.build != new.build);
        check("flatpak", self.flatpak != new.flatpak);
        check("log.level", self.log.level != new.log.level);
        check("log.format", self.log.format != new.log.format);
        // The evictor reads its bounds once, at start.
        check("storage.max_size", self.storage.max_size != new.storage.max_size);
        check(
            "storage.high_watermark",
            self.storage.high_watermark.to_bits() != new.storage.high_watermark.to_bits(),
        );
        check("storage.low_watermark", self.storage.low_watermark.to_bits() != new.storage.low_watermark.to_bits());
        keys
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let server = self.server.validate()?;
        let storage = self.storage.validate()?;
        // An empty list (`upstream = []`) is a node that reaches no
        // registry: an air-gapped site serving pushed and imported content.
        let mut upstreams = Vec::with_capacity(self.upstream.len());
        for (i, raw) in self.upstream.into_iter().enumerate() {
            let up = raw.validate(&format!("upstream[{i}]"))?;
            if upstreams.iter().any(|u: &UpstreamConfig| u.name == up.name) {
                return Err(invalid(format!("upstream[{i}].name"), format!("{:?} is used twice", up.name)));
            }
            upstreams.push(up);
        }
        if upstreams.iter().filter(|u| u.default).count() > 1 {
            return Err(invalid("upstream.default", "only one upstream may be the default"));
        }
        let auth = self.auth.validate()?;
        let metadata = self.metadata.validate()?;
        let cluster = self.cluster.validate()?;
        if cluster.port.is_some() && metadata.url.is_none() {
            return Err(invalid("cluster.advertise", "a cluster port needs the nodes' shared database (metadata.url)"));
        }
        Ok(Config {
            server,
            storage,
            upstreams,
            log: LogConfig {
                level: self.log.level,
                format: match self.log.format.as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    other => return Err(invalid("log.format", format!("{other:?}: must be \"text\" or \"json\""))),
                },
            },
            limits: self.limits.validate()?,
            auth,
            push: PushConfig {
                upload_timeout: parse_positive_duration("push.upload_timeout", &self.push.upload_timeout)?,
            },
            tasks: self.tasks.validate()?,
            metadata,
            cluster,
            build: self.build.validate()?,
            flatpak: self.flatpak.validate()?,
        })
    }
}

impl RawTasks {
    fn validate(self) -> Result<TasksConfig, ConfigError> {
        match usize::try_from(self.max_parallel) {
            Ok(n) if (1..=MAX_PARALLEL_TASKS).contains(&n) => Ok(TasksConfig { max_parallel: n }),
            _ => Err(invalid(
                "tasks.max_parallel",
                format!("must be from 1 to {MAX_PARALLEL_TASKS}, not {}", self.max_parallel),
            )),
        }
    }
}

/// The longest token lifetime accepted: a stolen token should not outlive a day.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
const MAX_USER_NAME_LEN: usize = 64;

impl RawAuth {
    fn validate(self) -> Result<AuthConfig, ConfigError> {
        let realm = match self.realm.trim() {
            "" => None,
            r => {
                let uri: http::Uri = r.parse().map_err(|e| invalid("auth.realm", format!("{r:?}: {e}")))?;
                if !matches!(uri.scheme_str(), Some("http") | Some("https")) || uri.authority().is_none() {
                    return Err(invalid("auth.realm", format!("{r:?} must be an http:// or https:// URL")));
                }
                if r.contains('"') {
                    return Err(invalid("auth.realm", "must not contain '\"'"));
                }
                Some(r.to_owned())
            }
        };
        let service_ok = !self.service.is_empty()
            && self.service.len() <= 255
            && self.service.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        if !service_ok {
            return Err(invalid("auth.service", format!("{:?} must be 1-255 printable characters without quotes or spaces", self.service)));
        }
        let token_ttl = parse_positive_duration("auth.token_ttl", &self.token_ttl)?;
        if token_ttl > MAX_TOKEN_TTL {
            return Err(invalid("auth.token_ttl", format!("{:?} is longer than 24h", self.token_ttl)));
        }
        let mut users: Vec<User> = Vec::with_capacity(self.user.len());
        for (i, raw) in self.user.into_iter().enumerate() {
            let key = format!("auth.user[{i}]");
            let name_ok = !raw.name.is_empty()
                && raw.name.len() <= MAX_USER_NAME_LEN
                && raw.name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
            if !name_ok {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("{:?} must be 1-{MAX_USER_NAME_LEN} letters, digits, '.', '_', '-' or '@'", raw.name),
                ));
            }
            if raw.name == "anonymous" {
                return Err(invalid(format!("{key}.name"), "\"anonymous\" is reserved for clients without credentials"));
            }
            if users.iter().any(|u| u.name == raw.name) {
                return Err(invalid(format!("{key}.name"), format!("{:?} is used twice", raw.name)));
            }
            auth::check_password_hash(&raw.password_hash).map_err(|e| invalid(format!("{key}.password_hash"), e))?;
            users.push(User { name: raw.name, password_hash: PasswordHash::new(raw.password_hash), admin: raw.admin });
        }
        let mut rules = Vec::with_capacity(self.rule.len());
        for (i, raw) in self.rule.into_iter().enumerate() {
            let key = format!("auth.rule[{i}]");
            if raw.users.is_empty() {
                return Err(invalid(format!("{key}.users"), "name at least one user, \"*\" or \"anonymous\""));
            }
            let grantees = raw
                .users
                .iter()
                .enumerate()
                .map(|(j, u)| match u.as_str() {
                    "*" => Ok(Grantee::AnyUser),
                    "anonymous" => Ok(Grantee::Anonymous),
                    name if users.iter().any(|x| x.name == name) => Ok(Grantee::User(name.to_owned())),
                    name => Err(invalid(
                        format!("{key}.users[{j}]"),
                        format!("{name:?} is not an [[auth.user]], \"*\" (any signed-in user) or \"anonymous\""),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if raw.repositories.is_empty() {
                return Err(invalid(format!("{key}.repositories"), "name at least one repository pattern, such as \"team/*\""));
            }
            let repositories = raw
                .repositories
                .iter()
                .enumerate()
                .map(|(j, r)| RepositoryPattern::parse(r).map_err(|e| invalid(format!("{key}.repositories[{j}]"), e)))
                .collect::<Result<Vec<_>, _>>()?;
            if raw.actions.is_empty() {
                return Err(invalid(format!("{key}.actions"), "name at least one of pull, push, delete"));
            }
            let mut actions = Actions::NONE;
            for (j, a) in raw.actions.iter().enumerate() {
                let action = Action::parse(a).ok_or_else(|| {
                    invalid(format!("{key}.actions[{j}]"), format!("{a:?} is not one of pull, push, delete"))
                })?;
                actions = actions.with(action);
            }
            rules.push(Rule { grantees, repositories, actions });
        }
        Ok(AuthConfig {
            realm,
            service: self.service,
            token_ttl,
            basic: self.basic,
            open_metrics: self.open_metrics,
            users,
            rules,
        })
    }
}

impl RawUpstream {
    fn validate(self, key: &str) -> Result<UpstreamConfig, ConfigError> {
        if !is_valid_component(&self.name) {
            return Err(invalid(
                format!("{key}.name"),
                format!("{:?} must be one repository name component (lowercase letters, digits, '.', '_', '-')", self.name),
            ));
        }
        let url_key = format!("{key}.url");
        let trimmed = self.url.trim_end_matches('/');
        let url: http::Uri = trimmed.parse().map_err(|e| invalid(&url_key, format!("{:?}: {e}", self.url)))?;
        match url.scheme_str() {
            Some("http") | Some("https") => {}
            _ => return Err(invalid(&url_key, format!("{:?} must start with http:// or https://", self.url))),
        }
        let host = url
            .authority()
            .map(|a| a.as_str().to_ascii_lowercase())
            .ok_or_else(|| invalid(&url_key, format!("{:?} has no host", self.url)))?;
        if url.query().is_some() || host.contains('@') {
            return Err(invalid(&url_key, "must not carry a query or user info; use username/password_file"));
        }
        let password = match (self.password, self.password_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(format!("{key}.password_file"), "set password or password_file, not both"))
            }
            (Some(p), None) => Some(p),
            (None, Some(file)) => Some(
                std::fs::read_to_string(&file)
                    .map_err(|e| invalid(format!("{key}.password_file"), format!("{}: {e}", file.display())))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            (None, None) => None,
        };
        let credentials = match (self.username, password) {
            (Some(username), Some(password)) => Some(Credentials { username, password }),
            (None, None) => None,
            (Some(_), None) => return Err(invalid(format!("{key}.password"), "username is set without a password")),
            (None, Some(_)) => return Err(invalid(format!("{key}.username"), "a password is set without a username")),
        };
        if let Some(ca) = &self.ca_file {
            if !ca.is_file() {
                return Err(invalid(format!("{key}.ca_file"), format!("{}: no such file", ca.display())));
            }
        }
        if self.retain_versions == Some(0) {
            return Err(invalid(format!("{key}.retain_versions"), "must be at least 1 (leave it out to keep every version)"));
        }
        if self.max_concurrent_requests == 0 {
            return Err(invalid(format!("{key}.max_concurrent_requests"), "must be at least 1"));
        }
        let hub_host = host.split(':').next().unwrap_or_default();
        let docker_hub = self
            .docker_hub
            .unwrap_or(matches!(hub_host, "registry-1.docker.io" | "docker.io" | "index.docker.io"));
        Ok(UpstreamConfig {
            name: self.name,
            url,
            host,
            default: self.default,
            docker_hub,
            credentials,
            tag_ttl: parse_duration(&format!("{key}.tag_ttl"), &self.tag_ttl)?,
            ca_file: self.ca_file,
            ca_pem: None,
            insecure: self.insecure,
            connect_timeout: parse_positive_duration(&format!("{key}.connect_timeout"), &self.connect_timeout)?,
            response_timeout: parse_positive_duration(&format!("{key}.response_timeout"), &self.response_timeout)?,
            idle_timeout: parse_positive_duration(&format!("{key}.idle_timeout"), &self.idle_timeout)?,
            fill_timeout: parse_positive_duration(&format!("{key}.fill_timeout"), &self.fill_timeout)?,
            retries: self.retries,
            retain_versions: self.retain_versions,
            max_concurrent_requests: self.max_concurrent_requests as usize,
            anonymous_pull: self.anonymous_pull,
        })
    }
}

/// What a remote's client needs beyond the upstream defaults.
pub(crate) struct RemoteClient {
    pub(crate) name: String,
    /// Checked already: `http`/`https` with a host.
    pub(crate) url: http::Uri,
    pub(crate) credentials: Option<Credentials>,
    pub(crate) ca_pem: Option<String>,
    pub(crate) insecure: bool,
    pub(crate) max_concurrent_requests: usize,
}

/// The client settings of a sync remote: its own URL, trust and
/// credentials, and an upstream's default timeouts and retries. Never the
/// default upstream, never a pull-through target.
pub(crate) fn remote_upstream(r: RemoteClient) -> Result<UpstreamConfig, ConfigError> {
    let host = r
        .url
        .authority()
        .map(|a| a.as_str().to_ascii_lowercase())
        .ok_or_else(|| invalid("remote.url", "has no host"))?;
    Ok(UpstreamConfig {
        name: r.name,
        url: r.url,
        host,
        default: false,
        docker_hub: false,
        credentials: r.credentials,
        tag_ttl: parse_duration("tag_ttl", &default_tag_ttl())?,
        ca_file: None,
        ca_pem: r.ca_pem,
        insecure: r.insecure,
        connect_timeout: parse_duration("connect_timeout", &default_connect_timeout())?,
        response_timeout: parse_duration("response_timeout", &default_response_timeout())?,
        idle_timeout: parse_duration("idle_timeout", &default_idle_timeout())?,
        fill_timeout: parse_duration("fill_timeout", &default_fill_timeout())?,
        retries: default_retries(),
        retain_versions: None,
        max_concurrent_requests: r.max_concurrent_requests.max(1),
        anonymous_pull: false,
    })
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| invalid(key, format!("{value:?} is not an address like 0.0.0.0:5000")))
}

fn parse_duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value)
        .map_err(|e| invalid(key, format!("{value:?} is not a duration like \"30s\" or \"5m\": {e}")))
}

fn parse_positive_duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(key, value)?;
    if d.is_zero() {
        return Err(invalid(key, "must be greater than zero"));
    }
    Ok(d)
}

/// Sizes like `4MiB`, `50GiB`, `512KB` or a plain byte count.
pub(crate) fn parse_size(key: &str, value: &str) -> Result<u64, ConfigError> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().map_err(|_| invalid(key, format!("{value:?} is not a size like \"4MiB\"")))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        "tb" => 1_000_000_000_000,
        "tib" | "t" => 1 << 40,
        _ => return Err(invalid(key, format!("{value:?}: unknown unit {unit:?}"))),
    };
    n.checked_mul(mult).ok_or_else(|| invalid(key, format!("{value:?} is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A config loaded from `toml` and `env`, as `wharf serve` would.
    /// Shared with the section modules' tests.
    pub(super) fn load_str(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(toml.as_bytes()).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load(Some(f.path()), env)
    }

    pub(super) fn err_text(r: Result<Config, ConfigError>) -> String {
        r.expect_err("config should be refused").to_string()
    }

    /// Why `toml` is refused.
    pub(super) fn refused(toml: &str) -> String {
        err_text(load_str(toml, &[]))
    }

    #[test]
    fn an_empty_upstream_list_is_a_node_that_reaches_no_registry() {
        let c = load_str("upstream = []\n", &[]).unwrap();
        assert!(c.upstreams.is_empty());
    }

    #[test]
    fn embedded_defaults_make_a_docker_hub_mirror() {
        let c = Config::load(None, std::iter::empty()).unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:5000".parse().unwrap());
        assert_eq!(c.server.admin_listen, "127.0.0.1:5050".parse().unwrap());
        assert_eq!(c.upstreams.len(), 1);
        let hub = &c.upstreams[0];
        assert!(hub.default && hub.docker_hub);
        assert_eq!(hub.name, "docker.io");
        assert_eq!(hub.tag_ttl, Duration::from_secs(300));
        assert_eq!(c.server.max_manifest_size, 4 << 20);
        assert_eq!(c.push.upload_timeout, Duration::from_secs(24 * 3600));
    }

    #[test]
    fn tls_takes_a_cert_and_a_key_and_the_drain_grace_defaults_to_30s() {
        let c = load_str("[server]\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\ndrain_grace = \"5s\"\n", &[]).unwrap();
        assert_eq!(c.server.tls, Some(TlsFiles { cert: "/c.pem".into(), key: "/k.pem".into() }));
        assert_eq!(c.server.drain_grace, Duration::from_secs(5));
        let plain = Config::load(None, std::iter::empty()).unwrap();
        assert_eq!((plain.server.tls, plain.server.drain_grace), (None, Duration::from_secs(30)));
        let e = err_text(load_str("[server]\ntls_cert = \"/c.pem\"\n", &[]));
        assert!(e.starts_with("server.tls_key: is required"), "{e}");
        let e = err_text(load_str("[server]\ntls_key = \"/k.pem\"\n", &[]));
        assert!(e.starts_with("server.tls_cert: is required"), "{e}");
        let e = err_text(load_str("[server]\ndrain_grace = \"soon\"\n", &[]));
        assert!(e.starts_with("server.drain_grace"), "{e}");
    }

    #[test]
    fn a_reload_names_the_keys_that_need_a_restart() {
        let old = load_str("[server]\nlisten = \"127.0.0.1:5000\"\n", &[]).unwrap();
        let same_but_reloadable = load_str(
            "[server]\nlisten = \"127.0.0.1:5000\"\ndrain_grace = \"1s\"\n[limits]\nper_ip_rate = 5\n\
             [[upstream]]\nname = \"x\"\nurl = \"http://127.0.0.1:1\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(old.needs_restart(&same_but_reloadable), Vec::<&str>::new());
        let moved = load_str(
            "[server]\nlisten = \"127.0.0.1:5001\"\ntls_cert = \"/c\"\ntls_key = \"/k\"\n[storage]\npath = \"/srv/w\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(old.needs_restart(&moved), vec!["server.listen", "storage.path", "server.tls_cert"]);
    }

    #[test]
    fn the_push_section_is_validated() {
        let c = load_str("[push]\nupload_timeout = \"90m\"\n", &[]).unwrap();
        assert_eq!(c.push.upload_timeout, Duration::from_secs(90 * 60));
        let e = err_text(load_str("[push]\nupload_timeout = \"0s\"\n", &[]));
        assert!(e.starts_with("push.upload_timeout"), "{e}");
        let e = err_text(load_str("[push]\nupload_timeout = \"never\"\n", &[]));
        assert!(e.starts_with("push.upload_timeout"), "{e}");
        let e = err_text(load_str("[push]\ntimeout = \"1h\"\n", &[]));
        assert!(e.contains("timeout"), "{e}");
    }

    #[test]
    fn the_tasks_section_bounds_how_many_run_at_once() {
        assert_eq!(Config::load(None, std::iter::empty()).unwrap().tasks.max_parallel, 4);
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/wharf.toml");
        assert_eq!(Config::load(Some(&example), std::iter::empty()).unwrap().tasks.max_parallel, 4, "documented");
        assert_eq!(load_str("[tasks]\nmax_parallel = 1\n", &[]).unwrap().tasks.max_parallel, 1);
        assert_eq!(load_str("[tasks]\nmax_parallel = 64\n", &[]).unwrap().tasks.max_parallel, 64);
        assert_eq!(load_str("", &[("WHARF_TASKS__MAX_PARALLEL", "8")]).unwrap().tasks.max_parallel, 8);
        for bad in ["0", "65", "-1"] {
            let e = err_text(load_str(&format!("[tasks]\nmax_parallel = {bad}\n"), &[]));
            assert_eq!(e, format!("tasks.max_parallel: must be from 1 to 64, not {bad}"));
        }
        let e = err_text(load_str("[tasks]\nparallel = 2\n", &[]));
        assert!(e.contains("parallel"), "{e}");
    }

    #[test]
    fn the_log_format_is_text_or_json() {
        assert_eq!(Config::load(None, std::iter::empty()).unwrap().log.format, LogFormat::Text);
        assert_eq!(load_str("[log]\nformat = \"json\"\n", &[]).unwrap().log.format, LogFormat::Json);
        assert_eq!(load_str("", &[("WHARF_LOG__FORMAT", "json")]).unwrap().log.format, LogFormat::Json);
        let e = err_text(load_str("[log]\nformat = \"logfmt\"\n", &[]));
        assert_eq!(e, "log.format: \"logfmt\": must be \"text\" or \"json\"");
    }

    #[test]
    fn environment_overrides_file_and_ignores_cli_variables() {
        let c = load_str(
            "[server]\nlisten = \"127.0.0.1:6000\"\n",
            &[("WHARF_SERVER__LISTEN", "127.0.0.1:7000"), ("WHARF_ADMIN", "http://x"), ("WHARF_STORAGE__PATH", "/srv/w")],
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 7000);
        assert_eq!(c.storage.path, PathBuf::from("/srv/w"));
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let e = err_text(load_str("[server]\nlisen = \"x\"\n", &[]));
        assert!(e.contains("lisen"), "{e}");
        let e = err_text(load_str("[[upstream]]\nname = \"a\"\nurl = \"http://h\"\nttl = \"1s\"\n", &[]));
        assert!(e.contains("ttl"), "{e}");
        let e = err_text(load_str("[bogus]\nx = 1\n", &[]));
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = err_text(load_str("[server]\nlisten = \"nope\"\n", &[]));
        assert!(e.starts_with("server.listen"), "{e}");
        let e = err_text(load_str("[[upstream]]\nname = \"a\"\nurl = \"ftp://h\"\n", &[]));
        assert!(e.starts_with("upstream[0].url"), "{e}");
        let e = err_text(load_str("[[upstream]]\nname = \"A/B\"\nurl = \"http://h\"\n", &[]));
        assert!(e.starts_with("upstream[0].name"), "{e}");
        let e = err_text(load_str("[[upstream]]\nname = \"a\"\nurl = \"http://h\"\ntag_ttl = \"soon\"\n", &[]));
        assert!(e.starts_with("upstream[0].tag_ttl"), "{e}");
        let two_defaults = "[[upstream]]\nname = \"a\"\nurl = \"http://h\"\ndefault = true\n\
                            [[upstream]]\nname = \"b\"\nurl = \"http://i\"\ndefault = true\n";
        assert!(err_text(load_str(two_defaults, &[])).starts_with("upstream.default"));
        let dup = "[[upstream]]\nname = \"a\"\nurl = \"http://h\"\n[[upstream]]\nname = \"a\"\nurl = \"http://i\"\n";
        assert!(err_text(load_str(dup, &[])).starts_with("upstream[1].name"));
        let e = err_text(load_str("[[upstream]]\nname = \"a\"\nurl = \"http://h\"\nusername = \"u\"\n", &[]));
        assert!(e.starts_with("upstream[0].password"), "{e}");
    }

    #[test]
    fn storage_bounds_are_validated_and_name_their_key() {
        let up = "[[upstream]]\nname = \"a\"\nurl = \"http://h\"\n";
        let c = load_str(&format!("[storage]\nmax_size = \"50GiB\"\n{up}"), &[]).unwrap();
        assert_eq!(c.storage.max_size, Some(50 << 30));
        assert_eq!((c.storage.high_watermark, c.storage.low_watermark), (0.9, 0.8));
        assert_eq!(load_str(up, &[]).unwrap().storage.max_size, None, "unbounded unless set");
        let cases = [
            ("max_size = \"0\"", "storage.max_size"),
            ("max_size = \"lots\"", "storage.max_size"),
            ("high_watermark = 1.5", "storage.high_watermark"),
            ("low_watermark = 0.0", "storage.low_watermark"),
            ("high_watermark = 0.5\nlow_watermark = 0.6", "storage.low_watermark"),
        ];
        for (line, key) in cases {
            let e = err_text(load_str(&format!("[storage]\n{line}\n{up}"), &[]));
            assert!(e.starts_with(key), "want {key}: {e}");
        }
    }

    #[test]
    fn password_file_is_read_and_redacted_in_debug() {
        let mut pw = tempfile::NamedTempFile::new().unwrap();
        writeln!(pw, "s3cret").unwrap();
        let toml = format!(
            "[[upstream]]\nname = \"a\"\nurl = \"https://registry-1.docker.io/\"\nusername = \"u\"\npassword_file = {:?}\n",
            pw.path()
        );
        let c = load_str(&toml, &[]).unwrap();
        let creds = c.upstreams[0].credentials.as_ref().unwrap();
        assert_eq!(creds.password, "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(c.upstreams[0].docker_hub);
        assert_eq!(c.upstreams[0].url.to_string(), "https://registry-1.docker.io/");
    }

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$J6b4MlQ1vBVoGfmC7Fpf0Lqf3+7yU9TQ0DAn2wXZZPM";

    fn auth_toml(extra: &str) -> String {
        format!("[auth]\n{extra}\n[[auth.user]]\nname = \"alice\"\npassword_hash = {HASH:?}\n")
    }

    #[test]
    fn no_auth_section_means_no_users_and_anonymous_pull() {
        let c = Config::load(None, std::iter::empty()).unwrap();
        assert!(c.auth.users.is_empty() && c.auth.rules.is_empty());
        assert_eq!(c.auth.service, "wharf");
        assert_eq!(c.auth.token_ttl, Duration::from_secs(300));
        assert!(c.auth.realm.is_none() && !c.auth.basic && c.auth.open_metrics);
        assert!(c.upstreams[0].anonymous_pull);
    }

    #[test]
    fn users_and_rules_load_and_the_hash_is_redacted() {
        let toml = auth_toml("realm = \"https://r.example/token\"\nbasic = true\ntoken_ttl = \"10m\"\n")
            + "[[auth.rule]]\nusers = [\"alice\", \"*\", \"anonymous\"]\nrepositories = [\"team/*\"]\nactions = [\"pull\", \"push\"]\n"
            + "[[upstream]]\nname = \"a\"\nurl = \"http://h\"\nanonymous_pull = false\n";
        let c = load_str(&toml, &[]).unwrap();
        assert_eq!(c.auth.users[0].name, "alice");
        assert_eq!(c.auth.rules[0].grantees, vec![Grantee::User("alice".into()), Grantee::AnyUser, Grantee::Anonymous]);
        assert_eq!(c.auth.rules[0].actions, Actions::of([Action::Pull, Action::Push]));
        assert_eq!(c.auth.realm.as_deref(), Some("https://r.example/token"));
        assert!(c.auth.basic);
        assert!(!c.upstreams[0].anonymous_pull);
        let shown = format!("{c:?}");
        assert!(!shown.contains("J6b4MlQ1") && !shown.contains("argon2id"), "{shown}");
    }

    #[test]
    fn bad_auth_settings_name_their_key() {
        let cases = [
            (auth_toml("realm = \"ftp://x\""), "auth.realm"),
            (auth_toml("service = \"has space\""), "auth.service"),
            (auth_toml("token_ttl = \"0s\""), "auth.token_ttl"),
            (auth_toml("token_ttl = \"48h\""), "auth.token_ttl"),
            (auth_toml("") + "[[auth.user]]\nname = \"bob\"\npassword_hash = \"x\"\n", "auth.user[1].password_hash"),
            (auth_toml("") + &format!("[[auth.user]]\nname = \"alice\"\npassword_hash = {HASH:?}\n"), "auth.user[1].name"),
            (auth_toml("") + &format!("[[auth.user]]\nname = \"a:b\"\npassword_hash = {HASH:?}\n"), "auth.user[1].name"),
            (auth_toml("") + &format!("[[auth.user]]\nname = \"anonymous\"\npassword_hash = {HASH:?}\n"), "auth.user[1].name"),
            (auth_toml("") + "[[auth.rule]]\nusers = [\"alice\", \"bob\"]\nrepositories = [\"x\"]\nactions = [\"pull\"]\n", "auth.rule[0].users[1]"),
            (auth_toml("") + "[[auth.rule]]\nusers = [\"alice\"]\nrepositories = [\"X/*\"]\nactions = [\"pull\"]\n", "auth.rule[0].repositories[0]"),
            (auth_toml("") + "[[auth.rule]]\nusers = [\"alice\"]\nrepositories = [\"x\"]\nactions = [\"pull\", \"write\"]\n", "auth.rule[0].actions[1]"),
            (auth_toml("") + "[[auth.rule]]\nusers = []\nrepositories = [\"x\"]\nactions = [\"pull\"]\n", "auth.rule[0].users"),
        ];
        for (toml, key) in cases {
            let e = err_text(load_str(&toml, &[]));
            assert!(e.starts_with(key), "want {key}: {e}\n{toml}");
        }
        let e = err_text(load_str(&auth_toml("colour = \"blue\""), &[]));
        assert!(e.contains("colour"), "{e}");
        let e = err_text(load_str("[auth]\n[[auth.user]]\nname = \"a\"\npassword = \"plain\"\npassword_hash = \"x\"\n", &[]));
        assert!(e.contains("password"), "{e}");
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("k", "4MiB").unwrap(), 4 << 20);
        assert_eq!(parse_size("k", "10").unwrap(), 10);
        assert_eq!(parse_size("k", "2GB").unwrap(), 2_000_000_000);
        assert!(parse_size("k", "lots").is_err());
    }
}
