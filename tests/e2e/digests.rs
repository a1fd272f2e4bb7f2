//! sha512 content pulls through like sha256: verified, cached, served warm.

use bytes::Bytes;

use crate::faults::{assert_served, Rig};
use crate::fake_upstream::Script;
use crate::images::random_bytes;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha512_manifest_and_blob_are_verified_cached_and_served_warm() {
    let rig = Rig::start(&[]).await;
    let layer = Bytes::from(random_bytes(300 * 1024));
    let layer_digest = rig.fake.put_blob_sha512(layer.clone());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{layer_digest}","size":{}}},"layers":[]}}"#,
        layer.len()
    );
    let manifest_digest = rig.fake.put_manifest_sha512(OCI_MANIFEST, manifest.clone());

    for pass in ["cold", "warm"] {
        let m = rig.get(&rig.manifest_url(&manifest_digest)).await;
        assert_served(&m, manifest.as_bytes(), &format!("{pass} sha512 manifest"));
        assert_eq!(m.header("Docker-Content-Digest"), Some(manifest_digest.as_str()));
        let b = rig.get(&rig.blob_url(&layer_digest)).await;
        assert_served(&b, &layer, &format!("{pass} sha512 blob"));
    }
    assert_eq!(rig.fake.count("GET", &manifest_digest), 1, "manifest fetched once");
    assert_eq!(rig.fake.count("GET", &layer_digest), 1, "blob fetched once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha512_blob_with_wrong_bytes_is_never_served_complete() {
    let rig = Rig::start(&[]).await;
    let layer = Bytes::from(random_bytes(64 * 1024));
    let digest = rig.fake.put_blob_sha512(layer.clone());
    rig.fake.script(&digest, Script::wrong_bytes().times(1));
    // A broken body, an error status, or (the fill failed before the
    // first byte went out) the connection closed without a response.
    match rig.get_failing(&rig.blob_url(&digest)).await {
        Ok(r) => assert!(!(r.status == 200 && r.complete), "corrupt sha512 blob looked like success: {}", r.status),
        Err(e) => assert!(e.contains("client error"), "{e}"),
    }
    // The next request fetches again and gets the right bytes.
    assert_served(&rig.get(&rig.blob_url(&digest)).await, &layer, "refetched sha512 blob");
    assert_eq!(rig.fake.count("GET", &digest), 2);
}
