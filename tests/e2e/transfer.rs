//! Exports for air-gapped sites (issue 18, in progress): an export through
//! the admin API is an OCI layout in a tar that skopeo reads as it is, with
//! a table of contents that matches its (chunked) files; an incremental
//! export carries only what its base did not.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::Digest as _;

use crate::clients::Clients;
use crate::http;
use crate::images::{self, assert_layout_holds_image, Image};
use crate::push::{authorization, start_with, PUSHER};
use crate::wharf::{UpstreamEntry, Wharf};

pub(crate) async fn admin(wharf: &Wharf, method: &str, path: &str, body: Option<Value>) -> http::Response {
    let auth = authorization();
    let url = format!("{}/api/v1/{path}", wharf.admin_url());
    let h = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    match body {
        Some(b) => http::request_with_body(method, &url, &h, b.to_string().into_bytes()).await,
        None => http::request(method, &url, &h[..1]).await,
    }
}

/// Starts an export and waits for its task: the task as it ended.
async fn export(wharf: &Wharf, body: Value) -> Value {
    start_task(wharf, "exports", body).await
}

/// POSTs `body` to `path` (a task starting), then waits for the task:
/// the task as it ended.
pub(crate) async fn start_task(wharf: &Wharf, path: &str, body: Value) -> Value {
    let r = admin(wharf, "POST", path, Some(body)).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["id"].as_u64().expect("task id");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let task = admin(wharf, "GET", &format!("tasks/{id}"), None).await.json();
        if !matches!(task["state"].as_str(), Some("waiting" | "running")) {
            return task;
        }
        assert!(Instant::now() < deadline, "{path} task {id} never ended: {task}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_is_an_oci_archive_skopeo_reads_and_an_incremental_one_carries_only_what_is_new() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let w = start_with(&tmp.path().join("wharf"), UpstreamEntry::new("up", "http://127.0.0.1:9"));
    let image = Image::random(&[3 << 20, 20_000]);
    images::push(&clients, tmp.path(), &image, &w.host(), "team/app", &["1.0"], Some(PUSHER));
    let out = tmp.path().join("transfer");
    std::fs::create_dir(&out).expect("mkdir");

    let task = export(&w, json!({"repositories": ["team/app"], "path": out.display().to_string(), "chunk_size": 1 << 20})).await;
    assert_eq!(task["state"], "completed", "{task}");
    let listed = admin(&w, "GET", "exports", None).await.json();
    let first = listed["results"][0].clone();
    assert_eq!((first["state"].as_str(), listed["count"].as_u64()), (Some("complete"), Some(1)), "{listed}");
    let dir = std::path::PathBuf::from(first["directory"].as_str().expect("directory"));
    assert_eq!(dir, out.join(format!("wharf-export-{}", first["id"])));
    let made = &task["created_resources"][0];
    assert_eq!((made["type"].as_str(), &made["id"], made["directory"].as_str()), (Some("export"), &first["id"], dir.to_str()), "{task}");

    // The table of contents matches the files, chunk by chunk and whole.
    let toc: Value = serde_json::from_slice(&std::fs::read(dir.join("toc.json")).expect("toc.json")).expect("json");
    let chunks = toc["chunks"].as_array().expect("chunks");
    assert!(chunks.len() >= 3, "3 MiB in chunks of 1 MiB: {toc}");
    let mut archive = Vec::new();
    for chunk in chunks {
        let bytes = std::fs::read(dir.join(chunk["name"].as_str().expect("name"))).expect("chunk");
        assert_eq!(bytes.len() as u64, chunk["size"].as_u64().expect("size"));
        assert_eq!(sha256_hex(&bytes), chunk["sha256"].as_str().expect("sha256"));
        archive.extend(bytes);
    }
    assert_eq!(sha256_hex(&archive), toc["archive_sha256"].as_str().expect("archive hash"));

    // Joined, it is an OCI archive skopeo reads by <repository>:<tag>.
    let joined = tmp.path().join("joined.tar");
    std::fs::write(&joined, &archive).expect("write");
    let layout = tmp.path().join("layout");
    clients.pull_to_layout(&format!("oci-archive:{}:team/app:1.0", joined.display()), &layout, "1.0", &[]);
    assert_layout_holds_image(&layout, "1.0", &image);

    // A new tag, then an export built on the first: only the new image.
    let next = Image::random(&[30_000]);
    images::push(&clients, tmp.path(), &next, &w.host(), "team/app", &["2.0"], Some(PUSHER));
    let base = first["id"].as_u64().expect("id");
    // This one through the CLI, which waits for the task.
    let base_arg = base.to_string();
    let out_arg = out.display().to_string();
    let made = crate::curate::wharf_cli(&w, &["export", "create", "--repository", "team/app", "--path", &out_arg, "--since", &base_arg]).await;
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let listed = crate::curate::wharf_cli(&w, &["export", "list"]).await;
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.contains("team/app@2") && listed.contains("complete"), "{listed}");
    let second = admin(&w, "GET", "exports", None).await.json()["results"][0].clone();
    assert_eq!(second["base"].as_u64(), Some(base));
    let dir2 = std::path::PathBuf::from(second["directory"].as_str().expect("directory"));
    let toc: Value = serde_json::from_slice(&std::fs::read(dir2.join("toc.json")).expect("toc.json")).expect("json");
    let blobs: Vec<&str> = toc["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .filter(|p| p.starts_with("blobs/sha256/"))
        .collect();
    let mut expected: Vec<String> = next.blobs().into_iter().map(|b| format!("blobs/sha256/{}", b.digest.trim_start_matches("sha256:"))).collect();
    expected.push(format!("blobs/sha256/{}", next.manifest.digest.trim_start_matches("sha256:")));
    expected.sort();
    let mut got: Vec<String> = blobs.iter().map(|s| (*s).to_owned()).collect();
    got.sort();
    assert_eq!(got, expected, "only the new image's objects");
    assert!(second["size"].as_u64().expect("size") < 200_000, "{second}");

    // Refusals: a relative path, an unknown repository (a failed task that
    // leaves no directory), a base that does not exist.
    let r = admin(&w, "POST", "exports", Some(json!({"repositories": ["team/app"], "path": "relative"}))).await;
    assert_eq!(r.status, 400);
    let task = export(&w, json!({"repositories": ["nope/none"], "path": out.display().to_string()})).await;
    assert_eq!(task["state"], "failed", "{task}");
    let task = export(&w, json!({"repositories": ["team/app"], "path": out.display().to_string(), "since": 999})).await;
    assert_eq!(task["state"], "failed", "{task}");
    let dirs = std::fs::read_dir(&out).expect("ls").count();
    assert_eq!(dirs, 2, "failed exports leave nothing");

    // The base cannot go while the second builds on it; with files=true
    // its directory goes too.
    assert_eq!(admin(&w, "DELETE", &format!("exports/{base}"), None).await.status, 409);
    let id2 = second["id"].as_u64().expect("id");
    assert_eq!(admin(&w, "DELETE", &format!("exports/{id2}?files=true"), None).await.status, 204);
    assert!(!dir2.exists());
    assert_eq!(admin(&w, "DELETE", &format!("exports/{base}"), None).await.status, 204);
    assert!(dir.exists(), "its files stay unless asked");
    w.stop();
}

/// The task's versions: (repository, number) from `created_resources`.
fn created(task: &Value) -> Vec<(String, u64)> {
    task["created_resources"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| Some((r["repository"].as_str()?.to_owned(), r["version"].as_u64().or_else(|| r["number"].as_u64())?)))
                .collect()
        })
        .unwrap_or_default()
}

