//! Pushing into wharf: skopeo copies an image in and pulls it back, raw
//! HTTP drives chunked, monolithic and mounted uploads, an upload survives
//! a restart, referrers, deletes, the versions each push makes, a 1 GiB
//! upload with flat memory, and pull-through names refusing pushes.

use std::convert::Infallible;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::StreamBody;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::clients::Clients;
use crate::http::{self, Response};
use crate::images::{self, sha256_digest, sha512_digest, Image};
use crate::wharf::{write_config, UpstreamEntry, Wharf};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";

/// The user every push here is made as: may pull, push and delete
/// anywhere, and use the admin API.
pub(crate) const PUSHER: &str = "pusher:pusher-pass";

/// A wharf with one upstream, `up`, that is never contacted: pushes to
/// `up/...` must be refused before any connection. Basic credentials are
/// accepted straight on `/v2/`, so raw requests need no token dance.
fn start(dir: &std::path::Path) -> Wharf {
    start_with(dir, UpstreamEntry::new("up", "http://127.0.0.1:9"))
}

pub(crate) fn start_with(dir: &std::path::Path, upstream: UpstreamEntry) -> Wharf {
    start_with_upstreams(dir, &[upstream])
}

/// [`start_with`] for any number of upstreams: none is a node that reaches
/// no registry.
pub(crate) fn start_with_upstreams(dir: &std::path::Path, upstreams: &[UpstreamEntry]) -> Wharf {
    let config = write_config(dir, upstreams);
    let mut toml = std::fs::read_to_string(&config).expect("read config");
    toml.push_str(&format!(
        "\n[auth]\nbasic = true\n\n[[auth.user]]\nname = \"pusher\"\npassword_hash = {:?}\nadmin = true\n\
         \n[[auth.rule]]\nusers = [\"pusher\"]\nrepositories = [\"*\"]\nactions = [\"pull\", \"push\", \"delete\"]\n",
        crate::auth::hash_password("pusher-pass")
    ));
    std::fs::write(&config, toml).expect("write config");
    Wharf::start_with_config(&config)
}

pub(crate) fn authorization() -> String {
    crate::auth::basic(PUSHER.split_once(':').expect("user:password"))
}

/// `headers` and the pusher's credentials.
fn signed_in<'a>(headers: &[(&'a str, &'a str)], auth: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut all = headers.to_vec();
    all.push(("Authorization", auth));
    all
}

async fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Response {
    let auth = authorization();
    http::request(method, url, &signed_in(headers, &auth)).await
}

async fn request_with_body(method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Response {
    let auth = authorization();
    http::request_with_body(method, url, &signed_in(headers, &auth), body).await
}

async fn request_with_stream<B>(method: &str, url: &str, headers: &[(&str, &str)], body: B) -> Response
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let auth = authorization();
    http::request_with_stream(method, url, &signed_in(headers, &auth), body).await
}

async fn get(url: &str) -> Response {
    request("GET", url, &[]).await
}

fn header_of<'a>(r: &'a Response, name: &str) -> &'a str {
    r.header(name).unwrap_or_else(|| panic!("no {name} header (status {})", r.status))
}

/// Starts an upload session; its Location.
async fn start_upload(w: &Wharf, name: &str) -> String {
    let r = request("POST", &format!("{}/v2/{name}/blobs/uploads/", w.url()), &[]).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(header_of(&r, "range"), "0-0");
    let location = header_of(&r, "location").to_owned();
    assert!(location.starts_with(&format!("/v2/{name}/blobs/uploads/")), "{location}");
    assert_eq!(location.rsplit('/').next(), r.header("docker-upload-uuid"));
    location
}

async fn patch(w: &Wharf, location: &str, start: usize, bytes: &[u8]) -> Response {
    let range = format!("{start}-{}", start + bytes.len() - 1);
    request_with_body(
        "PATCH",
        &format!("{}{location}", w.url()),
        &[("content-range", &range), ("content-type", "application/octet-stream")],
        bytes.to_vec(),
    )
    .await
}

/// Uploads `bytes` in one POST; its digest.
pub(crate) async fn upload_monolithic(w: &Wharf, name: &str, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let url = format!("{}/v2/{name}/blobs/uploads/?digest={digest}", w.url());
    let r = request_with_body("POST", &url, &[("content-type", "application/octet-stream")], bytes.to_vec()).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(header_of(&r, "location"), format!("/v2/{name}/blobs/{digest}"));
    assert_eq!(header_of(&r, "docker-content-digest"), digest);
    digest
}

