//! The admin API's handlers, one function per operation, each carrying its
//! `#[utoipa::path]` so the OpenAPI document is generated from the code it
//! describes. Handlers are thin: they call metadata through `Metadata::run`,
//! distribution writes through `Distributions` (which checks names and
//! refreshes the registry port's table), curation through `Curation`,
//! tasks through `Tasks` (which owns their cancel), and shape JSON. Statuses for
//! errors are chosen in `error.rs`; routing is `route.rs`'s.

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;

use super::error::{AdminError, ErrorBody};
use super::model::{
    self, Blob, BlobPage, CopyContent, CurationResult, Distribution, DistributionChanges, DistributionPage,
    DistributionPath, Manifest, ManifestPage, NewDistribution, NewRemote, NewRepository, Pagination, Remote,
    RemoteChanges, RemotePage, RemotePath, RemoveContent, Repository, RepositoryChanges, RepositoryPage,
    RepositoryPath, RevertTo, SignaturePage, SyncRepository, Rule, RulePage, SigningKey, SigningKeyPage, Tag, TagPage, Task,
    Upstream, UpstreamPage, User, UserPage, Version, VersionPage, VersionPath,
};
use super::route::{Query, VersionSel};
use crate::api::body::{full, Body};
use crate::auth::Auth;
use crate::config::UpstreamConfig;
use crate::metadata::{self, ContentFilter, ManifestItem, Metadata, RepositoryFilter, RepositoryKind};
use crate::oci::media;
use crate::oci::Digest;
use crate::repository::{Curation, Distributions};
use crate::gc::Disk;
use crate::storage::Storage;
use crate::sync::{Remotes, SyncParts, SyncRepositories, SyncRequest, Syncer};
use crate::tasks::Tasks;

/// Blob `cached` lookups run this many at a time: enough to hide each
/// stat's blocking-pool hop, few enough not to crowd out registry reads.
const STAT_CONCURRENCY: usize = 16;
/// Image configs are small; a larger "config" is not read for a platform.
const MAX_CONFIG_READ: usize = 256 << 10;

/// What the handlers work with; built once at start.
pub(crate) struct Api {
    pub(super) metadata: Metadata,
    distributions: Distributions,
    curation: Curation,
    remotes: Remotes,
    repositories: SyncRepositories,
    pub(super) tasks: Tasks,
    pub(super) syncer: Syncer,
    pub(super) storage: Storage,
    pub(super) disk: Disk,
    upstreams: Vec<Upstream>,
    pub(super) auth: Auth,
    openapi: Bytes,
    /// None until the composition hands builds their parts.
    pub(super) build: Option<super::builds::BuildParts>,
}

impl Api {
    pub(crate) fn new(
        metadata: Metadata,
        distributions: Distributions,
        sync: SyncParts,
        (storage, disk): (Storage, Disk),
        upstreams: &[UpstreamConfig],
        auth: Auth,
        openapi: Bytes,
    ) -> Api {
        let SyncParts { tasks, syncer } = sync;
        let names: Vec<String> = upstreams.iter().map(|u| u.name.clone()).collect();
        let remotes = Remotes::new(metadata.clone(), names.clone());
        let repositories = SyncRepositories::new(metadata.clone(), names);
        let upstreams = upstreams.iter().map(Upstream::from).collect();
        let curation = Curation::new(metadata.clone());
        Api { metadata, distributions, curation, remotes, repositories, tasks, syncer, storage, disk, upstreams, auth, openapi, build: None }
    }
}

pub(super) type Reply = Result<Response<Body>, AdminError>;

pub(super) fn json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    let bytes = serde_json::to_vec(value).map_err(|e| AdminError::Internal(format!("cannot render JSON: {e}")))?;
    Ok(json_bytes(status, bytes.into()))
}

