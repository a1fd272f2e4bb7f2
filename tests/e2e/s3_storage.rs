//! The S3 backend against a real S3 server (SeaweedFS), a real upstream
//! (`docker-registry`) and real clients (skopeo): pulled and pushed content
//! lands in the bucket under its digest's key and the instance's prefix,
//! verified; a restart with an empty hot tier serves every blob from the
//! bucket without asking the upstream; a hot tier smaller than a blob still
//! serves it; S3 down at start or mid-pull leaves clients served and
//! nothing stored until it is back; gc, verify, `max_size` eviction and
//! `storage migrate --to s3` work on the bucket; kill -9 during 20
//! multipart uploads leaves only verified objects and gc aborts the rest.

use crate::clients::Clients;
use crate::disk::{bytes_on_disk, eventually, metric, pull, start, upstream_gets};
use crate::http;
use crate::images::{self, assert_layout_holds_image, Image};
use crate::push::PUSHER;
use crate::registry::Registry;
use crate::s3::SeaweedFs;
use crate::sync::wharf_cli;
use crate::wharf::Wharf;

/// The bucket key of `digest` under `prefix` (the layout `storage` defines).
fn key(prefix: &str, digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    format!("{prefix}blobs/sha256/{}/{hex}", &hex[..2])
}

/// Waits until every one of `digests` is in the bucket under `prefix`,
/// whole and hashing to its key.
async fn in_bucket(s3: &SeaweedFs, prefix: &str, digests: &[String]) {
    for d in digests {
        let k = key(prefix, d);
        eventually(&format!("{k} is in the bucket"), || async { s3.keys(prefix).iter().any(|(key, _)| *key == k) })
            .await;
        assert_eq!(images::sha256_digest(&s3.read(&k)), *d, "{k} holds the bytes of its digest");
    }
}

fn digests(image: &Image) -> Vec<String> {
    let mut all: Vec<String> = image.blobs().iter().map(|b| b.digest.clone()).collect();
    all.push(image.manifest.digest.clone());
    all
}

fn storage_toml(s3: &SeaweedFs, prefix: &str, cache: &str) -> String {
    s3.storage_toml(prefix, cache)
}

