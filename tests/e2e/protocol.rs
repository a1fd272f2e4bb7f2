//! The distribution protocol as wharf speaks it, checked with raw requests:
//! headers, ranges, error codes, refused names and methods, pagination and
//! the catalog. The upstream is a real registry; wharf has no default
//! upstream, so every name carries the upstream prefix `up/`.

use crate::clients::Clients;
use crate::http;
use crate::images::{self, Image, MANIFEST_MEDIA_TYPE};
use crate::registry::Registry;
use crate::wharf::{UpstreamEntry, Wharf};

const OCI_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

struct Setup {
    _tmp: tempfile::TempDir,
    _upstream: Registry,
    image: Image,
    wharf: Wharf,
}

impl Setup {
    /// One image at `team/tool` under tags 1, 2 and 3.
    fn start() -> Setup {
        let tmp = tempfile::tempdir().expect("tempdir");
        let clients = Clients::new(&tmp.path().join("clients"));
        let upstream = Registry::start(&tmp.path().join("upstream"));
        let image = Image::random(&[100_000]);
        images::push(&clients, tmp.path(), &image, &upstream.host(), "team/tool", &["1", "2", "3"], None);
        let wharf = Wharf::start(&tmp.path().join("wharf"), &[UpstreamEntry::new("up", &upstream.url())]);
        Setup { _tmp: tmp, _upstream: upstream, image, wharf }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.wharf.url())
    }

    async fn get_manifest(&self, reference: &str) -> http::Response {
        http::request("GET", &self.url(&format!("/v2/up/team/tool/manifests/{reference}")), &[("Accept", OCI_ACCEPT)])
            .await
    }
}

