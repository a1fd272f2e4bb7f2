//! Distributions: which repository (latest or a pinned version) the registry
//! port serves at which base_path. The records live in metadata; this keeps
//! an in-memory table of them for the request path, replaced whole after
//! every change, so a repointed distribution serves its new target from the
//! next request on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::metadata::{all_pages, changes, Distribution, DistributionPatch, Metadata, MetadataError, NewDistribution, RepositoryKind};
use crate::oci::RepositoryName;

/// Longest distribution name accepted.
const MAX_NAME_LEN: usize = 64;

/// What the registry port needs to serve one distribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Served {
    pub(crate) name: String,
    pub(crate) base_path: String,
    pub(crate) repository: String,
    /// Pinned version; None serves the latest.
    pub(crate) version: Option<u64>,
    pub(crate) private: bool,
    /// Where blobs not cached yet come from: (upstream name, remote name).
    pub(crate) origin: Option<(String, String)>,
    /// The kind of the repository served: only a push repository's own
    /// distribution accepts pushes.
    pub(crate) kind: RepositoryKind,
    /// Which load of the table this came from. A repository can be
    /// deleted only once no distribution serves it, which reloads the
    /// table, so answers cached under (generation, repository, version)
    /// never meet a new repository of the same name.
    pub(crate) generation: u64,
}

#[derive(Clone)]
pub(crate) struct Distributions {
    metadata: Metadata,
    /// Replaced whole by a config reload; a std RwLock held only to clone
    /// the Arc.
    upstream_names: Arc<RwLock<Arc<Vec<String>>>>,
    // Read on every registry request, written after admin changes: a std
    // RwLock (never held across an await) is enough.
    by_base_path: Arc<RwLock<Table>>,
    /// Counts the table's loads.
    generation: Arc<AtomicU64>,
    /// The load the table in use came from (written under its lock).
    installed: Arc<AtomicU64>,
}

/// base_path → what is served there; replaced whole, never edited.
type Table = Arc<HashMap<String, Arc<Served>>>;

impl Distributions {
    /// Loads every distribution; `upstream_names` are the configured
    /// upstreams, whose path prefixes no base_path may take.
    pub(crate) async fn load(metadata: Metadata, upstream_names: Vec<String>) -> Result<Distributions, MetadataError> {
        let d = Distributions {
            metadata,
            upstream_names: Arc::new(RwLock::new(Arc::new(upstream_names))),
            by_base_path: Arc::new(RwLock::new(Arc::new(HashMap::new()))),
            generation: Arc::new(AtomicU64::new(0)),
            installed: Arc::new(AtomicU64::new(0)),
        };
        d.reload().await?;
        Ok(d)
    }

    /// Loads the table again whenever another node changes the
    /// distributions (or the change listener reconnected, or fell behind),
    /// for as long as this handle's table is in use.
    pub(crate) fn follow_changes(&self) {
        let mut changes = self.metadata.changes();
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let reload = match changes.recv().await {
                    Ok(topic) => topic == changes::DISTRIBUTIONS || topic == changes::RESYNC,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if reload {
                    match me.reload().await {
                        Ok(()) => tracing::debug!("distributions loaded again after a change (this node's or another's)"),
                        Err(e) => tracing::warn!(error = %e, "cannot load the distributions again"),
                    }
                }
            }
        });
    }

    /// The distribution served at exactly `base_path`.
    pub(crate) fn lookup(&self, base_path: &str) -> Option<Arc<Served>> {
        let table = match self.by_base_path.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        table.get(base_path).cloned()
    }

    /// Every base_path served, sorted.
    pub(crate) fn base_paths(&self) -> Vec<String> {
        let table = match self.by_base_path.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let mut out: Vec<String> = table.keys().cloned().collect();
        out.sort();
        out
    }

    pub(crate) async fn create(&self, new: NewDistribution) -> Result<Distribution, MetadataError> {
        check_name(&new.name)?;
        self.check_base_path(&new.base_path)?;
        let created = self.metadata.run(move |s| s.create_distribution(&new)).await?;
        self.reload().await?;
        Ok(created)
    }

    pub(crate) async fn update(&self, name: String, patch: DistributionPatch) -> Result<Distribution, MetadataError> {
        if let Some(b) = &patch.base_path {
            self.check_base_path(b)?;
        }
        let updated = self.metadata.run(move |s| s.update_distribution(&name, &patch)).await?;
        self.reload().await?;
        Ok(updated)
    }

    pub(crate) async fn delete(&self, name: String) -> Result<(), MetadataError> {
        self.metadata.run(move |s| s.delete_distribution(&name)).await?;
        self.reload().await
    }

    fn check_base_path(&self, base_path: &str) -> Result<(), MetadataError> {
        let parsed: RepositoryName = base_path
            .parse()
            .map_err(|e| MetadataError::Invalid(format!("base_path {base_path:?} is not a valid repository name: {e}")))?;
        let (first, _) = parsed.split_first();
        if let Some(up) = self.upstream_names().iter().find(|u| u.as_str() == first) {
            return Err(MetadataError::Conflict(format!(
                "base_path {base_path:?} collides with upstream {up:?}: paths under an upstream's name are its pull-through cache"
            )));
        }
        Ok(())
    }

    /// The configured upstreams' names: paths under them are pull-through.
    pub(crate) fn is_upstream_name(&self, first_component: &str) -> bool {
        self.upstream_names().iter().any(|u| u == first_component)
    }

    fn upstream_names(&self) -> Arc<Vec<String>> {
        self.upstream_names.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The upstreams after a config reload. Existing distributions stay as
    /// they are, even under a new upstream's name: they are looked up first,
    /// so they keep serving; only new base_paths are checked against these.
    pub(crate) fn set_upstream_names(&self, names: Vec<String>) {
        *self.upstream_names.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(names);
    }

    /// Rebuilds the in-memory table from metadata.
    pub(crate) async fn reload(&self) -> Result<(), MetadataError> {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let table = self
            .metadata
            .run(move |s| {
                let mut out = HashMap::new();
                for d in all_pages(|page| s.distributions(page))? {
                    let repository = s.repository(&d.repository)?;
                    let kind = repository.as_ref().map_or(RepositoryKind::PullThrough, |r| r.kind);
                    let origin = repository.and_then(|r| r.upstream.zip(r.remote_name));
                    let served = Served {
                        name: d.name,
                        base_path: d.base_path.clone(),
                        repository: d.repository,
                        version: d.version,
                        private: d.private,
                        origin,
                        kind,
                        generation,
                    };
                    out.insert(d.base_path, Arc::new(served));
                }
                Ok(out)
            })
            .await?;
        let mut slot = match self.by_base_path.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Loads run side by side (a push creating its repository, a
        // change heard): one that began later read later, so an earlier
        // one finishing after it must not put its older table back (a
        // push repository just created would vanish from it).
        if generation > self.installed.load(Ordering::Relaxed) {
            self.installed.store(generation, Ordering::Relaxed);
            *slot = Arc::new(table);
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), MetadataError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(MetadataError::Invalid(format!(
            "distribution name {name:?} must be 1-{MAX_NAME_LEN} characters of letters, digits, '.', '_' or '-'"
        )))
    }
}
