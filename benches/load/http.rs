//! The benchmark's HTTP client side: an image pull as podman does it
//! (manifest, then every blob in parallel), blob downloads, a closed-loop
//! request load on a fixed number of connections, and pushes of small images
//! through the registry API (with Basic credentials where the registry wants
//! them). Plain http and https alike: an https server is trusted only
//! through the CA file given with `--ca-file`.
//!
//! Bodies are counted and dropped, never copied, hashed or inspected: the
//! client shares the machine's cores with the server it measures. Whether the
//! bytes are right is the end-to-end tests' business; here a blob only has to
//! be as long as its descriptor says, and a load's answer as long as asked.
//! (The registry index's probes, `get_body`, read whole answers to look for
//! an image in them; no load runs meanwhile.)

use std::fs::File;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, LOCATION};
use hyper::{Method, Request, Response, StatusCode};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::image::{SmallImage, MANIFEST_MEDIA_TYPE};
use crate::{fail, Result};

/// What podman sends when it asks for a manifest.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// A keep-alive connection pool to one server, plain or TLS.
pub(crate) type Pool = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// What https connections trust: the certificates of one CA file (the run's
/// throwaway CA), nothing else. Without a file nothing is trusted and only
/// plain http works.
#[derive(Clone)]
pub(crate) struct Trust(Arc<rustls::ClientConfig>);

impl Trust {
    pub(crate) fn load(ca_file: Option<&Path>) -> Result<Trust> {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(path) = ca_file {
            let file = File::open(path).map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
            for cert in rustls_pemfile::certs(&mut BufReader::new(file)) {
                let cert = cert.map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
                roots.add(cert).map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                fail!("--ca-file {}: no PEM certificate in it", path.display());
            }
        }
        // ring, as wharf uses, named here so no process-wide default is needed.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Trust(Arc::new(config)))
    }
}

/// A pool that keeps up to `size` idle connections, so that `size`
/// concurrent requests reuse their connections from one round to the next.
///
/// HTTP/1.1 only, over TLS too (no h2 offered): a pull then opens one
/// connection per blob in flight on either scheme, so the direct pull over
/// TLS differs from the plain one by TLS alone.
pub(crate) fn pool(size: usize, trust: &Trust) -> Pool {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    // The TLS connector wraps this one and needs https URLs let through.
    http.enforce_http(false);
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config((*trust.0).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(size)
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

/// Sends `req`, following redirects (a registry may send blob reads to
/// storage elsewhere).
async fn send(pool: &Pool, req: Request<Full<Bytes>>) -> Result<Response<Incoming>> {
    let (parts, body) = req.into_parts();
    let mut uri = parts.uri.to_string();
    for _ in 0..5 {
        let mut builder = Request::builder().method(parts.method.clone()).uri(&uri);
        for (name, value) in &parts.headers {
            builder = builder.header(name, value);
        }
        let resp = pool.request(builder.body(body.clone())?).await?;
        if !resp.status().is_redirection() {
            return Ok(resp);
        }
        let Some(location) = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()) else {
            return Ok(resp);
        };
        uri = resolve(&uri, location)?;
        discard(resp.into_body()).await?;
    }
    fail!("more than 5 redirects for {}", parts.uri)
}

/// Reads a body to its end, counting its bytes.
pub(crate) async fn discard(mut body: Incoming) -> Result<u64> {
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            n += data.len() as u64;
        }
    }
    Ok(n)
}

/// `location` (absolute, or a path on the same server) relative to `base`.
fn resolve(base: &str, location: &str) -> Result<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Ok(location.to_owned());
    }
    if !location.starts_with('/') {
        fail!("relative Location {location:?} is not supported");
    }
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let origin_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    Ok(format!("{}{location}", &base[..origin_end]))
}

fn get(url: &str, accept: Option<&str>) -> Result<Request<Full<Bytes>>> {
    let mut builder = Request::get(url);
    if let Some(accept) = accept {
        builder = builder.header(ACCEPT, accept);
    }
    Ok(builder.body(Full::new(Bytes::new()))?)
}