fn json_bytes(status: StatusCode, bytes: Bytes) -> Response<Body> {
    let len = bytes.len();
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

fn no_content() -> Response<Body> {
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

fn digest_filter(query: &Query) -> Result<ContentFilter, AdminError> {
    let digest = query
        .get("digest")
        .map(|d| d.parse::<Digest>().map_err(|e| AdminError::Invalid(format!("digest {d:?}: {e}"))))
        .transpose()?;
    Ok(ContentFilter { digest, tag: None })
}

#[utoipa::path(
    get,
    path = "/api/v1/repositories",
    tag = "repositories",
    params(
        ("name" = Option<String>, Query, description = "Only the repository of exactly this name."),
        ("name_contains" = Option<String>, Query, description = "Only repositories whose name contains this."),
        ("kind" = Option<model::RepositoryKind>, Query, description = "Only repositories of this kind."),
        Pagination,
    ),
    responses(
        (status = 200, description = "Repositories, by name.", body = RepositoryPage),
        (status = 400, description = "A bad or unknown query parameter.", body = ErrorBody),
    ),
)]
pub(crate) async fn list_repositories(api: &Api, query: &Query) -> Reply {
    let page = query.page()?;
    let kind = query
        .get("kind")
        .map(|k| {
            RepositoryKind::parse(k).ok_or_else(|| {
                AdminError::Invalid(format!("kind {k:?} is not one of pull-through, push, sync"))
            })
        })
        .transpose()?;
    let filter = RepositoryFilter {
        name: query.get("name").map(str::to_owned),
        name_contains: query.get("name_contains").map(str::to_owned),
        kind,
    };
    let listed = api.metadata.run(move |s| s.repositories(&filter, page.into())).await?;
    let results = listed.items.into_iter().map(Repository::from).collect();
    json(StatusCode::OK, &RepositoryPage::new(listed.total, page, results))
}

#[utoipa::path(
    get,
    path = "/api/v1/repositories/{name}",
    tag = "repositories",
    params(RepositoryPath),
    responses(
        (status = 200, description = "The repository.", body = Repository),
        (status = 400, description = "A malformed name.", body = ErrorBody),
        (status = 404, description = "No such repository.", body = ErrorBody),
    ),
)]
pub(crate) async fn get_repository(api: &Api, path: RepositoryPath) -> Reply {
    let name = path.name;
    let found = {
        let name = name.clone();
        api.metadata.run(move |s| s.repository(&name)).await?
    };
    let repo = found.ok_or_else(|| AdminError::NotFound(format!("repository {name:?} does not exist")))?;
    json(StatusCode::OK, &Repository::from(repo))
}

#[utoipa::path(
    post,
    path = "/api/v1/repositories",
    tag = "repositories",
    request_body(content = NewRepository, content_type = "application/json"),
    responses(
        (status = 201, description = "Created: a sync repository holding the empty version 0.", body = Repository,
            headers(("Location" = String, description = "`/api/v1/repositories/{name}`, the name percent-encoded"))),
        (status = 400, description = "Malformed JSON, an unknown field, or an invalid value (the message names it).", body = ErrorBody),
        (status = 409, description = "The name is taken, or lies under an upstream's path prefix.", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
    ),
)]
pub(crate) async fn create_repository(api: &Api, body: NewRepository) -> Reply {
    let created = api.repositories.create(body.into()).await?;
    let encoded: String = form_urlencoded::byte_serialize(created.name.as_bytes()).collect();
    let location = HeaderValue::try_from(format!("/api/v1/repositories/{encoded}"))
        .map_err(|e| AdminError::Internal(format!("Location: {e}")))?;
    let mut resp = json(StatusCode::CREATED, &Repository::from(created))?;
    resp.headers_mut().insert(header::LOCATION, location);
    Ok(resp)
}

#[utoipa::path(
    post,
    path = "/api/v1/repositories/{name}/sync",
    tag = "repositories",
    params(RepositoryPath),
    request_body(content = SyncRepository, content_type = "application/json"),
    responses(
        (status = 202, description = "The sync runs as a task: follow it at the `Location` given. It makes at most \
            one new version, named in the task's `created_resources`.", body = Task,
            headers(("Location" = String, description = "`/api/v1/tasks/{id}`"))),
        (status = 400, description = "Malformed JSON, an unknown field, no remote given and none set on the \
            repository, or an unknown remote.", body = ErrorBody),
        (status = 404, description = "No such repository.", body = ErrorBody),
        (status = 409, description = "Not a sync repository.", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
    ),
)]
pub(crate) async fn sync_repository(api: &Api, path: RepositoryPath, body: SyncRepository) -> Reply {
    let name = path.name;
    let remote = match body.remote {
        Some(r) => r,
        None => {
            let found = {
                let name = name.clone();
                api.metadata.run(move |s| s.repository(&name)).await?
            };
            let repo = found.ok_or_else(|| AdminError::NotFound(format!("repository {name:?} does not exist")))?;
            repo.remote.ok_or_else(|| {
                AdminError::Invalid(format!("repository {name:?} has no remote set; name the remote to sync from"))
            })?
        }
    };
    let req = SyncRequest { repository: name, remote, mirror: body.mirror };
    let task = crate::sync::start(&api.tasks, &api.syncer, req).await?;
    let location = HeaderValue::try_from(format!("/api/v1/tasks/{}", task.id))
        .map_err(|e| AdminError::Internal(format!("Location: {e}")))?;
    let mut resp = json(StatusCode::ACCEPTED, &Task::from(task))?;
    resp.headers_mut().insert(header::LOCATION, location);
    Ok(resp)
}