pub(crate) async fn put_manifest(w: &Wharf, name: &str, reference: &str, media_type: &str, bytes: &[u8]) -> Response {
    let url = format!("{}/v2/{name}/manifests/{reference}", w.url());
    request_with_body("PUT", &url, &[("content-type", media_type)], bytes.to_vec()).await
}

async fn admin_json(w: &Wharf, path: &str) -> Value {
    let r = get(&format!("{}/api/v1/{path}", w.admin_url())).await;
    assert_eq!(r.status, 200, "{path}: {}", String::from_utf8_lossy(&r.body));
    r.json()
}

async fn latest_version(w: &Wharf, encoded_name: &str) -> u64 {
    admin_json(w, &format!("repositories/{encoded_name}")).await["latest_version"].as_u64().expect("latest_version")
}

pub(crate) fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": sha256_digest(bytes), "size": bytes.len() })
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_pushes_an_image_into_wharf_and_pulls_the_same_digests_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let w = start(&tmp.path().join("wharf"));
    let image = Image::random(&[300_000, 70_000]);
    images::push(&clients, tmp.path(), &image, &w.host(), "team/app", &["1"], Some(PUSHER));

    // The push made the repository, its distribution, and one version
    // (one manifest PUT), visible at once: versions are written in the
    // request, not in the background.
    let repo = admin_json(&w, "repositories/team%2Fapp").await;
    assert_eq!((repo["kind"].as_str(), repo["latest_version"].as_u64()), (Some("push"), Some(1)));
    let v1 = admin_json(&w, "repositories/team%2Fapp/versions/1").await;
    assert_eq!(v1["content_summary"]["present"], json!({ "tag": 1, "manifest": 1, "blob": 3, "signature": 0 }), "{v1}");
    let dists = admin_json(&w, "distributions").await;
    assert_eq!(dists["results"][0]["base_path"], "team/app");
    assert_eq!(dists["results"][0]["name"], "team.app");

    let dest = tmp.path().join("pulled");
    clients.pull_to_layout(&format!("docker://{}/team/app:1", w.host()), &dest, "1", &[]);
    images::assert_layout_holds_image(&dest, "1", &image);

    // A second tag for the same image is a second version: one more tag.
    images::push(&clients, tmp.path(), &image, &w.host(), "team/app", &["2"], Some(PUSHER));
    assert_eq!(latest_version(&w, "team%2Fapp").await, 2);
    let tags = get(&format!("{}/v2/team/app/tags/list?n=1", w.url())).await;
    assert_eq!(tags.json()["tags"], json!(["1"]));
    assert!(header_of(&tags, "link").contains("last=1"));
    let catalog = get(&format!("{}/v2/_catalog", w.url())).await.json();
    assert_eq!(catalog["repositories"], json!(["team/app"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_monolithic_and_mounted_uploads_and_their_failures() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let w = start(&tmp.path().join("wharf"));
    let data = images::random_bytes(300_000);
    let digest = sha256_digest(&data);

    // Chunked: several PATCHes, each starting where the upload stands.
    let location = start_upload(&w, "team/chunks").await;
    let r = patch(&w, &location, 0, &data[..100_000]).await;
    assert_eq!((r.status, header_of(&r, "range")), (202, "0-99999"));
    assert_eq!(header_of(&r, "location"), location);
    let r = patch(&w, &location, 100_000, &data[100_000..250_000]).await;
    assert_eq!((r.status, header_of(&r, "range")), (202, "0-249999"));
    // Out of order: 416 RANGE_INVALID, and the upload is as it was.
    let r = patch(&w, &location, 100_000, &data[100_000..250_000]).await;
    assert_eq!((r.status, r.error_code().as_str()), (416, "RANGE_INVALID"));
    let r = request("GET", &format!("{}{location}", w.url()), &[]).await;
    assert_eq!((r.status, header_of(&r, "range")), (204, "0-249999"));
    // A PATCH without Content-Range is a streamed append.
    let url = format!("{}{location}", w.url());
    let r = request_with_body("PATCH", &url, &[], data[250_000..290_000].to_vec()).await;
    assert_eq!((r.status, header_of(&r, "range")), (202, "0-289999"));
    // The last chunk comes with the PUT.
    let r = request_with_body("PUT", &format!("{url}?digest={digest}"), &[], data[290_000..].to_vec()).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(header_of(&r, "location"), format!("/v2/team/chunks/blobs/{digest}"));
    assert_eq!(header_of(&r, "docker-content-digest"), digest);
    let blob = get(&format!("{}/v2/team/chunks/blobs/{digest}", w.url())).await;
    assert_eq!((blob.status, blob.body.as_ref()), (200, data.as_slice()));
    let r = request("GET", &url, &[]).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "BLOB_UPLOAD_UNKNOWN"), "the session ended");

    // Monolithic, and in sha512.
    let other = images::random_bytes(5_000);
    upload_monolithic(&w, "team/mono", &other).await;
    let d512 = sha512_digest(&other);
    let url = format!("{}/v2/team/mono/blobs/uploads/?digest={d512}", w.url());
    assert_eq!(request_with_body("POST", &url, &[], other.clone()).await.status, 201);
    assert_eq!(request("HEAD", &format!("{}/v2/team/mono/blobs/{d512}", w.url()), &[]).await.status, 200);

    // A wrong digest: DIGEST_INVALID and nothing stored under either digest.
    let location = start_upload(&w, "team/mono").await;
    let wrong = sha256_digest(b"not these bytes");
    let url = format!("{}{location}?digest={wrong}", w.url());
    let r = request_with_body("PUT", &url, &[], b"these bytes".to_vec()).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
    for d in [wrong, sha256_digest(b"these bytes")] {
        assert_eq!(request("HEAD", &format!("{}/v2/team/mono/blobs/{d}", w.url()), &[]).await.status, 404);
    }

    // Mounting: from a repository that holds the blob, 201; otherwise a
    // session (202).
    let mount = |from: &str, d: &str| format!("{}/v2/team/mounted/blobs/uploads/?mount={d}&from={from}", w.url());
    let r = request("POST", &mount("team/chunks", &digest), &[]).await;
    assert_eq!((r.status, header_of(&r, "location")), (201, format!("/v2/team/mounted/blobs/{digest}").as_str()));
    assert_eq!(request("HEAD", &format!("{}/v2/team/mounted/blobs/{digest}", w.url()), &[]).await.status, 200);
    let r = request("POST", &mount("team/mono", &digest), &[]).await;
    assert_eq!(r.status, 202, "team/mono does not hold it");
    assert!(header_of(&r, "location").starts_with("/v2/team/mounted/blobs/uploads/"));

    // Cancelling a session.
    let location = start_upload(&w, "team/mono").await;
    assert_eq!(request("DELETE", &format!("{}{location}", w.url()), &[]).await.status, 204);
    let r = patch(&w, &location, 0, b"late").await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "BLOB_UPLOAD_UNKNOWN"));
    let r = request("GET", &format!("{}/v2/team/mono/blobs/uploads/not-a-session", w.url()), &[]).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "BLOB_UPLOAD_UNKNOWN"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_session_survives_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let w = start(&tmp.path().join("wharf"));
    let data = images::random_bytes(200_000);
    let location = start_upload(&w, "team/resume").await;
    assert_eq!(patch(&w, &location, 0, &data[..120_000]).await.status, 202);
    let config = w.config_path.clone();
    w.stop();

    let w = Wharf::start_with_config(&config);
    let r = request("GET", &format!("{}{location}", w.url()), &[]).await;
    assert_eq!((r.status, header_of(&r, "range")), (204, "0-119999"));
    assert_eq!(patch(&w, &location, 120_000, &data[120_000..]).await.status, 202);
    let digest = sha256_digest(&data);
    let r = request("PUT", &format!("{}{location}?digest={digest}", w.url()), &[]).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let blob = get(&format!("{}/v2/team/resume/blobs/{digest}", w.url())).await;
    assert_eq!((blob.status, blob.body.len()), (200, data.len()));
}

