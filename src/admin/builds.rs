//! `POST /api/v1/repositories/{name}/build`: a build context (a tar)
//! streamed into a checked scratch directory, its Containerfile parsed
//! (errors answered at once, naming the line), then the build as a task
//! whose steps and log the task shows, its image stored as one version of
//! the push repository `name`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{header, Request};
use http_body_util::BodyExt;

use super::api::{task_accepted, Api, Reply};
use super::error::{AdminError, ErrorBody};
use super::model::{RepositoryPath, Task};
use super::route::Query;
use crate::api::body::BodyError;
use crate::auth::{Action, Auth, Decision, Principal};
use crate::build::bases::WharfBases;
use crate::build::context::{self, ContextError, Limits};
use crate::build::buildah::{self, Buildah, Bounds};
use crate::build::exec::{Builder, Options, Platform};
use crate::build::fetch::AddUrls;
use crate::build::pack::CONTAINERFILE_ENTRY;
use crate::build::parse;
use crate::config::{BuildConfig, BuildRunner as Runner};
use crate::metadata::CreatedResource;
use crate::oci::{RepositoryName, Tag};
use crate::pullthrough::PullThrough;
use crate::repository::{Distributions, Hosted, PushError, Pushes};
use crate::tasks::TaskFailure;

/// Largest Containerfile read.
const MAX_CONTAINERFILE: u64 = 1 << 20;

/// What builds need beyond the API's own parts.
#[derive(Clone)]
pub(crate) struct BuildParts {
    pub(crate) pushes: Pushes,
    pub(crate) hosted: Hosted,
    pub(crate) pull: PullThrough,
    pub(crate) distributions: Distributions,
    pub(crate) config: BuildConfig,
}

/// The platform of this node: what a build makes unless asked otherwise.
fn own_platform() -> Platform {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    Platform { os: "linux".into(), architecture: architecture.into(), variant: None }
}

fn refused(e: PushError) -> AdminError {
    match e {
        PushError::Denied(why) => AdminError::Conflict(format!("cannot build into it: {why}")),
        other => AdminError::Internal(other.to_string()),
    }
}

/// Streams a request body into a blocking reader.
struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Unpacks the body (a tar) into `dir`, checked entry by entry.
async fn unpack_body<B>(body: B, dir: PathBuf, limits: Limits) -> Result<context::Unpacked, AdminError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BodyError>,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(8);
    // Fed here, in the request's own task (a body need not be Send);
    // the unpacking stops the feeding by dropping its end.
    let feeding = async move {
        let mut body = Box::pin(body);
        while let Some(frame) = body.frame().await {
            let item = match frame {
                Ok(f) => match f.into_data() {
                    Ok(mut data) => {
                        let n = bytes::Buf::remaining(&data);
                        Ok(bytes::Buf::copy_to_bytes(&mut data, n))
                    }
                    Err(_) => continue,
                },
                Err(e) => Err(format!("the request body: {}", e.into())),
            };
            let failed = item.is_err();
            if failed {
                return;
            }
            if tx.send(item).await.is_err() {
                // Refused part way (too large, a bad entry): the client is
                // still sending. Read on a while, in the background, so
                // it reads the refusal before the connection closes (a
                // close with its bytes unread resets the connection, and
                // the answer with it).
                tokio::spawn(linger(body));
                return;
            }
        }
    };
    let unpacking = tokio::task::spawn_blocking(move || context::unpack(BodyReader { rx, current: Bytes::new() }, &dir, limits));
    let ((), unpacked) = tokio::join!(feeding, unpacking);
    let unpacked = unpacked.map_err(|e| AdminError::Internal(e.to_string()))?;
    unpacked.map_err(|e| match e {
        ContextError::TooLarge { .. } | ContextError::TooMany { .. } => AdminError::Invalid(e.to_string()),
        ContextError::Io(m) => AdminError::Invalid(format!("build context: {m}")),
        other => AdminError::Invalid(other.to_string()),
    })
}