async fn expect_status(resp: Response<Incoming>, want: StatusCode, what: &str) -> Result<Response<Incoming>> {
    if resp.status() == want {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    fail!("{what}: expected {want}, got {status}: {body}")
}

/// Bytes moved by one image pull.
#[derive(Default, Clone, Copy)]
pub(crate) struct Pulled {
    pub(crate) bytes: u64,
    pub(crate) blobs: usize,
}

/// Pulls `repo:reference` from `base` (`http://host:port` or `https://…`) as podman does:
/// the manifest (the first child's if it is an index), then the config and
/// every layer at once.
pub(crate) async fn pull_image(pool: &Pool, base: &str, repo: &str, reference: &str) -> Result<Pulled> {
    let (mut manifest, mut bytes) = get_manifest(pool, base, repo, reference).await?;
    if let Some(children) = manifest.get("manifests").and_then(|m| m.as_array()) {
        let Some(child) = children.first().and_then(|c| c["digest"].as_str()).map(str::to_owned) else {
            fail!("{repo}:{reference}: an index with no manifests");
        };
        let (m, n) = get_manifest(pool, base, repo, &child).await?;
        (manifest, bytes) = (m, bytes + n);
    }
    let descriptors = std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().into_iter().flatten())
        .map(|d| match (d["digest"].as_str(), d["size"].as_u64()) {
            (Some(digest), Some(size)) => Ok((digest.to_owned(), size)),
            _ => fail!("{repo}:{reference}: a descriptor without digest or size: {d}"),
        })
        .collect::<Result<Vec<_>>>()?;
    let mut fetches = JoinSet::new();
    for (digest, size) in descriptors {
        let pool = pool.clone();
        let url = format!("{base}/v2/{repo}/blobs/{digest}");
        fetches.spawn(async move { fetch_blob(&pool, &url, Some(size)).await });
    }
    let mut blobs = 0;
    while let Some(fetched) = fetches.join_next().await {
        bytes += fetched??;
        blobs += 1;
    }
    Ok(Pulled { bytes, blobs })
}

async fn get_manifest(pool: &Pool, base: &str, repo: &str, reference: &str) -> Result<(serde_json::Value, u64)> {
    let url = format!("{base}/v2/{repo}/manifests/{reference}");
    let resp = send(pool, get(&url, Some(MANIFEST_ACCEPT))?).await?;
    let resp = expect_status(resp, StatusCode::OK, &format!("GET {url}")).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    let manifest = serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not a manifest: {e}"))?;
    Ok((manifest, body.len() as u64))
}

/// GETs one blob and returns its length, checked against `size` if given.
pub(crate) async fn fetch_blob(pool: &Pool, url: &str, size: Option<u64>) -> Result<u64> {
    let resp = send(pool, get(url, None)?).await?;
    let resp = expect_status(resp, StatusCode::OK, &format!("GET {url}")).await?;
    let n = discard(resp.into_body()).await.map_err(|e| format!("GET {url}: body: {e}"))?;
    match size {
        Some(size) if size != n => fail!("GET {url}: {n} bytes, the descriptor says {size}"),
        _ => Ok(n),
    }
}

/// What a closed-loop load measured.
pub(crate) struct LoadStats {
    pub(crate) requests: u64,
    /// Answers not as expected: not 2xx (or not the status asked for), or
    /// not as long as asked.
    pub(crate) unexpected: u64,
    /// Body bytes of every answer.
    pub(crate) body_bytes: u64,
    pub(crate) elapsed: Duration,
    /// Every request's latency, in microseconds, sorted.
    pub(crate) latencies_us: Vec<u32>,
}

/// One load: `connections` HTTP/1.1 connections, each sending `method path`
/// back to back for `duration` after one untimed warm-up request.
pub(crate) struct LoadSpec {
    pub(crate) addr: SocketAddr,
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) accept: Option<String>,
    /// Further request headers.
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    /// The status every answer must have; without it, any 2xx.
    pub(crate) expect_status: Option<StatusCode>,
    /// The body length every answer must have.
    pub(crate) expect_bytes: Option<u64>,
    pub(crate) connections: usize,
    pub(crate) duration: Duration,
}

