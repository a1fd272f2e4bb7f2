//! Micro-benchmarks of the data plane's hot paths: routing a request,
//! hashing streamed bytes, and the tee (spool + hash + commit + read back).
//! Run with `cargo bench`. No assertions on time live in tests; the figures
//! here are for comparing changes.

use bytes::Bytes;
use divan::counter::BytesCount;
use divan::Bencher;

fn main() {
    divan::main();
}

const PATHS: &[&str] = &[
    "/v2/",
    "/v2/docker.io/library/alpine/manifests/3.20",
    "/v2/quay.io/org/team/app/blobs/sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "/v2/library/debian/tags/list",
];

#[divan::bench]
fn route(bencher: Bencher) {
    bencher.bench(|| {
        for p in PATHS {
            divan::black_box(wharf::bench::route(divan::black_box(p)));
        }
    });
}

#[divan::bench(args = [false, true])]
fn hash_16mib_in_64kib_chunks(bencher: Bencher, sha512: bool) {
    let data = vec![0x5au8; 16 << 20];
    bencher
        .counter(BytesCount::new(data.len()))
        .bench(|| wharf::bench::hash(sha512, divan::black_box(&data), 64 << 10));
}

#[divan::bench(sample_count = 10)]
fn tee_64mib(bencher: Bencher) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let chunk = Bytes::from(vec![0xa5u8; 64 << 10]);
    let chunks: Vec<Bytes> = (0..1024).map(|_| chunk.clone()).collect();
    bencher.counter(BytesCount::new(64usize << 20)).bench(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        runtime.block_on(wharf::bench::tee(dir.path(), &chunks))
    });
}
