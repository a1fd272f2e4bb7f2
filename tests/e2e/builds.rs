//! Image builds from a Containerfile without a container runtime (issue
//! 19, the API so far): a context tar POSTed to the admin API becomes a
//! task with its steps and log, then one version of a push repository
//! that podman and skopeo pull; the same build gives the same digest;
//! who may build, and bad input, are answered before anything is stored.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::clients::Clients;
use crate::http;
use crate::sync::{admin_ok, podman_pull};
use crate::wharf::{write_config, Wharf};

/// A wharf with no upstream, an admin (`pusher`), a builder allowed to
/// push `team/*` only, and a reader.
fn start(dir: &std::path::Path) -> Wharf {
    start_with(dir, &[])
}

/// The same, pulling through `upstreams`.
fn start_with(dir: &std::path::Path, upstreams: &[crate::wharf::UpstreamEntry]) -> Wharf {
    start_full(dir, upstreams, "")
}

/// The same, `extra` TOML at the end of the config.
fn start_full(dir: &std::path::Path, upstreams: &[crate::wharf::UpstreamEntry], extra: &str) -> Wharf {
    let config = write_config(dir, upstreams);
    let mut toml = std::fs::read_to_string(&config).expect("read config");
    let user = crate::auth::user_toml;
    toml.push_str("\n[auth]\nbasic = true\n");
    toml.push_str(&user("pusher", true));
    toml.push_str(&user("builder", false));
    toml.push_str(&user("reader", false));
    toml.push_str(
        "\n[[auth.rule]]\nusers = [\"pusher\"]\nrepositories = [\"*\"]\nactions = [\"pull\", \"push\", \"delete\"]\n\
         \n[[auth.rule]]\nusers = [\"builder\"]\nrepositories = [\"team/*\"]\nactions = [\"pull\", \"push\"]\n\
         \n[[auth.rule]]\nusers = [\"reader\"]\nrepositories = [\"*\"]\nactions = [\"pull\"]\n",
    );
    toml.push_str(extra);
    std::fs::write(&config, toml).expect("write config");
    Wharf::start_with_config(&config)
}

fn basic(user: &str) -> String {
    crate::auth::basic((user, &format!("{user}-pass")))
}

/// A context as a tar, names written as given (a hostile client's `..`
/// too, which the tar crate would refuse to write).
fn context_tar(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, body, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_size(body.len() as u64);
        h.set_mode(*mode);
        h.set_cksum();
        b.append(&h, *body).expect("tar entry");
    }
    b.into_inner().expect("tar")
}

async fn post_build(w: &Wharf, user: &str, repo: &str, query: &str, tar: Vec<u8>) -> http::Response {
    let url = format!("{}/api/v1/repositories/{}/build?{query}", w.admin_url(), repo.replace('/', "%2F"));
    let auth = basic(user);
    http::request_with_body("POST", &url, &[("Authorization", auth.as_str()), ("Content-Type", "application/x-tar")], tar).await
}

