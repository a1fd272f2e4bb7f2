//! `[cluster]`: this node's identity among the nodes that share one
//! metadata database.

use std::time::Duration;

use serde::Deserialize;

use super::{invalid, parse_positive_duration, ConfigError};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    node_name: Option<String>,
    lease: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClusterConfig {
    /// Recorded with every task this node runs; unique per node.
    pub(crate) node_name: String,
    /// A node silent this long is gone: its unfinished tasks are failed.
    pub(crate) lease: Duration,
}

/// The lease when not set.
const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// The shortest lease: two heartbeats (every 5 s), so a node that is only
/// slow is never taken for gone.
const MIN_LEASE: Duration = Duration::from_secs(10);

/// The machine's host name, the default node name.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

impl RawCluster {
    pub(super) fn validate(self) -> Result<ClusterConfig, ConfigError> {
        let node_name = match self.node_name {
            Some(n) => n,
            None => host_name().unwrap_or_else(|| "wharf".to_owned()),
        };
        let ok = !node_name.is_empty()
            && node_name.len() <= 64
            && node_name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(invalid(
                "cluster.node_name",
                format!("{node_name:?}: 1 to 64 letters, digits, '-', '_' or '.'"),
            ));
        }
        let lease = match self.lease {
            None => DEFAULT_LEASE,
            Some(text) => parse_positive_duration("cluster.lease", &text)?,
        };
        if lease < MIN_LEASE {
            return Err(invalid("cluster.lease", format!("must be at least {}s", MIN_LEASE.as_secs())));
        }
        Ok(ClusterConfig { node_name, lease })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_name_defaults_to_the_host_name_and_is_checked() {
        let default = RawCluster::default().validate().unwrap().node_name;
        assert_eq!(default, host_name().unwrap_or_else(|| "wharf".into()));
        let named = RawCluster { node_name: Some("edge-01".into()), lease: None }.validate().unwrap();
        assert_eq!((named.node_name.as_str(), named.lease), ("edge-01", DEFAULT_LEASE));
        for bad in ["", "a b", "edge/01", &"x".repeat(65)] {
            let e = RawCluster { node_name: Some(bad.into()), lease: None }.validate().unwrap_err().to_string();
            assert!(e.starts_with("cluster.node_name: "), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_lease_outlasts_two_heartbeats() {
        let lease = |text: &str| RawCluster { node_name: Some("a".into()), lease: Some(text.into()) }.validate();
        assert_eq!(lease("1m").unwrap().lease, Duration::from_secs(60));
        assert_eq!(lease("10s").unwrap().lease, MIN_LEASE);
        for bad in ["9s", "0s", "soon"] {
            let e = lease(bad).unwrap_err().to_string();
            assert!(e.starts_with("cluster.lease: "), "{bad}: {e}");
        }
    }
}
