//! The air-gapped round trip as an operator runs it (issue 18): node A
//! holds content pulled through (only its manifest and config fetched, so
//! the export fetches the layers), synced on demand with an atomic and a
//! cosign signature, and pushed as a multi-arch index; `wharf export
//! create` carries the three repositories; node B, with no upstream at
//! all, imports them with `wharf import`, and podman and skopeo pull every
//! image from B's distributions with A's digests while the upstream sees
//! nothing; B serves the signatures through the API extension. Then the
//! refusals (a chunk changed, missing, reordered, from another export),
//! a 1 GiB layer in flat memory, and an import killed midway.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::clients::Clients;
use crate::curate::wharf_cli;
use crate::http;
use crate::images::{self, assert_layout_holds_image, Image, Index};
use crate::push::{authorization, peak_rss_kib, put_manifest, start_with, start_with_upstreams, upload_monolithic, upload_repeated, PUSHER};
use crate::transfer::{admin, start_task};
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

/// Copies an export's directory (its files only).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("ls") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

/// The export's directory, from the newest export's record.
async fn newest_export(w: &Wharf) -> std::path::PathBuf {
    let listed = admin_ok(w, "GET", "exports", None).await;
    std::path::PathBuf::from(listed["results"][0]["directory"].as_str().expect("directory"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_missing_reordered_or_foreign_chunk_is_refused_by_name_and_nothing_is_imported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path();
    let clients = Clients::new(&work.join("clients"));
    let a = start_with(&work.join("a"), UpstreamEntry::new("up", "http://127.0.0.1:9"));
    let (one, other) = (Image::random(&[5_000_000]), Image::random(&[5_000_000]));
    images::push(&clients, work, &one, &a.host(), "team/app", &["1"], Some(PUSHER));
    images::push(&clients, work, &other, &a.host(), "team/other", &["1"], Some(PUSHER));
    let out = work.join("transfer");
    std::fs::create_dir(&out).expect("mkdir");
    let path = out.display().to_string();
    for repo in ["team/app", "team/other"] {
        let task = start_task(&a, "exports", json!({"repositories": [repo], "path": path, "chunk_size": 1 << 20})).await;
        assert_eq!(task["state"], "completed", "{task}");
    }
    let foreign = newest_export(&a).await;
    let listed = admin_ok(&a, "GET", "exports", None).await;
    let pristine = std::path::PathBuf::from(listed["results"][1]["directory"].as_str().expect("directory"));
    let toc: serde_json::Value = serde_json::from_slice(&std::fs::read(pristine.join("toc.json")).expect("toc")).expect("json");
    let chunks: Vec<(String, String)> = toc["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .map(|c| (c["name"].as_str().expect("name").to_owned(), c["sha256"].as_str().expect("sha256").to_owned()))
        .collect();
    assert!(chunks.len() > 3, "5 MB in chunks of 1 MiB: {toc}");

    let b = start_with_upstreams(&work.join("b"), &[]);
    let (c1, c2, c3) = (&chunks[1], &chunks[2], &chunks[3]);
    let cases: Vec<(&str, Box<dyn Fn(&std::path::Path)>, String)> = vec![
        (
            "one byte flipped",
            Box::new(|dir: &std::path::Path| {
                let p = dir.join(&c2.0);
                let mut bytes = std::fs::read(&p).expect("chunk");
                bytes[1000] ^= 0x20;
                std::fs::write(&p, bytes).expect("write");
            }),
            format!("{}: sha256", c2.0),
        ),
        ("a chunk missing", Box::new(|dir: &std::path::Path| std::fs::remove_file(dir.join(&c3.0)).expect("rm")), format!("{}: missing", c3.0)),
        (
            "two chunks swapped",
            Box::new(|dir: &std::path::Path| {
                std::fs::rename(dir.join(&c1.0), dir.join("swap")).expect("mv");
                std::fs::rename(dir.join(&c2.0), dir.join(&c1.0)).expect("mv");
                std::fs::rename(dir.join("swap"), dir.join(&c2.0)).expect("mv");
            }),
            format!("{}: sha256", c1.0),
        ),
        (
            "a chunk of another export",
            Box::new(|dir: &std::path::Path| {
                std::fs::copy(foreign.join(&c1.0), dir.join(&c1.0)).expect("cp");
            }),
            format!("{}: sha256", c1.0),
        ),
    ];
    for (i, (case, tamper, named)) in cases.iter().enumerate() {
        let dir = work.join(format!("case-{i}"));
        copy_dir(&pristine, &dir);
        tamper(&dir);
        let task = start_task(&b, "imports", json!({"path": dir.display().to_string()})).await;
        let error = task["error"].as_str().unwrap_or_default();
        assert_eq!(task["state"], "failed", "{case}: {task}");
        assert!(error.contains(named.as_str()), "{case}: the error names the file: {error}");
        if !case.contains("missing") {
            let expected = &chunks.iter().find(|(n, _)| named.starts_with(n.as_str())).expect("chunk").1;
            assert!(error.contains(expected.as_str()), "{case}: and the hash expected: {error}");
        }
        let repos = admin_ok(&b, "GET", "repositories", None).await;
        assert_eq!(repos["count"], 0, "{case}: nothing imported: {repos}");
    }
    // Untouched, it imports.
    let task = start_task(&b, "imports", json!({"path": pristine.display().to_string()})).await;
    assert_eq!(task["state"], "completed", "{task}");
    assert_eq!(admin_ok(&b, "GET", "repositories/team%2Fapp", None).await["latest_version"], 1);
    for w in [a, b] {
        w.stop();
    }
}

/// The largest file in a wharf's spool (ingests in progress), in bytes.
fn largest_spooled(storage: &std::path::Path) -> u64 {
    std::fs::read_dir(storage.join("spool"))
        .map(|entries| entries.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).max().unwrap_or(0))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_gib_layer_exports_and_imports_in_flat_memory_and_a_killed_import_leaves_nothing() {
    const BLOCK: usize = 1 << 20;
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path();
    let a = start_with(&work.join("a"), UpstreamEntry::new("up", "http://127.0.0.1:9"));
    let block = bytes::Bytes::from(images::random_bytes(BLOCK));
    let layer = upload_repeated(&a, "team/big", &block, 1024).await;
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = upload_monolithic(&a, "team/big", config).await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 1u64 << 30}],
    });
    let r = put_manifest(&a, "team/big", "1", "application/vnd.oci.image.manifest.v1+json", manifest.to_string().as_bytes()).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));

    let out = work.join("transfer");
    std::fs::create_dir(&out).expect("mkdir");
    let task = start_task(&a, "exports", json!({"repositories": ["team/big"], "path": out.display().to_string(), "chunk_size": 256u64 << 20})).await;
    assert_eq!(task["state"], "completed", "{task}");
    let peak = peak_rss_kib(a.pid());
    assert!(peak < 100 * 1024, "A's peak RSS was {peak} KiB exporting a 1 GiB layer");
    let dir = newest_export(&a).await;
    let chunks = std::fs::read_dir(&dir).expect("ls").filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().starts_with("export.tar."))).count();
    assert_eq!(chunks, 5, "1 GiB and the layout in files of 256 MiB");
    let dir = dir.display().to_string();

    let b = start_with_upstreams(&work.join("b"), &[]);
    let task = start_task(&b, "imports", json!({"path": dir})).await;
    assert_eq!(task["state"], "completed", "{task}");
    let peak = peak_rss_kib(b.pid());
    assert!(peak < 100 * 1024, "B's peak RSS was {peak} KiB importing a 1 GiB layer");
    admin_ok(&b, "POST", "distributions", Some(json!({"name": "big", "base_path": "team/big", "repository": "team/big"}))).await;
    let head = http::request("HEAD", &format!("{}/v2/team/big/blobs/{layer}", b.url()), &[]).await;
    assert_eq!((head.status, head.header("content-length")), (200, Some((1u64 << 30).to_string().as_str())));

    // C is killed while it stores the layer: after a restart nothing of
    // the import is visible, and it runs again to the end.
    let c_dir = work.join("c");
    let c = start_with_upstreams(&c_dir, &[]);
    let started = admin(&c, "POST", "imports", Some(json!({"path": dir}))).await;
    assert_eq!(started.status, 202);
    let task_id = started.json()["id"].as_u64().expect("task id");
    let deadline = Instant::now() + Duration::from_secs(120);
    while largest_spooled(&c_dir.join("storage")) < 64 << 20 {
        let task = admin_ok(&c, "GET", &format!("tasks/{task_id}"), None).await;
        assert!(matches!(task["state"].as_str(), Some("waiting" | "running")), "the import ended before it could be killed: {task}");
        assert!(Instant::now() < deadline, "the import never stored anything");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.kill9();
    let c = Wharf::start_with_config(&c_dir.join("wharf.toml"));
    assert_eq!(admin(&c, "GET", "repositories/team%2Fbig", None).await.status, 404, "nothing half-imported");
    let repos = admin_ok(&c, "GET", "repositories", None).await;
    assert_eq!(repos["count"], 0, "{repos}");
    let task = start_task(&c, "imports", json!({"path": dir})).await;
    assert_eq!(task["state"], "completed", "{task}");
    assert_eq!(admin_ok(&c, "GET", "repositories/team%2Fbig", None).await["latest_version"], 1);
    for w in [a, b, c] {
        w.stop();
    }
}
