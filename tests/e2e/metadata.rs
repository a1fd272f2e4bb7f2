//! Metadata on PostgreSQL: `wharf metadata migrate` moves a node's SQLite
//! metadata into a real PostgreSQL server (started here), and the node,
//! switched over, serves exactly what it served before.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::clients::Clients;
use crate::http;
use crate::images::{self, Image};
use crate::postgres::Postgres;
use crate::registry::Registry;
use crate::wharf::{without_metadata, write_config, UpstreamEntry, Wharf};

/// `wharf --config <config> <args>`: exit code, stdout, stderr.
fn wharf_offline(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run wharf");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

async fn get_json(url: &str) -> serde_json::Value {
    let r = http::get(url).await;
    assert_eq!(r.status, 200, "{url}: {}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// What the admin API says the node holds: every repository with its
/// versions (number and summary), and the distributions and remotes.
async fn holdings(wharf: &Wharf) -> serde_json::Value {
    let api = format!("{}/api/v1", wharf.admin_url());
    let repos = get_json(&format!("{api}/repositories")).await;
    let mut out = Vec::new();
    for r in repos["results"].as_array().expect("results") {
        let name = r["name"].as_str().expect("name");
        let encoded = name.replace('/', "%2F");
        let versions = get_json(&format!("{api}/repositories/{encoded}/versions")).await;
        let mut content = Vec::new();
        for v in versions["results"].as_array().expect("versions") {
            let n = &v["number"];
            for kind in ["tags", "manifests", "blobs"] {
                content.push(get_json(&format!("{api}/repositories/{encoded}/versions/{n}/{kind}")).await["results"].clone());
            }
        }
        out.push(json!({"name": name, "kind": r["kind"], "versions": versions["results"], "content": content}));
    }
    let distributions = get_json(&format!("{api}/distributions")).await;
    let remotes = get_json(&format!("{api}/remotes")).await;
    json!({"repositories": out, "distributions": distributions["results"], "remotes": remotes["results"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_sqlite_metadata_moves_into_postgres_verified_and_is_served_from_there() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pg = Postgres::start(&tmp.path().join("pg"));
    pg.sql("postgres", "CREATE DATABASE wharf");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let (one, two) = (Image::random(&[2048]), Image::random(&[4096]));
    images::push(&clients, tmp.path(), &one, &upstream.host(), "team/app", &["1"], None);
    images::push(&clients, tmp.path(), &two, &upstream.host(), "team/app", &["2"], None);

    // A node on SQLite (whatever the suite's default) with two pulls, a
    // distribution pinning the first version, and a remote.
    let dir = tmp.path().join("wharf");
    let config = write_config(&dir, &[UpstreamEntry::new("up", &upstream.url())]);
    let sqlite_only = without_metadata(&std::fs::read_to_string(&config).expect("read config"));
    std::fs::write(&config, &sqlite_only).expect("write config");
    let wharf = Wharf::start_with_config(&config);
    let api = format!("{}/api/v1", wharf.admin_url());
    // One version per pull: the second waits for the first's version (pulls
    // close together are recorded as one).
    for (tag, version) in [("1", 1), ("2", 2)] {
        let dest = tmp.path().join(format!("pulled-{tag}"));
        clients.pull_to_layout(&format!("docker://{}/up/team/app:{tag}", wharf.host()), &dest, tag, &[]);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = http::get(&format!("{api}/repositories/up%2Fteam%2Fapp")).await;
            if r.status == 200 && r.json()["latest_version"] == version {
                break;
            }
            assert!(Instant::now() < deadline, "the pull of {tag} was never recorded");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let created = http::request_with_body(
        "POST",
        &format!("{api}/distributions"),
        &[("Content-Type", "application/json")],
        json!({"name": "pinned", "base_path": "pinned/app", "repository": "up/team/app", "version": 1}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    let remote = http::request_with_body(
        "POST",
        &format!("{api}/remotes"),
        &[("Content-Type", "application/json")],
        json!({"name": "quay", "url": "https://quay.example", "upstream_name": "org/tool"}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(remote.status, 201, "{}", String::from_utf8_lossy(&remote.body));
    let before = holdings(&wharf).await;
    wharf.stop();

    // Into PostgreSQL, verified; again, only verified.
    let target = pg.url("wharf");
    let (code, out, err) = wharf_offline(&config, &["metadata", "migrate", "--to", &target]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("copied ") && out.contains("verified 3 repository versions"), "{out}");
    assert!(err.contains("copied 1 rows of distributions") && err.contains("copied 1 rows of remotes"), "{err}");
    let (code, out, err) = wharf_offline(&config, &["metadata", "migrate", "--to", &target]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("already held") && out.contains("verified 3 repository versions"), "{out}");
    // A database holding something else is refused, and left as it was.
    pg.sql("postgres", "CREATE DATABASE other");
    let other = pg.url("other");
    let (code, _, err) = wharf_offline(&config, &["metadata", "migrate", "--to", &other]);
    assert_eq!(code, 0, "an empty database takes the copy: {err}");
    pg.sql("other", "DELETE FROM object_uses; INSERT INTO remotes (name, url, upstream_name, policy, created_at, updated_at) VALUES ('x', 'https://x', 'a', 'immediate', 0, 0)");
    let (code, _, err) = wharf_offline(&config, &["metadata", "migrate", "--to", &other]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already holds other metadata"), "{err}");

    // The node on PostgreSQL serves the same repositories, versions, tags,
    // distributions and remotes, and pulls by tag without its upstream.
    std::fs::write(&config, format!("{sqlite_only}\n[metadata]\nurl = {target:?}\n")).expect("write config");
    std::fs::remove_file(dir.join("storage").join("wharf.db")).expect("the SQLite file is not used any more");
    let wharf = Wharf::start_with_config(&config);
    assert_eq!(holdings(&wharf).await, before);
    drop(upstream);
    let pinned = tmp.path().join("pinned");
    clients.pull_to_layout(&format!("docker://{}/pinned/app:1", wharf.host()), &pinned, "1", &[]);
    assert_eq!(images::layout_tag_digest(&pinned, "1"), one.manifest.digest);
    wharf.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sslmode_require_the_metadata_goes_over_verified_tls() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs = crate::service::make_ca_and_server_cert(tmp.path(), "pg-ca");
    let pg = Postgres::start_tls(&tmp.path().join("pg"), &certs);
    let url = pg.tls_url("postgres");
    let upstreams = [UpstreamEntry::new("up", "http://127.0.0.1:9")];

    // Without the CA that signed the server's certificate: refused at start.
    let untrusted = write_config(&tmp.path().join("untrusted"), &upstreams);
    let text = without_metadata(&std::fs::read_to_string(&untrusted).expect("read config"));
    std::fs::write(&untrusted, format!("{text}\n[metadata]\nurl = {url:?}\n")).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["serve", "--config"])
        .arg(&untrusted)
        .stdin(Stdio::null())
        .output()
        .expect("run wharf");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(73), "{err}");
    assert!(err.contains("certificate"), "the refusal names the certificate: {err}");

    // With it: served, and the server says the connection is TLS.
    let dir = tmp.path().join("trusted");
    let config = write_config(&dir, &upstreams);
    let text = without_metadata(&std::fs::read_to_string(&config).expect("read config"));
    let ca = certs.join("ca.crt");
    std::fs::write(&config, format!("{text}\n[metadata]\nurl = {url:?}\nca_file = {ca:?}\n")).expect("write config");
    let wharf = Wharf::start_with_config(&config);
    let created = http::request_with_body(
        "POST",
        &format!("{}/api/v1/repositories", wharf.admin_url()),
        &[("Content-Type", "application/json")],
        json!({"name": "over-tls"}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    let ssl = pg.sql(
        "postgres",
        "SELECT DISTINCT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'wharf'",
    );
    assert_eq!(ssl, ["t"], "every wharf connection is TLS");
    assert_eq!(pg.sql("postgres", "SELECT name FROM repositories")[..], ["over-tls"]);
    wharf.stop();
}