fn body_text(r: &http::Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[tokio::test]
async fn version_check_answers_200_with_the_distribution_api_header() {
    let s = Setup::start();
    let r = http::get(&s.url("/v2/")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Docker-Distribution-API-Version"), Some("registry/2.0"));
}

#[tokio::test]
async fn manifest_head_and_get_describe_the_same_manifest() {
    let s = Setup::start();
    let manifest = &s.image.manifest;
    let length = manifest.bytes.len().to_string();

    // HEAD first, so it is answered for a cold tag.
    let head = http::request("HEAD", &s.url("/v2/up/team/tool/manifests/2"), &[("Accept", OCI_ACCEPT)]).await;
    assert_eq!(head.status, 200, "HEAD by tag");
    assert_eq!(head.header("Docker-Content-Digest"), Some(manifest.digest.as_str()), "HEAD digest");
    assert_eq!(head.header("Content-Type"), Some(MANIFEST_MEDIA_TYPE), "HEAD type");
    assert_eq!(head.header("Content-Length"), Some(length.as_str()), "HEAD length");
    assert!(head.body.is_empty(), "HEAD has no body");

    for reference in ["2", manifest.digest.as_str()] {
        let get = s.get_manifest(reference).await;
        assert_eq!(get.status, 200, "GET {reference}: {}", body_text(&get));
        assert_eq!(get.body, manifest.bytes, "GET {reference} body");
        assert_eq!(get.header("Docker-Content-Digest"), Some(manifest.digest.as_str()), "GET {reference} digest");
        assert_eq!(get.header("Content-Type"), Some(MANIFEST_MEDIA_TYPE), "GET {reference} type");
        assert_eq!(get.header("Content-Length"), Some(length.as_str()), "GET {reference} length");
        let etag = get.header("ETag").unwrap_or_else(|| panic!("GET {reference}: no ETag"));
        assert!(etag.contains(&manifest.digest), "GET {reference}: ETag {etag:?} does not name the digest");
    }
}

#[tokio::test]
async fn blob_head_and_get_carry_its_length_and_digest() {
    let s = Setup::start();
    let layer = &s.image.layers[0];
    let url = s.url(&format!("/v2/up/team/tool/blobs/{}", layer.digest));
    let head = http::request("HEAD", &url, &[]).await;
    assert_eq!(head.status, 200, "HEAD blob");
    assert_eq!(head.header("Content-Length"), Some(layer.bytes.len().to_string().as_str()));
    assert_eq!(head.header("Docker-Content-Digest"), Some(layer.digest.as_str()));
    assert!(head.body.is_empty(), "HEAD has no body");
    let get = http::get(&url).await;
    assert_eq!(get.status, 200, "GET blob");
    assert!(get.complete && get.body == layer.bytes, "GET blob bytes");
    assert_eq!(get.header("Docker-Content-Digest"), Some(layer.digest.as_str()));
}

#[tokio::test]
async fn blob_range_requests_answer_206_with_the_requested_bytes() {
    let s = Setup::start();
    let layer = &s.image.layers[0];
    let size = layer.bytes.len();
    let url = s.url(&format!("/v2/up/team/tool/blobs/{}", layer.digest));
    // First while the blob is cold, then once it is cached.
    let ranges = [(100, 1099), (size - 10, size - 1)];
    for (round, (first, last)) in ["cold", "warm"].into_iter().zip(ranges) {
        let range = format!("bytes={first}-{last}");
        let r = http::request("GET", &url, &[("Range", &range)]).await;
        assert_eq!(r.status, 206, "{round} {range}: {}", body_text(&r));
        assert_eq!(r.header("Content-Range"), Some(format!("bytes {first}-{last}/{size}").as_str()), "{round}");
        assert_eq!(r.header("Content-Length"), Some((last - first + 1).to_string().as_str()), "{round}");
        assert!(r.complete && r.body == layer.bytes[first..=last], "{round} {range}: wrong bytes");
    }
    let open_ended = http::request("GET", &url, &[("Range", "bytes=1000-")]).await;
    assert_eq!(open_ended.status, 206);
    assert!(open_ended.body == layer.bytes[1000..], "bytes=1000- : wrong bytes");
}

/// A last byte past the end means the end (RFC 9110), even at the top of
/// u64, where computing the end once overflowed: the connection closed, or
/// a 206 came with no bytes. A first byte past the end, or a last one before the first, is 416 with the size.
#[tokio::test]
async fn ranges_ending_past_the_blob_are_clamped_to_its_last_byte() {
    let s = Setup::start();
    let layer = &s.image.layers[0];
    let size = layer.bytes.len();
    let url = s.url(&format!("/v2/up/team/tool/blobs/{}", layer.digest));
    // The first while the blob is cold (served from the fill), the rest
    // from the cache.
    let ranges = [(5, "18446744073709551615"), (5, "18446744073709551615"), (0, "18446744073709551615"), (0, "99999999999999999999999")];
    for (first, last) in ranges {
        let range = format!("bytes={first}-{last}");
        let r = http::request("GET", &url, &[("Range", &range)]).await;
        assert_eq!(r.status, 206, "{range}: {}", body_text(&r));
        assert_eq!(r.header("Content-Range"), Some(format!("bytes {first}-{}/{size}", size - 1).as_str()), "{range}");
        assert_eq!(r.header("Content-Length"), Some((size - first).to_string().as_str()), "{range}");
        assert!(r.complete && r.body == layer.bytes[first..], "{range}: wrong bytes ({} of them)", r.body.len());
    }
    for range in [format!("bytes={size}-"), format!("bytes={size}-18446744073709551615"), "bytes=-0".to_owned(), "bytes=500-0".to_owned()] {
        let r = http::request("GET", &url, &[("Range", &range)]).await;
        assert_eq!((r.status, r.error_code().as_str()), (416, "RANGE_INVALID"), "{range}");
        assert_eq!(r.header("Content-Range"), Some(format!("bytes */{size}").as_str()), "{range}");
    }
}

#[tokio::test]
async fn unknown_tag_is_404_manifest_unknown() {
    let s = Setup::start();
    let r = s.get_manifest("no-such-tag").await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "MANIFEST_UNKNOWN"), "{}", body_text(&r));
}

#[tokio::test]
async fn unknown_blob_is_404_blob_unknown() {
    let s = Setup::start();
    let missing = images::sha256_digest(b"never pushed");
    let r = http::get(&s.url(&format!("/v2/up/team/tool/blobs/{missing}"))).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "BLOB_UNKNOWN"), "{}", body_text(&r));
}

#[tokio::test]
async fn unknown_upstream_without_a_default_is_404_name_unknown() {
    let s = Setup::start();
    for path in ["/v2/nosuch/team/tool/manifests/2", "/v2/team/tool/manifests/2", "/v2/team/tool/manifests/2?ns=nosuch.example"]
    {
        let r = http::request("GET", &s.url(path), &[("Accept", OCI_ACCEPT)]).await;
        assert_eq!((r.status, r.error_code().as_str()), (404, "NAME_UNKNOWN"), "GET {path}: {}", body_text(&r));
    }
}

