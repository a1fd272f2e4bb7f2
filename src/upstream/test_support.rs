//! A tiny in-process registry stand-in for the upstream client's tests: an
//! HTTP/1.1 server on `127.0.0.1:0` that records every request it sees and
//! answers through a closure.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::{Credentials, UpstreamConfig};

pub(super) type TestBody = BoxBody<Bytes, Infallible>;

/// One request as the server received it.
#[derive(Clone, Debug)]
pub(super) struct Seen {
    pub(super) method: Method,
    pub(super) uri: Uri,
    pub(super) headers: HeaderMap,
}

impl Seen {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(super) fn path(&self) -> &str {
        self.uri.path()
    }
}

pub(super) struct TestServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    pub(super) async fn start(handler: impl Fn(&Seen) -> Response<TestBody> + Send + Sync + 'static) -> TestServer {
        TestServer::start_async(move |seen| {
            let response = handler(&seen);
            Box::pin(async move { response })
        })
        .await
    }

    /// Like [`TestServer::start`], for handlers that must wait for something.
    pub(super) async fn start_async(
        handler: impl Fn(Seen) -> Pin<Box<dyn Future<Output = Response<TestBody>> + Send>> + Send + Sync + 'static,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let recorded = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorded = recorded.clone();
                let handler = handler.clone();
                let service = service_fn(move |request: Request<Incoming>| {
                    let seen = Seen {
                        method: request.method().clone(),
                        uri: request.uri().clone(),
                        headers: request.headers().clone(),
                    };
                    recorded.lock().unwrap().push(seen.clone());
                    let response = handler(seen);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestServer { addr, seen, task }
    }

    pub(super) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(super) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A server that accepts connections and never answers, holding them open.
pub(super) async fn silent_server() -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (url, task)
}

pub(super) fn respond(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<TestBody> {
    respond_with(status, headers, Full::new(body.into()).boxed())
}

pub(super) fn respond_with(status: u16, headers: &[(&str, &str)], body: TestBody) -> Response<TestBody> {
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(*name, *value);
    }
    response.body(body).unwrap()
}

/// Frames sent one after another with no declared length (so chunked), then,
/// if `stall`, a wait that never ends instead of the end of the body.
pub(super) fn frames(chunks: &[&'static [u8]], stall: bool) -> TestBody {
    Frames { chunks: chunks.iter().map(|c| Bytes::from_static(c)).collect(), stall }.boxed()
}

struct Frames {
    chunks: std::collections::VecDeque<Bytes>,
    stall: bool,
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.chunks.pop_front() {
            Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            // Never woken: the stall lasts until the server task is dropped.
            None if self.stall => Poll::Pending,
            None => Poll::Ready(None),
        }
    }
}

/// A config as validation would produce it, with test-sized timeouts.
pub(super) fn config(url: &str) -> UpstreamConfig {
    let url: Uri = url.parse().unwrap();
    UpstreamConfig {
        name: "test".into(),
        host: url.authority().unwrap().to_string(),
        url,
        default: false,
        docker_hub: false,
        credentials: None,
        tag_ttl: Duration::from_secs(300),
        ca_file: None,
        ca_pem: None,
        insecure: false,
        connect_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        fill_timeout: Duration::from_secs(60),
        retries: 2,
        retain_versions: None,
        max_concurrent_requests: 32,
        anonymous_pull: true,
    }
}

pub(super) fn credentials(username: &str, password: &str) -> Option<Credentials> {
    Some(Credentials { username: username.into(), password: password.into() })
}
