//! Client authentication and authorization against the real binary:
//! users from config with hashes made by `wharf user hash-password`, the
//! token dance of podman and skopeo, raw `/token` flows, tokens that are
//! expired, forged or for another service, the admin API's admin role, key
//! rotation, and a permission matrix.
//!
//! The upstream is an open `docker-registry`; wharf in front of it serves
//! it as `up/...` with `anonymous_pull = false`, so every pull needs a
//! signed-in user with a rule.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

use crate::clients::Clients;
use crate::http;
use crate::images::{self, Image};
use crate::registry::Registry;
use crate::wharf::{write_config, UpstreamEntry, Wharf};

const READER: (&str, &str) = ("reader", "reader-pass");
const INSIDER: (&str, &str) = ("insider", "insider-pass");
const ROOT: (&str, &str) = ("root", "root-pass");
const MANIFEST: &str = "/v2/up/team/tool/manifests/2";
const ACCEPT: (&str, &str) = ("Accept", "application/vnd.oci.image.manifest.v1+json");

/// A `[[auth.user]]` table for `name`, whose password is `<name>-pass`.
pub fn user_toml(name: &str, admin: bool) -> String {
    format!("\n[[auth.user]]\nname = {name:?}\npassword_hash = {:?}\nadmin = {admin}\n", hash_password(&format!("{name}-pass")))
}

