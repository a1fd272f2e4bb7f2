//! wharf against an upstream that misbehaves: truncated, corrupt and stalled
//! bodies, error statuses, rate limits, token auth, stale tags, concurrent
//! cold pulls, and names that must not reach any host.
//!
//! Each test starts its own fake upstream and its own wharf on a temp dir.
//! The invariant behind most of them: a fault upstream never looks like
//! success to a client, and never leaves anything in the cache.

use std::time::Duration;

use bytes::Bytes;
use tempfile::TempDir;
use tokio::sync::mpsc;

use crate::fake_upstream::{BodyEnd, FakeUpstream, Gate, Script};
use crate::http::{self, Response};
use crate::images::{random_bytes, Image};
use crate::streaming::{self, within_guard};
use crate::wharf::{UpstreamEntry, Wharf};

/// The repository every test pulls; routed to the default upstream.
pub const REPO: &str = "team/app";

/// A fake upstream and a wharf whose default upstream it is. Fields drop in
/// order: wharf is killed before its storage directory is removed.
pub struct Rig {
    pub wharf: Wharf,
    pub fake: FakeUpstream,
    /// Holds wharf's config and storage until the rig is dropped.
    _dir: TempDir,
}

impl Rig {
    /// `extra` are raw TOML lines for the upstream entry (timeouts, ttl...).
    pub async fn start(extra: &[&str]) -> Rig {
        let fake = FakeUpstream::start().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut entry = UpstreamEntry::new("fake", &fake.url()).default();
        for line in extra {
            entry = entry.extra(line);
        }
        let wharf = Wharf::start(dir.path(), &[entry]);
        Rig { wharf, fake, _dir: dir }
    }

    pub fn blob_url(&self, digest: &str) -> String {
        format!("{}/v2/{REPO}/blobs/{digest}", self.wharf.url())
    }

    pub fn manifest_url(&self, reference: &str) -> String {
        format!("{}/v2/{REPO}/manifests/{reference}", self.wharf.url())
    }

    /// A blob of `len` random bytes, stored upstream only.
    pub fn upstream_blob(&self, len: usize) -> (Bytes, String) {
        let bytes = Bytes::from(random_bytes(len));
        let digest = self.fake.put_blob(bytes.clone());
        (bytes, digest)
    }

    /// GET through wharf, failing the test if it hangs.
    pub async fn get(&self, url: &str) -> Response {
        within_guard(&format!("GET {url}"), http::get(url)).await
    }

    /// A GET that is expected to fail: its response, or why none came.
    pub async fn get_failing(&self, url: &str) -> Result<Response, String> {
        within_guard(&format!("GET {url}"), http::try_get(url)).await
    }
}

/// A failure the client sees: a broken 200 body or a 5xx, or, when the
/// fill failed before the first byte went out, the connection closed
/// without a response.
#[track_caller]
fn assert_failed_or_closed(r: &Result<Response, String>, what: &str) {
    match r {
        Ok(r) => assert_failed_visibly(r, what),
        Err(e) => assert!(e.contains("client error"), "{what}: {e}"),
    }
}

/// A successful, complete response carrying exactly `expected`.
#[track_caller]
pub fn assert_served(r: &Response, expected: &[u8], what: &str) {
    assert_eq!(r.status, 200, "{what}: status {} body {}", r.status, String::from_utf8_lossy(&r.body));
    assert!(r.complete, "{what}: body ended with an error after {} bytes", r.body.len());
    assert!(r.body == expected, "{what}: {} bytes served, not the {} expected bytes", r.body.len(), expected.len());
}

/// A fault upstream must not look like success: either the body ends with
/// an error, or (if wharf saw the fault before sending headers) a 5xx.
#[track_caller]
fn assert_failed_visibly(r: &Response, what: &str) {
    if r.status == 200 {
        assert!(!r.complete, "{what}: 200 with a clean end of body ({} bytes); the body must end with an error", r.body.len());
    } else {
        assert!(r.status >= 500, "{what}: status {}, expected a broken 200 body or a 5xx", r.status);
    }
}