#[utoipa::path(
    patch,
    path = "/api/v1/repositories/{name}",
    tag = "repositories",
    params(RepositoryPath),
    request_body(content = RepositoryChanges, content_type = "application/json"),
    responses(
        (status = 200, description = "Changed. A new sync_interval restarts the schedule from now.", body = Repository),
        (status = 400, description = "Malformed JSON, an unknown field, null where not allowed, or an invalid value.", body = ErrorBody),
        (status = 404, description = "No such repository.", body = ErrorBody),
        (status = 409, description = "Not a sync repository.", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
    ),
)]
pub(crate) async fn update_repository(api: &Api, path: RepositoryPath, body: RepositoryChanges) -> Reply {
    let updated = api.repositories.update(path.name, body.into()).await?;
    json(StatusCode::OK, &Repository::from(updated))
}

#[utoipa::path(
    delete,
    path = "/api/v1/repositories/{name}",
    tag = "repositories",
    params(RepositoryPath),
    responses(
        (status = 204, description = "Deleted with every version. Stored bytes stay for other repositories (and garbage collection)."),
        (status = 404, description = "No such repository.", body = ErrorBody),
        (status = 409, description = "A distribution serves it, or it is a pull-through repository.", body = ErrorBody),
    ),
)]
pub(crate) async fn delete_repository(api: &Api, path: RepositoryPath) -> Reply {
    api.repositories.delete(path.name).await?;
    Ok(no_content())
}

#[utoipa::path(
    get,
    path = "/api/v1/repositories/{name}/versions",
    tag = "repositories",
    params(RepositoryPath, Pagination),
    responses(
        (status = 200, description = "The repository's versions, newest first.", body = VersionPage),
        (status = 400, description = "A malformed name or a bad query parameter.", body = ErrorBody),
        (status = 404, description = "No such repository.", body = ErrorBody),
    ),
)]
pub(crate) async fn list_versions(api: &Api, path: RepositoryPath, query: &Query) -> Reply {
    let name = path.name;
    let page = query.page()?;
    let listed = api.metadata.run(move |s| s.versions(&name, page.into())).await?;
    let results = listed.items.into_iter().map(Version::from).collect();
    json(StatusCode::OK, &VersionPage::new(listed.total, page, results))
}

#[utoipa::path(
    get,
    path = "/api/v1/repositories/{name}/versions/{number}",
    tag = "repositories",
    params(
        VersionPath,
    ),
    responses(
        (status = 200, description = "The version.", body = Version),
        (status = 400, description = "A malformed name or version number.", body = ErrorBody),
        (status = 404, description = "No such repository or version.", body = ErrorBody),
    ),
)]
pub(crate) async fn get_version(api: &Api, path: VersionPath) -> Reply {
    let VersionPath { name, number: version } = path;
    let v = api.metadata.run(move |s| s.version(&name, version.as_ref())).await?;
    json(StatusCode::OK, &Version::from(v))
}

