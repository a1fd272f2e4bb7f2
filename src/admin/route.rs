//! The admin API's route table: turns a method, a `/api/v1/...` path and a
//! query string into a typed [`Endpoint`] and [`Query`]. Pure: no I/O, no
//! handlers, no statuses (those are `error.rs`'s).
//!
//! Repository names contain `/`. A path may carry one percent-encoded
//! (`docker.io%2Flibrary%2Fdebian`) or with plain slashes; plain slashes are
//! read from the right, so a trailing `versions`, `versions/{number}`,
//! `versions/{number}/{tags|manifests|blobs|signatures}`, `copy`, `remove` or `revert`
//! is always the sub-resource and a name that itself ends that way must be
//! encoded. Keywords are matched
//! on the raw segments and only the name is decoded, so an encoded `/` can
//! never be mistaken for a separator.

use http::Method;

use super::error::AdminError;
use super::model::Pagination;
use crate::metadata::VersionRef;

/// Everything the admin API serves lives under this prefix.
pub(crate) const PREFIX: &str = "/api/v1/";
pub(crate) const DEFAULT_LIMIT: u32 = 100;
pub(crate) const MAX_LIMIT: u32 = 1000;
const MAX_OFFSET: u64 = i64::MAX as u64;

/// A version as a path names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VersionSel {
    Latest,
    Number(u64),
}

impl VersionSel {
    pub(crate) fn as_ref(self) -> VersionRef {
        match self {
            VersionSel::Latest => None,
            VersionSel::Number(n) => Some(n),
        }
    }
}

/// Which content of a version a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentKind {
    Tags,
    Manifests,
    Blobs,
    /// Atomic container signatures.
    Signatures,
}

/// A change to a repository's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CurateAction {
    Copy,
    Remove,
    Revert,
}

/// What a path names, before the method is looked at.
#[derive(Debug, PartialEq, Eq)]
enum Resource {
    Repositories,
    Repository(String),
    Sync(String),
    Build(String),
    Versions(String),
    Version(String, VersionSel),
    Content(String, VersionSel, ContentKind),
    /// `repositories/{name}/copy`, `remove`, `revert`: changes to a
    /// repository's content, each making at most one version.
    Curate(String, CurateAction),
    Distributions,
    Distribution(String),
    Remotes,
    Remote(String),
    Tasks,
    Task(u64),
    TaskLog(u64),
    TaskCancel(u64),
    Upstreams,
    Users,
    Rules,
    SigningKeys,
    OpenApi,
    /// `storage/gc`, `storage/verify` and `storage/migrate`: storage tasks.
    StorageGc,
    StorageVerify,
    StorageMigrate,
    /// `exports`, `exports/{id}`: exports for air-gapped sites.
    Exports,
    Export(u64),
    /// `imports`: importing an export.
    Imports,
}

impl Resource {
    /// The `Allow` header of this resource: the methods it takes.
    fn allow(&self) -> &'static str {
        match self {
            Resource::Versions(_)
            | Resource::Content(..)
            | Resource::Upstreams
            | Resource::Users
            | Resource::Rules
            | Resource::Tasks
            | Resource::Task(_)
            | Resource::TaskLog(_)
            | Resource::OpenApi => "GET, HEAD",
            Resource::TaskCancel(_) | Resource::StorageGc | Resource::StorageVerify | Resource::StorageMigrate => "POST",
            Resource::SigningKeys => "GET, HEAD, POST",
            Resource::Curate(..) => "POST",
            Resource::Version(..) => "GET, HEAD, DELETE",
            Resource::Repositories => "GET, HEAD, POST",
            Resource::Repository(_) => "GET, HEAD, PATCH, DELETE",
            Resource::Sync(_) | Resource::Build(_) => "POST",
            Resource::Distributions | Resource::Remotes => "GET, HEAD, POST",
            Resource::Distribution(_) | Resource::Remote(_) => "GET, HEAD, PATCH, DELETE",
            Resource::Exports => "GET, HEAD, POST",
            Resource::Export(_) => "GET, HEAD, DELETE",
            Resource::Imports => "POST",
        }
    }
}

