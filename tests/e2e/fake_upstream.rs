//! An in-process fake upstream registry, for the faults a real registry
//! cannot produce on demand: truncated and corrupt bodies, stalls, error
//! statuses, rate limits and token auth.
//!
//! It serves `/v2/`, manifests (by tag and by digest) and blobs, HEAD and GET,
//! plus a token endpoint at `/token`. What each reference does is scripted at
//! run time with [`Script`]; every request is recorded so tests can assert on
//! what wharf asked for, and on what it did not ask for.
//!
//! Content is keyed by reference alone (a tag or a digest). The repository
//! name in the path is recorded but not checked, so tests may use any name.
//!
//! Nothing here sleeps to synchronise: a stalled body waits on a [`Gate`]
//! that the test opens, and the test learns that a body reached its stall
//! point from the same gate.
//!
//! It also counts requests in flight at once, and the most there ever were.
//! A request is in flight from when its headers are read until its response
//! body has been handed over whole (or broken off, or dropped): that window
//! lies inside the one in which wharf holds the request open, so the count
//! never exceeds what wharf really had outstanding.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::images::{sha256_digest, Image};

/// The service name the fake's bearer challenge names.
pub const TOKEN_SERVICE: &str = "fake-upstream";
/// Body frames are cut to this size unless a script says otherwise, so a
/// stall point inside a body is never skipped over by one large frame.
const DEFAULT_CHUNK: usize = 16 * 1024;

/// A point a test opens to let stalled responses continue, and which
/// counts how many responses are waiting at it. A gate never opened stalls
/// forever (until the fake is shut down or its client goes away).
#[derive(Clone)]
pub struct Gate {
    open: Arc<watch::Sender<bool>>,
    arrived: Arc<watch::Sender<usize>>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

impl Gate {
    pub fn new() -> Gate {
        Gate { open: Arc::new(watch::channel(false).0), arrived: Arc::new(watch::channel(0).0) }
    }

    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Returns once `n` responses in total have reached this gate.
    pub async fn reached(&self, n: usize) {
        let mut rx = self.arrived.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|arrived| *arrived >= n).await;
    }

