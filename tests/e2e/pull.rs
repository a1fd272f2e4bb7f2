//! Real clients pulling through wharf from a real upstream: the three ways
//! of naming an upstream (path prefix, default, registries.conf mirror),
//! containerd's `ns` parameter, multi-arch indexes, podman, and the cache
//! serving warm pulls, a stopped upstream and a restarted wharf.

use std::path::Path;

use crate::clients::{Clients, Mirror};
use crate::http;
use crate::images::{self, assert_layout_holds_image, Image, Index, Pushable};
use crate::registry::Registry;
use crate::wharf::{UpstreamEntry, Wharf};

const OCI_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

/// Starts an open registry under `dir/<name>` holding a fresh random image
/// at `team/tool` under `tags`.
fn upstream_with_image(dir: &Path, name: &str, clients: &Clients, tags: &[&str]) -> (Registry, Image) {
    let registry = Registry::start(&dir.join(name));
    let image = Image::random(&[40_000, 300_000]);
    images::push(clients, dir, &image, &registry.host(), "team/tool", tags, None);
    (registry, image)
}

/// Two upstreams holding different images under the same name
/// `team/tool:1`: `alpha` is wharf's default, `beta` is not. A pull that
/// gets the right bytes was routed to the right upstream.
struct TwoUpstreams {
    _tmp: tempfile::TempDir,
    clients: Clients,
    alpha: Registry,
    alpha_image: Image,
    beta: Registry,
    beta_image: Image,
    wharf: Wharf,
}

impl TwoUpstreams {
    fn start() -> TwoUpstreams {
        let tmp = tempfile::tempdir().expect("tempdir");
        let clients = Clients::new(&tmp.path().join("clients"));
        let (alpha, alpha_image) = upstream_with_image(tmp.path(), "alpha", &clients, &["1"]);
        let (beta, beta_image) = upstream_with_image(tmp.path(), "beta", &clients, &["1"]);
        let wharf = Wharf::start(
            &tmp.path().join("wharf"),
            &[UpstreamEntry::new("alpha", &alpha.url()).default(), UpstreamEntry::new("beta", &beta.url())],
        );
        TwoUpstreams { _tmp: tmp, clients, alpha, alpha_image, beta, beta_image, wharf }
    }

    fn pull(&self, reference: &str, tag: &str) -> tempfile::TempDir {
        let dest = tempfile::tempdir().expect("tempdir");
        self.clients.pull_to_layout(&format!("docker://{}/{reference}", self.wharf.host()), dest.path(), tag, &[]);
        dest
    }
}

#[test]
fn path_prefix_pull_gets_the_named_upstreams_image() {
    let t = TwoUpstreams::start();
    let pulled = t.pull("beta/team/tool:1", "1");
    assert_layout_holds_image(pulled.path(), "1", &t.beta_image);
    // What skopeo reads from the upstream itself agrees.
    let upstream_raw = t.clients.inspect_raw(&format!("docker://{}/team/tool:1", t.beta.host()), None);
    assert_eq!(images::sha256_digest(&upstream_raw), images::layout_tag_digest(pulled.path(), "1"));
    for blob in t.beta_image.blobs() {
        assert_eq!(t.beta.blob_gets_reaching(&blob.digest, 1), 1, "beta served blob {} once", blob.digest);
        assert_eq!(t.alpha.blob_gets(&blob.digest), 0);
    }
}

#[test]
fn unprefixed_pull_gets_the_default_upstreams_image() {
    let t = TwoUpstreams::start();
    let pulled = t.pull("team/tool:1", "1");
    assert_layout_holds_image(pulled.path(), "1", &t.alpha_image);
    for blob in t.alpha_image.blobs() {
        assert_eq!(t.alpha.blob_gets_reaching(&blob.digest, 1), 1, "alpha served blob {} once", blob.digest);
    }
    assert_eq!(t.beta.count_gets("/blobs/"), 0, "the non-default upstream was asked for blobs");
}

#[test]
fn registries_conf_mirror_pull_goes_through_wharf_to_the_default_upstream() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pusher = Clients::new(&tmp.path().join("pusher"));
    let (upstream, image) = upstream_with_image(tmp.path(), "upstream", &pusher, &["2"]);
    let wharf = Wharf::start(&tmp.path().join("wharf"), &[UpstreamEntry::new("up", &upstream.url()).default()]);
    let wharf_host = wharf.host();
    let clients = Clients::with_mirrors(
        &tmp.path().join("clients"),
        &[Mirror { location: "registry.example", mirror: &wharf_host }],
    );
    // registry.example does not exist: only the mirror can answer.
    let dest = tmp.path().join("pulled");
    clients.pull_to_layout("docker://registry.example/team/tool:2", &dest, "2", &[]);
    assert_layout_holds_image(&dest, "2", &image);
    for blob in image.blobs() {
        assert_eq!(upstream.blob_gets_reaching(&blob.digest, 1), 1, "upstream served blob {} once", blob.digest);
    }
}

