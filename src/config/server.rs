//! The `[server]` section: the listeners, TLS, the drain, how long a
//! connection may sit without a request, how many one client address may
//! hold open, and whether a full disk makes wharf unready. Raw shape and
//! its validation only; the server itself lives in `crate::server`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, parse_addr, parse_duration, parse_positive_duration, parse_size, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    listen: String,
    admin_listen: String,
    max_manifest_size: String,
    drain_grace: String,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    header_timeout: String,
    idle_timeout: String,
    max_connections_per_ip: u32,
    ready_when_disk_full: bool,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "0.0.0.0:5000".into(),
            admin_listen: "127.0.0.1:5050".into(),
            max_manifest_size: "4MiB".into(),
            drain_grace: "30s".into(),
            tls_cert: None,
            tls_key: None,
            header_timeout: "30s".into(),
            // Longer than the 90 s idle pool timeout of Go's HTTP clients
            // (docker, containerd, podman, skopeo): the client drops an idle
            // connection first, so it never sends a request down one the
            // server is closing at that moment.
            idle_timeout: "120s".into(),
            max_connections_per_ip: 256,
            ready_when_disk_full: true,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct ServerConfig {
    pub(crate) listen: SocketAddr,
    pub(crate) admin_listen: SocketAddr,
    pub(crate) max_manifest_size: usize,
    /// After SIGTERM, how long in-flight requests may take to finish before
    /// their connections are closed.
    pub(crate) drain_grace: Duration,
    /// Serve the registry port over TLS with these PEM files.
    pub(crate) tls: Option<TlsFiles>,
    /// A new connection that has not sent a whole request head (after its
    /// TLS handshake, if any) this long after it was accepted is closed.
    pub(crate) header_timeout: Duration,
    /// A connection with no request in flight this long after its last
    /// response ended is closed (HTTP/1.1 keep-alive and HTTP/2 alike).
    pub(crate) idle_timeout: Duration,
    /// Connections one client address (an IPv6 client by its /64) may hold
    /// open on each port; None: no cap.
    pub(crate) max_connections_per_ip: Option<u32>,
    /// A spool write failing for want of space leaves `/readyz` at 200,
    /// reported as degraded (pulls of what is cached keep working).
    pub(crate) ready_when_disk_full: bool,
}

/// `server.tls_cert` and `server.tls_key`: PEM files read at start and
/// again on every reload (SIGHUP), so a renewed certificate needs no
/// restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    /// The certificate chain, leaf first.
    pub(crate) cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub(crate) key: PathBuf,
}

impl RawServer {
    pub(super) fn validate(self) -> Result<ServerConfig, ConfigError> {
        let server = ServerConfig {
            listen: parse_addr("server.listen", &self.listen)?,
            admin_listen: parse_addr("server.admin_listen", &self.admin_listen)?,
            max_manifest_size: parse_size("server.max_manifest_size", &self.max_manifest_size)? as usize,
            drain_grace: parse_duration("server.drain_grace", &self.drain_grace)?,
            tls: match (self.tls_cert, self.tls_key) {
                (None, None) => None,
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                (Some(_), None) => return Err(invalid("server.tls_key", "is required with server.tls_cert")),
                (None, Some(_)) => return Err(invalid("server.tls_cert", "is required with server.tls_key")),
            },
            header_timeout: parse_positive_duration("server.header_timeout", &self.header_timeout)?,
            idle_timeout: parse_positive_duration("server.idle_timeout", &self.idle_timeout)?,
            max_connections_per_ip: Some(self.max_connections_per_ip).filter(|&n| n > 0),
            ready_when_disk_full: self.ready_when_disk_full,
        };
        if server.listen == server.admin_listen && server.listen.port() != 0 {
            return Err(invalid("server.admin_listen", "must differ from server.listen"));
        }
        Ok(server)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::tests::{load_str as load, refused};
    use crate::config::Config;


    #[test]
    fn connections_are_bounded_by_default_and_the_example_says_so() {
        let defaults = Config::load(None, std::iter::empty()).unwrap().server;
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/wharf.toml");
        let documented = Config::load(Some(&example), std::iter::empty()).unwrap().server;
        for c in [defaults, documented] {
            assert_eq!(c.header_timeout, Duration::from_secs(30));
            assert_eq!(c.idle_timeout, Duration::from_secs(120));
            assert_eq!(c.max_connections_per_ip, Some(256));
            assert!(c.ready_when_disk_full);
        }
    }

    #[test]
    fn the_connection_keys_are_read_and_overridable_from_the_environment() {
        let toml = "[server]\nheader_timeout = \"5s\"\nidle_timeout = \"1m\"\nmax_connections_per_ip = 8\n\
                    ready_when_disk_full = false\n";
        let c = load(toml, &[]).unwrap().server;
        assert_eq!((c.header_timeout, c.idle_timeout), (Duration::from_secs(5), Duration::from_secs(60)));
        assert_eq!(c.max_connections_per_ip, Some(8));
        assert!(!c.ready_when_disk_full);
        let c = load(toml, &[("WHARF_SERVER__MAX_CONNECTIONS_PER_IP", "0")]).unwrap().server;
        assert_eq!(c.max_connections_per_ip, None, "0 turns the cap off");
    }

    #[test]
    fn bad_connection_keys_name_their_key() {
        for (line, key) in [
            ("header_timeout = \"0s\"", "server.header_timeout"),
            ("header_timeout = \"soon\"", "server.header_timeout"),
            ("idle_timeout = \"0s\"", "server.idle_timeout"),
            ("max_connections_per_ip = -1", "max_connections_per_ip"),
            ("ready_when_disk_full = \"maybe\"", "ready_when_disk_full"),
        ] {
            let e = refused(&format!("[server]\n{line}\n"));
            assert!(e.contains(key), "want {key}: {e}");
        }
    }
}