#[utoipa::path(
    delete,
    path = "/api/v1/repositories/{name}/versions/{number}",
    tag = "repositories",
    params(
        VersionPath,
    ),
    responses(
        (status = 204, description = "Deleted; its changes fold into the next version."),
        (status = 400, description = "A malformed name or version number.", body = ErrorBody),
        (status = 404, description = "No such repository or version.", body = ErrorBody),
        (status = 409, description = "The version is the latest, or a distribution pins it.", body = ErrorBody),
    ),
)]
pub(crate) async fn delete_version(api: &Api, path: VersionPath) -> Reply {
    let VersionPath { name, number: version } = path;
    api.metadata
        .run(move |s| {
            // `latest` is resolved so that the store, which owns the rule,
            // refuses it with its own message.
            let number = match version {
                VersionSel::Number(n) => n,
                VersionSel::Latest => s.version(&name, None)?.number,
            };
            s.delete_version(&name, number)
        })
        .await?;
    Ok(no_content())
}

#[utoipa::path(
    get,
    path = "/api/v1/repositories/{name}/versions/{number}/tags",
    tag = "repositories",
    params(
        VersionPath,
        ("name" = Option<String>, Query, description = "Only the tag of exactly this name."),
        Pagination,
    ),
    responses(
        (status = 200, description = "Tags in the version, by name.", body = TagPage),
        (status = 400, description = "A malformed name, version number or query parameter.", body = ErrorBody),
        (status = 404, description = "No such repository or version.", body = ErrorBody),
    ),
)]
pub(crate) async fn list_tags(api: &Api, path: VersionPath, query: &Query) -> Reply {
    let VersionPath { name, number: version } = path;
    let page = query.page()?;
    let filter = ContentFilter { digest: None, tag: query.get("name").map(str::to_owned) };
    let listed = api.metadata.run(move |s| s.tags(&name, version.as_ref(), &filter, page.into())).await?;
    let results = listed.items.into_iter().map(Tag::from).collect();
    json(StatusCode::OK, &TagPage::new(listed.total, page, results))
}

#[utoipa::path(
    get,
    path = "/api/v1/repositories/{name}/versions/{number}/manifests",
    tag = "repositories",
    params(
        VersionPath,
        ("digest" = Option<String>, Query, description = "Only the manifest of this digest.",
            pattern = "^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$"),
        Pagination,
    ),
    responses(
        (status = 200, description = "Manifests in the version, by digest.", body = ManifestPage),
        (status = 400, description = "A malformed name, version number or query parameter.", body = ErrorBody),
        (status = 404, description = "No such repository or version.", body = ErrorBody),
    ),
)]
pub(crate) async fn list_manifests(api: &Api, path: VersionPath, query: &Query) -> Reply {
    let VersionPath { name, number: version } = path;
    let page = query.page()?;
    let filter = digest_filter(query)?;
    let listed = api.metadata.run(move |s| s.manifests(&name, version.as_ref(), &filter, page.into())).await?;
    let results: Vec<Manifest> = futures_util::stream::iter(listed.items)
        .map(|m| with_config_platform(api, m))
        .buffered(STAT_CONCURRENCY)
        .map(|m| Ok::<_, AdminError>(Manifest::from(m)))
        .try_collect()
        .await?;
    json(StatusCode::OK, &ManifestPage::new(listed.total, page, results))
}

/// A single-platform image names its platform only in its config blob:
/// read it when it is cached (no index entry gave the platform).
async fn with_config_platform(api: &Api, mut m: ManifestItem) -> ManifestItem {
    if m.platform.is_some() {
        return m;
    }
    let Some(config) = &m.facts.config else { return m };
    if let Ok(Some(bytes)) = api.storage.read_small(&config.digest, MAX_CONFIG_READ).await {
        m.platform = media::config_platform(&bytes)
            .map(|p| metadata::Platform { os: p.os, architecture: p.architecture, variant: p.variant });
    }
    m
}

#[utoipa::path(
    get,
    path = "/api/v1/repositories/{name}/versions/{number}/blobs",
    tag = "repositories",
    params(
        VersionPath,
        ("digest" = Option<String>, Query, description = "Only the blob of this digest.",
            pattern = "^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$"),
        Pagination,
    ),
    responses(
        (status = 200, description = "Blobs in the version, by digest, and whether each is cached.", body = BlobPage),
        (status = 400, description = "A malformed name, version number or query parameter.", body = ErrorBody),
        (status = 404, description = "No such repository or version.", body = ErrorBody),
    ),
)]
pub(crate) async fn list_blobs(api: &Api, path: VersionPath, query: &Query) -> Reply {
    let VersionPath { name, number: version } = path;
    let page = query.page()?;
    let filter = digest_filter(query)?;
    let listed = api.metadata.run(move |s| s.blobs(&name, version.as_ref(), &filter, page.into())).await?;
    let results: Vec<Blob> = futures_util::stream::iter(listed.items)
        .map(|b| async move {
            let cached = api.storage.stat(&b.digest).await?.is_some();
            Ok::<_, AdminError>(Blob::new(b, cached))
        })
        .buffered(STAT_CONCURRENCY)
        .try_collect()
        .await?;
    json(StatusCode::OK, &BlobPage::new(listed.total, page, results))
}