#[tokio::test(flavor = "multi_thread")]
async fn manifests_with_a_subject_are_listed_as_referrers_and_deletes_make_versions() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let w = start(&tmp.path().join("wharf"));
    let name = "team/refs";
    let layer = images::random_bytes(10_000);
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let image = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
    });
    let image = serde_json::to_vec(&image).expect("json");
    let image_digest = sha256_digest(&image);

    // A manifest whose blobs were not pushed is refused.
    let r = put_manifest(&w, name, "v1", OCI_MANIFEST, &image).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "MANIFEST_BLOB_UNKNOWN"));
    upload_monolithic(&w, name, &layer).await;
    upload_monolithic(&w, name, &config).await;
    // Content-Type must match a declared mediaType; a digest reference
    // must match the body.
    let r = put_manifest(&w, name, "v1", "application/vnd.docker.distribution.manifest.v2+json", &image).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "MANIFEST_INVALID"));
    let r = put_manifest(&w, name, &sha256_digest(b"other"), OCI_MANIFEST, &image).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
    let r = put_manifest(&w, name, "v1", OCI_MANIFEST, &image).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(header_of(&r, "location"), format!("/v2/{name}/manifests/{image_digest}"));
    assert_eq!(header_of(&r, "docker-content-digest"), image_digest);
    assert!(r.header("oci-subject").is_none());
    assert_eq!(latest_version(&w, "team%2Frefs").await, 1);

    // Two referrers of different artifact types, and one whose subject
    // does not exist (allowed).
    let empty = b"{}".to_vec();
    upload_monolithic(&w, name, &empty).await;
    let referrer = |artifact_type: &str, subject: &str, note: &str| {
        let m = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": descriptor(EMPTY_CONFIG, &empty),
            "layers": [descriptor(EMPTY_CONFIG, &empty)],
            "subject": { "mediaType": OCI_MANIFEST, "digest": subject, "size": 100 },
            "annotations": { "note": note },
        });
        serde_json::to_vec(&m).expect("json")
    };
    let sbom = referrer("application/vnd.example.sbom", &image_digest, "sbom");
    let sig = referrer("application/vnd.example.sig", &image_digest, "sig");
    let dangling_subject = sha256_digest(b"never pushed");
    let orphan = referrer("application/vnd.example.sig", &dangling_subject, "orphan");
    for m in [&sbom, &sig, &orphan] {
        let r = put_manifest(&w, name, &sha256_digest(m), OCI_MANIFEST, m).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let subject: Value = serde_json::from_slice::<Value>(m).expect("json")["subject"]["digest"].clone();
        assert_eq!(Some(header_of(&r, "oci-subject")), subject.as_str());
    }
    assert_eq!(latest_version(&w, "team%2Frefs").await, 4);

    let listing = get(&format!("{}/v2/{name}/referrers/{image_digest}", w.url())).await;
    assert_eq!(header_of(&listing, "content-type"), "application/vnd.oci.image.index.v1+json");
    let all = listing.json()["manifests"].as_array().cloned().expect("manifests");
    assert_eq!(all.len(), 2);
    assert!(all.iter().any(|m| m["digest"] == sha256_digest(&sbom) && m["annotations"]["note"] == "sbom"));
    let url = format!("{}/v2/{name}/referrers/{image_digest}?artifactType=application/vnd.example.sig", w.url());
    let filtered = get(&url).await;
    assert_eq!(header_of(&filtered, "oci-filters-applied"), "artifactType");
    let sigs = filtered.json()["manifests"].as_array().cloned().expect("manifests");
    assert_eq!((sigs.len(), sigs[0]["digest"].as_str()), (1, Some(sha256_digest(&sig).as_str())));
    let orphans = get(&format!("{}/v2/{name}/referrers/{dangling_subject}", w.url())).await.json();
    assert_eq!(orphans["manifests"].as_array().map(Vec::len), Some(1));

    // Deletes: a tag (the manifest stays), a manifest (its other tags go
    // with it), a blob; one version each.
    assert_eq!(put_manifest(&w, name, "v2", OCI_MANIFEST, &image).await.status, 201);
    assert_eq!(latest_version(&w, "team%2Frefs").await, 5);
    let manifests = |r: &str| format!("{}/v2/{name}/manifests/{r}", w.url());
    assert_eq!(request("DELETE", &manifests("v1"), &[]).await.status, 202);
    assert_eq!(get(&manifests("v1")).await.status, 404);
    assert_eq!(get(&manifests("v2")).await.status, 200);
    assert_eq!(latest_version(&w, "team%2Frefs").await, 6);
    assert_eq!(request("DELETE", &manifests(&image_digest), &[]).await.status, 202);
    assert_eq!(get(&manifests(&image_digest)).await.status, 404);
    assert_eq!(get(&manifests("v2")).await.status, 404, "its tag went with it");
    assert_eq!(latest_version(&w, "team%2Frefs").await, 7);
    let blob = format!("{}/v2/{name}/blobs/{}", w.url(), sha256_digest(&layer));
    assert_eq!(request("DELETE", &blob, &[]).await.status, 202);
    assert_eq!(request("HEAD", &blob, &[]).await.status, 404);
    assert_eq!(latest_version(&w, "team%2Frefs").await, 8);
    let r = request("DELETE", &blob, &[]).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "BLOB_UNKNOWN"));
    let r = request("DELETE", &manifests("v1"), &[]).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "MANIFEST_UNKNOWN"));
    // Older versions keep what they held.
    let v5 = admin_json(&w, "repositories/team%2Frefs/versions/5/tags").await;
    assert_eq!(v5["count"], 2, "{v5}");
}

