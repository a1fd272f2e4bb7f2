//! A small HTTP client for asserting on raw registry responses.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub struct Response {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// False when the body ended with an error (connection aborted) rather
    /// than a clean end.
    pub complete: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body))
        })
    }
    /// The first OCI error code in the body.
    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// Sends a request with no body; a fresh connection each time so tests see
/// exactly the behaviour of one request.
pub async fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Response {
    send(method, url, headers, Empty::<Bytes>::new()).await
}

/// Sends a request with `body` (an admin API JSON body, say).
pub async fn request_with_body(method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Response {
    send(method, url, headers, Full::new(Bytes::from(body))).await
}

/// Sends a request whose body is streamed from `body` (never held whole).
pub async fn request_with_stream<B>(method: &str, url: &str, headers: &[(&str, &str)], body: B) -> Response
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    send(method, url, headers, body).await
}

async fn send<B>(method: &str, url: &str, headers: &[(&str, &str)], body: B) -> Response
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    try_send(method, url, headers, body).await.unwrap_or_else(|e| panic!("{e}"))
}

/// A GET whose connection may end before any response head arrives (a
/// server that fails the body before its first byte is flushed): that
/// is an error here, not a panic.
pub async fn try_get(url: &str) -> Result<Response, String> {
    try_send("GET", url, &[], Empty::<Bytes>::new()).await
}

async fn try_send<B>(method: &str, url: &str, headers: &[(&str, &str)], body: B) -> Result<Response, String>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build_http();
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(body).expect("request");
    let resp = client.request(req).await.map_err(|e| format!("{method} {url}: {e}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    buf.extend_from_slice(&d);
                }
            }
            Err(_) => {
                complete = false;
                break;
            }
        }
    }
    Ok(Response { status, headers, body: Bytes::from(buf), complete })
}

pub async fn get(url: &str) -> Response {
    request("GET", url, &[]).await
}