#[tokio::test]
async fn containerd_ns_parameter_selects_the_upstream_by_host_or_name() {
    let t = TwoUpstreams::start();
    let base = t.wharf.url();
    for ns in [t.beta.host(), "beta".to_owned()] {
        let manifest = http::request(
            "GET",
            &format!("{base}/v2/team/tool/manifests/1?ns={ns}"),
            &[("Accept", OCI_ACCEPT)],
        )
        .await;
        assert_eq!(manifest.status, 200, "manifest with ns={ns}: {}", String::from_utf8_lossy(&manifest.body));
        assert_eq!(manifest.body, t.beta_image.manifest.bytes, "manifest with ns={ns}");
        let layer = &t.beta_image.layers[0];
        let blob = http::get(&format!("{base}/v2/team/tool/blobs/{}?ns={ns}", layer.digest)).await;
        assert_eq!(blob.status, 200, "blob with ns={ns}");
        assert!(blob.complete && blob.body == layer.bytes, "blob bytes with ns={ns}");
    }
    let unqualified =
        http::request("GET", &format!("{base}/v2/team/tool/manifests/1"), &[("Accept", OCI_ACCEPT)]).await;
    assert_eq!(unqualified.status, 200);
    assert_eq!(unqualified.body, t.alpha_image.manifest.bytes, "no ns goes to the default upstream");
}

#[test]
fn copy_all_through_wharf_preserves_the_index_and_every_platform() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let index = Index::random(&[30_000, 100_000]);
    images::push(&clients, tmp.path(), &index, &upstream.host(), "team/multi", &["1"], None);
    let wharf = Wharf::start(&tmp.path().join("wharf"), &[UpstreamEntry::new("up", &upstream.url())]);

    let dest = tmp.path().join("pulled");
    clients.pull_to_layout(&format!("docker://{}/up/team/multi:1", wharf.host()), &dest, "1", &["--all"]);
    assert_eq!(images::layout_tag_digest(&dest, "1"), index.manifest.digest, "index digest");
    assert_eq!(images::layout_blob(&dest, &index.manifest.digest), index.manifest.bytes);
    for blob in index.all_blobs() {
        assert!(images::layout_blob(&dest, &blob.digest) == blob.bytes, "{} differs", blob.digest);
    }
}

#[test]
fn podman_pulls_through_wharf_as_a_plain_mirror() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pusher = Clients::new(&tmp.path().join("pusher"));
    let (upstream, image) = upstream_with_image(tmp.path(), "upstream", &pusher, &["2"]);
    let wharf = Wharf::start(&tmp.path().join("wharf"), &[UpstreamEntry::new("up", &upstream.url()).default()]);
    let wharf_host = wharf.host();
    let clients = Clients::with_mirrors(
        &tmp.path().join("clients"),
        &[Mirror { location: "registry.example", mirror: &wharf_host }],
    );
    let pulled = clients.podman_pull("registry.example/team/tool:2");
    assert_eq!(pulled.digest, image.manifest.digest);
    assert_eq!(pulled.diff_ids, image.diff_ids, "podman unpacked other layers");
    assert_eq!(upstream.blob_gets_reaching(&image.layers[1].digest, 1), 1);
}

#[test]
fn podman_pulls_through_wharf_as_a_path_prefixed_mirror() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pusher = Clients::new(&tmp.path().join("pusher"));
    let (upstream, image) = upstream_with_image(tmp.path(), "upstream", &pusher, &["2"]);
    // No default upstream: only the prefix can route the pull.
    let wharf = Wharf::start(&tmp.path().join("wharf"), &[UpstreamEntry::new("up", &upstream.url())]);
    let mirror = format!("{}/up", wharf.host());
    let clients = Clients::with_mirrors(
        &tmp.path().join("clients"),
        &[Mirror { location: "registry.example", mirror: &mirror }],
    );
    let pulled = clients.podman_pull("registry.example/team/tool:2");
    assert_eq!(pulled.digest, image.manifest.digest);
    assert_eq!(pulled.diff_ids, image.diff_ids, "podman unpacked other layers");
    assert_eq!(upstream.blob_gets_reaching(&image.layers[1].digest, 1), 1);
}

/// One upstream with one image at `team/tool:2`, and wharf in front of it
/// with the given extra upstream settings.
struct Cached {
    tmp: tempfile::TempDir,
    clients: Clients,
    upstream: Registry,
    image: Image,
    wharf: Wharf,
}

