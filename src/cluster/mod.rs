//! Several nodes as one registry, where they must talk to each other: one
//! upstream fetch per blob for the whole cluster.
//!
//! A node about to fill a blob claims it in the shared database (the
//! `fills` table: digest, node, its cluster port). If another node holds
//! the claim, this one streams the blob from that node's fill over its
//! cluster port ([`port`]) instead of asking the upstream, verifying and
//! storing it as any fill does. A node that cannot be reached has its
//! claim taken over; one whose fill has just ended is looked for in
//! storage. When the database cannot be asked, a node fills alone (as a
//! single node would): a blob fetched twice is better than a client
//! refused.
//!
//! Node-to-node requests are signed with the cluster's shared secret
//! ([`sign`]); the cluster port serves nothing else, and the registry port
//! never serves them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::ClusterConfig;
use crate::metadata::{FillClaim, Metadata};
use crate::oci::Digest;

pub(crate) mod port;
pub(crate) mod sign;

/// The path of a fill on the cluster port.
pub(crate) fn fill_path(digest: &Digest) -> String {
    format!("/cluster/v1/fills/{digest}")
}

/// How long a peer may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a peer may take to answer with headers (it first waits for
/// its upstream's).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// Claims tried before a node fills alone.
const ATTEMPTS: usize = 3;

/// This node's side of the cluster; cheap to clone.
#[derive(Clone)]
pub(crate) struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    advertise: String,
    secret: Vec<u8>,
    metadata: Metadata,
    client: Client<HttpConnector, Empty<Bytes>>,
}

/// Where a fill gets its bytes.
pub(crate) enum Source {
    /// The upstream; `claimed`: this node holds the cluster's claim, to
    /// release when the fill ends.
    Upstream { claimed: bool },
    /// Another node's fill in progress: its response.
    Peer { node: String, size: Option<u64>, body: Incoming },
    /// The node named in the claim is not filling it (any more): the blob
    /// may be stored now; if not, [`Cluster::source`] again taking over.
    Ended { node: String },
}

/// Why a peer did not stream a fill.
#[derive(Debug, thiserror::Error)]
enum PeerError {
    /// It cannot be reached: gone, or its port closed.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// It has no fill of that digest.
    #[error("not filling it")]
    NotFilling,
    #[error("{0}")]
    Failed(String),
}

impl Cluster {
    /// The cluster side of `config`, if it has a cluster port.
    pub(crate) fn new(config: &ClusterConfig, metadata: Metadata) -> Option<Cluster> {
        let port = config.port.as_ref()?;
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(http);
        Some(Cluster {
            inner: Arc::new(Inner {
                node: config.node_name.clone(),
                advertise: port.advertise.clone(),
                secret: port.secret.clone(),
                metadata,
                client,
            }),
        })
    }

    pub(crate) fn secret(&self) -> &[u8] {
        &self.inner.secret
    }

    /// At start and at a clean stop: the claims this node holds are over.
    pub(crate) async fn forget_own_fills(&self) {
        let node = self.inner.node.clone();
        match self.inner.metadata.run(move |s| s.release_fills(&node)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(fills = n, "released this node's fill claims"),
            Err(e) => tracing::warn!(error = %e, "cannot release this node's fill claims"),
        }
    }

    /// Where the fill of `digest` gets its bytes: a claim of this node's
    /// (`taking_over` the claim of a node that stopped answering), or the
    /// fill of the node that holds the claim.
    pub(crate) async fn source(&self, digest: &Digest, mut taking_over: Option<String>) -> Source {
        for _ in 0..ATTEMPTS {
            let (d, node, address, gone) =
                (digest.clone(), self.inner.node.clone(), self.inner.advertise.clone(), taking_over.clone());
            let claim = self.inner.metadata.run(move |s| s.claim_fill(&d, &node, &address, gone.as_deref())).await;
            let (node, address) = match claim {
                Ok(FillClaim::Claimed) => return Source::Upstream { claimed: true },
                Ok(FillClaim::Ended) => continue,
                Ok(FillClaim::Filling { node, address }) => (node, address),
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "cannot coordinate the fill with the cluster; fetching it from the upstream");
                    return Source::Upstream { claimed: false };
                }
            };
            match self.open(&address, digest).await {
                Ok((size, body)) => return Source::Peer { node, size, body },
                Err(PeerError::NotFilling) => return Source::Ended { node },
                Err(PeerError::Unreachable(e)) => {
                    tracing::warn!(%digest, peer = %node, %address, error = %e, "the node filling a blob cannot be reached; taking the fill over");
                    taking_over = Some(node);
                }
                Err(PeerError::Failed(e)) => {
                    tracing::warn!(%digest, peer = %node, %address, error = %e, "the node filling a blob failed to stream it; fetching it from the upstream");
                    return Source::Upstream { claimed: false };
                }
            }
        }
        Source::Upstream { claimed: false }
    }

    /// Releases this node's claim on the fill of `digest` (its fill ended,
    /// the blob committed or not), in the background.
    pub(crate) fn release(&self, digest: &Digest) {
        let (metadata, d, node) = (self.inner.metadata.clone(), digest.clone(), self.inner.node.clone());
        tokio::spawn(async move {
            if let Err(e) = metadata.run(move |s| s.release_fill(&d, &node)).await {
                tracing::warn!(error = %e, "cannot release a fill claim; the next node to miss the blob takes it over");
            }
        });
    }

    /// Asks the node at `address` for its fill of `digest`.
    async fn open(&self, address: &str, digest: &Digest) -> Result<(Option<u64>, Incoming), PeerError> {
        let path = fill_path(digest);
        let time = crate::metadata::now_millis().max(0) as u64 / 1000;
        let signature = sign::sign(&self.inner.secret, "GET", &path, &self.inner.node, time);
        let request = Request::get(format!("http://{address}{path}"))
            .header(sign::NODE_HEADER, &self.inner.node)
            .header(sign::TIME_HEADER, time.to_string())
            .header(http::header::AUTHORIZATION, format!("{}{signature}", sign::SCHEME))
            .body(Empty::new())
            .map_err(|e| PeerError::Failed(format!("bad request to {address}: {e}")))?;
        let response = match tokio::time::timeout(ANSWER_TIMEOUT, self.inner.client.request(request)).await {
            Err(_) => return Err(PeerError::Unreachable(format!("no answer in {ANSWER_TIMEOUT:?}"))),
            Ok(Err(e)) if e.is_connect() => return Err(PeerError::Unreachable(e.to_string())),
            Ok(Err(e)) => return Err(PeerError::Failed(e.to_string())),
            Ok(Ok(response)) => response,
        };
        match response.status() {
            StatusCode::OK => {
                let size = response
                    .headers()
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                Ok((size, response.into_body()))
            }
            StatusCode::NOT_FOUND => Err(PeerError::NotFilling),
            other => Err(PeerError::Failed(format!("answered {other}"))),
        }
    }
}