/// One operation of the API: a resource and a method it takes. HEAD is
/// routed as GET; the caller drops the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    ListRepositories,
    CreateRepository,
    GetRepository { name: String },
    UpdateRepository { name: String },
    DeleteRepository { name: String },
    SyncRepository { name: String },
    BuildRepository { name: String },
    ListVersions { name: String },
    GetVersion { name: String, version: VersionSel },
    DeleteVersion { name: String, version: VersionSel },
    ListContent { name: String, version: VersionSel, kind: ContentKind },
    CopyContent { name: String },
    RemoveContent { name: String },
    RevertRepository { name: String },
    ListDistributions,
    CreateDistribution,
    GetDistribution { name: String },
    UpdateDistribution { name: String },
    DeleteDistribution { name: String },
    ListRemotes,
    CreateRemote,
    GetRemote { name: String },
    UpdateRemote { name: String },
    DeleteRemote { name: String },
    ListTasks,
    GetTask { id: u64 },
    GetTaskLog { id: u64 },
    CancelTask { id: u64 },
    ListUpstreams,
    ListUsers,
    ListRules,
    ListSigningKeys,
    RotateSigningKey,
    OpenApi,
    StartGc,
    ListExports,
    CreateExport,
    GetExport { id: u64 },
    DeleteExport { id: u64 },
    CreateImport,
    StartVerify,
    StartMigrate,
}

const PAGE_KEYS: &[&str] = &["limit", "offset"];

impl Endpoint {
    /// The query parameters this endpoint takes; any other is refused, so
    /// a misspelt filter fails loudly instead of listing everything.
    pub(crate) fn query_keys(&self) -> &'static [&'static str] {
        match self {
            Endpoint::ListRepositories => &["name", "name_contains", "kind", "limit", "offset"],
            Endpoint::ListTasks => &["state", "kind", "resource", "limit", "offset"],
            Endpoint::GetTaskLog { .. } => &["offset"],
            Endpoint::ListContent { kind: ContentKind::Tags, .. } => &["name", "limit", "offset"],
            Endpoint::ListContent { kind: ContentKind::Manifests | ContentKind::Blobs, .. } => {
                &["digest", "limit", "offset"]
            }
            Endpoint::ListContent { kind: ContentKind::Signatures, .. } => &["manifest", "limit", "offset"],
            Endpoint::ListVersions { .. }
            | Endpoint::ListDistributions
            | Endpoint::ListRemotes
            | Endpoint::ListUpstreams
            | Endpoint::ListUsers
            | Endpoint::ListRules
            | Endpoint::ListSigningKeys
            | Endpoint::ListExports => PAGE_KEYS,
            Endpoint::DeleteExport { .. } => &["files"],
            Endpoint::BuildRepository { .. } => &["tags", "build_args", "platform", "target", "containerfile", "source_date_epoch"],
            Endpoint::GetRepository { .. }
            | Endpoint::CreateRepository
            | Endpoint::UpdateRepository { .. }
            | Endpoint::DeleteRepository { .. }
            | Endpoint::SyncRepository { .. }
            | Endpoint::GetVersion { .. }
            | Endpoint::DeleteVersion { .. }
            | Endpoint::CopyContent { .. }
            | Endpoint::RemoveContent { .. }
            | Endpoint::RevertRepository { .. }
            | Endpoint::CreateDistribution
            | Endpoint::GetDistribution { .. }
            | Endpoint::UpdateDistribution { .. }
            | Endpoint::DeleteDistribution { .. }
            | Endpoint::CreateRemote
            | Endpoint::GetRemote { .. }
            | Endpoint::UpdateRemote { .. }
            | Endpoint::DeleteRemote { .. }
            | Endpoint::GetTask { .. }
            | Endpoint::CancelTask { .. }
            | Endpoint::RotateSigningKey
            | Endpoint::OpenApi
            | Endpoint::StartGc
            | Endpoint::StartVerify
            | Endpoint::StartMigrate
            | Endpoint::CreateExport
            | Endpoint::CreateImport
            | Endpoint::GetExport { .. } => &[],
        }
    }
}

