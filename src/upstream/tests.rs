//! Behaviour of the upstream client against in-process servers.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;

use super::test_support::{config, credentials, frames, respond, respond_with, silent_server, TestServer};
use super::*;
use crate::oci::media::OCI_MANIFEST;
use crate::oci::Algorithm;

const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;

fn repo(name: &str) -> RepositoryName {
    name.parse().unwrap()
}

fn tag(t: &str) -> Reference {
    t.parse().unwrap()
}

fn manifest_digest() -> Digest {
    Digest::of(Algorithm::Sha256, MANIFEST)
}

fn manifest_response() -> Response<test_support::TestBody> {
    let digest = manifest_digest().to_string();
    respond(200, &[("content-type", OCI_MANIFEST), ("docker-content-digest", &digest)], MANIFEST)
}

fn bearer_challenge(realm: &str, extra: &str) -> String {
    format!(r#"Bearer realm="{realm}",service="test-registry"{extra}"#)
}

fn upstream(cfg: &UpstreamConfig) -> Upstream {
    Upstream::new(cfg, &Metrics::new().unwrap()).unwrap()
}

async fn read_all(body: ResponseBody) -> Result<Bytes, UpstreamError> {
    Ok(body.collect().await?.to_bytes())
}

// ---------------------------------------------------------------------------
// Authentication

#[tokio::test]
async fn bearer_challenge_fetches_a_token_once_and_reuses_it() {
    let tokens = TestServer::start(|_| respond(200, &[], r#"{"token":"tok-1","expires_in":300}"#)).await;
    let challenge = bearer_challenge(&format!("{}/token", tokens.url()), r#",scope="repository:library/alpine:pull""#);
    let registry = TestServer::start(move |seen| match seen.header("authorization") {
        Some("Bearer tok-1") => manifest_response(),
        _ => respond(401, &[("www-authenticate", &challenge)], ""),
    })
    .await;
    let up = upstream(&config(&registry.url()));

    let fetched = up.get_manifest(&repo("library/alpine"), &tag("3.20"), 1 << 20).await.unwrap();
    assert_eq!(fetched.bytes, MANIFEST);
    assert_eq!(fetched.digest, Some(manifest_digest()));
    let head = up.head_manifest(&repo("library/alpine"), &tag("3.20")).await.unwrap();
    assert_eq!(head.digest, Some(manifest_digest()));
    assert_eq!(head.size, Some(MANIFEST.len() as u64));

    let token_requests = tokens.seen();
    assert_eq!(token_requests.len(), 1, "the second request must reuse the cached token");
    let t = &token_requests[0];
    assert_eq!(t.path(), "/token");
    assert_eq!(t.uri.query(), Some("service=test-registry&scope=repository%3Alibrary%2Falpine%3Apull"));
    assert_eq!(t.header("authorization"), None, "no credentials configured: anonymous token");
    assert!(t.header("user-agent").is_some_and(|ua| ua.starts_with("wharf/")));

    let seen = registry.seen();
    let auth: Vec<_> = seen.iter().map(|s| s.header("authorization")).collect();
    assert_eq!(auth, [None, Some("Bearer tok-1"), Some("Bearer tok-1")]);
    assert_eq!(seen[2].method, Method::HEAD);
    assert_eq!(seen[0].path(), "/v2/library/alpine/manifests/3.20");
    assert!(seen.iter().all(|s| s.header("accept") == Some(ACCEPT_ALL_MANIFESTS)));
    assert!(seen.iter().all(|s| s.header("user-agent") == Some(concat!("wharf/", env!("CARGO_PKG_VERSION")))));
}

#[tokio::test]
async fn concurrent_requests_needing_a_token_share_one_fetch() {
    const CLIENTS: usize = 8;
    // The token endpoint answers only once every client has been challenged,
    // so all of them are waiting for a token at the same time.
    let (challenged_tx, challenged_rx) = tokio::sync::watch::channel(0usize);
    let tokens = TestServer::start_async(move |_| {
        let mut challenged = challenged_rx.clone();
        Box::pin(async move {
            let _ = challenged.wait_for(|n| *n >= CLIENTS).await;
            respond(200, &[], r#"{"token":"shared"}"#)
        })
    })
    .await;
    let challenge = bearer_challenge(&format!("{}/token", tokens.url()), "");
    let registry = TestServer::start(move |seen| match seen.header("authorization") {
        Some("Bearer shared") => manifest_response(),
        _ => {
            challenged_tx.send_modify(|n| *n += 1);
            respond(401, &[("www-authenticate", &challenge)], "")
        }
    })
    .await;
    let up = upstream(&config(&registry.url()));
    let name = repo("team/app");
    let reference = tag("v1");
    let all = futures_util::future::join_all((0..CLIENTS).map(|_| up.get_manifest(&name, &reference, 1 << 20))).await;
    assert!(all.iter().all(|r| r.as_ref().is_ok_and(|m| m.bytes == MANIFEST)), "{all:?}");
    assert_eq!(tokens.seen().len(), 1);
}

#[tokio::test]
async fn token_fetch_sends_credentials_and_defaults_the_scope_to_pull() {
    let tokens = TestServer::start(|_| respond(200, &[], r#"{"access_token":"tok"}"#)).await;
    let challenge = bearer_challenge(&format!("{}/token", tokens.url()), "");
    let registry = TestServer::start(move |seen| match seen.header("authorization") {
        Some("Bearer tok") => respond(200, &[("content-length", "3")], "abc"),
        _ => respond(401, &[("www-authenticate", &challenge)], ""),
    })
    .await;
    let mut cfg = config(&registry.url());
    cfg.credentials = credentials("alice", "s3cret");
    let up = upstream(&cfg);
    let head = up.head_blob(&repo("team/app"), &manifest_digest()).await.unwrap();
    assert_eq!(head.size, Some(3));
    let t = &tokens.seen()[0];
    assert_eq!(t.header("authorization"), Some("Basic YWxpY2U6czNjcmV0"));
    assert_eq!(t.uri.query(), Some("service=test-registry&scope=repository%3Ateam%2Fapp%3Apull"));
}

#[tokio::test]
async fn a_rejected_cached_token_is_replaced_once() {
    let issued = Arc::new(AtomicUsize::new(0));
    let tokens = TestServer::start({
        let issued = issued.clone();
        move |_| {
            let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
            respond(200, &[], format!(r#"{{"token":"tok-{n}"}}"#))
        }
    })
    .await;
    let challenge = bearer_challenge(&format!("{}/token", tokens.url()), "");
    // tok-1 works once, then is revoked; tok-2 works.
    let tok1_used = AtomicBool::new(false);
    let registry = TestServer::start(move |seen| match seen.header("authorization") {
        Some("Bearer tok-1") if !tok1_used.swap(true, Ordering::SeqCst) => manifest_response(),
        Some("Bearer tok-2") => manifest_response(),
        _ => respond(401, &[("www-authenticate", &challenge)], ""),
    })
    .await;
    let up = upstream(&config(&registry.url()));
    for _ in 0..2 {
        up.get_manifest(&repo("r"), &tag("t"), 1 << 20).await.unwrap();
    }
    assert_eq!(issued.load(Ordering::SeqCst), 2);
    let auth: Vec<_> = registry.seen().iter().map(|s| s.header("authorization").map(str::to_owned)).collect();
    let expected = [None, Some("Bearer tok-1"), Some("Bearer tok-1"), Some("Bearer tok-2")];
    assert_eq!(auth, expected.map(|a| a.map(str::to_owned)));
}

#[tokio::test]
async fn a_401_after_authenticating_is_unauthorized_without_retrying() {
    let tokens = TestServer::start(|_| respond(200, &[], r#"{"token":"useless"}"#)).await;
    let challenge = bearer_challenge(&format!("{}/token", tokens.url()), r#",error="insufficient_scope""#);
    let registry = TestServer::start(move |_| respond(401, &[("www-authenticate", &challenge)], "")).await;
    let up = upstream(&config(&registry.url()));
    let err = up.get_manifest(&repo("private/app"), &tag("t"), 1 << 20).await.unwrap_err();
    assert_eq!(err, UpstreamError::Unauthorized);
    assert_eq!(err.metric_kind(), Some("http"));
    assert_eq!(registry.seen().len(), 2);
    assert_eq!(tokens.seen().len(), 1);
}

#[tokio::test]
async fn a_failing_token_endpoint_is_not_mistaken_for_missing_content() {
    let tokens = TestServer::start(|_| respond(404, &[], "")).await;
    let challenge = bearer_challenge(&format!("{}/token", tokens.url()), "");
    let registry = TestServer::start(move |_| respond(401, &[("www-authenticate", &challenge)], "")).await;
    let up = upstream(&config(&registry.url()));
    let err = up.get_manifest(&repo("r"), &tag("t"), 1 << 20).await.unwrap_err();
    assert_eq!(err, UpstreamError::Status(404));
}

#[tokio::test]
async fn basic_challenge_is_answered_then_credentials_are_sent_up_front() {
    let registry = TestServer::start(|seen| match seen.header("authorization") {
        Some("Basic YWxpY2U6czNjcmV0") => manifest_response(),
        _ => respond(401, &[("www-authenticate", r#"Basic realm="test registry""#)], ""),
    })
    .await;
    let mut cfg = config(&registry.url());
    cfg.credentials = credentials("alice", "s3cret");
    let up = upstream(&cfg);
    up.get_manifest(&repo("r"), &tag("t"), 1 << 20).await.unwrap();
    up.head_manifest(&repo("other"), &tag("t")).await.unwrap();
    let auth: Vec<_> = registry.seen().iter().map(|s| s.header("authorization").is_some()).collect();
    assert_eq!(auth, [false, true, true]);
}

#[tokio::test]
async fn basic_challenge_without_credentials_is_unauthorized() {
    let registry = TestServer::start(|_| respond(401, &[("www-authenticate", "Basic")], "")).await;
    let up = upstream(&config(&registry.url()));
    assert_eq!(up.head_blob(&repo("r"), &manifest_digest()).await.unwrap_err(), UpstreamError::Unauthorized);
    assert_eq!(registry.seen().len(), 1);
}

#[tokio::test]
async fn forbidden_is_unauthorized() {
    let registry = TestServer::start(|_| respond(403, &[], "")).await;
    let up = upstream(&config(&registry.url()));
    assert_eq!(up.head_manifest(&repo("r"), &tag("t")).await.unwrap_err(), UpstreamError::Unauthorized);
}

// ---------------------------------------------------------------------------
// Redirects

#[tokio::test]
async fn redirect_to_another_origin_drops_authorization() {
    let cdn = TestServer::start(|_| respond(200, &[], "blob-bytes")).await;
    let target = format!("{}/storage/blob?sig=abc", cdn.url());
    let registry = TestServer::start(move |seen| match seen.header("authorization") {
        Some(_) => respond(307, &[("location", &target)], ""),
        None => respond(401, &[("www-authenticate", "Basic")], ""),
    })
    .await;
    let mut cfg = config(&registry.url());
    cfg.credentials = credentials("alice", "s3cret");
    let up = upstream(&cfg);
    let blob = up.get_blob(&repo("r"), &manifest_digest()).await.unwrap();
    assert_eq!(blob.size, Some(10));
    assert_eq!(read_all(blob.body).await.unwrap(), "blob-bytes");

    let at_registry = registry.seen();
    assert_eq!(at_registry.len(), 2);
    assert!(at_registry[1].header("authorization").is_some());
    let at_cdn = cdn.seen();
    assert_eq!(at_cdn.len(), 1);
    assert_eq!(at_cdn[0].path(), "/storage/blob");
    assert_eq!(at_cdn[0].uri.query(), Some("sig=abc"));
    assert_eq!(at_cdn[0].header("authorization"), None, "credentials leaked to another origin");
    assert!(at_cdn[0].header("user-agent").is_some_and(|ua| ua.starts_with("wharf/")));
}

#[tokio::test]
async fn relative_redirect_within_the_origin_keeps_authorization() {
    let registry = TestServer::start(|seen| match (seen.header("authorization"), seen.path()) {
        (None, _) => respond(401, &[("www-authenticate", "Basic")], ""),
        (Some(_), "/storage/blob") => respond(200, &[], "blob-bytes"),
        (Some(_), _) => respond(302, &[("location", "/storage/blob")], ""),
    })
    .await;
    let mut cfg = config(&registry.url());
    cfg.credentials = credentials("alice", "s3cret");
    let up = upstream(&cfg);
    let blob = up.get_blob(&repo("r"), &manifest_digest()).await.unwrap();
    assert_eq!(read_all(blob.body).await.unwrap(), "blob-bytes");
    let seen = registry.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2].path(), "/storage/blob");
    assert!(seen[2].header("authorization").is_some());
}

#[tokio::test]
async fn redirect_loops_stop_after_five_hops() {
    let registry = TestServer::start(|_| respond(302, &[("location", "/again")], "")).await;
    let up = upstream(&config(&registry.url()));
    let err = up.get_blob(&repo("r"), &manifest_digest()).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Protocol(ref m) if m.contains("redirects")), "{err:?}");
    assert_eq!(registry.seen().len(), 6);
}

// ---------------------------------------------------------------------------
// Retries, statuses, limits and timeouts

#[tokio::test]
async fn unavailable_then_ok_is_retried() {
    let calls = AtomicUsize::new(0);
    let registry = TestServer::start(move |_| match calls.fetch_add(1, Ordering::SeqCst) {
        0 => respond(503, &[], ""),
        _ => manifest_response(),
    })
    .await;
    let up = upstream(&config(&registry.url()));
    let fetched = up.get_manifest(&repo("r"), &tag("t"), 1 << 20).await.unwrap();
    assert_eq!(fetched.bytes, MANIFEST);
    assert_eq!(registry.seen().len(), 2);
}

#[tokio::test]
async fn persistent_bad_gateway_gives_up_after_the_configured_retries() {
    let registry = TestServer::start(|_| respond(502, &[], "")).await;
    let mut cfg = config(&registry.url());
    cfg.retries = 1;
    let metrics = Metrics::new().unwrap();
    let up = Upstream::new(&cfg, &metrics).unwrap();
    let err = up.head_blob(&repo("r"), &manifest_digest()).await.unwrap_err();
    assert_eq!(err, UpstreamError::Status(502));
    assert_eq!(registry.seen().len(), 2);
    // Each attempt is one exchange and one error in the metrics.
    let text = metrics.render();
    let exchanges = format!(r#"wharf_upstream_requests_total{{op="head_blob",status="502",upstream="{}"}} 2"#, cfg.name);
    assert!(text.contains(&exchanges), "{text}");
    assert!(text.contains(&format!(r#"wharf_upstream_errors_total{{kind="http",upstream="{}"}} 2"#, cfg.name)), "{text}");
}

#[tokio::test]
async fn too_many_requests_carries_retry_after_and_is_not_retried() {
    let registry = TestServer::start(|_| respond(429, &[("retry-after", "7")], "")).await;
    let up = upstream(&config(&registry.url()));
    let err = up.get_manifest(&repo("r"), &tag("t"), 1 << 20).await.unwrap_err();
    assert_eq!(err, UpstreamError::TooManyRequests { retry_after: Some(Duration::from_secs(7)) });
    assert_eq!(registry.seen().len(), 1);
}

#[tokio::test]
async fn not_found_is_reported_and_not_retried() {
    let registry = TestServer::start(|_| respond(404, &[], r#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#)).await;
    let up = upstream(&config(&registry.url()));
    assert_eq!(up.get_manifest(&repo("r"), &tag("t"), 1 << 20).await.unwrap_err(), UpstreamError::NotFound);
    assert_eq!(up.head_blob(&repo("r"), &manifest_digest()).await.unwrap_err(), UpstreamError::NotFound);
    assert_eq!(registry.seen().len(), 2);
}

#[tokio::test]
async fn other_client_errors_are_reported_by_status() {
    let registry = TestServer::start(|_| respond(400, &[], "")).await;
    let up = upstream(&config(&registry.url()));
    assert_eq!(up.head_manifest(&repo("r"), &tag("t")).await.unwrap_err(), UpstreamError::Status(400));
    assert_eq!(registry.seen().len(), 1);
}

#[tokio::test]
async fn oversize_manifests_are_refused() {
    // Declared by Content-Length, and discovered while reading a chunked body.
    let registry = TestServer::start(|seen| match seen.path() {
        "/v2/r/manifests/declared" => respond(200, &[], vec![b'x'; 100]),
        _ => respond_with(200, &[], frames(&[b"0123456789", b"0123456789"], false)),
    })
    .await;
    let up = upstream(&config(&registry.url()));
    for reference in ["declared", "chunked"] {
        let err = up.get_manifest(&repo("r"), &tag(reference), 15).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Protocol(ref m) if m.contains("larger than 15")), "{reference}: {err:?}");
    }
    assert_eq!(registry.seen().len(), 2, "a refused manifest is not fetched again");
    // At the limit exactly is fine.
    assert_eq!(up.get_manifest(&repo("r"), &tag("chunked"), 20).await.unwrap().bytes, "01234567890123456789");
}

#[tokio::test]
async fn malformed_digest_header_is_a_protocol_error() {
    let registry = TestServer::start(|_| respond(200, &[("docker-content-digest", "md5:abc")], "")).await;
    let up = upstream(&config(&registry.url()));
    let err = up.head_manifest(&repo("r"), &tag("t")).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn silent_upstream_times_out_waiting_for_headers() {
    let (url, _server) = silent_server().await;
    let mut cfg = config(&url);
    cfg.response_timeout = Duration::from_millis(150);
    cfg.retries = 0;
    let up = upstream(&cfg);
    let started = std::time::Instant::now();
    let err = up.head_manifest(&repo("r"), &tag("t")).await.unwrap_err();
    assert_eq!(err, UpstreamError::Timeout);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_stalled_blob_body_ends_with_a_timeout() {
    let registry = TestServer::start(|_| respond_with(200, &[], frames(&[b"partial"], true))).await;
    let mut cfg = config(&registry.url());
    cfg.idle_timeout = Duration::from_millis(150);
    let up = upstream(&cfg);
    let mut blob = up.get_blob(&repo("r"), &manifest_digest()).await.unwrap();
    assert_eq!(blob.size, None);
    let first = blob.body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "partial");
    assert_eq!(blob.body.frame().await.unwrap().unwrap_err(), UpstreamError::Timeout);
}

#[tokio::test]
async fn a_blob_body_holds_its_turn_until_it_is_dropped_midway() {
    use futures_util::FutureExt as _;

    let registry = TestServer::start(|seen| match seen.method {
        Method::HEAD => respond(200, &[], ""),
        _ => respond_with(200, &[], frames(&[b"first"], true)),
    })
    .await;
    let mut cfg = config(&registry.url());
    cfg.max_concurrent_requests = 1;
    let up = upstream(&cfg);
    let (name, digest) = (repo("a"), manifest_digest());

    let mut blob = up.get_blob(&name, &digest).await.unwrap();
    let first = blob.body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "first");
    assert_eq!(up.inner.concurrency.available(), 0, "the body being streamed holds the one turn");
    let mut head = std::pin::pin!(up.head_blob(&name, &digest));
    assert!(head.as_mut().now_or_never().is_none(), "a second request waits for the turn");

    // The client of this blob goes away halfway through its body.
    drop(blob);
    head.await.unwrap();
    assert_eq!(registry.seen().len(), 2);
    assert_eq!(up.inner.concurrency.available(), 1, "a finished HEAD gives its turn back");
}

#[tokio::test]
async fn refused_connections_are_connect_errors() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let mut cfg = config(&url);
    cfg.retries = 0;
    let err = upstream(&cfg).head_manifest(&repo("r"), &tag("t")).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Connect(_)), "{err:?}");
    assert_eq!(err.metric_kind(), Some("connect"));
}

// ---------------------------------------------------------------------------
// URLs, tags and referrers

#[tokio::test]
async fn the_configured_path_prefix_is_kept() {
    let registry = TestServer::start(|_| manifest_response()).await;
    let up = upstream(&config(&format!("{}/mirror", registry.url())));
    up.head_manifest(&repo("a/b"), &Reference::Digest(manifest_digest())).await.unwrap();
    assert_eq!(registry.seen()[0].path(), format!("/mirror/v2/a/b/manifests/{}", manifest_digest()));
}

#[tokio::test]
async fn tags_list_relays_pagination_and_reads_the_next_link() {
    let registry = TestServer::start(|seen| match seen.uri.query() {
        Some("n=2&last=b") => respond(
            200,
            &[("link", r#"</v2/r/tags/list?n=2&last=d>; rel="next""#)],
            r#"{"name":"r","tags":["c","d"]}"#,
        ),
        _ => respond(200, &[], r#"{"name":"r","tags":null}"#),
    })
    .await;
    let up = upstream(&config(&registry.url()));
    let page = up.tags_list(&repo("r"), Some(2), Some("b")).await.unwrap();
    assert_eq!(page, TagsPage { tags: vec!["c".into(), "d".into()], has_more: true });
    let empty = up.tags_list(&repo("r"), None, None).await.unwrap();
    assert_eq!(empty, TagsPage { tags: vec![], has_more: false });
    assert_eq!(registry.seen()[1].uri.query(), None);
    assert_eq!(registry.seen()[1].path(), "/v2/r/tags/list");
}

#[tokio::test]
async fn referrers_passes_the_filter_and_reports_whether_it_was_applied() {
    let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    let registry = TestServer::start(move |seen| match seen.uri.query() {
        Some(_) => respond(200, &[("content-type", OCI_INDEX), ("oci-filters-applied", "artifactType")], index),
        None => respond(200, &[("content-type", OCI_INDEX)], index),
    })
    .await;
    let up = upstream(&config(&registry.url()));
    let digest = manifest_digest();
    let filtered = up.referrers(&repo("r"), &digest, Some("application/vnd.example+json")).await.unwrap();
    assert!(filtered.filter_applied);
    assert_eq!(filtered.bytes, index);
    let all = up.referrers(&repo("r"), &digest, None).await.unwrap();
    assert!(!all.filter_applied);
    let seen = registry.seen();
    assert_eq!(seen[0].path(), format!("/v2/r/referrers/{digest}"));
    assert_eq!(seen[0].uri.query(), Some("artifactType=application%2Fvnd.example%2Bjson"));
    assert_eq!(seen[0].header("accept"), Some(OCI_INDEX));
}

#[test]
fn link_and_filter_headers_are_parsed_as_lists() {
    let headers = |pairs: &[(&'static str, &'static str)]| {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    };
    assert!(has_next_link(&headers(&[("link", r#"</a>; rel="prev", </b>; rel="next""#)])));
    assert!(has_next_link(&headers(&[("link", "</b>; REL=next")])));
    assert!(has_next_link(&headers(&[("link", r#"</b>; rel="last next""#)])));
    assert!(!has_next_link(&headers(&[("link", r#"</b?rel=next>; rel="prev""#)])));
    assert!(!has_next_link(&headers(&[])));
    assert!(filters_applied(&headers(&[("oci-filters-applied", "foo, artifactType")]), "artifactType"));
    assert!(!filters_applied(&headers(&[("oci-filters-applied", "artifactTypes")]), "artifactType"));
}

#[test]
fn backoff_grows_and_is_capped() {
    let ms = |r| backoff(r).as_millis();
    assert_eq!([ms(0), ms(1), ms(2), ms(3), ms(40)], [100, 300, 900, 2000, 2000]);
}

/// Callers spawn these futures onto the multi-threaded runtime.
#[test]
fn request_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let up = upstream(&config("http://127.0.0.1:9"));
    let (name, reference, digest) = (repo("r"), tag("t"), manifest_digest());
    assert_send(&up.head_manifest(&name, &reference));
    assert_send(&up.get_manifest(&name, &reference, 1));
    assert_send(&up.head_blob(&name, &digest));
    assert_send(&up.get_blob(&name, &digest));
    assert_send(&up.tags_list(&name, Some(1), Some("a")));
    assert_send(&up.referrers(&name, &digest, Some("x")));
}

// ---------------------------------------------------------------------------
// TLS

mod tls {
    use std::io::{Read, Write};

    use super::*;

    const CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/upstream/testdata/ca.pem");

    /// A blocking TLS server (rustls over std sockets) for `connections`
    /// connections, answering each request with a manifest HEAD response.
    fn tls_server(connections: usize) -> (String, std::thread::JoinHandle<()>) {
        let certs = rustls_pemfile::certs(&mut &include_bytes!("testdata/server.pem")[..])
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut &include_bytes!("testdata/server.key")[..]).unwrap().unwrap();
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let digest = manifest_digest();
        let handle = std::thread::spawn(move || {
            for _ in 0..connections {
                let Ok((socket, _)) = listener.accept() else { return };
                socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let connection = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(connection, socket);
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                if request.is_empty() {
                    continue; // The client refused the handshake.
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: 0\r\ndocker-content-digest: {digest}\r\nconnection: close\r\n\r\n"
                );
                let _ = tls.write_all(response.as_bytes());
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        (url, handle)
    }

    #[tokio::test]
    async fn a_configured_ca_file_is_trusted() {
        let (url, server) = tls_server(1);
        let mut cfg = config(&url);
        cfg.ca_file = Some(CA.into());
        let head = upstream(&cfg).head_manifest(&repo("r"), &tag("t")).await.unwrap();
        assert_eq!(head.digest, Some(manifest_digest()));
        server.join().unwrap();
    }

    #[tokio::test]
    async fn an_unknown_issuer_is_refused() {
        let (url, server) = tls_server(1);
        let mut cfg = config(&url);
        cfg.retries = 0;
        let err = upstream(&cfg).head_manifest(&repo("r"), &tag("t")).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Connect(ref m) if m.contains("certificate")), "{err:?}");
        server.join().unwrap();
    }

    #[tokio::test]
    async fn insecure_accepts_any_certificate() {
        let (url, server) = tls_server(1);
        let mut cfg = config(&url);
        cfg.insecure = true;
        let head = upstream(&cfg).head_manifest(&repo("r"), &tag("t")).await.unwrap();
        assert_eq!(head.digest, Some(manifest_digest()));
        server.join().unwrap();
    }

    #[test]
    fn an_unusable_ca_file_is_a_configuration_error() {
        let mut cfg = config("https://127.0.0.1:1");
        cfg.ca_file = Some("no/such/ca.pem".into());
        assert!(matches!(Upstream::new(&cfg, &Metrics::new().unwrap()), Err(UpstreamError::Config(_))));

        let mut not_pem = tempfile::NamedTempFile::new().unwrap();
        not_pem.write_all(b"this is not a certificate\n").unwrap();
        cfg.ca_file = Some(not_pem.path().to_path_buf());
        let err = Upstream::new(&cfg, &Metrics::new().unwrap()).unwrap_err();
        assert!(matches!(err, UpstreamError::Config(ref m) if m.contains("no PEM certificate")), "{err:?}");
    }
}
