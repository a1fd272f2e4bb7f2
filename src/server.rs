//! Accept loop and HTTP connections (HTTP/1.1 and h2c, or over TLS with
//! ALPN h2 and http/1.1) for a bound listener, with graceful drain. Knows
//! nothing of OCI. Each plain-TCP HTTP/1.x request carries a
//! `sendfile::FileSender`, the opaque capability to send stored file
//! regions zero-copy on its connection.
//!
//! What a client can hold without sending requests is bounded: a
//! connection is closed when it has sent no whole request head within the
//! header timeout of its accept (TLS handshake and protocol detection
//! included), or no request within the idle timeout of its last response;
//! one client address holds at most `max_connections_per_ip` on each
//! port, more are closed as they are accepted. When `accept` fails (out of
//! file descriptors), the connections open go on being served while the
//! loop backs off, and the failures are logged once per interval.

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
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::body::Body;
use crate::limits::{ClientAddr, OverTls};
use crate::metrics::{ConnectionMetrics, PortConnections};
use crate::sendfile::{FileSender, SendFileStream};
use crate::tls::ServerTls;

mod connections;

use connections::{Activity, Admission, Expired, Slot, Throttle, Tracked};

/// Log lines about floods (failed accepts, refused connections) come at
/// most this often, each with the count since the last.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The first pause after a failed accept; each further failure doubles it,
/// up to [`MAX_ACCEPT_BACKOFF`]. A freed descriptor is used within that.
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// After a timeout asked a connection to close, how long it may take
/// (an h2 GOAWAY and its acknowledgement) before it is dropped, unless a
/// request came in meanwhile. An HTTP/1 connection part-way through a
/// first request head does not end on the request alone.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// HTTP/2's limit on a request's header list. Above hyper's 16 KiB
/// default so that a head over the registry's own, lower limits reaches
/// the handler, which answers it with an error body; larger lists are
/// refused by the h2 layer itself.
const H2_MAX_HEADER_LIST: u32 = 64 << 10;

/// How the server treats connections. Read at each accept, so a reload
/// applies to connections accepted after it; `drain_grace` is read when
/// the drain starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    /// Connections one client address may hold open; None: no cap.
    pub(crate) max_connections_per_ip: Option<u32>,
    pub(crate) drain_grace: Duration,
}

/// The process's soft limit on open file descriptors, if it has one.
pub(crate) fn descriptor_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// The per-address cap in force: the configured one, but never more than
/// a quarter of the descriptor limit, so one address cannot hold every
/// descriptor whatever the limit is (the cap protects nothing once it is
/// above the limit).
pub(crate) fn connection_cap(configured: Option<u32>, descriptors: Option<u64>) -> Option<u32> {
    let configured = configured?;
    let quarter = descriptors.map_or(u64::MAX, |d| (d / 4).max(1));
    // The smaller of a u32 and anything fits a u32.
    Some(u32::try_from(u64::from(configured).min(quarter)).unwrap_or(configured))
}

/// A bound listening socket and what the server needs to serve it.
pub(crate) struct Listener {
    pub(crate) socket: TcpListener,
    /// `registry` or `admin`: in log lines and the `port` label.
    pub(crate) name: &'static str,
    /// Serve over TLS with this configuration.
    pub(crate) tls: Option<ServerTls>,
}

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