/// Routes a request. An unknown path is `NotFound`, a known path with a
/// method it does not take is `MethodNotAllowed`, a malformed name or
/// version number is `Invalid`.
pub(crate) fn endpoint(method: &Method, path: &str) -> Result<Endpoint, AdminError> {
    let resource = resource(path)?;
    let read = *method == Method::GET || *method == Method::HEAD;
    let delete = *method == Method::DELETE;
    Ok(match resource {
        Resource::Repositories if read => Endpoint::ListRepositories,
        Resource::Repositories if *method == Method::POST => Endpoint::CreateRepository,
        Resource::Repository(name) if read => Endpoint::GetRepository { name },
        Resource::Repository(name) if *method == Method::PATCH => Endpoint::UpdateRepository { name },
        Resource::Repository(name) if delete => Endpoint::DeleteRepository { name },
        Resource::Sync(name) if *method == Method::POST => Endpoint::SyncRepository { name },
        Resource::Build(name) if *method == Method::POST => Endpoint::BuildRepository { name },
        Resource::Versions(name) if read => Endpoint::ListVersions { name },
        Resource::Version(name, version) if read => Endpoint::GetVersion { name, version },
        Resource::Version(name, version) if delete => Endpoint::DeleteVersion { name, version },
        Resource::Content(name, version, kind) if read => Endpoint::ListContent { name, version, kind },
        Resource::Curate(name, action) if *method == Method::POST => match action {
            CurateAction::Copy => Endpoint::CopyContent { name },
            CurateAction::Remove => Endpoint::RemoveContent { name },
            CurateAction::Revert => Endpoint::RevertRepository { name },
        },
        Resource::Distributions if read => Endpoint::ListDistributions,
        Resource::Distributions if *method == Method::POST => Endpoint::CreateDistribution,
        Resource::Distribution(name) if read => Endpoint::GetDistribution { name },
        Resource::Distribution(name) if *method == Method::PATCH => Endpoint::UpdateDistribution { name },
        Resource::Distribution(name) if delete => Endpoint::DeleteDistribution { name },
        Resource::Upstreams if read => Endpoint::ListUpstreams,
        Resource::Remotes if read => Endpoint::ListRemotes,
        Resource::Remotes if *method == Method::POST => Endpoint::CreateRemote,
        Resource::Remote(name) if read => Endpoint::GetRemote { name },
        Resource::Remote(name) if *method == Method::PATCH => Endpoint::UpdateRemote { name },
        Resource::Remote(name) if delete => Endpoint::DeleteRemote { name },
        Resource::Tasks if read => Endpoint::ListTasks,
        Resource::Task(id) if read => Endpoint::GetTask { id },
        Resource::TaskLog(id) if read => Endpoint::GetTaskLog { id },
        Resource::TaskCancel(id) if *method == Method::POST => Endpoint::CancelTask { id },
        Resource::Users if read => Endpoint::ListUsers,
        Resource::Rules if read => Endpoint::ListRules,
        Resource::SigningKeys if read => Endpoint::ListSigningKeys,
        Resource::SigningKeys if *method == Method::POST => Endpoint::RotateSigningKey,
        Resource::OpenApi if read => Endpoint::OpenApi,
        Resource::StorageGc if *method == Method::POST => Endpoint::StartGc,
        Resource::Exports if read => Endpoint::ListExports,
        Resource::Exports if *method == Method::POST => Endpoint::CreateExport,
        Resource::Export(id) if read => Endpoint::GetExport { id },
        Resource::Export(id) if delete => Endpoint::DeleteExport { id },
        Resource::Imports if *method == Method::POST => Endpoint::CreateImport,
        Resource::StorageVerify if *method == Method::POST => Endpoint::StartVerify,
        Resource::StorageMigrate if *method == Method::POST => Endpoint::StartMigrate,
        other => return Err(AdminError::MethodNotAllowed { method: method.to_string(), allow: other.allow() }),
    })
}

fn resource(path: &str) -> Result<Resource, AdminError> {
    let unknown = || AdminError::NotFound(format!("no admin API endpoint at {path:?}"));
    let rest = path.strip_prefix(PREFIX).ok_or_else(unknown)?;
    // No empty segments: a trailing or doubled `/` names nothing.
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(unknown());
    }
    match segments.as_slice() {
        ["repositories"] => Ok(Resource::Repositories),
        ["repositories", tail @ ..] => repository_resource(tail),
        ["distributions"] => Ok(Resource::Distributions),
        ["distributions", name] => Ok(Resource::Distribution(distribution_name(name)?)),
        ["remotes"] => Ok(Resource::Remotes),
        ["remotes", name] => Ok(Resource::Remote(percent_decode(name, "remote name")?)),
        ["tasks"] => Ok(Resource::Tasks),
        ["tasks", id] => Ok(Resource::Task(task_id(id)?)),
        ["tasks", id, "cancel"] => Ok(Resource::TaskCancel(task_id(id)?)),
        ["tasks", id, "log"] => Ok(Resource::TaskLog(task_id(id)?)),
        ["upstreams"] => Ok(Resource::Upstreams),
        ["users"] => Ok(Resource::Users),
        ["rules"] => Ok(Resource::Rules),
        ["signing-keys"] => Ok(Resource::SigningKeys),
        ["openapi.json"] => Ok(Resource::OpenApi),
        ["storage", "gc"] => Ok(Resource::StorageGc),
        ["exports"] => Ok(Resource::Exports),
        ["exports", id] => Ok(Resource::Export(task_id(id)?)),
        ["imports"] => Ok(Resource::Imports),
        ["storage", "verify"] => Ok(Resource::StorageVerify),
        ["storage", "migrate"] => Ok(Resource::StorageMigrate),
        _ => Err(unknown()),
    }
}

