//! Accept loop and HTTP connections (HTTP/1.1 and h2c) for a bound
//! listener, with header timeouts and graceful drain. Knows nothing of OCI.
//! Each plain HTTP/1.x request carries a `sendfile::FileSender`, the opaque
//! capability to send stored file regions zero-copy on its connection.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::body::Body;
use crate::limits::ClientAddr;
use crate::sendfile::SendFileStream;

/// A slow or idle client gets this long to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What the server calls for each request.
pub(crate) trait Handler: Send + Sync + 'static {
    fn call(&self, req: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send;
}

/// Serves connections from `listener` until `shutdown` turns true, then
/// stops accepting and gives in-flight requests up to `grace` to finish.
pub(crate) async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Vectored writes: hyper then queues body frames as they are instead of
    // copying them into its buffer, which is what lets `SendFileStream`
    // see a zero-copy frame for what it is (see `sendfile`).
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).writev(true);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of fds and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let stream = SendFileStream::new(stream);
                let sender = stream.sender();
                let handler = handler.clone();
                let service = service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(ClientAddr(peer));
                    // Only HTTP/1.x writes one body at a time in order, which
                    // the zero-copy frames rely on; h2c streams never get it.
                    if req.version() <= Version::HTTP_11 {
                        req.extensions_mut().insert(sender.clone());
                    }
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler.call(req).await) }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(?grace, "connections still open after the grace period; closing them");
    }
}

/// Resolves once shutdown is requested (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // Drop the borrowed value here: it must not live across the select.
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}
