//! Flatpak's registry index (issue 20) with the real client: a runtime
//! and an app built with Debian's `flatpak` (`build-init`, `build-finish`,
//! `build-export`, `build-bundle --oci`; no network), pushed into wharf
//! with skopeo, then listed, installed, shown and run by `flatpak` with
//! wharf as an `oci+http` remote. Then the index of a synced repository
//! served by distributions (public and private), its HTTP caching, and
//! bad queries.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::clients::{require_program, Clients};
use crate::http;
use crate::registry::Registry;
use crate::sync::{admin_ok, wait_task};
use crate::wharf::{write_config, UpstreamEntry, Wharf};

/// The query `flatpak remote-ls` and `flatpak install` send (flatpak 1.14).
const FLATPAK_QUERY: &str = "label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest";
const APP_REF: &str = "app/org.example.Hello/x86_64/stable";
const RUNTIME_REF: &str = "runtime/org.example.Platform/x86_64/1";

/// A wharf serving the index, with `pusher` (admin, may do anything) and
/// `reader` (may pull `private/*` only).
fn start(dir: &Path, upstreams: &[UpstreamEntry], index: bool) -> Wharf {
    let config = write_config(dir, upstreams);
    let mut toml = std::fs::read_to_string(&config).expect("read config");
    let user = crate::auth::user_toml;
    toml.push_str("\n[auth]\nbasic = true\n");
    toml.push_str(&user("pusher", true));
    toml.push_str(&user("reader", false));
    toml.push_str(
        "\n[[auth.rule]]\nusers = [\"pusher\"]\nrepositories = [\"*\"]\nactions = [\"pull\", \"push\", \"delete\"]\n\
         \n[[auth.rule]]\nusers = [\"reader\"]\nrepositories = [\"private/*\"]\nactions = [\"pull\"]\n",
    );
    if index {
        toml.push_str("\n[flatpak]\nindex = true\n");
    }
    std::fs::write(&config, toml).expect("write config");
    Wharf::start_with_config(&config)
}

fn basic(user: &str) -> String {
    crate::auth::basic((user, &format!("{user}-pass")))
}

/// Runs flatpak with its user installation, caches and config under one
/// directory, and a D-Bus session bus of its own (`flatpak install` needs
/// one), stopped when dropped: flatpak's helpers would keep a bus
/// started by `dbus-run-session` alive for minutes.
struct Flatpak {
    home: PathBuf,
    bus: String,
    bus_pid: u32,
}

