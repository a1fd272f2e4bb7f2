//! Rate limits on the real binary: a client over its per-IP limit gets 429
//! with `Retry-After` and is let through again once it has waited that
//! long; `X-Forwarded-For` counts only from trusted proxies; and however
//! many clients ask at once, no more than `max_concurrent_requests` are in
//! flight to an upstream.

use std::time::Duration;

use bytes::Bytes;
use tempfile::TempDir;

use crate::admin::sample;
use crate::fake_upstream::{FakeUpstream, Gate, Script};
use crate::faults::{assert_served, REPO};
use crate::http::{self, Response};
use crate::images::random_bytes;
use crate::streaming::within_guard;
use crate::wharf::{write_config, UpstreamEntry, Wharf};

/// A fake upstream and a wharf in front of it with `[limits]` set to
/// `limits` and `upstream_extra` lines in the upstream's entry. Fields drop
/// in order: wharf is killed before its directory is removed.
struct Limited {
    wharf: Wharf,
    fake: FakeUpstream,
    _dir: TempDir,
}

impl Limited {
    async fn start(limits: &str, upstream_extra: &str) -> Limited {
        let fake = FakeUpstream::start().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let entry = UpstreamEntry::new("fake", &fake.url()).default().extra(upstream_extra);
        let config = write_config(dir.path(), &[entry]);
        let mut toml = std::fs::read_to_string(&config).expect("read wharf.toml");
        toml.push_str(&format!("\n[limits]\n{limits}\n"));
        std::fs::write(&config, toml).expect("write wharf.toml");
        let wharf = Wharf::start_with_config(&config);
        Limited { wharf, fake, _dir: dir }
    }

    async fn ping(&self, headers: &[(&str, &str)]) -> Response {
        within_guard("GET /v2/", http::request("GET", &format!("{}/v2/", self.wharf.url()), headers)).await
    }

    async fn metric(&self, series: &str) -> u64 {
        let text = http::get(&format!("{}/metrics", self.wharf.admin_url())).await;
        sample(&String::from_utf8_lossy(&text.body), series)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_per_ip_limit_gets_429_with_retry_after_then_passes_after_waiting() {
    let rig = Limited::start("per_ip_rate = 1\nper_ip_burst = 3", "").await;

    // The bucket starts full: three pass, and requests sent right after
    // find it empty (one token a second comes back meanwhile at most).
    // Each claims another address in X-Forwarded-For: from a peer that is
    // not a trusted proxy that must not buy a fresh bucket.
    let mut statuses = Vec::new();
    let mut refused = None;
    for i in 0..8 {
        let r = rig.ping(&[("x-forwarded-for", &format!("203.0.113.{i}"))]).await;
        statuses.push(r.status);
        if r.status == 429 && refused.is_none() {
            refused = Some(r);
        }
    }
    assert_eq!(statuses[..3], [200, 200, 200], "the burst passes: {statuses:?}");
    let refused = refused.unwrap_or_else(|| panic!("no request was refused: {statuses:?}"));
    assert_eq!(refused.error_code(), "TOOMANYREQUESTS");
    let wait: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without a Retry-After in seconds: {:?}", refused.headers));
    assert!(wait >= 1, "Retry-After: {wait}");

    // A behaviour test, not a timing one: wait as told, then pass.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(rig.ping(&[]).await.status, 200, "after waiting Retry-After seconds");

    assert!(rig.metric(r#"wharf_rate_limited_total{scope="ip"}"#).await >= 1);
    assert_eq!(rig.metric(r#"wharf_rate_limited_total{scope="user"}"#).await, 0);
    assert!(rig.fake.requests().is_empty(), "limited requests never reach the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() {
    // Loopback is the proxy here; a very slow refill keeps the test about
    // the burst alone.
    let rig = Limited::start("per_ip_rate = 0.01\nper_ip_burst = 1\ntrusted_proxies = [\"127.0.0.1\"]", "").await;
    let alice = [("x-forwarded-for", "198.51.100.1")];
    let bob = [("x-forwarded-for", "198.51.100.1, 198.51.100.2")];
    assert_eq!(rig.ping(&alice).await.status, 200);
    assert_eq!(rig.ping(&alice).await.status, 429);
    assert_eq!(rig.ping(&bob).await.status, 200, "the nearest untrusted hop is the client");
    assert_eq!(rig.ping(&bob).await.status, 429);
    assert_eq!(rig.ping(&[]).await.status, 200, "the proxy's own requests are its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_blobs_for_many_clients_never_exceed_the_upstream_concurrency_cap() {
    const CLIENTS: usize = 5;
    const CAP: usize = 2;
    let rig = Limited::start("", &format!("max_concurrent_requests = {CAP}")).await;
    // Every blob's upstream body stalls partway, so a request that got in
    // keeps its turn (and its upstream connection) until the gate opens.
    let gate = Gate::new();
    let blobs: Vec<(Bytes, String)> = (0..CLIENTS)
        .map(|_| {
            let bytes = Bytes::from(random_bytes(100_000));
            let digest = rig.fake.put_blob(bytes.clone());
            rig.fake.script(&digest, Script::normal().stalling_at(20_000, &gate));
            (bytes, digest)
        })
        .collect();
    let clients: Vec<_> = blobs
        .iter()
        .map(|(_, digest)| {
            let url = format!("{}/v2/{REPO}/blobs/{digest}", rig.wharf.url());
            tokio::spawn(async move { http::get(&url).await })
        })
        .collect();

    within_guard("two upstream bodies reach their stall point", gate.reached(CAP)).await;
    // The rest wait inside wharf for a turn; the gauge says when all have
    // arrived there (polled: it is another process's state).
    within_guard("the other requests wait for a turn", async {
        while rig.metric(r#"wharf_upstream_requests_waiting{upstream="fake"}"#).await < (CLIENTS - CAP) as u64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(rig.fake.in_flight(), CAP, "{:?}", rig.fake.requests());

    gate.open();
    for (client, (bytes, digest)) in clients.into_iter().zip(&blobs) {
        let r = within_guard("client response", client).await.expect("client task");
        assert_served(&r, bytes, digest);
    }
    assert_eq!(rig.fake.max_in_flight(), CAP, "the upstream never saw more than the cap at once");
    for (_, digest) in &blobs {
        assert_eq!(rig.fake.count("GET", digest), 1, "one upstream GET per blob");
    }
    assert_eq!(rig.metric(r#"wharf_upstream_requests_waiting{upstream="fake"}"#).await, 0);
}
