//! The admin port: health, metrics, and the admin REST API under
//! `/api/v1/` (docs/ADMIN_API.md) with its generated OpenAPI document.
//! Serves no registry traffic and never reaches an upstream.
//!
//! - `route.rs`: paths, methods and query strings into typed endpoints.
//! - `api.rs`: one handler per operation, each with its OpenAPI attribute.
//! - `model.rs`: the JSON bodies and their schemas.
//! - `openapi.rs`: the document, assembled from the handlers.
//! - `error.rs`: the one mapping from error to status and JSON.
//! - `health.rs`: readiness: storage writable, metadata answering,
//!   upstreams reported.
//!
//! Here: the top-level dispatch, request bodies (JSON only, bounded) and
//! HEAD. Distribution writes go through `repository::Distributions`, never
//! the metadata store directly, so the registry port's table follows them;
//! curation (copy, remove, revert) goes through `repository::Curation`;
//! remote writes go through `sync::Remotes`, which checks them; tasks are
//! read and canceled through `tasks::Tasks`, which runs them.

mod api;
mod builds;
mod error;
mod exports;
mod health;
mod model;
mod openapi;
mod route;
mod storage;
mod tasks;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use crate::api::body::{full, Body, BodyError};
use crate::auth::{AdminResource, Auth};
use crate::config::UpstreamConfig;
use crate::metadata::Metadata;
use crate::metrics::Metrics;
use crate::repository::Distributions;
use crate::gc::Disk;
use crate::storage::Storage;
use crate::sync::SyncParts;
use api::Api;
use error::AdminError;
pub(crate) use builds::BuildParts;
pub(crate) use health::Readiness;
use model::{DistributionPath, RemotePath, RepositoryPath, TaskPath, VersionPath};
use route::{ContentKind, Endpoint, Query};

/// Request bodies are small JSON objects; anything bigger is a mistake.
const MAX_BODY: usize = 64 * 1024;

#[derive(Clone)]
pub(crate) struct Admin {
    metrics: Metrics,
    api: Arc<Api>,
    auth: Auth,
    readiness: Arc<Readiness>,
}

impl Admin {
    /// `upstreams` are shown by `/api/v1/upstreams` without credentials;
    /// `readiness` answers `/readyz`.
    #[allow(clippy::too_many_arguments)] // The admin port's parts, each distinct.
    pub(crate) fn new(
        metrics: Metrics,
        metadata: Metadata,
        distributions: Distributions,
        sync: SyncParts,
        storage: (Storage, Disk),
        upstreams: &[UpstreamConfig],
        auth: Auth,
        readiness: Readiness,
    ) -> Result<Admin, AdminError> {
        let document = openapi::document()
            .map_err(|e| AdminError::Internal(format!("cannot render the OpenAPI document: {e}")))?;
        let api = Api::new(metadata, distributions, sync, storage, upstreams, auth.clone(), Bytes::from(document));
        Ok(Admin { metrics, api: Arc::new(api), auth, readiness: Arc::new(readiness) })
    }

    /// Builds take their parts (pushes, bases) from the composition.
    pub(crate) fn with_build(mut self, parts: BuildParts) -> Admin {
        if let Some(api) = Arc::get_mut(&mut self.api) {
            api.build = Some(parts);
        }
        self
    }

    pub(crate) async fn handle<B>(&self, mut req: Request<B>) -> Response<Body>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BodyError>,
    {
        // Who may reach what is auth's decision: with users configured,
        // the admin role for the API, and for health and metrics too
        // unless `auth.open_metrics`.
        let resource = match req.uri().path() {
            "/metrics" => AdminResource::Metrics,
            p if p.starts_with("/api/") => route::build_target(req.method(), p).map_or(AdminResource::Api, AdminResource::Build),
            _ => AdminResource::Health,
        };
        match self.auth.authorize_admin(req.headers(), resource).await {
            // Who called, for the checks a handler makes itself.
            Ok(principal) => {
                req.extensions_mut().insert(principal);
            }
            Err(e) => return AdminError::from(e).into_response(),
        }
        if req.uri().path().starts_with("/api/") {
            return self.api(req).await;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n".into(), "text/plain");
            resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        match req.uri().path() {
            "/healthz" | "/livez" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
            "/readyz" => {
                // Not an error of the request: the report is the answer,
                // 503 telling a load balancer to keep traffic away.
                let report = self.readiness.check().await;
                let status = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                text(status, report.text, "text/plain")
            }
            "/metrics" => text(StatusCode::OK, self.metrics.render(), "text/plain; version=0.0.4"),
            _ => text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
        }
    }

    /// One `/api/` request; never fails (errors become JSON responses).
    async fn api<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BodyError>,
    {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let resp = match self.dispatch(req).await {
            Ok(resp) => resp,
            Err(e) => e.into_response(),
        };
        tracing::info!(
            method = %method,
            path = %path,
            status = resp.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "admin request"
        );
        if method == Method::HEAD {
            // Same headers (Content-Length included) as GET, no body.
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, Body::default());
        }
        resp
    }