/// `wharf user hash-password` with `password` on standard input.
pub fn hash_password(password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["user", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wharf user hash-password");
    child.stdin.take().expect("stdin").write_all(format!("{password}\n").as_bytes()).expect("write password");
    let out = child.wait_with_output().expect("wait for hash-password");
    assert!(out.status.success(), "hash-password failed: {}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8(out.stdout).expect("utf-8 hash");
    let line = line.trim_end().to_owned();
    assert!(line.starts_with("$argon2id$v=19$") && !line.contains(password), "{line}");
    line
}

struct Setup {
    tmp: tempfile::TempDir,
    upstream: Registry,
    image: Image,
    wharf: Wharf,
}

impl Setup {
    fn start() -> Setup {
        let tmp = tempfile::tempdir().expect("tempdir");
        let upstream = Registry::start(&tmp.path().join("upstream"));
        let image = Image::random(&[30_000, 60_000]);
        let push_clients = Clients::new(&tmp.path().join("push-clients"));
        images::push(&push_clients, tmp.path(), &image, &upstream.host(), "team/tool", &["2"], None);
        let dir = tmp.path().join("wharf");
        let config = write_config(&dir, &[UpstreamEntry::new("up", &upstream.url()).extra("anonymous_pull = false")]);
        let mut toml = std::fs::read_to_string(&config).expect("read config");
        toml.push_str("\n[auth]\nbasic = true\n");
        for ((name, password), admin) in [(READER, false), (INSIDER, false), (ROOT, true)] {
            toml.push_str(&format!(
                "\n[[auth.user]]\nname = {name:?}\npassword_hash = {:?}\nadmin = {admin}\n",
                hash_password(password)
            ));
        }
        toml.push_str(
            "\n[[auth.rule]]\nusers = [\"reader\", \"insider\"]\nrepositories = [\"up/*\"]\nactions = [\"pull\", \"push\"]\n\
             \n[[auth.rule]]\nusers = [\"insider\"]\nrepositories = [\"secret/*\"]\nactions = [\"pull\"]\n",
        );
        std::fs::write(&config, toml).expect("write config");
        let wharf = Wharf::start_with_config(&config);
        Setup { tmp, upstream, image, wharf }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.wharf.url())
    }

    fn admin_url(&self, path: &str) -> String {
        format!("{}{path}", self.wharf.admin_url())
    }

    fn clients(&self, name: &str) -> Clients {
        Clients::new(&self.tmp.path().join(name))
    }

    /// A token from `/token` for `scope`, as `who` (or anonymously).
    async fn token(&self, who: Option<(&str, &str)>, scope: &str) -> String {
        let auth = who.map(basic);
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let r = http::request("GET", &self.url(&format!("/token?service=wharf&scope={scope}")), &headers).await;
        assert_eq!(r.status, 200, "token for {scope}: {}", String::from_utf8_lossy(&r.body));
        let json = r.json();
        assert_eq!(json["token"], json["access_token"]);
        assert!(json["expires_in"].as_u64().unwrap_or(0) > 0 && json["issued_at"].is_string(), "{json}");
        json["token"].as_str().expect("token").to_owned()
    }

    /// Signs `claims` with wharf's current key, read from its key file, as
    /// only someone holding the key could.
    fn sign(&self, claims: serde_json::Value) -> String {
        // The key file, or with the metadata in PostgreSQL the document
        // the nodes share there.
        let dir = self.tmp.path().join("wharf");
        let document = match std::env::var("WHARF_TEST_POSTGRES").ok().filter(|u| !u.is_empty()) {
            None => std::fs::read(dir.join("storage/auth/keys.json")).expect("read keys.json"),
            Some(_) => crate::wharf::metadata_query(&dir, "SELECT document FROM signing_keys WHERE name = 'token'")
                .join("\n")
                .into_bytes(),
        };
        let keys: serde_json::Value = serde_json::from_slice(&document).expect("keys.json");
        let pkcs8 = STANDARD.decode(keys["current"]["pkcs8"].as_str().expect("pkcs8")).expect("base64 pkcs8");
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).expect("P-256 key");
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": keys["current"]["kid"]});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = pair.sign(&rng, input.as_bytes()).expect("sign");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

/// An `Authorization` header value for Basic credentials.
pub fn basic((user, password): (&str, &str)) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}

fn text(r: &http::Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The `WWW-Authenticate` of a 401, checked for the contract's form.
fn challenge_of(r: &http::Response, s: &Setup) -> String {
    assert_eq!((r.status, r.error_code().as_str()), (401, "UNAUTHORIZED"), "{}", text(r));
    let c = r.header("www-authenticate").expect("a 401 carries a challenge").to_owned();
    let realm = format!("Bearer realm=\"http://{}/token\",service=\"wharf\"", s.wharf.host());
    assert!(c.starts_with(&realm), "{c}");
    c
}

#[test]
fn skopeo_with_creds_and_podman_login_pull_through_a_private_upstream() {
    let s = Setup::start();
    let host = s.wharf.host();
    let reference = format!("docker://{host}/up/team/tool:2");

    // Anonymous: refused.
    let anon = s.clients("anon");
    let refused = anon.skopeo(&["inspect", "--raw", "--tls-verify=false", &reference]);
    assert!(!refused.status.success(), "an anonymous pull through a private upstream succeeded");
    // Wrong password: refused.
    let wrong = anon.skopeo(&["inspect", "--raw", "--tls-verify=false", "--creds", "reader:nope", &reference]);
    assert!(!wrong.status.success(), "a wrong password pulled");

    // skopeo --creds: the Bearer dance with Basic at the realm.
    let skopeo = s.clients("skopeo");
    let raw = skopeo.inspect_raw(&reference, Some(&format!("{}:{}", READER.0, READER.1)));
    assert_eq!(images::sha256_digest(&raw), s.image.manifest.digest);

    // podman login, then pull with the stored credentials.
    let podman = s.clients("podman");
    let bad_login = podman.podman(&["login", "--tls-verify=false", "-u", READER.0, "-p", "nope", &host]);
    assert!(!bad_login.status.success(), "podman login with a wrong password succeeded");
    podman.podman_ok(&["login", "--tls-verify=false", "-u", READER.0, "-p", READER.1, &host]);
    podman.podman_ok(&["pull", "--quiet", "--tls-verify=false", &format!("{host}/up/team/tool:2")]);
    let out = podman.podman_ok(&["image", "inspect", &format!("{host}/up/team/tool:2")]);
    let inspect: serde_json::Value = serde_json::from_slice(&out).expect("podman image inspect JSON");
    assert_eq!(inspect[0]["Digest"], s.image.manifest.digest.as_str());
    assert_eq!(inspect[0]["RootFS"]["Layers"], json!(s.image.diff_ids));
    // Every blob came from the upstream once, for all three clients.
    for blob in s.image.blobs() {
        assert!(s.upstream.blob_gets(&blob.digest) <= 1, "blob {} fetched more than once", blob.digest);
    }
}

#[tokio::test]
async fn token_endpoint_grants_what_the_rules_allow_and_the_registry_checks_it() {
    let s = Setup::start();
    // /v2/ challenges anonymous clients once users exist.
    let base = http::get(&s.url("/v2/")).await;
    let c = challenge_of(&base, &s);
    assert!(!c.contains("scope="), "{c}");
    // A manifest names its scope.
    let r = http::request("GET", &s.url(MANIFEST), &[ACCEPT]).await;
    assert!(challenge_of(&r, &s).ends_with(",scope=\"repository:up/team/tool:pull\""));

    // The reader's token works; the reader asked for push too, and is
    // allowed it by the rules, so it is granted.
    let token = s.token(Some(READER), "repository:up/team/tool:pull,push,delete").await;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).expect("claims")).expect("b64")).expect("json");
    assert_eq!(claims["access"], json!([{"type": "repository", "name": "up/team/tool", "actions": ["pull", "push"]}]));
    assert_eq!((claims["iss"].as_str(), claims["sub"].as_str(), claims["aud"].as_str()), (Some("wharf"), Some("reader"), Some("wharf")));
    let bearer = format!("Bearer {token}");
    let r = http::request("GET", &s.url(MANIFEST), &[("Authorization", &bearer), ACCEPT]).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(images::sha256_digest(&r.body), s.image.manifest.digest);
    // Allowed to push by the rules and the token, the pull-through cache
    // still refuses: it is read-only.
    let r = http::request("POST", &s.url("/v2/up/team/tool/blobs/uploads/"), &[("Authorization", &bearer)]).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "DENIED"), "{}", text(&r));
    assert!(text(&r).contains("read-only"), "{}", text(&r));
    // The token does not carry delete: challenged for a wider one, which
    // the rules would not give (403 then).
    let digest = &s.image.manifest.digest;
    let r = http::request("DELETE", &s.url(&format!("/v2/up/team/tool/manifests/{digest}")), &[("Authorization", &bearer)]).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "DENIED"), "{}", text(&r));

    // A token for another repository grants nothing here.
    let other = s.token(Some(READER), "repository:up/team/other:pull").await;
    let r = http::request("GET", &s.url(MANIFEST), &[("Authorization", &format!("Bearer {other}")), ACCEPT]).await;
    assert!(challenge_of(&r, &s).contains("scope=\"repository:up/team/tool:pull\""));

    // An anonymous token gets no access to a private upstream.
    let anon = s.token(None, "repository:up/team/tool:pull").await;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(anon.split('.').nth(1).expect("claims")).expect("b64")).expect("json");
    assert_eq!(claims["access"], json!([]));
    let r = http::request("GET", &s.url(MANIFEST), &[("Authorization", &format!("Bearer {anon}")), ACCEPT]).await;
    challenge_of(&r, &s);

    // Wrong credentials at /token: 401.
    let r = http::request("GET", &s.url("/token?service=wharf"), &[("Authorization", &basic((READER.0, "nope")))]).await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "UNAUTHORIZED"), "{}", text(&r));
    let r = http::request("GET", &s.url("/token?service=wharf"), &[("Authorization", &basic(("nobody", "x")))]).await;
    assert_eq!(r.status, 401);
    // A token for another service is not issued.
    let r = http::request("GET", &s.url("/token?service=elsewhere"), &[("Authorization", &basic(READER))]).await;
    assert_eq!(r.status, 400, "{}", text(&r));
}

