//! Which upstream a request goes to, and under which name there.
//!
//! 1. `/v2/<upstream-name>/<repo>/...`: that upstream, `<repo>` upstream.
//! 2. `?ns=<upstream-name or host>` (containerd): that upstream.
//! 3. Otherwise the `default = true` upstream.
//!
//! A name or `ns` that matches no configured upstream resolves to nothing,
//! so wharf never connects to a host a client named.

use std::sync::{Arc, RwLock};

use crate::oci::{RepositoryName, NameError};
use crate::upstream::Upstream;

/// The configured upstreams, in config order; cheap to clone, and every
/// clone sees a [`replace`](Upstreams::replace) (a reload).
#[derive(Clone)]
pub(crate) struct Upstreams {
    // A std RwLock held only to clone the Arc, never across an await: a
    // request resolves against one table, and a reload swaps in a new one
    // without waiting for requests that hold the old.
    current: Arc<RwLock<Arc<Table>>>,
}

struct Table {
    all: Vec<Upstream>,
    default: Option<usize>,
}

impl Table {
    fn new(all: Vec<Upstream>) -> Table {
        let default = all.iter().position(|u| u.config().default);
        Table { all, default }
    }

    fn by_name(&self, name: &str) -> Option<&Upstream> {
        self.all.iter().find(|u| u.config().name == name)
    }
}

/// Where a client's repository name leads.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) upstream: Upstream,
    /// The repository name at the upstream (`library/` added for Docker Hub).
    pub(crate) repo: RepositoryName,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RouteError {
    #[error("no upstream is configured for {0:?}")]
    NoUpstream(String),
    #[error(transparent)]
    Name(#[from] NameError),
}

impl Upstreams {
    pub(crate) fn new(all: Vec<Upstream>) -> Upstreams {
        Upstreams { current: Arc::new(RwLock::new(Arc::new(Table::new(all)))) }
    }

    fn table(&self) -> Arc<Table> {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Replaces the table (a reload). Requests already resolved keep the
    /// client they got; the next resolution sees only `all`.
    pub(crate) fn replace(&self, all: Vec<Upstream>) {
        let table = Arc::new(Table::new(all));
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = table;
    }

    /// Every upstream client, in config order.
    pub(crate) fn all(&self) -> Vec<Upstream> {
        self.table().all.clone()
    }

    pub(crate) fn by_name(&self, name: &str) -> Option<Upstream> {
        self.table().by_name(name).cloned()
    }

    /// Resolves a client-facing repository name (and containerd's `ns`).
    pub(crate) fn resolve(&self, name: &RepositoryName, ns: Option<&str>) -> Result<Target, RouteError> {
        let (up, prefixed) = self.locate(name, ns)?;
        let repo = match prefixed {
            true => name.split_first().1.ok_or_else(|| RouteError::NoUpstream(name.to_string()))?,
            false => name.clone(),
        };
        Ok(target(&up, repo)?)
    }

    /// The upstream `name` leads to, without building its name there (the
    /// access gate's question, asked on every request).
    pub(crate) fn upstream_for(&self, name: &RepositoryName, ns: Option<&str>) -> Result<Upstream, RouteError> {
        self.locate(name, ns).map(|(up, _)| up)
    }

    /// The upstream, and whether `name` named it by its first component.
    fn locate(&self, name: &RepositoryName, ns: Option<&str>) -> Result<(Upstream, bool), RouteError> {
        let table = self.table();
        if let Some((first, _)) = name.as_str().split_once('/') {
            if let Some(up) = table.by_name(first) {
                return Ok((up.clone(), true));
            }
        }
        if let Some(ns) = ns {
            let ns = ns.to_ascii_lowercase();
            let up = table
                .all
                .iter()
                .find(|u| u.config().name == ns || u.config().host == ns)
                .ok_or(RouteError::NoUpstream(ns))?;
            return Ok((up.clone(), false));
        }
        match table.default.and_then(|i| table.all.get(i)) {
            Some(up) => Ok((up.clone(), false)),
            None => Err(RouteError::NoUpstream(name.split_first().0.to_owned())),
        }
    }
}

fn target(up: &Upstream, repo: RepositoryName) -> Result<Target, NameError> {
    // Docker Hub keeps official images under `library/`; clients say `alpine`.
    let repo = if up.config().docker_hub && repo.component_count() == 1 {
        repo.with_prefix("library")?
    } else {
        repo
    };
    Ok(Target { upstream: up.clone(), repo })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn upstreams(toml: &str) -> Upstreams {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).unwrap();
        let cfg = Config::load(Some(&path), std::iter::empty()).unwrap();
        Upstreams::new(cfg.upstreams.iter().map(|u| Upstream::new(u, &crate::metrics::Metrics::new().unwrap()).unwrap()).collect())
    }

    fn name(s: &str) -> RepositoryName {
        s.parse().unwrap()
    }

    const TWO: &str = "[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\ndefault = true\n\
                       [[upstream]]\nname = \"quay.io\"\nurl = \"https://quay.io\"\n\
                       [[upstream]]\nname = \"local\"\nurl = \"http://127.0.0.1:5001\"\n";

    fn resolve(u: &Upstreams, n: &str, ns: Option<&str>) -> (String, String) {
        let t = u.resolve(&name(n), ns).unwrap();
        (t.upstream.config().name.clone(), t.repo.to_string())
    }

    #[test]
    fn path_prefix_then_ns_then_default() {
        let u = upstreams(TWO);
        assert_eq!(resolve(&u, "quay.io/org/app", None), ("quay.io".into(), "org/app".into()));
        assert_eq!(resolve(&u, "docker.io/alpine", None), ("docker.io".into(), "library/alpine".into()));
        assert_eq!(resolve(&u, "org/app", Some("quay.io")), ("quay.io".into(), "org/app".into()));
        assert_eq!(resolve(&u, "team/tool", Some("127.0.0.1:5001")), ("local".into(), "team/tool".into()));
        assert_eq!(resolve(&u, "alpine", None), ("docker.io".into(), "library/alpine".into()));
        assert_eq!(resolve(&u, "team/tool", None), ("docker.io".into(), "team/tool".into()));
        // A lone component equal to an upstream name is a repository, not a prefix.
        assert_eq!(resolve(&u, "local", None), ("docker.io".into(), "library/local".into()));
    }

    #[test]
    fn unknown_names_reach_no_host() {
        let u = upstreams("[[upstream]]\nname = \"local\"\nurl = \"http://127.0.0.1:5001\"\n");
        assert!(matches!(u.resolve(&name("evil.example/x"), None), Err(RouteError::NoUpstream(_))));
        assert!(matches!(u.resolve(&name("x"), Some("evil.example")), Err(RouteError::NoUpstream(_))));
        let with_default = upstreams(TWO);
        assert!(matches!(with_default.resolve(&name("x"), Some("evil.example")), Err(RouteError::NoUpstream(_))));
    }

    #[test]
    fn a_replaced_table_is_seen_by_every_clone() {
        let u = upstreams(TWO);
        let clone = u.clone();
        let local = upstreams("[[upstream]]\nname = \"local\"\nurl = \"http://127.0.0.1:5001\"\n");
        u.replace(local.all());
        assert!(clone.by_name("quay.io").is_none(), "a removed upstream is gone for every clone");
        assert_eq!(resolve(&clone, "local/team/tool", None), ("local".into(), "team/tool".into()));
        assert!(matches!(clone.resolve(&name("team/tool"), None), Err(RouteError::NoUpstream(_))), "no default any more");
    }
}
