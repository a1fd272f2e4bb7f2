//! The composition root: builds every part from the validated config, binds
//! the listeners, runs the servers, and shuts down on a signal. Handles no
//! requests itself.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::Admin;
use crate::api::body::Body;
use crate::api::{PushParts, Registry};
use crate::auth::Auth;
use crate::config::Config;
use crate::gc::{Disk, DiskParts};
use crate::limits::RateLimits;
use crate::metadata::Metadata;
use crate::metrics::Metrics;
use crate::pullthrough::{PullThrough, Recorder, Upstreams};
use crate::repository::{Distributions, Hosted, Pushes};
use crate::server::{self, Handler};
use crate::storage::Storage;
use crate::sync::{self, Clients, SyncParts, SyncRepositories, Syncer};
use crate::tasks::Tasks;
use crate::upload::Uploads;
use crate::upstream::Upstream;

/// In-flight requests get this long to finish after SIGTERM.
const DRAIN_GRACE: Duration = Duration::from_secs(30);
/// Canceled background tasks get this long to stop after the drain; any
/// still running then are recorded as failed.
const TASKS_GRACE: Duration = Duration::from_secs(10);

/// Why wharf could not start; each maps to its own exit code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind { key: &'static str, addr: std::net::SocketAddr, source: std::io::Error },
}

impl Handler for Registry {
    fn call(&self, req: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send {
        self.handle(req)
    }
}

impl Handler for Admin {
    fn call(&self, req: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send {
        self.handle(req)
    }
}

/// Runs wharf until SIGTERM or SIGINT.
pub(crate) async fn run(config: Config) -> Result<(), StartError> {
    let metrics = Metrics::new().map_err(|e| StartError::Config(format!("metrics: {e}")))?;
    let upstreams = config
        .upstreams
        .iter()
        .map(|u| Upstream::new(u, &metrics).map_err(|e| StartError::Config(format!("upstream {:?}: {e}", u.name))))
        .collect::<Result<Vec<_>, _>>()?;
    let storage = Storage::open(&config.storage.path)
        .await
        .map_err(|e| StartError::Storage(format!("{}: {e}", config.storage.path.display())))?;
    let metadata = Metadata::open(&config.storage.path)
        .await
        .map_err(|e| StartError::Storage(format!("{}: {e}", config.storage.path.display())))?;
    let recorder = Recorder::start(metadata.clone());
    let pull = PullThrough::new(
        Upstreams::new(upstreams),
        storage.clone(),
        metadata.clone(),
        recorder.clone(),
        metrics.clone(),
        config.server.max_manifest_size,
    );
    let upstream_names = config.upstreams.iter().map(|u| u.name.clone()).collect();
    let distributions = Distributions::load(metadata.clone(), upstream_names)
        .await
        .map_err(|e| StartError::Storage(format!("{}: {e}", config.storage.path.display())))?;
    let pushes = Pushes::new(metadata.clone(), storage.clone(), distributions.clone(), pull.clone());
    let uploads = Uploads::open(storage.clone(), config.push.upload_timeout).await;
    uploads.spawn_sweeper();
    let disk = Disk::new(
        DiskParts {
            storage: storage.clone(),
            metadata: metadata.clone(),
            metrics: metrics.storage.clone(),
            uploads: uploads.clone(),
            recorder: recorder.clone(),
        },
        &config.storage,
    );
    disk.spawn();
    let push = PushParts { pushes, uploads, max_manifest_size: config.server.max_manifest_size };
    let auth = Auth::open(&config.auth, &config.storage.path).map_err(|e| StartError::Storage(format!("auth: {e}")))?;
    let tasks = Tasks::start(metadata.clone(), config.tasks.max_parallel)
        .await
        .map_err(|e| StartError::Storage(format!("{}: {e}", config.storage.path.display())))?;
    let clients = Clients::new(metadata.clone(), metrics.clone(), config.upstreams.clone());
    let hosted = Hosted::new(metadata.clone(), pull.clone(), clients.clone());
    let syncer = Syncer::new(metadata.clone(), pull.clone(), clients.clone());
    let sync_repositories =
        SyncRepositories::new(metadata.clone(), config.upstreams.iter().map(|u| u.name.clone()).collect());
    tokio::spawn(sync::run_schedules(tasks.clone(), syncer.clone(), sync_repositories));
    let admin = Admin::new(
        metrics.clone(),
        metadata.clone(),
        distributions.clone(),
        SyncParts { tasks: tasks.clone(), syncer },
        (storage.clone(), disk.clone()),
        &config.upstreams,
        auth.clone(),
    )
    .map_err(|e| StartError::Config(format!("admin API: {e}")))?;

    let registry_listener = bind("server.listen", config.server.listen).await?;
    let admin_listener = bind("server.admin_listen", config.server.admin_listen).await?;
    let registry_addr = registry_listener.local_addr().map_err(|source| StartError::Bind {
        key: "server.listen",
        addr: config.server.listen,
        source,
    })?;
    let admin_addr = admin_listener.local_addr().map_err(|source| StartError::Bind {
        key: "server.admin_listen",
        addr: config.server.admin_listen,
        source,
    })?;
    for u in &config.upstreams {
        tracing::info!(name = %u.name, url = %u.url, default = u.default, tag_ttl = ?u.tag_ttl, "upstream");
    }
    tracing::info!(
        users = config.auth.users.len(),
        rules = config.auth.rules.len(),
        basic = config.auth.basic,
        service = %config.auth.service,
        "authentication"
    );
    if !auth.has_users() {
        tracing::info!("no [[auth.user]] configured: anonymous pulls only, the admin API is open, nobody may push");
    }
    tracing::info!(registry = %registry_addr, admin = %admin_addr, storage = %config.storage.path.display(), "wharf listening");

    let limits = RateLimits::new(&config.limits, &metrics);
    tokio::spawn(limits.housekeeping());
    let (stop_tx, stop_rx) = watch::channel(false);
    let registry = tokio::spawn(server::serve(
        registry_listener,
        Arc::new(Registry::new(pull, distributions.clone(), hosted, push, metrics.clone(), auth).with_limits(limits)),
        stop_rx.clone(),
        DRAIN_GRACE,
    ));
    let admin = tokio::spawn(server::serve(admin_listener, Arc::new(admin), stop_rx, DRAIN_GRACE));

    shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    let _ = stop_tx.send(true);
    let _ = tokio::join!(registry, admin);
    // Running tasks stop at their next check; none is left recorded as running.
    tasks.shutdown(TASKS_GRACE).await;
    // Everything pulled before the drain ends up in a repository version.
    recorder.flush().await;
    tracing::info!("stopped");
    Ok(())
}

async fn bind(key: &'static str, addr: std::net::SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { key, addr, source })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops wharf");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