impl Flatpak {
    fn new(dir: &Path) -> Flatpak {
        require_program("flatpak", "flatpak");
        require_program("dbus-daemon", "dbus-daemon");
        let home = dir.join("flatpak-home");
        std::fs::create_dir_all(&home).expect("flatpak home");
        let out = Command::new("dbus-daemon")
            .args(["--session", "--fork", "--print-address=1", "--print-pid=1", "--nosyslog"])
            .stdin(Stdio::null())
            .output()
            .expect("start dbus-daemon");
        assert!(out.status.success(), "dbus-daemon: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        let bus = lines.next().expect("bus address").trim().to_owned();
        let bus_pid = lines.next().and_then(|l| l.trim().parse().ok()).expect("bus pid");
        Flatpak { home, bus, bus_pid }
    }

    fn run(&self, args: &[&str]) -> Output {
        let h = &self.home;
        Command::new("timeout")
            .arg("300")
            .arg("flatpak")
            .args(args)
            .env("HOME", h)
            .env("XDG_DATA_HOME", h.join("data"))
            .env("XDG_CACHE_HOME", h.join("cache"))
            .env("XDG_CONFIG_HOME", h.join("config"))
            .env("FLATPAK_USER_DIR", h.join("user"))
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
            .current_dir(h)
            .stdin(Stdio::null())
            .output()
            .expect("run flatpak")
    }

    /// `flatpak args`, which must succeed: its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "flatpak {}: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Flatpak {
    /// Stops the bus and the services it started (flatpak's OCI
    /// authenticator outlives its bus otherwise), found by the address
    /// the bus gave them.
    fn drop(&mut self) {
        let started_here = format!("DBUS_STARTER_ADDRESS={}", self.bus);
        let mut pids = vec![self.bus_pid.to_string()];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
            if environ.split(|b| *b == 0).any(|var| var == started_here.as_bytes()) {
                pids.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        let _ = Command::new("kill").args(&pids).status();
    }
}

/// Builds a runtime (`org.example.Platform`, branch 1: a static busybox
/// as `/usr/bin/sh`) and an app on it (`org.example.Hello`, branch
/// stable: a script printing "hello from wharf"), the way an app's
/// maintainer does, and bundles each as an OCI image: (runtime layout,
/// app layout), each image named by its ref.
fn build_runtime_and_app(fp: &Flatpak, dir: &Path) -> (PathBuf, PathBuf) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| Path::new(p).is_file());
    let busybox = busybox.expect("a static busybox (Debian's busybox-static; .ci/run installs it)");
    let (rt, app, repo) = (dir.join("rt"), dir.join("app"), dir.join("repo"));
    std::fs::create_dir_all(rt.join("usr/bin")).expect("runtime dirs");
    std::fs::create_dir_all(rt.join("files")).expect("runtime dirs");
    std::fs::copy(busybox, rt.join("usr/bin/sh")).expect("copy busybox");
    std::fs::write(
        rt.join("metadata"),
        "[Runtime]\nname=org.example.Platform\nruntime=org.example.Platform/x86_64/1\nsdk=org.example.Platform/x86_64/1\n",
    )
    .expect("runtime metadata");
    let s = |p: &Path| p.display().to_string();
    fp.ok(&["build-export", "--runtime", &s(&repo), &s(&rt), "1"]);
    fp.ok(&["build-update-repo", &s(&repo)]);
    // `build-init` needs the runtime installed: from the local repo.
    fp.ok(&["remote-add", "--user", "--no-gpg-verify", "local", &format!("file://{}", s(&repo))]);
    fp.ok(&["install", "--user", "-y", "--noninteractive", "local", "org.example.Platform"]);
    fp.ok(&["build-init", &s(&app), "org.example.Hello", "org.example.Platform", "org.example.Platform", "1"]);
    std::fs::create_dir_all(app.join("files/bin")).expect("app dirs");
    let hello = app.join("files/bin/hello");
    std::fs::write(&hello, "#!/usr/bin/sh\necho hello from wharf\n").expect("app script");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&hello, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    fp.ok(&["build-finish", "--command=hello", &s(&app)]);
    fp.ok(&["build-export", &s(&repo), &s(&app), "stable"]);
    let (rt_oci, app_oci) = (dir.join("rt-oci"), dir.join("app-oci"));
    fp.ok(&["build-bundle", "--oci", "--runtime", &s(&repo), &s(&rt_oci), "org.example.Platform", "1"]);
    fp.ok(&["build-bundle", "--oci", &s(&repo), &s(&app_oci), "org.example.Hello", "stable"]);
    // Forget the local remote: what is installed next comes from wharf.
    fp.ok(&["uninstall", "--user", "-y", "--noninteractive", "org.example.Platform"]);
    fp.ok(&["remote-delete", "--user", "local"]);
    (rt_oci, app_oci)
}

/// Copies the image named `name` in OCI layout `layout` to
/// `docker://host/dest`, as `credentials`.
fn copy(clients: &Clients, layout: &Path, name: &str, dest: &str, credentials: Option<&str>) {
    let source = format!("oci:{}:{name}", layout.display());
    let mut args = vec!["copy", "--dest-tls-verify=false"];
    if let Some(c) = credentials {
        args.extend(["--dest-creds", c]);
    }
    args.extend([source.as_str(), dest]);
    clients.skopeo_ok(&args);
}

async fn index(wharf: &Wharf, kind: &str, query: &str, headers: &[(&str, &str)]) -> http::Response {
    http::request("GET", &format!("{}/index/{kind}?{query}", wharf.url()), headers).await
}

/// The repositories an answer lists, each with the `org.flatpak.ref`
/// labels of its images.
fn listed(answer: &Value) -> Vec<(String, Vec<String>)> {
    answer["Results"]
        .as_array()
        .expect("Results")
        .iter()
        .map(|r| {
            let refs = r["Images"].as_array().expect("Images").iter().map(|i| i["Labels"]["org.flatpak.ref"].as_str().unwrap_or("").to_owned());
            (r["Name"].as_str().expect("Name").to_owned(), refs.collect())
        })
        .collect()
}

