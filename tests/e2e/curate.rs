//! Curation against the real binary: images pushed with skopeo into one
//! push repository are copied into another (tags by glob, manifests by
//! digest, with index children, blobs and signatures), checked through the
//! admin API and pulled back with skopeo from the destination's
//! distribution; a tag and a manifest removed; an older version reverted
//! to; a pull-through repository used as a source and refused as a
//! destination; bad requests refused; and the `wharf repository` commands.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::clients::Clients;
use crate::http::{self, Response};
use crate::images::{self, sha256_digest, Image, Index};
use crate::push::{authorization, descriptor, put_manifest, start_with, upload_monolithic, PUSHER};
use crate::registry::Registry;
use crate::wharf::{UpstreamEntry, Wharf};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";

/// An admin API request as the pusher (who has the admin role).
async fn admin(w: &Wharf, method: &str, path: &str, body: Option<Value>) -> Response {
    let auth = authorization();
    let url = format!("{}/api/v1/{path}", w.admin_url());
    match body {
        Some(b) => {
            let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
            http::request_with_body(method, &url, &headers, b.to_string().into_bytes()).await
        }
        None => http::request(method, &url, &[("Authorization", auth.as_str())]).await,
    }
}

/// `POST repositories/{repo}/{action}`: the status and the JSON answer.
async fn curate(w: &Wharf, repo: &str, action: &str, body: Value) -> (u16, Value) {
    let r = admin(w, "POST", &format!("repositories/{}/{action}", repo.replace('/', "%2F")), Some(body)).await;
    (r.status, r.json())
}

/// A curation that must make a version; its number.
#[track_caller]
fn made(answer: (u16, Value)) -> u64 {
    assert_eq!(answer.0, 200, "{}", answer.1);
    answer.1["version"].as_u64().unwrap_or_else(|| panic!("no version made: {}", answer.1))
}

async fn get_json(w: &Wharf, path: &str) -> Value {
    let r = admin(w, "GET", path, None).await;
    assert_eq!(r.status, 200, "{path}: {}", String::from_utf8_lossy(&r.body));
    r.json()
}

async fn latest(w: &Wharf, repo: &str) -> u64 {
    get_json(w, &format!("repositories/{}", repo.replace('/', "%2F"))).await["latest_version"].as_u64().expect("latest")
}

/// What a version holds, as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Content {
    /// Tag → manifest digest.
    tags: BTreeMap<String, String>,
    manifests: BTreeSet<String>,
    blobs: BTreeSet<String>,
}

async fn content(w: &Wharf, repo: &str, version: &str) -> Content {
    let base = format!("repositories/{}/versions/{version}", repo.replace('/', "%2F"));
    let list = |kind: &'static str| {
        let path = format!("{base}/{kind}?limit=1000");
        async move {
            let page = get_json(w, &path).await;
            assert_eq!(page["count"].as_u64(), page["results"].as_array().map(|r| r.len() as u64), "{page}");
            page["results"].as_array().cloned().unwrap_or_default()
        }
    };
    let text = |v: &Value| v.as_str().expect("a string").to_owned();
    Content {
        tags: list("tags").await.iter().map(|t| (text(&t["name"]), text(&t["digest"]))).collect(),
        manifests: list("manifests").await.iter().map(|m| text(&m["digest"])).collect(),
        blobs: list("blobs").await.iter().map(|b| text(&b["digest"])).collect(),
    }
}

impl Content {
    /// Adds an image: its manifest, config and layers.
    fn with_image(mut self, image: &Image) -> Content {
        self.manifests.insert(image.manifest.digest.clone());
        self.blobs.extend(image.blobs().iter().map(|b| b.digest.clone()));
        self
    }

    fn with_tag(mut self, tag: &str, digest: &str) -> Content {
        self.tags.insert(tag.to_owned(), digest.to_owned());
        self
    }

    fn with_artifact(mut self, a: &Artifact) -> Content {
        self.manifests.insert(a.digest.clone());
        self.blobs.extend(a.blobs.iter().cloned());
        self
    }
}

/// A small pushed artifact (a signature, an SBOM): its manifest digest and blobs.
struct Artifact {
    digest: String,
    blobs: Vec<String>,
}

