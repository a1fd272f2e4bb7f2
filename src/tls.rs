//! The registry port's TLS: the certificate and key from `server.tls_cert`
//! and `server.tls_key`, offered with ALPN `h2` and `http/1.1`, and swapped
//! on a reload so that new handshakes get the new certificate while
//! connections already up keep theirs. Owns no sockets (the server does the
//! handshakes) and no HTTP.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// Why the certificate or key could not be used; names the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    #[error("server.tls_cert {path}: {message}")]
    Cert { path: String, message: String },
    #[error("server.tls_key {path}: {message}")]
    Key { path: String, message: String },
    #[error("server.tls_cert and server.tls_key: {0}")]
    Pair(String),
}

/// The TLS settings new connections are accepted with; cheap to clone,
/// every clone sees a [`reload`](ServerTls::reload).
#[derive(Clone)]
pub(crate) struct ServerTls {
    // A std RwLock held only to clone the Arc: a handshake takes the config
    // current when it starts, and a reload never waits for handshakes.
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl ServerTls {
    /// Reads the files; fails (naming the file) when either is unreadable,
    /// empty, or the key does not belong to the certificate.
    pub(crate) fn load(files: &TlsFiles) -> Result<ServerTls, TlsError> {
        Ok(ServerTls { current: Arc::new(RwLock::new(server_config(files)?)) })
    }

    /// Reads the files into what [`replace`](ServerTls::replace) takes, so
    /// that a reload can check everything before it changes anything.
    pub(crate) fn read(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
        server_config(files)
    }

    /// New handshakes use `config`; connections already up keep theirs.
    pub(crate) fn replace(&self, config: Arc<ServerConfig>) {
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
    }

    /// What the next handshake uses.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone())
    }
}

/// The ring provider is named explicitly, as for the upstream clients, so
/// nothing depends on a process-wide default.
fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Pair(format!("TLS protocol versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Pair(e.to_string()))?;
    // h2 first: clients that speak it get multiplexed blob and manifest
    // requests on one connection.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |message: String| TlsError::Cert { path: path.display().to_string(), message };
    let file = File::open(path).map_err(|e| fail(e.to_string()))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(fail("holds no CERTIFICATE".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let fail = |message: String| TlsError::Key { path: path.display().to_string(), message };
    let file = File::open(path).map_err(|e| fail(e.to_string()))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|e| fail(format!("not PEM: {e}")))?
        .ok_or_else(|| fail("holds no PRIVATE KEY".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, cert: &str, key: &str) -> TlsFiles {
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        TlsFiles { cert: c, key: k }
    }

    #[test]
    fn missing_and_empty_files_are_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsFiles { cert: dir.path().join("nope.pem"), key: dir.path().join("nope.key") };
        let e = ServerTls::load(&missing).err().unwrap().to_string();
        assert!(e.starts_with("server.tls_cert") && e.contains("nope.pem"), "{e}");
        let empty = files(dir.path(), "", "");
        let e = ServerTls::load(&empty).err().unwrap().to_string();
        assert!(e.contains("holds no CERTIFICATE"), "{e}");
    }
}