async fn import(wharf: &Wharf, body: Value) -> Value {
    start_task(wharf, "imports", body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_imported_on_a_node_without_upstream_serves_the_same_digests_once_and_after_its_base() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let a = start_with(&tmp.path().join("a"), UpstreamEntry::new("up", "http://127.0.0.1:9"));
    let image = Image::random(&[500_000, 20_000]);
    images::push(&clients, tmp.path(), &image, &a.host(), "team/app", &["1.0"], Some(PUSHER));
    let out = tmp.path().join("transfer");
    std::fs::create_dir(&out).expect("mkdir");
    let path = out.display().to_string();
    assert_eq!(export(&a, json!({"repositories": ["team/app"], "path": path, "chunk_size": 1 << 20})).await["state"], "completed");
    let first = admin(&a, "GET", "exports", None).await.json()["results"][0].clone();
    let dir1 = first["directory"].as_str().expect("directory").to_owned();

    // B has never seen any of it, and its upstream cannot be reached.
    let b = start_with(&tmp.path().join("b"), UpstreamEntry::new("up", "http://127.0.0.1:9"));
    let r = admin(&b, "POST", "imports", Some(json!({"path": dir1, "dry_run": true}))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let plan = r.json();
    assert_eq!(plan["repositories"], json!(["team/app"]));
    assert!(plan["new_bytes"].as_u64().expect("bytes") >= 520_000, "{plan}");
    assert_eq!(admin(&b, "GET", "repositories/team%2Fapp", None).await.status, 404, "a dry run changes nothing");

    let task = import(&b, json!({"path": dir1})).await;
    assert_eq!(task["state"], "completed", "{task}");
    assert_eq!(created(&task), vec![("team/app".to_owned(), 1)]);
    // Its steps, the last one kept, all of them in its log.
    assert!(task["step"].as_str().unwrap_or_default().starts_with("making a version"), "{task}");
    let log = admin(&b, "GET", &format!("tasks/{}/log", task["id"]), None).await.json();
    let text = log["log"].as_str().unwrap_or_default();
    assert!(text.starts_with("checking ") && text.contains("storing its objects") && log["finished"] == true, "{log}");
    let rest = admin(&b, "GET", &format!("tasks/{}/log?offset={}", task["id"], log["next_offset"]), None).await.json();
    assert_eq!((rest["log"].as_str(), &rest["next_offset"]), (Some(""), &log["next_offset"]));
    let made = admin(&b, "POST", "distributions", Some(json!({"name": "app", "base_path": "team/app", "repository": "team/app"}))).await;
    assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.body));
    let layout = tmp.path().join("from-b");
    clients.pull_to_layout(&format!("docker://{}/team/app:1.0", b.host()), &layout, "1.0", &[]);
    assert_layout_holds_image(&layout, "1.0", &image);

    // Again: nothing changes.
    let task = import(&b, json!({"path": dir1})).await;
    assert_eq!((task["state"].as_str(), created(&task).len()), (Some("completed"), 0), "{task}");

    // Built on the first: refused where the first was not imported, a new
    // version where it was, under another name when mapped.
    let next = Image::random(&[30_000]);
    images::push(&clients, tmp.path(), &next, &a.host(), "team/app", &["2.0"], Some(PUSHER));
    let since = first["id"].as_u64().expect("id");
    assert_eq!(export(&a, json!({"repositories": ["team/app"], "path": path, "since": since})).await["state"], "completed");
    let dir2 = admin(&a, "GET", "exports", None).await.json()["results"][0]["directory"].as_str().expect("dir").to_owned();
    let c = start_with(&tmp.path().join("c"), UpstreamEntry::new("up", "http://127.0.0.1:9"));
    let task = import(&c, json!({"path": dir2})).await;
    assert_eq!(task["state"], "failed");
    assert!(task["error"].as_str().unwrap_or_default().contains("import that first"), "{task}");
    let task = import(&b, json!({"path": dir2})).await;
    assert_eq!((task["state"].as_str(), created(&task)), (Some("completed"), vec![("team/app".to_owned(), 2)]), "{task}");
    let layout = tmp.path().join("from-b-2");
    clients.pull_to_layout(&format!("docker://{}/team/app:2.0", b.host()), &layout, "2.0", &[]);
    assert_layout_holds_image(&layout, "2.0", &next);

    // A changed byte in a chunk: refused, naming it, and nothing stored.
    let toc: Value = serde_json::from_slice(&std::fs::read(std::path::Path::new(&dir1).join("toc.json")).expect("toc")).expect("json");
    let chunk = toc["chunks"][0]["name"].as_str().expect("name").to_owned();
    let chunk_path = std::path::Path::new(&dir1).join(&chunk);
    let mut bytes = std::fs::read(&chunk_path).expect("chunk");
    bytes[600] ^= 1;
    std::fs::write(&chunk_path, bytes).expect("write");
    let d = start_with(&tmp.path().join("d"), UpstreamEntry::new("up", "http://127.0.0.1:9"));
    let task = import(&d, json!({"path": dir1, "repository_map": {"team/app": "copy/app"}})).await;
    assert_eq!(task["state"], "failed");
    assert!(task["error"].as_str().unwrap_or_default().contains(&chunk), "{task}");
    assert_eq!(admin(&d, "GET", "repositories/copy%2Fapp", None).await.status, 404);
    for w in [a, b, c, d] {
        w.stop();
    }
}