#[tokio::test]
async fn expired_forged_and_foreign_tokens_are_refused() {
    let s = Setup::start();
    let t = now();
    let claims = |exp: u64, aud: &str| {
        json!({
            "iss": "wharf", "sub": "reader", "aud": aud, "exp": exp, "nbf": t - 60, "iat": t - 60, "jti": "e2e",
            "access": [{"type": "repository", "name": "up/team/tool", "actions": ["pull"]}],
        })
    };
    let get = |token: String| {
        let url = s.url(MANIFEST);
        async move { http::request("GET", &url, &[("Authorization", &format!("Bearer {token}")), ACCEPT]).await }
    };
    // Signed by wharf's own key and valid: the control.
    let good = s.sign(claims(t + 300, "wharf"));
    assert_eq!(get(good.clone()).await.status, 200);
    // Expired.
    let r = get(s.sign(claims(t - 1, "wharf"))).await;
    let c = challenge_of(&r, &s);
    assert!(c.contains("error=\"invalid_token\""), "{c}");
    assert!(text(&r).contains("expired"), "{}", text(&r));
    // Another audience.
    let r = get(s.sign(claims(t + 300, "another-registry"))).await;
    challenge_of(&r, &s);
    assert!(text(&r).contains("another service"), "{}", text(&r));
    // One byte of the signature flipped.
    let (head, sig) = good.rsplit_once('.').expect("three parts");
    let mut sig = URL_SAFE_NO_PAD.decode(sig).expect("b64 signature");
    sig[0] ^= 0x80;
    let r = get(format!("{head}.{}", URL_SAFE_NO_PAD.encode(sig))).await;
    challenge_of(&r, &s);
    // Claims widened after signing.
    let mut wider = claims(t + 300, "wharf");
    wider["access"][0]["actions"] = json!(["pull", "push", "delete"]);
    let parts: Vec<&str> = good.split('.').collect();
    let r = get(format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(wider.to_string()), parts[2])).await;
    challenge_of(&r, &s);
    // A token for a user the config does not have.
    let mut ghost = claims(t + 300, "wharf");
    ghost["sub"] = json!("ghost");
    challenge_of(&get(s.sign(ghost)).await, &s);
}

