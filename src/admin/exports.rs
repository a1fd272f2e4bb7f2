//! Exports for air-gapped sites in the admin API: one runs as a task and
//! is recorded; listed, shown and deleted (its files only if asked).

use std::path::{Path, PathBuf};

use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::api::{json, task_accepted, Api, Reply};
use super::error::{AdminError, ErrorBody};
use super::model::{Pagination, Task};
use super::route::Query;
use crate::metadata::{ExportRecord, ExportState};
use crate::transfer::{self, import::ImportRequest, ExportRequest};

/// What to export.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewExport {
    /// Repositories to export, by name: each at its latest version unless
    /// `versions` names one.
    pub(crate) repositories: Vec<String>,
    /// Versions to export instead of the latest, by repository name.
    #[serde(default)]
    pub(crate) versions: std::collections::BTreeMap<String, u64>,
    /// An existing directory on the node that runs the export (absolute).
    /// The export is written into a new directory `wharf-export-<id>` in it.
    pub(crate) path: String,
    /// The id of an earlier complete export: what it and the exports it
    /// builds on carried is left out (an incremental export).
    pub(crate) since: Option<u64>,
    /// Split the archive into files of at most this many bytes (at least
    /// 1 MiB).
    pub(crate) chunk_size: Option<u64>,
}

/// A repository version an export carries.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ExportedVersion {
    pub(crate) repository: String,
    pub(crate) version: u64,
}

/// An export.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Export {
    pub(crate) id: u64,
    /// Its own random id, which the import side records it by.
    pub(crate) uuid: Option<String>,
    /// `writing`, `complete` or `failed`.
    pub(crate) state: String,
    /// The export's directory: `wharf-export-<id>` in the path asked for.
    pub(crate) directory: String,
    /// The export it builds on, if incremental.
    pub(crate) base: Option<u64>,
    pub(crate) repositories: Vec<ExportedVersion>,
    /// Bytes of the archive (all its files), once complete.
    pub(crate) size: u64,
    /// Files in the archive, once complete.
    pub(crate) files: u64,
    pub(crate) error: Option<String>,
    /// RFC 3339.
    pub(crate) created_at: String,
}

impl From<ExportRecord> for Export {
    fn from(e: ExportRecord) -> Export {
        Export {
            id: e.id,
            uuid: e.uuid,
            state: e.state.as_str().into(),
            directory: transfer::directory(Path::new(&e.path), e.id).display().to_string(),
            base: e.base,
            repositories: e.repositories.into_iter().map(|v| ExportedVersion { repository: v.repository, version: v.version }).collect(),
            size: e.size,
            files: e.files,
            error: e.error,
            created_at: super::model::timestamp(e.created_at),
        }
    }
}

/// A page of exports, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ExportPage {
    /// How many results there are in all, over every page.
    count: u64,
    limit: u32,
    offset: u64,
    results: Vec<Export>,
}

/// An export named in the path.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct ExportPath {
    /// The export's id.
    #[param(minimum = 1)]
    pub(crate) id: u64,
}

/// The smallest chunk: smaller ones would make thousands of files.
const MIN_CHUNK: u64 = 1 << 20;

