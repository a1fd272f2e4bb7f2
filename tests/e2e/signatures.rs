//! Atomic container signatures ("simple signing") end to end, with real
//! signatures (a gpg key and `skopeo standalone-sign`): wharf A syncs an
//! image from `docker-registry` and its signatures from a lookaside store
//! (`python3 -m http.server` on loopback); wharf B syncs from A through the
//! docker API extension (`/extensions/v2/<name>/signatures/<digest>`, which
//! distribution 2.8 lacks but wharf serves) and through A's referrers API;
//! skopeo reads the signatures back from B and verifies them; a copy
//! carries them; `skopeo copy --sign-by` pushes one into A. Operators see
//! them in the admin API's and the CLI's content listing, and a mirror
//! resync drops one the lookaside no longer has.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use serde_json::json;

use crate::clients::Clients;
use crate::http;
use crate::images::{self, Image};
use crate::push::{authorization, start_with, PUSHER};
use crate::registry::Registry;
use crate::sync::{admin_ok, cli_ok, content, put_blob, put_manifest, referrer_of, referrers_index, stem};
use crate::wharf::{UpstreamEntry, Wharf};

/// A throwaway gpg home with one signing key; its agent is stopped when
/// the keyring goes.
pub(crate) struct Keyring {
    home: PathBuf,
    fingerprint: String,
}