#[tokio::test]
async fn permission_matrix_of_anonymous_reader_and_admin() {
    let s = Setup::start();
    let reader = basic(READER);
    let root = basic(ROOT);
    let pull = |auth: Option<String>| {
        let url = s.url(MANIFEST);
        async move {
            let mut headers = vec![ACCEPT];
            if let Some(a) = &auth {
                headers.push(("Authorization", a.as_str()));
            }
            http::request("GET", &url, &headers).await
        }
    };
    let admin = |auth: Option<String>| {
        let url = s.admin_url("/api/v1/users");
        async move {
            let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
            http::request("GET", &url, &headers).await
        }
    };
    // Anonymous: challenged on both.
    challenge_of(&pull(None).await, &s);
    let r = admin(None).await;
    assert_eq!(r.status, 401, "{}", text(&r));
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"wharf admin\""));
    assert_eq!(r.json()["error"]["code"], "unauthorized");
    // Reader (Basic straight on /v2/, auth.basic = true): pulls, no admin.
    let r = pull(Some(reader.clone())).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let r = admin(Some(reader.clone())).await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (403, Some("forbidden")), "{}", text(&r));
    // Admin: the admin API, and no repository rule, so no pull.
    let r = pull(Some(root.clone())).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "DENIED"), "{}", text(&r));
    let r = admin(Some(root.clone())).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    // Wrong passwords are 401 everywhere, never anonymous.
    challenge_of(&pull(Some(basic((READER.0, "nope")))).await, &s);
    assert_eq!(admin(Some(basic((ROOT.0, "nope")))).await.status, 401);

    // Users and rules through the admin API: never a hash.
    let users = admin(Some(root.clone())).await;
    assert!(!text(&users).contains("argon2"), "{}", text(&users));
    let names: Vec<String> =
        users.json()["results"].as_array().expect("results").iter().filter_map(|u| u["name"].as_str().map(str::to_owned)).collect();
    assert_eq!(names, ["insider", "reader", "root"]);
    assert_eq!(users.json()["results"][1]["rules"][0]["repositories"], json!(["up/*"]));
    let rules = http::request("GET", &s.admin_url("/api/v1/rules"), &[("Authorization", &root)]).await;
    assert_eq!(rules.json()["count"], 2, "{}", text(&rules));
    // Health and metrics stay open (auth.open_metrics defaults to true).
    assert_eq!(http::get(&s.admin_url("/healthz")).await.status, 200);
    assert_eq!(http::get(&s.admin_url("/metrics")).await.status, 200);
    // An admin's token with registry:admin:* works on the admin API; the
    // same user's token without it does not.
    let token = s.token(Some(ROOT), "registry:admin:*").await;
    assert_eq!(admin(Some(format!("Bearer {token}"))).await.status, 200);
    let token = s.token(Some(ROOT), "repository:up/team/tool:pull").await;
    assert_eq!(admin(Some(format!("Bearer {token}"))).await.status, 403);

    // A private distribution: anonymous clients cannot tell it from a name
    // that does not exist; a signed-in user without a rule is denied; the
    // insider pulls.
    wait_for_repository(&s, &root).await;
    let create = http::request_with_body(
        "POST",
        &s.admin_url("/api/v1/distributions"),
        &[("Authorization", &root), ("Content-Type", "application/json")],
        json!({"name": "secret-tool", "base_path": "secret/tool", "repository": "up/team/tool", "private": true}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(create.status, 201, "{}", text(&create));
    let private = s.url("/v2/secret/tool/manifests/2");
    let missing = s.url("/v2/secret/nothing/manifests/2");
    let (a, b) = (http::request("GET", &private, &[ACCEPT]).await, http::request("GET", &missing, &[ACCEPT]).await);
    assert_eq!((a.status, b.status), (401, 401));
    assert_eq!(a.error_code(), b.error_code());
    let r = http::request("GET", &private, &[ACCEPT, ("Authorization", &reader)]).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "DENIED"), "{}", text(&r));
    let r = http::request("GET", &private, &[ACCEPT, ("Authorization", &basic(INSIDER))]).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(images::sha256_digest(&r.body), s.image.manifest.digest);
    // The catalog shows each client what it may pull.
    let catalog = |auth: Option<&str>| {
        let url = s.url("/v2/_catalog");
        let auth = auth.map(str::to_owned);
        async move {
            let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
            http::request("GET", &url, &headers).await.json()["repositories"].clone()
        }
    };
    assert_eq!(catalog(None).await, json!([]));
    assert_eq!(catalog(Some(&reader)).await, json!(["up/team/tool"]));
    assert_eq!(catalog(Some(&basic(INSIDER))).await, json!(["secret/tool", "up/team/tool"]));
}

