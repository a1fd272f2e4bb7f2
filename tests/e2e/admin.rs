//! The admin port: health endpoints and the cache metrics Prometheus scrapes.

use crate::faults::{assert_served, Rig};
use crate::http;
use crate::streaming::within_guard;

/// The value of one sample line in Prometheus text format, 0 if absent.
pub fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_reports_health_and_blob_cache_misses_then_hits() {
    let rig = Rig::start(&[]).await;
    let admin = format!("http://{}", rig.wharf.admin);
    assert_eq!(http::get(&format!("{admin}/healthz")).await.status, 200);
    assert_eq!(http::get(&format!("{admin}/readyz")).await.status, 200);
    // The admin port does not serve the registry API.
    assert_eq!(http::get(&format!("{admin}/v2/")).await.status, 404);

    let (bytes, digest) = rig.upstream_blob(200 * 1024);
    assert_served(&rig.get(&rig.blob_url(&digest)).await, &bytes, "cold blob");
    assert_served(&rig.get(&rig.blob_url(&digest)).await, &bytes, "warm blob");

    let metrics = http::get(&format!("{admin}/metrics")).await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body);
    assert_eq!(sample(&text, r#"wharf_cache_requests_total{kind="blob",result="miss"}"#), 1, "{text}");
    assert_eq!(sample(&text, r#"wharf_cache_requests_total{kind="blob",result="hit"}"#), 1, "{text}");
    assert_eq!(sample(&text, r#"wharf_served_bytes_total{source="upstream"}"#), bytes.len() as u64, "{text}");
    assert_eq!(sample(&text, r#"wharf_served_bytes_total{source="cache"}"#), bytes.len() as u64, "{text}");
    assert_eq!(sample(&text, r#"wharf_upstream_bytes_total{upstream="fake"}"#), bytes.len() as u64, "{text}");
    // The fill task outlives the responses (it syncs and commits after the
    // clients have their bytes), so the gauge returns to 0 shortly after.
    within_guard("wharf_fills_in_flight returns to 0", async {
        loop {
            let m = http::get(&format!("{admin}/metrics")).await;
            if sample(&String::from_utf8_lossy(&m.body), "wharf_fills_in_flight") == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}