/// Pushes an artifact manifest with an empty config and one layer into
/// `repo`, under `reference` (a tag, or None for by digest), optionally
/// with a subject.
async fn push_artifact(w: &Wharf, repo: &str, reference: Option<&str>, subject: Option<&Image>) -> Artifact {
    let config = b"{}".to_vec();
    let payload = images::random_bytes(300);
    let config_digest = upload_monolithic(w, repo, &config).await;
    let payload_digest = upload_monolithic(w, repo, &payload).await;
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": descriptor(EMPTY_CONFIG, &config),
        "layers": [descriptor("application/vnd.example.payload", &payload)],
    });
    if let Some(s) = subject {
        manifest["subject"] = descriptor(OCI_MANIFEST, &s.manifest.bytes);
    }
    let bytes = serde_json::to_vec(&manifest).expect("manifest JSON");
    let digest = sha256_digest(&bytes);
    let r = put_manifest(w, repo, reference.unwrap_or(&digest), OCI_MANIFEST, &bytes).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    Artifact { digest, blobs: vec![config_digest, payload_digest] }
}

/// cosign's signature tag for a manifest digest.
fn cosign_sig(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// The registry port's answer for a manifest of the destination.
async fn manifest_status(w: &Wharf, repo: &str, reference: &str) -> u16 {
    let auth = authorization();
    let url = format!("{}/v2/{repo}/manifests/{reference}", w.url());
    http::request("HEAD", &url, &[("Authorization", auth.as_str()), ("Accept", OCI_MANIFEST)]).await.status
}

/// Waits until the recorder has written version `n` of a pull-through repository.
async fn wait_for_version(w: &Wharf, repo: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Not there at all (404) until the recorder's first batch.
        let r = admin(w, "GET", &format!("repositories/{}", repo.replace('/', "%2F")), None).await;
        if r.status == 200 && r.json()["latest_version"].as_u64() >= Some(n) {
            return;
        }
        assert!(Instant::now() < deadline, "{repo} never reached version {n}: {}", String::from_utf8_lossy(&r.body));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the source repository holds: `one` under two tags, `two`, a
/// multi-platform index, a cosign signature of `one` and a referrer of
/// `two`.
struct Source {
    one: Image,
    two: Image,
    multi: Index,
    sig_of_one: Artifact,
    referrer_of_two: Artifact,
}

const SRC: &str = "team/src";

async fn push_source(w: &Wharf, clients: &Clients, work: &std::path::Path) -> Source {
    let one = Image::random(&[20_000, 10_000]);
    let two = Image::random(&[15_000]);
    let multi = Index::random(&[5_000]);
    images::push(clients, work, &one, &w.host(), SRC, &["v1.0", "v1.1"], Some(PUSHER));
    images::push(clients, work, &two, &w.host(), SRC, &["v2.0"], Some(PUSHER));
    images::push(clients, work, &multi, &w.host(), SRC, &["multi"], Some(PUSHER));
    let sig_of_one = push_artifact(w, SRC, Some(&cosign_sig(&one.manifest.digest)), None).await;
    let referrer_of_two = push_artifact(w, SRC, None, Some(&two)).await;
    Source { one, two, multi, sig_of_one, referrer_of_two }
}

#[tokio::test(flavor = "multi_thread")]
async fn curation_copies_removes_and_reverts_through_the_admin_api() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let w = start_with(&tmp.path().join("wharf"), UpstreamEntry::new("up", &upstream.url()));
    let src = push_source(&w, &clients, tmp.path()).await;
    // The destination: a push repository of its own, with one image.
    let base = Image::random(&[8_000]);
    images::push(&clients, tmp.path(), &base, &w.host(), "team/dest", &["base"], Some(PUSHER));
    let v1 = Content::default().with_image(&base).with_tag("base", &base.manifest.digest);
    assert_eq!(content(&w, "team/dest", "1").await, v1);

    // Tags by glob: both tags of `one`, with its cosign signature.
    let copy_v1 = json!({"source": SRC, "tags": ["v1.*"]});
    assert_eq!(made(curate(&w, "team/dest", "copy", copy_v1.clone()).await), 2);
    let v2 = v1
        .clone()
        .with_image(&src.one)
        .with_tag("v1.0", &src.one.manifest.digest)
        .with_tag("v1.1", &src.one.manifest.digest)
        .with_artifact(&src.sig_of_one)
        .with_tag(&cosign_sig(&src.one.manifest.digest), &src.sig_of_one.digest);
    assert_eq!(content(&w, "team/dest", "2").await, v2);
    let summary = &get_json(&w, "repositories/team%2Fdest/versions/2").await["content_summary"];
    assert_eq!(summary["added"], json!({"tag": 3, "manifest": 2, "blob": 5, "signature": 0}), "{summary}");
    assert_eq!(curate(&w, "team/dest", "copy", copy_v1).await, (200, json!({"version": null})), "nothing new");

    // The destination's distribution serves what was copied.
    let raw = clients.inspect_raw(&format!("docker://{}/team/dest:v1.0", w.host()), Some(PUSHER));
    assert_eq!(raw, src.one.manifest.bytes);
    let pulled = tmp.path().join("pulled-one");
    clients.pull_to_layout(&format!("docker://{}/team/dest:v1.1", w.host()), &pulled, "v1.1", &[]);
    images::assert_layout_holds_image(&pulled, "v1.1", &src.one);
    assert_eq!(manifest_status(&w, "team/dest", "v2.0").await, 404, "not copied");

    // Manifests by digest: no tags, but index children and referrers.
    let by_digest = json!({"source": SRC, "manifests": [src.two.manifest.digest, src.multi.manifest.digest]});
    assert_eq!(made(curate(&w, "team/dest", "copy", by_digest).await), 3);
    let mut v3 = v2.clone().with_image(&src.two).with_artifact(&src.referrer_of_two);
    v3.manifests.insert(src.multi.manifest.digest.clone());
    for child in &src.multi.images {
        v3 = v3.with_image(child);
    }
    assert_eq!(content(&w, "team/dest", "3").await, v3);
    let auth = authorization();
    let referrers = http::request(
        "GET",
        &format!("{}/v2/team/dest/referrers/{}", w.url(), src.two.manifest.digest),
        &[("Authorization", auth.as_str())],
    )
    .await;
    assert_eq!(referrers.json()["manifests"][0]["digest"], src.referrer_of_two.digest.as_str());
    let all = tmp.path().join("pulled-multi");
    let by_digest_ref = format!("docker://{}/team/dest@{}", w.host(), src.multi.manifest.digest);
    clients.pull_to_layout(&by_digest_ref, &all, "multi", &["--all"]);
    assert_eq!(images::layout_tag_digest(&all, "multi"), src.multi.manifest.digest);
    for child in &src.multi.images {
        for blob in child.blobs() {
            assert!(images::layout_blob(&all, &blob.digest) == blob.bytes, "{} of a child", blob.digest);
        }
    }

    // A pull-through repository is a source, never a destination.
    let pulled_through = Image::random(&[12_000]);
    images::push(&clients, tmp.path(), &pulled_through, &upstream.host(), "lib/base", &["1"], None);
    let through = tmp.path().join("through");
    clients.pull_to_layout(&format!("docker://{}/up/lib/base:1", w.host()), &through, "1", &["--src-creds", PUSHER]);
    wait_for_version(&w, "up/lib/base", 1).await;
    for (action, body) in [
        ("copy", json!({"source": SRC})),
        ("remove", json!({"tags": ["1"]})),
        ("revert", json!({"version": 0})),
    ] {
        let (status, answer) = curate(&w, "up/lib/base", action, body).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("conflict")), "{action}: {answer}");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| m.contains("pull-through")), "{answer}");
    }
    assert_eq!(latest(&w, "up/lib/base").await, 1, "refused changes change nothing");
    let from_cache = json!({"source": "up/lib/base", "source_version": 1, "tags": ["1"]});
    assert_eq!(made(curate(&w, "team/dest", "copy", from_cache).await), 4);
    let v4 = v3.clone().with_image(&pulled_through).with_tag("1", &pulled_through.manifest.digest);
    assert_eq!(content(&w, "team/dest", "4").await, v4);
    let raw = clients.inspect_raw(&format!("docker://{}/team/dest:1", w.host()), Some(PUSHER));
    assert_eq!(raw, pulled_through.manifest.bytes);

    // Removing a tag leaves its manifest; removing a manifest takes its
    // other tags and its blobs (not the signature, tagged on its own).
    assert_eq!(made(curate(&w, "team/dest", "remove", json!({"tags": ["v1.1"]})).await), 5);
    assert_eq!(manifest_status(&w, "team/dest", "v1.1").await, 404);
    assert_eq!(manifest_status(&w, "team/dest", "v1.0").await, 200);
    let remove_one = json!({"manifests": [src.one.manifest.digest]});
    assert_eq!(made(curate(&w, "team/dest", "remove", remove_one.clone()).await), 6);
    let mut v6 = v4.clone();
    v6.tags.remove("v1.0");
    v6.tags.remove("v1.1");
    v6.manifests.remove(&src.one.manifest.digest);
    for blob in src.one.blobs() {
        v6.blobs.remove(&blob.digest);
    }
    assert_eq!(content(&w, "team/dest", "6").await, v6);
    assert_eq!(manifest_status(&w, "team/dest", "v1.0").await, 404);
    let (status, answer) = curate(&w, "team/dest", "remove", remove_one).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("not_found")), "{answer}");

    // Reverting to version 2 makes its content the latest again, as
    // version 7; every older version stays as it was.
    let mut history = Vec::new();
    for v in 1..=6 {
        history.push(content(&w, "team/dest", &v.to_string()).await);
    }
    assert_eq!(made(curate(&w, "team/dest", "revert", json!({"version": 2})).await), 7);
    assert_eq!(content(&w, "team/dest", "latest").await, v2);
    for (i, before) in history.iter().enumerate() {
        assert_eq!(&content(&w, "team/dest", &(i + 1).to_string()).await, before, "version {} changed", i + 1);
    }
    let raw = clients.inspect_raw(&format!("docker://{}/team/dest:v1.0", w.host()), Some(PUSHER));
    assert_eq!(raw, src.one.manifest.bytes, "served again");
    assert_eq!(manifest_status(&w, "team/dest", "1").await, 404);
    assert_eq!(curate(&w, "team/dest", "revert", json!({"version": 2})).await, (200, json!({"version": null})));

    // Bad requests change nothing.
    let digest_elsewhere = base.manifest.digest.clone();
    for (action, body, status, code) in [
        ("copy", json!({"source": SRC, "tags": ["v1/*"]}), 400, "invalid"),
        ("copy", json!({"source": SRC, "tags": [], "manifests": []}), 400, "invalid"),
        ("copy", json!({"source": SRC, "manifests": ["sha256:abc"]}), 400, "invalid"),
        ("copy", json!({"source": SRC, "manifests": []}), 400, "invalid"),
        ("copy", json!({"source": SRC, "tag": ["v1.*"]}), 400, "invalid"),
        ("copy", json!({"source": SRC, "source_version": 1.5}), 400, "invalid"),
        ("copy", json!({"source": SRC, "manifests": [digest_elsewhere]}), 404, "not_found"),
        ("copy", json!({"source": "no/such"}), 404, "not_found"),
        ("copy", json!({"source": SRC, "source_version": 999}), 404, "not_found"),
        ("remove", json!({}), 400, "invalid"),
        ("remove", json!({"tags": ["bad tag"]}), 400, "invalid"),
        ("remove", json!({"tags": ["v1.0", "nope"]}), 404, "not_found"),
        ("revert", json!({}), 400, "invalid"),
        ("revert", json!({"version": 999}), 404, "not_found"),
    ] {
        let (got, answer) = curate(&w, "team/dest", action, body.clone()).await;
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{action} {body}: {answer}");
    }
    let (got, answer) = curate(&w, "no/such", "revert", json!({"version": 0})).await;
    assert_eq!((got, answer["error"]["code"].as_str()), (404, Some("not_found")), "{answer}");
    assert_eq!(latest(&w, "team/dest").await, 7);
    let wrong_method = admin(&w, "GET", "repositories/team%2Fdest/copy", None).await;
    assert_eq!((wrong_method.status, wrong_method.header("allow")), (405, Some("POST")));
    let url = format!("{}/api/v1/repositories/team%2Fdest/revert", w.admin_url());
    let auth = authorization();
    let not_json = http::request_with_body("POST", &url, &[("Authorization", auth.as_str())], b"{\"version\": 1}".to_vec()).await;
    assert_eq!(not_json.status, 415);
}