/// `tail` is what follows `repositories/`, read from the right: the last
/// keyword wins, so `a/versions/copy` copies into `a/versions`.
fn repository_resource(tail: &[&str]) -> Result<Resource, AdminError> {
    Ok(match tail {
        [name @ .., action @ ("copy" | "remove" | "revert")] if !name.is_empty() => {
            let action = match *action {
                "copy" => CurateAction::Copy,
                "remove" => CurateAction::Remove,
                _ => CurateAction::Revert,
            };
            Resource::Curate(repository_name(name)?, action)
        }
        [name @ .., "versions", number, kind @ ("tags" | "manifests" | "blobs" | "signatures")] if !name.is_empty() => {
            let kind = match *kind {
                "tags" => ContentKind::Tags,
                "manifests" => ContentKind::Manifests,
                "blobs" => ContentKind::Blobs,
                _ => ContentKind::Signatures,
            };
            Resource::Content(repository_name(name)?, version(number)?, kind)
        }
        [name @ .., "versions", number] if !name.is_empty() => {
            Resource::Version(repository_name(name)?, version(number)?)
        }
        [name @ .., "versions"] if !name.is_empty() => Resource::Versions(repository_name(name)?),
        [name @ .., "sync"] if !name.is_empty() => Resource::Sync(repository_name(name)?),
        [name @ .., "build"] if !name.is_empty() => Resource::Build(repository_name(name)?),
        name => Resource::Repository(repository_name(name)?),
    })
}

/// The repository a request builds into (`POST
/// /api/v1/repositories/{name}/build`), for the admin port's access
/// decision, which comes before routing.
pub(crate) fn build_target(method: &Method, path: &str) -> Option<String> {
    if method != Method::POST {
        return None;
    }
    let rest = path.strip_prefix("/api/v1/repositories/")?.strip_suffix("/build")?;
    repository_name(&rest.split('/').collect::<Vec<_>>()).ok()
}

/// The repository name in `segments`, joined and decoded.
fn repository_name(segments: &[&str]) -> Result<String, AdminError> {
    let name = percent_decode(&segments.join("/"), "repository name")?;
    if name.is_empty() {
        return Err(AdminError::Invalid("the repository name is empty".into()));
    }
    if name.chars().any(char::is_control) {
        return Err(AdminError::Invalid(format!("repository name {name:?} contains a control character")));
    }
    if name.split('/').any(str::is_empty) {
        return Err(AdminError::Invalid(format!("repository name {name:?} has an empty component")));
    }
    Ok(name)
}

/// Any decoded distribution name is looked up: one that breaks the naming
/// rule cannot exist, and "does not exist" is the answer an operator needs.
fn distribution_name(segment: &str) -> Result<String, AdminError> {
    percent_decode(segment, "distribution name")
}

/// A task id: digits only (`u64::from_str` would also take a leading `+`).
fn task_id(segment: &str) -> Result<u64, AdminError> {
    match segment.parse() {
        Ok(id) if segment.bytes().all(|b| b.is_ascii_digit()) => Ok(id),
        _ => Err(AdminError::Invalid(format!("task id {segment:?} is not a number"))),
    }
}

fn version(segment: &str) -> Result<VersionSel, AdminError> {
    if segment == "latest" {
        return Ok(VersionSel::Latest);
    }
    // Digits only: `u64::from_str` would also take a leading `+`.
    if segment.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = segment.parse() {
            return Ok(VersionSel::Number(n));
        }
    }
    Err(AdminError::Invalid(format!("version {segment:?} is neither a version number nor \"latest\"")))
}