    async fn pass(&self) {
        self.arrived.send_modify(|n| *n += 1);
        let mut rx = self.open.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// What the fake does for one reference (a tag, or a manifest or blob digest).
///
/// Body modifiers compose: `Script::normal().stalling_at(n, &gate).truncated_at(n)`
/// sends `n` bytes, waits for the gate, then breaks the connection.
#[derive(Clone)]
pub struct Script {
    reply: Reply,
    /// How many more requests this script answers before the reference is
    /// served normally again; `None` is for ever.
    times: Option<u32>,
}

#[derive(Clone)]
enum Reply {
    Serve(BodyPlan),
    Status { status: u16, retry_after: Option<String> },
    /// Accept the request but send no response headers until the gate opens.
    HoldHeaders(Gate),
}

#[derive(Clone, Default)]
struct BodyPlan {
    /// Flip the last byte: same length, wrong digest, detectable only at the end.
    wrong_bytes: bool,
    stall: Option<(usize, Gate)>,
    /// Break the connection after this many bytes; Content-Length still
    /// announces the whole body.
    truncate_at: Option<usize>,
    chunk: Option<usize>,
    /// Pause between chunks, to model a slow upstream. Pacing, not
    /// synchronisation: tests wait on gates, never on this.
    pause: Option<Duration>,
}

impl Script {
    /// Serve the content as it is.
    pub fn normal() -> Script {
        Script { reply: Reply::Serve(BodyPlan::default()), times: None }
    }

    /// Answer with this status and an OCI error body.
    pub fn status(status: u16) -> Script {
        Script { reply: Reply::Status { status, retry_after: None }, times: None }
    }

    /// 429 with `Retry-After: <seconds>`.
    pub fn too_many_requests(retry_after_secs: u64) -> Script {
        Script {
            reply: Reply::Status { status: 429, retry_after: Some(retry_after_secs.to_string()) },
            times: None,
        }
    }

    /// Read the request, then send nothing until `gate` opens.
    pub fn hold_headers(gate: &Gate) -> Script {
        Script { reply: Reply::HoldHeaders(gate.clone()), times: None }
    }

    /// Send `n` bytes of the body, then break the connection.
    pub fn truncated(n: usize) -> Script {
        Script::normal().truncated_at(n)
    }

    /// The right length, the wrong bytes.
    pub fn wrong_bytes() -> Script {
        Script::normal().with_wrong_bytes()
    }

    pub fn truncated_at(self, n: usize) -> Script {
        self.plan(|p| p.truncate_at = Some(n))
    }

    pub fn with_wrong_bytes(self) -> Script {
        self.plan(|p| p.wrong_bytes = true)
    }

    /// After `n` bytes of the body, wait until `gate` opens.
    pub fn stalling_at(self, n: usize, gate: &Gate) -> Script {
        self.plan(|p| p.stall = Some((n, gate.clone())))
    }

    /// Send the body in frames of `size` bytes with `pause` between them.
    pub fn in_chunks(self, size: usize, pause: Duration) -> Script {
        assert!(size > 0, "chunk size must be positive");
        self.plan(|p| {
            p.chunk = Some(size);
            p.pause = Some(pause);
        })
    }

    /// Apply to the next `n` requests only, then serve normally.
    pub fn times(mut self, n: u32) -> Script {
        assert!(n > 0, "a script must apply to at least one request");
        self.times = Some(n);
        self
    }

    fn plan(mut self, edit: impl FnOnce(&mut BodyPlan)) -> Script {
        match &mut self.reply {
            Reply::Serve(plan) => edit(plan),
            _ => panic!("body modifiers apply only to scripts that serve content"),
        }
        self
    }
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How a content body the fake started sending ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEnd {
    /// Every byte was handed to the connection.
    Sent,
    /// A script broke the body off on purpose.
    Truncated,
    /// The client (wharf) went away before the body was complete.
    Dropped,
}

struct Manifest {
    media_type: String,
    bytes: Bytes,
}

struct Bearer {
    token: String,
    credentials: Option<(String, String)>,
}

#[derive(Default)]
struct Inner {
    blobs: HashMap<String, Bytes>,
    manifests: HashMap<String, Manifest>,
    tags: HashMap<String, String>,
    scripts: HashMap<String, Script>,
    bearer: Option<Bearer>,
    seen: Vec<Seen>,
    bodies: Vec<(String, BodyEnd)>,
    tasks: Vec<JoinHandle<()>>,
    in_flight: usize,
    max_in_flight: usize,
}

struct State {
    addr: SocketAddr,
    inner: Mutex<Inner>,
    /// Woken whenever a request is recorded or a body ends.
    changed: Notify,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread may poison the lock; the data is still
        // fine for the assertions that follow.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn request_started(&self) {
        let mut inner = self.lock();
        inner.in_flight += 1;
        inner.max_in_flight = inner.max_in_flight.max(inner.in_flight);
    }

    fn request_ended(&self) {
        let mut inner = self.lock();
        inner.in_flight = inner.in_flight.saturating_sub(1);
    }

    /// A fed body is the last part of its request: its end ends the request.
    fn body_ended(&self, reference: &str, end: BodyEnd) {
        {
            let mut inner = self.lock();
            inner.bodies.push((reference.to_owned(), end));
            inner.in_flight = inner.in_flight.saturating_sub(1);
        }
        self.changed.notify_waiters();
    }
}

/// The running fake; shut down when dropped.
pub struct FakeUpstream {
    state: Arc<State>,
}

impl FakeUpstream {
    /// Binds 127.0.0.1:0 and starts serving.
    pub async fn start() -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake upstream");
        let addr = listener.local_addr().expect("fake upstream address");
        let state = Arc::new(State { addr, inner: Mutex::default(), changed: Notify::new() });
        let accept_state = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let conn_state = accept_state.clone();
                let conn = tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = conn_state.clone();
                        async move { Ok::<_, io::Error>(handle(state, req).await) }
                    });
                    // Errors here are the faults the tests inject, or wharf
                    // hanging up; either way the connection is simply over.
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                let mut inner = accept_state.lock();
                inner.tasks.retain(|t| !t.is_finished());
                inner.tasks.push(conn);
            }
        });
        state.lock().tasks.push(accept);
        FakeUpstream { state }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.state.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.state.addr
    }

    /// Stores a blob; returns its digest.
    pub fn put_blob(&self, bytes: impl Into<Bytes>) -> String {
        let bytes = bytes.into();
        let digest = sha256_digest(&bytes);
        self.state.lock().blobs.insert(digest.clone(), bytes);
        digest
    }

    /// Stores a blob under its sha512 digest; returns that digest.
    pub fn put_blob_sha512(&self, bytes: impl Into<Bytes>) -> String {
        let bytes = bytes.into();
        let digest = crate::images::sha512_digest(&bytes);
        self.state.lock().blobs.insert(digest.clone(), bytes);
        digest
    }

    /// Stores a manifest reachable only by its sha512 digest; returns it.
    pub fn put_manifest_sha512(&self, media_type: &str, bytes: impl Into<Bytes>) -> String {
        let bytes = bytes.into();
        let digest = crate::images::sha512_digest(&bytes);
        self.state.lock().manifests.insert(digest.clone(), Manifest { media_type: media_type.to_owned(), bytes });
        digest
    }

    /// Stores a manifest, reachable by digest and (if given) by `tag`;
    /// returns its digest.
    pub fn put_manifest(&self, tag: Option<&str>, media_type: &str, bytes: impl Into<Bytes>) -> String {
        let bytes = bytes.into();
        let digest = sha256_digest(&bytes);
        let mut inner = self.state.lock();
        inner.manifests.insert(digest.clone(), Manifest { media_type: media_type.to_owned(), bytes });
        if let Some(tag) = tag {
            inner.tags.insert(tag.to_owned(), digest.clone());
        }
        digest
    }

    /// Stores the image's blobs and its manifest under `tag`.
    pub fn put_image(&self, tag: &str, image: &Image) {
        for blob in std::iter::once(&image.config).chain(&image.layers) {
            self.put_blob(blob.bytes.clone());
        }
        self.put_manifest(Some(tag), &image.manifest.media_type, image.manifest.bytes.clone());
    }

    /// Forgets a tag, as when it is deleted upstream.
    pub fn remove_tag(&self, tag: &str) {
        self.state.lock().tags.remove(tag);
    }

    /// From now on, requests for `reference` (a tag or a digest) follow `script`.
    pub fn script(&self, reference: &str, script: Script) {
        self.state.lock().scripts.insert(reference.to_owned(), script);
    }

    /// Requires `Authorization: Bearer <token>` on every `/v2/` request and
    /// answers 401 with a challenge pointing at this fake's `/token`.
    pub fn require_bearer_token(&self) {
        self.state.lock().bearer = Some(Bearer { token: "fake-token-7c1d".into(), credentials: None });
    }

    /// As [`require_bearer_token`](Self::require_bearer_token), and the token
    /// endpoint itself requires these Basic credentials.
    pub fn require_bearer_token_with_credentials(&self, username: &str, password: &str) {
        self.state.lock().bearer = Some(Bearer {
            token: "fake-token-9e42".into(),
            credentials: Some((username.to_owned(), password.to_owned())),
        });
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.lock().seen.clone()
    }

    /// Requests with this method whose path ends in `/<reference>`.
    pub fn count(&self, method: &str, reference: &str) -> usize {
        let suffix = format!("/{reference}");
        self.state.lock().seen.iter().filter(|s| s.method == method && s.path.ends_with(&suffix)).count()
    }

    /// Requests in flight right now.
    pub fn in_flight(&self) -> usize {
        self.state.lock().in_flight
    }

    /// The most requests that were ever in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.lock().max_in_flight
    }

    /// Requests to the token endpoint.
    pub fn token_requests(&self) -> usize {
        self.state.lock().seen.iter().filter(|s| s.path == "/token").count()
    }

    /// Returns once `n` requests with this method for `reference` have arrived.
    pub async fn requested(&self, method: &str, reference: &str, n: usize) {
        self.wait_until(|| self.count(method, reference) >= n).await;
    }

    /// How the content bodies sent for `reference` ended, in order.
    pub fn body_ends(&self, reference: &str) -> Vec<BodyEnd> {
        self.state.lock().bodies.iter().filter(|(r, _)| r == reference).map(|(_, e)| *e).collect()
    }

    /// Returns once `n` content bodies for `reference` have ended, with how they ended.
    pub async fn bodies_ended(&self, reference: &str, n: usize) -> Vec<BodyEnd> {
        self.wait_until(|| self.body_ends(reference).len() >= n).await;
        self.body_ends(reference)
    }

    async fn wait_until(&self, ready: impl Fn() -> bool) {
        loop {
            // Register interest before checking, so a change between the
            // check and the await is not missed.
            let notified = self.state.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if ready() {
                return;
            }
            notified.await;
        }
    }

    /// Stops accepting and breaks every open connection: the upstream
    /// becomes unreachable (connection refused). Returns once the listener
    /// is closed.
    pub async fn shutdown(&self) {
        let tasks: Vec<_> = self.state.lock().tasks.drain(..).collect();
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            // Resolves once the task is cancelled and its sockets dropped.
            let _ = task.await;
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for task in self.state.lock().tasks.drain(..) {
            task.abort();
        }
    }
}