/// Runs `spec`. The clock starts once every connection is open and warm.
pub(crate) async fn load(spec: LoadSpec) -> Result<LoadStats> {
    let spec = Arc::new(spec);
    let ready = Arc::new(Barrier::new(spec.connections + 1));
    let mut workers = JoinSet::new();
    for _ in 0..spec.connections {
        let (spec, ready) = (Arc::clone(&spec), Arc::clone(&ready));
        workers.spawn(async move {
            let outcome = load_connection(&spec, &ready).await;
            if outcome.is_err() {
                // Fail the load, but never leave the others at the barrier.
                ready.wait().await;
            }
            outcome
        });
    }
    ready.wait().await;
    let started = Instant::now();
    let mut stats =
        LoadStats { requests: 0, unexpected: 0, body_bytes: 0, elapsed: Duration::ZERO, latencies_us: Vec::new() };
    let mut first_error = None;
    while let Some(done) = workers.join_next().await {
        match done? {
            Ok(Connection { latencies, unexpected, body_bytes }) => {
                stats.requests += latencies.len() as u64;
                stats.unexpected += unexpected;
                stats.body_bytes += body_bytes;
                stats.latencies_us.extend(latencies);
            }
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    stats.elapsed = started.elapsed();
    if let Some(e) = first_error {
        return Err(e);
    }
    stats.latencies_us.sort_unstable();
    Ok(stats)
}

/// What one connection of a load saw.
struct Connection {
    latencies: Vec<u32>,
    unexpected: u64,
    body_bytes: u64,
}

/// One connection's loop.
async fn load_connection(spec: &LoadSpec, ready: &Barrier) -> Result<Connection> {
    let stream = TcpStream::connect(spec.addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Its errors surface as failed requests below.
        let _ = connection.await;
    });
    let host = HeaderValue::from_str(&spec.addr.to_string())?;
    let accept = spec.accept.as_deref().map(HeaderValue::from_str).transpose()?;
    let request = || {
        let mut builder = Request::builder().method(spec.method.clone()).uri(&spec.path).header(HOST, host.clone());
        if let Some(accept) = &accept {
            builder = builder.header(ACCEPT, accept.clone());
        }
        for (name, value) in &spec.headers {
            builder = builder.header(name, value);
        }
        builder.body(Full::new(Bytes::new()))
    };

    let warm_up = sender.send_request(request()?).await?;
    discard(warm_up.into_body()).await?;
    ready.wait().await;

    let deadline = Instant::now() + spec.duration;
    let mut seen = Connection { latencies: Vec::with_capacity(1 << 16), unexpected: 0, body_bytes: 0 };
    while Instant::now() < deadline {
        let req = request()?;
        let sent = Instant::now();
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let status_ok = match spec.expect_status {
            Some(want) => resp.status() == want,
            None => resp.status().is_success(),
        };
        let n = discard(resp.into_body()).await?;
        seen.latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
        seen.body_bytes += n;
        if !status_ok || spec.expect_bytes.is_some_and(|want| n != want) {
            seen.unexpected += 1;
        }
    }
    Ok(seen)
}

/// How a push reaches the registry.
#[derive(Clone, Default)]
pub(crate) struct PushOptions {
    /// Sent with every request of the push (Basic credentials).
    pub(crate) authorization: Option<HeaderValue>,
    /// Each blob in one request (`POST …/blobs/uploads/?digest=`) rather
    /// than a POST and a PUT.
    pub(crate) monolithic: bool,
}

/// Pushes `image` to `base` as `repo:tag` through the registry API: each
/// blob as a monolithic upload (POST, then PUT with the digest; or the
/// POST alone, with `options.monolithic`), then the manifest.
pub(crate) async fn push_image(
    pool: &Pool,
    base: &str,
    repo: &str,
    tag: &str,
    image: &SmallImage,
    options: &PushOptions,
) -> Result<()> {
    let with_auth = |mut builder: hyper::http::request::Builder| {
        if let Some(auth) = &options.authorization {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        builder
    };
    for blob in &image.blobs {
        let start = format!("{base}/v2/{repo}/blobs/uploads/");
        if options.monolithic {
            let post = format!("{start}?digest={}", blob.descriptor.digest);
            let req = with_auth(Request::post(&post))
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(Full::new(Bytes::copy_from_slice(&blob.bytes)))?;
            let resp = expect_status(send(pool, req).await?, StatusCode::CREATED, &format!("POST {post}")).await?;
            discard(resp.into_body()).await?;
            continue;
        }
        let req = with_auth(Request::post(&start)).body(Full::new(Bytes::new()))?;
        let resp = expect_status(send(pool, req).await?, StatusCode::ACCEPTED, &format!("POST {start}")).await?;
        let Some(location) = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()) else {
            fail!("POST {start}: no Location in the answer");
        };
        let upload = resolve(&start, location)?;
        let separator = if upload.contains('?') { '&' } else { '?' };
        let put = format!("{upload}{separator}digest={}", blob.descriptor.digest);
        discard(resp.into_body()).await?;
        let req = with_auth(Request::put(&put))
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(Bytes::copy_from_slice(&blob.bytes)))?;
        let resp = expect_status(send(pool, req).await?, StatusCode::CREATED, &format!("PUT {put}")).await?;
        discard(resp.into_body()).await?;
    }
    let url = format!("{base}/v2/{repo}/manifests/{tag}");
    let req = with_auth(Request::put(&url))
        .header(CONTENT_TYPE, MANIFEST_MEDIA_TYPE)
        .body(Full::new(Bytes::copy_from_slice(&image.manifest.bytes)))?;
    let resp = expect_status(send(pool, req).await?, StatusCode::CREATED, &format!("PUT {url}")).await?;
    discard(resp.into_body()).await?;
    Ok(())
}