async fn wait(w: &Wharf, id: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let auth = basic("pusher");
    loop {
        let task = http::request("GET", &format!("{}/api/v1/tasks/{id}", w.admin_url()), &[("Authorization", auth.as_str())]).await.json();
        if !matches!(task["state"].as_str(), Some("waiting" | "running")) {
            return task;
        }
        assert!(Instant::now() < deadline, "build task {id} never ended: {task}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const CONTAINERFILE: &[u8] = b"FROM scratch\nARG VERSION=0.1\nCOPY --chmod=0755 tool /usr/local/bin/tool\n\
    ENV VERSION=$VERSION\nLABEL org.opencontainers.image.version=$VERSION\nWORKDIR /data\nUSER 1000\n\
    ENTRYPOINT [\"/usr/local/bin/tool\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_containerfile_builds_into_a_push_repository_that_clients_pull_with_the_same_digest_every_time() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let w = start(&tmp.path().join("wharf"));
    let tar = context_tar(&[("Containerfile", CONTAINERFILE, 0o644), ("tool", b"#!/bin/sh\necho tool\n", 0o644)]);
    let args = "tags=1.4,latest&build_args=%7B%22VERSION%22%3A%221.4%22%7D";

    // A user allowed to push team/* builds there.
    let r = post_build(&w, "builder", "team/tool", args, tar.clone()).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let task = wait(&w, r.json()["id"].as_u64().expect("id")).await;
    assert_eq!(task["state"], "completed", "{task}");
    assert_eq!(task["created_resources"], json!([{"type": "repository_version", "repository": "team/tool", "number": 1}]));
    assert_eq!(task["step"], "STEP 8/8: ENTRYPOINT [\"/usr/local/bin/tool\"]");
    assert_eq!((&task["progress"]["items_done"], &task["progress"]["items_total"]), (&json!(8), &json!(8)), "steps count: {task}");
    let log = admin_ok(&w, "GET", &format!("tasks/{}/log", task["id"]), None).await;
    assert!(log["log"].as_str().unwrap_or_default().contains("STEP 3/8: COPY --chmod=0755 tool /usr/local/bin/tool\n"), "{log}");

    // skopeo sees the config; podman pulls the same digest.
    let raw = clients.skopeo_ok(&["inspect", "--tls-verify=false", "--config", &format!("docker://{}/team/tool:1.4", w.host())]);
    let config: Value = serde_json::from_slice(&raw).expect("config JSON");
    assert_eq!(config["config"]["Entrypoint"], json!(["/usr/local/bin/tool"]));
    assert_eq!(config["config"]["Env"], json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "VERSION=1.4"]));
    assert_eq!(config["config"]["Labels"]["org.opencontainers.image.version"], "1.4");
    assert_eq!((config["config"]["WorkingDir"].as_str(), config["config"]["User"].as_str()), (Some("/data"), Some("1000")));
    let head = http::request("HEAD", &format!("{}/v2/team/tool/manifests/latest", w.url()), &[]).await;
    let digest = head.header("docker-content-digest").expect("digest").to_owned();
    assert_eq!(podman_pull(&clients, &format!("{}/team/tool:1.4", w.host())), digest);

    // Built on it: FROM an image in wharf, its layers carried over.
    let child = context_tar(&[("Containerfile", b"FROM team/tool:1.4\nCOPY extra /etc/extra\n", 0o644), ("extra", b"x\n", 0o644)]);
    let r = post_build(&w, "builder", "team/child", "tags=1", child).await;
    let task = wait(&w, r.json()["id"].as_u64().expect("id")).await;
    assert_eq!(task["state"], "completed", "{task}");
    let raw = clients.skopeo_ok(&["inspect", "--tls-verify=false", &format!("docker://{}/team/child:1", w.host())]);
    let child: Value = serde_json::from_slice(&raw).expect("inspect JSON");
    assert_eq!(child["Layers"].as_array().map(Vec::len), Some(3), "the base's two layers and one more: {child}");
    // A base the user may not pull is not found, as for a client.
    let private = context_tar(&[("Containerfile", b"FROM secret/base:1\n", 0o644)]);
    let r = post_build(&w, "builder", "team/child", "tags=2", private).await;
    let task = wait(&w, r.json()["id"].as_u64().expect("id")).await;
    assert!(task["error"].as_str().unwrap_or_default().contains("not found, or you may not pull it"), "{task}");

    // Again, and on a second wharf: the same digest.
    let again = post_build(&w, "pusher", "team/tool", args, tar.clone()).await;
    let task = wait(&w, again.json()["id"].as_u64().expect("id")).await;
    assert_eq!((task["state"].as_str(), &task["created_resources"]), (Some("completed"), &json!([])), "nothing new: {task}");
    let other = start(&tmp.path().join("other"));
    let r = post_build(&other, "pusher", "team/tool", args, tar.clone()).await;
    assert_eq!(wait(&other, r.json()["id"].as_u64().expect("id")).await["state"], "completed");
    let head = http::request("HEAD", &format!("{}/v2/team/tool/manifests/1.4", other.url()), &[]).await;
    assert_eq!(head.header("docker-content-digest"), Some(digest.as_str()), "the same build on another node");

    // Refused before anything runs: no push right, a read-only kind, a
    // Containerfile that does not parse, a context entry out of it, RUN
    // without a runner (naming the line).
    assert_eq!(post_build(&w, "builder", "other/tool", args, tar.clone()).await.status, 403);
    assert_eq!(post_build(&w, "reader", "team/tool", args, tar.clone()).await.status, 403);
    admin_ok(&w, "POST", "repositories", Some(json!({"name": "synced"}))).await;
    assert_eq!(post_build(&w, "pusher", "synced", "", tar.clone()).await.status, 409);
    let bad = context_tar(&[("Containerfile", b"FROM scratch\nFETCH x /y\n", 0o644)]);
    let r = post_build(&w, "pusher", "team/bad", "", bad).await;
    assert_eq!((r.status, r.json()["error"]["message"].as_str()), (400, Some("Containerfile line 2: unknown instruction FETCH")));
    let escaping = context_tar(&[("Containerfile", b"FROM scratch\n", 0o644), ("../outside", b"x", 0o644)]);
    let r = post_build(&w, "pusher", "team/bad", "", escaping).await;
    assert!(r.status == 400 && String::from_utf8_lossy(&r.body).contains("out of the context"), "{}", String::from_utf8_lossy(&r.body));
    let run = context_tar(&[("Containerfile", b"FROM scratch\nRUN echo hi\n", 0o644)]);
    let r = post_build(&w, "pusher", "team/bad", "", run).await;
    let message = r.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(r.status == 400 && message.starts_with("Containerfile line 2: RUN needs a runner: set [build] runner = \"buildah\""), "{message}");
    let repos = admin_ok(&w, "GET", "repositories", None).await;
    let names: Vec<&str> = repos["results"].as_array().expect("results").iter().filter_map(|r| r["name"].as_str()).collect();
    assert!(!names.contains(&"team/bad"), "nothing stored for refused builds: {names:?}");
    for w in [w, other] {
        w.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wharf_repository_build_packs_the_context_without_what_it_ignores_and_prints_the_log() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let w = start(&tmp.path().join("wharf"));
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(ctx.join("target")).expect("mkdir");
    std::fs::write(ctx.join("tool"), b"#!/bin/sh\n").expect("write");
    std::fs::write(ctx.join("target/big"), vec![7u8; 1 << 20]).expect("write");
    std::fs::write(ctx.join(".containerignore"), "target\n").expect("write");
    // The Containerfile outside the context travels with it.
    let containerfile = tmp.path().join("Containerfile");
    std::fs::write(&containerfile, "FROM scratch\nARG V\nCOPY . /app/\nLABEL v=$V\n").expect("write");
    let (c, f) = (ctx.display().to_string(), containerfile.display().to_string());
    let out = crate::curate::wharf_cli(
        &w,
        &["repository", "build", "--name", "team/cli", "--context", &c, "--containerfile", &f, "--tag", "2", "--build-arg", "V=7"],
    )
    .await;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("created resources  team/cli version 1"), "{stdout}");
    assert!(stderr.contains("STEP 3/4: COPY . /app/\n") && stderr.contains("stored as team/cli version 1"), "{stderr}");
    let raw = clients.skopeo_ok(&["inspect", "--tls-verify=false", &format!("docker://{}/team/cli:2", w.host())]);
    let image: Value = serde_json::from_slice(&raw).expect("inspect JSON");
    assert_eq!(image["Labels"]["v"], "7");
    let task = admin_ok(&w, "GET", "tasks?kind=build", None).await;
    let params = &task["results"][0]["params"];
    assert!(params["context_bytes"].as_u64().expect("bytes") < 1000, "target/ left out: {params}");
    w.stop();
}

/// A context tar of one file that says it has `size` bytes, streamed
/// lazily (zeros after the header): never held whole by anyone.
fn huge_context(size: u64) -> impl http_body::Body<Data = bytes::Bytes, Error = std::io::Error> + Send + Unpin + 'static {
    let mut h = tar::Header::new_gnu();
    h.set_path("huge.bin").expect("path");
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    let header = bytes::Bytes::copy_from_slice(h.as_bytes());
    let zeros = bytes::Bytes::from(vec![0u8; 1 << 20]);
    let chunks = std::iter::once(header).chain(std::iter::repeat_n(zeros, (size >> 20) as usize));
    http_body_util::StreamBody::new(futures_util::stream::iter(chunks.map(|c| Ok(http_body::Frame::data(c)))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platforms_build_one_image_each_under_an_index_and_bad_input_is_refused_storing_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let w = start(&tmp.path().join("wharf"));

    // One image per platform (TARGETARCH picks its file), under an index.
    let base = context_tar(&[
        ("Containerfile", b"FROM scratch\nARG TARGETARCH\nCOPY $TARGETARCH.txt /arch\n", 0o644),
        ("amd64.txt", b"amd64\n", 0o644),
        ("arm64.txt", b"arm64\n", 0o644),
    ]);
    let r = post_build(&w, "pusher", "team/multi", "tags=1&platform=linux/amd64,linux/arm64", base).await;
    let task = wait(&w, r.json()["id"].as_u64().expect("id")).await;
    assert_eq!(task["state"], "completed", "{task}");
    let raw = clients.inspect_raw(&format!("docker://{}/team/multi:1", w.host()), None);
    let index: Value = serde_json::from_slice(&raw).expect("index JSON");
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| format!("{}/{}", m["platform"]["os"].as_str().unwrap_or(""), m["platform"]["architecture"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    // FROM the index: each platform's build starts from its own image.
    let child = context_tar(&[("Containerfile", b"FROM team/multi:1\nLABEL child=yes\n", 0o644)]);
    let r = post_build(&w, "pusher", "team/child", "tags=1&platform=linux/arm64", child).await;
    assert_eq!(wait(&w, r.json()["id"].as_u64().expect("id")).await["state"], "completed");
    let layout = tmp.path().join("child");
    clients.pull_to_layout(&format!("docker://{}/team/child:1", w.host()), &layout, "1", &["--override-arch", "arm64"]);
    let config_raw = clients.skopeo_ok(&["inspect", "--config", &format!("oci:{}:1", layout.display())]);
    let config: Value = serde_json::from_slice(&config_raw).expect("config JSON");
    assert_eq!((config["architecture"].as_str(), config["config"]["Labels"]["child"].as_str()), (Some("arm64"), Some("yes")));
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index")).expect("JSON");
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(layout.join("blobs/sha256").join(index["manifests"][0]["digest"].as_str().expect("digest").trim_start_matches("sha256:")))
            .expect("manifest"),
    )
    .expect("manifest JSON");
    let layer = std::fs::read(layout.join("blobs/sha256").join(manifest["layers"][0]["digest"].as_str().expect("layer").trim_start_matches("sha256:")))
        .expect("layer");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(layer.as_slice()));
    let mut arch = String::new();
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        if entry.path().expect("path").to_string_lossy() == "arch" {
            std::io::Read::read_to_string(&mut entry, &mut arch).expect("read");
        }
    }
    assert_eq!(arch, "arm64\n", "the arm64 base's file");

    // Bad input: each a clear error, nothing stored.
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("an unterminated heredoc", context_tar(&[("Containerfile", b"FROM scratch\nCOPY <<EOF /motd\nhello\n", 0o644)]), "Containerfile line 2: "),
        ("an absolute path", context_tar(&[("Containerfile", b"FROM scratch\n", 0o644), ("/etc/cron.d/x", b"x", 0o644)]), "absolute"),
        ("a device", {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(13);
            h.set_mode(0o644);
            b.append_data(&mut h, "Containerfile", &b"FROM scratch\n"[..]).expect("tar");
            let mut d = tar::Header::new_gnu();
            d.set_entry_type(tar::EntryType::Char);
            d.set_device_major(1).expect("major");
            d.set_device_minor(3).expect("minor");
            d.set_size(0);
            d.set_mode(0o666);
            b.append_data(&mut d, "null", std::io::empty()).expect("tar");
            b.into_inner().expect("tar")
        }, "device"),
    ];
    for (what, tar, says) in cases {
        let r = post_build(&w, "pusher", "team/bad", "", tar).await;
        let message = r.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
        assert!(r.status == 400 && message.contains(says), "{what}: {} {message}", r.status);
    }
    // A symlink out of the context exists, but nothing reads through it.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(28);
    h.set_mode(0o644);
    b.append_data(&mut h, "Containerfile", &b"FROM scratch\nCOPY etc/ /etc\n"[..]).expect("tar");
    let mut l = tar::Header::new_gnu();
    l.set_entry_type(tar::EntryType::Symlink);
    l.set_size(0);
    l.set_mode(0o777);
    b.append_link(&mut l, "etc", "../../../../etc").expect("tar");
    let r = post_build(&w, "pusher", "team/bad", "", b.into_inner().expect("tar")).await;
    let task = wait(&w, r.json()["id"].as_u64().unwrap_or_else(|| panic!("{} {}", r.status, String::from_utf8_lossy(&r.body)))).await;
    let error = task["error"].as_str().unwrap_or_default();
    assert!(task["state"] == "failed" && error.starts_with("Containerfile line 2: "), "{task}");
    // A 10 GB context is refused as soon as its first entry says so.
    let url = format!("{}/api/v1/repositories/team%2Fbad/build", w.admin_url());
    let auth = basic("pusher");
    let r = http::request_with_stream("POST", &url, &[("Authorization", auth.as_str()), ("Content-Type", "application/x-tar")], huge_context(10 << 30)).await;
    let message = r.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(r.status == 400 && message.contains("build.max_context_size"), "{} {message}", r.status);
    let repos = admin_ok(&w, "GET", "repositories", None).await;
    let names: Vec<&str> = repos["results"].as_array().expect("results").iter().filter_map(|r| r["name"].as_str()).collect();
    assert!(!names.contains(&"team/bad"), "nothing stored for refused builds: {names:?}");
    let spool: Vec<_> = std::fs::read_dir(tmp.path().join("wharf/storage/spool")).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(spool.iter().all(|n| !n.to_string_lossy().starts_with("build-")), "build directories removed: {spool:?}");
    w.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_image_comes_through_the_pull_through_path_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = crate::registry::Registry::start(&tmp.path().join("upstream"));
    let base = crate::images::Image::random(&[40_000, 30_000]);
    crate::images::push(&clients, tmp.path(), &base, &upstream.host(), "library/base", &["1"], None);
    let w = start_with(&tmp.path().join("wharf"), &[crate::wharf::UpstreamEntry::new("up", &upstream.url()).default()]);

    let tar = context_tar(&[("Containerfile", b"FROM library/base:1\nCOPY extra /extra\n", 0o644), ("extra", b"x\n", 0o644)]);
    for (n, tag) in ["1", "2"].iter().enumerate() {
        let r = post_build(&w, "pusher", "team/on-base", &format!("tags={tag}"), tar.clone()).await;
        let task = wait(&w, r.json()["id"].as_u64().expect("id")).await;
        assert_eq!(task["state"], "completed", "build {n}: {task}");
    }
    let raw = clients.skopeo_ok(&["inspect", "--tls-verify=false", &format!("docker://{}/team/on-base:2", w.host())]);
    let image: Value = serde_json::from_slice(&raw).expect("inspect JSON");
    let layers: Vec<&str> = image["Layers"].as_array().expect("layers").iter().filter_map(Value::as_str).collect();
    assert_eq!(layers.len(), 3, "the base's two layers and the COPY's: {image}");
    for (ours, theirs) in layers.iter().zip(&base.layers) {
        assert_eq!(*ours, theirs.digest, "the base's layers, as the upstream has them");
        assert_eq!(upstream.blob_gets_reaching(&theirs.digest, 1), 1, "fetched once, through the verified fill, for both builds");
    }
    // Recorded as any pull through wharf is (written in the background).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let repos = admin_ok(&w, "GET", "repositories", None).await;
        let names: Vec<String> = repos["results"].as_array().expect("results").iter().filter_map(|r| r["name"].as_str().map(str::to_owned)).collect();
        if names.iter().any(|n| n == "up/library/base") {
            break;
        }
        assert!(Instant::now() < deadline, "the base's pull-through repository was never recorded: {names:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.stop();
}

/// Python's http.server on a free loopback port serving `dir`, its
/// request log in `log`: (the child, its port).
fn file_server(dir: &std::path::Path, log: &std::path::Path) -> (std::process::Child, u16) {
    use std::io::BufRead;
    let mut child = std::process::Command::new("python3")
        .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("python3 -m http.server");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("its first line");
    // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
    let port = line.split(" port ").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|p| p.parse().ok());
    (child, port.unwrap_or_else(|| panic!("no port in {line:?}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_fetches_a_url_only_under_a_prefix_the_operator_listed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let served = tmp.path().join("served");
    std::fs::create_dir_all(served.join("files")).expect("mkdir");
    std::fs::create_dir_all(served.join("private")).expect("mkdir");
    std::fs::write(served.join("files/tool-1.4.bin"), b"tool bytes\n").expect("write");
    std::fs::write(served.join("private/key"), b"secret\n").expect("write");
    let log = tmp.path().join("server.log");
    let (mut server, port) = file_server(&served, &log);
    let base = format!("http://127.0.0.1:{port}");

    // Not listed anywhere: refused, and the server never asked.
    let plain = start(&tmp.path().join("plain"));
    let add = |url: &str| context_tar(&[("Containerfile", format!("FROM scratch\nADD {url} /opt/\n").as_bytes(), 0o644)]);
    let r = post_build(&plain, "pusher", "team/fetched", "", add(&format!("{base}/files/tool-1.4.bin"))).await;
    let task = wait(&plain, r.json()["id"].as_u64().expect("id")).await;
    let error = task["error"].as_str().unwrap_or_default();
    assert!(task["state"] == "failed" && error.starts_with("Containerfile line 2: ADD ") && error.contains("[build] add_urls"), "{task}");

    // Listed: fetched once into the layer, 0600; anything else still refused.
    let w = start_full(&tmp.path().join("wharf"), &[], &format!("\n[build]\nadd_urls = [\"{base}/files/\"]\n"));
    let r = post_build(&w, "pusher", "team/fetched", "tags=1", add(&format!("{base}/files/tool-1.4.bin"))).await;
    let task = wait(&w, r.json()["id"].as_u64().expect("id")).await;
    assert_eq!(task["state"], "completed", "{task}");
    let layout = tmp.path().join("fetched");
    clients.pull_to_layout(&format!("docker://{}/team/fetched:1", w.host()), &layout, "1", &[]);
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index")).expect("JSON");
    let blob = |d: &str| std::fs::read(layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).expect("blob");
    let manifest: Value = serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().expect("digest"))).expect("manifest");
    let layer = blob(manifest["layers"][0]["digest"].as_str().expect("layer"));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(layer.as_slice()));
    let mut found = None;
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        if entry.path().expect("path").to_string_lossy() == "opt/tool-1.4.bin" {
            let mode = entry.header().mode().expect("mode");
            let mut body = String::new();
            std::io::Read::read_to_string(&mut entry, &mut body).expect("read");
            found = Some((mode, body));
        }
    }
    assert_eq!(found, Some((0o600, "tool bytes\n".to_owned())));
    for url in [format!("{base}/private/key"), format!("{base}/files/../private/key"), format!("{base}/files/%2e%2e/private/key")] {
        let r = post_build(&w, "pusher", "team/fetched", "tags=2", add(&url)).await;
        let task = wait(&w, r.json()["id"].as_u64().expect("id")).await;
        assert_eq!(task["state"], "failed", "{url}: {task}");
    }
    server.kill().expect("kill");
    let _ = server.wait();
    let requests = std::fs::read_to_string(&log).expect("log");
    assert_eq!(requests.matches("GET /files/tool-1.4.bin").count(), 1, "{requests}");
    assert!(!requests.contains("private"), "a refused URL is never fetched: {requests}");
    for w in [plain, w] {
        w.stop();
    }
}