#[utoipa::path(
    get,
    path = "/api/v1/repositories/{name}/versions/{number}/signatures",
    tag = "repositories",
    params(
        VersionPath,
        ("manifest" = Option<String>, Query, description = "Only the signatures of the manifest of this digest.",
            pattern = "^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$"),
        Pagination,
    ),
    responses(
        (status = 200, description = "Atomic signatures in the version, by manifest digest, then in the order \
            they were added.", body = SignaturePage),
        (status = 400, description = "A malformed name, version number or query parameter.", body = ErrorBody),
        (status = 404, description = "No such repository or version.", body = ErrorBody),
    ),
)]
pub(crate) async fn list_signatures(api: &Api, path: VersionPath, query: &Query) -> Reply {
    let VersionPath { name, number: version } = path;
    let page = query.page()?;
    let manifest = query
        .get("manifest")
        .map(|d| d.parse::<Digest>().map_err(|e| AdminError::Invalid(format!("manifest {d:?}: {e}"))))
        .transpose()?;
    let listed =
        api.metadata.run(move |s| s.signature_items(&name, version.as_ref(), manifest.as_ref(), page.into())).await?;
    let results = listed.items.into_iter().map(model::Signature::from).collect();
    json(StatusCode::OK, &SignaturePage::new(listed.total, page, results))
}

#[utoipa::path(
    post,
    path = "/api/v1/repositories/{name}/copy",
    tag = "repositories",
    params(RepositoryPath),
    request_body(content = CopyContent, content_type = "application/json"),
    responses(
        (status = 200, description = "Copied: the version made, or null when the repository already held \
            everything chosen.", body = CurationResult),
        (status = 400, description = "Malformed JSON, an unknown field, both `tags` and `manifests`, or a bad \
            glob, digest or name.", body = ErrorBody),
        (status = 404, description = "No such repository, source or source version, or a manifest the source \
            version does not hold.", body = ErrorBody),
        (status = 409, description = "The repository is a pull-through repository.", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
    ),
)]
pub(crate) async fn copy_content(api: &Api, path: RepositoryPath, body: CopyContent) -> Reply {
    let (source, source_version, selection) = body.into_request().map_err(AdminError::Invalid)?;
    let version = api.curation.copy(&path.name, &source, source_version, selection).await?;
    json(StatusCode::OK, &CurationResult::new(version))
}

#[utoipa::path(
    post,
    path = "/api/v1/repositories/{name}/remove",
    tag = "repositories",
    params(RepositoryPath),
    request_body(content = RemoveContent, content_type = "application/json"),
    responses(
        (status = 200, description = "Removed: the version made.", body = CurationResult),
        (status = 400, description = "Malformed JSON, an unknown field, nothing to remove, or a bad tag or \
            digest.", body = ErrorBody),
        (status = 404, description = "No such repository, or a tag or manifest its latest version does not \
            hold (then nothing is removed).", body = ErrorBody),
        (status = 409, description = "The repository is a pull-through repository.", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
    ),
)]
pub(crate) async fn remove_content(api: &Api, path: RepositoryPath, body: RemoveContent) -> Reply {
    let version = api.curation.remove(&path.name, body.tags, body.manifests).await?;
    json(StatusCode::OK, &CurationResult::new(version))
}

