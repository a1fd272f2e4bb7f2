//! Upstreams that want credentials: htpasswd basic auth and token auth.
//! wharf holds the credentials; its own clients pull anonymously.

use std::time::Duration;

use crate::clients::Clients;
use crate::http;
use crate::images::{self, assert_layout_holds_image, Image};
use crate::registry::{Auth, Registry};
use crate::wharf::{UpstreamEntry, Wharf};

/// A bound on a request that must fail, so a wharf that hangs instead
/// fails the test with a message rather than stalling the suite. Far above
/// wharf's own upstream timeouts: not a measurement.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// An authenticated upstream holding a random image at `team/tool:2`, and
/// wharf in front of it, given the upstream's credentials or not.
fn start(tmp: &std::path::Path, auth: Auth, wharf_has_credentials: bool) -> (Clients, Registry, Image, Wharf) {
    let clients = Clients::new(&tmp.join("clients"));
    let upstream = Registry::start_with_auth(&tmp.join("upstream"), auth);
    let image = Image::random(&[40_000, 200_000]);
    images::push(&clients, tmp, &image, &upstream.host(), "team/tool", &["2"], upstream.credentials().as_deref());
    let mut entry = UpstreamEntry::new("up", &upstream.url());
    if wharf_has_credentials {
        entry = entry.extra(&upstream.wharf_credentials_toml());
    }
    let wharf = Wharf::start(&tmp.join("wharf"), &[entry]);
    (clients, upstream, image, wharf)
}

#[test]
fn basic_auth_upstream_pulls_with_the_configured_credentials() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (clients, upstream, image, wharf) = start(tmp.path(), Auth::basic("alice", "wonderland"), true);
    let dest = tmp.path().join("pulled");
    clients.pull_to_layout(&format!("docker://{}/up/team/tool:2", wharf.host()), &dest, "2", &[]);
    assert_layout_holds_image(&dest, "2", &image);
    for blob in image.blobs() {
        let fetched = upstream
            .access_log()
            .into_iter()
            .filter(|l| l.method == "GET" && l.status == 200 && l.path.contains(&blob.digest))
            .count();
        assert_eq!(fetched, 1, "blob {} fetched with credentials once", blob.digest);
    }
}

#[test]
fn token_auth_upstream_pulls_with_a_token_from_the_issuer() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (clients, upstream, image, wharf) = start(tmp.path(), Auth::token("bob", "builder"), true);
    let issued_for_push = upstream.token_issuer().expect("issuer").requests().len();
    let dest = tmp.path().join("pulled");
    clients.pull_to_layout(&format!("docker://{}/up/team/tool:2", wharf.host()), &dest, "2", &[]);
    assert_layout_holds_image(&dest, "2", &image);
    let wharf_requests = &upstream.token_issuer().expect("issuer").requests()[issued_for_push..];
    assert!(
        wharf_requests
            .iter()
            .any(|r| r.granted && r.user.as_deref() == Some("bob") && r.scopes.iter().any(|s| s == "repository:team/tool:pull")),
        "wharf never obtained a pull token for team/tool with its credentials: {wharf_requests:?}"
    );
}

/// wharf without credentials in front of an upstream that wants them: a
/// manifest and a blob request each end promptly with an OCI error, not a
/// hang, a success or a generic 500. 404 NAME_UNKNOWN is accepted: Docker
/// Hub answers 401 for repositories that do not exist, so wharf reports an
/// upstream's refusal as an unknown name (src/api/error.rs says why).
async fn assert_refused_cleanly(wharf: &Wharf, image: &Image) {
    let urls = [
        format!("{}/v2/up/team/tool/manifests/2", wharf.url()),
        format!("{}/v2/up/team/tool/blobs/{}", wharf.url(), image.layers[0].digest),
    ];
    for url in urls {
        let response = tokio::time::timeout(HANG_GUARD, http::get(&url))
            .await
            .unwrap_or_else(|_| panic!("GET {url} did not answer within {HANG_GUARD:?}"));
        let code = response.error_code();
        assert!(
            matches!(
                (response.status, code.as_str()),
                (401, "UNAUTHORIZED") | (403, "DENIED") | (404, "NAME_UNKNOWN") | (502 | 503, _)
            ),
            "GET {url}: want an OCI error saying the upstream refused wharf, got {} {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        );
    }
}

#[tokio::test]
async fn basic_auth_upstream_without_credentials_answers_an_error_promptly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_clients, _upstream, image, wharf) = start(tmp.path(), Auth::basic("alice", "wonderland"), false);
    assert_refused_cleanly(&wharf, &image).await;
}

#[tokio::test]
async fn token_auth_upstream_without_credentials_answers_an_error_promptly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_clients, _upstream, image, wharf) = start(tmp.path(), Auth::token("bob", "builder"), false);
    assert_refused_cleanly(&wharf, &image).await;
}
