//! Accept loop and HTTP connections (HTTP/1.1 and h2c, or over TLS with
//! ALPN h2 and http/1.1) for a bound listener, with header and handshake
//! timeouts and graceful drain. Knows nothing of OCI. Each plain-TCP
//! HTTP/1.x request carries a `sendfile::FileSender`, the opaque capability
//! to send stored file regions zero-copy on its connection.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::body::Body;
use crate::limits::{ClientAddr, OverTls};
use crate::sendfile::{FileSender, SendFileStream};
use crate::tls::ServerTls;

/// A slow or idle client gets this long to send its request headers, and,
/// on a TLS port, to finish its handshake.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What the server calls for each request.
pub(crate) trait Handler: Send + Sync + 'static {
    fn call(&self, req: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send;
}

/// A handler a reload can replace: each request is served by the one
/// current when it arrived, so requests under way finish with what they
/// started with and connections stay open across the swap.
pub(crate) struct Swap<H> {
    // A std RwLock held only to clone the Arc, never across an await.
    current: std::sync::RwLock<Arc<H>>,
}

impl<H> Swap<H> {
    pub(crate) fn new(handler: H) -> Swap<H> {
        Swap { current: std::sync::RwLock::new(Arc::new(handler)) }
    }

    pub(crate) fn get(&self) -> Arc<H> {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub(crate) fn replace(&self, handler: H) {
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(handler);
    }
}

impl<H: Handler> Handler for Swap<H> {
    fn call(&self, req: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send {
        let handler = self.get();
        async move { handler.call(req).await }
    }
}

/// Serves connections from `listener` (over TLS when `tls` is given) until
/// `shutdown` turns true, then stops accepting and gives in-flight
/// requests up to `grace` to finish. `grace` is read when the drain
/// starts, so a reload can change it.
pub(crate) async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    tls: Option<ServerTls>,
    mut shutdown: watch::Receiver<bool>,
    grace: watch::Receiver<Duration>,
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
                let watcher = graceful.watcher();
                match &tls {
                    None => {
                        let stream = SendFileStream::new(stream);
                        let service = request_service(handler.clone(), peer, Some(stream.sender()), false);
                        tokio::spawn(connection(builder.clone(), stream, service, watcher, peer));
                    }
                    Some(tls) => {
                        // Zero-copy needs the bare socket: TLS encrypts in
                        // user space, so its requests get no FileSender.
                        let service = request_service(handler.clone(), peer, None, true);
                        // The handshake runs in the connection's task, so a
                        // slow client never holds up the accept loop; it is
                        // bounded like a request's headers.
                        let acceptor = tls.acceptor();
                        let builder = builder.clone();
                        tokio::spawn(async move {
                            match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => connection(builder, stream, service, watcher, peer).await,
                                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        });
                    }
                }
            }
            () = stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    let grace = *grace.borrow();
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(?grace, "connections still open after the grace period; closing them");
    }
}

/// The per-request service of one connection: the peer's address, whether
/// it came over TLS, and on a plain connection the zero-copy capability.
fn request_service<H: Handler>(
    handler: Arc<H>,
    peer: SocketAddr,
    sender: Option<FileSender>,
    over_tls: bool,
) -> impl hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible, Future: Send>
       + Send
       + 'static {
    service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ClientAddr(peer));
        if over_tls {
            req.extensions_mut().insert(OverTls);
        }
        // Only HTTP/1.x writes one body at a time in order, which the
        // zero-copy frames rely on; h2c streams never get it.
        if let Some(sender) = sender.as_ref().filter(|_| req.version() <= Version::HTTP_11) {
            req.extensions_mut().insert(sender.clone());
        }
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler.call(req).await) }
    })
}

/// Serves one connection, plain or TLS, until it closes or the drain
/// closes it.
async fn connection<I, S>(builder: auto::Builder<TokioExecutor>, io: I, service: S, watcher: Watcher, peer: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Resolves once shutdown is requested (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // Drop the borrowed value here: it must not live across the select.
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}
