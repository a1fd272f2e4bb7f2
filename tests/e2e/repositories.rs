//! Pulled images become numbered repository versions, and distributions
//! serve a pinned version or the latest: a real upstream, skopeo pulling
//! through wharf, the admin API to look, and a restart in the middle.

use std::time::{Duration, Instant};

use crate::clients::Clients;
use crate::http;
use crate::images::{self, Image};
use crate::registry::Registry;
use crate::wharf::{UpstreamEntry, Wharf};

/// The admin API's answer: status and JSON body (Null when empty).
async fn admin(method: &str, url: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
    let r = match body {
        Some(json) => {
            http::request_with_body(method, url, &[("Content-Type", "application/json")], json.to_string().into_bytes()).await
        }
        None => http::request(method, url, &[]).await,
    };
    let json = if r.body.is_empty() { serde_json::Value::Null } else { r.json() };
    (r.status, json)
}

struct Setup {
    tmp: tempfile::TempDir,
    clients: Clients,
    upstream: Registry,
    wharf: Wharf,
}

const REPO: &str = "up%2Fteam%2Fapp";

impl Setup {
    fn start() -> Setup {
        let tmp = tempfile::tempdir().expect("tempdir");
        let clients = Clients::new(&tmp.path().join("clients"));
        let upstream = Registry::start(&tmp.path().join("upstream"));
        // tag_ttl 0: every pull by tag asks the upstream, so a moved tag is
        // seen at once.
        let wharf = Wharf::start(
            &tmp.path().join("wharf"),
            &[UpstreamEntry::new("up", &upstream.url()).extra("tag_ttl = \"0s\"")],
        );
        Setup { tmp, clients, upstream, wharf }
    }

    fn push(&self, image: &Image, tag: &str) {
        images::push(&self.clients, self.tmp.path(), image, &self.upstream.host(), "team/app", &[tag], None);
    }

    /// Pulls `<wharf>/<name>:<tag>` with skopeo; the manifest digest it got.
    fn pull(&self, name: &str, tag: &str) -> String {
        let dest = tempfile::tempdir().expect("tempdir");
        self.clients.pull_to_layout(&format!("docker://{}/{name}:{tag}", self.wharf.host()), dest.path(), tag, &[]);
        images::layout_tag_digest(dest.path(), tag)
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/v1/{path}", self.wharf.admin_url())
    }

    /// Waits until the repository's latest version is `n` (recording runs
    /// in the background, batched over a fraction of a second).
    async fn wait_for_version(&self, n: u64) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, repo) = admin("GET", &self.api(&format!("repositories/{REPO}")), None).await;
            if status == 200 && repo["latest_version"] == n {
                return repo;
            }
            assert!(Instant::now() < deadline, "latest version never became {n}: {status} {repo}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn version(&self, n: u64) -> serde_json::Value {
        let (status, v) = admin("GET", &self.api(&format!("repositories/{REPO}/versions/{n}")), None).await;
        assert_eq!(status, 200, "version {n}: {v}");
        v
    }
}

fn summary(v: &serde_json::Value, part: &str) -> (u64, u64, u64) {
    let c = &v["content_summary"][part];
    let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{part}.{k} missing in {v}"));
    (n("tag"), n("manifest"), n("blob"))
}

