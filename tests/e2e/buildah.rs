//! Builds with buildah (issue 19): `RUN` handed to buildah when
//! `[build] runner = "buildah"` (its bases from wharf, no network unless
//! allowed, stopped at the time-out or the size bound with everything it
//! started), and the
//! native builder's output compared with buildah's for Containerfiles
//! without `RUN`: the same files, the same config.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::clients::{require_program, Clients};
use crate::http;
use crate::sync::{admin_ok, podman_pull, wharf_cli};
use crate::wharf::{write_config, Wharf};

/// A wharf with no upstream and no sign-in, with `build` as its
/// `[build]` table.
fn start(dir: &Path, build: &str) -> Wharf {
    let config = write_config(dir, &[]);
    let mut toml = std::fs::read_to_string(&config).expect("read config");
    toml.push_str(&format!("\n[build]\n{build}\n"));
    std::fs::write(&config, toml).expect("write config");
    Wharf::start_with_config(&config)
}

/// What a context entry is.
enum Item<'a> {
    File(&'a [u8], u32),
    Link(&'a str),
}

fn tar_of(items: &[(&str, Item<'_>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, item) in items {
        let mut h = tar::Header::new_gnu();
        match item {
            Item::File(body, mode) => {
                h.set_size(body.len() as u64);
                h.set_mode(*mode);
                b.append_data(&mut h, path, *body).expect("tar file");
            }
            Item::Link(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_mode(0o777);
                b.append_link(&mut h, path, target).expect("tar link");
            }
        }
    }
    b.into_inner().expect("tar")
}

async fn build(w: &Wharf, repo: &str, query: &str, tar: Vec<u8>) -> Value {
    let url = format!("{}/api/v1/repositories/{}/build?{query}", w.admin_url(), repo.replace('/', "%2F"));
    let r = http::request_with_body("POST", &url, &[("Content-Type", "application/x-tar")], tar).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["id"].as_u64().expect("task id");
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let task = admin_ok(w, "GET", &format!("tasks/{id}"), None).await;
        if !matches!(task["state"].as_str(), Some("waiting" | "running")) {
            return task;
        }
        assert!(Instant::now() < deadline, "build task {id} never ended: {task}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn log_of(w: &Wharf, task: &Value) -> String {
    admin_ok(w, "GET", &format!("tasks/{}/log", task["id"]), None).await["log"].as_str().unwrap_or_default().to_owned()
}

/// A busybox image built natively: the static busybox and its applets
/// as symlinks, enough for a shell, `nc` and `sleep` (busybox's static
/// `wget` crashes on Debian 12).
async fn busybox_base(w: &Wharf) {
    require_program("busybox", "busybox-static");
    let busybox = std::fs::read("/bin/busybox").expect("read /bin/busybox (busybox-static)");
    let mut items = vec![("Containerfile", Item::File(b"FROM scratch\nCOPY bin /bin\n", 0o644)), ("bin/busybox", Item::File(&busybox, 0o755))];
    let applets = ["sh", "echo", "cat", "nc", "grep", "printf", "sleep", "false", "test", "dd"];
    for a in &applets {
        items.push((Box::leak(format!("bin/{a}").into_boxed_str()), Item::Link("busybox")));
    }
    let task = build(w, "team/busybox", "tags=1", tar_of(&items)).await;
    assert_eq!(task["state"], "completed", "{task}");
}

/// A file as a layer says it: kind (`d`, `f`, `l`), mode, uid, gid, and
/// its content or link target.
type FileFacts = (char, u32, u64, u64, Vec<u8>);

/// Every file of an OCI layout's image, its layers applied in order
/// (whiteouts too): path to (kind, mode, uid, gid, content or target),
/// and the image's config.
fn flatten(layout: &Path) -> (Value, BTreeMap<String, FileFacts>) {
    let read = |digest: &str| std::fs::read(layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))).expect("blob");
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json")).expect("index JSON");
    let manifest: Value = serde_json::from_slice(&read(index["manifests"][0]["digest"].as_str().expect("digest"))).expect("manifest JSON");
    let config: Value = serde_json::from_slice(&read(manifest["config"]["digest"].as_str().expect("config"))).expect("config JSON");
    let mut files = BTreeMap::new();
    for layer in manifest["layers"].as_array().expect("layers") {
        let bytes = read(layer["digest"].as_str().expect("layer digest"));
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        for entry in archive.entries().expect("layer tar") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").display().to_string();
            let path = path.trim_start_matches("./").trim_end_matches('/').to_owned();
            let (dir, name) = path.rsplit_once('/').map_or(("", path.as_str()), |(d, n)| (d, n));
            if name == ".wh..wh..opq" {
                files.retain(|p: &String, _| !p.starts_with(&format!("{dir}/")));
                continue;
            }
            if let Some(gone) = name.strip_prefix(".wh.") {
                let gone = if dir.is_empty() { gone.to_owned() } else { format!("{dir}/{gone}") };
                files.retain(|p: &String, _| *p != gone && !p.starts_with(&format!("{gone}/")));
                continue;
            }
            let h = entry.header();
            let (mode, uid, gid) = (h.mode().expect("mode") & 0o7777, h.uid().expect("uid"), h.gid().expect("gid"));
            let (kind, body) = match h.entry_type() {
                tar::EntryType::Directory => ('d', Vec::new()),
                tar::EntryType::Symlink => ('l', entry.link_name().expect("link").expect("target").display().to_string().into_bytes()),
                _ => {
                    let mut body = Vec::new();
                    entry.read_to_end(&mut body).expect("file body");
                    ('f', body)
                }
            };
            files.insert(path, (kind, mode, uid, gid, body));
        }
    }
    (config, files)
}