#[tokio::test]
async fn traversal_names_are_refused_with_a_client_error() {
    let s = Setup::start();
    let paths = [
        "/v2/..%2f..%2fetc/manifests/x",
        "/v2/up/..%2f..%2fetc/passwd/manifests/x",
        "/v2/up/../../etc/manifests/x",
        "/v2/up/team/..%2F..%2F..%2Fetc/tags/list",
        "/v2/up/team/tool/manifests/..%2f..%2fx",
        "/v2/up/team/tool/blobs/sha256:..%2f..%2f..%2fetc%2fpasswd",
        "/v2/up/team/tool/blobs/..%2f..%2fstorage",
    ];
    for path in paths {
        let r = http::get(&s.url(path)).await;
        assert!((400..500).contains(&r.status), "GET {path}: want 4xx, got {} {}", r.status, body_text(&r));
    }
    assert_eq!(http::get(&s.url("/v2/")).await.status, 200, "wharf still answers");
}

/// Without users nobody may push or delete: an anonymous client is
/// challenged (401 with the scope it would need), before anything looks at
/// the repository, so a pull-through repository and a name no upstream
/// serves answer alike. (A signed-in user with push rights gets 403
/// "read-only" here: tests/e2e/auth.rs.)
#[tokio::test]
async fn anonymous_pushes_and_deletes_are_challenged() {
    let s = Setup::start();
    let digest = &s.image.manifest.digest;
    let layer = &s.image.layers[0].digest;
    let requests = [
        ("PUT", "/v2/up/team/tool/manifests/2".to_owned(), "push"),
        ("DELETE", format!("/v2/up/team/tool/manifests/{digest}"), "delete"),
        ("POST", "/v2/up/team/tool/blobs/uploads/".to_owned(), "push"),
        ("DELETE", format!("/v2/up/team/tool/blobs/{layer}"), "delete"),
        ("POST", "/v2/elsewhere/x/blobs/uploads/".to_owned(), "push"),
    ];
    for (method, path, action) in requests {
        let r = http::request(method, &s.url(&path), &[("Content-Type", MANIFEST_MEDIA_TYPE)]).await;
        assert_eq!((r.status, r.error_code().as_str()), (401, "UNAUTHORIZED"), "{method} {path}: {}", body_text(&r));
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer realm=\"http://") && challenge.contains(&format!(":{action}\"")),
            "{method} {path}: {challenge}"
        );
    }
    // Refused pushes changed nothing.
    assert_eq!(s.get_manifest("2").await.body, s.image.manifest.bytes);
}

#[tokio::test]
async fn tags_list_pages_with_n_and_a_link_to_the_next_page() {
    let s = Setup::start();
    for tag in ["1", "2", "3"] {
        assert_eq!(s.get_manifest(tag).await.status, 200, "pull tag {tag}");
    }
    let mut tags = Vec::new();
    let mut next = Some("/v2/up/team/tool/tags/list?n=1".to_owned());
    while let Some(path) = next.take() {
        assert!(tags.len() < 3, "more pages than tags; last link {path}");
        let r = http::get(&s.url(&path)).await;
        assert_eq!(r.status, 200, "GET {path}: {}", body_text(&r));
        let page: Vec<String> = serde_json::from_value(r.json()["tags"].clone()).expect("tags is a list of strings");
        assert_eq!(page.len(), 1, "GET {path}: n=1 gave {page:?}");
        tags.extend(page);
        next = r.header("Link").map(|link| {
            assert!(link.ends_with("rel=\"next\""), "Link {link:?}");
            link.split(['<', '>']).nth(1).expect("Link <url>").to_owned()
        });
    }
    assert_eq!(tags, ["1", "2", "3"]);
}

#[tokio::test]
async fn catalog_lists_the_pulled_repositories() {
    let s = Setup::start();
    assert_eq!(s.get_manifest("1").await.status, 200);
    // Pulls are recorded in the background, within moments.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = http::get(&s.url("/v2/_catalog")).await;
        assert_eq!(r.status, 200, "{}", body_text(&r));
        let repositories: Vec<String> =
            serde_json::from_value(r.json()["repositories"].clone()).expect("repositories is a list of strings");
        if repositories.iter().any(|n| n == "up/team/tool") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "catalog {repositories:?} still lacks up/team/tool");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