/// Runs `wharf --admin <url> <args>` as the pusher, off the runtime's workers.
pub(crate) async fn wharf_cli(w: &Wharf, args: &[&str]) -> Output {
    let mut argv = vec!["--admin".to_owned(), w.admin_url()];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    let (user, password) = PUSHER.split_once(':').expect("user:password");
    let (user, password) = (user.to_owned(), password.to_owned());
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(&argv)
            .env_remove("WHARF_ADMIN")
            .env("WHARF_ADMIN_USER", user)
            .env("WHARF_ADMIN_PASSWORD", password)
            .stdin(Stdio::null())
            .output()
            .expect("run wharf")
    })
    .await
    .expect("wharf runner")
}

#[track_caller]
fn printed(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_repository_commands_copy_remove_and_revert() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let w = start_with(&tmp.path().join("wharf"), UpstreamEntry::new("up", "http://127.0.0.1:9"));
    let src = push_source(&w, &clients, tmp.path()).await;
    let base = Image::random(&[8_000]);
    images::push(&clients, tmp.path(), &base, &w.host(), "team/cli", &["base"], Some(PUSHER));
    let copy_tags = ["repository", "copy-tags", "--name", "team/cli", "--source", SRC, "--tag", "v1.*"];

    let out = wharf_cli(&w, &copy_tags).await;
    assert_eq!(printed(&out), "created version 2 of team/cli\n");
    let tags: Vec<String> = content(&w, "team/cli", "2").await.tags.into_keys().collect();
    assert_eq!(tags, ["base".to_owned(), cosign_sig(&src.one.manifest.digest), "v1.0".into(), "v1.1".into()]);
    let out = wharf_cli(&w, &copy_tags).await;
    assert_eq!(printed(&out), "no change: team/cli stays at version 2\n");

    let digest = src.two.manifest.digest.as_str();
    let args = ["repository", "copy-manifests", "--name", "team/cli", "--source", SRC, "--source-version", "latest", "--digest", digest];
    assert_eq!(printed(&wharf_cli(&w, &args).await), "created version 3 of team/cli\n");
    assert!(content(&w, "team/cli", "3").await.manifests.contains(&src.referrer_of_two.digest));

    let args = ["repository", "remove", "--name", "team/cli", "--tag", "v1.1", "--digest", digest];
    assert_eq!(printed(&wharf_cli(&w, &args).await), "created version 4 of team/cli\n");
    let v4 = content(&w, "team/cli", "4").await;
    assert!(!v4.tags.contains_key("v1.1") && !v4.manifests.contains(digest), "{v4:?}");

    let args = ["repository", "revert", "--name", "team/cli", "--version", "1"];
    assert_eq!(printed(&wharf_cli(&w, &args).await), "created version 5 of team/cli\n");
    assert_eq!(content(&w, "team/cli", "5").await, content(&w, "team/cli", "1").await);
    let args = ["--json", "repository", "revert", "--name", "team/cli", "--version", "1"];
    let answer: Value = serde_json::from_str(&printed(&wharf_cli(&w, &args).await)).expect("--json prints JSON");
    assert_eq!(answer, json!({"version": null}), "--json prints the API's answer");

    let refused = wharf_cli(&w, &["repository", "remove", "--name", "team/cli", "--tag", "nope"]).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("wharf: ") && stderr.contains("nope") && stderr.lines().count() == 1, "{stderr}");
    let usage = wharf_cli(&w, &["repository", "remove", "--name", "team/cli"]).await;
    assert_eq!(usage.status.code(), Some(64), "{}", String::from_utf8_lossy(&usage.stderr));
    assert_eq!(latest(&w, "team/cli").await, 5);
}