    async fn dispatch<B>(&self, req: Request<B>) -> Result<Response<Body>, AdminError>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BodyError>,
    {
        let endpoint = route::endpoint(req.method(), req.uri().path())?;
        let query = Query::parse(req.uri().query(), endpoint.query_keys())?;
        let api = self.api.as_ref();
        match endpoint {
            Endpoint::ListRepositories => api::list_repositories(api, &query).await,
            Endpoint::CreateRepository => api::create_repository(api, read_json(req).await?).await,
            Endpoint::GetRepository { name } => api::get_repository(api, RepositoryPath { name }).await,
            Endpoint::UpdateRepository { name } => {
                api::update_repository(api, RepositoryPath { name }, read_json(req).await?).await
            }
            Endpoint::DeleteRepository { name } => api::delete_repository(api, RepositoryPath { name }).await,
            Endpoint::SyncRepository { name } => {
                api::sync_repository(api, RepositoryPath { name }, read_json(req).await?).await
            }
            Endpoint::ListVersions { name } => api::list_versions(api, RepositoryPath { name }, &query).await,
            Endpoint::GetVersion { name, version } => api::get_version(api, VersionPath { name, number: version }).await,
            Endpoint::DeleteVersion { name, version } => {
                api::delete_version(api, VersionPath { name, number: version }).await
            },
            Endpoint::ListContent { name, version, kind } => {
                let path = VersionPath { name, number: version };
                match kind {
                    ContentKind::Tags => api::list_tags(api, path, &query).await,
                    ContentKind::Manifests => api::list_manifests(api, path, &query).await,
                    ContentKind::Blobs => api::list_blobs(api, path, &query).await,
                    ContentKind::Signatures => api::list_signatures(api, path, &query).await,
                }
            }
            Endpoint::CopyContent { name } => api::copy_content(api, RepositoryPath { name }, read_json(req).await?).await,
            Endpoint::RemoveContent { name } => {
                api::remove_content(api, RepositoryPath { name }, read_json(req).await?).await
            }
            Endpoint::RevertRepository { name } => {
                api::revert_repository(api, RepositoryPath { name }, read_json(req).await?).await
            }
            Endpoint::ListDistributions => api::list_distributions(api, &query).await,
            Endpoint::CreateDistribution => api::create_distribution(api, read_json(req).await?).await,
            Endpoint::GetDistribution { name } => api::get_distribution(api, DistributionPath { name }).await,
            Endpoint::UpdateDistribution { name } => {
                api::update_distribution(api, DistributionPath { name }, read_json(req).await?).await
            },
            Endpoint::DeleteDistribution { name } => api::delete_distribution(api, DistributionPath { name }).await,
            Endpoint::ListRemotes => api::list_remotes(api, &query).await,
            Endpoint::CreateRemote => api::create_remote(api, read_json(req).await?).await,
            Endpoint::GetRemote { name } => api::get_remote(api, RemotePath { name }).await,
            Endpoint::UpdateRemote { name } => api::update_remote(api, RemotePath { name }, read_json(req).await?).await,
            Endpoint::DeleteRemote { name } => api::delete_remote(api, RemotePath { name }).await,
            Endpoint::ListTasks => tasks::list_tasks(api, &query).await,
            Endpoint::GetTask { id } => tasks::get_task(api, TaskPath { id }).await,
            Endpoint::GetTaskLog { id } => tasks::get_task_log(api, TaskPath { id }, &query).await,
            Endpoint::CancelTask { id } => tasks::cancel_task(api, TaskPath { id }).await,
            Endpoint::ListUpstreams => api::list_upstreams(api, &query).await,
            Endpoint::ListUsers => api::list_users(api, &query).await,
            Endpoint::ListRules => api::list_rules(api, &query).await,
            Endpoint::ListSigningKeys => api::list_signing_keys(api, &query).await,
            Endpoint::RotateSigningKey => api::rotate_signing_key(api).await,
            Endpoint::OpenApi => api::openapi(api).await,
            Endpoint::StartGc => storage::start_gc(api).await,
            Endpoint::StartVerify => storage::start_verify(api).await,
            Endpoint::StartMigrate => storage::start_migrate(api).await,
            Endpoint::ListExports => exports::list_exports(api, &query).await,
            Endpoint::CreateExport => exports::create_export(api, read_json(req).await?).await,
            Endpoint::GetExport { id } => exports::get_export(api, exports::ExportPath { id }).await,
            Endpoint::DeleteExport { id } => exports::delete_export(api, exports::ExportPath { id }, &query).await,
            Endpoint::CreateImport => exports::create_import(api, read_json(req).await?).await,
            Endpoint::BuildRepository { name } => {
                let principal = req.extensions().get::<crate::auth::Principal>().cloned().unwrap_or(crate::auth::Principal::Anonymous);
                builds::build_repository(api, name, &query, principal, req).await
            }
        }
    }
}

/// Reads a JSON request body of at most [`MAX_BODY`] bytes: 415 unless it
/// is declared `application/json`, 413 if larger, 400 with serde's message
/// if it does not parse into `T` (which refuses unknown fields).
async fn read_json<T, B>(req: Request<B>) -> Result<T, AdminError>
where
    T: DeserializeOwned,
    B: http_body::Body,
    B::Error: Into<BodyError>,
{
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let is_json = content_type
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(AdminError::UnsupportedMediaType(format!(
            "the request body must be Content-Type: application/json, not {}",
            content_type.map_or_else(|| "absent".to_owned(), |t| format!("{t:?}"))
        )));
    }
    // A declared length over the bound is refused before reading a byte.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(AdminError::PayloadTooLarge { limit: MAX_BODY });
    }
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(AdminError::PayloadTooLarge { limit: MAX_BODY })
        }
        Err(e) => return Err(AdminError::Invalid(format!("cannot read the request body: {e}"))),
    };
    serde_json::from_slice(&bytes).map_err(|e| AdminError::Invalid(format!("invalid request body: {e}")))
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
