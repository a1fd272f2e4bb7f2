//! Content is stored once per digest; access never follows the digest. A
//! private push repository's bytes must not come out through any other
//! name: a pull-through name (default, prefixed, `?ns=`), a mount, another
//! distribution. A pull-through name gets stored bytes only when its
//! upstream says its repository has them, and then without fetching them
//! again. Also: an uploaded or deleted blob is seen at once.

use serde_json::json;

use crate::clients::Clients;
use crate::http::{self, Response};
use crate::images::{self, Image};
use crate::registry::{AccessLine, Registry};
use crate::wharf::{write_config, UpstreamEntry, Wharf};

const PUSHER: (&str, &str) = ("pusher", "pusher-pass");
const OUTSIDER: (&str, &str) = ("outsider", "outsider-pass");
const ACCEPT: (&str, &str) = ("Accept", "application/vnd.oci.image.manifest.v1+json");

/// wharf in front of `upstream` (`up`, the default, public), with a
/// pusher (admin; pull, push and delete on `team/*`) and an outsider who
/// may push and pull only under `other/*`.
fn start(dir: &std::path::Path, upstream: &Registry) -> Wharf {
    let config = write_config(dir, &[UpstreamEntry::new("up", &upstream.url()).default()]);
    let mut toml = std::fs::read_to_string(&config).expect("read config");
    toml.push_str("\n[auth]\nbasic = true\n");
    for ((name, password), admin) in [(PUSHER, true), (OUTSIDER, false)] {
        toml.push_str(&format!(
            "\n[[auth.user]]\nname = {name:?}\npassword_hash = {:?}\nadmin = {admin}\n",
            crate::auth::hash_password(password)
        ));
    }
    toml.push_str(
        "\n[[auth.rule]]\nusers = [\"pusher\"]\nrepositories = [\"team/*\"]\nactions = [\"pull\", \"push\", \"delete\"]\n\
         \n[[auth.rule]]\nusers = [\"outsider\"]\nrepositories = [\"other/*\"]\nactions = [\"pull\", \"push\"]\n",
    );
    std::fs::write(&config, toml).expect("write config");
    Wharf::start_with_config(&config)
}

