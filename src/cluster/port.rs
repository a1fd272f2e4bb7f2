//! The cluster port: what other nodes of the cluster ask this one. One
//! request exists: `GET /cluster/v1/fills/<digest>`, the bytes of a fill
//! in progress here, streamed as they arrive (the last byte once the fill
//! verified the digest, as for any client). Every request must be signed
//! with the shared secret ([`super::sign`]); the answer is a plain
//! status otherwise.

use futures_util::StreamExt;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::sign;
use super::Cluster;
use crate::api::body::{self, Body};
use crate::oci::Digest;
use crate::pullthrough::{Piece, PullThrough};
use crate::storage;

/// The cluster port's handler.
pub(crate) struct ClusterPort {
    cluster: Cluster,
    pull: PullThrough,
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(body::full(format!("{text}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn now_secs() -> u64 {
    crate::metadata::now_millis().max(0) as u64 / 1000
}

impl ClusterPort {
    pub(crate) fn new(cluster: Cluster, pull: PullThrough) -> ClusterPort {
        ClusterPort { cluster, pull }
    }

    pub(crate) async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let Some(digest) = path.strip_prefix("/cluster/v1/fills/").and_then(|d| d.parse::<Digest>().ok()) else {
            return plain(StatusCode::NOT_FOUND, "not found");
        };
        if req.method() != Method::GET {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        }
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let checked = match (header(sign::NODE_HEADER), header(sign::TIME_HEADER), header(header::AUTHORIZATION.as_str())) {
            (Some(node), Some(time), Some(auth)) => match (time.parse::<u64>(), auth.strip_prefix(sign::SCHEME)) {
                (Ok(time), Some(signature)) => {
                    sign::verify(self.cluster.secret(), "GET", &path, node, time, signature, now_secs()).map(|()| node)
                }
                _ => Err(sign::SignatureError::Bad),
            },
            _ => Err(sign::SignatureError::Missing),
        };
        let peer = match checked {
            Ok(node) => node.to_owned(),
            Err(e) => {
                tracing::warn!(path = %path, error = %e, "cluster port: request refused");
                return plain(StatusCode::UNAUTHORIZED, &format!("unauthorized: {e}"));
            }
        };
        let Some(fill) = self.pull.fill_in_flight(&digest) else {
            return plain(StatusCode::NOT_FOUND, "not filling it");
        };
        let size = match fill.ready().await {
            Ok(size) => size,
            Err(e) => return plain(StatusCode::BAD_GATEWAY, &format!("the fill failed: {e}")),
        };
        tracing::debug!(%digest, peer, "streaming a fill to another node");
        let bytes = fill.body(0, None).then(|piece| async move {
            match piece {
                Ok(Piece::Received(bytes)) => Ok(bytes),
                Ok(Piece::OnDisk { file, start, end }) => storage::read_exact_at(file, start, (end - start) as usize)
                    .await
                    .map_err(|e| body::BodyError::from(e.to_string())),
                Err(e) => Err(body::BodyError::from(e.to_string())),
            }
        });
        let mut response = Response::new(body::stream(bytes));
        if let Some(size) = size {
            response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        }
        response
    }
}

impl crate::server::Handler for ClusterPort {
    fn call(&self, req: Request<Incoming>) -> impl std::future::Future<Output = Response<Body>> + Send {
        self.handle(req)
    }
}