#[utoipa::path(
    post,
    path = "/api/v1/repositories/{name}/revert",
    tag = "repositories",
    params(RepositoryPath),
    request_body(content = RevertTo, content_type = "application/json"),
    responses(
        (status = 200, description = "Reverted: the version made, whose content equals the one asked for, or \
            null when the latest version already held exactly that.", body = CurationResult),
        (status = 400, description = "Malformed JSON, an unknown field, or a bad name or version.", body = ErrorBody),
        (status = 404, description = "No such repository or version.", body = ErrorBody),
        (status = 409, description = "The repository is a pull-through repository.", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
    ),
)]
pub(crate) async fn revert_repository(api: &Api, path: RepositoryPath, body: RevertTo) -> Reply {
    let version = api.curation.revert(&path.name, body.version()).await?;
    json(StatusCode::OK, &CurationResult::new(version))
}

#[utoipa::path(
    get,
    path = "/api/v1/distributions",
    tag = "distributions",
    params(Pagination),
    responses(
        (status = 200, description = "Distributions, by name.", body = DistributionPage),
        (status = 400, description = "A bad or unknown query parameter.", body = ErrorBody),
    ),
)]
pub(crate) async fn list_distributions(api: &Api, query: &Query) -> Reply {
    let page = query.page()?;
    let listed = api.metadata.run(move |s| s.distributions(page.into())).await?;
    let results = listed.items.into_iter().map(Distribution::from).collect();
    json(StatusCode::OK, &DistributionPage::new(listed.total, page, results))
}

#[utoipa::path(
    post,
    path = "/api/v1/distributions",
    tag = "distributions",
    request_body(content = NewDistribution, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; the registry port serves it from now on.", body = Distribution,
            headers(("Location" = String, description = "`/api/v1/distributions/{name}`"))),
        (status = 400, description = "Malformed JSON, an unknown field, or an invalid name or base_path.", body = ErrorBody),
        (status = 404, description = "No such repository, or no such version to pin.", body = ErrorBody),
        (status = 409, description = "The name or base_path is taken, or base_path lies under an upstream's name.", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
    ),
)]
pub(crate) async fn create_distribution(api: &Api, body: NewDistribution) -> Reply {
    let created = api.distributions.create(body.into()).await?;
    let location = format!("/api/v1/distributions/{}", created.name);
    let mut resp = json(StatusCode::CREATED, &Distribution::from(created))?;
    // A valid distribution name is letters, digits, '.', '_' and '-':
    // always a valid header value and a path segment as it is.
    let location = HeaderValue::try_from(location).map_err(|e| AdminError::Internal(format!("Location: {e}")))?;
    resp.headers_mut().insert(header::LOCATION, location);
    Ok(resp)
}

#[utoipa::path(
    get,
    path = "/api/v1/distributions/{name}",
    tag = "distributions",
    params(DistributionPath),
    responses(
        (status = 200, description = "The distribution.", body = Distribution),
        (status = 404, description = "No such distribution.", body = ErrorBody),
    ),
)]
pub(crate) async fn get_distribution(api: &Api, path: DistributionPath) -> Reply {
    let name = path.name;
    let found = {
        let name = name.clone();
        api.metadata.run(move |s| s.distribution(&name)).await?
    };
    let d = found.ok_or_else(|| AdminError::NotFound(format!("distribution {name:?} does not exist")))?;
    json(StatusCode::OK, &Distribution::from(d))
}

#[utoipa::path(
    patch,
    path = "/api/v1/distributions/{name}",
    tag = "distributions",
    params(DistributionPath),
    request_body(content = DistributionChanges, content_type = "application/json"),
    responses(
        (status = 200, description = "Changed; the registry port serves the change from now on.", body = Distribution),
        (status = 400, description = "Malformed JSON, an unknown field, null where not allowed, or an invalid base_path.", body = ErrorBody),
        (status = 404, description = "No such distribution, repository, or version to pin.", body = ErrorBody),
        (status = 409, description = "The base_path is taken or lies under an upstream's name.", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
    ),
)]
pub(crate) async fn update_distribution(api: &Api, path: DistributionPath, body: DistributionChanges) -> Reply {
    let updated = api.distributions.update(path.name, body.into()).await?;
    json(StatusCode::OK, &Distribution::from(updated))
}

#[utoipa::path(
    delete,
    path = "/api/v1/distributions/{name}",
    tag = "distributions",
    params(DistributionPath),
    responses(
        (status = 204, description = "Deleted; the registry port stops serving it."),
        (status = 404, description = "No such distribution.", body = ErrorBody),
    ),
)]
pub(crate) async fn delete_distribution(api: &Api, path: DistributionPath) -> Reply {
    let name = path.name;
    api.distributions.delete(name).await?;
    Ok(no_content())
}

