//! The admin REST API (docs/ADMIN_API.md) against a running wharf: what a
//! pull through a real upstream records, as the API lists it; version
//! deletion rules; distributions created, served to skopeo, changed and
//! deleted; every kind of bad request; and the OpenAPI document checked by
//! an independent validator.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::clients::Clients;
use crate::http::{self, Response};
use crate::images::{self, Image, Index, Pushable, CONFIG_MEDIA_TYPE, INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use crate::registry::Registry;
use crate::wharf::{UpstreamEntry, Wharf};

/// The upstream's repository, and its name in wharf (under upstream `up`).
const REMOTE: &str = "team/tool";
const REPO: &str = "up/team/tool";
const REPO_ENCODED: &str = "up%2Fteam%2Ftool";
/// A second upstream nothing is pulled from; it carries credentials, which
/// the API must never show.
const SECRET: &str = "not-for-the-admin-api";
/// Recording is asynchronous (batched); how long to wait for it.
const RECORD_DEADLINE: Duration = Duration::from_secs(30);

/// A real upstream registry and a wharf in front of it.
struct Cache {
    wharf: Wharf,
    upstream: Registry,
    clients: Clients,
    dir: PathBuf,
    _tmp: TempDir,
}

impl Cache {
    fn start() -> Cache {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let clients = Clients::new(&dir.join("clients"));
        let upstream = Registry::start(&dir.join("upstream"));
        let wharf = Wharf::start(
            &dir.join("wharf"),
            &[
                UpstreamEntry::new("up", &upstream.url()).extra("tag_ttl = \"90s\""),
                UpstreamEntry::new("locked", "http://127.0.0.1:9")
                    .extra(&format!("username = \"operator\"\npassword = {SECRET:?}")),
            ],
        );
        Cache { wharf, upstream, clients, dir, _tmp: tmp }
    }

    fn push(&self, content: &dyn Pushable, tag: &str) {
        images::push(&self.clients, &self.dir, content, &self.upstream.host(), REMOTE, &[tag], None);
    }

    /// skopeo copies `<wharf>/<name>:<tag>` (every platform) into a new layout.
    fn pull(&self, name: &str, tag: &str) -> PathBuf {
        let dest = self.dir.join(format!("pulled-{}-{tag}", name.replace('/', "_")));
        let source = format!("docker://{}/{name}:{tag}", self.wharf.host());
        tokio::task::block_in_place(|| self.clients.pull_to_layout(&source, &dest, tag, &["--all"]));
        dest
    }

    /// Reads only the manifest of `<wharf>/<name>:<tag>`: its blobs are
    /// recorded but never fetched.
    fn inspect(&self, name: &str, tag: &str) {
        let reference = format!("docker://{}/{name}:{tag}", self.wharf.host());
        tokio::task::block_in_place(|| self.clients.inspect_raw(&reference, None));
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.wharf.admin)
    }

    async fn get(&self, path: &str) -> Response {
        http::get(&self.url(path)).await
    }

    /// GET that must answer 200; its JSON.
    async fn ok(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "GET {path}: {}", String::from_utf8_lossy(&r.body));
        r.json()
    }

    async fn send_json(&self, method: &str, path: &str, body: &Value) -> Response {
        let headers = [("Content-Type", "application/json")];
        http::request_with_body(method, &self.url(path), &headers, body.to_string().into_bytes()).await
    }

    async fn delete(&self, path: &str) -> Response {
        http::request("DELETE", &self.url(path), &[]).await
    }

    /// Polls `GET path` until it answers 200 with JSON for which `done`
    /// holds: recording is asynchronous, so the API catches up shortly
    /// after a pull.
    async fn poll(&self, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + RECORD_DEADLINE;
        loop {
            let r = self.get(path).await;
            if r.status == 200 && done(&r.json()) {
                return r.json();
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {RECORD_DEADLINE:?}; GET {path} last answered {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the latest version of [`REPO`] holds `tag`, and returns
    /// that version's number.
    async fn wait_for_tag(&self, tag: &str) -> u64 {
        let path = format!("/api/v1/repositories/{REPO_ENCODED}/versions/latest/tags?name={tag}");
        self.poll(&path, &format!("tag {tag} recorded"), |j| j["count"] == 1).await;
        self.ok(&format!("/api/v1/repositories/{REPO_ENCODED}")).await["latest_version"]
            .as_u64()
            .expect("latest_version")
    }
}

/// Asserts an error answer: status, the `{"error": {"code", "message"}}`
/// shape, and that the message mentions `needle`.
#[track_caller]
fn assert_error(r: &Response, status: u16, code: &str, needle: &str) {
    let body = String::from_utf8_lossy(&r.body);
    assert_eq!(r.status, status, "{body}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{body}");
    let j = r.json();
    assert_eq!(j["error"]["code"], code, "{body}");
    let message = j["error"]["message"].as_str().unwrap_or_else(|| panic!("no message: {body}"));
    assert!(message.contains(needle), "message {message:?} should mention {needle:?}");
    assert_eq!(j.as_object().map(|o| o.len()), Some(1), "only `error` at the top: {body}");
}

/// `2026-11-25T10:00:00.123Z`: RFC 3339, UTC, milliseconds.
#[track_caller]
fn assert_time(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time string: {v}"));
    let b = s.as_bytes();
    let shape = s.len() == 24
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && s.ends_with('Z')
        && humantime::parse_rfc3339(s).is_ok();
    assert!(shape, "{s:?} is not RFC 3339 UTC with milliseconds");
}

fn digests(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|d| d["digest"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_lists_what_pulls_recorded_and_guards_version_deletion() {
    let cache = Cache::start();
    let index = Index::random(&[20_000]);
    let image = Image::random(&[30_000, 40_000]);
    cache.push(&index, "1");
    cache.push(&image, "2");

    cache.pull(REPO, "1");
    let with_index = cache.wait_for_tag("1").await;

    // The repository, by listing with each filter, encoded and raw.
    let listed = cache.ok("/api/v1/repositories").await;
    assert_eq!((listed["count"].as_u64(), listed["limit"].as_u64(), listed["offset"].as_u64()), (Some(1), Some(100), Some(0)));
    let repo = &listed["results"][0];
    assert_eq!(repo["name"], REPO);
    assert_eq!(repo["kind"], "pull-through");
    assert_eq!(repo["upstream"], "up");
    assert_eq!(repo["remote_name"], REMOTE);
    assert_eq!(repo["retain_versions"], Value::Null);
    assert_time(&repo["created_at"]);
    for query in ["name=up%2Fteam%2Ftool", "name_contains=team%2Ft", "kind=pull-through", "name_contains="] {
        assert_eq!(cache.ok(&format!("/api/v1/repositories?{query}")).await["count"], 1, "{query}");
    }
    for query in ["name=team%2Ftool", "name_contains=nothing", "kind=push"] {
        assert_eq!(cache.ok(&format!("/api/v1/repositories?{query}")).await["count"], 0, "{query}");
    }
    assert_error(&cache.get("/api/v1/repositories?kind=mirror").await, 400, "invalid", "mirror");
    let encoded = cache.ok(&format!("/api/v1/repositories/{REPO_ENCODED}")).await;
    let raw = cache.ok(&format!("/api/v1/repositories/{REPO}")).await;
    assert_eq!(encoded, raw);
    assert_eq!(encoded["latest_version"].as_u64(), Some(with_index));
    assert_error(&cache.get("/api/v1/repositories/up%2Fno%2Fsuch").await, 404, "not_found", "up/no/such");
    assert_error(&cache.get("/api/v1/repositories/up/no/such/versions").await, 404, "not_found", "up/no/such");

    // The index, its children with their platforms, and their blobs.
    let base = format!("/api/v1/repositories/{REPO_ENCODED}/versions/{with_index}");
    let tags = cache.ok(&format!("{base}/tags")).await;
    assert_eq!(tags["results"], json!([{"name": "1", "digest": index.manifest.digest, "media_type": INDEX_MEDIA_TYPE}]));
    let found = cache.ok(&format!("{base}/manifests?digest={}", index.manifest.digest)).await;
    assert_eq!(found["count"], 1, "{found}");
    let top = &found["results"][0];
    assert_eq!(top["media_type"], INDEX_MEDIA_TYPE);
    assert_eq!(top["size"].as_u64(), Some(index.manifest.bytes.len() as u64));
    assert_eq!((&top["platform"], &top["config"], &top["layers"]), (&Value::Null, &Value::Null, &json!([])));
    assert_eq!((&top["artifact_type"], &top["subject"]), (&Value::Null, &Value::Null));
    let children = top["children"].as_array().expect("children");
    assert_eq!(children.len(), 2, "{top}");
    for (child, platform_image) in children.iter().zip(&index.images) {
        assert_eq!(child["digest"], platform_image.manifest.digest.as_str());
        assert_eq!(child["media_type"], MANIFEST_MEDIA_TYPE);
        assert_eq!(
            child["platform"],
            json!({"os": "linux", "architecture": platform_image.architecture, "variant": null})
        );
    }
    for platform_image in &index.images {
        let m = cache.ok(&format!("{base}/manifests?digest={}", platform_image.manifest.digest)).await;
        let m = &m["results"][0];
        assert_eq!(m["platform"]["architecture"], platform_image.architecture.as_str(), "{m}");
        assert_eq!(m["config"]["digest"], platform_image.config.digest.as_str());
        assert_eq!(m["config"]["media_type"], CONFIG_MEDIA_TYPE);
        assert_eq!(digests(&m["layers"]), platform_image.layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>());
        assert_eq!(m["children"], json!([]));
        for blob in platform_image.blobs() {
            let b = cache.ok(&format!("{base}/blobs?digest={}", blob.digest)).await;
            assert_eq!(
                b["results"],
                json!([{"digest": blob.digest, "media_type": blob.media_type, "size": blob.bytes.len(), "cached": true}]),
                "pulled with --all, so every blob is cached"
            );
        }
    }
    let all_manifests = cache.ok(&format!("{base}/manifests")).await;
    assert_eq!(all_manifests["count"], 3, "the index and both children: {all_manifests}");
    let page = cache.ok(&format!("{base}/manifests?limit=2&offset=2")).await;
    assert_eq!((page["count"].as_u64(), page["limit"].as_u64(), page["offset"].as_u64()), (Some(3), Some(2), Some(2)));
    assert_eq!(page["results"].as_array().map(Vec::len), Some(1));
    assert_error(&cache.get(&format!("{base}/blobs?digest=sha256:abc")).await, 400, "invalid", "digest");

    // Only the manifest of tag 2: its blobs are recorded but not cached.
    cache.inspect(REPO, "2");
    let latest = cache.wait_for_tag("2").await;
    assert!(latest > with_index, "tag 2 makes a new version ({latest} after {with_index})");
    for blob in image.blobs() {
        let b = cache.ok(&format!("/api/v1/repositories/{REPO_ENCODED}/versions/latest/blobs?digest={}", blob.digest)).await;
        assert_eq!(b["results"][0]["cached"], false, "{b}");
    }

    // Versions: newest first, `latest` is the newest, 0 is the empty start.
    let versions = cache.ok(&format!("/api/v1/repositories/{REPO}/versions")).await;
    let numbers: Vec<u64> = versions["results"].as_array().expect("results").iter().map(|v| v["number"].as_u64().expect("number")).collect();
    assert_eq!(versions["count"].as_u64(), Some(numbers.len() as u64));
    assert!(numbers.windows(2).all(|w| w[0] > w[1]), "newest first: {numbers:?}");
    assert_eq!((numbers.first(), numbers.last()), (Some(&latest), Some(&0)));
    let second = cache.ok(&format!("/api/v1/repositories/{REPO_ENCODED}/versions?limit=1&offset=1")).await;
    assert_eq!(second["results"][0]["number"].as_u64(), Some(numbers[1]));
    let newest = cache.ok(&format!("/api/v1/repositories/{REPO_ENCODED}/versions/latest")).await;
    assert_eq!(newest, cache.ok(&format!("/api/v1/repositories/{REPO}/versions/{latest}")).await);
    assert_eq!(newest["repository"], REPO);
    assert_time(&newest["created_at"]);
    let present = &newest["content_summary"]["present"];
    assert_eq!((present["tag"].as_u64(), present["manifest"].as_u64()), (Some(2), Some(4)), "{newest}");
    for key in ["added", "removed", "present"] {
        for kind in ["tag", "manifest", "blob", "signature"] {
            assert!(newest["content_summary"][key][kind].is_u64(), "{key}.{kind} in {newest}");
        }
    }
    let empty = cache.ok(&format!("/api/v1/repositories/{REPO_ENCODED}/versions/0")).await;
    assert_eq!(empty["base_version"], Value::Null);
    assert_eq!(empty["content_summary"]["present"], json!({"tag": 0, "manifest": 0, "blob": 0, "signature": 0}));

    // Bad and missing versions.
    assert_error(&cache.get(&format!("/api/v1/repositories/{REPO_ENCODED}/versions/first")).await, 400, "invalid", "first");
    assert_error(&cache.get(&format!("/api/v1/repositories/{REPO}/versions/-1/tags")).await, 400, "invalid", "-1");
    assert_error(&cache.get(&format!("/api/v1/repositories/{REPO_ENCODED}/versions/999")).await, 404, "not_found", "999");
    assert_error(&cache.get(&format!("/api/v1/repositories/{REPO}/versions/999/blobs")).await, 404, "not_found", "999");

    // Deleting: never the latest; an older one folds into the next.
    assert_error(&cache.delete(&format!("/api/v1/repositories/{REPO_ENCODED}/versions/latest")).await, 409, "conflict", "latest");
    assert_error(&cache.delete(&format!("/api/v1/repositories/{REPO_ENCODED}/versions/{latest}")).await, 409, "conflict", "latest");
    assert_error(&cache.delete(&format!("/api/v1/repositories/{REPO_ENCODED}/versions/999")).await, 404, "not_found", "999");
    let gone = cache.delete(&format!("/api/v1/repositories/{REPO}/versions/{with_index}")).await;
    assert_eq!(gone.status, 204, "{}", String::from_utf8_lossy(&gone.body));
    assert!(gone.body.is_empty());
    assert_error(&cache.get(&format!("/api/v1/repositories/{REPO}/versions/{with_index}")).await, 404, "not_found", "");
    let after = cache.ok(&format!("/api/v1/repositories/{REPO_ENCODED}/versions/latest/tags")).await;
    assert_eq!(after["count"], 2, "the latest version keeps both tags: {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_distributions_are_created_served_to_skopeo_changed_and_deleted() {
    let cache = Cache::start();
    let image = Image::random(&[50_000]);
    cache.push(&image, "1");
    cache.pull(REPO, "1");
    let pinned = cache.wait_for_tag("1").await;

    let create = json!({"name": "tool-stable", "base_path": "stable/tool", "repository": REPO, "version": pinned,
                        "description": "the tool, as first pulled"});
    let created = cache.send_json("POST", "/api/v1/distributions", &create).await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    assert_eq!(created.header("location"), Some("/api/v1/distributions/tool-stable"));
    let d = created.json();
    assert_eq!(d["name"], "tool-stable");
    assert_eq!(d["base_path"], "stable/tool");
    assert_eq!(d["registry_path"], "stable/tool");
    assert_eq!(d["repository"], REPO);
    assert_eq!(d["version"].as_u64(), Some(pinned));
    assert_eq!(d["private"], false);
    assert_eq!(d["description"], "the tool, as first pulled");
    assert_time(&d["created_at"]);
    assert_time(&d["updated_at"]);
    assert_eq!(cache.ok("/api/v1/distributions/tool-stable").await, d);
    let listed = cache.ok("/api/v1/distributions").await;
    assert_eq!((listed["count"].as_u64(), &listed["results"][0]), (Some(1), &d));

    // Clients pull `<wharf>/<registry_path>:<tag>`.
    let pulled = cache.pull("stable/tool", "1");
    images::assert_layout_holds_image(&pulled, "1", &image);

    // Refusals: taken name or base_path, a base_path that is an upstream's
    // cache, a bad name, a missing repository or version.
    let refused = [
        (json!({"name": "tool-stable", "base_path": "other", "repository": REPO}), 409, "conflict", "tool-stable"),
        (json!({"name": "second", "base_path": "stable/tool", "repository": REPO}), 409, "conflict", "stable/tool"),
        (json!({"name": "second", "base_path": "up/mine", "repository": REPO}), 409, "conflict", "up"),
        (json!({"name": "second", "base_path": "locked", "repository": REPO}), 409, "conflict", "locked"),
        (json!({"name": "bad name", "base_path": "other", "repository": REPO}), 400, "invalid", "bad name"),
        (json!({"name": "second", "base_path": "Not/Valid", "repository": REPO}), 400, "invalid", "Not/Valid"),
        (json!({"name": "second", "base_path": "other", "repository": "up/nothing"}), 404, "not_found", "up/nothing"),
        (json!({"name": "second", "base_path": "other", "repository": REPO, "version": 999}), 404, "not_found", "999"),
        (json!({"name": "second", "base_path": "other", "repository": REPO, "version": "1"}), 400, "invalid", "invalid type"),
        (json!({"name": "second", "base_path": "other", "repository": REPO, "pinned": 1}), 400, "invalid", "unknown field `pinned`"),
        (json!({"name": "second", "base_path": "other"}), 400, "invalid", "missing field `repository`"),
    ];
    for (body, status, code, needle) in refused {
        assert_error(&cache.send_json("POST", "/api/v1/distributions", &body).await, status, code, needle);
    }
    assert_eq!(cache.ok("/api/v1/distributions").await["count"], 1, "nothing refused was created");

    // A pinned version cannot be deleted, even once it is not the latest.
    cache.push(&Image::random(&[1000]), "2");
    cache.inspect(REPO, "2");
    assert!(cache.wait_for_tag("2").await > pinned);
    assert_error(
        &cache.delete(&format!("/api/v1/repositories/{REPO_ENCODED}/versions/{pinned}")).await,
        409,
        "conflict",
        "tool-stable",
    );

    // PATCH: an absent field stays, null unpins or clears, null elsewhere is refused.
    let path = "/api/v1/distributions/tool-stable";
    let r = cache.send_json("PATCH", path, &json!({"private": true})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let p = r.json();
    assert_eq!((&p["private"], p["version"].as_u64(), &p["description"]), (&json!(true), Some(pinned), &d["description"]));
    // Private is enforced: pulling needs a rule, and without users an
    // anonymous client is challenged.
    let url = format!("{}/v2/stable/tool/manifests/1", cache.wharf.url());
    assert_eq!(crate::http::get(&url).await.status, 401);
    let p = cache
        .send_json("PATCH", path, &json!({"version": null, "description": null, "base_path": "tool", "private": false}))
        .await
        .json();
    assert_eq!((&p["version"], &p["description"], &p["base_path"], &p["registry_path"]), (&Value::Null, &Value::Null, &json!("tool"), &json!("tool")));
    assert_eq!(p["created_at"], d["created_at"]);
    assert_error(&cache.send_json("PATCH", path, &json!({"base_path": null})).await, 400, "invalid", "null");
    assert_error(&cache.send_json("PATCH", path, &json!({"name": "renamed"})).await, 400, "invalid", "unknown field `name`");
    assert_error(&cache.send_json("PATCH", path, &json!({"base_path": "up/x"})).await, 409, "conflict", "up");
    assert_error(&cache.send_json("PATCH", path, &json!({"version": 999})).await, 404, "not_found", "999");
    assert_error(&cache.send_json("PATCH", "/api/v1/distributions/nothing", &json!({})).await, 404, "not_found", "nothing");
    // Served at its new base_path from the next request on.
    let pulled = cache.pull("tool", "1");
    images::assert_layout_holds_image(&pulled, "1", &image);

    let deleted = cache.delete(path).await;
    assert_eq!(deleted.status, 204, "{}", String::from_utf8_lossy(&deleted.body));
    assert_error(&cache.get(path).await, 404, "not_found", "tool-stable");
    assert_error(&cache.delete(path).await, 404, "not_found", "tool-stable");
    assert_eq!(cache.ok("/api/v1/distributions").await["count"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_refuses_bad_requests_with_one_error_shape() {
    let cache = Cache::start();

    // Unknown paths, and known paths with the wrong method.
    assert_error(&cache.get("/api/v1/nothing").await, 404, "not_found", "/api/v1/nothing");
    assert_error(&cache.get("/api/v1/repositories/").await, 404, "not_found", "");
    for (method, path, allow) in [
        ("PUT", "/api/v1/repositories", "GET, HEAD, POST"),
        ("POST", "/api/v1/repositories/a%2Fb", "GET, HEAD, PATCH, DELETE"),
        ("GET", "/api/v1/repositories/a/b/sync", "POST"),
        ("PUT", "/api/v1/repositories/a/b/versions/1", "GET, HEAD, DELETE"),
        ("DELETE", "/api/v1/distributions", "GET, HEAD, POST"),
        ("POST", "/api/v1/distributions/d", "GET, HEAD, PATCH, DELETE"),
        ("DELETE", "/api/v1/openapi.json", "GET, HEAD"),
    ] {
        let r = http::request(method, &cache.url(path), &[]).await;
        assert_error(&r, 405, "method_not_allowed", method);
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
    }

    // Query parameters: bounds, and nothing unknown.
    for (query, needle) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("limt=5", "limt"),
        ("limit=5&limit=6", "limit"),
    ] {
        assert_error(&cache.get(&format!("/api/v1/distributions?{query}")).await, 400, "invalid", needle);
    }
    assert_error(&cache.get("/api/v1/repositories/a/versions/latest?limit=1").await, 400, "invalid", "limit");
    let page = cache.ok("/api/v1/repositories?limit=1000&offset=5").await;
    assert_eq!(page, json!({"count": 0, "limit": 1000, "offset": 5, "results": []}));

    // Bodies: JSON only, bounded, no unknown fields.
    let url = cache.url("/api/v1/distributions");
    let json_type = [("Content-Type", "application/json")];
    let valid = br#"{"name": "d", "base_path": "d", "repository": "x"}"#.to_vec();
    let r = http::request_with_body("POST", &url, &[("Content-Type", "text/plain")], valid.clone()).await;
    assert_error(&r, 415, "unsupported_media_type", "application/json");
    assert_error(&http::request_with_body("POST", &url, &[], valid.clone()).await, 415, "unsupported_media_type", "absent");
    let r = http::request_with_body("POST", &url, &[("Content-Type", "application/json; charset=utf-8")], valid).await;
    assert_error(&r, 404, "not_found", "\"x\"");
    let r = http::request_with_body("POST", &url, &json_type, br#"{"name": "d", "base_path":"#.to_vec()).await;
    assert_error(&r, 400, "invalid", "EOF");
    let r = http::request_with_body("POST", &url, &json_type, b"[1, 2]".to_vec()).await;
    assert_error(&r, 400, "invalid", "invalid type");
    let big = json!({"name": "d", "base_path": "d", "repository": "x", "description": "x".repeat(70 * 1024)});
    let r = http::request_with_body("POST", &url, &json_type, big.to_string().into_bytes()).await;
    assert_error(&r, 413, "payload_too_large", "65536");
    let r = cache.send_json("POST", "/api/v1/distributions", &json!({"name": "d", "extra": true})).await;
    assert_error(&r, 400, "invalid", "unknown field `extra`");

    // HEAD: GET's headers, no body.
    let get = cache.get("/api/v1/upstreams").await;
    let head = http::request("HEAD", &cache.url("/api/v1/upstreams"), &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some(get.body.len().to_string().as_str()));

    // Upstreams as configured, never their credentials.
    let text = String::from_utf8_lossy(&get.body).into_owned();
    assert!(!text.contains(SECRET) && !text.contains("operator"), "credentials leaked: {text}");
    let ups = get.json();
    assert_eq!(ups["count"], 2);
    assert_eq!(
        ups["results"][0],
        json!({"name": "up", "url": cache.upstream.url(), "default": false, "tag_ttl_seconds": 90, "retain_versions": null})
    );
    assert_eq!(ups["results"][1]["name"], "locked");
    assert_eq!(cache.ok("/api/v1/upstreams?offset=1").await["results"].as_array().map(Vec::len), Some(1));

    // The health and metrics endpoints are as they were.
    assert_eq!(cache.get("/healthz").await.body.as_ref(), b"ok\n");
    assert_eq!(cache.get("/readyz").await.status, 200);
    assert_eq!(cache.get("/metrics").await.status, 200);
}

/// Where the validator is expected, and how to get it.
const VALIDATOR: &str = "openapi-spec-validator";

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|dir| dir.join(program)).find(|p| p.is_file())
    })
}

fn validate(document: &Path) -> std::process::Output {
    let validator = find_on_path(VALIDATOR).unwrap_or_else(|| {
        panic!(
            "`{VALIDATOR}` is not on PATH; this test checks the admin API's OpenAPI document with it. \
             Install it from PyPI into a virtualenv and put the virtualenv's bin on PATH: \
             `python3 -m venv /opt/openapi && /opt/openapi/bin/pip install openapi-spec-validator && \
             export PATH=/opt/openapi/bin:$PATH` (Debian: `apt-get install python3-venv` first; .ci/run does all this)."
        )
    });
    std::process::Command::new(&validator)
        .arg(document)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", validator.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_openapi_document_passes_an_independent_validator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wharf = Wharf::start(&dir.path().join("wharf"), &[UpstreamEntry::new("up", "http://127.0.0.1:9")]);
    let r = http::get(&format!("http://{}/api/v1/openapi.json", wharf.admin)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.json();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/api/v1/repositories",
        "/api/v1/repositories/{name}",
        "/api/v1/repositories/{name}/versions",
        "/api/v1/repositories/{name}/versions/{number}",
        "/api/v1/repositories/{name}/versions/{number}/tags",
        "/api/v1/repositories/{name}/versions/{number}/manifests",
        "/api/v1/repositories/{name}/versions/{number}/blobs",
        "/api/v1/distributions",
        "/api/v1/distributions/{name}",
        "/api/v1/upstreams",
        "/api/v1/openapi.json",
    ] {
        assert!(paths.contains_key(path), "{path} is not documented");
    }

    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &r.body).expect("write openapi.json");
    let out = tokio::task::block_in_place(|| validate(&file));
    assert!(
        out.status.success(),
        "{VALIDATOR} rejects the document:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