/// GETs `url` and reads the whole answer, which must be 200: the body,
/// and the time from sending to its last byte.
pub(crate) async fn get_body(pool: &Pool, url: &str) -> Result<(Bytes, Duration)> {
    let sent = Instant::now();
    let resp = expect_status(send(pool, get(url, None)?).await?, StatusCode::OK, &format!("GET {url}")).await?;
    let body = resp.into_body().collect().await.map_err(|e| format!("GET {url}: body: {e}"))?.to_bytes();
    Ok((body, sent.elapsed()))
}

/// Waits until `url` answers with any HTTP status; returns that status.
pub(crate) async fn wait_for(url: &str, timeout: Duration, trust: &Trust) -> Result<StatusCode> {
    let pool = pool(1, trust);
    let deadline = Instant::now() + timeout;
    loop {
        match pool.request(get(url, None)?).await {
            Ok(resp) => {
                let status = resp.status();
                discard(resp.into_body()).await?;
                return Ok(status);
            }
            Err(e) if Instant::now() >= deadline => {
                fail!("{url} did not answer within {timeout:?}: {}", crate::with_sources(&e))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// POSTs the JSON `body` to `url`, an admin API path that starts a task
/// (202 with the task's id), then asks for the task every `poll` until it
/// has ended. The task as it ended, and the time from the POST to the
/// answer that said so.
pub(crate) async fn run_task(
    pool: &Pool,
    url: &str,
    body: &str,
    poll: Duration,
) -> Result<(serde_json::Value, Duration)> {
    let Some(api) = url.find("/api/v1/").map(|i| &url[..i + "/api/v1".len()]) else {
        fail!("{url}: not an admin API URL (…/api/v1/…)");
    };
    let started = Instant::now();
    let req = Request::post(url)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))?;
    let resp = expect_status(send(pool, req).await?, StatusCode::ACCEPTED, &format!("POST {url}")).await?;
    let accepted: serde_json::Value = serde_json::from_slice(&resp.into_body().collect().await?.to_bytes())?;
    let Some(id) = accepted["id"].as_u64() else { fail!("POST {url}: no task id in {accepted}") };
    let task_url = format!("{api}/tasks/{id}");
    loop {
        let resp = send(pool, get(&task_url, None)?).await?;
        let resp = expect_status(resp, StatusCode::OK, &format!("GET {task_url}")).await?;
        let task: serde_json::Value = serde_json::from_slice(&resp.into_body().collect().await?.to_bytes())?;
        if !matches!(task["state"].as_str(), Some("waiting" | "running")) {
            return Ok((task, started.elapsed()));
        }
        tokio::time::sleep(poll).await;
    }
}