/// Serves connections from `listener` until `shutdown` turns true, then
/// stops accepting and gives in-flight requests up to the drain grace to
/// finish.
pub(crate) async fn serve<H: Handler>(
    listener: Listener,
    handler: Arc<H>,
    settings: watch::Receiver<Settings>,
    mut shutdown: watch::Receiver<bool>,
    metrics: ConnectionMetrics,
) {
    let Listener { socket, name, tls } = listener;
    let port = Arc::new(Port { name, metrics: metrics.port(name), admission: Arc::new(Admission::default()) });
    let builder = builder();
    // Every connection task holds a receiver: the drain is over when all
    // are gone.
    let (drain, _) = watch::channel(false);
    let mut failures = AcceptFailures::new();
    let mut refusals = Throttle::new(LOG_INTERVAL);
    loop {
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            () = stopped(&mut shutdown) => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => {
                failures.accepted(&port);
                if let Some(due) = refusals.due() {
                    log_refusals(&port, due, None);
                }
                conn
            }
            Err(e) => {
                port.metrics.accept_errors.inc();
                // The connections already open go on being served by
                // their own tasks meanwhile.
                let pause = failures.failed(&port, &e);
                tokio::select! {
                    () = tokio::time::sleep(pause) => continue,
                    () = stopped(&mut shutdown) => break,
                }
            }
        };
        let current = *settings.borrow();
        let Some(slot) = port.admission.admit(peer.ip(), current.max_connections_per_ip, &port.metrics.open) else {
            // Closed at once: nothing read, nothing written, the
            // descriptor given back before the next accept.
            drop(stream);
            port.metrics.refused.inc();
            if let Some(due) = refusals.note() {
                log_refusals(&port, due, Some(peer));
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let link = Link {
            port: port.clone(),
            peer,
            // The header timeout runs from here.
            activity: Activity::new(),
            drain: drain.subscribe(),
            header_timeout: current.header_timeout,
            idle_timeout: current.idle_timeout,
            _slot: slot,
        };
        match &tls {
            None => {
                let stream = SendFileStream::new(stream);
                let service = request_service(handler.clone(), &link, Some(stream.sender()), false);
                tokio::spawn(connection(builder.clone(), stream, service, link));
            }
            Some(tls) => {
                // Zero-copy needs the bare socket: TLS encrypts in
                // user space, so its requests get no FileSender.
                let service = request_service(handler.clone(), &link, None, true);
                // The handshake runs in the connection's task, so a slow
                // client never holds up the accept loop; it counts against
                // the header timeout.
                let acceptor = tls.acceptor();
                let builder = builder.clone();
                let mut link = link;
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(link.header_timeout, acceptor.accept(stream));
                    let handshake = tokio::select! {
                        handshake = handshake => handshake,
                        () = stopped(&mut link.drain) => return,
                    };
                    match handshake {
                        Ok(Ok(stream)) => connection(builder, stream, service, link).await,
                        Ok(Err(e)) => tracing::debug!(peer = %link.peer, error = %e, "TLS handshake failed"),
                        Err(_) => {
                            link.port.metrics.header_timeouts.inc();
                            tracing::debug!(peer = %link.peer, "TLS handshake timed out");
                        }
                    }
                });
            }
        }
    }
    drop(socket);
    let grace = settings.borrow().drain_grace;
    let _ = drain.send(true);
    if tokio::time::timeout(grace, drain.closed()).await.is_err() {
        tracing::warn!(port = port.name, ?grace, "connections still open after the grace period; closing them");
    }
}

/// One line for connections refused under the per-address cap: `due`
/// says how many since the last line; `last` is the client of the one
/// that made the line due, if it was one.
fn log_refusals(port: &Port, due: connections::Due, last: Option<SocketAddr>) {
    tracing::warn!(
        port = port.name,
        client = last.map(|peer| peer.ip().to_string()),
        refused = due.count,
        window_s = due.window.as_secs(),
        "connections refused: their client address held server.max_connections_per_ip already"
    );
}

/// The HTTP/1.1 and HTTP/2 settings of every connection.
fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Vectored writes: hyper then queues body frames as they are instead of
    // copying them into its buffer, which is what lets `SendFileStream`
    // see a zero-copy frame for what it is (see `sendfile`). hyper's own
    // header timeout is off: it would start only after protocol detection
    // (so never for a client that sends nothing) and would also bound the
    // wait between keep-alive requests; `Activity` does both, from the
    // accept.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(None).writev(true);
    builder.http2().max_header_list_size(H2_MAX_HEADER_LIST);
    builder
}

/// What the connections of one port share.
struct Port {
    name: &'static str,
    metrics: PortConnections,
    admission: Arc<Admission>,
}

/// One connection's ties to the server: its place under the per-address
/// cap, its activity, the drain signal, and the timeouts it was accepted
/// under.
struct Link {
    port: Arc<Port>,
    peer: SocketAddr,
    activity: Arc<Activity>,
    drain: watch::Receiver<bool>,
    header_timeout: Duration,
    idle_timeout: Duration,
    _slot: Slot,
}

/// Failed accepts: a pause that doubles with each failure in a row, and
/// log lines at most one per [`LOG_INTERVAL`].
struct AcceptFailures {
    pause: Duration,
    log: Throttle,
}

impl AcceptFailures {
    fn new() -> AcceptFailures {
        AcceptFailures { pause: Duration::ZERO, log: Throttle::new(LOG_INTERVAL) }
    }