/// A response body: either whole, or fed frame by frame by a producer task.
enum FakeBody {
    Whole(Option<Bytes>),
    Fed(Fed),
}

/// The receiving end of a fed body. It is what hyper polls, so it knows
/// exactly how much of the body reached the connection, and reports how the
/// body ended once.
struct Fed {
    rx: mpsc::Receiver<Result<Frame<Bytes>, io::Error>>,
    delivered: usize,
    announced: usize,
    report: Option<(Arc<State>, String)>,
}

impl Fed {
    fn end(&mut self, end: BodyEnd) {
        if let Some((state, reference)) = self.report.take() {
            state.body_ended(&reference, end);
        }
    }
}

impl Drop for Fed {
    fn drop(&mut self) {
        self.end(BodyEnd::Dropped);
    }
}

impl Body for FakeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut *self {
            FakeBody::Whole(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            FakeBody::Fed(fed) => {
                let polled = fed.rx.poll_recv(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        fed.delivered += frame.data_ref().map_or(0, |d| d.len());
                        if fed.delivered >= fed.announced {
                            fed.end(BodyEnd::Sent);
                        }
                    }
                    Poll::Ready(Some(Err(_))) => fed.end(BodyEnd::Truncated),
                    Poll::Ready(None) | Poll::Pending => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, FakeBody::Whole(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            FakeBody::Whole(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            FakeBody::Fed(_) => SizeHint::default(),
        }
    }
}

fn whole(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<FakeBody> {
    let mut resp = Response::new(FakeBody::Whole(Some(body.into())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_str(content_type).expect("content type"));
    resp
}

fn oci_error(status: StatusCode, code: &str) -> Response<FakeBody> {
    let body = serde_json::json!({ "errors": [{ "code": code, "message": "fake upstream", "detail": null }] });
    whole(status, "application/json", serde_json::to_vec(&body).expect("error JSON"))
}

enum Target {
    Ping,
    Token,
    Manifest { name: String, reference: String },
    Blob { name: String, digest: String },
    Other,
}

fn route(path: &str) -> Target {
    if path == "/v2/" || path == "/v2" {
        return Target::Ping;
    }
    if path == "/token" {
        return Target::Token;
    }
    let Some(rest) = path.strip_prefix("/v2/") else { return Target::Other };
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        return Target::Manifest { name: name.to_owned(), reference: reference.to_owned() };
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        return Target::Blob { name: name.to_owned(), digest: digest.to_owned() };
    }
    Target::Other
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<FakeBody> {
    state.request_started();
    let resp = answer(&state, req).await;
    // A fed body ends the request when it ends; a whole one is handed over
    // with the headers.
    if let FakeBody::Whole(_) = resp.body() {
        state.request_ended();
    }
    resp
}

async fn answer(state: &Arc<State>, req: Request<Incoming>) -> Response<FakeBody> {
    let seen = Seen {
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        query: req.uri().query().map(str::to_owned),
        headers: req.headers().clone(),
    };
    state.lock().seen.push(seen.clone());
    state.changed.notify_waiters();

    let target = route(&seen.path);
    if let Target::Token = target {
        return token(state, &seen);
    }
    if let Some(challenge) = missing_bearer(state, &seen, &target) {
        let mut resp = oci_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        return resp;
    }
    match target {
        Target::Ping => whole(StatusCode::OK, "application/json", "{}"),
        Target::Manifest { reference, .. } => content_response(state, &seen.method, &reference, true).await,
        Target::Blob { digest, .. } => content_response(state, &seen.method, &digest, false).await,
        Target::Token | Target::Other => oci_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
    }
}

/// The token endpoint: checks Basic credentials if configured, then hands
/// out the one token this fake accepts.
fn token(state: &State, seen: &Seen) -> Response<FakeBody> {
    let inner = state.lock();
    let Some(bearer) = &inner.bearer else {
        return oci_error(StatusCode::NOT_FOUND, "UNSUPPORTED");
    };
    if let Some((user, pass)) = &bearer.credentials {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        );
        if seen.header("authorization") != Some(expected.as_str()) {
            return oci_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        }
    }
    let body = serde_json::json!({
        "token": bearer.token,
        "access_token": bearer.token,
        "expires_in": 300,
    });
    whole(StatusCode::OK, "application/json", serde_json::to_vec(&body).expect("token JSON"))
}

/// The challenge to send if bearer auth is on and the request lacks the token.
fn missing_bearer(state: &State, seen: &Seen, target: &Target) -> Option<HeaderValue> {
    let inner = state.lock();
    let bearer = inner.bearer.as_ref()?;
    if seen.header("authorization") == Some(format!("Bearer {}", bearer.token).as_str()) {
        return None;
    }
    let mut challenge = format!("Bearer realm=\"http://{}/token\",service=\"{TOKEN_SERVICE}\"", state.addr);
    if let Target::Manifest { name, .. } | Target::Blob { name, .. } = target {
        challenge.push_str(&format!(",scope=\"repository:{name}:pull\""));
    }
    Some(HeaderValue::from_str(&challenge).expect("challenge header"))
}

async fn content_response(state: &Arc<State>, method: &Method, reference: &str, manifest: bool) -> Response<FakeBody> {
    let (reply, found) = {
        let mut inner = state.lock();
        let found = if manifest {
            let digest = inner.tags.get(reference).cloned().unwrap_or_else(|| reference.to_owned());
            inner.manifests.get(&digest).map(|m| (m.media_type.clone(), m.bytes.clone(), digest))
        } else {
            inner
                .blobs
                .get(reference)
                .map(|b| ("application/octet-stream".to_owned(), b.clone(), reference.to_owned()))
        };
        let reply = match inner.scripts.get_mut(reference) {
            None => Reply::Serve(BodyPlan::default()),
            Some(script) => {
                let reply = script.reply.clone();
                if let Some(left) = &mut script.times {
                    *left -= 1;
                    if *left == 0 {
                        inner.scripts.remove(reference);
                    }
                }
                reply
            }
        };
        (reply, found)
    };

    let plan = match reply {
        Reply::Status { status, retry_after } => {
            let status = StatusCode::from_u16(status).expect("scripted status");
            let code = match status {
                StatusCode::NOT_FOUND if manifest => "MANIFEST_UNKNOWN",
                StatusCode::NOT_FOUND => "BLOB_UNKNOWN",
                StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
                StatusCode::FORBIDDEN => "DENIED",
                StatusCode::TOO_MANY_REQUESTS => "TOOMANYREQUESTS",
                _ => "UNKNOWN",
            };
            let mut resp = oci_error(status, code);
            if let Some(secs) = retry_after {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_str(&secs).expect("retry-after"));
            }
            return resp;
        }
        Reply::HoldHeaders(gate) => {
            gate.pass().await;
            BodyPlan::default()
        }
        Reply::Serve(plan) => plan,
    };

    let Some((media_type, bytes, digest)) = found else {
        return oci_error(StatusCode::NOT_FOUND, if manifest { "MANIFEST_UNKNOWN" } else { "BLOB_UNKNOWN" });
    };
    let len = bytes.len();
    let body = if method == Method::HEAD {
        FakeBody::Whole(None)
    } else {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(produce(tx, bytes, plan));
        FakeBody::Fed(Fed { rx, delivered: 0, announced: len, report: Some((state.clone(), reference.to_owned())) })
    };
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(&media_type).expect("media type"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert("docker-content-digest", HeaderValue::from_str(&digest).expect("digest header"));
    resp
}

/// Feeds a content body according to its plan. Stops early, quietly, if
/// the body is dropped (wharf went away); [`Fed`] records how it ended.
async fn produce(tx: mpsc::Sender<Result<Frame<Bytes>, io::Error>>, bytes: Bytes, plan: BodyPlan) {
    let bytes = if plan.wrong_bytes {
        let mut wrong = bytes.to_vec();
        if let Some(last) = wrong.last_mut() {
            *last ^= 0xff;
        }
        Bytes::from(wrong)
    } else {
        bytes
    };
    let end = plan.truncate_at.unwrap_or(bytes.len()).min(bytes.len());
    let chunk = plan.chunk.unwrap_or(DEFAULT_CHUNK);
    let mut pos = 0;
    let mut stalled = false;
    loop {
        if let Some((at, gate)) = &plan.stall {
            if !stalled && pos >= *at {
                stalled = true;
                tokio::select! {
                    () = gate.pass() => {}
                    () = tx.closed() => return,
                }
            }
        }
        if pos >= end {
            break;
        }
        let mut next = (pos + chunk).min(end);
        if let Some((at, _)) = &plan.stall {
            if !stalled && pos < *at && next > *at {
                next = *at;
            }
        }
        if tx.send(Ok(Frame::data(bytes.slice(pos..next)))).await.is_err() {
            return;
        }
        pos = next;
        if let (Some(pause), true) = (plan.pause, pos < end) {
            tokio::time::sleep(pause).await;
        }
    }
    if end < bytes.len() {
        // An error frame makes hyper abort the connection short of the
        // announced Content-Length, as a dying upstream would.
        let _ = tx.send(Err(io::Error::other("fake upstream: scripted truncation"))).await;
    }
}

/// The fake's own behaviour, checked with a plain client: the wharf tests
/// rely on each fault looking the way it does here.
mod self_tests {
    use super::*;
    use crate::http;
    use crate::images::{random_bytes, MANIFEST_MEDIA_TYPE};
    use crate::streaming::{open, within_guard};
    use tokio::net::TcpStream;

    async fn with_blob(len: usize) -> (FakeUpstream, Bytes, String) {
        let fake = FakeUpstream::start().await;
        let bytes = Bytes::from(random_bytes(len));
        let digest = fake.put_blob(bytes.clone());
        (fake, bytes, digest)
    }

    fn blob_url(fake: &FakeUpstream, digest: &str) -> String {
        format!("{}/v2/any/repo/blobs/{digest}", fake.url())
    }

    #[tokio::test]
    async fn serves_blobs_and_manifests_by_tag_and_digest_with_registry_headers() {
        let fake = FakeUpstream::start().await;
        let image = Image::random(&[1000]);
        let layer = &image.layers[0];
        fake.put_image("v1", &image);

        let ping = http::get(&format!("{}/v2/", fake.url())).await;
        assert_eq!(ping.status, 200);

        for reference in ["v1", &image.manifest.digest] {
            let r = http::get(&format!("{}/v2/some/repo/manifests/{reference}", fake.url())).await;
            assert_eq!(r.status, 200);
            assert!(r.complete);
            assert_eq!(r.body, image.manifest.bytes);
            assert_eq!(r.header("content-type"), Some(MANIFEST_MEDIA_TYPE));
            assert_eq!(r.header("docker-content-digest"), Some(image.manifest.digest.as_str()));
        }
        let r = http::get(&blob_url(&fake, &layer.digest)).await;
        assert_eq!((r.status, r.complete), (200, true));
        assert_eq!(r.body, layer.bytes);

        let missing = http::get(&format!("{}/v2/some/repo/manifests/nope", fake.url())).await;
        assert_eq!(missing.status, 404);
        assert_eq!(missing.error_code(), "MANIFEST_UNKNOWN");
        assert_eq!(fake.body_ends(&layer.digest), vec![BodyEnd::Sent]);
    }

    #[tokio::test]
    async fn head_answers_length_and_digest_without_a_body() {
        let (fake, bytes, digest) = with_blob(5000).await;
        let r = http::request("HEAD", &blob_url(&fake, &digest), &[]).await;
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
        assert_eq!(r.header("content-length"), Some(bytes.len().to_string().as_str()));
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
        assert_eq!((fake.count("HEAD", &digest), fake.count("GET", &digest)), (1, 0));
    }

    #[tokio::test]
    async fn records_every_request_with_its_headers() {
        let (fake, _, digest) = with_blob(10).await;
        http::request("GET", &format!("{}?x=1", blob_url(&fake, &digest)), &[("x-probe", "yes")]).await;
        http::get(&format!("{}/v2/", fake.url())).await;
        let seen = fake.requests();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].method, Method::GET);
        assert_eq!(seen[0].path, format!("/v2/any/repo/blobs/{digest}"));
        assert_eq!(seen[0].query.as_deref(), Some("x=1"));
        assert_eq!(seen[0].header("x-probe"), Some("yes"));
        assert_eq!(seen[1].path, "/v2/");
    }

    #[tokio::test]
    async fn truncated_body_ends_with_an_error_after_the_given_bytes() {
        let (fake, bytes, digest) = with_blob(50_000).await;
        fake.script(&digest, Script::truncated(20_000));
        let r = http::get(&blob_url(&fake, &digest)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("50000"));
        assert!(!r.complete, "a truncated body must not end cleanly");
        assert!(r.body.len() <= 20_000 && bytes.starts_with(&r.body));
        assert_eq!(fake.body_ends(&digest), vec![BodyEnd::Truncated]);
    }

    #[tokio::test]
    async fn wrong_bytes_have_the_right_length_and_the_wrong_digest() {
        let (fake, bytes, digest) = with_blob(40_000).await;
        fake.script(&digest, Script::wrong_bytes());
        let r = http::get(&blob_url(&fake, &digest)).await;
        assert_eq!((r.status, r.complete), (200, true));
        assert_eq!(r.body.len(), bytes.len());
        assert_ne!(sha256_digest(&r.body), digest);
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    }

    #[tokio::test]
    async fn stalled_body_waits_at_the_gate_until_it_opens() {
        let (fake, bytes, digest) = with_blob(100_000).await;
        let gate = Gate::new();
        fake.script(&digest, Script::normal().stalling_at(30_000, &gate));
        let mut s = open(&blob_url(&fake, &digest)).await;
        assert_eq!(s.status, 200);
        within_guard("body reaches the stall point", gate.reached(1)).await;
        assert_eq!(within_guard("first bytes", s.read_at_least(30_000)).await, 30_000);
        gate.open();
        let r = within_guard("rest of the body", s.finish()).await;
        assert!(r.complete);
        assert_eq!(r.body, bytes);
    }

    #[tokio::test]
    async fn stalled_then_truncated_body_breaks_after_the_gate_opens() {
        let (fake, bytes, digest) = with_blob(100_000).await;
        let gate = Gate::new();
        fake.script(&digest, Script::normal().stalling_at(10_000, &gate).truncated_at(10_000));
        let mut s = open(&blob_url(&fake, &digest)).await;
        within_guard("first bytes", s.read_at_least(10_000)).await;
        gate.open();
        let r = within_guard("end of body", s.finish()).await;
        assert!(!r.complete);
        assert_eq!(r.body, bytes.slice(..10_000));
    }

    #[tokio::test]
    async fn client_leaving_a_stalled_body_is_recorded_as_dropped() {
        let (fake, _, digest) = with_blob(100_000).await;
        let gate = Gate::new();
        fake.script(&digest, Script::normal().stalling_at(10_000, &gate));
        let mut s = open(&blob_url(&fake, &digest)).await;
        within_guard("first bytes", s.read_at_least(10_000)).await;
        s.hang_up();
        let ends = within_guard("body end recorded", fake.bodies_ended(&digest, 1)).await;
        assert_eq!(ends, vec![BodyEnd::Dropped]);
    }

    #[tokio::test]
    async fn chunked_body_arrives_whole() {
        let (fake, bytes, digest) = with_blob(10_000).await;
        fake.script(&digest, Script::normal().in_chunks(1000, Duration::from_millis(1)));
        let r = http::get(&blob_url(&fake, &digest)).await;
        assert!(r.complete);
        assert_eq!(r.body, bytes);
    }

    #[tokio::test]
    async fn status_script_applies_the_given_number_of_times_then_serves_normally() {
        let (fake, bytes, digest) = with_blob(100).await;
        fake.script(&digest, Script::status(503).times(2));
        let url = blob_url(&fake, &digest);
        assert_eq!(http::get(&url).await.status, 503);
        assert_eq!(http::get(&url).await.status, 503);
        let r = http::get(&url).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, bytes);
    }