/// What is read of a refused request's body, at most, after the refusal.
const LINGER_BYTES: u64 = 1 << 30;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and drops what is left of `body`, up to [`LINGER_BYTES`] or
/// [`LINGER_TIME`] (nginx's lingering close, for one request).
async fn linger<B>(mut body: std::pin::Pin<Box<B>>)
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let mut read = 0u64;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                read += bytes::Buf::remaining(&data) as u64;
                if read >= LINGER_BYTES {
                    return;
                }
            }
        }
    })
    .await;
}

/// The Containerfile's text: `containerfile` in the context, or the one
/// the CLI added, or `Containerfile`, or `Dockerfile`.
fn containerfile(dir: &Path, named: Option<&str>) -> Result<String, AdminError> {
    let candidates: Vec<&str> = match named {
        Some(n) => vec![n],
        None => vec![CONTAINERFILE_ENTRY, "Containerfile", "Dockerfile"],
    };
    for name in candidates {
        let path = context::resolve(dir, name).map_err(|e| AdminError::Invalid(e.to_string()))?;
        if let Ok(file) = std::fs::File::open(&path) {
            let mut text = String::new();
            file.take(MAX_CONTAINERFILE).read_to_string(&mut text).map_err(|e| AdminError::Invalid(format!("{name}: {e}")))?;
            return Ok(text);
        }
    }
    Err(AdminError::Invalid(match named {
        Some(n) => format!("the build context has no {n}"),
        None => "the build context has no Containerfile (or Dockerfile); name another with containerfile=".into(),
    }))
}

/// Everything the request asks, checked before the body is read.
struct Asked {
    tags: Vec<String>,
    build_args: BTreeMap<String, String>,
    platforms: Vec<Platform>,
    target: Option<String>,
    containerfile: Option<String>,
    source_date_epoch: Option<u64>,
}

fn asked(query: &Query) -> Result<Asked, AdminError> {
    let invalid = AdminError::Invalid;
    let tags: Vec<String> = match query.get("tags") {
        Some(t) => t.split(',').map(str::to_owned).collect(),
        None => vec!["latest".into()],
    };
    for t in &tags {
        t.parse::<Tag>().map_err(|e| invalid(format!("tag {t:?}: {e}")))?;
    }
    let build_args = match query.get("build_args") {
        Some(j) => serde_json::from_str(j).map_err(|e| invalid(format!("build_args: a JSON object of strings: {e}")))?,
        None => BTreeMap::new(),
    };
    let platforms = match query.get("platform") {
        Some(p) => p.split(',').map(Platform::parse).collect::<Result<Vec<_>, _>>().map_err(invalid)?,
        None => vec![own_platform()],
    };
    let source_date_epoch = query
        .get("source_date_epoch")
        .map(|s| s.parse::<u64>().map_err(|_| invalid(format!("source_date_epoch {s:?}: seconds since the epoch"))))
        .transpose()?;
    Ok(Asked {
        tags,
        build_args,
        platforms,
        target: query.get("target").map(str::to_owned),
        containerfile: query.get("containerfile").map(str::to_owned),
        source_date_epoch,
    })
}

