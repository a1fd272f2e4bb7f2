//! The composition root: builds every part from the validated config, binds
//! the listeners, runs the servers, and shuts down on a signal. Handles no
//! requests itself.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{Admin, BuildParts, Readiness};
use crate::api::body::Body;
use crate::api::{PushParts, Registry};
use crate::cluster::{port::ClusterPort, Cluster};
use crate::auth::Auth;
use crate::config::{Config, ServerConfig};
use crate::gc::{Disk, DiskParts};
use crate::limits::RateLimits;
use crate::metadata::Metadata;
use crate::metrics::Metrics;
use crate::pullthrough::{PullThrough, Recorder, Upstreams};
use crate::repository::{Distributions, Hosted, Pushes};
use crate::notify::Notifier;
use crate::server::{self, Handler, Listener, Swap};
use crate::storage::Storage;
use crate::sync::{self, Clients, SyncParts, SyncRepositories, Syncer};
use crate::tasks::Tasks;
use crate::tls::ServerTls;
use crate::upload::Uploads;
use crate::upstream::Upstream;

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

/// Runs wharf until SIGTERM or SIGINT; SIGHUP reloads `config_path` (and
/// the environment's `WHARF_*` overrides).
pub(crate) async fn run(config: Config, config_path: Option<PathBuf>) -> Result<(), StartError> {
    let metrics = Metrics::new().map_err(|e| StartError::Config(format!("metrics: {e}")))?;
    let upstreams = config
        .upstreams
        .iter()
        .map(|u| Upstream::new(u, &metrics).map_err(|e| StartError::Config(format!("upstream {:?}: {e}", u.name))))
        .collect::<Result<Vec<_>, _>>()?;
    let storage = Storage::from_config(&config.storage, metrics.storage.clone())
        .await
        .map_err(|e| StartError::Storage(format!("{}: {e}", config.storage.path.display())))?;
    let metadata = Metadata::from_config(&config.storage.path, &config.metadata)
        .await
        .map_err(|e| StartError::Storage(format!("{}: {e}", Metadata::describe(&config.storage.path, &config.metadata))))?;
    let recorder = Recorder::start(metadata.clone());
    let readiness =
        Readiness::new(storage.clone(), metadata.clone(), upstreams.clone(), config.server.ready_when_disk_full);
    let pull = PullThrough::new(
        Upstreams::new(upstreams),
        storage.clone(),
        metadata.clone(),
        recorder.clone(),
        metrics.clone(),
        config.server.max_manifest_size,
    );
    let cluster = Cluster::new(&config.cluster, metadata.clone());
    if let Some(cluster) = &cluster {
        cluster.forget_own_fills().await;
    }
    let pull = pull.with_cluster(cluster.clone());
    let upstream_names = config.upstreams.iter().map(|u| u.name.clone()).collect();
    let distributions = Distributions::load(metadata.clone(), upstream_names)
        .await
        .map_err(|e| StartError::Storage(format!("{}: {e}", config.storage.path.display())))?;
    distributions.follow_changes();
    let pushes = Pushes::new(metadata.clone(), storage.clone(), distributions.clone(), pull.clone());
    // A cluster shares its upload sessions (through the bucket, with S3).
    let shared_uploads = Metadata::is_shared(&config.metadata).then(|| metadata.clone());
    let uploads = Uploads::open(storage.clone(), config.push.upload_timeout, shared_uploads).await;
    uploads.spawn_sweeper();
    let disk = Disk::new(
        DiskParts {
            storage: storage.clone(),
            metadata: metadata.clone(),
            metrics: metrics.storage.clone(),
            uploads: uploads.clone(),
            recorder: recorder.clone(),
            migrate_to: migrate_target(&config.storage, &metrics)?,
            cluster_node: (Metadata::is_shared(&config.metadata) && storage.has_bucket())
                .then(|| (config.cluster.node_name.clone(), config.cluster.lease)),
        },
        &config.storage,
    );
    disk.spawn();
    let build_pushes = pushes.clone();
    let push = PushParts { pushes, uploads, max_manifest_size: config.server.max_manifest_size };
    // Shared keys are read from the database: off the runtime's workers.
    let shared_keys = Metadata::is_shared(&config.metadata).then(|| metadata.blocking());
    let auth = {
        let (auth_config, storage_path) = (config.auth.clone(), config.storage.path.clone());
        tokio::task::spawn_blocking(move || Auth::open(&auth_config, &storage_path, shared_keys))
            .await
            .map_err(|e| StartError::Storage(format!("auth: {e}")))?
            .map_err(|e| StartError::Storage(format!("auth: {e}")))?
    };
    if Metadata::is_shared(&config.metadata) {
        follow_key_changes(&metadata, &auth);
    }
    let tasks = Tasks::start(
        metadata.clone(),
        (config.cluster.node_name.clone(), config.cluster.lease),
        config.tasks.max_parallel,
        metrics.clone(),
    )
        .await
        .map_err(|e| StartError::Storage(format!("{}: {e}", config.storage.path.display())))?;
    let clients = Clients::new(metadata.clone(), metrics.clone(), config.upstreams.clone());
    let hosted = Hosted::new(metadata.clone(), pull.clone(), clients.clone());
    let build_parts = BuildParts {
        pushes: build_pushes,
        hosted: hosted.clone(),
        pull: pull.clone(),
        distributions: distributions.clone(),
        config: config.build.clone(),
    };
    let syncer = Syncer::new(metadata.clone(), pull.clone(), clients.clone(), metrics.clone());
    let sync_repositories =
        SyncRepositories::new(metadata.clone(), config.upstreams.iter().map(|u| u.name.clone()).collect());
    tokio::spawn(sync::run_schedules(tasks.clone(), syncer.clone(), sync_repositories));
    tokio::spawn({
        let pull = pull.clone();
        crate::memory::release_after_fills(move || pull.fills_ended_if_idle())
    });
    let admin = Admin::new(
        metrics.clone(),
        metadata.clone(),
        distributions.clone(),
        SyncParts { tasks: tasks.clone(), syncer: syncer.clone() },
        (storage.clone(), disk.clone()),
        &config.upstreams,
        auth.clone(),
        readiness,
    )
    .map_err(|e| StartError::Config(format!("admin API: {e}")))?
    .with_build(build_parts.clone());

    let registry_tls = match &config.server.tls {
        Some(files) => Some(ServerTls::load(files).map_err(|e| StartError::Config(e.to_string()))?),
        None => None,
    };
    let registry_listener = bind("server.listen", config.server.listen).await?;
    let admin_listener = bind("server.admin_listen", config.server.admin_listen).await?;
    let cluster_listener = match config.cluster.port.as_ref() {
        Some(port) => Some(bind("cluster.listen", port.listen).await?),
        None => None,
    };
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
    // Before the listening line: it may warn that the cap was lowered.
    let (settings_tx, settings_rx) = watch::channel(server_settings(&config.server));
    log_reloadable(&config);
    if !auth.has_users() {
        tracing::info!("no [[auth.user]] configured: anonymous pulls only, the admin API is open, nobody may push");
    }
    // Caught from here on, before anyone can be told wharf is up: a SIGHUP
    // that arrives early must not kill the process (the default action).
    let mut signals = Signals::new();
    let cluster_addr = cluster_listener.as_ref().and_then(|l| l.local_addr().ok());
    tracing::info!(
        registry = %registry_addr,
        admin = %admin_addr,
        cluster = cluster_addr.map(|a| a.to_string()),
        tls = registry_tls.is_some(),
        storage = %config.storage.path.display(),
        objects = %storage.describe(),
        "wharf listening"
    );

    let limits = RateLimits::new(&config.limits, &metrics);
    tokio::spawn(limits.housekeeping());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut registry = Registry::new(pull.clone(), distributions.clone(), hosted, push, metrics.clone(), auth.clone()).with_limits(limits);
    if config.flatpak.index {
        // Configs are read only where the index is served: on S3 each
        // read would bring a config into the hot tier.
        crate::flatpak::configs::ConfigReader::new(metadata.clone(), storage.clone()).spawn();
        let index = crate::flatpak::served::ServedIndex::new(metadata.clone());
        index.warm();
        registry = registry.with_flatpak_index(crate::api::flatpak::FlatpakIndex { index, max_age: config.flatpak.max_age });
    }
    let registry = Arc::new(Swap::new(registry));
    let admin = Arc::new(Swap::new(admin));
    let registry_server = tokio::spawn(server::serve(
        Listener { socket: registry_listener, name: "registry", tls: registry_tls.clone() },
        registry.clone(),
        settings_rx.clone(),
        stop_rx.clone(),
        metrics.connections.clone(),
    ));
    let cluster_at_stop = cluster.clone();
    let cluster_server = match (cluster_listener, cluster) {
        (Some(socket), Some(cluster)) => Some(tokio::spawn(server::serve(
            Listener { socket, name: "cluster", tls: None },
            Arc::new(ClusterPort::new(cluster, pull.clone())),
            settings_rx.clone(),
            stop_rx.clone(),
            metrics.connections.clone(),
        ))),
        _ => None,
    };
    let admin_server = tokio::spawn(server::serve(
        Listener { socket: admin_listener, name: "admin", tls: None },
        admin.clone(),
        settings_rx,
        stop_rx,
        metrics.connections.clone(),
    ));
    let notifier = Notifier::from_env();
    notifier.ready();

    let mut live = Live {
        started: config.clone(),
        applied: config,
        config_path,
        metrics: metrics.clone(),
        pull,
        distributions,
        clients,
        auth,
        registry,
        admin,
        admin_parts: AdminParts { metadata, sync: SyncParts { tasks: tasks.clone(), syncer }, storage, disk, build: build_parts },
        registry_tls,
        server_settings: settings_tx,
    };
    // Reloads run here, one at a time, between signals: a SIGTERM during a
    // reload waits in its stream and is handled right after. This future is
    // the runtime's `block_on`, not a worker, so a reload's file reads
    // (config, certificates, CA bundles) hold up no request.
    while let Signal::Reload = signals.next().await {
        notifier.reloading();
        let status = match live.reload() {
            Ok(()) => "serving (configuration reloaded)".to_owned(),
            Err(e) => {
                tracing::error!("configuration not reloaded, the running one stays: {e}");
                format!("serving (reload failed: {e})")
            }
        };
        notifier.reloaded(&status);
    }

    notifier.stopping();
    tracing::info!(grace = ?live.applied.server.drain_grace, "shutting down: draining in-flight requests");
    let _ = stop_tx.send(true);
    let _ = tokio::join!(registry_server, admin_server);
    if let Some(cluster_server) = cluster_server {
        let _ = cluster_server.await;
    }
    // Fills still running lose their last client here and are dropped with
    // the runtime: each removes its spool file, and nothing unverified was
    // ever renamed into objects/ (the next start empties spool/ anyway).
    // Running tasks stop at their next check; none is left recorded as running.
    tasks.shutdown(TASKS_GRACE).await;
    // Fills still running here are dropped with the runtime: the other
    // nodes fill those blobs themselves from now on.
    if let Some(cluster) = cluster_at_stop {
        cluster.forget_own_fills().await;
    }
    // Everything pulled before the drain ends up in a repository version.
    recorder.flush().await;
    tracing::info!("stopped");
    Ok(())
}

