//! Sync repositories from a real upstream (`docker-registry`): the seeds'
//! workflow with wharf's CLI (create a repository and a remote with tag
//! filters, sync, distribute, pull with podman, resync in mirror mode after
//! the upstream changed), signatures by the cosign tag scheme and by the
//! referrers tag schema, on-demand blobs fetched on first pull only, and a
//! sync killed half way that the next one finishes without fetching a
//! verified blob twice.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::clients::Clients;
use crate::http::{self, Response};
use crate::images::{self, Blob, Image, Index, MANIFEST_MEDIA_TYPE};
use crate::push::{authorization, start_with, PUSHER};
use crate::registry::Registry;
use crate::wharf::{UpstreamEntry, Wharf};

/// The pusher is also the admin (see `push::start_with`).
async fn admin(wharf: &Wharf, method: &str, path: &str, body: Option<Value>) -> Response {
    let url = format!("{}/api/v1/{path}", wharf.admin_url());
    let auth = authorization();
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    match body {
        Some(b) => http::request_with_body(method, &url, &headers, b.to_string().into_bytes()).await,
        None => http::request(method, &url, &headers[..1]).await,
    }
}

pub(crate) async fn admin_ok(wharf: &Wharf, method: &str, path: &str, body: Option<Value>) -> Value {
    let r = admin(wharf, method, path, body).await;
    assert!((200..300).contains(&r.status), "{method} {path}: {} {}", r.status, String::from_utf8_lossy(&r.body));
    if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

/// Runs `wharf --admin <url> <args>` with the admin's credentials.
pub(crate) async fn wharf_cli(wharf: &Wharf, args: &[&str]) -> (i32, String, String) {
    let mut argv = vec!["--admin".to_owned(), wharf.admin_url()];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    let (user, password) = PUSHER.split_once(':').expect("user:password");
    let (user, password) = (user.to_owned(), password.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(&argv)
            .env("WHARF_ADMIN_USER", user)
            .env("WHARF_ADMIN_PASSWORD", password)
            .stdin(Stdio::null())
            .output()
            .expect("run wharf")
    })
    .await
    .expect("runner");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

pub(crate) async fn cli_ok(wharf: &Wharf, args: &[&str]) -> String {
    let (code, out, err) = wharf_cli(wharf, args).await;
    assert_eq!(code, 0, "wharf {args:?}: {out}{err}");
    out
}

/// Tags and manifest digests of a version, sorted.
pub(crate) async fn content(wharf: &Wharf, repo: &str, version: &str) -> (Vec<String>, Vec<String>) {
    let path = |kind: &str| format!("repositories/{repo}/versions/{version}/{kind}?limit=1000");
    let tags = admin_ok(wharf, "GET", &path("tags"), None).await;
    let manifests = admin_ok(wharf, "GET", &path("manifests"), None).await;
    let names = |v: &Value, key: &str| {
        let mut out: Vec<String> =
            v["results"].as_array().into_iter().flatten().filter_map(|x| x[key].as_str().map(str::to_owned)).collect();
        out.sort();
        out
    };
    (names(&tags, "name"), names(&manifests, "digest"))
}

pub(crate) async fn wait_task(wharf: &Wharf, id: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let task = admin_ok(wharf, "GET", &format!("tasks/{id}"), None).await;
        if matches!(task["state"].as_str(), Some("completed" | "failed" | "canceled")) {
            return task;
        }
        assert!(Instant::now() < deadline, "task {id} never finished: {task}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// An image whose manifest names `subject`: a signature or attestation as
/// the OCI referrers model has them.
pub(crate) fn referrer_of(subject: &Blob) -> Image {
    let mut image = Image::random(&[64]);
    let mut manifest: Value = serde_json::from_slice(&image.manifest.bytes).expect("manifest JSON");
    manifest["artifactType"] = json!("application/vnd.example.signature");
    manifest["subject"] = json!({ "mediaType": subject.media_type, "digest": subject.digest, "size": subject.bytes.len() });
    image.manifest = Blob::new(MANIFEST_MEDIA_TYPE, serde_json::to_vec(&manifest).expect("JSON"));
    image
}

/// The referrers tag schema: an index of `subject`'s referrers, tagged
/// `sha256-<hex>` (what a registry without the referrers API holds).
pub(crate) fn referrers_index(subject: &Blob, referrer: &Image) -> Index {
    let mut entry = json!({
        "mediaType": MANIFEST_MEDIA_TYPE,
        "digest": referrer.manifest.digest,
        "size": referrer.manifest.bytes.len(),
        "artifactType": "application/vnd.example.signature",
    });
    entry["annotations"] = json!({ "org.example.for": subject.digest });
    let index = json!({ "schemaVersion": 2, "mediaType": images::INDEX_MEDIA_TYPE, "manifests": [entry] });
    Index {
        manifest: Blob::new(images::INDEX_MEDIA_TYPE, serde_json::to_vec(&index).expect("JSON")),
        images: vec![referrer.clone()],
    }
}

/// `podman pull` over plain HTTP, as from the seeds' registry; the digest
/// podman stored.
pub(crate) fn podman_pull(clients: &Clients, reference: &str) -> String {
    clients.podman_ok(&["pull", "--quiet", "--tls-verify=false", reference]);
    let out = clients.podman_ok(&["image", "inspect", "--format", "{{.Digest}}", reference]);
    String::from_utf8_lossy(&out).trim().to_owned()
}

fn url_of(registry: &Registry) -> String {
    registry.url()
}

/// A blob upload in one PUT after the POST that opens it.
pub(crate) async fn put_blob(url: &str, repo: &str, blob: &Blob) {
    let started = http::request("POST", &format!("{url}/v2/{repo}/blobs/uploads/"), &[]).await;
    assert_eq!(started.status, 202, "upload start: {}", String::from_utf8_lossy(&started.body));
    let location = started.header("location").expect("Location");
    let location = if location.starts_with('/') { format!("{url}{location}") } else { location.to_owned() };
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = http::request_with_body(
        "PUT",
        &format!("{location}{sep}digest={}", blob.digest),
        &[("Content-Type", "application/octet-stream")],
        blob.bytes.clone(),
    )
    .await;
    assert_eq!(r.status, 201, "blob upload: {}", String::from_utf8_lossy(&r.body));
}

pub(crate) async fn put_manifest(url: &str, repo: &str, reference: &str, manifest: &Blob) {
    let r = http::request_with_body(
        "PUT",
        &format!("{url}/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", manifest.media_type.as_str())],
        manifest.bytes.clone(),
    )
    .await;
    assert_eq!(r.status, 201, "manifest {reference}: {}", String::from_utf8_lossy(&r.body));
}

pub(crate) fn stem(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_workflow_syncs_filters_mirrors_and_keeps_signatures() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let host = upstream.host();
    let push = |content: &dyn images::Pushable, tag: &str| {
        images::push(&clients, tmp.path(), content, &host, "team/app", &[tag], None);
    };
    let (v10, v11, latest, rc) = (Image::random(&[2048]), Image::random(&[2048]), Image::random(&[1024]), Image::random(&[512]));
    let multi = Index::random(&[512]);
    push(&v10, "v1.0");
    push(&v11, "v1.1");
    push(&latest, "latest");
    push(&rc, "v1.2-rc1");
    push(&multi, "multi");
    // A cosign signature of v1.0, by tag scheme.
    let cosign = Image::random(&[128]);
    push(&cosign, &format!("{}.sig", stem(&v10.manifest.digest)));
    // A referrer of v1.1, by the referrers tag schema. skopeo will not copy
    // an index of artifacts unchanged, so these go up by the registry API.
    let referrer = referrer_of(&v11.manifest);
    let index = referrers_index(&v11.manifest, &referrer);
    for blob in referrer.blobs() {
        put_blob(&url_of(&upstream), "team/app", blob).await;
    }
    put_manifest(&url_of(&upstream), "team/app", &referrer.manifest.digest, &referrer.manifest).await;
    put_manifest(&url_of(&upstream), "team/app", &stem(&v11.manifest.digest), &index.manifest).await;

    let wharf = start_with(&tmp.path().join("wharf"), UpstreamEntry::new("up", "http://127.0.0.1:9"));
    let url = upstream.url();

    // The seeds' workflow, with wharf's CLI.
    cli_ok(&wharf, &["repository", "create", "--name", "foo", "--description", "synced"]).await;
    cli_ok(
        &wharf,
        &[
            "remote", "create", "--name", "foo", "--url", &url, "--upstream-name", "team/app",
            "--include-tags", "v1.*,multi", "--exclude-tags", "*-rc*",
        ],
    )
    .await;
    let out = cli_ok(&wharf, &["repository", "sync", "--name", "foo", "--remote", "foo"]).await;
    assert!(out.contains("completed"), "the CLI waits for the task to finish: {out}");

    let (tags, manifests) = content(&wharf, "foo", "1").await;
    let cosign_tag = format!("{}.sig", stem(&v10.manifest.digest));
    assert_eq!(tags, sorted(vec!["multi".into(), "v1.0".into(), "v1.1".into(), cosign_tag.clone()]));
    let mut want: Vec<String> = vec![
        v10.manifest.digest.clone(),
        v11.manifest.digest.clone(),
        multi.manifest.digest.clone(),
        cosign.manifest.digest.clone(),
        referrer.manifest.digest.clone(),
    ];
    want.extend(multi.images.iter().map(|i| i.manifest.digest.clone()));
    assert_eq!(manifests, sorted(want), "index children and both kinds of signature come along");
    let version = admin_ok(&wharf, "GET", "repositories/foo/versions/1", None).await;
    assert_eq!(version["content_summary"]["added"]["tag"], 4);
    assert_eq!(version["content_summary"]["added"]["manifest"], 7);

    // Immediate: every blob is here; pulls reach the upstream no more.
    let blobs = admin_ok(&wharf, "GET", "repositories/foo/versions/1/blobs?limit=1000", None).await;
    let blob_list = blobs["results"].as_array().expect("blobs");
    assert!(blob_list.iter().all(|b| b["cached"] == true), "{blobs}");
    let gets_after_sync: usize = blob_list.iter().map(|b| upstream.blob_gets(b["digest"].as_str().expect("digest"))).sum();
    assert_eq!(gets_after_sync, blob_list.len(), "each blob fetched exactly once");

    // A repeat sync changes nothing and makes no version.
    let again = admin_ok(&wharf, "POST", "repositories/foo/sync", Some(json!({}))).await;
    let again = wait_task(&wharf, again["id"].as_u64().expect("id")).await;
    assert_eq!((again["state"].clone(), again["created_resources"].clone()), (json!("completed"), json!([])));
    let progress = &again["progress"];
    assert!(progress["items_done"].as_u64().is_some_and(|n| n > 0), "{again}");
    assert_eq!(progress["items_done"], progress["items_total"], "a finished sync did all it counted: {again}");
    assert_eq!(admin_ok(&wharf, "GET", "repositories/foo", None).await["latest_version"], 1);

    cli_ok(&wharf, &["distribution", "create", "--name", "foo", "--base-path", "foo", "--repository", "foo"]).await;
    assert_eq!(podman_pull(&clients, &format!("{}/foo:v1.0", wharf.host())), v10.manifest.digest);
    let dest = tmp.path().join("multi");
    clients.pull_to_layout(&format!("docker://{}/foo:multi", wharf.host()), &dest, "multi", &["--all"]);
    let total: usize = blob_list.iter().map(|b| upstream.blob_gets(b["digest"].as_str().expect("digest"))).sum();
    assert_eq!(total, gets_after_sync, "pulling a synced image fetches nothing from the upstream");

    // Signatures are served back: the referrers API on the distribution.
    let referrers = http::request("GET", &format!("{}/v2/foo/referrers/{}", wharf.url(), v11.manifest.digest), &[]).await;
    assert_eq!(referrers.status, 200);
    let listed: Vec<String> = referrers.json()["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["digest"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(listed, std::slice::from_ref(&referrer.manifest.digest));
    let sig = http::request("HEAD", &format!("{}/v2/foo/manifests/{cosign_tag}", wharf.url()), &[]).await;
    assert_eq!(sig.header("docker-content-digest"), Some(cosign.manifest.digest.as_str()));

    // A remote without filters adds `latest` (and the rest) additively.
    cli_ok(&wharf, &["remote", "create", "--name", "all", "--url", &url, "--upstream-name", "team/app"]).await;
    cli_ok(&wharf, &["repository", "sync", "--name", "foo", "--remote", "all"]).await;
    let (tags, _) = content(&wharf, "foo", "latest").await;
    assert!(tags.contains(&"latest".to_owned()) && tags.contains(&"v1.2-rc1".to_owned()), "{tags:?}");

    // Upstream changes: v1.1 is deleted, v1.3 appears.
    clients.skopeo_ok(&["delete", "--tls-verify=false", &format!("docker://{host}/team/app:v1.1")]);
    let v13 = Image::random(&[256]);
    push(&v13, "v1.3");
    cli_ok(&wharf, &["repository", "sync", "--name", "foo", "--remote", "foo", "--mirror"]).await;
    let repo = admin_ok(&wharf, "GET", "repositories/foo", None).await;
    assert_eq!((repo["latest_version"].clone(), repo["mirrored"].clone()), (json!(3), json!(true)));
    let (tags, manifests) = content(&wharf, "foo", "3").await;
    assert!(tags.contains(&"v1.3".to_owned()) && !tags.contains(&"v1.1".to_owned()), "{tags:?}");
    assert!(tags.contains(&"latest".to_owned()), "mirror applies only to the filter's tags: {tags:?}");
    assert!(tags.contains(&"v1.2-rc1".to_owned()), "an excluded tag is outside the mirror too: {tags:?}");
    assert!(!manifests.contains(&v11.manifest.digest), "v1.1's manifest went with its tag");
    // Its referrer stays: the unfiltered sync brought the `sha256-<hex>`
    // tag of the referrers index, which the filtered mirror does not own.
    assert!(manifests.contains(&referrer.manifest.digest), "held by a tag outside the filter");
    let v3 = admin_ok(&wharf, "GET", "repositories/foo/versions/3", None).await;
    assert_eq!(v3["content_summary"]["removed"]["tag"], 1, "{v3}");
    assert_eq!(v3["content_summary"]["added"]["tag"], 1, "{v3}");
    // Version 1 is as it was.
    assert!(content(&wharf, "foo", "1").await.0.contains(&"v1.1".to_owned()));
    assert_eq!(podman_pull(&clients, &format!("{}/foo:v1.3", wharf.host())), v13.manifest.digest);

    // A repository synced in mirror mode takes no pushes.
    let refused = clients.skopeo(&[
        "copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--dest-creds", PUSHER,
        &format!("docker://{host}/team/app:v1.0"), &format!("docker://{}/foo:pushed", wharf.host()),
    ]);
    assert!(!refused.status.success(), "a push into a mirrored repository must fail");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.to_lowercase().contains("denied") && stderr.contains("filled by syncs"), "{stderr}");

    // Tasks list the syncs with what they made.
    let tasks = admin_ok(&wharf, "GET", "tasks?kind=sync&resource=foo", None).await;
    assert_eq!(tasks["count"], 4, "{tasks}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_layers_are_fetched_on_first_pull_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let image = Image::random(&[4096, 4096]);
    images::push(&clients, tmp.path(), &image, &upstream.host(), "team/app", &["1.0"], None);
    let wharf = start_with(&tmp.path().join("wharf"), UpstreamEntry::new("up", "http://127.0.0.1:9"));
    admin_ok(&wharf, "POST", "repositories", Some(json!({"name": "lazy"}))).await;
    admin_ok(
        &wharf,
        "POST",
        "remotes",
        Some(json!({"name": "lazy", "url": upstream.url(), "upstream_name": "team/app", "policy": "on_demand"})),
    )
    .await;
    let task = admin(&wharf, "POST", "repositories/lazy/sync", Some(json!({"remote": "lazy"}))).await;
    assert_eq!(task.status, 202);
    let location = task.header("location").expect("Location").to_owned();
    let task = wait_task(&wharf, task.json()["id"].as_u64().expect("id")).await;
    assert_eq!(location, format!("/api/v1/tasks/{}", task["id"]));
    assert_eq!(task["state"], "completed", "{task}");
    assert_eq!(task["created_resources"], json!([{"type": "repository_version", "repository": "lazy", "number": 1}]));
    // Counted by the sync before its task is recorded finished.
    let metrics = http::get(&format!("{}/metrics", wharf.admin_url())).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert_eq!(crate::admin::sample(&text, r#"wharf_syncs_total{result="new_version"}"#), 1, "{text}");
    for layer in &image.layers {
        assert_eq!(upstream.blob_gets(&layer.digest), 0, "on_demand fetches no layer during the sync");
    }
    assert_eq!(upstream.blob_gets(&image.config.digest), 1, "the config is fetched with the manifests: what the image is");
    admin_ok(&wharf, "POST", "distributions", Some(json!({"name": "lazy", "base_path": "lazy", "repository": "lazy"}))).await;
    for _ in 0..2 {
        let dest = tempfile::tempdir().expect("tempdir");
        clients.pull_to_layout(&format!("docker://{}/lazy:1.0", wharf.host()), dest.path(), "1.0", &[]);
        images::assert_layout_holds_image(dest.path(), "1.0", &image);
    }
    for blob in image.blobs() {
        assert_eq!(upstream.blob_gets_reaching(&blob.digest, 1), 1, "fetched on the first pull, served locally after");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_killed_half_way_is_finished_by_the_next_without_fetching_a_blob_twice() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    // Twelve layers; at two requests a second the sync takes several
    // seconds, so it is cut off with some blobs stored and some not.
    let image = Image::random(&[64 << 10; 12]);
    images::push(&clients, tmp.path(), &image, &upstream.host(), "team/big", &["1.0"], None);
    let dir = tmp.path().join("wharf");
    let wharf = start_with(&dir, UpstreamEntry::new("up", "http://127.0.0.1:9"));
    admin_ok(&wharf, "POST", "repositories", Some(json!({"name": "big"}))).await;
    admin_ok(
        &wharf,
        "POST",
        "remotes",
        Some(json!({"name": "big", "url": upstream.url(), "upstream_name": "team/big",
                    "download_concurrency": 1, "rate_limit": 2})),
    )
    .await;
    let task = admin_ok(&wharf, "POST", "repositories/big/sync", Some(json!({"remote": "big"}))).await;
    let id = task["id"].as_u64().expect("id");
    let deadline = Instant::now() + Duration::from_secs(60);
    let fetched = |image: &Image| image.blobs().iter().filter(|b| upstream.blob_gets(&b.digest) > 0).count();
    while fetched(&image) < 3 {
        assert!(Instant::now() < deadline, "the sync never got going");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let config = wharf.config_path.clone();
    wharf.kill9();
    // What the killed sync had committed. A blob whose bytes were still on
    // their way (sent by the upstream, not yet verified and renamed into
    // `objects/`) is not stored, and fetching it again is right; a stored
    // one must never be fetched again.
    let stored = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        dir.join("storage/objects/blobs/sha256").join(&hex[..2]).join(hex).exists()
    };
    let kept: Vec<&Blob> = image.blobs().into_iter().filter(|b| stored(&b.digest)).collect();
    assert!(!kept.is_empty(), "the killed sync had stored nothing to resume from");
    assert!(kept.len() < image.blobs().len(), "the sync was cut off half way ({} blobs stored)", kept.len());

    let wharf = Wharf::start_with_config(&config);
    let task = admin_ok(&wharf, "GET", &format!("tasks/{id}"), None).await;
    assert_eq!((task["state"].clone(), task["error"].clone()), (json!("failed"), json!("interrupted by a restart")));
    admin_ok(&wharf, "PATCH", "remotes/big", Some(json!({"rate_limit": null, "download_concurrency": 4}))).await;
    let out = cli_ok(&wharf, &["repository", "sync", "--name", "big", "--remote", "big", "--json"]).await;
    let done: Value = serde_json::from_str(&out).expect("--json prints the task");
    assert_eq!(done["state"], "completed", "{done}");
    for blob in image.blobs() {
        let gets = upstream.blob_gets(&blob.digest);
        if kept.iter().any(|k| k.digest == blob.digest) {
            assert_eq!(gets, 1, "blob {} was stored before the kill, yet fetched again", blob.digest);
        } else {
            // At most once in flight when killed, then once by the resumed sync.
            assert!((1..=2).contains(&gets), "blob {} fetched {gets} times", blob.digest);
        }
        // The last bytes of a fill reach the sync as its commit (sync,
        // rename; on S3 the upload first) runs: stored a moment later.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !stored(&blob.digest) {
            assert!(Instant::now() < deadline, "blob {} stored after the resumed sync", blob.digest);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (tags, manifests) = content(&wharf, "big", "1").await;
    assert_eq!((tags, manifests), (vec!["1.0".to_owned()], vec![image.manifest.digest.clone()]));
}