async fn wait_for_fills(wharf: &Wharf) {
    eventually("every fill ended", || async { metric(wharf, "wharf_fills_in_flight").await == 0 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulled_and_pushed_content_lands_in_the_bucket_and_pulls_again_from_it_with_an_empty_hot_tier() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let s3 = SeaweedFs::start(&tmp.path().join("s3"), "wharf-e2e");
    // A layer past one part (8 MiB): a multipart upload; a small one: a PUT.
    let image = Image::random(&[9 << 20, 40_000]);
    images::push(&clients, tmp.path(), &image, &upstream.host(), "team/a", &["1"], None);
    let dir = tmp.path().join("wharf");
    let wharf = start(&dir, &upstream, &storage_toml(&s3, "edge-01/", "1GiB"));

    let first = pull(&clients, &wharf, "up/team/a:1", "1", false).await;
    assert_layout_holds_image(first.path(), "1", &image);
    wait_for_fills(&wharf).await;
    in_bucket(&s3, "edge-01/", &digests(&image)).await;
    assert!(s3.keys("").iter().all(|(k, _)| k.starts_with("edge-01/")), "every key under the prefix: {:?}", s3.keys(""));
    assert!(bytes_on_disk(&dir) >= (9 << 20), "the hot tier keeps local copies");
    assert!(metric(&wharf, "wharf_hot_tier_bytes").await >= 9 << 20);
    assert!(metric(&wharf, r#"wharf_s3_bytes_total{direction="upload"}"#).await >= 9 << 20);

    // A push: committed under its digest once it matched, then uploaded.
    let pushed = Image::random(&[200_000]);
    let job = (clients.clone(), tmp.path().to_owned(), pushed.clone(), wharf.host());
    tokio::task::spawn_blocking(move || images::push(&job.0, &job.1, &job.2, &job.3, "team/app", &["1"], Some(PUSHER)))
        .await
        .expect("push");
    in_bucket(&s3, "edge-01/", &digests(&pushed)).await;

    // The hot tier lost (a new disk, a wiped cache): every blob and manifest
    // comes from the bucket, none from the upstream.
    let config = wharf.config_path.clone();
    wharf.stop();
    std::fs::remove_dir_all(dir.join("storage/objects")).expect("empty the hot tier");
    let wharf = Wharf::start_with_config(&config);
    let again = pull(&clients, &wharf, "up/team/a:1", "1", false).await;
    assert_layout_holds_image(again.path(), "1", &image);
    let back = pull(&clients, &wharf, "team/app:1", "1", true).await;
    assert_layout_holds_image(back.path(), "1", &pushed);
    for layer in &image.layers {
        upstream_gets(&upstream, &layer.digest, 1).await;
    }
    assert!(metric(&wharf, r#"wharf_hot_tier_requests_total{result="miss"}"#).await >= 2);
    assert!(bytes_on_disk(&dir) >= (9 << 20), "downloaded copies are kept again");
    // And once more, from the local copies.
    let hits = metric(&wharf, r#"wharf_hot_tier_requests_total{result="hit"}"#).await;
    pull(&clients, &wharf, "up/team/a:1", "1", false).await;
    assert!(metric(&wharf, r#"wharf_hot_tier_requests_total{result="hit"}"#).await > hits);
    wharf.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_tier_smaller_than_a_blob_or_none_serves_it_from_the_bucket() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let s3 = SeaweedFs::start(&tmp.path().join("s3"), "wharf-small-tier");
    let image = Image::random(&[300_000, 10_000]);
    images::push(&clients, tmp.path(), &image, &upstream.host(), "team/a", &["1"], None);
    // 64 KiB: the small blobs are kept, the big one read through a spool
    // file; 0: every read streamed from the bucket, nothing written here.
    for (n, (cache, prefix, bound)) in [("64KiB", "small/", 64 << 10), ("0", "none/", 0)].into_iter().enumerate() {
        let dir = tmp.path().join(format!("wharf-{cache}"));
        let wharf = start(&dir, &upstream, &storage_toml(&s3, prefix, cache));
        for _ in 0..3 {
            let pulled = pull(&clients, &wharf, "up/team/a:1", "1", false).await;
            assert_layout_holds_image(pulled.path(), "1", &image);
            wait_for_fills(&wharf).await;
        }
        in_bucket(&s3, prefix, &digests(&image)).await;
        assert!(bytes_on_disk(&dir) <= bound, "the hot tier stays under {cache}: {}", bytes_on_disk(&dir));
        // Once by each of the two.
        upstream_gets(&upstream, &image.layers[0].digest, n + 1).await;
        assert!(metric(&wharf, r#"wharf_hot_tier_requests_total{result="miss"}"#).await >= 2, "the big layer came from S3");
        wharf.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_s3_down_clients_are_served_nothing_is_stored_and_the_next_pull_stores_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let mut s3 = SeaweedFs::start(&tmp.path().join("s3"), "wharf-outage");
    let image = Image::random(&[500_000, 20_000]);
    images::push(&clients, tmp.path(), &image, &upstream.host(), "team/a", &["1"], None);
    s3.stop();

    // Down at start: wharf starts, and says why it is not ready.
    let dir = tmp.path().join("wharf");
    let wharf = start(&dir, &upstream, &storage_toml(&s3, "", "1GiB"));
    let readyz = format!("{}/readyz", wharf.admin_url());
    let answer = http::get(&readyz).await;
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    assert_eq!(answer.status, 503, "{text}");
    assert!(text.contains("object storage"), "{text}");

    // Still down: the pull is served from the upstream, verified; nothing
    // is stored, and the failed commits are counted.
    let pulled = pull(&clients, &wharf, "up/team/a:1", "1", false).await;
    assert_layout_holds_image(pulled.path(), "1", &image);
    wait_for_fills(&wharf).await;
    assert!(metric(&wharf, "wharf_storage_write_errors_total").await >= 1);
    assert!(metric(&wharf, r#"wharf_s3_requests_total{op="head",result="error"}"#).await >= 1);
    assert!(!dir.join("storage/objects/blobs").exists() || bytes_on_disk(&dir) < 500_000, "no local copy without S3");

    // Back: ready again, and the next pull stores the blobs.
    s3.restart();
    eventually("ready once S3 is back", || async { http::get(&readyz).await.status == 200 }).await;
    let pulled = pull(&clients, &wharf, "up/team/a:1", "1", false).await;
    assert_layout_holds_image(pulled.path(), "1", &image);
    wait_for_fills(&wharf).await;
    in_bucket(&s3, "", &image.blobs().iter().map(|b| b.digest.clone()).collect::<Vec<_>>()).await;
    wharf.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_a_bucket_under_their_own_prefixes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let s3 = SeaweedFs::start(&tmp.path().join("s3"), "wharf-shared");
    let image = Image::random(&[100_000]);
    images::push(&clients, tmp.path(), &image, &upstream.host(), "team/a", &["1"], None);
    let a = start(&tmp.path().join("a"), &upstream, &storage_toml(&s3, "site-a", "1GiB"));
    let b = start(&tmp.path().join("b"), &upstream, &storage_toml(&s3, "site-b/", "1GiB"));
    for wharf in [&a, &b] {
        let pulled = pull(&clients, wharf, "up/team/a:1", "1", false).await;
        assert_layout_holds_image(pulled.path(), "1", &image);
        wait_for_fills(wharf).await;
    }
    in_bucket(&s3, "site-a/", &digests(&image)).await;
    in_bucket(&s3, "site-b/", &digests(&image)).await;
    assert!(s3.keys("").iter().all(|(k, _)| k.starts_with("site-a/") || k.starts_with("site-b/")));
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_verify_and_gc_work_on_the_bucket_and_a_corrupt_object_is_never_served() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let s3 = SeaweedFs::start(&tmp.path().join("s3"), "wharf-verify");
    let cached = Image::random(&[60_000]);
    images::push(&clients, tmp.path(), &cached, &upstream.host(), "team/a", &["1"], None);
    let dir = tmp.path().join("wharf");
    let wharf = start(&dir, &upstream, &storage_toml(&s3, "v/", "1GiB"));
    pull(&clients, &wharf, "up/team/a:1", "1", false).await;
    let pushed = Image::random(&[70_000]);
    let job = (clients.clone(), tmp.path().to_owned(), pushed.clone(), wharf.host());
    tokio::task::spawn_blocking(move || images::push(&job.0, &job.1, &job.2, &job.3, "team/app", &["1"], Some(PUSHER)))
        .await
        .expect("push");
    wait_for_fills(&wharf).await;
    let (cached_layer, pushed_layer) = (cached.layers[0].digest.clone(), pushed.layers[0].digest.clone());
    in_bucket(&s3, "v/", &[cached_layer.clone(), pushed_layer.clone()]).await;

    let (code, out, err) = wharf_cli(&wharf, &["storage", "verify"]).await;
    assert_eq!(code, 0, "a clean bucket verifies: {out}{err}");
    let (code, out, err) = wharf_cli(&wharf, &["storage", "gc"]).await;
    assert_eq!(code, 0, "gc runs on the bucket: {out}{err}");
    in_bucket(&s3, "v/", &[cached_layer.clone(), pushed_layer.clone()]).await;

    // Flip a byte of each layer in the bucket (the local copies stay good:
    // the bucket is what verify checks).
    for digest in [&cached_layer, &pushed_layer] {
        let k = key("v/", digest);
        let mut bytes = s3.read(&k);
        bytes[100] ^= 0xff;
        s3.write(&k, &bytes);
        assert_ne!(images::sha256_digest(&s3.read(&k)), *digest, "corrupted");
    }
    let (code, out, err) = wharf_cli(&wharf, &["storage", "verify"]).await;
    assert_ne!(code, 0, "verify reports corruption: {out}{err}");
    let keys = s3.keys("v/");
    for digest in [&cached_layer, &pushed_layer] {
        assert!(err.contains(digest.as_str()) || out.contains(digest.as_str()), "{digest} is named: {out}{err}");
        assert!(!keys.iter().any(|(k, _)| *k == key("v/", digest)), "moved out of blobs/: {keys:?}");
    }
    assert_eq!(keys.iter().filter(|(k, _)| k.starts_with("v/quarantine/")).count(), 2, "{keys:?}");

    let auth = crate::push::authorization();
    let get = |path: String| {
        let (url, auth) = (format!("{}{path}", wharf.url()), auth.clone());
        async move { http::request("GET", &url, &[("Authorization", auth.as_str())]).await }
    };
    // A cached blob comes again from its upstream, correct, and is stored
    // again; a pushed one has no other source: unknown.
    let refetched = get(format!("/v2/up/team/a/blobs/{cached_layer}")).await;
    assert_eq!(refetched.status, 200);
    assert!(refetched.complete && refetched.body == cached.layers[0].bytes, "the upstream's bytes, not the corrupt ones");
    upstream_gets(&upstream, &cached_layer, 2).await;
    in_bucket(&s3, "v/", std::slice::from_ref(&cached_layer)).await;
    let lost = get(format!("/v2/team/app/blobs/{pushed_layer}")).await;
    assert_eq!((lost.status, lost.error_code().as_str()), (404, "BLOB_UNKNOWN"));
    wharf.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_20_fills_leaves_only_verified_objects_and_gc_aborts_the_uploads_left_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let s3 = SeaweedFs::start(&tmp.path().join("s3"), "wharf-crash");
    // 20 layers past one part each: 20 multipart uploads at once.
    let image = Image::random(&[(8 << 20) + 300_000; 20]);
    images::push(&clients, tmp.path(), &image, &upstream.host(), "team/big", &["1"], None);
    let dir = tmp.path().join("wharf");
    let wharf = start(&dir, &upstream, &storage_toml(&s3, "", "1GiB"));
    let base = format!("{}/v2/up/team/big/blobs", wharf.url());
    let gets: Vec<_> = image
        .layers
        .iter()
        .map(|l| {
            let url = format!("{base}/{}", l.digest);
            tokio::spawn(async move { http::get(&url).await })
        })
        .collect();
    // Killed while uploads are open: the journal notes each one.
    let journal = dir.join("storage/s3-multipart");
    eventually("a multipart upload is open", || async {
        std::fs::read_dir(&journal).map(|d| d.count()).unwrap_or(0) >= 3
    })
    .await;
    wharf.kill9();
    for get in gets {
        let _ = get.await;
    }
    let open = std::fs::read_dir(&journal).expect("journal").count();
    assert!(open >= 1, "uploads were open at the kill");

    let config = dir.join("wharf.toml");
    let wharf = Wharf::start_with_config(&config);
    let (code, out, err) = wharf_cli(&wharf, &["storage", "gc"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(std::fs::read_dir(&journal).expect("journal").count(), 0, "every upload left open was aborted");
    let keys = s3.keys("");
    assert!(!keys.iter().any(|(k, _)| k.starts_with(".uploads/")), "no multipart upload left in the bucket: {keys:?}");
    let objects: Vec<&(String, u64)> = keys.iter().filter(|(k, _)| k.starts_with("blobs/")).collect();
    for (k, _) in &objects {
        let hex = k.rsplit('/').next().expect("a key");
        assert_eq!(images::sha256_digest(&s3.read(k)), format!("sha256:{hex}"), "{k} hashes to its key");
    }
    // And the blobs still pull, whole.
    for layer in &image.layers {
        let r = http::get(&format!("{}/v2/up/team/big/blobs/{}", wharf.url(), layer.digest)).await;
        assert!(r.status == 200 && r.complete && r.body == layer.bytes, "{} after the crash", layer.digest);
    }
    wharf.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_store_migrates_into_the_bucket_resumably_and_is_served_from_it_after_the_switch() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let s3 = SeaweedFs::start(&tmp.path().join("s3"), "wharf-migrate");
    let image = Image::random(&[9 << 20, 30_000]);
    images::push(&clients, tmp.path(), &image, &upstream.host(), "team/a", &["1"], None);

    // Without a bucket configured there is nothing to migrate to.
    let plain = start(&tmp.path().join("plain"), &upstream, "");
    let (code, out, err) = wharf_cli(&plain, &["storage", "migrate", "--to", "s3"]).await;
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("[storage.s3]"), "says what is missing: {err}");
    plain.stop();

    // A local store (backend "fs") with the bucket it will move to.
    let dir = tmp.path().join("wharf");
    let s3_lines = storage_toml(&s3, "m/", "1GiB").replacen("backend = \"s3\"\n", "", 1);
    let wharf = start(&dir, &upstream, &s3_lines);
    pull(&clients, &wharf, "up/team/a:1", "1", false).await;
    let pushed = Image::random(&[100_000]);
    let job = (clients.clone(), tmp.path().to_owned(), pushed.clone(), wharf.host());
    tokio::task::spawn_blocking(move || images::push(&job.0, &job.1, &job.2, &job.3, "team/app", &["1"], Some(PUSHER)))
        .await
        .expect("push");
    wait_for_fills(&wharf).await;
    assert!(s3.keys("m/").is_empty(), "nothing in the bucket before the migration");

    let (code, out, err) = wharf_cli(&wharf, &["storage", "migrate", "--to", "s3"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let mut all = digests(&image);
    all.extend(digests(&pushed));
    in_bucket(&s3, "m/", &all).await;
    // Again: everything is there already, so nothing is uploaded.
    let uploaded = metric(&wharf, r#"wharf_s3_bytes_total{direction="upload"}"#).await;
    assert!(uploaded >= 9 << 20);
    let (code, out, err) = wharf_cli(&wharf, &["storage", "migrate", "--to", "s3"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(metric(&wharf, r#"wharf_s3_bytes_total{direction="upload"}"#).await, uploaded, "a second run resumes: nothing to copy");

    // The switch: backend = "s3"; even with the local copies gone, both
    // images are served from the bucket, none from the upstream again.
    let config = wharf.config_path.clone();
    wharf.stop();
    let toml = std::fs::read_to_string(&config).expect("read config");
    std::fs::write(&config, toml.replacen("\n[storage.s3]", "backend = \"s3\"\n\n[storage.s3]", 1)).expect("write config");
    std::fs::remove_dir_all(dir.join("storage/objects")).expect("drop the local copies");
    let wharf = Wharf::start_with_config(&config);
    let again = pull(&clients, &wharf, "up/team/a:1", "1", false).await;
    assert_layout_holds_image(again.path(), "1", &image);
    let back = pull(&clients, &wharf, "team/app:1", "1", true).await;
    assert_layout_holds_image(back.path(), "1", &pushed);
    upstream_gets(&upstream, &image.layers[0].digest, 1).await;
    wharf.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_size_bounds_the_bucket_evicting_least_recently_used_cached_blobs_never_pushed_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let s3 = SeaweedFs::start(&tmp.path().join("s3"), "wharf-bounded");
    const LAYER: usize = 1_000_000;
    let cached: Vec<Image> = (0..3).map(|_| Image::random(&[LAYER])).collect();
    for (image, repo) in cached.iter().zip(["team/a", "team/b", "team/c"]) {
        images::push(&clients, tmp.path(), image, &upstream.host(), repo, &["1"], None);
    }
    let dir = tmp.path().join("wharf");
    // As the local test: eviction above 3 MiB, down to 2 MiB, here of the
    // objects in the bucket.
    let lines = format!(
        "max_size = \"4MiB\"\nhigh_watermark = 0.75\nlow_watermark = 0.5\n{}",
        storage_toml(&s3, "", "1GiB")
    );
    let wharf = start(&dir, &upstream, &lines);
    let pushed = Image::random(&[LAYER]);
    let job = (clients.clone(), tmp.path().to_owned(), pushed.clone(), wharf.host());
    tokio::task::spawn_blocking(move || images::push(&job.0, &job.1, &job.2, &job.3, "team/app", &["1"], Some(PUSHER)))
        .await
        .expect("push");
    for (image, repo) in cached.iter().zip(["team/a", "team/b", "team/c"]) {
        let pulled = pull(&clients, &wharf, &format!("up/{repo}:1"), "1", false).await;
        assert_layout_holds_image(pulled.path(), "1", image);
    }
    let in_bucket_now = |digest: &str| {
        let k = key("", digest);
        s3.keys("").iter().any(|(key, _)| *key == k)
    };
    eventually("the bucket is evicted down to the low watermark", || async {
        metric(&wharf, "wharf_storage_bytes").await <= 2 << 20
    })
    .await;
    for old in &cached[..2] {
        assert!(!in_bucket_now(&old.layers[0].digest), "the older pulls' layers left the bucket");
    }
    assert!(in_bucket_now(&cached[2].layers[0].digest), "the most recently used pull stays");
    assert!(in_bucket_now(&pushed.layers[0].digest), "pushed content is never evicted");
    let total: u64 = s3.keys("").iter().filter(|(k, _)| k.starts_with("blobs/")).map(|(_, size)| size).sum();
    assert!(total <= 4 << 20, "the bucket holds {total} bytes");
    // An evicted image pulls again, from its upstream.
    let again = pull(&clients, &wharf, "up/team/a:1", "1", false).await;
    assert_layout_holds_image(again.path(), "1", &cached[0]);
    upstream_gets(&upstream, &cached[0].layers[0].digest, 2).await;
    wharf.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_with_no_local_copy_is_read_once_from_the_bucket_ranges_pass_through_and_a_corrupt_one_never_ends_cleanly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let s3 = SeaweedFs::start(&tmp.path().join("s3"), "wharf-read");
    let dir = tmp.path().join("wharf");
    let wharf = start(&dir, &upstream, &storage_toml(&s3, "r/", "1GiB"));
    // Pushed: the bucket is its only source.
    let pushed = Image::random(&[12 << 20]);
    let job = (clients.clone(), tmp.path().to_owned(), pushed.clone(), wharf.host());
    tokio::task::spawn_blocking(move || images::push(&job.0, &job.1, &job.2, &job.3, "team/app", &["1"], Some(PUSHER)))
        .await
        .expect("push");
    let layer = pushed.layers[0].clone();
    in_bucket(&s3, "r/", std::slice::from_ref(&layer.digest)).await;
    let restart_with_empty_hot_tier = |wharf: Wharf| {
        let config = wharf.config_path.clone();
        wharf.stop();
        std::fs::remove_dir_all(dir.join("storage/objects")).expect("empty the hot tier");
        Wharf::start_with_config(&config)
    };
    let wharf = restart_with_empty_hot_tier(wharf);
    let auth = crate::push::authorization();
    let url = format!("{}/v2/team/app/blobs/{}", wharf.url(), layer.digest);

    // A range: from the bucket, passed through; no local copy is made.
    let part = http::request("GET", &url, &[("Authorization", auth.as_str()), ("Range", "bytes=5000000-5000999")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), Some(format!("bytes 5000000-5000999/{}", layer.bytes.len()).as_str()));
    assert!(part.complete && part.body[..] == layer.bytes[5_000_000..5_001_000]);
    assert_eq!(metric(&wharf, "wharf_hot_tier_bytes").await, 0, "a range keeps no local copy");
    assert!(bytes_on_disk(&dir) < 1 << 20);

    // Whole reads at once: one download, followed by every reader, kept.
    let reads = (0..4).map(|_| {
        let (url, auth) = (url.clone(), auth.clone());
        tokio::spawn(async move { http::request("GET", &url, &[("Authorization", auth.as_str())]).await })
    });
    for read in futures_util::future::join_all(reads).await {
        let read = read.expect("a reader");
        assert_eq!(read.status, 200);
        assert!(read.complete && read.body == layer.bytes, "every reader gets the verified bytes");
    }
    assert_eq!(metric(&wharf, r#"wharf_hot_tier_requests_total{result="miss"}"#).await, 1, "one download for four readers");
    eventually("the download is kept as a local copy", || async {
        metric(&wharf, "wharf_hot_tier_bytes").await >= layer.bytes.len() as u64
    })
    .await;

    // A corrupt object in the bucket: the reader's body never ends
    // cleanly, the object is quarantined, and it is unknown after.
    let k = key("r/", &layer.digest);
    let mut bytes = s3.read(&k);
    bytes[7_000_000] ^= 0xff;
    s3.write(&k, &bytes);
    let wharf = restart_with_empty_hot_tier(wharf);
    let url = format!("{}/v2/team/app/blobs/{}", wharf.url(), layer.digest);
    let broken = http::request("GET", &url, &[("Authorization", auth.as_str())]).await;
    assert!(!broken.complete || broken.status != 200, "a corrupt object never ends cleanly");
    assert!(broken.body.len() < layer.bytes.len());
    eventually("the corrupt object is quarantined", || async {
        let keys = s3.keys("r/");
        !keys.iter().any(|(key, _)| *key == k) && keys.iter().any(|(key, _)| key.starts_with("r/quarantine/"))
    })
    .await;
    let gone = http::request("GET", &url, &[("Authorization", auth.as_str())]).await;
    assert_eq!((gone.status, gone.error_code().as_str()), (404, "BLOB_UNKNOWN"));
    assert_eq!(metric(&wharf, "wharf_hot_tier_bytes").await, 0, "nothing corrupt is kept");
    wharf.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redirect_blob_gets_go_to_presigned_urls_that_real_clients_follow() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let s3 = SeaweedFs::start(&tmp.path().join("s3"), "wharf-redirect");
    let image = Image::random(&[3 << 20, 50_000]);
    images::push(&clients, tmp.path(), &image, &upstream.host(), "team/a", &["1"], None);
    let dir = tmp.path().join("wharf");
    let lines = storage_toml(&s3, "", "1GiB").replace("max_retries = 1\n", "max_retries = 1\nredirect = true\n");
    let wharf = start(&dir, &upstream, &lines);

    // The first pull is a fill: streamed by wharf, as the bucket has nothing.
    let first = pull(&clients, &wharf, "up/team/a:1", "1", false).await;
    assert_layout_holds_image(first.path(), "1", &image);
    wait_for_fills(&wharf).await;
    in_bucket(&s3, "", &digests(&image)).await;
    assert_eq!(metric(&wharf, "wharf_s3_redirects_total").await, 0);

    // Then skopeo follows the redirects to the bucket for every blob.
    let served = metric(&wharf, r#"wharf_served_bytes_total{source="cache"}"#).await;
    let again = pull(&clients, &wharf, "up/team/a:1", "1", false).await;
    assert_layout_holds_image(again.path(), "1", &image);
    assert!(metric(&wharf, "wharf_s3_redirects_total").await >= 2, "the layers and the config were redirected");
    assert!(
        metric(&wharf, r#"wharf_served_bytes_total{source="cache"}"#).await - served < 1 << 20,
        "the layer's bytes came from the bucket, not through wharf"
    );
    upstream_gets(&upstream, &image.layers[0].digest, 1).await;

    // What a client sees: a 307 to a presigned URL holding the bytes; a
    // HEAD is answered here; a blob the repository does not hold is unknown.
    let layer = &image.layers[0];
    let url = format!("{}/v2/up/team/a/blobs/{}", wharf.url(), layer.digest);
    let got = http::request("GET", &url, &[]).await;
    assert_eq!(got.status, 307);
    let location = got.header("location").expect("a Location").to_owned();
    assert!(location.contains("X-Amz-Signature="), "presigned: {location}");
    let fetched = http::request("GET", &location, &[]).await;
    assert_eq!(fetched.status, 200);
    assert!(fetched.body == layer.bytes, "the presigned URL serves the blob");
    let head = http::request("HEAD", &url, &[]).await;
    assert_eq!((head.status, head.header("content-length")), (200, Some(layer.bytes.len().to_string().as_str())));
    let other = http::request("GET", &format!("{}/v2/up/team/other/blobs/{}", wharf.url(), layer.digest), &[]).await;
    assert_ne!(other.status, 307, "no URL for a repository that does not hold the blob");
    wharf.stop();
}

/// A fill's upload follows it: parts go up while the fill still streams
/// (here, while its upstream stalls past two parts), the object appears
/// only once the whole blob matched; a fill that stalls for good or brings
/// the wrong bytes aborts its upload and leaves nothing in the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_uploads_parts_as_it_streams_and_a_stalled_or_wrong_fill_leaves_nothing_in_the_bucket() {
    use crate::fake_upstream::{FakeUpstream, Gate, Script};
    let tmp = tempfile::tempdir().expect("tempdir");
    let s3 = SeaweedFs::start(&tmp.path().join("s3"), "wharf-follow");
    let fake = FakeUpstream::start().await;
    let dir = tmp.path().join("wharf");
    let entry = crate::wharf::UpstreamEntry::new("fake", &fake.url()).default().extra("idle_timeout = \"2s\"");
    let config = crate::wharf::write_config(&dir, &[entry]);
    let toml = std::fs::read_to_string(&config).expect("read config");
    std::fs::write(&config, toml.replacen("\n\n[log]", &format!("\n{}\n\n[log]", storage_toml(&s3, "f/", "1GiB")), 1))
        .expect("write config");
    let wharf = Wharf::start_with_config(&config);
    let parts_up = || metric(&wharf, r#"wharf_s3_requests_total{op="put_part",result="ok"}"#);
    let url = |digest: &str| format!("{}/v2/team/a/blobs/{digest}", wharf.url());
    let blob = |len: usize| {
        let bytes = images::random_bytes(len);
        let digest = fake.put_blob(bytes.clone());
        (bytes, digest)
    };

    let (bytes, digest) = blob(20 << 20);
    let gate = Gate::new();
    fake.script(&digest, Script::normal().stalling_at(18 << 20, &gate));
    let stalled = url(&digest);
    let reader = tokio::spawn(async move { http::get(&stalled).await });
    gate.reached(1).await;
    eventually("two parts went up while the fill waits for its upstream", || async { parts_up().await >= 2 }).await;
    assert_eq!(metric(&wharf, "wharf_fills_in_flight").await, 1, "the fill is still streaming");
    assert!(!s3.keys("f/").iter().any(|(k, _)| *k == key("f/", &digest)), "no object before the blob was verified");
    gate.open();
    let got = reader.await.expect("reader");
    assert!(got.status == 200 && got.complete && got.body == bytes);
    in_bucket(&s3, "f/", std::slice::from_ref(&digest)).await;

    let aborted = || metric(&wharf, r#"wharf_s3_requests_total{op="abort_multipart",result="ok"}"#);
    for (n, script) in [(1, Script::normal().stalling_at(18 << 20, &Gate::new())), (2, Script::wrong_bytes())] {
        let (_, digest) = blob(20 << 20);
        fake.script(&digest, script);
        let got = http::get(&url(&digest)).await;
        assert!(!got.complete || got.status != 200, "a stalled or wrong fill never ends cleanly");
        eventually("the upload was aborted", || async { aborted().await >= n }).await;
        wait_for_fills(&wharf).await;
        assert!(!s3.keys("f/").iter().any(|(k, _)| *k == key("f/", &digest)), "nothing of it in the bucket");
        let journal = std::fs::read_dir(dir.join("storage/s3-multipart")).expect("journal").count();
        assert_eq!(journal, 0, "no multipart upload is left noted");
    }
    wharf.stop();
}
