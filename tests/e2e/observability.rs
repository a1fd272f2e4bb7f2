//! What an operator watches: `/metrics` after real pulls (checked by
//! Prometheus' own `promtool`), the shipped alert rules, `/readyz`, and
//! the JSON access log with request ids reaching the upstream.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::admin::sample;
use crate::clients::{require_program, Clients};
use crate::fake_upstream::{Gate, Script};
use crate::faults::assert_served;
use crate::http;
use crate::images::{self, Image};
use crate::registry::Registry;
use crate::streaming::within_guard;
use crate::wharf::{UpstreamEntry, Wharf};

/// Runs `promtool check <what> [file]` with `stdin`; its status and output.
fn promtool(args: &[&str], stdin: &[u8]) -> (bool, String) {
    require_program("promtool", "prometheus");
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child.stdin.take().expect("piped stdin").write_all(stdin).expect("write to promtool");
    let out = child.wait_with_output().expect("wait for promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

async fn scrape(wharf: &Wharf) -> String {
    let r = http::get(&format!("{}/metrics", wharf.admin_url())).await;
    assert_eq!(r.status, 200, "GET /metrics");
    String::from_utf8(r.body.to_vec()).expect("metrics are UTF-8")
}

/// The change of every named series between two scrapes.
fn delta(before: &str, after: &str, series: &str) -> u64 {
    sample(after, series) - sample(before, series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_real_pulls_pass_promtool_and_count_a_miss_then_a_hit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let image = Image::random(&[50_000, 400_000]);
    images::push(&clients, tmp.path(), &image, &upstream.host(), "team/tool", &["1"], None);
    let wharf = Wharf::start(&tmp.path().join("wharf"), &[UpstreamEntry::new("up", &upstream.url()).default()]);
    let blobs = image.blobs();
    let (count, bytes) = (blobs.len() as u64, blobs.iter().map(|b| b.bytes.len() as u64).sum::<u64>());
    let pull = |into: &Path| clients.pull_to_layout(&format!("docker://{}/team/tool:1", wharf.host()), into, "1", &[]);

    let start = scrape(&wharf).await;
    pull(&tmp.path().join("cold"));
    let cold = scrape(&wharf).await;
    pull(&tmp.path().join("warm"));
    let warm = scrape(&wharf).await;

    let (ok, report) = promtool(&["check", "metrics"], warm.as_bytes());
    assert!(ok && report.trim().is_empty(), "promtool check metrics:\n{report}\n{warm}");

    let blob = |result: &str| format!(r#"wharf_cache_requests_total{{kind="blob",result="{result}"}}"#);
    let manifest = |result: &str| format!(r#"wharf_cache_requests_total{{kind="manifest",result="{result}"}}"#);
    let served = |source: &str| format!(r#"wharf_served_bytes_total{{source="{source}"}}"#);
    let blob_gets = r#"wharf_upstream_requests_total{op="get_blob",status="200",upstream="up"}"#;
    let served_blobs = r#"wharf_http_requests_total{method="GET",route="blob",status="200"}"#;

    // The cold pull: every blob a miss, fetched once, streamed from upstream.
    assert_eq!(delta(&start, &cold, &blob("miss")), count, "{cold}");
    assert_eq!(delta(&start, &cold, &blob("hit")), 0, "{cold}");
    assert!(delta(&start, &cold, &manifest("miss")) >= 1, "{cold}");
    assert_eq!(delta(&start, &cold, &served("upstream")), bytes, "{cold}");
    assert_eq!(delta(&start, &cold, blob_gets), count, "{cold}");
    assert_eq!(delta(&start, &cold, r#"wharf_upstream_bytes_total{upstream="up"}"#), bytes, "{cold}");
    assert_eq!(delta(&start, &cold, served_blobs), count, "{cold}");
    // The warm pull: every blob a hit from the cache, nothing fetched.
    assert_eq!(delta(&cold, &warm, &blob("hit")), count, "{warm}");
    assert_eq!(delta(&cold, &warm, &blob("miss")), 0, "{warm}");
    assert_eq!(delta(&cold, &warm, &manifest("miss")), 0, "{warm}");
    assert!(delta(&cold, &warm, &manifest("hit")) >= 1, "{warm}");
    assert_eq!(delta(&cold, &warm, &served("cache")), bytes, "{warm}");
    assert_eq!(delta(&cold, &warm, &served("upstream")), 0, "{warm}");
    assert_eq!(delta(&cold, &warm, blob_gets), 0, "{warm}");
    assert_eq!(delta(&cold, &warm, served_blobs), count, "{warm}");
    for image_blob in &blobs {
        assert_eq!(upstream.blob_gets_reaching(&image_blob.digest, 1), 1, "the upstream served {} once", image_blob.digest);
    }

    assert_eq!(sample(&warm, &format!(r#"wharf_build_info{{version="{}"}}"#, env!("CARGO_PKG_VERSION"))), 1);
    assert!(sample(&warm, "process_resident_memory_bytes") > 0, "{warm}");
    assert!(sample(&warm, "process_open_fds") > 0, "{warm}");
    // Every response has ended, so none is in flight but the scrape (on
    // the admin port, which these metrics do not count).
    assert_eq!(sample(&warm, "wharf_http_in_flight_requests"), 0, "{warm}");
    // No label carries a repository name or a digest.
    assert!(!warm.contains("team/tool") && !warm.contains("sha256:"), "{warm}");
}

#[test]
fn promtool_accepts_the_shipped_alert_rules() {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/prometheus-alerts.yml");
    let (ok, report) = promtool(&["check", "rules", rules.to_str().expect("UTF-8 path")], b"");
    assert!(ok, "promtool check rules:\n{report}");
    assert!(report.contains("SUCCESS"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_with_the_reason_when_storage_takes_no_write_and_not_for_a_dead_upstream() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut upstream = Registry::start(&tmp.path().join("upstream"));
    let dir = tmp.path().join("wharf");
    let wharf = Wharf::start(&dir, &[UpstreamEntry::new("up", &upstream.url()).default()]);
    let readyz = format!("{}/readyz", wharf.admin_url());

    let r = http::get(&readyz).await;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(r.status, 200, "{text}");
    assert!(text.starts_with("ready\n") && text.contains("upstream up: reachable (HTTP 200"), "{text}");
    assert_eq!(http::get(&format!("{}/healthz", wharf.admin_url())).await.status, 200);

    // A file where the spool directory is: no write gets through, root's
    // included (permissions would not stop root).
    let spool = dir.join("storage/spool");
    std::fs::remove_dir_all(&spool).expect("remove spool");
    std::fs::write(&spool, b"in the way").expect("block spool");
    let r = http::get(&readyz).await;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(r.status, 503, "{text}");
    assert!(text.starts_with("not ready: storage: ") && text.contains("cannot write in "), "{text}");
    assert!(text.contains("metadata: ok"), "{text}");
    assert_eq!(http::get(&format!("{}/healthz", wharf.admin_url())).await.status, 200, "alive all the same");

    // Space back, upstream gone: ready, the upstream reported, not fatal.
    std::fs::remove_file(&spool).expect("unblock spool");
    std::fs::create_dir(&spool).expect("recreate spool");
    upstream.stop();
    let r = http::get(&readyz).await;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(r.status, 200, "{text}");
    assert!(text.starts_with("ready\n"), "{text}");
    // Its last answer is reused for a while, so it may still read reachable.
    assert!(text.contains("upstream up: "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_an_unreachable_upstream_without_failing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let wharf = Wharf::start(tmp.path(), &[UpstreamEntry::new("gone", &url).default()]);
    let r = http::get(&format!("{}/readyz", wharf.admin_url())).await;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(r.status, 200, "{text}");
    assert!(text.contains("upstream gone: unreachable: "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_joining_a_fill_in_flight_count_as_coalesced_and_the_starter_as_a_miss() {
    let rig = crate::faults::Rig::start(&[]).await;
    let (bytes, digest) = rig.upstream_blob(100_000);
    let gate = Gate::new();
    rig.fake.script(&digest, Script::hold_headers(&gate));
    let metrics_url = format!("{}/metrics", rig.wharf.admin_url());
    let series = |result: &str| format!(r#"wharf_cache_requests_total{{kind="blob",result="{result}"}}"#);

    let get = |url: String| tokio::spawn(async move { http::get(&url).await });
    let first = get(rig.blob_url(&digest));
    within_guard("the fill reaches the upstream", gate.reached(1)).await;
    let others: Vec<_> = (0..2).map(|_| get(rig.blob_url(&digest))).collect();
    // The upstream holds its answer until both have joined the fill.
    within_guard("two clients join the fill", async {
        while sample(&String::from_utf8_lossy(&http::get(&metrics_url).await.body), &series("coalesced")) < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    gate.open();
    for task in std::iter::once(first).chain(others) {
        assert_served(&task.await.expect("client task"), &bytes, "coalesced blob");
    }
    let text = String::from_utf8_lossy(&http::get(&metrics_url).await.body).into_owned();
    assert_eq!(sample(&text, &series("miss")), 1, "{text}");
    assert_eq!(sample(&text, &series("coalesced")), 2, "{text}");
    assert_eq!(sample(&text, &series("hit")), 0, "{text}");
    assert_eq!(rig.fake.count("GET", &digest), 1, "one upstream fetch");
    // All three streamed the bytes as they arrived from the upstream.
    assert_eq!(sample(&text, r#"wharf_served_bytes_total{source="upstream"}"#), 3 * bytes.len() as u64, "{text}");
}

/// The JSON log line of the request with id `id`, once written (it is
/// written when the response body has ended).
async fn request_line(wharf: &Wharf, id: &str) -> serde_json::Value {
    within_guard(&format!("the access-log line of {id}"), async {
        loop {
            let found = wharf.log_lines().into_iter().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(&l).ok()?;
                (v["message"] == "request" && v["request_id"] == id).then_some(v)
            });
            if let Some(v) = found {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_and_request_ids_reach_the_client_and_the_upstream() {
    let fake = crate::fake_upstream::FakeUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = crate::wharf::write_config(dir.path(), &[UpstreamEntry::new("fake", &fake.url()).default()]);
    let toml = std::fs::read_to_string(&config).expect("read config");
    std::fs::write(&config, toml.replace("level = \"debug\"\n", "level = \"info\"\nformat = \"json\"\n"))
        .expect("write config");
    let wharf = Wharf::start_with_config(&config);
    let rig_blob = |len: usize| {
        let bytes = bytes::Bytes::from(images::random_bytes(len));
        let digest = fake.put_blob(bytes.clone());
        (bytes, digest)
    };
    let url = |digest: &str| format!("{}/v2/{}/blobs/{digest}", wharf.url(), crate::faults::REPO);

    // A client's id is kept, answered and sent upstream.
    let (bytes, digest) = rig_blob(70_000);
    let r = http::request("GET", &url(&digest), &[("X-Request-Id", "e2e-trace-42")]).await;
    assert_served(&r, &bytes, "cold blob");
    assert_eq!(r.header("x-request-id"), Some("e2e-trace-42"));
    let asked: Vec<_> = fake.requests().into_iter().filter(|s| s.path.ends_with(&digest)).collect();
    assert!(!asked.is_empty(), "the upstream was asked for the blob");
    for seen in &asked {
        assert_eq!(seen.header("x-request-id"), Some("e2e-trace-42"), "{} {}", seen.method, seen.path);
    }
    let line = request_line(&wharf, "e2e-trace-42").await;
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["route"], "blob", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["bytes"], bytes.len() as u64, "{line}");
    assert_eq!(line["complete"], true, "{line}");
    assert_eq!(line["cache"], "miss", "{line}");
    assert_eq!(line["upstream"], "fake", "{line}");
    assert!(line["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{line}");

    // Without one, wharf makes an id, answers it and sends it on.
    let (bytes, digest) = rig_blob(1_000);
    let r = http::get(&url(&digest)).await;
    assert_served(&r, &bytes, "second cold blob");
    let id = r.header("x-request-id").expect("an id is always answered").to_owned();
    assert!(!id.is_empty() && id != "e2e-trace-42", "{id}");
    let seen = fake.requests().into_iter().find(|s| s.path.ends_with(&digest)).expect("asked upstream");
    assert_eq!(seen.header("x-request-id"), Some(id.as_str()));
    // And the warm request's line says where its bytes came from.
    let r = http::request("GET", &url(&digest), &[("X-Request-Id", "e2e-warm")]).await;
    assert_served(&r, &bytes, "warm blob");
    let line = request_line(&wharf, "e2e-warm").await;
    assert_eq!((line["cache"].as_str(), line["bytes"].as_u64()), (Some("hit"), Some(1_000)), "{line}");

    // A failure's own log line carries the id too.
    let (_, digest) = rig_blob(1_000);
    fake.script(&digest, Script::status(500));
    let r = http::request("GET", &url(&digest), &[("X-Request-Id", "e2e-fail")]).await;
    assert_eq!(r.status, 502);
    assert_eq!(request_line(&wharf, "e2e-fail").await["status"], 502);
    let failed = wharf.log_lines().into_iter().filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok()).find(
        |v| v["message"] == "request failed" && v["request_id"] == "e2e-fail",
    );
    assert!(failed.is_some_and(|v| v["level"] == "WARN" && v["status"] == 502), "no warning with the request's id");
}