/// Waits until the pull of `up/team/tool` is recorded (in the background).
async fn wait_for_repository(s: &Setup, root: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = s.admin_url("/api/v1/repositories/up%2Fteam%2Ftool");
    loop {
        let r = http::request("GET", &url, &[("Authorization", root)]).await;
        if r.status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "the pull of up/team/tool was not recorded: {}", text(&r));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_rotated_key_signs_new_tokens_and_old_ones_keep_working() {
    let s = Setup::start();
    let root = basic(ROOT);
    let old = s.token(Some(READER), "repository:up/team/tool:pull").await;
    let keys = http::request("GET", &s.admin_url("/api/v1/signing-keys"), &[("Authorization", &root)]).await;
    assert_eq!(keys.json()["count"], 1, "{}", text(&keys));
    let old_kid = keys.json()["results"][0]["kid"].clone();
    assert!(!text(&keys).contains("pkcs8") && !text(&keys).contains("public_key"), "{}", text(&keys));

    // Through the command, as an operator would.
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["auth", "rotate-key", "--admin", &s.wharf.admin_url()])
        .env("WHARF_ADMIN_USER", ROOT.0)
        .env("WHARF_ADMIN_PASSWORD", ROOT.1)
        .output()
        .expect("run wharf auth rotate-key");
    assert!(out.status.success(), "rotate-key: {}", String::from_utf8_lossy(&out.stderr));
    let keys = http::request("GET", &s.admin_url("/api/v1/signing-keys"), &[("Authorization", &root)]).await;
    let results = keys.json()["results"].clone();
    assert_eq!(results.as_array().map(Vec::len), Some(2), "{results}");
    assert_eq!(results[1]["kid"], old_kid);
    assert!(results[0]["current"].as_bool().unwrap_or(false) && results[1]["expires_at"].is_string(), "{results}");
    // Without credentials the command is refused, and says how to sign in.
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["auth", "rotate-key", "--admin", &s.wharf.admin_url()])
        .env_remove("WHARF_ADMIN_USER")
        .output()
        .expect("run wharf auth rotate-key");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WHARF_ADMIN_USER"), "{}", String::from_utf8_lossy(&out.stderr));

    // The old token still pulls; a new one is signed by the new key.
    let get = |token: &str| {
        let url = s.url(MANIFEST);
        let auth = format!("Bearer {token}");
        async move { http::request("GET", &url, &[("Authorization", &auth), ACCEPT]).await.status }
    };
    assert_eq!(get(&old).await, 200);
    let new = s.token(Some(READER), "repository:up/team/tool:pull").await;
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(new.split('.').next().expect("header")).expect("b64")).expect("json");
    assert_eq!(header["kid"], results[0]["kid"]);
    assert_eq!(get(&new).await, 200);
    // The key file stays private (with the metadata in PostgreSQL there is
    // no file: the nodes share the keys there).
    if std::env::var("WHARF_TEST_POSTGRES").map_or(true, |u| u.is_empty()) {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(s.tmp.path().join("wharf/storage/auth/keys.json")).expect("stat keys.json").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
    // And a restart keeps both keys: the old token still works.
    let config = s.wharf.config_path.clone();
    let Setup { tmp, upstream, image, wharf } = s;
    wharf.stop();
    let s = Setup { tmp, upstream, image, wharf: Wharf::start_with_config(&config) };
    let url = s.url(MANIFEST);
    assert_eq!(http::request("GET", &url, &[("Authorization", &format!("Bearer {old}")), ACCEPT]).await.status, 200);
}