#[utoipa::path(
    post,
    path = "/api/v1/exports",
    tag = "exports",
    request_body(content = NewExport, content_type = "application/json"),
    responses(
        (status = 202, description = "The export runs as a task: follow it at the `Location` given. It writes an \
            OCI image layout in a tar (`export.tar`, or `export.tar.000`, `.001`, ... with `chunk_size`) and a \
            table of contents (`toc.json`: every file with its size and sha256, the archive's files, one hash over \
            the archive) into `wharf-export-<id>` under `path`. `index.json` names each tag `<repository>:<tag>`, \
            so skopeo reads the archive (`oci-archive:export.tar:<repository>:<tag>`). Progress counts objects \
            and bytes written. A failed export leaves no directory.", body = Task,
            headers(("Location" = String, description = "`/api/v1/tasks/{id}`"))),
        (status = 400, description = "No repositories, a relative path, or a chunk size under 1 MiB.", body = ErrorBody),
    ),
)]
pub(crate) async fn create_export(api: &Api, body: NewExport) -> Reply {
    if body.repositories.is_empty() {
        return Err(AdminError::Invalid("name at least one repository to export".into()));
    }
    let path = PathBuf::from(&body.path);
    if !path.is_absolute() {
        return Err(AdminError::Invalid(format!("path {:?} is not absolute", body.path)));
    }
    if let Some(size) = body.chunk_size.filter(|&s| s < MIN_CHUNK) {
        return Err(AdminError::Invalid(format!("chunk_size {size} is under {MIN_CHUNK} bytes (1 MiB)")));
    }
    if let Some(name) = body.versions.keys().find(|n| !body.repositories.contains(n)) {
        return Err(AdminError::Invalid(format!("versions names {name:?}, which repositories does not")));
    }
    let repositories: Vec<(String, Option<u64>)> =
        body.repositories.iter().map(|n| (n.clone(), body.versions.get(n).copied())).collect();
    let params = serde_json::json!({
        "repositories": body.repositories, "versions": body.versions, "path": body.path,
        "since": body.since, "chunk_size": body.chunk_size,
    });
    let request = ExportRequest { repositories, path, since: body.since, chunk_size: body.chunk_size };
    let (metadata, storage, syncer) = (api.metadata.clone(), api.storage.clone(), api.syncer.clone());
    let task = api
        .tasks
        .submit("export", None, params, move |progress| async move {
            let objects = transfer::export::Objects { storage: &storage, refetch: Some(&syncer) };
            let export = transfer::run_export(&metadata, objects, request, &progress).await?;
            let directory = transfer::directory(Path::new(&export.path), export.id).display().to_string();
            Ok(vec![crate::metadata::CreatedResource::Export { id: export.id, directory }])
        })
        .await?;
    task_accepted(task)
}

#[utoipa::path(
    get,
    path = "/api/v1/exports",
    tag = "exports",
    params(Pagination),
    responses(
        (status = 200, description = "Exports, newest first.", body = ExportPage),
        (status = 400, description = "A bad or unknown query parameter.", body = ErrorBody),
    ),
)]
pub(crate) async fn list_exports(api: &Api, query: &Query) -> Reply {
    let page = query.page()?;
    let listed = api.metadata.run(move |s| s.exports(page.into())).await?;
    let results = listed.items.into_iter().map(Export::from).collect();
    json(StatusCode::OK, &ExportPage { count: listed.total, limit: page.limit, offset: page.offset, results })
}

#[utoipa::path(
    get,
    path = "/api/v1/exports/{id}",
    tag = "exports",
    params(ExportPath),
    responses(
        (status = 200, description = "The export.", body = Export),
        (status = 404, description = "No such export.", body = ErrorBody),
    ),
)]
pub(crate) async fn get_export(api: &Api, path: ExportPath) -> Reply {
    let id = path.id;
    let found = api.metadata.run(move |s| s.export(id)).await?;
    let export = found.ok_or_else(|| AdminError::NotFound(format!("no export {id}")))?;
    json(StatusCode::OK, &Export::from(export))
}

/// `files=true` on a delete. Read through [`Query`]: the struct only
/// documents the parameter in the OpenAPI document.
#[allow(dead_code)]
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeleteExportQuery {
    /// Also delete the export's directory and its files.
    pub(crate) files: Option<bool>,
}

