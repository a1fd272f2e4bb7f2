//! Bounded disk against real parts: a `docker-registry` upstream, skopeo
//! pulling and pushing, the real binary. Pulling past `storage.max_size`
//! evicts the least recently used cached blobs (never pushed ones) and an
//! evicted image pulls again byte for byte; `wharf storage gc` removes an
//! orphan and leftovers; `wharf storage verify` quarantines corrupted
//! objects, which are then fetched again (pull-through) or unknown (push);
//! a fill onto a full disk still serves the client, and readiness calls the
//! full disk degraded (200) unless `server.ready_when_disk_full` is false.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use crate::clients::Clients;
use crate::http;
use crate::images::{self, assert_layout_holds_image, Image};
use crate::push::{authorization, PUSHER};
use crate::registry::Registry;
use crate::sync::wharf_cli;
use crate::wharf::{write_config, UpstreamEntry, Wharf};

/// Starts wharf with `storage_lines` under `[storage]`, one upstream `up`
/// and the pusher user (admin, may push anywhere).
pub fn start(dir: &Path, upstream: &Registry, storage_lines: &str) -> Wharf {
    let config = write_config(dir, &[UpstreamEntry::new("up", &upstream.url())]);
    let toml = std::fs::read_to_string(&config).expect("read config");
    let toml = toml.replacen("\n\n[log]", &format!("\n{storage_lines}\n\n[log]"), 1)
        + &format!(
            "\n[auth]\nbasic = true\n\n[[auth.user]]\nname = \"pusher\"\npassword_hash = {:?}\nadmin = true\n\
             \n[[auth.rule]]\nusers = [\"pusher\"]\nrepositories = [\"*\"]\nactions = [\"pull\", \"push\", \"delete\"]\n",
            crate::auth::hash_password("pusher-pass")
        );
    std::fs::write(&config, toml).expect("write config");
    Wharf::start_with_config(&config)
}

fn storage(dir: &Path) -> PathBuf {
    dir.join("storage")
}

/// Where the object of `digest` lives (the layout `storage` defines).
fn object_path(dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    storage(dir).join("objects/blobs/sha256").join(&hex[..2]).join(hex)
}

/// Bytes of every object file under `objects/`.
pub fn bytes_on_disk(dir: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        std::fs::read_dir(p).map_or(0, |entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    let meta = e.metadata().expect("metadata");
                    if meta.is_dir() {
                        walk(&e.path())
                    } else {
                        meta.len()
                    }
                })
                .sum()
        })
    }
    walk(&storage(dir).join("objects"))
}

/// One sample of `name` (no labels) from `/metrics`.
pub async fn metric(wharf: &Wharf, name: &str) -> u64 {
    let auth = authorization();
    let text = http::request("GET", &format!("{}/metrics", wharf.admin_url()), &[("Authorization", auth.as_str())]).await;
    let text = String::from_utf8_lossy(&text.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} is not in /metrics:\n{text}"))
        .trim()
        .parse::<f64>()
        .expect("a number") as u64
}

/// Polls until `check` holds; the eviction it waits for runs in the
/// background after a commit. A deadline turns a hang into a failure.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the upstream has logged `n` GETs of blob `digest`, and
/// checks it logged no more. The registry writes a request's log line
/// after answering it, on its own schedule, so a count read at once can
/// lag behind what was answered.
pub async fn upstream_gets(upstream: &Registry, digest: &str, n: usize) {
    eventually(&format!("the upstream logged {n} GETs of {digest}"), || async { upstream.blob_gets(digest) >= n }).await;
    assert_eq!(upstream.blob_gets(digest), n, "GETs of {digest} from the upstream");
}