/// Decodes `%XX` escapes; `what` names the value in the error.
fn percent_decode(s: &str, what: &str) -> Result<String, AdminError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let hex = |j: usize| bytes.get(j).and_then(|c| (*c as char).to_digit(16));
        match (hex(i + 1), hex(i + 2)) {
            (Some(hi), Some(lo)) => {
                // Two hex digits: at most 0xff, so the cast keeps every bit.
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            _ => return Err(AdminError::Invalid(format!("{what} {s:?} has a malformed percent-escape"))),
        }
    }
    String::from_utf8(out).map_err(|_| AdminError::Invalid(format!("{what} {s:?} is not UTF-8 once decoded")))
}

/// A request's query parameters, checked against what its endpoint takes.
#[derive(Debug, Default)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Refuses parameters outside `keys` and parameters given twice.
    pub(crate) fn parse(raw: Option<&str>, keys: &[&str]) -> Result<Query, AdminError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            if !keys.contains(&k.as_ref()) {
                let takes = if keys.is_empty() { "none".to_owned() } else { keys.join(", ") };
                return Err(AdminError::Invalid(format!(
                    "unknown query parameter {k:?}; this endpoint takes {takes}"
                )));
            }
            if pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(AdminError::Invalid(format!("query parameter {k:?} is given more than once")));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(Query { pairs })
    }

    /// A parameter's decoded value. An empty value is a value: `?name=`
    /// asks for the empty name, `?kind=` is not a kind.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub(crate) fn page(&self) -> Result<Pagination, AdminError> {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let limit = match self.get("limit") {
            None => DEFAULT_LIMIT,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if digits(v) && (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(AdminError::Invalid(format!(
                        "limit must be an integer from 1 to {MAX_LIMIT}, not {v:?}"
                    )))
                }
            },
        };
        let offset = match self.get("offset") {
            None => 0,
            // Bounded by the int64 the store (and the OpenAPI format) takes.
            Some(v) => match v.parse::<u64>() {
                Ok(n) if digits(v) && n <= MAX_OFFSET => n,
                _ => {
                    return Err(AdminError::Invalid(format!(
                        "offset must be an integer from 0 to {MAX_OFFSET}, not {v:?}"
                    )))
                }
            },
        };
        Ok(Pagination { limit, offset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Result<Endpoint, AdminError> {
        endpoint(&Method::GET, path)
    }

    fn invalid(r: Result<Endpoint, AdminError>) -> String {
        match r {
            Err(AdminError::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn encoded_and_raw_repository_names_route_to_the_same_endpoint() {
        let want = Endpoint::GetRepository { name: "docker.io/library/debian".into() };
        assert_eq!(get("/api/v1/repositories/docker.io%2Flibrary%2Fdebian").unwrap(), want);
        assert_eq!(get("/api/v1/repositories/docker.io%2flibrary%2fdebian").unwrap(), want);
        assert_eq!(get("/api/v1/repositories/docker.io/library/debian").unwrap(), want);
        assert_eq!(get("/api/v1/repositories/docker.io/library%2Fdebian").unwrap(), want);
        assert_eq!(get("/api/v1/repositories/alpine").unwrap(), Endpoint::GetRepository { name: "alpine".into() });
    }

    #[test]
    fn sub_resources_are_read_from_the_right() {
        let name = || "docker.io/library/debian".to_owned();
        assert_eq!(
            get("/api/v1/repositories/docker.io/library/debian/versions").unwrap(),
            Endpoint::ListVersions { name: name() }
        );
        assert_eq!(
            get("/api/v1/repositories/docker.io%2Flibrary%2Fdebian/versions/3").unwrap(),
            Endpoint::GetVersion { name: name(), version: VersionSel::Number(3) }
        );
        assert_eq!(
            get("/api/v1/repositories/docker.io/library/debian/versions/latest").unwrap(),
            Endpoint::GetVersion { name: name(), version: VersionSel::Latest }
        );
        for (kind, want) in [
            ("tags", ContentKind::Tags),
            ("manifests", ContentKind::Manifests),
            ("blobs", ContentKind::Blobs),
            ("signatures", ContentKind::Signatures),
        ] {
            assert_eq!(
                get(&format!("/api/v1/repositories/docker.io/library/debian/versions/0/{kind}")).unwrap(),
                Endpoint::ListContent { name: name(), version: VersionSel::Number(0), kind: want }
            );
        }
        // A name ending in `versions` is reachable encoded.
        assert_eq!(
            get("/api/v1/repositories/team%2Fversions/versions").unwrap(),
            Endpoint::ListVersions { name: "team/versions".into() }
        );
        assert_eq!(
            get("/api/v1/repositories/team/versions").unwrap(),
            Endpoint::ListVersions { name: "team".into() }
        );
        // A lone `versions` has no name before it: it is the name.
        assert_eq!(get("/api/v1/repositories/versions").unwrap(), Endpoint::GetRepository { name: "versions".into() });
        // An encoded keyword is part of the name, not a separator.
        assert_eq!(
            get("/api/v1/repositories/team%2Fversions%2F1").unwrap(),
            Endpoint::GetRepository { name: "team/versions/1".into() }
        );
    }

    #[test]
    fn version_numbers_are_digits_or_latest() {
        assert_eq!(
            get("/api/v1/repositories/a/versions/18446744073709551615").unwrap(),
            Endpoint::GetVersion { name: "a".into(), version: VersionSel::Number(u64::MAX) }
        );
        for bad in ["-1", "+1", "1.5", "abc", "LATEST", "18446744073709551616", "1%20"] {
            let m = invalid(get(&format!("/api/v1/repositories/a/versions/{bad}")));
            assert!(m.contains("neither a version number"), "{bad}: {m}");
            invalid(get(&format!("/api/v1/repositories/a/versions/{bad}/tags")));
        }
    }

    #[test]
    fn malformed_names_are_invalid() {
        assert!(invalid(get("/api/v1/repositories/%")).contains("percent-escape"));
        assert!(invalid(get("/api/v1/repositories/a%2")).contains("percent-escape"));
        assert!(invalid(get("/api/v1/repositories/a%zz")).contains("percent-escape"));
        assert!(invalid(get("/api/v1/repositories/a%0Ab")).contains("control character"));
        assert!(invalid(get("/api/v1/repositories/%ff")).contains("UTF-8"));
        assert!(invalid(get("/api/v1/repositories/a%2F%2Fb")).contains("empty component"));
        assert!(invalid(get("/api/v1/repositories/%2Fa")).contains("empty component"));
        assert!(invalid(get("/api/v1/distributions/a%zz")).contains("percent-escape"));
        assert_eq!(get("/api/v1/distributions/a%00").unwrap(), Endpoint::GetDistribution { name: "a\0".into() });
    }

    #[test]
    fn unknown_paths_are_not_found() {
        for path in [
            "/api/v1/",
            "/api/v1/nothing",
            "/api/v1/repositories/",
            "/api/v1/repositories//versions",
            "/api/v1/repositories/a/",
            "/api/v1/distributions/",
            "/api/v1/distributions/a/b",
            "/api/v1/upstreams/x",
            "/api/v2/repositories",
        ] {
            assert!(matches!(get(path), Err(AdminError::NotFound(_))), "{path}: {:?}", get(path));
        }
    }

    #[test]
    fn known_paths_refuse_other_methods_and_say_which_they_take() {
        let allow = |method: Method, path: &str| match endpoint(&method, path) {
            Err(AdminError::MethodNotAllowed { allow, .. }) => allow,
            other => panic!("{method} {path}: {other:?}"),
        };
        assert_eq!(allow(Method::PUT, "/api/v1/repositories"), "GET, HEAD, POST");
        assert_eq!(allow(Method::POST, "/api/v1/repositories/a"), "GET, HEAD, PATCH, DELETE");
        assert_eq!(allow(Method::GET, "/api/v1/repositories/a/sync"), "POST");
        assert_eq!(
            endpoint(&Method::POST, "/api/v1/repositories/team/app/sync").unwrap(),
            Endpoint::SyncRepository { name: "team/app".into() }
        );
        assert_eq!(
            endpoint(&Method::POST, "/api/v1/repositories/team%2Fsync").unwrap_err(),
            AdminError::MethodNotAllowed { method: "POST".into(), allow: "GET, HEAD, PATCH, DELETE" },
            "an encoded keyword is part of the name"
        );
        assert_eq!(allow(Method::PUT, "/api/v1/repositories/a/versions/1"), "GET, HEAD, DELETE");
        assert_eq!(allow(Method::DELETE, "/api/v1/distributions"), "GET, HEAD, POST");
        assert_eq!(allow(Method::PUT, "/api/v1/distributions/d"), "GET, HEAD, PATCH, DELETE");
        assert_eq!(allow(Method::OPTIONS, "/api/v1/openapi.json"), "GET, HEAD");
        assert_eq!(allow(Method::PUT, "/api/v1/remotes"), "GET, HEAD, POST");
        assert_eq!(allow(Method::POST, "/api/v1/remotes/quay"), "GET, HEAD, PATCH, DELETE");
        assert_eq!(endpoint(&Method::PATCH, "/api/v1/remotes/quay").unwrap(), Endpoint::UpdateRemote { name: "quay".into() });
        assert_eq!(
            endpoint(&Method::HEAD, "/api/v1/upstreams").unwrap(),
            Endpoint::ListUpstreams,
            "HEAD routes as GET"
        );
        assert_eq!(
            endpoint(&Method::DELETE, "/api/v1/repositories/a/versions/latest").unwrap(),
            Endpoint::DeleteVersion { name: "a".into(), version: VersionSel::Latest }
        );
    }

    #[test]
    fn tasks_are_named_by_their_number() {
        assert_eq!(get("/api/v1/tasks").unwrap(), Endpoint::ListTasks);
        assert_eq!(get("/api/v1/tasks/42").unwrap(), Endpoint::GetTask { id: 42 });
        assert_eq!(endpoint(&Method::HEAD, "/api/v1/tasks/7").unwrap(), Endpoint::GetTask { id: 7 });
        assert_eq!(endpoint(&Method::POST, "/api/v1/tasks/42/cancel").unwrap(), Endpoint::CancelTask { id: 42 });
        assert_eq!(get("/api/v1/tasks/42/log").unwrap(), Endpoint::GetTaskLog { id: 42 });
        // What a build names, before routing (for the access decision).
        assert_eq!(build_target(&Method::POST, "/api/v1/repositories/team%2Ftool/build").as_deref(), Some("team/tool"));
        assert_eq!(build_target(&Method::POST, "/api/v1/repositories/team/tool/build").as_deref(), Some("team/tool"));
        assert_eq!(build_target(&Method::GET, "/api/v1/repositories/team/tool/build"), None);
        assert_eq!(build_target(&Method::POST, "/api/v1/repositories//build"), None);
        assert_eq!(build_target(&Method::POST, "/api/v1/repositories/team/tool/sync"), None);
        for bad in ["abc", "-1", "+1", "1.0", "0x10", "18446744073709551616", "%31"] {
            let m = invalid(get(&format!("/api/v1/tasks/{bad}")));
            assert_eq!(m, format!("task id {bad:?} is not a number"));
            invalid(endpoint(&Method::POST, &format!("/api/v1/tasks/{bad}/cancel")));
        }
        for path in ["/api/v1/tasks/", "/api/v1/tasks/1/", "/api/v1/tasks/1/stop", "/api/v1/tasks/1/cancel/x"] {
            assert!(matches!(get(path), Err(AdminError::NotFound(_))), "{path}");
        }
        let allow = |method: Method, path: &str| match endpoint(&method, path) {
            Err(AdminError::MethodNotAllowed { allow, .. }) => allow,
            other => panic!("{method} {path}: {other:?}"),
        };
        assert_eq!(allow(Method::POST, "/api/v1/tasks"), "GET, HEAD");
        assert_eq!(allow(Method::DELETE, "/api/v1/tasks/1"), "GET, HEAD");
        assert_eq!(allow(Method::GET, "/api/v1/tasks/1/cancel"), "POST");
        let keys = Endpoint::ListTasks.query_keys();
        let q = Query::parse(Some("state=running&kind=sync&resource=team%2Fapp&limit=5"), keys).unwrap();
        assert_eq!((q.get("state"), q.get("kind"), q.get("resource")), (Some("running"), Some("sync"), Some("team/app")));
        assert!(Query::parse(Some("status=running"), keys).is_err());
        assert!(Query::parse(Some("x=1"), Endpoint::CancelTask { id: 1 }.query_keys()).is_err());
    }

    #[test]
    fn copy_remove_and_revert_are_read_from_the_right_and_take_post_only() {
        let post = |path: &str| endpoint(&Method::POST, path);
        let name = || "team/app".to_owned();
        assert_eq!(post("/api/v1/repositories/team/app/copy").unwrap(), Endpoint::CopyContent { name: name() });
        assert_eq!(post("/api/v1/repositories/team%2Fapp/copy").unwrap(), Endpoint::CopyContent { name: name() });
        assert_eq!(post("/api/v1/repositories/team/app/remove").unwrap(), Endpoint::RemoveContent { name: name() });
        assert_eq!(post("/api/v1/repositories/team/app/revert").unwrap(), Endpoint::RevertRepository { name: name() });
        assert_eq!(
            post("/api/v1/repositories/a/versions/copy").unwrap(),
            Endpoint::CopyContent { name: "a/versions".into() },
            "the last keyword wins"
        );
        // A repository whose name ends in a keyword is reached encoded.
        assert_eq!(
            get("/api/v1/repositories/team%2Fcopy").unwrap(),
            Endpoint::GetRepository { name: "team/copy".into() }
        );
        assert_eq!(
            post("/api/v1/repositories/team%2Frevert/remove").unwrap(),
            Endpoint::RemoveContent { name: "team/revert".into() }
        );
        // Alone, a keyword is a repository name.
        assert_eq!(get("/api/v1/repositories/copy").unwrap(), Endpoint::GetRepository { name: "copy".into() });
        for method in [Method::GET, Method::HEAD, Method::PUT, Method::PATCH, Method::DELETE] {
            for action in ["copy", "remove", "revert"] {
                let path = format!("/api/v1/repositories/team/app/{action}");
                match endpoint(&method, &path) {
                    Err(AdminError::MethodNotAllowed { allow, .. }) => assert_eq!(allow, "POST", "{method} {path}"),
                    other => panic!("{method} {path}: {other:?}"),
                }
            }
        }
        assert!(invalid(post("/api/v1/repositories/a%2F%2Fb/copy")).contains("empty component"));
        assert!(matches!(post("/api/v1/repositories/a/copy/"), Err(AdminError::NotFound(_))));
        assert!(Endpoint::CopyContent { name: name() }.query_keys().is_empty());
    }

    #[test]
    fn pagination_defaults_and_bounds() {
        let page = |q: &str| Query::parse(Some(q), PAGE_KEYS).and_then(|q| q.page());
        assert_eq!(page("").unwrap(), Pagination { limit: 100, offset: 0 });
        assert_eq!(page("limit=1&offset=7").unwrap(), Pagination { limit: 1, offset: 7 });
        assert_eq!(page("limit=1000").unwrap(), Pagination { limit: 1000, offset: 0 });
        for bad in ["limit=0", "limit=1001", "limit=abc", "limit=", "limit=-1", "limit=%2B5", "limit=1e3"] {
            let err = page(bad).unwrap_err();
            assert!(matches!(&err, AdminError::Invalid(m) if m.starts_with("limit ")), "{bad}: {err:?}");
        }
        assert_eq!(page("offset=9223372036854775807").unwrap().offset, i64::MAX as u64);
        for bad in ["offset=-1", "offset=x", "offset=", "offset=9223372036854775808", "offset=99999999999999999999"] {
            let err = page(bad).unwrap_err();
            assert!(matches!(&err, AdminError::Invalid(m) if m.starts_with("offset ")), "{bad}: {err:?}");
        }
    }

    #[test]
    fn unknown_and_repeated_query_parameters_are_refused() {
        let err = Query::parse(Some("limt=5"), PAGE_KEYS).unwrap_err();
        assert_eq!(err, AdminError::Invalid("unknown query parameter \"limt\"; this endpoint takes limit, offset".into()));
        let err = Query::parse(Some("x=1"), &[]).unwrap_err();
        assert_eq!(err, AdminError::Invalid("unknown query parameter \"x\"; this endpoint takes none".into()));
        let err = Query::parse(Some("limit=1&limit=2"), PAGE_KEYS).unwrap_err();
        assert!(matches!(err, AdminError::Invalid(m) if m.contains("more than once")));
    }

    #[test]
    fn query_values_are_form_decoded_and_empty_values_kept() {
        let keys = Endpoint::ListRepositories.query_keys();
        let q = Query::parse(Some("name=docker.io%2Flibrary%2Fdebian&name_contains=&kind=pull-through"), keys).unwrap();
        assert_eq!(q.get("name"), Some("docker.io/library/debian"));
        assert_eq!(q.get("name_contains"), Some(""));
        assert_eq!(q.get("kind"), Some("pull-through"));
        assert_eq!(q.get("limit"), None);
    }
}