fn lines_of(files: &BTreeMap<String, FileFacts>) -> Vec<String> {
    files
        .iter()
        .map(|(p, (k, m, u, g, b))| {
            let body = if *k == 'l' { String::from_utf8_lossy(b).into_owned() } else { format!("{} bytes sha {:x}", b.len(), crc(b)) };
            format!("{k} {m:04o} {u}:{g} {p} {body}")
        })
        .collect()
}

/// A checksum to tell contents apart in a diff (not security).
fn crc(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| (h ^ u64::from(x)).wrapping_mul(0x100000001b3))
}

/// Whether a process whose command line is `argv` runs on this machine.
fn running(argv: &[&str]) -> bool {
    let wanted: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain(std::iter::once(0))).collect();
    std::fs::read_dir("/proc").expect("/proc").flatten().any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_is_built_by_buildah_without_network_and_stopped_at_the_time_out() {
    require_program("buildah", "buildah");
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let w = start(&tmp.path().join("wharf"), "runner = \"buildah\"\ntimeout = \"20s\"\n");
    let open = start(&tmp.path().join("open"), "runner = \"buildah\"\nnetwork = true\nmax_output_size = \"40MiB\"\n");
    for node in [&w, &open] {
        busybox_base(node).await;
    }

    // A RUN with a build argument, a probe of the network (this node's
    // own registry port, on loopback; busybox's nc stops reading when its
    // input ends, so the input stays open while the answer comes), then a
    // native step after it.
    let containerfile = format!(
        "FROM team/busybox:1\nARG GREETING=hello\n\
         RUN echo \"$GREETING from RUN\" > /greeting && \\\n  ((printf 'GET /v2/ HTTP/1.0\\r\\n\\r\\n'; sleep 5) | nc -w 10 {} > /probe 2>&1; true) && if grep -q '^HTTP/1.. 200' /probe; then echo reached > /net; else echo none > /net; fi\n\
         COPY note /note\nCMD [\"cat\", \"/greeting\"]\n",
        w.host().replace(':', " ")
    );
    let context = |c: &str| tar_of(&[("Containerfile", Item::File(c.as_bytes(), 0o644)), ("note", Item::File(b"a note\n", 0o644))]);
    let task = build(&w, "team/ran", "tags=1&build_args=%7B%22GREETING%22%3A%22hi%22%7D", context(&containerfile)).await;
    assert_eq!(task["state"], "completed", "{task}\n{}", log_of(&w, &task).await);
    assert_eq!(task["created_resources"], json!([{"type": "repository_version", "repository": "team/ran", "number": 1}]));
    assert_eq!(task["step"], "STEP 5/5: CMD [\"cat\", \"/greeting\"]");
    let log = log_of(&w, &task).await;
    assert!(log.contains("the Containerfile has RUN: building with buildah") && log.contains("STEP 3/5: RUN echo \"$GREETING from RUN\" > /greeting && "), "{log}");
    // The same log through the CLI, whole or followed to the task's end.
    let id = task["id"].to_string();
    for follow in [&[][..], &["--follow"][..]] {
        let mut args = vec!["task", "log", "--id", id.as_str()];
        args.extend(follow);
        let (code, out, err) = wharf_cli(&w, &args).await;
        assert_eq!((code, out.as_str()), (0, log.as_str()), "{err}");
    }

    let layout = tmp.path().join("ran");
    clients.pull_to_layout(&format!("docker://{}/team/ran:1", w.host()), &layout, "1", &[]);
    let (config, files) = flatten(&layout);
    assert_eq!(files.get("greeting").map(|f| f.4.as_slice()), Some(&b"hi from RUN\n"[..]), "{:#?}", lines_of(&files));
    assert_eq!(files.get("net").map(|f| f.4.as_slice()), Some(&b"none\n"[..]), "RUN had no network");
    assert_eq!(files.get("note").map(|f| f.4.as_slice()), Some(&b"a note\n"[..]));
    assert_eq!(config["config"]["Cmd"], json!(["cat", "/greeting"]));
    let head = http::request("HEAD", &format!("{}/v2/team/ran/manifests/1", w.url()), &[]).await;
    let reference = format!("{}/team/ran:1", w.host());
    assert_eq!(podman_pull(&clients, &reference), head.header("docker-content-digest").expect("digest"));
    // And podman runs it (runc: crun refuses this machine's hybrid cgroups;
    // rlimits as the sandbox allows).
    let out = clients.podman_ok(&[
        "run", "--rm", "--runtime", "runc", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", &reference,
    ]);
    assert_eq!(String::from_utf8_lossy(&out), "hi from RUN\n");

    // Where the operator allows the network, the same probe reaches it:
    // the `none` above is the namespace's doing.
    let allowed = containerfile.replace(&w.host().replace(':', " "), &open.host().replace(':', " "));
    let task = build(&open, "team/ran", "tags=1", context(&allowed)).await;
    assert_eq!(task["state"], "completed", "{task}\n{}", log_of(&open, &task).await);
    let layout = tmp.path().join("open-ran");
    clients.pull_to_layout(&format!("docker://{}/team/ran:1", open.host()), &layout, "1", &[]);
    let files = flatten(&layout).1;
    let probe = files.get("probe").map(|f| String::from_utf8_lossy(&f.4).into_owned());
    assert_eq!(files.get("net").map(|f| f.4.clone()), Some(b"reached\n".to_vec()), "the probe saw {probe:?}");

    // A failing RUN fails the build naming its line; a RUN past the
    // time-out is stopped, with everything it started; nothing stored.
    let failing = context("FROM team/busybox:1\nCOPY note /note\nRUN test -e /missing\n");
    let task = build(&w, "team/failing", "", failing).await;
    assert_eq!(task["state"], "failed");
    let error = task["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("Containerfile line 3: ") && error.contains("exit status 1"), "{task}");
    let slow = context("FROM team/busybox:1\nRUN sleep 4242\n");
    let started = Instant::now();
    let task = build(&w, "team/slow", "", slow).await;
    assert_eq!(task["state"], "failed");
    let error = task["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("Containerfile line 2: the build ran longer than [build] timeout (20s) at STEP 2/2: RUN sleep 4242"), "{task}");
    assert!(started.elapsed() >= Duration::from_secs(20), "stopped at the time-out, not before");
    assert!(!running(&["sleep", "4242"]), "the RUN's process was killed with the build");
    // A RUN that writes past max_output_size is stopped while it runs.
    let big = context("FROM team/busybox:1\nRUN dd if=/dev/zero of=/big bs=1048576 count=64 && sleep 4343\n");
    let task = build(&open, "team/big", "", big).await;
    let error = task["error"].as_str().unwrap_or_default();
    assert!(
        task["state"] == "failed" && error.starts_with("Containerfile line 2: the build grew past [build] max_output_size (41943040 bytes) at STEP 2/2: RUN dd"),
        "{task}"
    );
    assert!(!running(&["sleep", "4343"]), "the RUN's process was killed with the build");
    let repos = admin_ok(&w, "GET", "repositories", None).await;
    let names: Vec<&str> = repos["results"].as_array().expect("results").iter().filter_map(|r| r["name"].as_str()).collect();
    assert!(!names.contains(&"team/failing") && !names.contains(&"team/slow"), "nothing stored: {names:?}");
    let repos = admin_ok(&open, "GET", "repositories", None).await;
    assert!(!repos.to_string().contains("team/big"), "nothing stored: {repos}");
    let spool: Vec<_> = std::fs::read_dir(tmp.path().join("wharf/storage/spool")).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(spool.iter().all(|n| !n.to_string_lossy().starts_with("build-")), "build directories removed: {spool:?}");
    for node in [w, open] {
        node.stop();
    }
}

/// A comparison case: a name, a Containerfile (`{base}` is where the
/// base image's reference goes), and the context's files.
type Case = (&'static str, &'static str, Vec<(&'static str, &'static [u8])>);

fn cases() -> Vec<Case> {
    vec![
        (
            "static binary",
            "FROM scratch\nCOPY --chmod=0755 tool /usr/local/bin/tool\nENTRYPOINT [\"/usr/local/bin/tool\"]\nCMD [\"--help\"]\n",
            vec![("tool", b"\x7fELF pretend static binary\n")],
        ),
        (
            "multi-stage app",
            "ARG APP=demo\nFROM scratch AS build\nCOPY src/ /src/\nCOPY *.txt /docs/\n\
             FROM {base}\nARG APP\nARG PORT=8080\nENV APP_NAME=$APP PORT=$PORT\nWORKDIR /srv/$APP\n\
             COPY --from=build /src ./src\nCOPY --from=build /docs/ /usr/share/doc/$APP/\nCOPY --chown=1000:1000 config.json ./\n\
             LABEL org.opencontainers.image.title=$APP maintainer=\"ops team\"\nEXPOSE $PORT 9090/udp\nVOLUME /data\n\
             USER 1000:1000\nSTOPSIGNAL SIGTERM\nENTRYPOINT [\"/usr/local/bin/tool\"]\n",
            vec![
                ("src/main.py", b"print('hi')\n"),
                ("src/lib/util.py", b"x = 1\n"),
                ("README.txt", b"read me\n"),
                ("NOTES.txt", b"notes\n"),
                ("config.json", b"{}\n"),
            ],
        ),
        ("tar added", "FROM scratch\nADD bundle.tar /opt/\nADD plain.txt /opt/plain.txt\nWORKDIR /opt\n", vec![("plain.txt", b"plain\n")]),
        (
            "ignored files",
            "FROM {base}\nCOPY . /ctx/\nENV PATH=/usr/local/bin:/bin\n",
            vec![
                (".containerignore", b"*.log\ntmp/\n!keep.log\n"),
                ("a.log", b"gone\n"),
                ("keep.log", b"kept\n"),
                ("tmp/scratch", b"gone\n"),
                ("docs/guide.md", b"guide\n"),
            ],
        ),
    ]
}

/// A tar of two files, for the ADD case.
fn bundle() -> Vec<u8> {
    tar_of(&[("etc/app.conf", Item::File(b"a=1\n", 0o600)), ("bin/run", Item::File(b"#!/bin/sh\n", 0o755))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_builder_makes_what_buildah_makes_for_containerfiles_without_run() {
    require_program("buildah", "buildah");
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let w = start(&tmp.path().join("wharf"), "");
    // A base both builders start from, in wharf.
    let base = tar_of(&[
        ("Containerfile", Item::File(b"FROM scratch\nCOPY tool /usr/local/bin/tool\nENV PATH=/usr/local/bin\nWORKDIR /srv\n", 0o644)),
        ("tool", Item::File(b"tool\n", 0o755)),
    ]);
    assert_eq!(build(&w, "team/base", "tags=1", base).await["state"], "completed");
    // buildah reaches wharf over plain HTTP.
    std::fs::write(
        clients.dir().join("registries.conf"),
        format!("unqualified-search-registries = []\n\n[[registry]]\nlocation = {:?}\ninsecure = true\n", w.host()),
    )
    .expect("registries.conf");

    let mut differences = Vec::new();
    for (n, (name, containerfile, files)) in cases().into_iter().enumerate() {
        let ctx = tmp.path().join(format!("case-{n}"));
        for (path, body) in &files {
            let path = ctx.join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, body).expect("write");
        }
        std::fs::write(ctx.join("bundle.tar"), bundle()).expect("bundle");
        let native_file = tmp.path().join(format!("native-{n}"));
        std::fs::write(&native_file, containerfile.replace("{base}", "team/base:1")).expect("write");
        let buildah_file = tmp.path().join(format!("buildah-{n}"));
        std::fs::write(&buildah_file, containerfile.replace("{base}", &format!("{}/team/base:1", w.host()))).expect("write");

        // Native: as a user builds, with the CLI.
        let repo = format!("cmp/case-{n}");
        let (c, f) = (ctx.display().to_string(), native_file.display().to_string());
        let (code, out, err) = wharf_cli(&w, &["repository", "build", "--name", &repo, "--context", &c, "--containerfile", &f, "--tag", "1"]).await;
        assert_eq!(code, 0, "{name}: {out}{err}");
        let native = tmp.path().join(format!("native-layout-{n}"));
        clients.pull_to_layout(&format!("docker://{}/{repo}:1", w.host()), &native, "1", &[]);

        // buildah, the same context and Containerfile.
        let tag = format!("localhost/cmp-{n}:1");
        let policy = clients.dir().join("policy.json").display().to_string();
        let b = buildah_file.display().to_string();
        clients.buildah_ok(&[
            "bud", "--signature-policy", &policy, "--isolation", "chroot", "--tls-verify=false", "--identity-label=false", "--format", "oci",
            "-f", &b, "-t", &tag, &c,
        ]);
        let theirs = tmp.path().join(format!("buildah-layout-{n}"));
        clients.buildah_ok(&["push", "--signature-policy", &policy, &tag, &format!("oci:{}:1", theirs.display())]);

        let ((native_config, native_files), (buildah_config, buildah_files)) = (flatten(&native), flatten(&theirs));
        let (ours, theirs) = (lines_of(&native_files), lines_of(&buildah_files));
        for line in ours.iter().filter(|l| !theirs.contains(l)) {
            differences.push(format!("{name}: only native: {line}"));
        }
        for line in theirs.iter().filter(|l| !ours.contains(l)) {
            differences.push(format!("{name}: only buildah: {line}"));
        }
        for field in ["Entrypoint", "Cmd", "Env", "WorkingDir", "User", "Labels", "ExposedPorts", "Volumes", "StopSignal"] {
            let (a, b) = (&native_config["config"][field], &buildah_config["config"][field]);
            let empty = |v: &Value| v.is_null() || v.as_object().is_some_and(|o| o.is_empty()) || v.as_str() == Some("");
            if a != b && !(empty(a) && empty(b)) {
                differences.push(format!("{name}: config {field}: native {a}, buildah {b}"));
            }
        }
        for field in ["os", "architecture"] {
            if native_config[field] != buildah_config[field] {
                differences.push(format!("{name}: {field}: native {}, buildah {}", native_config[field], buildah_config[field]));
            }
        }
    }
    assert!(differences.is_empty(), "the native builder differs from buildah:\n{}", differences.join("\n"));
    w.stop();
}