/// What the admin API is built from, besides what a reload changes.
struct AdminParts {
    metadata: Metadata,
    sync: SyncParts,
    storage: Storage,
    disk: Disk,
    build: BuildParts,
}

/// The parts built from config that a reload (SIGHUP) replaces, and the
/// config they were built from.
struct Live {
    /// What the process started with: the keys only a restart applies are
    /// compared with it, so every reload names them until the restart.
    started: Config,
    /// The last config applied.
    applied: Config,
    config_path: Option<PathBuf>,
    metrics: Metrics,
    pull: PullThrough,
    distributions: Distributions,
    clients: Clients,
    auth: Auth,
    registry: Arc<Swap<Registry>>,
    admin: Arc<Swap<Admin>>,
    admin_parts: AdminParts,
    registry_tls: Option<ServerTls>,
    /// Timeouts, the per-address cap and the drain grace, read by both
    /// servers.
    server_settings: watch::Sender<server::Settings>,
}

impl Live {
    /// Reads the config again and applies it: upstreams, `[limits]`,
    /// `[auth]` users and rules, the TLS certificate, the connection
    /// timeouts and cap, the drain grace, readiness on a full disk. Every
    /// step that can fail runs before anything changes, so a config that
    /// fails leaves the running one whole. Connections stay open: each
    /// request runs on the parts current when it arrived.
    fn reload(&mut self) -> Result<(), String> {
        let new = Config::load(self.config_path.as_deref(), std::env::vars()).map_err(|e| e.to_string())?;
        // Fallible steps first.
        let current = self.pull.upstreams().all();
        let upstreams = new
            .upstreams
            .iter()
            .map(|cfg| match current.iter().find(|u| u.config() == cfg) {
                // Unchanged: keep its token cache, connections and turns.
                Some(same) => Ok(same.clone()),
                None => Upstream::new(cfg, &self.metrics).map_err(|e| format!("upstream {:?}: {e}", cfg.name)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tls = match (&self.registry_tls, &new.server.tls) {
            (Some(_), Some(files)) => Some(ServerTls::read(files).map_err(|e| e.to_string())?),
            _ => None,
        };
        let admin = Admin::new(
            self.metrics.clone(),
            self.admin_parts.metadata.clone(),
            self.distributions.clone(),
            self.admin_parts.sync.clone(),
            (self.admin_parts.storage.clone(), self.admin_parts.disk.clone()),
            &new.upstreams,
            self.auth.clone(),
            // Readiness reports the upstreams the reloaded config names.
            Readiness::new(
                self.admin_parts.storage.clone(),
                self.admin_parts.metadata.clone(),
                upstreams.clone(),
                new.server.ready_when_disk_full,
            ),
        )
        .map_err(|e| format!("admin API: {e}"))?
        .with_build(self.admin_parts.build.clone());

        // Nothing below fails.
        let names: Vec<String> = new.upstreams.iter().map(|u| u.name.clone()).collect();
        self.pull.upstreams().replace(upstreams);
        self.distributions.set_upstream_names(names);
        self.clients.set_upstreams(new.upstreams.clone());
        self.auth.reconfigure(&new.auth);
        if new.limits != self.applied.limits {
            // New buckets: a changed limit starts everyone afresh.
            let limits = RateLimits::new(&new.limits, &self.metrics);
            tokio::spawn(limits.housekeeping());
            self.registry.replace(Registry::clone(&self.registry.get()).with_limits(limits));
        }
        self.admin.replace(admin);
        if let (Some(current), Some(config)) = (&self.registry_tls, tls) {
            current.replace(config);
        }
        self.server_settings.send_replace(server_settings(&new.server));
        for key in self.started.needs_restart(&new) {
            tracing::warn!(key, "changed in the configuration; takes effect only after a restart");
        }
        log_reloadable(&new);
        tracing::info!("configuration reloaded");
        self.applied = new;
        Ok(())
    }
}

/// What the servers read from `[server]`; a reload replaces it.
fn server_settings(config: &ServerConfig) -> server::Settings {
    let descriptors = server::descriptor_limit();
    let cap = server::connection_cap(config.max_connections_per_ip, descriptors);
    if cap != config.max_connections_per_ip {
        tracing::warn!(
            configured = config.max_connections_per_ip.unwrap_or_default(),
            cap = cap.unwrap_or_default(),
            descriptors = descriptors.unwrap_or_default(),
            "server.max_connections_per_ip lowered to a quarter of the file descriptor limit, \
             so that one client address cannot take every descriptor"
        );
    }
    server::Settings {
        header_timeout: config.header_timeout,
        idle_timeout: config.idle_timeout,
        max_connections_per_ip: cap,
        drain_grace: config.drain_grace,
    }
}

/// The settings a reload can change, as they are now.
fn log_reloadable(config: &Config) {
    tracing::info!(
        header_timeout = ?config.server.header_timeout,
        idle_timeout = ?config.server.idle_timeout,
        max_connections_per_ip = config.server.max_connections_per_ip.unwrap_or_default(),
        ready_when_disk_full = config.server.ready_when_disk_full,
        "connections"
    );
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
}

async fn bind(key: &'static str, addr: std::net::SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { key, addr, source })
}

/// What a signal asks of wharf.
enum Signal {
    /// SIGHUP: read the config again.
    Reload,
    /// SIGTERM (systemd's stop) or SIGINT (Ctrl-C): drain and exit.
    Stop,
}

/// The signals wharf handles, registered once so none is missed between
/// two waits.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let watch = |kind: SignalKind, name: &str, without: &str| {
            signal(kind).map_err(|e| tracing::warn!(error = %e, "cannot watch {name}; {without}")).ok()
        };
        Signals {
            term: watch(SignalKind::terminate(), "SIGTERM", "only Ctrl-C stops wharf"),
            int: watch(SignalKind::interrupt(), "SIGINT", "Ctrl-C does not stop wharf"),
            hup: watch(SignalKind::hangup(), "SIGHUP", "config changes need a restart"),
        }
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            () = received(&mut self.term) => Signal::Stop,
            () = received(&mut self.int) => Signal::Stop,
            () = received(&mut self.hup) => Signal::Reload,
        }
    }
}