/// A pushed manifest of a known type must follow the image spec, and any
/// manifest's JSON nesting is bounded; each refusal says what is wrong.
/// Before, a manifest with no config or no layers, or a 200,000-deep array
/// under an unknown key, was stored (201).
#[tokio::test(flavor = "multi_thread")]
async fn manifests_breaking_the_image_spec_are_refused_and_valid_ones_stored() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let w = start(&tmp.path().join("wharf"));
    let name = "team/spec";
    let (config, layer) = (br#"{"architecture":"amd64","os":"linux"}"#.to_vec(), images::random_bytes(1000));
    for blob in [&config, &layer, &b"{}".to_vec()] {
        upload_monolithic(&w, name, blob).await;
    }
    let image = |change: &dyn Fn(&mut Value)| {
        let mut m = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", &layer)],
        });
        change(&mut m);
        serde_json::to_vec(&m).expect("json")
    };
    let without = |field: &'static str| move |m: &mut Value| drop(m.as_object_mut().expect("object").remove(field));
    let deep = |media_type: &str| {
        let depth = 200_000;
        format!(r#"{{"schemaVersion":2,"mediaType":"{media_type}","x":{}{}}}"#, "[".repeat(depth), "]".repeat(depth)).into_bytes()
    };
    let artifact_type = "application/vnd.example.artifact+json";
    let refused = [
        ("no config", image(&without("config")), "missing field `config`"),
        ("no layers", image(&without("layers")), "missing field `layers`"),
        ("a bad layer digest", image(&|m| m["layers"][0]["digest"] = "sha256:xyz".into()), "layers[0].digest"),
        ("a negative size", image(&|m| m["layers"][0]["size"] = (-5).into()), "layers[0].size: invalid value: integer `-5`"),
        (
            "a descriptor without mediaType",
            image(&|m| drop(m["config"].as_object_mut().expect("object").remove("mediaType"))),
            "config: missing field `mediaType`",
        ),
        ("deep nesting", deep(OCI_MANIFEST), "nests deeper than 64 levels"),
    ];
    for (what, bytes, says) in &refused {
        let r = put_manifest(&w, name, "bad", OCI_MANIFEST, bytes).await;
        assert_eq!((r.status, r.error_code().as_str()), (400, "MANIFEST_INVALID"), "{what}: {}", String::from_utf8_lossy(&r.body));
        let message = r.json()["errors"][0]["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains(says), "{what}: message {message:?} does not say {says:?}");
    }
    // Nesting is bounded for artifacts too, whose shape is not checked.
    let r = put_manifest(&w, name, "bad", artifact_type, &deep(artifact_type)).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "MANIFEST_INVALID"), "a deep artifact");

    // Valid: an image; an artifact with artifactType and the empty config
    // (what the conformance suite pushes); an index of the image; an
    // unknown artifact media type.
    let good = image(&|_| ());
    let r = put_manifest(&w, name, "image", OCI_MANIFEST, &good).await;
    assert_eq!(r.status, 201, "image: {}", String::from_utf8_lossy(&r.body));
    let artifact = image(&|m| {
        m["artifactType"] = artifact_type.into();
        m["config"] = descriptor(EMPTY_CONFIG, b"{}");
    });
    let r = put_manifest(&w, name, "artifact", OCI_MANIFEST, &artifact).await;
    assert_eq!(r.status, 201, "artifact: {}", String::from_utf8_lossy(&r.body));
    let oci_index = "application/vnd.oci.image.index.v1+json";
    let index = json!({ "schemaVersion": 2, "mediaType": oci_index, "manifests": [descriptor(OCI_MANIFEST, &good)] });
    let r = put_manifest(&w, name, "index", oci_index, &serde_json::to_vec(&index).expect("json")).await;
    assert_eq!(r.status, 201, "index: {}", String::from_utf8_lossy(&r.body));
    let other = json!({ "schemaVersion": 2, "mediaType": artifact_type, "blobs": [descriptor("text/plain", &layer)] });
    let r = put_manifest(&w, name, "other", artifact_type, &serde_json::to_vec(&other).expect("json")).await;
    assert_eq!(r.status, 201, "other: {}", String::from_utf8_lossy(&r.body));

    // The refused pushes left nothing under their tag.
    let r = get(&format!("{}/v2/{name}/manifests/bad", w.url())).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "MANIFEST_UNKNOWN"));
    let r = get(&format!("{}/v2/{name}/manifests/image", w.url())).await;
    assert_eq!((r.status, r.body.as_ref()), (200, good.as_slice()));
}