/// The OpenAPI description of [`build_repository`] (generic over the
/// body type, which utoipa's attribute does not take).
#[utoipa::path(
    post,
    path = "/api/v1/repositories/{name}/build",
    tag = "repositories",
    params(
        RepositoryPath,
        ("tags" = Option<String>, Query, description = "Tags for the image, comma-separated (default `latest`)."),
        ("build_args" = Option<String>, Query, description = "Build arguments: a JSON object of strings, URL-encoded, e.g. `{\"VERSION\":\"1.4\"}`."),
        ("platform" = Option<String>, Query, description = "`os/arch[/variant]`, comma-separated for an index over one image each (default: this node's)."),
        ("target" = Option<String>, Query, description = "The stage to build (default: the last)."),
        ("containerfile" = Option<String>, Query, description = "The Containerfile's path in the context (default: `Containerfile`, then `Dockerfile`)."),
        ("source_date_epoch" = Option<u64>, Query, description = "Seconds since the epoch for every time in the image (default: the base image's creation time, else 0)."),
    ),
    request_body(content = String, content_type = "application/x-tar",
        description = "The build context as a tar (what `wharf repository build` packs, `.containerignore` applied)."),
    responses(
        (status = 202, description = "The build runs as a task; its `step` and log show where it is; it creates one version of the push repository.", body = Task),
        (status = 400, description = "A bad parameter, a context entry refused (absolute, `..`, a device, a path through a symlink, over the size or file limits), no Containerfile, or one that does not parse (its line named).", body = ErrorBody),
        (status = 403, description = "Signed in, but neither an admin nor allowed to push the repository.", body = ErrorBody),
        (status = 409, description = "The name is a sync or pull-through repository, or served read-only.", body = ErrorBody),
        (status = 415, description = "The body is not `application/x-tar`.", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
pub(crate) fn build_repository_doc() {}

pub(crate) async fn build_repository<B>(api: &Api, name: String, query: &Query, principal: Principal, req: Request<B>) -> Reply
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BodyError>,
{
    let parts = api.build.clone().ok_or_else(|| AdminError::Internal("builds are not set up on this node".into()))?;
    let repo: RepositoryName = name.parse().map_err(|e| AdminError::Invalid(format!("repository name {name:?}: {e}")))?;
    parts.pushes.check(&repo).map_err(refused)?;
    // A repository of another kind that no distribution serves is not
    // free either: builds, like pushes, go into push repositories only.
    let lookup = name.clone();
    if let Some(existing) = api.metadata.run(move |s| s.repository(&lookup)).await? {
        if existing.kind != crate::metadata::RepositoryKind::Push {
            return Err(AdminError::Conflict(format!(
                "repository {name:?} is a {} repository: builds go into push repositories",
                existing.kind.as_str()
            )));
        }
    }
    let asked = asked(query)?;
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !content_type.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/x-tar")) {
        return Err(AdminError::UnsupportedMediaType("the build context must be sent as Content-Type: application/x-tar".into()));
    }
    let id = crate::random::hex_id().map_err(AdminError::Internal)?;
    let dir = api.storage.spool_dir().join(format!("build-{id}"));
    let (context_dir, work) = (dir.join("context"), dir.join("work"));
    for d in [&context_dir, &work] {
        std::fs::create_dir_all(d).map_err(|e| AdminError::Internal(format!("{}: {e}", d.display())))?;
    }
    let cleanup = |dir: PathBuf| async move {
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    };
    let limits = Limits { max_bytes: parts.config.max_context_size, max_files: parts.config.max_context_files };
    let prepared = async {
        let unpacked = unpack_body(req.into_body(), context_dir.clone(), limits).await?;
        let text = containerfile(&context_dir, asked.containerfile.as_deref())?;
        // The CLI's copy of a Containerfile from outside the context is
        // not part of the context.
        if let Some(dir) = Path::new(CONTAINERFILE_ENTRY).parent() {
            let _ = std::fs::remove_dir_all(context_dir.join(dir));
        }
        let file = parse::parse(&text).map_err(|e| AdminError::Invalid(e.to_string()))?;
        Ok::<_, AdminError>((unpacked, file, text))
    }
    .await;
    let (unpacked, file, text) = match prepared {
        Ok(p) => p,
        Err(e) => {
            cleanup(dir).await;
            return Err(e);
        }
    };
    // Without a runner, a RUN fails the request, not a task later.
    if parts.config.runner == Runner::None {
        let options = Options {
            build_args: asked.build_args.clone(),
            target: asked.target.clone(),
            platform: asked.platforms.first().cloned().unwrap_or_else(own_platform),
            source_date_epoch: None,
        };
        if let Some(line) = buildah::first_run(&file, &options) {
            cleanup(dir).await;
            return Err(AdminError::Invalid(format!(
                "Containerfile line {line}: RUN needs a runner: set [build] runner = \"buildah\" (with buildah installed); wharf never runs a build's commands on its host"
            )));
        }
    }
    let params = serde_json::json!({
        "tags": asked.tags, "build_args": asked.build_args, "target": asked.target,
        "platforms": asked.platforms.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "context_files": unpacked.files, "context_bytes": unpacked.bytes,
    });
    let (storage, auth) = (api.storage.clone(), api.auth.clone());
    let task = api
        .tasks
        .submit("build", Some(name.clone()), params, move |progress| async move {
            let runtime = tokio::runtime::Handle::current();
            let result = {
                let (storage, parts, dir) = (storage.clone(), parts.clone(), dir.clone());
                let progress = progress.clone();
                tokio::task::spawn_blocking(move || {
                    let counted = std::sync::atomic::AtomicBool::new(false);
                    let bounds = Bounds {
                        deadline: std::time::Instant::now() + parts.config.timeout,
                        timeout: parts.config.timeout,
                        max_output_size: parts.config.max_output_size,
                        network: parts.config.network,
                    };
                    let mut built = Vec::new();
                    for platform in &asked.platforms {
                        let bases = WharfBases {
                            distributions: parts.distributions.clone(),
                            hosted: parts.hosted.clone(),
                            pull: parts.pull.clone(),
                            storage: storage.clone(),
                            runtime: runtime.clone(),
                            may_pull: may_pull(auth.clone(), principal.clone(), parts.distributions.clone(), parts.pull.clone()),
                            add_urls: AddUrls::new(&parts.config.add_urls).unwrap_or_default(),
                            max_fetch: parts.config.max_context_size,
                        };
                        let platforms = asked.platforms.len() as u64;
                        let log = |line: &str| match step_count(line) {
                            Some(total) => {
                                // The bar counts steps, every platform's.
                                if !counted.swap(true, std::sync::atomic::Ordering::Relaxed) {
                                    progress.set_total(total * platforms);
                                }
                                progress.add(1, 0);
                                progress.step(line);
                            }
                            None => progress.log(line),
                        };
                        let options = Options {
                            build_args: asked.build_args.clone(),
                            target: asked.target.clone(),
                            platform: platform.clone(),
                            source_date_epoch: asked.source_date_epoch,
                        };
                        if asked.platforms.len() > 1 {
                            progress.log(&format!("building for {platform}"));
                        }
                        let (context, work) = (dir.join("context"), dir.join("work"));
                        let image = if parts.config.runner == Runner::Buildah && buildah::needs_runner(&file, &options) {
                            progress.log("the Containerfile has RUN: building with buildah");
                            let runner = Buildah {
                                context: &context,
                                work: &work,
                                storage: &storage,
                                bases: &bases,
                                options,
                                bounds: bounds.clone(),
                                containerfile: &text,
                                log: &log,
                            };
                            runner.run(&file)
                        } else {
                            Builder { context: &context, work: &work, storage: &storage, bases: &bases, options, log: &log }.run(&file)
                        };
                        built.push(image.map_err(|e| e.to_string())?);
                    }
                    Ok::<_, String>((built, asked.tags))
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r)
            };
            let outcome = match result {
                Ok((built, tags)) => crate::build::store(&parts.pushes, &repo, &built, &tags).await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            cleanup(dir).await;
            match outcome {
                Ok(Some(number)) => {
                    progress.log(&format!("stored as {repo} version {number}"));
                    Ok(vec![CreatedResource::RepositoryVersion { repository: repo.to_string(), number }])
                }
                Ok(None) => {
                    progress.log(&format!("{repo} holds this image already: no new version"));
                    Ok(Vec::new())
                }
                Err(e) => {
                    progress.log(&e);
                    Err(TaskFailure::Failed(e))
                }
            }
        })
        .await?;
    task_accepted(task)
}

/// The step count of a `STEP n/m: ...` line.
fn step_count(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("STEP ")?;
    let (_, total) = rest.split_once(':')?.0.split_once('/')?;
    total.parse().ok()
}

/// Whether the building caller may pull a base image's name.
fn may_pull(auth: Auth, principal: Principal, distributions: Distributions, pull: PullThrough) -> Box<dyn Fn(&str) -> bool + Send + Sync> {
    Box::new(move |name: &str| {
        let Ok(n) = name.parse::<RepositoryName>() else { return false };
        let visibility = crate::repository::visibility(&distributions, &pull, &n, None);
        matches!(auth.authorize(&principal, name, Action::Pull, visibility), Decision::Allow)
    })
}