/// Pulls `reference` from wharf into a fresh OCI layout (skopeo, off the
/// runtime's workers), with the pusher's credentials when `signed_in`.
pub async fn pull(clients: &Clients, wharf: &Wharf, reference: &str, tag: &str, signed_in: bool) -> tempfile::TempDir {
    let dest = tempfile::tempdir().expect("tempdir");
    let (clients, source, path, tag) =
        (clients.clone(), format!("docker://{}/{reference}", wharf.host()), dest.path().to_owned(), tag.to_owned());
    tokio::task::spawn_blocking(move || {
        let extra: &[&str] = if signed_in { &["--src-creds", PUSHER] } else { &[] };
        clients.pull_to_layout(&source, &path, &tag, extra);
    })
    .await
    .expect("skopeo runner");
    dest
}

fn set_old(path: &Path, age: Duration) {
    let file = std::fs::File::options().write(true).open(path).expect("open object");
    file.set_modified(SystemTime::now() - age).expect("set mtime");
}

const LAYER: usize = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulling_past_max_size_evicts_least_recently_used_cached_blobs_never_pushed_ones_and_pulls_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let cached: Vec<Image> = (0..3).map(|_| Image::random(&[LAYER])).collect();
    for (image, repo) in cached.iter().zip(["team/a", "team/b", "team/c"]) {
        images::push(&clients, tmp.path(), image, &upstream.host(), repo, &["1"], None);
    }
    let dir = tmp.path().join("wharf");
    // Eviction above 3 MiB, down to 2 MiB: the pushed image and the last
    // pulled one fit; the two older pulls do not.
    let wharf = start(&dir, &upstream, "max_size = \"4MiB\"\nhigh_watermark = 0.75\nlow_watermark = 0.5");
    assert_eq!(metric(&wharf, "wharf_storage_capacity_bytes").await, 4 << 20);

    let pushed = Image::random(&[LAYER]);
    let push = (clients.clone(), tmp.path().to_owned(), pushed.clone(), wharf.host());
    tokio::task::spawn_blocking(move || images::push(&push.0, &push.1, &push.2, &push.3, "team/app", &["1"], Some(PUSHER)))
        .await
        .expect("push");
    for (image, repo) in cached.iter().zip(["team/a", "team/b", "team/c"]) {
        let pulled = pull(&clients, &wharf, &format!("up/{repo}:1"), "1", false).await;
        assert_layout_holds_image(pulled.path(), "1", image);
    }
    let layer = |image: &Image| image.layers[0].digest.clone();

    eventually("the cache is evicted down to the low watermark", || async {
        metric(&wharf, "wharf_storage_bytes").await <= 2 << 20
    })
    .await;
    for old in &cached[..2] {
        assert!(!object_path(&dir, &layer(old)).exists(), "the older pulls' layers are evicted");
    }
    assert!(object_path(&dir, &layer(&cached[2])).exists(), "the most recently used pull stays");
    assert!(object_path(&dir, &layer(&pushed)).exists(), "pushed content is never evicted");
    assert!(object_path(&dir, &pushed.manifest.digest).exists() && object_path(&dir, &cached[0].manifest.digest).exists(),
        "manifests are never evicted");
    assert!(metric(&wharf, "wharf_evictions_total").await >= 2);
    assert!(metric(&wharf, "wharf_evicted_bytes_total").await >= 2 * LAYER as u64);
    // The running totals agree with the disk, and the disk is under the cap.
    assert_eq!(metric(&wharf, "wharf_storage_bytes").await, bytes_on_disk(&dir));
    assert!(bytes_on_disk(&dir) <= 4 << 20);

    // Evicted content is still recorded, and pulls again, identically,
    // from the upstream.
    let again = pull(&clients, &wharf, "up/team/a:1", "1", false).await;
    assert_layout_holds_image(again.path(), "1", &cached[0]);
    upstream_gets(&upstream, &layer(&cached[0]), 2).await;
    let pushed_back = pull(&clients, &wharf, "team/app:1", "1", true).await;
    assert_layout_holds_image(pushed_back.path(), "1", &pushed);
    wharf.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_gc_removes_old_orphans_and_spool_leftovers_and_keeps_young_ones_and_content() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let image = Image::random(&[50_000]);
    images::push(&clients, tmp.path(), &image, &upstream.host(), "team/a", &["1"], None);
    let dir = tmp.path().join("wharf");
    let wharf = start(&dir, &upstream, "");
    pull(&clients, &wharf, "up/team/a:1", "1", false).await;

    // Objects no repository references: as a crash between commit and
    // record, or content of a repository since deleted, would leave.
    let plant = |bytes: &[u8]| {
        let digest = images::sha256_digest(bytes);
        let path = object_path(&dir, &digest);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, bytes).expect("write orphan");
        path
    };
    let old_orphan = plant(&images::random_bytes(4096));
    set_old(&old_orphan, Duration::from_secs(3 * 3600));
    let young_orphan = plant(&images::random_bytes(4096));
    let leftover = storage(&dir).join("spool/1-0");
    std::fs::write(&leftover, b"half a fill").expect("write spool leftover");

    let (code, out, err) = wharf_cli(&wharf, &["storage", "gc"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("completed"), "{out}");
    assert!(!old_orphan.exists(), "an orphan unused for hours is removed");
    assert!(young_orphan.exists(), "a young orphan may be a pull not recorded yet: kept");
    assert!(!leftover.exists(), "a spool file no fill owns is removed");
    for blob in image.blobs() {
        assert!(object_path(&dir, &blob.digest).exists(), "referenced content stays");
    }
    let again = pull(&clients, &wharf, "up/team/a:1", "1", false).await;
    assert_layout_holds_image(again.path(), "1", &image);

    // The admin API starts the same task.
    let auth = authorization();
    let started = http::request("POST", &format!("{}/api/v1/storage/gc", wharf.admin_url()), &[("Authorization", auth.as_str())]).await;
    assert_eq!(started.status, 202);
    assert_eq!(started.json()["kind"], "gc");
    let location = started.header("location").expect("Location").to_owned();
    assert_eq!(location, format!("/api/v1/tasks/{}", started.json()["id"]));
    wharf.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_verify_quarantines_corrupt_objects_which_are_refetched_or_unknown_never_served() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let cached = Image::random(&[60_000]);
    images::push(&clients, tmp.path(), &cached, &upstream.host(), "team/a", &["1"], None);
    let dir = tmp.path().join("wharf");
    let wharf = start(&dir, &upstream, "");
    pull(&clients, &wharf, "up/team/a:1", "1", false).await;
    let pushed = Image::random(&[70_000]);
    let push = (clients.clone(), tmp.path().to_owned(), pushed.clone(), wharf.host());
    tokio::task::spawn_blocking(move || images::push(&push.0, &push.1, &push.2, &push.3, "team/app", &["1"], Some(PUSHER)))
        .await
        .expect("push");

    let (code, out, err) = wharf_cli(&wharf, &["storage", "verify"]).await;
    assert_eq!(code, 0, "a clean store verifies: {out}{err}");

    // Flip bytes of one cached and one pushed layer, keeping their size.
    let cached_layer = cached.layers[0].digest.clone();
    let pushed_layer = pushed.layers[0].digest.clone();
    for digest in [&cached_layer, &pushed_layer] {
        let path = object_path(&dir, digest);
        let mut bytes = std::fs::read(&path).expect("read object");
        bytes[100] ^= 0xff;
        std::fs::write(&path, bytes).expect("corrupt object");
    }
    let (code, out, err) = wharf_cli(&wharf, &["storage", "verify"]).await;
    assert_ne!(code, 0, "verify reports corruption: {out}{err}");
    for digest in [&cached_layer, &pushed_layer] {
        assert!(err.contains(digest.as_str()) || out.contains(digest.as_str()), "{digest} is named: {out}{err}");
        assert!(!object_path(&dir, digest).exists(), "moved out of objects/");
    }
    assert_eq!(std::fs::read_dir(storage(&dir).join("quarantine")).expect("quarantine").count(), 2);

    let auth = authorization();
    let base = wharf.url();
    let get = |path: String| {
        let (url, auth) = (format!("{base}{path}"), auth.clone());
        async move { http::request("GET", &url, &[("Authorization", auth.as_str())]).await }
    };
    // A cached blob comes again from its upstream, correct.
    let refetched = get(format!("/v2/up/team/a/blobs/{cached_layer}")).await;
    assert_eq!(refetched.status, 200);
    assert!(refetched.complete && refetched.body == cached.layers[0].bytes, "the upstream's bytes, not the corrupt ones");
    upstream_gets(&upstream, &cached_layer, 2).await;
    // A pushed blob has no other source: unknown, never the corrupt bytes.
    let lost = get(format!("/v2/team/app/blobs/{pushed_layer}")).await;
    assert_eq!((lost.status, lost.error_code().as_str()), (404, "BLOB_UNKNOWN"));
    wharf.stop();
}