/// Asks the index with flatpak's query until it lists `names` (configs
/// are read just after their version is made), at most 30 s.
async fn wait_listed(wharf: &Wharf, names: &[&str], headers: &[(&str, &str)]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = index(wharf, "static", FLATPAK_QUERY, headers).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let answer = r.json();
        let got: Vec<String> = listed(&answer).into_iter().map(|(n, _)| n).collect();
        if names.iter().all(|n| got.iter().any(|g| g == n)) {
            return answer;
        }
        assert!(Instant::now() < deadline, "the index never listed {names:?}: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flatpak_lists_installs_and_runs_an_app_and_its_runtime_pushed_to_wharf() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let fp = Flatpak::new(tmp.path());
    let (rt_oci, app_oci) = build_runtime_and_app(&fp, &tmp.path().join("build"));
    let wharf = start(&tmp.path().join("wharf"), &[], true);
    let host = wharf.host();
    copy(&clients, &rt_oci, RUNTIME_REF, &format!("docker://{host}/runtimes/platform:latest"), Some("pusher:pusher-pass"));
    copy(&clients, &app_oci, APP_REF, &format!("docker://{host}/apps/hello:latest"), Some("pusher:pusher-pass"));

    // The index answers the client's own query from the images' configs.
    let answer = wait_listed(&wharf, &["apps/hello", "runtimes/platform"], &[]).await;
    assert_eq!(answer["Registry"], "/");
    assert_eq!(
        listed(&answer),
        [("apps/hello".to_owned(), vec![APP_REF.to_owned()]), ("runtimes/platform".to_owned(), vec![RUNTIME_REF.to_owned()])]
    );
    let hello = &answer["Results"][0]["Images"][0];
    assert_eq!((hello["OS"].as_str(), hello["Architecture"].as_str(), &hello["Tags"]), (Some("linux"), Some("amd64"), &json!(["latest"])));
    assert!(hello["Labels"]["org.flatpak.metadata"].as_str().is_some_and(|m| m.contains("command=hello")), "{hello}");
    // The digest is the image skopeo pushed.
    let pushed = clients.inspect_raw(&format!("docker://{host}/apps/hello:latest"), Some("pusher:pusher-pass"));
    assert_eq!(hello["Digest"].as_str(), Some(crate::images::sha256_digest(&pushed).as_str()));

    // As a user of the client.
    fp.ok(&["remote-add", "--user", "--no-gpg-verify", "wharf", &format!("oci+{}", wharf.url())]);
    let ls = fp.ok(&["remote-ls", "--user", "--columns=ref,branch", "wharf"]);
    let rows: Vec<Vec<&str>> = ls.lines().map(|l| l.split('\t').map(str::trim).collect()).collect();
    assert!(rows.contains(&vec![APP_REF, "stable"]), "{ls}");
    assert!(rows.contains(&vec![RUNTIME_REF, "1"]), "{ls}");
    fp.ok(&["install", "--user", "-y", "--noninteractive", "wharf", "org.example.Hello"]);
    let info = fp.ok(&["info", "--user", "org.example.Hello"]);
    assert!(info.lines().any(|l| l.trim() == format!("Ref: {APP_REF}")), "{info}");
    assert!(info.lines().any(|l| l.trim() == "Origin: wharf"), "installed from wharf: {info}");
    assert!(info.lines().any(|l| l.trim() == "Runtime: org.example.Platform/x86_64/1"), "{info}");
    let runtimes = fp.ok(&["list", "--user", "--runtime", "--columns=ref,origin"]);
    let from_wharf = |l: &str| l.split('\t').map(str::trim).collect::<Vec<_>>() == ["org.example.Platform/x86_64/1", "wharf"];
    assert!(runtimes.lines().any(from_wharf), "the runtime came from wharf too: {runtimes}");
    let ran = fp.ok(&["run", "--user", "org.example.Hello"]);
    assert_eq!(ran.trim(), "hello from wharf");
    // The client used the index endpoint, anonymously.
    let asked = wharf.log_lines().iter().filter(|l| l.contains("/index/static") && l.contains("status=200")).count();
    assert!(asked >= 1, "flatpak never asked /index/static: {:?}", wharf.log_lines());

    // Made for caching: a strong validator from the answer, a 304 for it.
    let r = index(&wharf, "static", FLATPAK_QUERY, &[]).await;
    let etag = r.header("etag").expect("ETag").to_owned();
    assert!(etag.starts_with('"') && etag.len() > 10, "{etag}");
    assert_eq!(r.header("cache-control"), Some("public, max-age=60"));
    assert!(r.header("last-modified").is_some_and(|d| d.ends_with(" GMT")));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let again = index(&wharf, "static", FLATPAK_QUERY, &[("If-None-Match", &etag)]).await;
    assert_eq!((again.status, again.body.len()), (304, 0));
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    let dynamic = index(&wharf, "dynamic", "repository=apps/hello", &[]).await;
    assert_eq!((dynamic.status, dynamic.header("cache-control")), (200, Some("no-store")));
    assert_eq!(listed(&dynamic.json()), [("apps/hello".to_owned(), vec![APP_REF.to_owned()])]);
    // A new version changes the answer: the old tag no longer matches.
    copy(&clients, &app_oci, APP_REF, &format!("docker://{host}/apps/hello:1.0"), Some("pusher:pusher-pass"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = index(&wharf, "static", "repository=apps/hello", &[("If-None-Match", &etag)]).await;
        if r.status == 200 && r.json()["Results"][0]["Images"][0]["Tags"] == json!(["1.0", "latest"]) {
            break;
        }
        assert!(Instant::now() < deadline, "the new tag never showed: {} {}", r.status, String::from_utf8_lossy(&r.body));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_shows_what_distributions_serve_to_those_who_may_pull_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let fp = Flatpak::new(tmp.path());
    let (_, app_oci) = build_runtime_and_app(&fp, &tmp.path().join("build"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    copy(&clients, &app_oci, APP_REF, &format!("docker://{}/flathub/hello:latest", upstream.host()), None);

    // Off by default: no such endpoint.
    let off = start(&tmp.path().join("off"), &[], false);
    let r = index(&off, "static", FLATPAK_QUERY, &[]).await;
    assert_eq!((r.status, r.error_code()), (404, "NOT_FOUND".to_owned()));
    off.stop();

    let wharf = start(&tmp.path().join("wharf"), &[], true);
    // Synced on demand: the layers stay upstream, the config is fetched
    // with the manifests, so the index knows what the image is.
    admin_ok(&wharf, "POST", "repositories", Some(json!({"name": "hello"}))).await;
    admin_ok(
        &wharf,
        "POST",
        "remotes",
        Some(json!({"name": "flathub", "url": upstream.url(), "upstream_name": "flathub/hello", "policy": "on_demand"})),
    )
    .await;
    let task = admin_ok(&wharf, "POST", "repositories/hello/sync", Some(json!({"remote": "flathub"}))).await;
    let task = wait_task(&wharf, task["id"].as_u64().expect("task id")).await;
    assert_eq!(task["state"], "completed", "{task}");
    let r = index(&wharf, "static", FLATPAK_QUERY, &[]).await;
    assert_eq!(listed(&r.json()), [], "a repository no distribution serves is not in the index");
    admin_ok(&wharf, "POST", "distributions", Some(json!({"name": "hello", "base_path": "apps/hello", "repository": "hello"}))).await;
    admin_ok(
        &wharf,
        "POST",
        "distributions",
        Some(json!({"name": "hello-private", "base_path": "private/hello", "repository": "hello", "private": true})),
    )
    .await;
    let anonymous = wait_listed(&wharf, &["apps/hello"], &[]).await;
    assert_eq!(listed(&anonymous), [("apps/hello".to_owned(), vec![APP_REF.to_owned()])], "the private one is not shown anonymously");

    // Signed in, each sees what its rules let it pull: the reader the
    // private one only (apps/hello is public: everyone sees it).
    let reader = basic("reader");
    let as_reader = index(&wharf, "static", FLATPAK_QUERY, &[("Authorization", &reader)]).await;
    assert_eq!(as_reader.status, 200);
    assert_eq!(as_reader.header("cache-control"), Some("private, max-age=60"), "a signed-in answer is no shared cache's");
    let names: Vec<String> = listed(&as_reader.json()).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["apps/hello", "private/hello"]);
    // With a bearer token for the private repository, the same.
    let token = http::request(
        "GET",
        &format!("{}/token?service=wharf&scope=repository:private/hello:pull", wharf.url()),
        &[("Authorization", &reader)],
    )
    .await;
    assert_eq!(token.status, 200, "{}", String::from_utf8_lossy(&token.body));
    let bearer = format!("Bearer {}", token.json()["token"].as_str().expect("token"));
    let names: Vec<String> =
        listed(&index(&wharf, "static", FLATPAK_QUERY, &[("Authorization", &bearer)]).await.json()).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["apps/hello", "private/hello"]);
    // Wrong credentials are refused, not treated as anonymous.
    let wrong = crate::auth::basic(("reader", "not-the-password"));
    assert_eq!(index(&wharf, "static", FLATPAK_QUERY, &[("Authorization", &wrong)]).await.status, 401);
    // Anonymous answers are not the reader's: different tags.
    let anonymous_etag = index(&wharf, "static", FLATPAK_QUERY, &[]).await.header("etag").map(str::to_owned);
    assert_ne!(anonymous_etag.as_deref(), as_reader.header("etag"));

    // The pulled image is what the index says it is.
    let config = clients.skopeo_ok(&["inspect", "--config", "--tls-verify=false", &format!("docker://{}/apps/hello:latest", wharf.host())]);
    let config: Value = serde_json::from_slice(&config).expect("config JSON");
    assert_eq!(config["config"]["Labels"]["org.flatpak.ref"], APP_REF);

    // Bad queries are refused with the reason, never widened.
    for bad in ["colour=blue", "label%3A=1", "label%3Aa%3Aexists=yes"] {
        let r = index(&wharf, "static", bad, &[]).await;
        assert_eq!(r.status, 400, "{bad}: {}", String::from_utf8_lossy(&r.body));
        assert!(!r.error_code().is_empty(), "OCI error JSON for {bad}");
    }
    let r = http::request("POST", &format!("{}/index/static", wharf.url()), &[]).await;
    assert_eq!(r.status, 405, "{}", String::from_utf8_lossy(&r.body));
}
