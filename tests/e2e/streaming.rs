//! A client that reads a response body piece by piece, for tests that act
//! while a body is still arriving (hang up, kill wharf, release a stalled
//! upstream), and a guard that turns a hang into a failure.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::http::Response;

/// How long a test waits for something that must happen before deciding it
/// never will. Only a bound on hanging: no test asserts on how fast anything
/// is, and a passing run never comes near it.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// Awaits `future`, failing the test if it has not finished within the hang
/// guard.
pub async fn within_guard<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(HANG_GUARD, future)
        .await
        .unwrap_or_else(|_| panic!("hung: {what} (nothing happened for {HANG_GUARD:?})"))
}

/// A GET whose response headers have arrived and whose body is read on demand.
pub struct Streaming {
    pub status: u16,
    pub headers: http::HeaderMap,
    body: Incoming,
    received: Vec<u8>,
    /// `Some(complete)` once the body has ended.
    ended: Option<bool>,
    connection: JoinHandle<()>,
}

/// Sends `GET url` on a fresh connection and returns once the response
/// headers have arrived.
pub async fn open(url: &str) -> Streaming {
    let uri: http::Uri = url.parse().unwrap_or_else(|e| panic!("{url}: {e}"));
    let authority = uri.authority().expect("URL has a host").to_string();
    let tcp = TcpStream::connect(&authority).await.unwrap_or_else(|e| panic!("connect {authority}: {e}"));
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.expect("HTTP/1 handshake");
    let connection = tokio::spawn(async move {
        // Ends with an error when the server aborts the body; the body
        // itself reports that to the reader.
        let _ = connection.await;
    });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = http::Request::get(path)
        .header(http::header::HOST, &authority)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    Streaming { status, headers, body: response.into_body(), received: Vec::new(), ended: None, connection }
}

impl Streaming {
    /// Reads until at least `n` body bytes have arrived or the body ended;
    /// returns how many bytes have arrived.
    pub async fn read_at_least(&mut self, n: usize) -> usize {
        while self.ended.is_none() && self.received.len() < n {
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.received.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) => self.ended = Some(false),
                None => self.ended = Some(true),
            }
        }
        self.received.len()
    }

    /// Reads the rest of the body.
    pub async fn finish(mut self) -> Response {
        self.read_at_least(usize::MAX).await;
        Response {
            status: self.status,
            headers: std::mem::take(&mut self.headers),
            body: Bytes::from(std::mem::take(&mut self.received)),
            complete: self.ended == Some(true),
        }
    }

    /// Closes the connection mid-body, as a client that gives up would.
    pub fn hang_up(self) {
        // Dropping `self` aborts the connection task, which closes the socket.
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.connection.abort();
    }
}