/// An admin API request as the pusher (admin); a 2xx answer's JSON.
async fn admin_ok(wharf: &Wharf, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    let url = format!("{}/api/v1/{path}", wharf.admin_url());
    let auth = authorization();
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let r = http::request_with_body(method, &url, &headers, body.to_string().into_bytes()).await;
    assert!((200..300).contains(&r.status), "{method} {path}: {} {}", r.status, String::from_utf8_lossy(&r.body));
    r.json()
}

/// Creates sync repository `name` from `repo` on `upstream` with `policy`,
/// syncs it (waiting with the CLI) and serves it at base_path `name`.
async fn synced(wharf: &Wharf, upstream: &Registry, name: &str, repo: &str, policy: &str) {
    admin_ok(wharf, "POST", "repositories", serde_json::json!({"name": name})).await;
    let remote = serde_json::json!({"name": name, "url": upstream.url(), "upstream_name": repo, "policy": policy});
    admin_ok(wharf, "POST", "remotes", remote).await;
    let (code, out, err) = wharf_cli(wharf, &["repository", "sync", "--name", name, "--remote", name]).await;
    assert_eq!(code, 0, "{out}{err}");
    let distribution = serde_json::json!({"name": name, "base_path": name, "repository": name});
    admin_ok(wharf, "POST", "distributions", distribution).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_immediate_sync_content_and_an_evicted_on_demand_blob_comes_again_from_its_remote() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let names = ["team/eager", "team/lazy", "team/c1", "team/c2"];
    let all: Vec<Image> = names.iter().map(|_| Image::random(&[LAYER])).collect();
    for (image, repo) in all.iter().zip(names) {
        images::push(&clients, tmp.path(), image, &upstream.host(), repo, &["1"], None);
    }
    let (eager, lazy, c1, c2) = (&all[0], &all[1], &all[2], &all[3]);
    let dir = tmp.path().join("wharf");
    let wharf = start(&dir, &upstream, "max_size = \"4MiB\"\nhigh_watermark = 0.75\nlow_watermark = 0.5");
    let layer = |image: &Image| image.layers[0].digest.clone();

    synced(&wharf, &upstream, "eager", "team/eager", "immediate").await;
    assert!(object_path(&dir, &layer(eager)).exists(), "an immediate sync stores its blobs");
    synced(&wharf, &upstream, "lazy", "team/lazy", "on_demand").await;
    assert_eq!(upstream.blob_gets(&layer(lazy)), 0, "on demand: nothing fetched by the sync");
    let pulled = pull(&clients, &wharf, "lazy:1", "1", false).await;
    assert_layout_holds_image(pulled.path(), "1", lazy);
    for (image, repo) in [(c1, "up/team/c1:1"), (c2, "up/team/c2:1")] {
        let pulled = pull(&clients, &wharf, repo, "1", false).await;
        assert_layout_holds_image(pulled.path(), "1", image);
    }

    eventually("the cache is evicted down to the low watermark", || async {
        metric(&wharf, "wharf_storage_bytes").await <= 2 << 20
    })
    .await;
    assert!(object_path(&dir, &layer(eager)).exists(), "immediate sync content is never evicted");
    assert!(!object_path(&dir, &layer(lazy)).exists(), "the least recently used blob went first");
    assert!(!object_path(&dir, &layer(c1)).exists());
    assert!(object_path(&dir, &layer(c2)).exists());

    // The on-demand blob comes again from the remote its sync recorded.
    let again = pull(&clients, &wharf, "lazy:1", "1", false).await;
    assert_layout_holds_image(again.path(), "1", lazy);
    upstream_gets(&upstream, &layer(lazy), 2).await;
    let eager_pulled = pull(&clients, &wharf, "eager:1", "1", false).await;
    assert_layout_holds_image(eager_pulled.path(), "1", eager);
    assert_eq!(upstream.blob_gets(&layer(eager)), 1, "served from storage, never fetched again");
    wharf.stop();
}

