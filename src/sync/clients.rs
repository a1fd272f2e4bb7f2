//! Registry clients for remotes: one `Upstream` per remote, built from its
//! record and rebuilt when the record changes. Used by syncs and by the
//! registry port, which fetches on-demand blobs from the remote a sync
//! recorded as their source. Only the remote's own URL is ever reached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::{self, Credentials, RemoteClient, UpstreamConfig};
use crate::metadata::{Metadata, MetadataError, Millis, Remote};
use crate::metrics::Metrics;
use crate::oci::RepositoryName;
use crate::pullthrough::Target;
use crate::upstream::Upstream;

/// Requests at once to a remote that does not set `download_concurrency`.
pub(crate) const DEFAULT_DOWNLOAD_CONCURRENCY: u32 = 4;

#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ClientError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("remote {remote:?}: {message}")]
    Unusable { remote: String, message: String },
}

/// Clients by remote name. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Clients {
    metadata: Metadata,
    metrics: Metrics,
    /// Configured upstreams, whose credentials `credentials_from` names;
    /// replaced by a config reload. A std Mutex held to clone the Arc only.
    upstreams: Arc<Mutex<Arc<Vec<UpstreamConfig>>>>,
    // A std Mutex: held for a map lookup or insert only, never across an
    // await (building a client opens no connection).
    built: Arc<Mutex<HashMap<String, (Millis, Upstream)>>>,
}

impl Clients {
    pub(crate) fn new(metadata: Metadata, metrics: Metrics, upstreams: Vec<UpstreamConfig>) -> Clients {
        Clients { metadata, metrics, upstreams: Arc::new(Mutex::new(Arc::new(upstreams))), built: Arc::default() }
    }

    /// The upstreams after a config reload. Clients built so far are
    /// forgotten, so one borrowing an upstream's credentials picks up new
    /// ones; a fetch under way keeps the client it has.
    pub(crate) fn set_upstreams(&self, upstreams: Vec<UpstreamConfig>) {
        *self.upstreams.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(upstreams);
        self.built.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
    }

    /// The client for `remote` as it is now.
    pub(crate) fn client(&self, remote: &Remote) -> Result<Upstream, ClientError> {
        let mut built = self.built.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((at, client)) = built.get(&remote.name) {
            if *at == remote.updated_at {
                return Ok(client.clone());
            }
        }
        let client = self.build(remote)?;
        built.insert(remote.name.clone(), (remote.updated_at, client.clone()));
        Ok(client)
    }

    /// Where `remote` keeps the repository `name` (its `upstream_name`
    /// when None).
    pub(crate) fn target(&self, remote: &Remote, name: Option<&str>) -> Result<Target, ClientError> {
        let unusable = |message: String| ClientError::Unusable { remote: remote.name.clone(), message };
        let name = name.unwrap_or(&remote.upstream_name);
        let repo: RepositoryName = name.parse().map_err(|e| unusable(format!("repository name {name:?}: {e}")))?;
        Ok(Target { upstream: self.client(remote)?, repo })
    }

    /// The target for an on-demand blob source, looked up by remote name;
    /// None if the remote no longer exists.
    pub(crate) async fn source(&self, remote: &str, name: &str) -> Result<Option<Target>, ClientError> {
        let remote_name = remote.to_owned();
        let Some(remote) = self.metadata.run(move |s| s.remote(&remote_name)).await? else {
            return Ok(None);
        };
        self.target(&remote, Some(name)).map(Some)
    }

    /// A client for `remote`'s signature lookaside store (`sigstore`), if
    /// it has one: the same TLS options, never its credentials (the store
    /// is another host). Built per call; a sync asks once.
    pub(crate) fn lookaside(&self, remote: &Remote) -> Result<Option<Upstream>, ClientError> {
        let Some(sigstore) = &remote.sigstore else { return Ok(None) };
        let unusable = |message: String| ClientError::Unusable { remote: remote.name.clone(), message };
        let url: http::Uri = sigstore.parse().map_err(|e| unusable(format!("sigstore: {e}")))?;
        let cfg = config::remote_upstream(RemoteClient {
            name: format!("{}-sigstore", remote.name),
            url,
            credentials: None,
            ca_pem: remote.ca_cert.clone(),
            insecure: !remote.tls_verify,
            max_concurrent_requests: remote.download_concurrency.unwrap_or(DEFAULT_DOWNLOAD_CONCURRENCY) as usize,
        })
        .map_err(|e| unusable(e.to_string()))?;
        Upstream::new(&cfg, &self.metrics).map(Some).map_err(|e| unusable(e.to_string()))
    }

    fn build(&self, remote: &Remote) -> Result<Upstream, ClientError> {
        let unusable = |message: String| ClientError::Unusable { remote: remote.name.clone(), message };
        let url: http::Uri = remote.url.parse().map_err(|e| unusable(format!("url: {e}")))?;
        let credentials = match (&remote.credentials, &remote.credentials_from) {
            (Some(c), _) => Some(Credentials { username: c.username.clone(), password: c.password.clone() }),
            (None, Some(from)) => match self.upstreams.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().find(|u| &u.name == from) {
                Some(u) => u.credentials.clone(),
                None => return Err(unusable(format!("credentials_from {from:?} is no longer a configured upstream"))),
            },
            (None, None) => None,
        };
        let cfg = config::remote_upstream(RemoteClient {
            name: remote.name.clone(),
            url,
            credentials,
            ca_pem: remote.ca_cert.clone(),
            insecure: !remote.tls_verify,
            max_concurrent_requests: remote.download_concurrency.unwrap_or(DEFAULT_DOWNLOAD_CONCURRENCY) as usize,
        })
        .map_err(|e| unusable(e.to_string()))?;
        Upstream::new(&cfg, &self.metrics).map_err(|e| unusable(e.to_string()))
    }
}
