//! The air-gapped round trip as an operator runs it (issue 18): node A
//! holds content pulled through (only its manifest and config fetched, so
//! the export fetches the layers), synced on demand with an atomic and a
//! cosign signature, and pushed as a multi-arch index; `wharf export
//! create` carries the three repositories; node B, with no upstream at
//! all, imports them with `wharf import`, and podman and skopeo pull every
//! image from B's distributions with A's digests while the upstream sees
//! nothing; B serves the signatures through the API extension.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::clients::Clients;
use crate::curate::wharf_cli;
use crate::http;
use crate::images::{self, assert_layout_holds_image, Image, Index};
use crate::push::{authorization, start_with, start_with_upstreams, PUSHER};
use crate::registry::Registry;
use crate::signatures::{served_signatures, Keyring, Lookaside};
use crate::sync::{admin_ok, cli_ok, podman_pull, stem};
use crate::wharf::{UpstreamEntry, Wharf};

async fn wait_for_version(w: &Wharf, encoded: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http::request("GET", &format!("{}/api/v1/repositories/{encoded}", w.admin_url()), &[("Authorization", &authorization())]).await;
        if r.status == 200 && r.json()["latest_version"] == n {
            return;
        }
        assert!(Instant::now() < deadline, "{encoded} never reached version {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[track_caller]
fn succeeded(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulled_synced_and_pushed_content_crosses_to_a_node_without_upstream_with_the_same_digests() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path();
    let clients = Clients::new(&work.join("clients"));
    let keys = Keyring::new(&work.join("gnupg"));
    let upstream = Registry::start(&work.join("upstream"));

    // The upstream: an image to pull through; an image to sync, with a
    // cosign signature by tag scheme and an atomic one in a lookaside.
    let base = Image::random(&[300_000, 20_000]);
    images::push(&clients, work, &base, &upstream.host(), "team/base", &["1"], None);
    let app = Image::random(&[200_000]);
    images::push(&clients, work, &app, &upstream.host(), "team/app", &["1.0"], None);
    let cosign = Image::random(&[128]);
    let cosign_tag = format!("{}.sig", stem(&app.manifest.digest));
    images::push(&clients, work, &cosign, &upstream.host(), "team/app", &[&cosign_tag], None);
    let signature = keys.sign(work, &app.manifest.bytes, "registry.example/team/app:1.0");
    let hex = app.manifest.digest.trim_start_matches("sha256:");
    let lookaside = work.join("sigstore").join(format!("team/app@sha256={hex}"));
    std::fs::create_dir_all(&lookaside).expect("lookaside");
    std::fs::write(lookaside.join("signature-1"), &signature).expect("signature-1");
    let store = Lookaside::serve(&work.join("sigstore"));

    // Node A: pulled through (skopeo inspect: manifest and config, no
    // layer), synced on demand (no blob), pushed.
    let a = start_with(&work.join("a"), UpstreamEntry::new("up", &upstream.url()));
    clients.skopeo_ok(&["inspect", "--tls-verify=false", &format!("docker://{}/up/team/base:1", a.host())]);
    wait_for_version(&a, "up%2Fteam%2Fbase", 1).await;
    admin_ok(&a, "POST", "repositories", Some(json!({"name": "signed"}))).await;
    let remote = json!({"name": "origin", "url": upstream.url(), "upstream_name": "team/app", "sigstore": store.url(), "policy": "on_demand"});
    admin_ok(&a, "POST", "remotes", Some(remote)).await;
    cli_ok(&a, &["repository", "sync", "--name", "signed", "--remote", "origin"]).await;
    let multi = Index::random(&[40_000]);
    images::push(&clients, work, &multi, &a.host(), "team/multi", &["1"], Some(PUSHER));
    for layer in [&base.layers[0], &app.layers[0]] {
        assert_eq!(upstream.blob_gets(&layer.digest), 0, "no layer fetched before the export");
    }

    // The export: the layers A never stored are fetched once, from the
    // upstream and from the remote the sync recorded.
    let out = work.join("transfer");
    std::fs::create_dir(&out).expect("mkdir");
    let out_arg = out.display().to_string();
    let made = wharf_cli(
        &a,
        &["export", "create", "--repository", "up/team/base", "--repository", "signed", "--repository", "team/multi", "--path", &out_arg],
    )
    .await;
    succeeded(&made);
    for layer in [&base.layers[0], &app.layers[0]] {
        assert_eq!(upstream.blob_gets(&layer.digest), 1, "{} fetched for the export", layer.digest);
    }
    let listed = admin_ok(&a, "GET", "exports", None).await;
    let dir = listed["results"][0]["directory"].as_str().expect("directory").to_owned();
    let upstream_requests = upstream.access_log().len();

    // Node B reaches no registry at all.
    let b = start_with_upstreams(&work.join("b"), &[]);
    let plan = succeeded(&wharf_cli(&b, &["import", "--path", &dir, "--dry-run"]).await);
    for name in ["up/team/base", "signed", "team/multi"] {
        assert!(plan.contains(name), "{plan}");
    }
    succeeded(&wharf_cli(&b, &["import", "--path", &dir]).await);
    for name in ["up/team/base", "signed", "team/multi"] {
        let d = json!({"name": name.replace('/', "-"), "base_path": name, "repository": name});
        admin_ok(&b, "POST", "distributions", Some(d)).await;
    }
    let kind = admin_ok(&b, "GET", "repositories/up%2Fteam%2Fbase", None).await;
    assert_eq!((kind["kind"].as_str(), kind["latest_version"].as_u64()), (Some("pull-through"), Some(1)), "{kind}");

    // skopeo: every image, byte for byte; the index with both platforms.
    let layout = work.join("from-b");
    clients.pull_to_layout(&format!("docker://{}/up/team/base:1", b.host()), &layout, "base", &[]);
    assert_layout_holds_image(&layout, "base", &base);
    // (An OCI layout cannot hold atomic signatures: read below.)
    clients.pull_to_layout(&format!("docker://{}/signed:1.0", b.host()), &layout, "app", &["--remove-signatures"]);
    assert_layout_holds_image(&layout, "app", &app);
    clients.pull_to_layout(&format!("docker://{}/team/multi:1", b.host()), &layout, "multi", &["--all"]);
    assert_eq!(images::layout_tag_digest(&layout, "multi"), multi.manifest.digest);
    for blob in images::Pushable::all_blobs(&multi) {
        assert!(images::layout_blob(&layout, &blob.digest) == blob.bytes, "{} differs", blob.digest);
    }

    // podman: the same digests.
    assert_eq!(podman_pull(&clients, &format!("{}/up/team/base:1", b.host())), base.manifest.digest);
    assert_eq!(podman_pull(&clients, &format!("{}/signed:1.0", b.host())), app.manifest.digest);
    assert_eq!(podman_pull(&clients, &format!("{}/team/multi:1", b.host())), multi.manifest.digest);

    // The signatures: atomic through the API extension, cosign's by tag.
    assert_eq!(served_signatures(&b, "signed", &app.manifest.digest, None).await, [signature]);
    let sig = http::request("HEAD", &format!("{}/v2/signed/manifests/{cosign_tag}", b.url()), &[]).await;
    assert_eq!(sig.header("docker-content-digest"), Some(cosign.manifest.digest.as_str()));

    // The imported pull-through repository stays read-only.
    let auth = authorization();
    let push = http::request("POST", &format!("{}/v2/up/team/base/blobs/uploads/", b.url()), &[("Authorization", &auth)]).await;
    assert_eq!((push.status, push.error_code().as_str()), (403, "DENIED"), "{}", String::from_utf8_lossy(&push.body));
    assert_eq!(upstream.access_log().len(), upstream_requests, "B never reached the upstream");
    for w in [a, b] {
        w.stop();
    }
}