impl Cached {
    fn start(upstream_settings: &str) -> Cached {
        let tmp = tempfile::tempdir().expect("tempdir");
        let clients = Clients::new(&tmp.path().join("clients"));
        let (upstream, image) = upstream_with_image(tmp.path(), "upstream", &clients, &["2"]);
        let wharf = Wharf::start(
            &tmp.path().join("wharf"),
            &[UpstreamEntry::new("up", &upstream.url()).extra(upstream_settings)],
        );
        Cached { tmp, clients, upstream, image, wharf }
    }

    /// skopeo pulls `up/team/tool<reference>` through wharf into a new
    /// layout, stored under tag `2`.
    fn pull(&self, reference: &str, name: &str) -> std::path::PathBuf {
        let dest = self.tmp.path().join(name);
        let source = format!("docker://{}/up/team/tool{reference}", self.wharf.host());
        self.clients.pull_to_layout(&source, &dest, "2", &[]);
        dest
    }

    fn by_digest(&self) -> String {
        format!("@{}", self.image.manifest.digest)
    }
}

#[test]
fn warm_pull_fetches_no_blob_from_upstream() {
    let c = Cached::start("");
    assert_layout_holds_image(&c.pull(":2", "cold"), "2", &c.image);
    let after_cold: Vec<usize> = c.image.blobs().iter().map(|b| c.upstream.blob_gets(&b.digest)).collect();
    assert!(after_cold.iter().all(|n| *n == 1), "cold pull fetched each blob once: {after_cold:?}");
    let by_digest_after_cold = c.upstream.count_gets(&format!("/manifests/{}", c.image.manifest.digest));

    assert_layout_holds_image(&c.pull(":2", "warm-tag"), "2", &c.image);
    let warm = c.pull(&c.by_digest(), "warm-digest");
    assert_layout_holds_image(&warm, "2", &c.image);
    let after_warm: Vec<usize> = c.image.blobs().iter().map(|b| c.upstream.blob_gets(&b.digest)).collect();
    assert_eq!(after_warm, after_cold, "warm pulls fetched blobs from upstream again");
    assert_eq!(
        c.upstream.count_gets(&format!("/manifests/{}", c.image.manifest.digest)),
        by_digest_after_cold,
        "a manifest by digest is immutable: wharf must not ask upstream for it again once cached"
    );
}

#[test]
fn cached_image_pulls_by_tag_and_digest_with_upstream_stopped() {
    let mut c = Cached::start("");
    c.pull(":2", "cold");
    c.upstream.stop();
    assert_layout_holds_image(&c.pull(":2", "tag-offline"), "2", &c.image);
    assert_layout_holds_image(&c.pull(&c.by_digest(), "digest-offline"), "2", &c.image);
}

#[test]
fn stale_tag_is_served_when_upstream_is_stopped() {
    // tag_ttl 0s: every tag pull revalidates, so this pull finds the tag
    // stale and the upstream gone, and must fall back to the cached copy.
    let mut c = Cached::start("tag_ttl = \"0s\"");
    c.pull(":2", "cold");
    c.upstream.stop();
    assert_layout_holds_image(&c.pull(":2", "stale"), "2", &c.image);
}

#[test]
fn revalidated_tag_follows_an_upstream_retag() {
    // With tag_ttl 0s a tag moved upstream is seen on the next pull.
    let c = Cached::start("tag_ttl = \"0s\"");
    c.pull(":2", "before");
    let newer = Image::random(&[20_000]);
    images::push(&c.clients, c.tmp.path(), &newer, &c.upstream.host(), "team/tool", &["2"], None);
    assert_layout_holds_image(&c.pull(":2", "after"), "2", &newer);
}

/// Waits until no fill is in flight (`wharf_fills_in_flight 0`).
fn wait_for_fills_to_end(wharf: &Wharf) {
    let url = format!("{}/metrics", wharf.admin_url());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = std::process::Command::new("curl").args(["-sf", &url]).output().expect("run curl");
        if String::from_utf8_lossy(&out.stdout).lines().any(|l| l == "wharf_fills_in_flight 0") {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "fills never ended");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn cache_survives_a_wharf_restart_with_upstream_stopped() {
    let mut c = Cached::start("");
    c.pull(":2", "cold");
    c.upstream.stop();
    let Cached { tmp, clients, upstream, image, wharf } = c;
    let config = wharf.config_path.clone();
    // Killed, not shut down: what a pull stored must be durable. A fill
    // hands its client the last (verified) byte while its commit syncs, so
    // the blob is stored once the fill has ended, a moment after the pull.
    wait_for_fills_to_end(&wharf);
    wharf.kill9();
    let c = Cached { tmp, clients, upstream, image, wharf: Wharf::start_with_config(&config) };
    assert_layout_holds_image(&c.pull(":2", "tag-after-restart"), "2", &c.image);
    assert_layout_holds_image(&c.pull(&c.by_digest(), "digest-after-restart"), "2", &c.image);
}