fn text(r: &Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

async fn as_user(method: &str, url: &str, who: (&str, &str)) -> Response {
    let auth = crate::auth::basic(who);
    http::request(method, url, &[ACCEPT, ("Authorization", &auth)]).await
}

/// Upstream requests for `digest` whose path starts with `prefix`, once
/// the registry has logged everything sent so far.
fn upstream_requests(upstream: &Registry, prefix: &str, digest: &str) -> Vec<AccessLine> {
    upstream.access_log().into_iter().filter(|l| l.path.starts_with(prefix) && l.path.contains(digest)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_image_never_leaks_by_digest_through_another_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let wharf = start(&tmp.path().join("wharf"), &upstream);
    let clients = Clients::new(&tmp.path().join("clients"));
    let image = Image::random(&[40_000, 70_000]);
    let creds = format!("{}:{}", PUSHER.0, PUSHER.1);
    images::push(&clients, tmp.path(), &image, &wharf.host(), "team/secret", &["1"], Some(&creds));
    let patch = http::request_with_body(
        "PATCH",
        &format!("{}/api/v1/distributions/team.secret", wharf.admin_url()),
        &[("Authorization", &crate::auth::basic(PUSHER)), ("Content-Type", "application/json")],
        json!({"private": true}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(patch.status, 200, "{}", text(&patch));

    let url = |path: &str| format!("{}{path}", wharf.url());
    let (layer, config, manifest) = (&image.layers[0].digest, &image.config.digest, &image.manifest.digest);
    // The owner pulls it; anonymous clients are challenged on its name.
    let owned = as_user("GET", &url(&format!("/v2/team/secret/blobs/{layer}")), PUSHER).await;
    assert_eq!(owned.status, 200, "{}", text(&owned));
    let r = http::request("GET", &url(&format!("/v2/team/secret/blobs/{layer}")), &[]).await;
    assert_eq!(r.status, 401, "{}", text(&r));

    // Every other name is answered as the upstream answers it: unknown.
    for (method, path, code) in [
        ("GET", format!("/v2/anything/blobs/{layer}"), "BLOB_UNKNOWN"),
        ("HEAD", format!("/v2/anything/blobs/{layer}"), ""),
        ("GET", format!("/v2/anything/blobs/{config}"), "BLOB_UNKNOWN"),
        ("GET", format!("/v2/up/zzz/blobs/{layer}"), "BLOB_UNKNOWN"),
        ("GET", format!("/v2/zzz/blobs/{layer}?ns=up"), "BLOB_UNKNOWN"),
        ("GET", format!("/v2/anything/manifests/{manifest}"), "MANIFEST_UNKNOWN"),
        ("HEAD", format!("/v2/anything/manifests/{manifest}"), ""),
        ("GET", format!("/v2/up/zzz/manifests/{manifest}"), "MANIFEST_UNKNOWN"),
    ] {
        let r = http::request(method, &url(&path), &[ACCEPT, ("Range", "bytes=0-")]).await;
        assert_eq!(r.status, 404, "{method} {path}: {}", text(&r));
        if !code.is_empty() {
            assert_eq!(r.error_code(), code, "{method} {path}");
        }
        assert!(r.body.len() < 1000, "{method} {path} answered a body of {} bytes", r.body.len());
    }
    // Signed in as someone with no rule on it, the same.
    let r = as_user("GET", &url(&format!("/v2/other/x/blobs/{layer}")), OUTSIDER).await;
    assert_eq!(r.status, 404, "{}", text(&r));
    let r = as_user("GET", &url(&format!("/v2/team/secret/blobs/{layer}")), OUTSIDER).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "DENIED"), "{}", text(&r));

    // Mounts: from the private repository is refused; from a pull-through
    // name that does not hold it, and with no source, it is an ordinary
    // upload session; nothing is mounted.
    let mount = |from: Option<&str>| {
        let q = from.map_or(String::new(), |f| format!("&from={f}"));
        url(&format!("/v2/other/x/blobs/uploads/?mount={layer}{q}"))
    };
    let r = as_user("POST", &mount(Some("team/secret")), OUTSIDER).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "DENIED"), "{}", text(&r));
    for from in [Some("anything"), Some("up/zzz"), None] {
        let r = as_user("POST", &mount(from), OUTSIDER).await;
        assert_eq!(r.status, 202, "mount from {from:?}: {}", text(&r));
    }
    let r = as_user("HEAD", &url(&format!("/v2/other/x/blobs/{layer}")), OUTSIDER).await;
    assert_eq!(r.status, 404);

    // A public distribution of another repository holds none of it.
    let other = Image::random(&[1_000]);
    images::push(&clients, tmp.path(), &other, &wharf.host(), "team/public", &["1"], Some(&creds));
    for path in [format!("/v2/team/public/blobs/{layer}"), format!("/v2/team/public/manifests/{manifest}")] {
        let r = http::request("GET", &url(&path), &[ACCEPT]).await;
        assert_eq!(r.status, 404, "{path}: {}", text(&r));
    }
    // Those answers came from asking the upstream, which has none of it.
    let asked = upstream_requests(&upstream, "/v2/", layer);
    assert!(!asked.is_empty() && asked.iter().all(|l| l.status == 404), "{asked:?}");

    // Once the upstream has the same image, its word lets a pull-through
    // name have the stored bytes: asked with a HEAD, never fetched again.
    images::push(&clients, tmp.path(), &image, &upstream.host(), "pub/img", &["1"], None);
    let gets_before = upstream.blob_gets(layer);
    let r = http::request("GET", &url(&format!("/v2/pub/img/blobs/{layer}")), &[]).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.body, image.layers[0].bytes);
    let asked = upstream_requests(&upstream, "/v2/pub/img/", layer);
    assert!(asked.iter().any(|l| l.method == "HEAD" && l.status == 200), "the upstream was not asked: {asked:?}");
    // skopeo's push of pub/img made no GET of the layer; nor did wharf.
    assert_eq!(upstream.blob_gets(layer), gets_before, "{asked:?}");
    // ...and a second request is answered from what wharf now knows.
    let heads = asked.len();
    let r = http::request("GET", &url(&format!("/v2/pub/img/blobs/{layer}")), &[]).await;
    assert_eq!(r.status, 200);
    let asked = upstream_requests(&upstream, "/v2/pub/img/", layer).len();
    assert_eq!(asked, heads, "a held digest asked the upstream again");
    // Other names are still unknown.
    let r = http::request("GET", &url(&format!("/v2/anything/blobs/{layer}")), &[]).await;
    assert_eq!(r.status, 404, "{}", text(&r));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uploaded_blob_is_there_and_a_deleted_one_gone_at_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let wharf = start(&tmp.path().join("wharf"), &upstream);
    let bytes = images::random_bytes(5_000);
    let digest = images::sha256_digest(&bytes);
    let blob = format!("{}/v2/team/app/blobs/{digest}", wharf.url());
    let auth = crate::auth::basic(PUSHER);
    // Unknown first, so any memory of the answer would be a stale one.
    for method in ["HEAD", "GET"] {
        assert_eq!(as_user(method, &blob, PUSHER).await.status, 404, "{method} before the upload");
    }
    let upload = format!("{}/v2/team/app/blobs/uploads/?digest={digest}", wharf.url());
    let r = http::request_with_body("POST", &upload, &[("Authorization", &auth)], bytes.clone()).await;
    assert_eq!(r.status, 201, "{}", text(&r));
    let r = as_user("GET", &blob, PUSHER).await;
    assert_eq!((r.status, &r.body[..]), (200, &bytes[..]));
    assert_eq!(as_user("HEAD", &blob, PUSHER).await.status, 200);

    let r = as_user("DELETE", &blob, PUSHER).await;
    assert_eq!(r.status, 202, "{}", text(&r));
    for method in ["HEAD", "GET"] {
        assert_eq!(as_user(method, &blob, PUSHER).await.status, 404, "{method} after the delete");
    }
    // Uploaded again, it is back at once.
    let r = http::request_with_body("POST", &upload, &[("Authorization", &auth)], bytes.clone()).await;
    assert_eq!(r.status, 201, "{}", text(&r));
    assert_eq!(as_user("HEAD", &blob, PUSHER).await.status, 200);
}