    #[tokio::test]
    async fn too_many_requests_carries_retry_after() {
        let (fake, _, digest) = with_blob(100).await;
        fake.script(&digest, Script::too_many_requests(7));
        let r = http::get(&blob_url(&fake, &digest)).await;
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after"), Some("7"));
        assert_eq!(r.error_code(), "TOOMANYREQUESTS");
    }

    #[tokio::test]
    async fn held_headers_are_sent_once_the_gate_opens() {
        let (fake, bytes, digest) = with_blob(100).await;
        let gate = Gate::new();
        fake.script(&digest, Script::hold_headers(&gate));
        let url = blob_url(&fake, &digest);
        let pending = tokio::spawn(async move { http::get(&url).await });
        within_guard("request held", gate.reached(1)).await;
        assert!(!pending.is_finished());
        gate.open();
        let r = within_guard("held response", pending).await.expect("client task");
        assert_eq!(r.body, bytes);
    }

    #[tokio::test]
    async fn bearer_auth_challenges_then_accepts_the_token_from_its_endpoint() {
        let (fake, bytes, digest) = with_blob(100).await;
        fake.require_bearer_token_with_credentials("alice", "s3cret");
        let url = blob_url(&fake, &digest);

        let challenged = http::get(&url).await;
        assert_eq!(challenged.status, 401);
        let challenge = challenged.header("www-authenticate").expect("challenge").to_owned();
        let expected = format!(
            "Bearer realm=\"{}/token\",service=\"{TOKEN_SERVICE}\",scope=\"repository:any/repo:pull\"",
            fake.url()
        );
        assert_eq!(challenge, expected);

        let token_url = format!("{}/token?service={TOKEN_SERVICE}&scope=repository:any/repo:pull", fake.url());
        assert_eq!(http::get(&token_url).await.status, 401, "token endpoint must want credentials");
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:s3cret"));
        let token = http::request("GET", &token_url, &[("authorization", &basic)]).await;
        assert_eq!(token.status, 200);
        let token = token.json()["token"].as_str().expect("token").to_owned();

        let r = http::request("GET", &url, &[("authorization", &format!("Bearer {token}"))]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, bytes);
        assert_eq!(fake.token_requests(), 2);
    }