#[tokio::test(flavor = "multi_thread")]
async fn pushes_into_pull_through_names_are_denied() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let w = start(&tmp.path().join("wharf"));
    let digest = sha256_digest(b"x");
    for (method, path) in [
        ("POST", "/v2/up/team/app/blobs/uploads/".to_owned()),
        ("PUT", "/v2/up/team/app/manifests/latest".to_owned()),
        ("DELETE", format!("/v2/up/team/app/blobs/{digest}")),
        ("PATCH", "/v2/up/team/app/blobs/uploads/00000000-0000-4000-8000-000000000000".to_owned()),
    ] {
        let r = request_with_body(method, &format!("{}{path}", w.url()), &[], b"{}".to_vec()).await;
        assert_eq!((r.status, r.error_code().as_str()), (403, "DENIED"), "{method} {path}");
    }
    let repos = admin_json(&w, "repositories").await;
    assert_eq!(repos["count"], 0, "nothing was created: {repos}");
}

/// Uploads `block` repeated `times` as one blob, in PATCHes streamed from
/// the one block (the test never holds the blob): its digest.
pub(crate) async fn upload_repeated(w: &Wharf, name: &str, block: &Bytes, times: usize) -> String {
    const PER_PATCH: usize = 256;
    let mut hasher = Sha256::new();
    for _ in 0..times {
        hasher.update(block);
    }
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    let location = start_upload(w, name).await;
    let mut sent = 0;
    while sent < times {
        let n = PER_PATCH.min(times - sent);
        let start = sent * block.len();
        let range = format!("{start}-{}", start + n * block.len() - 1);
        let frames = std::iter::repeat_n(block.clone(), n).map(|b| Ok::<_, Infallible>(Frame::data(b)));
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let r = request_with_stream("PATCH", &format!("{}{location}", w.url()), &[("content-range", &range)], body).await;
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        sent += n;
    }
    let r = request("PUT", &format!("{}{location}?digest={digest}", w.url()), &[]).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    digest
}