#[utoipa::path(
    get,
    path = "/api/v1/remotes",
    tag = "remotes",
    params(Pagination),
    responses(
        (status = 200, description = "Remotes, by name; credentials never shown.", body = RemotePage),
        (status = 400, description = "A bad or unknown query parameter.", body = ErrorBody),
    ),
)]
pub(crate) async fn list_remotes(api: &Api, query: &Query) -> Reply {
    let page = query.page()?;
    let listed = api.metadata.run(move |s| s.remotes(page.into())).await?;
    let results = listed.items.into_iter().map(Remote::from).collect();
    json(StatusCode::OK, &RemotePage::new(listed.total, page, results))
}

#[utoipa::path(
    post,
    path = "/api/v1/remotes",
    tag = "remotes",
    request_body(content = NewRemote, content_type = "application/json"),
    responses(
        (status = 201, description = "Created.", body = Remote,
            headers(("Location" = String, description = "`/api/v1/remotes/{name}`"))),
        (status = 400, description = "Malformed JSON, an unknown field, or an invalid value (the message names the field).", body = ErrorBody),
        (status = 409, description = "The name is taken.", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
    ),
)]
pub(crate) async fn create_remote(api: &Api, body: NewRemote) -> Reply {
    let created = api.remotes.create(body.into()).await?;
    // A valid remote name is letters, digits, '.', '_' and '-': always a
    // valid header value and a path segment as it is.
    let location = HeaderValue::try_from(format!("/api/v1/remotes/{}", created.name))
        .map_err(|e| AdminError::Internal(format!("Location: {e}")))?;
    let mut resp = json(StatusCode::CREATED, &Remote::from(created))?;
    resp.headers_mut().insert(header::LOCATION, location);
    Ok(resp)
}

#[utoipa::path(
    get,
    path = "/api/v1/remotes/{name}",
    tag = "remotes",
    params(RemotePath),
    responses(
        (status = 200, description = "The remote; credentials never shown.", body = Remote),
        (status = 404, description = "No such remote.", body = ErrorBody),
    ),
)]
pub(crate) async fn get_remote(api: &Api, path: RemotePath) -> Reply {
    let name = path.name;
    let found = {
        let name = name.clone();
        api.metadata.run(move |s| s.remote(&name)).await?
    };
    let r = found.ok_or_else(|| AdminError::NotFound(format!("remote {name:?} does not exist")))?;
    json(StatusCode::OK, &Remote::from(r))
}

#[utoipa::path(
    patch,
    path = "/api/v1/remotes/{name}",
    tag = "remotes",
    params(RemotePath),
    request_body(content = RemoteChanges, content_type = "application/json"),
    responses(
        (status = 200, description = "Changed.", body = Remote),
        (status = 400, description = "Malformed JSON, an unknown field, null where not allowed, or an invalid value.", body = ErrorBody),
        (status = 404, description = "No such remote.", body = ErrorBody),
        (status = 409, description = "A new name is taken.", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
    ),
)]
pub(crate) async fn update_remote(api: &Api, path: RemotePath, body: RemoteChanges) -> Reply {
    let updated = api.remotes.update(path.name, body.into()).await?;
    json(StatusCode::OK, &Remote::from(updated))
}

#[utoipa::path(
    delete,
    path = "/api/v1/remotes/{name}",
    tag = "remotes",
    params(RemotePath),
    responses(
        (status = 204, description = "Deleted; repositories synced from it keep their content."),
        (status = 404, description = "No such remote.", body = ErrorBody),
    ),
)]
pub(crate) async fn delete_remote(api: &Api, path: RemotePath) -> Reply {
    api.remotes.delete(path.name).await?;
    Ok(no_content())
}

#[utoipa::path(
    get,
    path = "/api/v1/upstreams",
    tag = "upstreams",
    params(Pagination),
    responses(
        (status = 200, description = "The configured upstreams, in configuration order; never credentials.", body = UpstreamPage),
        (status = 400, description = "A bad or unknown query parameter.", body = ErrorBody),
    ),
)]
pub(crate) async fn list_upstreams(api: &Api, query: &Query) -> Reply {
    let page = query.page()?;
    let skip = usize::try_from(page.offset).unwrap_or(usize::MAX);
    let results = api.upstreams.iter().skip(skip).take(page.limit as usize).cloned().collect();
    json(StatusCode::OK, &UpstreamPage::new(api.upstreams.len() as u64, page, results))
}