    #[tokio::test]
    async fn waits_for_requests_it_has_not_seen_yet() {
        let (fake, _, digest) = with_blob(100).await;
        let url = blob_url(&fake, &digest);
        let client = tokio::spawn(async move { http::get(&url).await });
        within_guard("request arrives", fake.requested("GET", &digest, 1)).await;
        client.await.expect("client task");
        assert_eq!(fake.count("GET", &digest), 1);
    }

    #[tokio::test]
    async fn counts_requests_in_flight_until_their_bodies_end() {
        let fake = FakeUpstream::start().await;
        let gate = Gate::new();
        let digests: Vec<_> = (0..2).map(|_| fake.put_blob(random_bytes(50_000))).collect();
        let mut streams = Vec::new();
        for digest in &digests {
            fake.script(digest, Script::normal().stalling_at(10_000, &gate));
            streams.push(open(&blob_url(&fake, digest)).await);
        }
        within_guard("both bodies stalled", gate.reached(2)).await;
        http::get(&format!("{}/v2/", fake.url())).await;
        assert_eq!(fake.in_flight(), 2, "the ping is over; the stalled bodies are not");
        assert_eq!(fake.max_in_flight(), 3);
        gate.open();
        for s in streams {
            assert!(within_guard("rest of the body", s.finish()).await.complete);
        }
        assert_eq!(fake.in_flight(), 0);
        assert_eq!(fake.max_in_flight(), 3);
    }

    #[tokio::test]
    async fn shut_down_fake_refuses_connections() {
        let (fake, _, _) = with_blob(100).await;
        within_guard("shutdown", fake.shutdown()).await;
        assert!(TcpStream::connect(fake.addr()).await.is_err(), "connection after shutdown must be refused");
    }
}