/// wharf's peak resident memory, from `/proc/<pid>/status`.
pub(crate) fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_gib_upload_streams_through_flat_memory() {
    const BLOCK: usize = 1 << 20;
    const BLOCKS: usize = 1024;
    let tmp = tempfile::tempdir().expect("tempdir");
    let w = start(&tmp.path().join("wharf"));
    // One random MiB, sent 1024 times: the test holds 1 MiB, never 1 GiB.
    let block = Bytes::from(images::random_bytes(BLOCK));
    let digest = upload_repeated(&w, "team/big", &block, BLOCKS).await;
    let head = request("HEAD", &format!("{}/v2/team/big/blobs/{digest}", w.url()), &[]).await;
    assert_eq!(header_of(&head, "content-length"), (BLOCK * BLOCKS).to_string());

    let peak = peak_rss_kib(w.pid());
    assert!(peak < 100 * 1024, "wharf's peak RSS was {peak} KiB for a 1 GiB upload");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_works_while_the_default_upstream_is_unreachable_and_anonymous_pushes_are_challenged() {
    // Every unprefixed name routes to the default upstream for reads; the
    // client's HEAD probes before uploading must not depend on reaching it.
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let w = start_with(&tmp.path().join("wharf"), UpstreamEntry::new("up", "http://127.0.0.1:9").default());
    let image = Image::random(&[50_000]);

    let layer = &image.layers[0].digest;
    let anonymous = http::request("HEAD", &format!("{}/v2/team/edge/blobs/{layer}", w.url()), &[]).await;
    assert_eq!(anonymous.status, 404, "an uncached blob whose upstream cannot be asked is unknown, not a gateway error");
    let anonymous = http::request("POST", &format!("{}/v2/team/edge/blobs/uploads/", w.url()), &[]).await;
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.header("www-authenticate").is_some_and(|c| c.contains("team/edge:push")), "{:?}", anonymous.header("www-authenticate"));

    images::push(&clients, tmp.path(), &image, &w.host(), "team/edge", &["1"], Some(PUSHER));
    let dest = tmp.path().join("pulled");
    clients.pull_to_layout(&format!("docker://{}/team/edge:1", w.host()), &dest, "1", &[]);
    images::assert_layout_holds_image(&dest, "1", &image);
    assert_eq!(latest_version(&w, "team%2Fedge").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_built_on_a_pulled_through_base_pushes_its_shared_layers_too() {
    // The base image's layer is in wharf's cache (pulled through the
    // default upstream); the pushed image shares it. The client's probe must
    // not be told "present" from the cache, or it would skip the upload and
    // its manifest would name a blob the push repository does not hold.
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = crate::registry::Registry::start(&tmp.path().join("upstream"));
    let base = Image::random(&[40_000]);
    images::push(&clients, tmp.path(), &base, &upstream.host(), "library/base", &["1"], None);
    let w = start_with(&tmp.path().join("wharf"), UpstreamEntry::new("up", &upstream.url()).default());
    let pulled = tmp.path().join("base");
    clients.pull_to_layout(&format!("docker://{}/library/base:1", w.host()), &pulled, "1", &[]);

    let app = Image::random_on(&base, &[20_000]);
    images::push(&clients, tmp.path(), &app, &w.host(), "team/built", &["1"], Some(PUSHER));
    let dest = tmp.path().join("pulled");
    clients.pull_to_layout(&format!("docker://{}/team/built:1", w.host()), &dest, "1", &[]);
    images::assert_layout_holds_image(&dest, "1", &app);
    let v1 = admin_json(&w, "repositories/team%2Fbuilt/versions/1").await;
    assert_eq!(v1["content_summary"]["present"], json!({ "tag": 1, "manifest": 1, "blob": 3, "signature": 0 }), "{v1}");
}

#[tokio::test(flavor = "multi_thread")]
async fn podman_logs_in_pushes_and_another_podman_pulls_the_image_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // podman needs the image in its own storage first: pull it from a
    // plain registry, then tag it for wharf.
    let source = crate::registry::Registry::start(&tmp.path().join("source"));
    let image = Image::random(&[60_000]);
    images::push(&Clients::new(&tmp.path().join("seeder")), tmp.path(), &image, &source.host(), "seed/app", &["1"], None);
    let w = start(&tmp.path().join("wharf"));
    let host = w.host();
    let pusher = Clients::new(&tmp.path().join("pusher"));
    pusher.podman_ok(&["pull", "--quiet", "--tls-verify=false", &format!("{}/seed/app:1", source.host())]);
    pusher.podman_ok(&["tag", &format!("{}/seed/app:1", source.host()), &format!("{host}/team/app:1")]);

    let anonymous = pusher.podman(&["push", "--tls-verify=false", &format!("{host}/team/app:1")]);
    assert!(!anonymous.status.success(), "an anonymous podman push succeeded");
    let (user, password) = PUSHER.split_once(':').expect("user:password");
    pusher.podman_ok(&["login", "--tls-verify=false", "-u", user, "-p", password, &host]);
    pusher.podman_ok(&["push", "--quiet", "--tls-verify=false", &format!("{host}/team/app:1")]);

    let puller = Clients::new(&tmp.path().join("puller"));
    puller.podman_ok(&["pull", "--quiet", "--tls-verify=false", &format!("{host}/team/app:1")]);
    let inspect = puller.podman_ok(&["image", "inspect", "--format", "{{.Id}}", &format!("{host}/team/app:1")]);
    let id = String::from_utf8(inspect).expect("utf-8 id");
    assert_eq!(format!("sha256:{}", id.trim()), image.config.digest, "the image ID is its config's digest");
    let versions = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["--admin", &w.admin_url(), "--json", "repository", "versions", "--name", "team/app"])
        .env("WHARF_ADMIN_USER", user)
        .env("WHARF_ADMIN_PASSWORD", password)
        .output()
        .expect("run wharf repository versions");
    assert!(versions.status.success(), "{}", String::from_utf8_lossy(&versions.stderr));
    let versions: Value = serde_json::from_slice(&versions.stdout).expect("versions JSON");
    assert_eq!(versions["results"][0]["number"], 1, "{versions}");
    assert_eq!(versions["results"][0]["content_summary"]["added"]["manifest"], 1, "{versions}");
}

