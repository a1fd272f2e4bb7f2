//! wharf killed with SIGKILL in the middle of a fill, then restarted on the
//! same storage: what it had half-written must never be served.

use crate::fake_upstream::{Gate, Script};
use crate::faults::{assert_served, Rig};
use crate::streaming::{self, within_guard};
use crate::wharf::Wharf;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_fill_then_restarted_refetches_the_whole_blob() {
    let mut rig = Rig::start(&[]).await;
    let (bytes, digest) = rig.upstream_blob(256 * 1024);
    // Never opened: the upstream sends 96 KiB, then nothing.
    rig.fake.script(&digest, Script::normal().stalling_at(96 * 1024, &Gate::new()));

    let url = rig.blob_url(&digest);
    let mut client = within_guard("headers", streaming::open(&url)).await;
    assert_eq!(client.status, 200);
    // Bytes reached the client, so the fill was under way when wharf died.
    within_guard("first bytes", client.read_at_least(1)).await;
    let config = rig.wharf.config_path.clone();
    rig.wharf.kill9();
    let cut = within_guard("client body after the kill", client.finish()).await;
    assert!(!cut.complete, "the body of a killed wharf must not end cleanly");

    rig.fake.script(&digest, Script::normal());
    rig.wharf = Wharf::start_with_config(&config);
    let url = rig.blob_url(&digest);
    assert_served(&rig.get(&url).await, &bytes, "blob after restart");
    assert_eq!(rig.fake.count("GET", &digest), 2, "after the crash the blob must be fetched again, whole");
    assert_served(&rig.get(&url).await, &bytes, "blob once more");
    assert_eq!(rig.fake.count("GET", &digest), 2, "the refetched blob must have been stored");
}