/// A tmpfs mounted for the length of a test, unmounted however it ends.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `path`. This needs root (CI runs the
    /// tests as root); without it the test fails, saying why, rather than
    /// pass without having seen a full disk.
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("create mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test needs a small tmpfs to fill (run as root, with mount allowed): mount said {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { path: path.to_owned() }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the filesystem of `dir` to the last byte with one file; returns
/// its path.
fn fill_disk(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("create filler");
    let chunk = vec![0x5a; 4 << 10];
    loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    assert!(std::fs::write(dir.join("probe"), b"x").is_err(), "the disk is full");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_still_serves_pulls_stores_nothing_stays_ready_but_degraded_and_caches_once_space_returns() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    // Larger than the in-memory window: pass-through must pace the upstream.
    let image = Image::random(&[6_000_000]);
    images::push(&clients, tmp.path(), &image, &upstream.host(), "team/big", &["1"], None);
    let dir = tmp.path().join("wharf");
    let _tmpfs = Tmpfs::mount(&storage(&dir), "16m");
    let wharf = start(&dir, &upstream, "");
    // No room for anything: not the layer, the config, the manifest, nor
    // what the metadata would record.
    let filler = fill_disk(&storage(&dir));

    let pulled = pull(&clients, &wharf, "up/team/big:1", "1", false).await;
    assert_layout_holds_image(pulled.path(), "1", &image);
    let layer = image.layers[0].digest.clone();
    for digest in image.blobs().iter().map(|b| &b.digest).chain([&image.manifest.digest]) {
        assert!(!object_path(&dir, digest).exists(), "nothing is stored");
    }
    assert_eq!(std::fs::read_dir(storage(&dir).join("spool")).expect("spool").count(), 0, "no partial object is left");
    let failures = metric(&wharf, "wharf_storage_write_errors_total").await;
    assert!(failures >= 3, "the manifest, config and layer failures are counted: {failures}");

    // Pulls keep working, so readiness reports a full disk as degraded and
    // a load balancer keeps the node...
    let readyz = format!("{}/readyz", wharf.admin_url());
    let r = http::get(&readyz).await;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(r.status, 200, "{text}");
    assert!(text.starts_with("ready\ndegraded: disk full"), "{text}");
    assert!(text.contains("storage: disk full: cannot write in ") && text.contains("metadata: ok"), "{text}");
    // ...unless the operator says a full disk is not ready (a reload applies it).
    let config = std::fs::read_to_string(&wharf.config_path).expect("read config");
    let strict = config.replacen("\n\n[storage]", "\nready_when_disk_full = false\n\n[storage]", 1);
    assert_ne!(strict, config);
    std::fs::write(&wharf.config_path, strict).expect("write config");
    let reloads = || wharf.log_lines().iter().filter(|l| l.contains("configuration reloaded")).count();
    let before = reloads();
    wharf.signal("HUP");
    eventually("the reload", || async { reloads() > before }).await;
    let r = http::get(&readyz).await;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(r.status, 503, "{text}");
    assert!(text.starts_with("not ready: storage: disk full: cannot write in "), "{text}");

    // Space returns: the next pull is served and cached.
    std::fs::remove_file(&filler).expect("remove filler");
    let again = pull(&clients, &wharf, "up/team/big:1", "1", false).await;
    assert_layout_holds_image(again.path(), "1", &image);
    assert!(object_path(&dir, &layer).exists(), "cached once there is room");
    upstream_gets(&upstream, &layer, 2).await;
    wharf.stop();
}