/// An OCI error response with this status and a non-empty error code.
#[track_caller]
fn assert_oci_error(r: &Response, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: body {}", String::from_utf8_lossy(&r.body));
    assert!(!r.error_code().is_empty(), "{what}: no OCI error code in {}", String::from_utf8_lossy(&r.body));
}

/// Opens `n` GETs at once and returns once every one has its response
/// headers; the bodies are read by the returned tasks.
async fn clients_with_headers(url: &str, n: usize) -> Vec<tokio::task::JoinHandle<Response>> {
    let (headers_tx, mut headers_rx) = mpsc::channel(n);
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let url = url.to_owned();
            let headers_tx = headers_tx.clone();
            tokio::spawn(async move {
                let stream = streaming::open(&url).await;
                let _ = headers_tx.send(()).await;
                stream.finish().await
            })
        })
        .collect();
    for i in 0..n {
        within_guard(&format!("response headers for client {} of {n} while the fill is stalled", i + 1), headers_rx.recv())
            .await
            .expect("client task ended before its headers");
    }
    tasks
}

async fn join_all(tasks: Vec<tokio::task::JoinHandle<Response>>) -> Vec<Response> {
    let mut out = Vec::new();
    for task in tasks {
        out.push(within_guard("client body", task).await.expect("client task"));
    }
    out
}