/// A manifest asked for by a digest its repository is not known to hold
/// is the upstream's to answer, once however many clients ask at the same
/// moment; then the repository holds it and its blobs.
#[tokio::test(flavor = "multi_thread")]
async fn a_herd_asking_for_an_unheld_manifest_by_digest_asks_the_upstream_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let wharf = start(&tmp.path().join("wharf"), &upstream);
    let clients = Clients::new(&tmp.path().join("clients"));
    let image = Image::random(&[20_000]);
    images::push(&clients, tmp.path(), &image, &upstream.host(), "pub/img", &["1"], None);
    let manifest = &image.manifest.digest;
    let layer = &image.layers[0].digest;
    // What the push itself asked of the upstream is not wharf's doing.
    let pushed = upstream_requests(&upstream, "/v2/pub/img/", "");
    let url = format!("{}/v2/pub/img/manifests/{manifest}", wharf.url());
    let herd: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { http::request("GET", &url, &[ACCEPT]).await })
        })
        .collect();
    for answer in herd {
        let r = answer.await.expect("request task");
        assert_eq!(r.status, 200, "{}", text(&r));
        assert_eq!(images::sha256_digest(&r.body), *manifest);
    }
    // Its layer is held with it: fetched without asking first.
    let r = http::request("GET", &format!("{}/v2/pub/img/blobs/{layer}", wharf.url()), &[]).await;
    assert_eq!(r.status, 200);
    let asked: Vec<(String, String)> = upstream_requests(&upstream, "/v2/pub/img/", "")
        .into_iter()
        .skip(pushed.len())
        .map(|l| (l.method, l.path))
        .collect();
    let expected = [
        ("GET".to_owned(), format!("/v2/pub/img/manifests/{manifest}")),
        ("GET".to_owned(), format!("/v2/pub/img/blobs/{layer}")),
    ];
    assert_eq!(asked, expected, "one manifest GET for the herd, one fill, no HEAD");
}