#[tokio::test(flavor = "multi_thread")]
async fn permission_matrix_for_pull_push_delete_and_the_admin_api() {
    // Users: reader (pull on team/*), writer (pull, push on team/*),
    // keeper (pull, push, delete on team/*), ops (admin role, no
    // repository rule); and anonymous.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("wharf");
    let config = write_config(&dir, &[UpstreamEntry::new("up", "http://127.0.0.1:9")]);
    let mut toml = std::fs::read_to_string(&config).expect("read config");
    toml.push_str("\n[auth]\nbasic = true\n");
    for (name, admin) in [("reader", false), ("writer", false), ("keeper", false), ("ops", true)] {
        toml.push_str(&format!(
            "\n[[auth.user]]\nname = {name:?}\npassword_hash = {:?}\nadmin = {admin}\n",
            crate::auth::hash_password(&format!("{name}-pass"))
        ));
    }
    for (user, actions) in [("reader", "\"pull\""), ("writer", "\"pull\", \"push\""), ("keeper", "\"pull\", \"push\", \"delete\"")] {
        toml.push_str(&format!("\n[[auth.rule]]\nusers = [{user:?}]\nrepositories = [\"team/*\"]\nactions = [{actions}]\n"));
    }
    std::fs::write(&config, toml).expect("write config");
    let w = Wharf::start_with_config(&config);
    let as_user = |name: &str| crate::auth::basic((name, &format!("{name}-pass")));

    // keeper makes team/app:1 (a config-only manifest is enough).
    let keeper = as_user("keeper");
    let config_blob = b"{}".to_vec();
    let digest = sha256_digest(&config_blob);
    let r = http::request_with_body(
        "POST",
        &format!("{}/v2/team/app/blobs/uploads/?digest={digest}", w.url()),
        &[("Authorization", keeper.as_str()), ("content-type", "application/octet-stream")],
        config_blob.clone(),
    )
    .await;
    assert_eq!(r.status, 201, "keeper uploads: {}", String::from_utf8_lossy(&r.body));
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor(EMPTY_CONFIG, &config_blob), "layers": []
    }))
    .expect("manifest");
    let r = http::request_with_body(
        "PUT",
        &format!("{}/v2/team/app/manifests/1", w.url()),
        &[("Authorization", keeper.as_str()), ("content-type", OCI_MANIFEST)],
        manifest,
    )
    .await;
    assert_eq!(r.status, 201, "keeper pushes: {}", String::from_utf8_lossy(&r.body));

    let pull = format!("{}/v2/team/app/manifests/1", w.url());
    let push = format!("{}/v2/team/app/blobs/uploads/", w.url());
    let delete = format!("{}/v2/team/app/manifests/{}", w.url(), sha256_digest(b"no such manifest"));
    let admin = format!("{}/api/v1/repositories", w.admin_url());
    // (who, pull, push, delete, admin API): expected statuses. A push
    // repository's distribution is public, so anyone pulls; a delete of a
    // manifest that does not exist is 404 once allowed.
    let matrix: [(&str, Option<String>, [u16; 4]); 5] = [
        ("anonymous", None, [200, 401, 401, 401]),
        ("reader", Some(as_user("reader")), [200, 403, 403, 403]),
        ("writer", Some(as_user("writer")), [200, 202, 403, 403]),
        ("keeper", Some(as_user("keeper")), [200, 202, 404, 403]),
        ("ops", Some(as_user("ops")), [200, 403, 403, 200]),
    ];
    for (who, auth, expected) in matrix {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let mut got = [0u16; 4];
        got[0] = http::request("GET", &pull, &[headers.clone(), vec![("Accept", OCI_MANIFEST)]].concat()).await.status;
        got[1] = http::request("POST", &push, &headers).await.status;
        got[2] = http::request("DELETE", &delete, &headers).await.status;
        got[3] = http::request("GET", &admin, &headers).await.status;
        assert_eq!(got, expected, "{who}: [pull, push, delete, admin API]");
    }
}