// ---------------------------------------------------------------------------
// Broken bodies.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_upstream_blob_fails_the_client_and_is_fetched_again_later() {
    let rig = Rig::start(&[]).await;
    let (bytes, digest) = rig.upstream_blob(100_000);
    rig.fake.script(&digest, Script::truncated(40_000));

    let first = rig.get_failing(&rig.blob_url(&digest)).await;
    assert_failed_or_closed(&first, "blob whose upstream body was cut short");

    rig.fake.script(&digest, Script::normal());
    let gets = rig.fake.count("GET", &digest);
    let second = rig.get(&rig.blob_url(&digest)).await;
    assert_served(&second, &bytes, "blob after the upstream recovered");
    assert!(rig.fake.count("GET", &digest) > gets, "nothing may be cached from a truncated body: wharf must fetch again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_with_wrong_bytes_fails_every_client_and_is_fetched_again_later() {
    let rig = Rig::start(&[]).await;
    let (bytes, digest) = rig.upstream_blob(100_000);
    let gate = Gate::new();
    rig.fake.script(&digest, Script::wrong_bytes().stalling_at(50_000, &gate));

    let url = rig.blob_url(&digest);
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { http::try_get(&url).await })
        })
        .collect();
    within_guard("upstream body reaches its stall point", gate.reached(1)).await;
    // All three on the one fill before it fails: a client arriving after
    // the failure would start a second fill (and see a second mismatch).
    let metrics_url = format!("{}/metrics", rig.wharf.admin_url());
    let joined = r#"wharf_cache_requests_total{kind="blob",result="coalesced"}"#;
    within_guard("two clients join the fill", async {
        while crate::admin::sample(&String::from_utf8_lossy(&http::get(&metrics_url).await.body), joined) < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    gate.open();
    for (i, client) in clients.into_iter().enumerate() {
        let r = within_guard("client body", client).await.expect("client task");
        assert_failed_or_closed(&r, &format!("client {i} of a blob whose upstream bytes do not match its digest"));
    }
    // One fill, one mismatch, counted before any client saw it fail.
    let metrics = http::get(&metrics_url).await;
    let text = String::from_utf8_lossy(&metrics.body);
    let series = r#"wharf_upstream_errors_total{kind="digest_mismatch",upstream="fake"}"#;
    assert_eq!(crate::admin::sample(&text, series), 1, "{text}");

    rig.fake.script(&digest, Script::normal());
    let gets = rig.fake.count("GET", &digest);
    let later = rig.get(&url).await;
    assert_served(&later, &bytes, "blob after the upstream recovered");
    assert!(rig.fake.count("GET", &digest) > gets, "nothing may be stored from wrong bytes: wharf must fetch again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_stalling_mid_body_fails_the_client_after_idle_timeout_and_wharf_stays_healthy() {
    let rig = Rig::start(&["idle_timeout = \"1s\""]).await;
    let (bytes, digest) = rig.upstream_blob(100_000);
    let (other_bytes, other_digest) = rig.upstream_blob(20_000);
    // A gate never opened: the upstream stalls for good.
    rig.fake.script(&digest, Script::normal().stalling_at(30_000, &Gate::new()));

    let stalled = rig.get_failing(&rig.blob_url(&digest)).await;
    assert_failed_or_closed(&stalled, "blob whose upstream stalled mid-body");
    let ends = within_guard("wharf lets go of the stalled upstream body", rig.fake.bodies_ended(&digest, 1)).await;
    assert_eq!(ends, vec![BodyEnd::Dropped], "wharf must hang up on an upstream body that stalls past idle_timeout");

    let other = rig.get(&rig.blob_url(&other_digest)).await;
    assert_served(&other, &other_bytes, "another blob after the stall");
    rig.fake.script(&digest, Script::normal());
    let again = rig.get(&rig.blob_url(&digest)).await;
    assert_served(&again, &bytes, "the stalled blob once the upstream recovered");
}

// ---------------------------------------------------------------------------
// Error statuses with nothing cached.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_5xx_with_nothing_cached_gives_502_with_an_oci_error() {
    let rig = Rig::start(&[]).await;
    let image = Image::random(&[1000]);
    rig.fake.put_image("v1", &image);
    let layer = &image.layers[0].digest;
    rig.fake.script("v1", Script::status(500));
    rig.fake.script(layer, Script::status(503));

    assert_oci_error(&rig.get(&rig.manifest_url("v1")).await, 502, "manifest when upstream answers 500");
    assert_oci_error(&rig.get(&rig.blob_url(layer)).await, 502, "blob when upstream answers 503");
}

/// An upstream's manifest goes through the same bounded parse as a pushed
/// one: nested 200,000 deep (once taken, cached and served) or cut short,
/// it is a 502, is not cached, and wharf goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_upstream_manifest_is_a_502_and_is_not_cached() {
    let rig = Rig::start(&[]).await;
    let oci = "application/vnd.oci.image.manifest.v1+json";
    let deep = format!(r#"{{"schemaVersion":2,"mediaType":"{oci}","x":{}{}}}"#, "[".repeat(200_000), "]".repeat(200_000));
    let deep_digest = rig.fake.put_manifest(Some("deep"), oci, deep);
    let cut_digest = rig.fake.put_manifest(Some("cut"), oci, r#"{"schemaVersion":2,"config":"#);
    for reference in ["deep", deep_digest.as_str(), "cut", cut_digest.as_str()] {
        let r = rig.get(&rig.manifest_url(reference)).await;
        assert_oci_error(&r, 502, reference);
    }
    // Asked for again, it is fetched again: nothing was kept.
    let before = rig.fake.count("GET", &deep_digest);
    assert_oci_error(&rig.get(&rig.manifest_url(&deep_digest)).await, 502, "deep, again");
    assert_eq!(rig.fake.count("GET", &deep_digest), before + 1, "the refused manifest was not cached");
    let image = Image::random(&[1000]);
    rig.fake.put_image("v1", &image);
    assert_served(&rig.get(&rig.manifest_url("v1")).await, &image.manifest.bytes, "a good manifest after the bad ones");
}

/// A cold pull asks the upstream no more than a client pulling straight
/// from it would: one GET for a tag never seen, one per blob. A tag
/// already known is revalidated with a HEAD once its `tag_ttl` is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_pull_costs_the_upstream_one_request_per_object() {
    let rig = Rig::start(&["tag_ttl = \"0s\""]).await;
    let image = Image::random(&[1000, 2000]);
    rig.fake.put_image("v1", &image);
    assert_served(&rig.get(&rig.manifest_url("v1")).await, &image.manifest.bytes, "cold tag");
    for blob in image.layers.iter().chain([&image.config]) {
        assert_served(&rig.get(&rig.blob_url(&blob.digest)).await, &blob.bytes, "cold blob");
        assert_eq!((rig.fake.count("HEAD", &blob.digest), rig.fake.count("GET", &blob.digest)), (0, 1), "one GET per blob");
    }
    assert_eq!((rig.fake.count("HEAD", "v1"), rig.fake.count("GET", "v1")), (0, 1), "one GET for a tag never seen");
    assert_eq!(rig.fake.count("GET", &image.manifest.digest), 0, "and no second GET by digest");
    // Known now, and out of its ttl: a HEAD says it has not moved.
    assert_served(&rig.get(&rig.manifest_url("v1")).await, &image.manifest.bytes, "known tag");
    assert_eq!((rig.fake.count("HEAD", "v1"), rig.fake.count("GET", "v1")), (1, 1), "a known tag is revalidated by HEAD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_not_answering_within_response_timeout_gives_504() {
    let rig = Rig::start(&["response_timeout = \"1s\"", "retries = 0"]).await;
    let image = Image::random(&[1000]);
    rig.fake.put_image("v1", &image);
    // Never opened: the upstream accepts the request and never answers.
    rig.fake.script("v1", Script::hold_headers(&Gate::new()));

    assert_oci_error(&rig.get(&rig.manifest_url("v1")).await, 504, "manifest when upstream never answers");
    let metrics = http::get(&format!("{}/metrics", rig.wharf.admin_url())).await;
    let text = String::from_utf8_lossy(&metrics.body);
    let errors = r#"wharf_upstream_errors_total{kind="timeout",upstream="fake"}"#;
    assert_eq!(crate::admin::sample(&text, errors), 1, "{text}");
    // A tag never seen is asked for with one GET (no HEAD first).
    let exchanges = r#"wharf_upstream_requests_total{op="get_manifest",status="timeout",upstream="fake"}"#;
    assert_eq!(crate::admin::sample(&text, exchanges), 1, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_503_once_is_retried_transparently() {
    let rig = Rig::start(&[]).await;
    let image = Image::random(&[1000]);
    rig.fake.put_image("v1", &image);
    let layer = &image.layers[0];
    rig.fake.script("v1", Script::status(503).times(1));
    rig.fake.script(&layer.digest, Script::status(503).times(1));

    assert_served(&rig.get(&rig.manifest_url("v1")).await, &image.manifest.bytes, "manifest after one 503");
    assert_served(&rig.get(&rig.blob_url(&layer.digest)).await, &layer.bytes, "blob after one 503");
    for reference in ["v1", layer.digest.as_str()] {
        let asked = rig.fake.count("GET", reference) + rig.fake.count("HEAD", reference);
        assert!(asked >= 2, "{reference}: upstream asked {asked} times; the 503 must have been retried");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_429_with_nothing_cached_gives_429_with_retry_after() {
    let rig = Rig::start(&[]).await;
    let image = Image::random(&[1000]);
    rig.fake.put_image("v1", &image);
    let layer = &image.layers[0].digest;
    rig.fake.script("v1", Script::too_many_requests(7));
    rig.fake.script(layer, Script::too_many_requests(7));

    for url in [rig.manifest_url("v1"), rig.blob_url(layer)] {
        let r = rig.get(&url).await;
        assert_eq!(r.status, 429, "{url}: body {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.error_code(), "TOOMANYREQUESTS", "{url}");
        assert_eq!(r.header("retry-after"), Some("7"), "{url}: the upstream's Retry-After must be passed on");
    }
}

// ---------------------------------------------------------------------------
// Token auth.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_challenge_is_answered_with_a_token_that_later_pulls_reuse() {
    let rig = Rig::start(&["tag_ttl = \"0s\""]).await;
    let image = Image::random(&[1000]);
    rig.fake.put_image("v1", &image);
    rig.fake.require_bearer_token();

    assert_served(&rig.get(&rig.manifest_url("v1")).await, &image.manifest.bytes, "manifest behind a bearer challenge");
    assert_eq!(rig.fake.token_requests(), 1, "one token for the first pull");

    // tag_ttl 0s: the second pull revalidates the tag upstream.
    assert_served(&rig.get(&rig.manifest_url("v1")).await, &image.manifest.bytes, "second pull of the tag");
    let layer = &image.layers[0];
    assert_served(&rig.get(&rig.blob_url(&layer.digest)).await, &layer.bytes, "layer of the same repository");
    let authorized = rig
        .fake
        .requests()
        .iter()
        .filter(|s| s.path.ends_with("/manifests/v1") && s.header("authorization").is_some_and(|a| a.starts_with("Bearer ")))
        .count();
    assert!(authorized >= 2, "the tag was revalidated with the token only {authorized} time(s)");
    assert_eq!(rig.fake.token_requests(), 1, "later pulls of the same repository must reuse the token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_is_fetched_with_the_configured_credentials() {
    let rig = Rig::start(&["username = \"alice\"", "password = \"s3cret\""]).await;
    let image = Image::random(&[1000]);
    rig.fake.put_image("v1", &image);
    // The fake's token endpoint refuses requests without these credentials.
    rig.fake.require_bearer_token_with_credentials("alice", "s3cret");

    assert_served(&rig.get(&rig.manifest_url("v1")).await, &image.manifest.bytes, "manifest behind an authenticated token endpoint");
    let tokens: Vec<_> = rig.fake.requests().into_iter().filter(|s| s.path == "/token").collect();
    assert!(!tokens.is_empty());
    assert!(
        tokens.iter().all(|s| s.header("authorization").is_some_and(|a| a.starts_with("Basic "))),
        "every token request must carry the configured credentials"
    );
}

// ---------------------------------------------------------------------------
// Tags, digests and freshness.

/// Caches tag `v1` with tag_ttl 0s, breaks the upstream with `fault`, and
/// checks the tag is still served, from the cache.
async fn expired_tag_served_stale(fault: impl FnOnce(&Rig, &Image) -> Option<Script>) {
    let rig = Rig::start(&["tag_ttl = \"0s\"", "retries = 0"]).await;
    let image = Image::random(&[1000]);
    rig.fake.put_image("v1", &image);
    assert_served(&rig.get(&rig.manifest_url("v1")).await, &image.manifest.bytes, "first pull of the tag");

    let asked = rig.fake.count("GET", "v1") + rig.fake.count("HEAD", "v1");
    let reachable = match fault(&rig, &image) {
        Some(script) => {
            rig.fake.script("v1", script);
            true
        }
        None => {
            within_guard("fake upstream shutdown", rig.fake.shutdown()).await;
            false
        }
    };
    let stale = rig.get(&rig.manifest_url("v1")).await;
    assert_served(&stale, &image.manifest.bytes, "expired tag while the upstream fails");
    assert_eq!(stale.header("docker-content-digest"), Some(image.manifest.digest.as_str()));
    let metrics = http::get(&format!("{}/metrics", rig.wharf.admin_url())).await;
    let text = String::from_utf8_lossy(&metrics.body);
    let stale_count = crate::admin::sample(&text, r#"wharf_cache_requests_total{kind="manifest",result="stale"}"#);
    assert_eq!(stale_count, 1, "the stale answer is counted: {text}");
    if reachable {
        let now = rig.fake.count("GET", "v1") + rig.fake.count("HEAD", "v1");
        assert!(now > asked, "an expired tag must be revalidated upstream before falling back to the cache");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tag_is_served_stale_when_upstream_answers_5xx() {
    expired_tag_served_stale(|_, _| Some(Script::status(500))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tag_is_served_stale_when_upstream_rate_limits() {
    expired_tag_served_stale(|_, _| Some(Script::too_many_requests(7))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tag_is_served_stale_when_upstream_is_unreachable() {
    expired_tag_served_stale(|_, _| None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tag_deleted_upstream_gives_404_manifest_unknown() {
    let rig = Rig::start(&["tag_ttl = \"0s\""]).await;
    let image = Image::random(&[1000]);
    rig.fake.put_image("v1", &image);
    assert_served(&rig.get(&rig.manifest_url("v1")).await, &image.manifest.bytes, "first pull of the tag");

    rig.fake.remove_tag("v1");
    let r = rig.get(&rig.manifest_url("v1")).await;
    assert_eq!(r.status, 404, "a tag the upstream says is gone must not be served stale");
    assert_eq!(r.error_code(), "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_tag_is_served_without_contacting_upstream() {
    let rig = Rig::start(&["tag_ttl = \"1h\""]).await;
    let image = Image::random(&[1000]);
    rig.fake.put_image("v1", &image);
    assert_served(&rig.get(&rig.manifest_url("v1")).await, &image.manifest.bytes, "first pull of the tag");

    let seen = rig.fake.requests().len();
    let again = rig.get(&rig.manifest_url("v1")).await;
    assert_served(&again, &image.manifest.bytes, "second pull within tag_ttl");
    assert_eq!(again.header("docker-content-digest"), Some(image.manifest.digest.as_str()));
    assert_eq!(rig.fake.requests().len(), seen, "a tag within its tag_ttl must not touch the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_digest_is_served_without_contacting_upstream() {
    let rig = Rig::start(&["tag_ttl = \"0s\""]).await;
    let image = Image::random(&[1000]);
    rig.fake.put_image("v1", &image);
    let manifest = &image.manifest;
    let layer = &image.layers[0];
    assert_served(&rig.get(&rig.manifest_url(&manifest.digest)).await, &manifest.bytes, "manifest by digest");
    assert_served(&rig.get(&rig.blob_url(&layer.digest)).await, &layer.bytes, "layer");

    // Should wharf ask anyway, it would get an error and could not serve.
    rig.fake.script(&manifest.digest, Script::status(500));
    rig.fake.script(&layer.digest, Script::status(500));
    let seen = rig.fake.requests().len();
    assert_served(&rig.get(&rig.manifest_url(&manifest.digest)).await, &manifest.bytes, "cached manifest by digest");
    assert_served(&rig.get(&rig.blob_url(&layer.digest)).await, &layer.bytes, "cached layer");
    for url in [rig.manifest_url(&manifest.digest), rig.blob_url(&layer.digest)] {
        let head = within_guard("HEAD", http::request("HEAD", &url, &[])).await;
        assert_eq!(head.status, 200, "HEAD {url}");
    }
    assert_eq!(rig.fake.requests().len(), seen, "content cached by digest must never touch the upstream again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_head_miss_is_answered_from_an_upstream_head_without_fetching() {
    let rig = Rig::start(&[]).await;
    let (bytes, digest) = rig.upstream_blob(30_000);

    let r = within_guard("HEAD", http::request("HEAD", &rig.blob_url(&digest), &[])).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(bytes.len().to_string().as_str()));
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    assert!(rig.fake.count("HEAD", &digest) >= 1, "the miss must be answered from an upstream HEAD");
    assert_eq!(rig.fake.count("GET", &digest), 0, "a HEAD must not fetch the blob");
}

// ---------------------------------------------------------------------------
// Concurrent cold pulls.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_on_a_cold_blob_share_one_upstream_fetch() {
    let rig = Rig::start(&[]).await;
    let (bytes, digest) = rig.upstream_blob(256 * 1024);
    let gate = Gate::new();
    rig.fake.script(&digest, Script::normal().in_chunks(8 * 1024, Duration::from_millis(2)).stalling_at(64 * 1024, &gate));

    // Every client is in flight, with headers, while the upstream body is
    // held at the gate; only then may the fill go on.
    let clients = clients_with_headers(&rig.blob_url(&digest), 10).await;
    gate.open();
    for (i, r) in join_all(clients).await.iter().enumerate() {
        assert_served(r, &bytes, &format!("concurrent client {i}"));
    }
    assert_eq!(rig.fake.count("GET", &digest), 1, "concurrent clients of one cold blob must share one upstream GET");
}

/// The upstream sends 64 KiB of a 256 KiB blob, waits for the gate, then
/// sends the rest slowly, so a fill cancelled when a client hangs up is cut
/// off upstream (the fake sees its body dropped) rather than finishing first.
fn stall_then_trickle(rig: &Rig, digest: &str, gate: &Gate) {
    rig.fake.script(digest, Script::normal().in_chunks(4 * 1024, Duration::from_millis(5)).stalling_at(64 * 1024, gate));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sole_client_hanging_up_mid_stream_does_not_cancel_the_fill() {
    let rig = Rig::start(&[]).await;
    let (bytes, digest) = rig.upstream_blob(256 * 1024);
    let gate = Gate::new();
    stall_then_trickle(&rig, &digest, &gate);

    let url = rig.blob_url(&digest);
    let mut client = within_guard("headers", streaming::open(&url)).await;
    assert_eq!(client.status, 200);
    within_guard("first bytes", client.read_at_least(1)).await;
    client.hang_up();
    gate.open();

    let ends = within_guard("upstream body ends", rig.fake.bodies_ended(&digest, 1)).await;
    assert_eq!(ends, vec![BodyEnd::Sent], "the fill must read the whole upstream body after its only client left");
    assert_served(&rig.get(&url).await, &bytes, "later request");
    assert_eq!(rig.fake.count("GET", &digest), 1, "the completed fill must serve later requests from the cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_client_hanging_up_mid_stream_leaves_the_fill_to_the_others() {
    let rig = Rig::start(&[]).await;
    let (bytes, digest) = rig.upstream_blob(256 * 1024);
    let gate = Gate::new();
    stall_then_trickle(&rig, &digest, &gate);

    let url = rig.blob_url(&digest);
    let mut leaver = within_guard("first client's headers", streaming::open(&url)).await;
    assert_eq!(leaver.status, 200);
    within_guard("first client's first bytes", leaver.read_at_least(1)).await;
    let follower = clients_with_headers(&url, 1).await;
    leaver.hang_up();
    gate.open();

    let ends = within_guard("upstream body ends", rig.fake.bodies_ended(&digest, 1)).await;
    assert_eq!(ends, vec![BodyEnd::Sent], "the fill must read the whole upstream body after the client that started it left");
    let follower = join_all(follower).await;
    assert_served(&follower[0], &bytes, "client that stayed");
    assert_served(&rig.get(&url).await, &bytes, "later request");
    assert_eq!(rig.fake.count("GET", &digest), 1, "one upstream GET for both clients and the later request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_shared_fill_ends_every_waiting_client_body_with_an_error() {
    let rig = Rig::start(&[]).await;
    let (bytes, digest) = rig.upstream_blob(256 * 1024);
    let gate = Gate::new();
    rig.fake.script(&digest, Script::normal().stalling_at(64 * 1024, &gate).truncated_at(64 * 1024));

    let clients = clients_with_headers(&rig.blob_url(&digest), 5).await;
    gate.open();
    for (i, r) in join_all(clients).await.iter().enumerate() {
        assert_failed_visibly(r, &format!("client {i} of a shared fill whose upstream body was cut short"));
    }

    rig.fake.script(&digest, Script::normal());
    assert_served(&rig.get(&rig.blob_url(&digest)).await, &bytes, "blob after the upstream recovered");
}

// ---------------------------------------------------------------------------
// Names that must not reach any host.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfigured_upstream_names_get_name_unknown_and_reach_no_host() {
    let fake = FakeUpstream::start().await;
    // Reachable but not configured: wharf must never connect to it.
    let evil = FakeUpstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let wharf = Wharf::start(dir.path(), &[UpstreamEntry::new("fake", &fake.url())]);
    let image = Image::random(&[1000]);
    fake.put_image("v1", &image);
    evil.put_image("v1", &image);

    let base = wharf.url();
    let digest = &image.layers[0].digest;
    let evil_host = evil.addr().to_string();
    for path in [
        "/v2/evil.example/x/manifests/v1".to_owned(),
        format!("/v2/evil.example/x/blobs/{digest}"),
        "/v2/x/manifests/v1?ns=evil.example".to_owned(),
        format!("/v2/x/manifests/v1?ns={evil_host}"),
        format!("/v2/team/app/blobs/{digest}?ns={evil_host}"),
    ] {
        let r = within_guard(&path, http::get(&format!("{base}{path}"))).await;
        assert_eq!(r.status, 404, "{path}: body {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.error_code(), "NAME_UNKNOWN", "{path}");
    }
    assert!(evil.requests().is_empty(), "wharf connected to an unconfigured host: {:?}", evil.requests());
    assert!(fake.requests().is_empty(), "unroutable names reached the configured upstream: {:?}", fake.requests());

    // The configured upstream is reachable by its name, so the refusals
    // above are about the names, not a broken setup.
    let ok = within_guard("named upstream", http::get(&format!("{base}/v2/fake/team/app/manifests/v1"))).await;
    assert_served(&ok, &image.manifest.bytes, "manifest via the configured upstream's name");
}

/// Bytes wharf has received from upstreams so far, from its metrics.
async fn upstream_bytes_received(rig: &Rig) -> u64 {
    let text = http::get(&format!("http://{}/metrics", rig.wharf.admin)).await;
    String::from_utf8_lossy(&text.body)
        .lines()
        .filter(|l| l.starts_with("wharf_upstream_bytes_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_reads_early_bytes_from_disk_then_follows_the_live_fill() {
    let rig = Rig::start(&[]).await;
    let (bytes, digest) = rig.upstream_blob(12 << 20);
    let gate = Gate::new();
    rig.fake.script(&digest, Script::normal().stalling_at(10 << 20, &gate));
    let url = rig.blob_url(&digest);
    let first = tokio::spawn({
        let url = url.clone();
        async move { http::get(&url).await }
    });
    within_guard("upstream body reaches its stall point", gate.reached(1)).await;
    // Wait until wharf holds the 10 MiB, more than its in-memory window of
    // recent bytes: the late joiner's first bytes must come from disk.
    within_guard("wharf receives the bytes before the stall", async {
        while upstream_bytes_received(&rig).await < 10 << 20 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // While the upstream is still stalled, the late joiner gets 9 MiB:
    // more than the window of recent frames, so most come from disk.
    let mut late = within_guard("late joiner's headers", streaming::open(&url)).await;
    assert_eq!(late.status, 200);
    let early = within_guard("late joiner reads what is on disk", late.read_at_least(9 << 20)).await;
    assert!(early >= 9 << 20, "late joiner got {early} bytes before the upstream resumed");
    gate.open();
    let first = within_guard("first client", first).await.expect("first client task");
    let late = within_guard("late joiner", late.finish()).await;
    assert_served(&first, &bytes, "first client");
    assert_served(&late, &bytes, "late joiner");
    assert_eq!(rig.fake.count("GET", &digest), 1, "one upstream GET for both clients");
}