#[utoipa::path(
    delete,
    path = "/api/v1/exports/{id}",
    tag = "exports",
    params(ExportPath, DeleteExportQuery),
    responses(
        (status = 204, description = "Forgotten; with `files=true` its directory is deleted too."),
        (status = 404, description = "No such export.", body = ErrorBody),
        (status = 409, description = "Another export builds on it, or it is being written.", body = ErrorBody),
    ),
)]
pub(crate) async fn delete_export(api: &Api, path: ExportPath, query: &Query) -> Reply {
    let files = match query.get("files") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(AdminError::Invalid(format!("files={other:?}: true or false"))),
    };
    let id = path.id;
    if let Some(e) = api.metadata.run(move |s| s.export(id)).await? {
        if e.state == ExportState::Writing {
            return Err(AdminError::Conflict(format!("export {id} is being written")));
        }
    }
    let deleted = api.metadata.run(move |s| s.delete_export(id)).await?;
    if files {
        let dir = transfer::directory(Path::new(&deleted.path), id);
        tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!("{}: {e}", dir.display())),
            _ => Ok(()),
        })
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))?
        .map_err(AdminError::Internal)?;
    }
    let mut resp = http::Response::new(crate::api::body::full(bytes::Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}

/// What to import.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewImport {
    /// An export's directory (`wharf-export-<id>`) on the node that runs
    /// the import (absolute).
    pub(crate) path: String,
    /// Repositories to import under another name: exported name to name here.
    #[serde(default)]
    pub(crate) repository_map: std::collections::BTreeMap<String, String>,
    /// Check the export and report what it would create, changing nothing.
    #[serde(default)]
    pub(crate) dry_run: bool,
}

/// What a dry run found.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ImportPlan {
    /// The export's number where it was made, and its own id.
    pub(crate) export: u64,
    pub(crate) uuid: String,
    /// Imported here before: an import would change nothing.
    pub(crate) already_imported: bool,
    /// The repositories an import would write a version of.
    pub(crate) repositories: Vec<String>,
    /// Bytes of objects not stored here yet: the space the import needs.
    pub(crate) new_bytes: u64,
}

#[utoipa::path(
    post,
    path = "/api/v1/imports",
    tag = "exports",
    request_body(content = NewImport, content_type = "application/json"),
    responses(
        (status = 202, description = "The import runs as a task: follow it at the `Location` given. It checks \
            `toc.json` and every chunk of the archive before it stores anything (a changed, missing or truncated \
            file fails the task naming it and the hash it should have), stores every object through verified \
            ingest, then makes one new version per repository holding exactly the exported content, in one \
            transaction (repositories created with their exported kind if missing): the task's \
            `created_resources` list them. An export imported before changes nothing; one whose base was not \
            imported here fails, naming the base.", body = Task,
            headers(("Location" = String, description = "`/api/v1/tasks/{id}`"))),
        (status = 200, description = "With `dry_run`: what an import would do, having checked the whole export.", body = ImportPlan),
        (status = 400, description = "A relative path, or a dry run that found the export damaged.", body = ErrorBody),
    ),
)]
pub(crate) async fn create_import(api: &Api, body: NewImport) -> Reply {
    let path = PathBuf::from(&body.path);
    if !path.is_absolute() {
        return Err(AdminError::Invalid(format!("path {:?} is not absolute", body.path)));
    }
    let request = ImportRequest { path, repository_map: body.repository_map.clone(), dry_run: body.dry_run };
    let (metadata, storage) = (api.metadata.clone(), api.storage.clone());
    if body.dry_run {
        let progress = crate::tasks::Progress::untracked();
        let report = transfer::import::run_import(&metadata, &storage, request, &progress).await.map_err(|e| match e {
            crate::tasks::TaskFailure::Failed(m) => AdminError::Invalid(m),
            crate::tasks::TaskFailure::Canceled => AdminError::Internal("canceled".into()),
        })?;
        let plan = ImportPlan {
            export: report.export,
            uuid: report.uuid,
            already_imported: report.already_imported,
            repositories: report.versions.into_iter().map(|(name, _)| name).collect(),
            new_bytes: report.new_bytes,
        };
        return json(StatusCode::OK, &plan);
    }
    let params = serde_json::json!({ "path": body.path, "repository_map": body.repository_map });
    let task = api
        .tasks
        .submit("import", None, params, move |progress| async move {
            let report = transfer::import::run_import(&metadata, &storage, request, &progress).await?;
            if report.already_imported {
                tracing::info!(export = report.export, uuid = %report.uuid, "export imported before: nothing changed");
            }
            Ok(report
                .versions
                .into_iter()
                .filter_map(|(repository, number)| {
                    number.map(|number| crate::metadata::CreatedResource::RepositoryVersion { repository, number })
                })
                .collect())
        })
        .await?;
    task_accepted(task)
}