impl Keyring {
    pub(crate) fn new(home: &Path) -> Keyring {
        crate::clients::require_program("gpg", "gnupg");
        std::fs::create_dir_all(home).expect("gpg home");
        std::fs::set_permissions(home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod gpg home");
        let gpg = |args: &[&str]| {
            let out = Command::new("gpg").env("GNUPGHOME", home).args(args).output().expect("run gpg");
            assert!(out.status.success(), "gpg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        gpg(&["--batch", "--passphrase", "", "--quick-gen-key", "wharf test <test@example.invalid>", "ed25519", "sign", "never"]);
        let listing = gpg(&["--list-keys", "--with-colons"]);
        let fingerprint = listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:").map(|rest| rest.trim_matches(':').to_owned()))
            .expect("a key fingerprint");
        Keyring { home: home.to_path_buf(), fingerprint }
    }

    /// `skopeo standalone-sign`: a signature of `manifest` for `identity`.
    pub(crate) fn sign(&self, work: &Path, manifest: &[u8], identity: &str) -> Vec<u8> {
        let (m, out) = (work.join("to-sign.json"), work.join("signature"));
        std::fs::write(&m, manifest).expect("write manifest");
        let run = Command::new("skopeo")
            .env("GNUPGHOME", &self.home)
            .args(["standalone-sign", &m.to_string_lossy(), identity, &self.fingerprint, "-o", &out.to_string_lossy()])
            .output()
            .expect("run skopeo standalone-sign");
        assert!(run.status.success(), "standalone-sign: {}", String::from_utf8_lossy(&run.stderr));
        std::fs::read(&out).expect("read signature")
    }

    /// `skopeo standalone-verify`: the signature is this key's, of this
    /// manifest, for this identity.
    fn assert_verifies(&self, work: &Path, manifest: &[u8], identity: &str, signature: &[u8]) {
        let (m, s) = (work.join("to-verify.json"), work.join("to-verify.sig"));
        std::fs::write(&m, manifest).expect("write manifest");
        std::fs::write(&s, signature).expect("write signature");
        let run = Command::new("skopeo")
            .env("GNUPGHOME", &self.home)
            .args(["standalone-verify", &m.to_string_lossy(), identity, &self.fingerprint, &s.to_string_lossy()])
            .output()
            .expect("run skopeo standalone-verify");
        assert!(run.status.success(), "standalone-verify: {}", String::from_utf8_lossy(&run.stderr));
    }
}

impl Drop for Keyring {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf").env("GNUPGHOME", &self.home).args(["--kill", "all"]).status();
    }
}

/// A static lookaside store: `python3 -m http.server` on loopback.
pub(crate) struct Lookaside {
    child: Child,
    port: u16,
}

impl Lookaside {
    pub(crate) fn serve(root: &Path) -> Lookaside {
        crate::clients::require_program("python3", "python3");
        let mut child = Command::new("python3")
            .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory"])
            .arg(root)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read the server's first line");
        // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Lookaside { child, port }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Lookaside {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The signatures `wharf` serves for `digest` under `name`, decoded; the
/// response must say the registry supports them.
pub(crate) async fn served_signatures(wharf: &Wharf, name: &str, digest: &str, auth: Option<&str>) -> Vec<Vec<u8>> {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    let r = http::request("GET", &format!("{}/extensions/v2/{name}/signatures/{digest}", wharf.url()), &headers).await;
    assert_eq!(r.status, 200, "{name}@{digest}: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-registry-supports-signatures"), Some("1"));
    let body = r.json();
    body["signatures"]
        .as_array()
        .unwrap_or_else(|| panic!("no signatures array: {body}"))
        .iter()
        .map(|s| {
            assert_eq!((s["schemaVersion"].clone(), s["type"].clone()), (json!(2), json!("atomic")), "{s}");
            let name = s["name"].as_str().expect("name");
            assert!(name.starts_with(&format!("{digest}@")) && name.len() > digest.len() + 1, "{name}");
            base64::engine::general_purpose::STANDARD.decode(s["content"].as_str().expect("content")).expect("base64")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_signatures_travel_from_a_lookaside_through_two_wharfs_to_skopeo() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path();
    let clients = Clients::new(&work.join("clients"));
    let keys = Keyring::new(&work.join("gnupg"));
    let upstream = Registry::start(&work.join("upstream"));
    let (one, two) = (Image::random(&[512]), Image::random(&[256]));
    images::push(&clients, work, &one, &upstream.host(), "team/app", &["1.0"], None);
    images::push(&clients, work, &two, &upstream.host(), "team/app", &["2.0"], None);
    // A referrer of `one` by the referrers tag schema (distribution 2.8
    // has no referrers API); wharf A serves it through its own.
    let referrer = referrer_of(&one.manifest);
    let index = referrers_index(&one.manifest, &referrer);
    for blob in referrer.blobs() {
        put_blob(&upstream.url(), "team/app", blob).await;
    }
    put_manifest(&upstream.url(), "team/app", &referrer.manifest.digest, &referrer.manifest).await;
    put_manifest(&upstream.url(), "team/app", &stem(&one.manifest.digest), &index.manifest).await;

    // Two real signatures of `one` in a lookaside store, laid out as
    // containers/image reads it: <root>/<name>@sha256=<hex>/signature-<n>.
    let (id1, id2) = ("registry.example/team/app:1.0", "registry.example/team/app:stable");
    let sig1 = keys.sign(work, &one.manifest.bytes, id1);
    let sig2 = keys.sign(work, &one.manifest.bytes, id2);
    let hex = one.manifest.digest.trim_start_matches("sha256:");
    let dir = work.join("sigstore").join(format!("team/app@sha256={hex}"));
    std::fs::create_dir_all(&dir).expect("lookaside dir");
    std::fs::write(dir.join("signature-1"), &sig1).expect("signature-1");
    std::fs::write(dir.join("signature-2"), &sig2).expect("signature-2");
    let store = Lookaside::serve(&work.join("sigstore"));

    // wharf A: a sync from docker-registry, signatures from the lookaside.
    let a = start_with(&work.join("a"), UpstreamEntry::new("up", "http://127.0.0.1:9"));
    admin_ok(&a, "POST", "repositories", Some(json!({"name": "signed"}))).await;
    let remote = json!({"name": "up", "url": upstream.url(), "upstream_name": "team/app", "sigstore": store.url()});
    admin_ok(&a, "POST", "remotes", Some(remote)).await;
    let out = cli_ok(&a, &["repository", "sync", "--name", "signed", "--remote", "up"]).await;
    assert!(out.contains("completed"), "{out}");
    admin_ok(&a, "POST", "distributions", Some(json!({"name": "signed", "base_path": "signed", "repository": "signed"}))).await;
    assert_eq!(served_signatures(&a, "signed", &one.manifest.digest, None).await, [sig1.clone(), sig2.clone()]);
    assert!(served_signatures(&a, "signed", &two.manifest.digest, None).await.is_empty(), "none were published for 2.0");
    // Clients learn of the extension from their first, anonymous probe.
    let probe = http::request("GET", &format!("{}/v2/", a.url()), &[]).await;
    assert_eq!((probe.status, probe.header("x-registry-supports-signatures")), (401, Some("1")));
    // A manifest the version does not hold has no signatures to list.
    let unknown = format!("sha256:{}", "0".repeat(64));
    let r = http::request("GET", &format!("{}/extensions/v2/signed/signatures/{unknown}", a.url()), &[]).await;
    assert_eq!((r.status, r.error_code()), (404, "MANIFEST_UNKNOWN".to_owned()));

    // wharf B syncs from wharf A: signatures through the API extension,
    // the referrer through A's referrers API. The filter leaves out the
    // `sha256-<hex>` tag of the tag schema, so only the API can bring it.
    let b = start_with(&work.join("b"), UpstreamEntry::new("up", "http://127.0.0.1:9"));
    admin_ok(&b, "POST", "repositories", Some(json!({"name": "mirror"}))).await;
    let remote = json!({"name": "a", "url": a.url(), "upstream_name": "signed", "include_tags": ["1.0", "2.0"]});
    admin_ok(&b, "POST", "remotes", Some(remote)).await;
    cli_ok(&b, &["repository", "sync", "--name", "mirror", "--remote", "a"]).await;
    let (tags, manifests) = content(&b, "mirror", "1").await;
    assert_eq!(tags, ["1.0", "2.0"]);
    assert!(manifests.contains(&referrer.manifest.digest), "the referrer came through the referrers API: {manifests:?}");
    admin_ok(&b, "POST", "distributions", Some(json!({"name": "mirror", "base_path": "mirror", "repository": "mirror"}))).await;
    let referrers = http::request("GET", &format!("{}/v2/mirror/referrers/{}", b.url(), one.manifest.digest), &[]).await;
    assert_eq!(referrers.status, 200);
    assert_eq!(referrers.json()["manifests"][0]["digest"], json!(referrer.manifest.digest), "served back by B");
    assert_eq!(served_signatures(&b, "mirror", &one.manifest.digest, None).await, [sig1.clone(), sig2.clone()]);

    // skopeo reads them from B through the extension (a `dir:` copy keeps
    // signatures as files), and they verify against the manifest B served.
    let out_dir = work.join("from-b");
    clients.skopeo_ok(&[
        "copy", "--src-tls-verify=false",
        &format!("docker://{}/mirror:1.0", b.host()), &format!("dir:{}", out_dir.display()),
    ]);
    let manifest = std::fs::read(out_dir.join("manifest.json")).expect("manifest.json");
    assert_eq!(manifest, one.manifest.bytes, "the manifest as signed");
    let read_back: Vec<Vec<u8>> = ["signature-1", "signature-2"]
        .iter()
        .map(|f| std::fs::read(out_dir.join(f)).unwrap_or_else(|e| panic!("skopeo wrote no {f}: {e}")))
        .collect();
    assert_eq!(read_back, [sig1.clone(), sig2.clone()]);
    assert!(!out_dir.join("signature-3").exists());
    keys.assert_verifies(work, &manifest, id1, &read_back[0]);
    keys.assert_verifies(work, &manifest, id2, &read_back[1]);

    // A copy of the manifest into another repository carries them.
    admin_ok(&b, "POST", "repositories", Some(json!({"name": "curated"}))).await;
    let copied = admin_ok(&b, "POST", "repositories/curated/copy", Some(json!({"source": "mirror", "manifests": [one.manifest.digest]}))).await;
    assert_eq!(copied["version"], 1, "{copied}");
    admin_ok(&b, "POST", "distributions", Some(json!({"name": "curated", "base_path": "curated", "repository": "curated"}))).await;
    assert_eq!(served_signatures(&b, "curated", &one.manifest.digest, None).await, [sig1.clone(), sig2.clone()]);

    // skopeo --sign-by pushes a signature into a push repository of A
    // through the extension's PUT.
    let layout = images::write_layout(&work.join("to-push"), "2.0", &two);
    let identity = format!("{}/team/signed:2.0", a.host());
    let pushed = clients.skopeo_with_env(
        &[("GNUPGHOME", keys.home.as_path())],
        &[
            "copy", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", PUSHER, "--sign-by", &keys.fingerprint,
            &format!("oci:{}:2.0", layout.display()), &format!("docker://{identity}"),
        ],
    );
    assert!(pushed.status.success(), "skopeo copy --sign-by: {}", String::from_utf8_lossy(&pushed.stderr));
    let auth = authorization();
    let signed = served_signatures(&a, "team/signed", &two.manifest.digest, Some(&auth)).await;
    assert_eq!(signed.len(), 1, "one signature pushed");
    keys.assert_verifies(work, &two.manifest.bytes, &identity, &signed[0]);
    // Only the push repository's own clients may add signatures; a sync
    // repository's distribution refuses.
    let body = json!({"schemaVersion": 2, "type": "atomic", "name": format!("{}@x", one.manifest.digest), "content": "aGk="});
    let refused = http::request_with_body(
        "PUT",
        &format!("{}/extensions/v2/signed/signatures/{}", a.url(), one.manifest.digest),
        &[("Authorization", auth.as_str()), ("Content-Type", "application/json")],
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!((refused.status, refused.error_code()), (403, "DENIED".to_owned()));

    // Operators see A's signatures in the version's content listing.
    let listed = admin_ok(&a, "GET", "repositories/signed/versions/1/signatures", None).await;
    assert_eq!(listed["count"], 2, "{listed}");
    let want = |sig: &[u8]| {
        json!({"manifest_digest": one.manifest.digest, "digest": images::sha256_digest(sig), "type": "atomic"})
    };
    for (entry, sig) in listed["results"].as_array().expect("results").iter().zip([&sig1, &sig2]) {
        let name = entry["name"].as_str().expect("name");
        assert!(name.starts_with(&format!("{}@", one.manifest.digest)), "{entry}");
        let mut entry = entry.clone();
        entry.as_object_mut().expect("object").remove("name");
        assert_eq!(entry, want(sig));
    }
    let only_two = format!("repositories/signed/versions/1/signatures?manifest={}", two.manifest.digest);
    assert_eq!(admin_ok(&a, "GET", &only_two, None).await["count"], 0);
    let table = cli_ok(&a, &["content", "list", "--repository", "signed", "--type", "signature"]).await;
    assert_eq!(table.lines().count(), 3, "a header and two rows: {table}");
    assert!(table.contains(&images::sha256_digest(&sig2)[..19]) && table.contains("atomic"), "{table}");
    let as_json = cli_ok(&a, &["--json", "content", "list", "--repository", "signed", "--version", "1", "--type", "signature"]).await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&as_json).expect("json"), listed);
    let v1 = admin_ok(&a, "GET", "repositories/signed/versions/1", None).await;
    assert_eq!(v1["content_summary"]["present"]["signature"], 2, "{v1}");

    // The lookaside drops signature-2. An additive resync keeps it (no new
    // version); a mirror resync drops it, and only it, in one new version.
    std::fs::remove_file(dir.join("signature-2")).expect("remove signature-2");
    cli_ok(&a, &["repository", "sync", "--name", "signed", "--remote", "up"]).await;
    assert_eq!(admin_ok(&a, "GET", "repositories/signed", None).await["latest_version"], 1);
    assert_eq!(served_signatures(&a, "signed", &one.manifest.digest, None).await, [sig1.clone(), sig2.clone()]);
    cli_ok(&a, &["repository", "sync", "--name", "signed", "--remote", "up", "--mirror"]).await;
    let v2 = admin_ok(&a, "GET", "repositories/signed/versions/latest", None).await;
    assert_eq!(v2["number"], 2, "{v2}");
    let removed = &v2["content_summary"]["removed"];
    assert_eq!(removed, &json!({"tag": 0, "manifest": 0, "blob": 0, "signature": 1}), "{v2}");
    assert_eq!(v2["content_summary"]["present"]["manifest"], v1["content_summary"]["present"]["manifest"], "{v2}");
    assert_eq!(served_signatures(&a, "signed", &one.manifest.digest, None).await, std::slice::from_ref(&sig1));
    let kept = admin_ok(&a, "GET", "repositories/signed/versions/2/signatures", None).await;
    assert_eq!(kept["results"][0]["digest"], json!(images::sha256_digest(&sig1)), "{kept}");
    assert_eq!(admin_ok(&a, "GET", "repositories/signed/versions/1/signatures", None).await["count"], 2, "version 1 never changes");
}
