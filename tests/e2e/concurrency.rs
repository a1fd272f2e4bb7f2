//! Many clients asking wharf for the same cold content at once: every one
//! gets the right bytes, and the upstream is asked once.

use std::sync::Arc;

use crate::clients::Clients;
use crate::http;
use crate::images::{self, assert_layout_holds_image, Image};
use crate::registry::Registry;
use crate::wharf::{UpstreamEntry, Wharf};

/// An open upstream holding `image` at `team/tool:2`, and wharf in front.
fn start(tmp: &std::path::Path, image: &Image) -> (Clients, Registry, Wharf) {
    let clients = Clients::new(&tmp.join("clients"));
    let upstream = Registry::start(&tmp.join("upstream"));
    images::push(&clients, tmp, image, &upstream.host(), "team/tool", &["2"], None);
    let wharf = Wharf::start(&tmp.join("wharf"), &[UpstreamEntry::new("up", &upstream.url())]);
    (clients, upstream, wharf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_cold_blob_requests_fetch_upstream_once() {
    const CLIENTS: usize = 20;
    let tmp = tempfile::tempdir().expect("tempdir");
    // Big enough that the fill is still running when the last client asks.
    let image = Image::random(&[4 << 20]);
    let (_clients, upstream, wharf) = start(tmp.path(), &image);
    let layer = Arc::new(image.layers[0].clone());
    let url = Arc::new(format!("{}/v2/up/team/tool/blobs/{}", wharf.url(), layer.digest));

    // Every client task is ready before any of them sends its request.
    let start = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (start, url) = (Arc::clone(&start), Arc::clone(&url));
            tokio::spawn(async move {
                start.wait().await;
                http::get(&url).await
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let response = task.await.expect("client task");
        assert_eq!(response.status, 200, "client {i}: {}", String::from_utf8_lossy(&response.body));
        assert!(response.complete, "client {i}: body ended with an error");
        assert_eq!(response.body.len(), layer.bytes.len(), "client {i}: body length");
        assert!(response.body == layer.bytes, "client {i}: wrong bytes");
    }
    assert_eq!(upstream.blob_gets_reaching(&layer.digest, 1), 1, "upstream GETs for the blob");
}

#[test]
fn concurrent_cold_skopeo_pulls_fetch_each_blob_upstream_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = Image::random(&[1 << 20, 2 << 20, 50_000]);
    let (clients, upstream, wharf) = start(tmp.path(), &image);
    let source = format!("docker://{}/up/team/tool:2", wharf.host());
    let dests: Vec<_> = (0..4).map(|i| tmp.path().join(format!("pulled-{i}"))).collect();
    std::thread::scope(|s| {
        for dest in &dests {
            let (clients, source) = (&clients, &source);
            s.spawn(move || clients.pull_to_layout(source, dest, "2", &[]));
        }
    });
    for dest in &dests {
        assert_layout_holds_image(dest, "2", &image);
    }
    for blob in image.blobs() {
        assert_eq!(upstream.blob_gets_reaching(&blob.digest, 1), 1, "upstream GETs for blob {}", blob.digest);
    }
}