#[tokio::test(flavor = "multi_thread")]
async fn pulls_make_versions_and_a_pinned_distribution_serves_the_old_digest_across_a_restart() {
    let s = Setup::start();
    let one = Image::random(&[20_000, 30_000]);
    let two = Image::random(&[25_000]);
    let moved = Image::random(&[35_000]);
    s.push(&one, "1");
    s.push(&two, "2");

    assert_eq!(s.pull("up/team/app", "1"), one.manifest.digest);
    s.wait_for_version(1).await;
    assert_eq!(s.pull("up/team/app", "2"), two.manifest.digest);
    s.wait_for_version(2).await;
    s.push(&moved, "1");
    assert_eq!(s.pull("up/team/app", "1"), moved.manifest.digest);
    let repo = s.wait_for_version(3).await;
    assert_eq!(repo["kind"], "pull-through");
    assert_eq!(repo["upstream"], "up");
    assert_eq!(repo["remote_name"], "team/app");

    // Each image is one manifest, one config and its layers.
    let v1 = s.version(1).await;
    assert_eq!(summary(&v1, "added"), (1, 1, 3));
    assert_eq!(summary(&v1, "present"), (1, 1, 3));
    let v2 = s.version(2).await;
    assert_eq!(summary(&v2, "added"), (1, 1, 2));
    assert_eq!(summary(&v2, "present"), (2, 2, 5));
    let v3 = s.version(3).await;
    assert_eq!(v3["base_version"], 2);
    assert_eq!(summary(&v3, "added"), (1, 1, 2), "tag 1 at its new manifest");
    assert_eq!(summary(&v3, "removed"), (1, 0, 0), "tag 1 at its old manifest");
    assert_eq!(summary(&v3, "present"), (2, 3, 7), "the old manifest stays");
    let (_, tags) = admin("GET", &s.api(&format!("repositories/{REPO}/versions/1/tags")), None).await;
    assert_eq!(tags["results"][0]["digest"], one.manifest.digest.as_str(), "{tags}");

    // A distribution pinned to version 1 serves tag 1 as it was then.
    let (status, d) = admin(
        "POST",
        &s.api("distributions"),
        Some(serde_json::json!({"name": "app-v1", "base_path": "pinned/app", "repository": "up/team/app", "version": 1})),
    )
    .await;
    assert_eq!(status, 201, "{d}");
    assert_eq!(s.pull("pinned/app", "1"), one.manifest.digest);

    // Restarted cleanly, with the upstream gone: versions and the
    // distribution are still there, and the distribution serves from
    // local content alone.
    let Setup { tmp, clients, mut upstream, wharf } = s;
    let config = wharf.config_path.clone();
    wharf.stop();
    upstream.stop();
    let s = Setup { tmp, clients, upstream, wharf: Wharf::start_with_config(&config) };
    assert_eq!(s.wait_for_version(3).await["latest_version"], 3);
    assert_eq!(summary(&s.version(3).await, "present"), (2, 3, 7));
    assert_eq!(s.pull("pinned/app", "1"), one.manifest.digest);

    // Repointed to the latest version: tag 1 is the moved image now.
    let (status, d) = admin("PATCH", &s.api("distributions/app-v1"), Some(serde_json::json!({"version": null}))).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["version"], serde_json::Value::Null);
    assert_eq!(s.pull("pinned/app", "1"), moved.manifest.digest);
    assert_eq!(s.pull("pinned/app", "2"), two.manifest.digest);

    // The distribution lists what its version holds.
    let tags = http::get(&format!("{}/v2/pinned/app/tags/list", s.wharf.url())).await;
    assert_eq!(tags.json()["tags"], serde_json::json!(["1", "2"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_distribution_serves_only_its_version_and_fetches_uncached_layers_on_demand() {
    let s = Setup::start();
    let one = Image::random(&[20_000]);
    let other = Image::random(&[21_000]);
    s.push(&one, "1");
    s.push(&other, "other");
    // Only the manifest is pulled: the layer is recorded, its bytes are not here.
    let m = http::request(
        "GET",
        &format!("{}/v2/up/team/app/manifests/1", s.wharf.url()),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
    )
    .await;
    assert_eq!(m.status, 200);
    s.wait_for_version(1).await;
    let (status, d) = admin(
        "POST",
        &s.api("distributions"),
        Some(serde_json::json!({"name": "app", "base_path": "apps/app", "repository": "up/team/app"})),
    )
    .await;
    assert_eq!(status, 201, "{d}");

    let layer = &one.layers[0];
    assert_eq!(s.upstream.blob_gets(&layer.digest), 0);
    let got = http::get(&format!("{}/v2/apps/app/blobs/{}", s.wharf.url(), layer.digest)).await;
    assert_eq!(got.status, 200);
    assert!(got.complete && got.body == layer.bytes, "layer bytes through the distribution");
    assert_eq!(s.upstream.blob_gets_reaching(&layer.digest, 1), 1, "fetched on demand, once");

    // Content the version does not hold is unknown there, even though the
    // upstream has it.
    let gets_before = s.upstream.count_gets("/");
    let foreign = http::get(&format!("{}/v2/apps/app/blobs/{}", s.wharf.url(), other.layers[0].digest)).await;
    assert_eq!((foreign.status, foreign.error_code().as_str()), (404, "BLOB_UNKNOWN"));
    let tag = http::get(&format!("{}/v2/apps/app/manifests/other", s.wharf.url())).await;
    assert_eq!((tag.status, tag.error_code().as_str()), (404, "MANIFEST_UNKNOWN"));
    assert_eq!(s.upstream.count_gets("/"), gets_before, "a distribution never asks the upstream about content it lacks");

    // Pushing into the pull-through repository's distribution is refused
    // (challenged: without users nobody may push).
    let push = http::request("POST", &format!("{}/v2/apps/app/blobs/uploads/", s.wharf.url()), &[]).await;
    assert_eq!((push.status, push.error_code().as_str()), (401, "UNAUTHORIZED"));

    // The catalog names the distribution.
    let catalog = http::get(&format!("{}/v2/_catalog", s.wharf.url())).await;
    let names: Vec<String> = serde_json::from_value(catalog.json()["repositories"].clone()).expect("names");
    assert!(names.contains(&"apps/app".to_owned()) && names.contains(&"up/team/app".to_owned()), "{names:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_shutdown_right_after_a_pull_loses_no_recording() {
    let s = Setup::start();
    let one = Image::random(&[20_000]);
    s.push(&one, "1");
    assert_eq!(s.pull("up/team/app", "1"), one.manifest.digest);
    // Stopped at once, before the recorder's batch would have closed.
    let Setup { tmp, clients, upstream, wharf } = s;
    let config = wharf.config_path.clone();
    wharf.stop();
    let s = Setup { tmp, clients, upstream, wharf: Wharf::start_with_config(&config) };
    let (status, repo) = admin("GET", &s.api(&format!("repositories/{REPO}")), None).await;
    assert_eq!(status, 200, "{repo}");
    assert_eq!(repo["latest_version"], 1);
    let (_, tags) = admin("GET", &s.api(&format!("repositories/{REPO}/versions/latest/tags")), None).await;
    assert_eq!(tags["count"], 1, "{tags}");
    assert_eq!(tags["results"][0]["name"], "1");
}
