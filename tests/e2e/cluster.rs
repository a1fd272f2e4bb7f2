//! Several nodes sharing one PostgreSQL database (started here): tasks run
//! once across them, a task's progress and its cancel reach every node,
//! and a node killed mid-task has its task failed by another within the
//! lease; an image pushed through one node shows in the other's Flatpak
//! index.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::clients::Clients;
use crate::http;
use crate::images::{self, Image};
use crate::postgres::Postgres;
use crate::registry::Registry;
use crate::wharf::{write_config_on, UpstreamEntry, Wharf};

async fn api(wharf: &Wharf, method: &str, path: &str, body: Option<Value>) -> Value {
    let url = format!("{}/api/v1/{path}", wharf.admin_url());
    let r = match body {
        Some(b) => http::request_with_body(method, &url, &[("Content-Type", "application/json")], b.to_string().into_bytes()).await,
        None => http::request(method, &url, &[]).await,
    };
    assert!((200..300).contains(&r.status), "{method} {path}: {} {}", r.status, String::from_utf8_lossy(&r.body));
    if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

/// Waits until task `id`, as `wharf` shows it, satisfies `done`.
async fn task_until(wharf: &Wharf, id: u64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let task = api(wharf, "GET", &format!("tasks/{id}"), None).await;
        if done(&task) {
            return task;
        }
        assert!(Instant::now() < deadline, "task {id} never {what}: {task}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn node(dir: &std::path::Path, pg: &str, name: &str) -> Wharf {
    let config = write_config_on(
        dir,
        &[UpstreamEntry::new("up", "http://127.0.0.1:9")],
        pg,
        &format!("[cluster]\nnode_name = {name:?}\nlease = \"10s\"\n"),
    );
    Wharf::start_with_config(&config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_once_across_nodes_and_a_killed_nodes_task_is_failed_by_another() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pg = Postgres::start(&tmp.path().join("pg"));
    pg.sql("postgres", "CREATE DATABASE wharf");
    let url = pg.url("wharf");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    // Forty layers at two requests a second: a sync that runs for a while.
    let image = Image::random(&[4 << 10; 40]);
    images::push(&clients, tmp.path(), &image, &upstream.host(), "team/big", &["1.0"], None);

    let a = node(&tmp.path().join("a"), &url, "a");
    let b = node(&tmp.path().join("b"), &url, "b");
    // Made through one node, seen by the other.
    api(&a, "POST", "repositories", Some(json!({"name": "big"}))).await;
    api(
        &b,
        "POST",
        "remotes",
        Some(json!({"name": "big", "url": upstream.url(), "upstream_name": "team/big", "download_concurrency": 1, "rate_limit": 2})),
    )
    .await;

    // A sync started on a runs there; b shows it running on a, and a
    // cancel asked on b stops it on a.
    let first = api(&a, "POST", "repositories/big/sync", Some(json!({"remote": "big"}))).await;
    let first = first["id"].as_u64().expect("id");
    let running = task_until(&b, first, "ran on a", |t| t["state"] == "running").await;
    assert_eq!(running["node"], "a");
    task_until(&b, first, "made progress", |t| t["progress"]["items_done"].as_u64() > Some(0)).await;
    api(&b, "POST", &format!("tasks/{first}/cancel"), None).await;
    let canceled = task_until(&a, first, "was canceled", |t| t["state"] != "running").await;
    assert_eq!((canceled["state"].clone(), canceled["error"].clone()), (json!("canceled"), json!("canceled by request")));

    // Two syncs of one repository, one per node: one at a time.
    let second = api(&a, "POST", "repositories/big/sync", Some(json!({"remote": "big"}))).await["id"].as_u64().expect("id");
    task_until(&a, second, "ran", |t| t["state"] == "running").await;
    let third = api(&b, "POST", "repositories/big/sync", Some(json!({"remote": "big"}))).await["id"].as_u64().expect("id");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waiting = api(&b, "GET", &format!("tasks/{third}"), None).await;
    assert_eq!((waiting["state"].clone(), waiting["node"].clone()), (json!("waiting"), json!("b")), "the resource is busy on a");

    // a dies mid-sync: b fails its task once a is silent past the lease,
    // then runs its own.
    let killed_at = Instant::now();
    a.kill9();
    let failed = task_until(&b, second, "was failed", |t| t["state"] != "running").await;
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["error"], "interrupted: its node, a, stopped answering");
    // Silent since its last heartbeat, at most 5 s before the kill.
    assert!(killed_at.elapsed() >= Duration::from_secs(5), "failed before the lease ran out");
    let done = task_until(&b, third, "completed", |t| t["state"] == "completed" || t["state"] == "failed").await;
    assert_eq!((done["state"].clone(), done["node"].clone()), (json!("completed"), json!("b")), "{done}");
    b.stop();
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A PostgreSQL database for the nodes, and an upstream holding
/// `team/app:1` (one small image).
struct Rig {
    tmp: tempfile::TempDir,
    _pg: Postgres,
    url: String,
    clients: Clients,
    upstream: Registry,
}

impl Rig {
    fn start() -> Rig {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pg = Postgres::start(&tmp.path().join("pg"));
        pg.sql("postgres", "CREATE DATABASE wharf");
        let url = pg.url("wharf");
        let clients = Clients::new(&tmp.path().join("clients"));
        let upstream = Registry::start(&tmp.path().join("upstream"));
        let image = Image::random(&[1024]);
        images::push(&clients, tmp.path(), &image, &upstream.host(), "team/app", &["1"], None);
        Rig { tmp, _pg: pg, url, clients, upstream }
    }
}

/// Polls `url` until its status is `want`; how long that took.
async fn until_status(url: &str, want: u16) -> Duration {
    let start = Instant::now();
    loop {
        let r = http::request("GET", url, &[("Accept", OCI_MANIFEST)]).await;
        if r.status == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{url} still answers {} (want {want})", r.status);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distribution_changed_through_one_node_is_served_by_the_other_at_once() {
    let Rig { tmp, _pg, url, clients, upstream } = Rig::start();
    let node = |name: &str| {
        let config = write_config_on(
            &tmp.path().join(name),
            &[UpstreamEntry::new("up", &upstream.url())],
            &url,
            &format!("[cluster]\nnode_name = {name:?}\n"),
        );
        Wharf::start_with_config(&config)
    };
    let (a, b) = (node("a"), node("b"));
    // Pulled through a: the repository and its version 1.
    let pulled = tmp.path().join("pulled");
    clients.pull_to_layout(&format!("docker://{}/up/team/app:1", a.host()), &pulled, "1", &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http::get(&format!("{}/api/v1/repositories/up%2Fteam%2Fapp", b.admin_url())).await;
        if r.status == 200 && r.json()["latest_version"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the pull was never recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let on_b = format!("{}/v2/released/app/manifests/1", b.url());
    assert_eq!(http::request("GET", &on_b, &[("Accept", OCI_MANIFEST)]).await.status, 404);
    api(&a, "POST", "distributions", Some(json!({"name": "released", "base_path": "released/app", "repository": "up/team/app"}))).await;
    let created = until_status(&on_b, 200).await;
    api(&a, "DELETE", "distributions/released", None).await;
    let deleted = until_status(&on_b, 404).await;
    eprintln!("a distribution made on one node was served by the other after {created:?}; deleted, gone after {deleted:?}");
    // At log level debug (as here), the PostgreSQL client's statements and
    // their parameters (remote credentials among them) stay out of the log.
    let leaked: Vec<String> = a.log_lines().into_iter().filter(|l| l.contains("tokio_postgres")).collect();
    assert!(leaked.is_empty(), "{leaked:?}");
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_one_node_issued_is_accepted_by_the_other_across_a_key_rotation() {
    let Rig { tmp, _pg, url, upstream, .. } = Rig::start();
    let auth = format!(
        "[auth]\n\n[[auth.user]]\nname = \"reader\"\npassword_hash = {:?}\n\n[[auth.user]]\nname = \"root\"\n\
         password_hash = {:?}\nadmin = true\n\n[[auth.rule]]\nusers = [\"reader\"]\nrepositories = [\"up/*\"]\nactions = [\"pull\"]\n",
        crate::auth::hash_password("reader-pass"),
        crate::auth::hash_password("root-pass"),
    );
    let node = |name: &str| {
        let upstreams = [UpstreamEntry::new("up", &upstream.url()).extra("anonymous_pull = false")];
        let config = write_config_on(&tmp.path().join(name), &upstreams, &url, &format!("[cluster]\nnode_name = {name:?}\n\n{auth}"));
        Wharf::start_with_config(&config)
    };
    let (a, b) = (node("a"), node("b"));
    let basic = |user: &str, password: &str| {
        use base64::Engine as _;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    };
    let token = |wharf: &Wharf| {
        let url = format!("{}/token?service=wharf&scope=repository:up/team/app:pull", wharf.url());
        let reader = basic("reader", "reader-pass");
        async move {
            let r = http::request("GET", &url, &[("Authorization", &reader)]).await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            r.json()["token"].as_str().expect("token").to_owned()
        }
    };
    let manifest_with = |wharf: &Wharf, token: &str| {
        let url = format!("{}/v2/up/team/app/manifests/1", wharf.url());
        let bearer = format!("Bearer {token}");
        async move { http::request("GET", &url, &[("Authorization", &bearer), ("Accept", OCI_MANIFEST)]).await.status }
    };
    let from_a = token(&a).await;
    assert_eq!(manifest_with(&b, &from_a).await, 200, "b accepts a token a signed");

    // Rotated through b: a signs with the new key at once (it heard the
    // change), and both still accept the old token.
    let root = basic("root", "root-pass");
    let rotated = http::request("POST", &format!("{}/api/v1/signing-keys", b.admin_url()), &[("Authorization", &root)]).await;
    assert!((200..300).contains(&rotated.status), "{}", String::from_utf8_lossy(&rotated.body));
    let current = rotated.json()["kid"].clone();
    assert!(current.is_string(), "{}", String::from_utf8_lossy(&rotated.body));
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let t = token(&a).await;
        let header = t.split('.').next().expect("header").to_owned();
        use base64::Engine as _;
        let header: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).expect("base64 header"),
        )
        .expect("json header");
        if header["kid"] == current {
            break t;
        }
        assert!(Instant::now() < deadline, "a never signed with the key rotated on b");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(manifest_with(&b, &after).await, 200);
    assert_eq!(manifest_with(&a, &from_a).await, 200, "the retired key still verifies");
    assert_eq!(manifest_with(&b, &from_a).await, 200);
    a.stop();
    b.stop();
}

/// Two nodes sharing the Rig's database and one bucket prefix, with a
/// pusher (`crate::push::PUSHER`).
fn shared_nodes(rig: &Rig, s3: &crate::s3::SeaweedFs) -> (Wharf, Wharf) {
    let node = |name: &str| {
        let extra = format!(
            "[cluster]\nnode_name = {name:?}\n\n[auth]\nbasic = true\n\n[[auth.user]]\nname = \"pusher\"\n\
             password_hash = {:?}\nadmin = true\n\n[[auth.rule]]\nusers = [\"pusher\"]\nrepositories = [\"*\"]\n\
             actions = [\"pull\", \"push\", \"delete\"]\n",
            crate::auth::hash_password("pusher-pass")
        );
        let dir = rig.tmp.path().join(name);
        let config = write_config_on(&dir, &[UpstreamEntry::new("up", &rig.upstream.url())], &rig.url, &extra);
        let toml = std::fs::read_to_string(&config).expect("read config");
        let toml = toml.replacen("\n\n[log]", &format!("\n{}\n\n[log]", s3.storage_toml("cluster/", "1GiB")), 1);
        std::fs::write(&config, toml).expect("write config");
        Wharf::start_with_config(&config)
    };
    (node("a"), node("b"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_started_on_one_node_is_continued_and_finished_on_the_other() {
    let rig = Rig::start();
    let s3 = crate::s3::SeaweedFs::start(&rig.tmp.path().join("s3"), "wharf-cluster");
    let (a, b) = shared_nodes(&rig, &s3);
    let auth = crate::push::authorization();
    let headers = |extra: &[(&'static str, String)]| {
        let mut h = vec![("Authorization", auth.clone())];
        h.extend(extra.iter().cloned());
        h
    };
    let call = |method: &'static str, url: String, extra: Vec<(&'static str, String)>, body: Vec<u8>| {
        let h = headers(&extra);
        async move {
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http::request_with_body(method, &url, &h, body).await
        }
    };
    let blob: Vec<u8> = (0..(11u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&blob)));
    let (first, rest) = blob.split_at(3 << 20);
    let (second, last) = rest.split_at(7 << 20);

    // Started on a; the first chunk through b, the second through a.
    let r = call("POST", format!("{}/v2/team/tool/blobs/uploads/", a.url()), vec![], vec![]).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let location = r.header("location").expect("location").to_owned();
    let on = |w: &Wharf| format!("{}{location}", w.url());
    let range = |start: usize, len: usize| ("Content-Range", format!("{start}-{}", start + len - 1));
    let r = call("PATCH", on(&b), vec![range(0, first.len())], first.to_vec()).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("range"), Some(format!("0-{}", first.len() - 1).as_str()));
    let r = call("GET", on(&a), vec![], vec![]).await;
    assert_eq!((r.status, r.header("range")), (204, Some(format!("0-{}", first.len() - 1).as_str())), "a sees b's chunk");
    let r = call("PATCH", on(&a), vec![range(first.len(), second.len())], second.to_vec()).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    // A chunk b sends where it last saw the upload is out of order now.
    let r = call("PATCH", on(&b), vec![range(first.len(), 10)], vec![0; 10]).await;
    assert_eq!(r.status, 416, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("range"), Some(format!("0-{}", first.len() + second.len() - 1).as_str()));
    // Finished on b with the last chunk in the PUT.
    let put = format!("{}{}digest={digest}", b.url(), location.clone() + if location.contains('?') { "&" } else { "?" });
    let r = call("PUT", put, vec![range(first.len() + second.len(), last.len())], last.to_vec()).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    for w in [&a, &b] {
        let r = call("GET", format!("{}/v2/team/tool/blobs/{digest}", w.url()), vec![], vec![]).await;
        assert_eq!(r.status, 200);
        assert!(r.body == blob, "the blob as uploaded, from either node");
        let r = call("GET", on(w), vec![], vec![]).await;
        assert_eq!(r.status, 404, "the session ended for every node");
    }

    // One chunk in a session (how podman and docker push): POST on b, the
    // whole blob through a, the empty PUT on b. Then cancelled elsewhere.
    let small: Vec<u8> = blob[..100_000].iter().map(|b| b ^ 0x5a).collect();
    let small_digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&small)));
    let r = call("POST", format!("{}/v2/team/tool/blobs/uploads/", b.url()), vec![], vec![]).await;
    let location = r.header("location").expect("location").to_owned();
    let r = call("PATCH", format!("{}{location}", a.url()), vec![], small.clone()).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let sep = if location.contains('?') { "&" } else { "?" };
    let copies = r#"wharf_s3_requests_total{op="copy",result="ok"}"#;
    let copied_before = crate::disk::metric(&b, copies).await;
    let r = call("PUT", format!("{}{location}{sep}digest={small_digest}", b.url()), vec![], vec![]).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(crate::disk::metric(&b, copies).await, copied_before + 1, "the object is a copy of the one chunk, not a second upload");
    let r = call("GET", format!("{}/v2/team/tool/blobs/{small_digest}", a.url()), vec![], vec![]).await;
    assert!(r.status == 200 && r.body == small);
    let r = call("POST", format!("{}/v2/team/tool/blobs/uploads/", a.url()), vec![], vec![]).await;
    let location = r.header("location").expect("location").to_owned();
    let r = call("PATCH", format!("{}{location}", a.url()), vec![], vec![1, 2, 3]).await;
    assert_eq!(r.status, 202);
    let r = call("DELETE", format!("{}{location}", b.url()), vec![], vec![]).await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let r = call("PATCH", format!("{}{location}", a.url()), vec![], vec![4]).await;
    assert_eq!(r.status, 404, "cancelled on b: unknown on a");
    // Another repository's name never reaches a session.
    let r = call("POST", format!("{}/v2/team/tool/blobs/uploads/", a.url()), vec![], vec![]).await;
    let location = r.header("location").expect("location").to_owned();
    let elsewhere = location.replacen("team/tool", "team/other", 1);
    let r = call("PATCH", format!("{}{elsewhere}", b.url()), vec![], vec![1]).await;
    assert_eq!(r.status, 404);

    // Every chunk went once its session ended.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<(String, u64)> = s3.keys("cluster/uploads/");
        // Only the open session's (none written: it has no bytes).
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "upload chunks left in the bucket: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.stop();
    b.stop();
}

/// A free loopback port (free when looked at).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Node `name` of a cluster with a cluster port on `port`, sharing `url`'s
/// database and the bucket prefix `cluster/`, its upstream `up` at
/// `upstream`.
fn port_node(dir: &std::path::Path, name: &str, url: &str, s3: &crate::s3::SeaweedFs, upstream: &str, port: u16) -> Wharf {
    let secret = dir.join("cluster.secret");
    std::fs::write(&secret, "a7c0e5b9f1d24e6a8b3c5d7e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9012345\n").expect("write the secret");
    let node_dir = dir.join(name);
    let extra = format!(
        "[cluster]\nnode_name = {name:?}\nadvertise = \"127.0.0.1:{port}\"\nlisten = \"127.0.0.1:{port}\"\nsecret_file = {:?}\n",
        secret
    );
    let config = write_config_on(&node_dir, &[UpstreamEntry::new("up", upstream)], url, &extra);
    let toml = std::fs::read_to_string(&config).expect("read config");
    let toml = toml.replacen("\n\n[log]", &format!("\n{}\n\n[log]", s3.storage_toml("cluster/", "1GiB")), 1);
    std::fs::write(&config, toml).expect("write config");
    Wharf::start_with_config(&config)
}

async fn counter(wharf: &Wharf, name: &str) -> u64 {
    let text = http::get(&format!("{}/metrics", wharf.admin_url())).await;
    let text = String::from_utf8_lossy(&text.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} is not in /metrics"))
        .trim()
        .parse::<f64>()
        .expect("a number") as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_missing_one_blob_fetch_it_once_and_a_dead_filler_is_taken_over() {
    use crate::fake_upstream::{FakeUpstream, Gate, Script};
    let tmp = tempfile::tempdir().expect("tempdir");
    let pg = Postgres::start(&tmp.path().join("pg"));
    pg.sql("postgres", "CREATE DATABASE wharf");
    let url = pg.url("wharf");
    let s3 = crate::s3::SeaweedFs::start(&tmp.path().join("s3"), "wharf-fills");
    let fake = FakeUpstream::start().await;
    let blob: Vec<u8> = (0..(3u32 << 20)).map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8).collect();
    let digest = fake.put_blob(blob.clone());
    let gate = Gate::new();
    fake.script(&digest, Script::normal().stalling_at(1 << 20, &gate).times(1));
    let (port_a, port_b) = (free_port(), free_port());
    let a = port_node(tmp.path(), "a", &url, &s3, &fake.url(), port_a);
    let b = port_node(tmp.path(), "b", &url, &s3, &fake.url(), port_b);

    // a misses first and its fill stalls a third of the way; b misses the
    // same blob meanwhile and streams it from a's fill.
    let get = |w: &Wharf| {
        let url = format!("{}/v2/up/team/app/blobs/{digest}", w.url());
        tokio::spawn(async move { http::get(&url).await })
    };
    let from_a = get(&a);
    gate.reached(1).await;
    let from_b = get(&b);
    let deadline = Instant::now() + Duration::from_secs(20);
    while counter(&b, "wharf_cluster_relayed_fills_total").await < 1 {
        assert!(Instant::now() < deadline, "b never streamed a's fill");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gate.open();
    for (node, response) in [("a", from_a.await.expect("a's client")), ("b", from_b.await.expect("b's client"))] {
        assert_eq!(response.status, 200, "{node}");
        assert!(response.body == blob, "{node}'s client got the blob");
    }
    assert_eq!(fake.count("GET", &digest), 1, "one upstream fetch for the cluster");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pg.sql("wharf", "SELECT count(*) FROM fills") != ["0"] {
        assert!(Instant::now() < deadline, "the fill's claim was never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The fills are on the cluster port only, and only signed.
    let r = http::get(&format!("{}/cluster/v1/fills/{digest}", a.url())).await;
    assert_eq!(r.status, 404, "the registry port has no cluster requests");
    let r = http::get(&format!("http://127.0.0.1:{port_a}/cluster/v1/fills/{digest}")).await;
    assert_eq!(r.status, 401);
    let forged = [("x-wharf-node", "b"), ("x-wharf-time", "1"), ("Authorization", "WharfNode 00")];
    let r = http::request("GET", &format!("http://127.0.0.1:{port_a}/cluster/v1/fills/{digest}"), &forged).await;
    assert_eq!(r.status, 401);

    // a dies while it fills another blob; b, missing it, takes the fill
    // over without waiting for a's lease.
    let other: Vec<u8> = blob.iter().rev().copied().collect();
    let other_digest = fake.put_blob(other.clone());
    let stall = Gate::new();
    fake.script(&other_digest, Script::normal().stalling_at(1 << 20, &stall).times(1));
    let url_a = format!("{}/v2/up/team/app/blobs/{other_digest}", a.url());
    let stalled = tokio::spawn(async move { http::get(&url_a).await });
    stall.reached(1).await;
    a.kill9();
    let _ = stalled.await;
    let r = http::get(&format!("{}/v2/up/team/app/blobs/{other_digest}", b.url())).await;
    assert_eq!(r.status, 200);
    assert!(r.body == other);
    assert_eq!(fake.count("GET", &other_digest), 2, "a's fetch, then b's own");
    assert!(b.log_lines().iter().any(|l| l.contains("taking the fill over")));
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_database_a_node_serves_warm_pulls_reports_not_ready_and_recovers() {
    let Rig { tmp, _pg: pg, url, clients, mut upstream } = Rig::start();
    let config = write_config_on(
        &tmp.path().join("n"),
        // Tags revalidated after a second: the offline pull below needs
        // what the node remembers, not a fresh cache entry.
        &[UpstreamEntry::new("up", &upstream.url()).extra("tag_ttl = \"1s\"")],
        &url,
        "[cluster]\nnode_name = \"n\"\n",
    );
    let n = Wharf::start_with_config(&config);
    let ready = || {
        let url = format!("{}/readyz", n.admin_url());
        async move { http::get(&url).await }
    };
    let latest = || {
        let url = format!("{}/api/v1/repositories/up%2Fteam%2Fapp", n.admin_url());
        async move {
            let r = http::get(&url).await;
            if r.status == 200 { r.json()["latest_version"].as_u64() } else { None }
        }
    };
    let pull = |tag: &str, dir: &str| {
        clients.pull_to_layout(&format!("docker://{}/up/team/app:{tag}", n.host()), &tmp.path().join(dir), tag, &[])
    };
    pull("1", "first");
    let deadline = Instant::now() + Duration::from_secs(30);
    while latest().await != Some(1) {
        assert!(Instant::now() < deadline, "the first pull was never recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    pg.halt();
    let r = ready().await;
    assert_eq!(r.status, 503, "not ready without the database");
    assert!(String::from_utf8_lossy(&r.body).contains("metadata"), "{}", String::from_utf8_lossy(&r.body));
    // Warm pulls go on, and so does a new tag from the upstream (its
    // recording waits for the database).
    pull("1", "warm");
    let image = Image::random(&[2048]);
    images::push(&clients, tmp.path(), &image, &upstream.host(), "team/app", &["2"], None);
    pull("2", "new");
    // Its recording is kept until the database is back.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !n.log_lines().iter().any(|l| l.contains("recording pulls deferred")) {
        assert!(Instant::now() < deadline, "the recording was never tried and kept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // With the upstream down as well, once the tag is due for
    // revalidation: the tag this node last knew.
    upstream.stop();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    pull("1", "offline");
    assert!(n.log_lines().iter().any(|l| l.contains("serving the tag this node last knew")));

    pg.resume();
    upstream.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready().await.status != 200 {
        assert!(Instant::now() < deadline, "never ready again after the database came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The pull made during the outage became a version once it was back.
    while latest().await != Some(2) {
        assert!(Instant::now() < deadline, "the pull made without the database was never recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tags = http::get(&format!("{}/api/v1/repositories/up%2Fteam%2Fapp/versions/2/tags", n.admin_url())).await;
    assert!(String::from_utf8_lossy(&tags.body).contains("\"2\""), "{}", String::from_utf8_lossy(&tags.body));
    n.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_runs_on_one_node_at_a_time_from_the_buckets_listing() {
    let rig = Rig::start();
    let s3 = crate::s3::SeaweedFs::start(&rig.tmp.path().join("s3"), "wharf-evict");
    const LAYER: usize = 1_000_000;
    let repos = ["team/a", "team/b", "team/c", "team/d"];
    let images: Vec<Image> = repos.iter().map(|_| Image::random(&[LAYER])).collect();
    for (image, repo) in images.iter().zip(repos) {
        images::push(&rig.clients, rig.tmp.path(), image, &rig.upstream.host(), repo, &["1"], None);
    }
    // Above 3 MiB in the bucket, evicted down to 2 MiB: what both nodes
    // stored together, neither alone.
    let node = |name: &str| {
        let dir = rig.tmp.path().join(name);
        let extra = format!("[cluster]\nnode_name = {name:?}\nlease = \"10s\"\n");
        let config = write_config_on(&dir, &[UpstreamEntry::new("up", &rig.upstream.url())], &rig.url, &extra);
        let toml = std::fs::read_to_string(&config).expect("read config");
        let storage = format!(
            "max_size = \"4MiB\"\nhigh_watermark = 0.75\nlow_watermark = 0.5\n{}",
            s3.storage_toml("cluster/", "1GiB")
        );
        std::fs::write(&config, toml.replacen("\n\n[log]", &format!("\n{storage}\n\n[log]"), 1)).expect("write config");
        Wharf::start_with_config(&config)
    };
    let (a, b) = (node("a"), node("b"));
    for (i, repo) in repos.iter().enumerate() {
        let through = if i % 2 == 0 { &a } else { &b };
        let dir = rig.tmp.path().join(format!("pulled-{i}"));
        rig.clients.pull_to_layout(&format!("docker://{}/up/{repo}:1", through.host()), &dir, "1", &[]);
    }
    let bucket = || -> u64 {
        s3.keys("cluster/").iter().filter(|(k, _)| k.starts_with("cluster/blobs/")).map(|(_, size)| size).sum()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while bucket() > 2 << 20 {
        assert!(Instant::now() < deadline, "the bucket was never evicted down: {} bytes", bucket());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let evicted = [counter(&a, "wharf_evictions_total").await, counter(&b, "wharf_evictions_total").await];
    assert!(evicted.contains(&0) && evicted.iter().sum::<u64>() >= 2, "one node evicted: {evicted:?}");
    // What was evicted is fetched again on demand.
    let again = rig.tmp.path().join("again");
    rig.clients.pull_to_layout(&format!("docker://{}/up/team/a:1", b.host()), &again, "1", &[]);
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_goes_on_through_the_other_node_while_one_restarts() {
    let rig = Rig::start();
    let s3 = crate::s3::SeaweedFs::start(&rig.tmp.path().join("s3"), "wharf-rolling");
    let (a, b) = shared_nodes(&rig, &s3);
    let auth = crate::push::authorization();
    let h = [("Authorization", auth.as_str())];
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&blob)));
    let r = http::request("POST", &format!("{}/v2/team/rolling/blobs/uploads/", a.url()), &h).await;
    let location = r.header("location").expect("location").to_owned();
    let r = http::request_with_body("PATCH", &format!("{}{location}", a.url()), &h, blob[..100_000].to_vec()).await;
    assert_eq!(r.status, 202);
    // a is stopped (drained) for an upgrade; the client's next requests go
    // to b, which has the session and its bytes.
    a.stop();
    let r = http::request_with_body("PATCH", &format!("{}{location}", b.url()), &h, blob[100_000..].to_vec()).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let sep = if location.contains('?') { "&" } else { "?" };
    let r = http::request("PUT", &format!("{}{location}{sep}digest={digest}", b.url()), &h).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = http::request("GET", &format!("{}/v2/team/rolling/blobs/{digest}", b.url()), &h).await;
    assert!(r.status == 200 && r.body == blob);
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_pushed_through_one_node_is_in_the_others_flatpak_index() {
    let rig = Rig::start();
    // Each node keeps its objects on its own disk: b cannot read the
    // config a stored, so what b's index shows of it comes through the
    // shared metadata (a read it, b heard of it).
    let node = |name: &str| {
        let extra = format!(
            "[cluster]\nnode_name = {name:?}\n\n[flatpak]\nindex = true\n\n[auth]\nbasic = true\n{}\
             \n[[auth.rule]]\nusers = [\"pusher\"]\nrepositories = [\"*\"]\nactions = [\"pull\", \"push\", \"delete\"]\n",
            crate::auth::user_toml("pusher", true)
        );
        Wharf::start_with_config(&write_config_on(&rig.tmp.path().join(name), &[], &rig.url, &extra))
    };
    let (a, b) = (node("a"), node("b"));
    let query = "label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest";
    let on_b = format!("{}/index/static?{query}", b.url());
    assert_eq!(http::get(&on_b).await.json()["Results"], json!([]), "b's index, built before the push");

    let app_ref = "app/org.example.Hello/x86_64/stable";
    let layer = images::Blob::new(images::LAYER_MEDIA_TYPE, images::random_bytes(512));
    let config = json!({"architecture": "amd64", "os": "linux", "config": {"Labels": {"org.flatpak.ref": app_ref}},
                        "rootfs": {"type": "layers", "diff_ids": [layer.digest]}});
    let config = images::Blob::new(images::CONFIG_MEDIA_TYPE, config.to_string().into_bytes());
    let manifest = json!({"schemaVersion": 2, "mediaType": images::MANIFEST_MEDIA_TYPE,
                          "config": config.descriptor(), "layers": [layer.descriptor()]});
    let manifest = images::Blob::new(images::MANIFEST_MEDIA_TYPE, manifest.to_string().into_bytes());
    let auth = crate::push::authorization();
    for blob in [&layer, &config] {
        let r = http::request_with_body(
            "POST",
            &format!("{}/v2/apps/hello/blobs/uploads/?digest={}", a.url(), blob.digest),
            &[("Authorization", &auth), ("Content-Type", "application/octet-stream")],
            blob.bytes.clone(),
        )
        .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    }
    let pushed = Instant::now();
    let r = http::request_with_body(
        "PUT",
        &format!("{}/v2/apps/hello/manifests/latest", a.url()),
        &[("Authorization", &auth), ("Content-Type", images::MANIFEST_MEDIA_TYPE)],
        manifest.bytes.clone(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    loop {
        let answer = http::get(&on_b).await.json();
        if answer["Results"][0]["Images"][0]["Labels"]["org.flatpak.ref"] == app_ref {
            assert_eq!(answer["Results"][0]["Name"], "apps/hello");
            assert_eq!(answer["Results"][0]["Images"][0]["Digest"], json!(manifest.digest));
            break;
        }
        assert!(pushed.elapsed() < Duration::from_secs(20), "b's index never showed the push: {answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("pushed through a, in b's Flatpak index after {:?}", pushed.elapsed());
    a.stop();
    b.stop();
}