/// Resolves when `signal` arrives; never, for a signal that could not be
/// watched.
async fn received(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            if s.recv().await.is_none() {
                // The signal driver is gone (the runtime is shutting down).
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// The bucket `wharf storage migrate --to s3` copies into: `[storage.s3]`
/// while the backend is still `fs`.
fn migrate_target(cfg: &crate::config::StorageConfig, metrics: &Metrics) -> Result<Option<crate::storage::Remote>, StartError> {
    match (&cfg.backend, &cfg.s3) {
        (crate::config::Backend::Fs, Some(s3)) => crate::storage::Remote::new(s3, &cfg.path, metrics.storage.clone())
            .map(Some)
            .map_err(|e| StartError::Storage(format!("[storage.s3]: {e}"))),
        _ => Ok(None),
    }
}

/// Reads the shared signing keys again whenever another node rotates them
/// (or the change listener reconnected, or fell behind).
fn follow_key_changes(metadata: &Metadata, auth: &Auth) {
    let mut changes = metadata.changes();
    let auth = auth.clone();
    tokio::spawn(async move {
        loop {
            let reload = match changes.recv().await {
                Ok(topic) => topic == crate::metadata::changes::KEYS || topic == crate::metadata::changes::RESYNC,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if reload {
                let auth = auth.clone();
                match tokio::task::spawn_blocking(move || auth.reload_keys()).await {
                    Ok(Ok(())) => tracing::debug!("signing keys read again after a change"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the shared signing keys again"),
                    Err(e) => tracing::warn!(error = %e, "cannot read the shared signing keys again"),
                }
            }
        }
    });
}
