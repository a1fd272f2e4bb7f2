//! `[cluster]`: this node's identity among the nodes that share one
//! metadata database, and its cluster port (where other nodes stream a
//! blob this node is filling).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, parse_addr, parse_positive_duration, ConfigError};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    node_name: Option<String>,
    lease: Option<String>,
    advertise: Option<String>,
    listen: Option<String>,
    secret_file: Option<PathBuf>,
}

#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ClusterConfig {
    /// Recorded with every task this node runs; unique per node.
    pub(crate) node_name: String,
    /// A node silent this long is gone: its unfinished tasks are failed.
    pub(crate) lease: Duration,
    /// The cluster port, when set: fills are coordinated across nodes.
    pub(crate) port: Option<ClusterPort>,
}

/// Where this node serves other nodes, and the secret they share.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ClusterPort {
    /// `host:port` other nodes connect to (as they can reach it).
    pub(crate) advertise: String,
    pub(crate) listen: SocketAddr,
    /// Every node's; signs and checks node-to-node requests.
    pub(crate) secret: Vec<u8>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("node_name", &self.node_name)
            .field("lease", &self.lease)
            .field("advertise", &self.port.as_ref().map(|p| &p.advertise))
            .field("listen", &self.port.as_ref().map(|p| p.listen))
            .finish_non_exhaustive()
    }
}

/// The shortest shared secret accepted, in bytes.
const MIN_SECRET: usize = 32;

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
        let port = match (self.advertise, self.listen, self.secret_file) {
            (None, None, None) => None,
            (Some(advertise), Some(listen), Some(secret_file)) => {
                let listen = parse_addr("cluster.listen", &listen)?;
                let host_port = advertise.rsplit_once(':').filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                if host_port.is_none() || advertise.contains('/') {
                    return Err(invalid("cluster.advertise", format!("{advertise:?} is not a host:port")));
                }
                let secret = std::fs::read(&secret_file)
                    .map_err(|e| invalid("cluster.secret_file", format!("{}: {e}", secret_file.display())))?;
                let secret = secret.trim_ascii().to_vec();
                if secret.len() < MIN_SECRET {
                    return Err(invalid(
                        "cluster.secret_file",
                        format!("{} holds {} bytes; at least {MIN_SECRET} (e.g. `openssl rand -hex 32`)", secret_file.display(), secret.len()),
                    ));
                }
                Some(ClusterPort { advertise, listen, secret })
            }
            _ => {
                return Err(invalid(
                    "cluster",
                    "advertise, listen and secret_file go together: set all three for a cluster port, or none",
                ))
            }
        };
        Ok(ClusterConfig { node_name, lease, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_name_defaults_to_the_host_name_and_is_checked() {
        let default = RawCluster::default().validate().unwrap().node_name;
        assert_eq!(default, host_name().unwrap_or_else(|| "wharf".into()));
        let named = RawCluster { node_name: Some("edge-01".into()), ..Default::default() }.validate().unwrap();
        assert_eq!((named.node_name.as_str(), named.lease), ("edge-01", DEFAULT_LEASE));
        for bad in ["", "a b", "edge/01", &"x".repeat(65)] {
            let e = RawCluster { node_name: Some(bad.into()), ..Default::default() }.validate().unwrap_err().to_string();
            assert!(e.starts_with("cluster.node_name: "), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_lease_outlasts_two_heartbeats() {
        let lease = |text: &str| RawCluster { node_name: Some("a".into()), lease: Some(text.into()), ..Default::default() }.validate();
        assert_eq!(lease("1m").unwrap().lease, Duration::from_secs(60));
        assert_eq!(lease("10s").unwrap().lease, MIN_LEASE);
        for bad in ["9s", "0s", "soon"] {
            let e = lease(bad).unwrap_err().to_string();
            assert!(e.starts_with("cluster.lease: "), "{bad}: {e}");
        }
    }

    #[test]
    fn the_cluster_port_needs_its_address_its_listener_and_a_long_secret() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, format!("{}\n", "ab".repeat(32))).unwrap();
        let port = |advertise: Option<&str>, listen: Option<&str>, file: Option<&std::path::Path>| {
            RawCluster {
                node_name: Some("a".into()),
                advertise: advertise.map(str::to_owned),
                listen: listen.map(str::to_owned),
                secret_file: file.map(|p| p.to_owned()),
                ..Default::default()
            }
            .validate()
        };
        let ok = port(Some("10.0.0.11:5060"), Some("0.0.0.0:5060"), Some(&secret)).unwrap().port.unwrap();
        assert_eq!((ok.advertise.as_str(), ok.listen.port(), ok.secret.len()), ("10.0.0.11:5060", 5060, 64));
        assert!(port(None, None, None).unwrap().port.is_none());
        let e = port(Some("10.0.0.11:5060"), None, Some(&secret)).unwrap_err().to_string();
        assert!(e.contains("go together"), "{e}");
        let e = port(Some("10.0.0.11"), Some("0.0.0.0:5060"), Some(&secret)).unwrap_err().to_string();
        assert!(e.starts_with("cluster.advertise: "), "{e}");
        std::fs::write(&secret, "short").unwrap();
        let e = port(Some("edge-01:5060"), Some("0.0.0.0:5060"), Some(&secret)).unwrap_err().to_string();
        assert!(e.starts_with("cluster.secret_file: ") && e.contains("at least 32"), "{e}");
        let e = port(Some("edge-01:5060"), Some("0.0.0.0:5060"), Some(&dir.path().join("none"))).unwrap_err().to_string();
        assert!(e.starts_with("cluster.secret_file: "), "{e}");
    }
}