    /// How long to wait before the next accept.
    fn failed(&mut self, port: &Port, e: &std::io::Error) -> Duration {
        if matches!(e.kind(), std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset) {
            // That client gave up before its turn; the next one is fine.
            return Duration::ZERO;
        }
        self.pause = (self.pause * 2).clamp(MIN_ACCEPT_BACKOFF, MAX_ACCEPT_BACKOFF);
        if let Some(due) = self.log.note() {
            tracing::warn!(
                port = port.name,
                error = %e,
                failures = due.count,
                window_s = due.window.as_secs(),
                retry_in_ms = self.pause.as_millis() as u64,
                "accept failed; backing off (connections already open are still served)"
            );
        }
        self.pause
    }

    fn accepted(&mut self, port: &Port) {
        self.pause = Duration::ZERO;
        // Failures not logged yet, once a line is due: a flood that ended
        // is summed up too, by the first accept after the interval.
        if let Some(due) = self.log.due() {
            tracing::warn!(
                port = port.name,
                failures = due.count,
                window_s = due.window.as_secs(),
                "accept failed; accepting again"
            );
        }
    }
}

/// The per-request service of one connection: the peer's address, whether
/// it came over TLS, and on a plain connection the zero-copy capability.
/// Each request is in flight on the connection until its response body is
/// dropped.
fn request_service<H: Handler>(
    handler: Arc<H>,
    link: &Link,
    sender: Option<FileSender>,
    over_tls: bool,
) -> impl hyper::service::Service<Request<Incoming>, Response = Response<Tracked>, Error = Infallible, Future: Send>
       + Send
       + 'static {
    let (peer, activity) = (link.peer, link.activity.clone());
    service_fn(move |mut req: Request<Incoming>| {
        let in_flight = activity.begin();
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
        async move { Ok::<_, Infallible>(handler.call(req).await.map(|body| Tracked::new(body, in_flight))) }
    })
}

/// Serves one connection, plain or TLS, until it closes, a timeout closes
/// it, or the drain does.
async fn connection<I, S>(builder: auto::Builder<TokioExecutor>, io: I, service: S, mut link: Link)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<Tracked>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut closing = false;
    let mut dropping = false;
    let ended = loop {
        tokio::select! {
            ended = conn.as_mut() => break ended,
            () = stopped(&mut link.drain), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            expired = link.activity.expired(link.header_timeout, link.idle_timeout), if !closing => {
                let (counter, what) = match expired {
                    Expired::Header => (&link.port.metrics.header_timeouts, "no request head within the header timeout"),
                    Expired::Idle => (&link.port.metrics.idle_timeouts, "no request within the idle timeout"),
                };
                counter.inc();
                tracing::debug!(port = link.port.name, peer = %link.peer, "closing the connection: {what}");
                // An idle HTTP/1 connection closes, protocol detection
                // stops, HTTP/2 says GOAWAY; one part-way through a first
                // head is dropped after the grace.
                conn.as_mut().graceful_shutdown();
                (closing, dropping) = (true, true);
            }
            () = quiet_for(&link.activity, CLOSE_GRACE), if dropping => {
                tracing::debug!(port = link.port.name, peer = %link.peer, "connection dropped after the close grace");
                return;
            }
        }
    };
    if let Err(e) = ended {
        let malformed = e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_parse);
        if malformed {
            link.port.metrics.malformed.inc();
        }
        tracing::debug!(port = link.port.name, peer = %link.peer, error = %e, malformed, "connection ended with an error");
    }
}

/// Resolves once `activity` has had no request in flight at the end of a
/// `grace` (a request that came in puts it off).
async fn quiet_for(activity: &Activity, grace: Duration) {
    loop {
        tokio::time::sleep(grace).await;
        if activity.in_flight() == 0 {
            return;
        }
    }
}

/// Resolves once shutdown is requested (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // Drop the borrowed value here: it must not live across the select.
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_under_a_quarter_of_the_descriptor_limit() {
        assert_eq!(connection_cap(Some(256), Some(65_536)), Some(256));
        assert_eq!(connection_cap(Some(256), Some(1_024)), Some(256));
        assert_eq!(connection_cap(Some(256), Some(256)), Some(64));
        assert_eq!(connection_cap(Some(256), Some(3)), Some(1));
        assert_eq!(connection_cap(Some(256), None), Some(256), "no limit: as configured");
        assert_eq!(connection_cap(None, Some(256)), None, "0 (no cap) stays no cap");
        assert_eq!(connection_cap(Some(u32::MAX), Some(u64::MAX)), Some(u32::MAX));
    }

    #[test]
    fn the_descriptor_limit_is_read() {
        // Every test process has one (unless set unlimited by hand).
        assert!(descriptor_limit().is_some_and(|n| n > 0));
    }
}