/// One page of an in-memory list.
fn slice<T: Clone>(all: &[T], page: Pagination) -> Vec<T> {
    let skip = usize::try_from(page.offset).unwrap_or(usize::MAX);
    all.iter().skip(skip).take(page.limit as usize).cloned().collect()
}

#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "auth",
    params(Pagination),
    responses(
        (status = 200, description = "The configured users, by name, with the rules that cover each; never password hashes.", body = UserPage),
        (status = 400, description = "A bad or unknown query parameter.", body = ErrorBody),
    ),
)]
pub(crate) async fn list_users(api: &Api, query: &Query) -> Reply {
    let page = query.page()?;
    let rules = api.auth.rules();
    let all: Vec<User> = api.auth.users().iter().map(|u| User::new(u, &rules)).collect();
    json(StatusCode::OK, &UserPage::new(all.len() as u64, page, slice(&all, page)))
}

#[utoipa::path(
    get,
    path = "/api/v1/rules",
    tag = "auth",
    params(Pagination),
    responses(
        (status = 200, description = "The configured rules, in configuration order.", body = RulePage),
        (status = 400, description = "A bad or unknown query parameter.", body = ErrorBody),
    ),
)]
pub(crate) async fn list_rules(api: &Api, query: &Query) -> Reply {
    let page = query.page()?;
    let all: Vec<Rule> = api.auth.rules().iter().enumerate().map(|(i, r)| Rule::new(i, r)).collect();
    json(StatusCode::OK, &RulePage::new(all.len() as u64, page, slice(&all, page)))
}

#[utoipa::path(
    get,
    path = "/api/v1/signing-keys",
    tag = "auth",
    params(Pagination),
    responses(
        (status = 200, description = "The token signing keys: the current one, then retired ones that still verify, newest first.", body = SigningKeyPage),
        (status = 400, description = "A bad or unknown query parameter.", body = ErrorBody),
    ),
)]
pub(crate) async fn list_signing_keys(api: &Api, query: &Query) -> Reply {
    let page = query.page()?;
    let all: Vec<SigningKey> = api.auth.keys().iter().map(SigningKey::from).collect();
    json(StatusCode::OK, &SigningKeyPage::new(all.len() as u64, page, slice(&all, page)))
}

#[utoipa::path(
    post,
    path = "/api/v1/signing-keys",
    tag = "auth",
    responses(
        (status = 201, description = "A new key signs tokens from now on; the previous one keeps verifying \
            the tokens it signed until they expire (`auth.token_ttl` plus a minute). The body is the new key.", body = SigningKey),
        (status = 500, description = "The key file could not be written; the old key still signs.", body = ErrorBody),
    ),
)]
pub(crate) async fn rotate_signing_key(api: &Api) -> Reply {
    let auth = api.auth.clone();
    // A small synchronous file write and fsync: off the async workers.
    let keys = tokio::task::spawn_blocking(move || auth.rotate_key())
        .await
        .map_err(|e| AdminError::Internal(format!("key rotation did not finish: {e}")))??;
    let current = keys
        .iter()
        .find(|k| k.current)
        .ok_or_else(|| AdminError::Internal("no current key after rotation".into()))?;
    json(StatusCode::CREATED, &SigningKey::from(current))
}

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    responses((status = 200, description = "This API as an OpenAPI 3.1 document.", content_type = "application/json")),
)]
pub(crate) async fn openapi(api: &Api) -> Reply {
    Ok(json_bytes(StatusCode::OK, api.openapi.clone()))
}

/// 202 with the task and its `Location`.
pub(super) fn task_accepted(task: crate::metadata::Task) -> Reply {
    let location = HeaderValue::try_from(format!("/api/v1/tasks/{}", task.id))
        .map_err(|e| AdminError::Internal(format!("Location: {e}")))?;
    let mut resp = json(StatusCode::ACCEPTED, &Task::from(task))?;
    resp.headers_mut().insert(header::LOCATION, location);
    Ok(resp)
}
