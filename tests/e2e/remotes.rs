//! Remotes through the admin API and the `wharf remote` commands against a
//! running wharf: create (201, Location), show and list without ever
//! showing credentials, change, refuse bad values with a message naming
//! the field, delete; and the records surviving a restart.

use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::http::{self, Response};
use crate::wharf::{UpstreamEntry, Wharf};

const SECRET: &str = "remote-password-never-shown";

async fn send(wharf: &Wharf, method: &str, path: &str, body: Option<Value>) -> Response {
    let url = format!("{}{path}", wharf.admin_url());
    match body {
        Some(b) => {
            let bytes = serde_json::to_vec(&b).expect("JSON");
            http::request_with_body(method, &url, &[("content-type", "application/json")], bytes).await
        }
        None => http::request(method, &url, &[]).await,
    }
}

fn error(r: &Response) -> (u16, String, String) {
    let j = r.json();
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (r.status, text(&j["error"]["code"]), text(&j["error"]["message"]))
}

/// Runs `wharf --admin <url> <args>` off the runtime's workers.
async fn wharf_cli(wharf: &Wharf, args: &[&str]) -> (i32, String, String) {
    let mut argv = vec!["--admin".to_owned(), wharf.admin_url()];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(&argv)
            .env("WHARF_REMOTE_PASSWORD", SECRET)
            .stdin(Stdio::null())
            .output()
            .expect("run wharf")
    })
    .await
    .expect("runner");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remotes_are_created_listed_changed_and_deleted_and_never_show_credentials() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let wharf = Wharf::start(&tmp.path().join("wharf"), &[UpstreamEntry::new("up", "http://127.0.0.1:9")]);

    let created = send(
        &wharf,
        "POST",
        "/api/v1/remotes",
        Some(json!({"name": "quay", "url": "https://quay.io/", "upstream_name": "team/app",
                    "include_tags": ["v1.*", "latest"], "exclude_tags": ["*-rc?"],
                    "credentials": {"username": "bot", "password": SECRET}, "rate_limit": 10})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    assert_eq!(created.header("location"), Some("/api/v1/remotes/quay"));
    let body = String::from_utf8_lossy(&created.body).into_owned();
    assert!(!body.contains(SECRET) && !body.contains("\"bot\""), "credentials are write-only: {body}");
    let r = created.json();
    assert_eq!(r["url"], "https://quay.io", "the trailing slash is dropped");
    assert_eq!((r["policy"].clone(), r["has_credentials"].clone()), (json!("immediate"), json!(true)));
    assert_eq!(r["include_tags"], json!(["v1.*", "latest"]));

    let dup = send(&wharf, "POST", "/api/v1/remotes", Some(json!({"name": "quay", "url": "https://x.io", "upstream_name": "a"}))).await;
    assert_eq!(error(&dup).0, 409);

    for (bad, field) in [
        (json!({"name": "a/b", "url": "https://x.io", "upstream_name": "a"}), "remote name"),
        (json!({"name": "x", "url": "ftp://x.io", "upstream_name": "a"}), "url"),
        (json!({"name": "x", "url": "https://x.io", "upstream_name": "A B"}), "upstream_name"),
        (json!({"name": "x", "url": "https://x.io", "upstream_name": "a", "include_tags": ["a/b"]}), "include_tags"),
        (json!({"name": "x", "url": "https://x.io", "upstream_name": "a", "credentials_from": "nope"}), "credentials_from"),
        (json!({"name": "x", "url": "https://x.io", "upstream_name": "a", "download_concurrency": 0}), "download_concurrency"),
    ] {
        let (status, code, message) = error(&send(&wharf, "POST", "/api/v1/remotes", Some(bad.clone())).await);
        assert_eq!((status, code.as_str()), (400, "invalid"), "{bad}: {message}");
        assert!(message.contains(field), "{bad}: {message}");
    }
    let (status, _, message) =
        error(&send(&wharf, "POST", "/api/v1/remotes", Some(json!({"name": "x", "url": "https://x.io", "upstream_name": "a", "policy": "lazy"}))).await);
    assert!(status == 400 && message.contains("on_demand"), "{message}");

    let patched = send(
        &wharf,
        "PATCH",
        "/api/v1/remotes/quay",
        Some(json!({"credentials_from": "up", "policy": "on_demand", "rate_limit": null})),
    )
    .await;
    assert_eq!(patched.status, 200, "{}", String::from_utf8_lossy(&patched.body));
    let p = patched.json();
    assert_eq!((p["has_credentials"].clone(), p["credentials_from"].clone()), (json!(false), json!("up")));
    assert_eq!((p["policy"].clone(), p["rate_limit"].clone()), (json!("on_demand"), Value::Null));
    assert_eq!(p["include_tags"], json!(["v1.*", "latest"]), "fields not named stay");
    let (status, _, _) = error(&send(&wharf, "PATCH", "/api/v1/remotes/quay", Some(json!({"url": null}))).await);
    assert_eq!(status, 400);
    assert_eq!(error(&send(&wharf, "PATCH", "/api/v1/remotes/nope", Some(json!({}))).await).0, 404);

    // The CLI: create with the password from the environment, list, show.
    let (code, out, err) = wharf_cli(
        &wharf,
        &["remote", "create", "--name", "hub", "--url", "https://registry-1.docker.io", "--upstream-name",
          "library/debian", "--include-tags", "12*,bookworm", "--username", "me"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let credentials = out.lines().find(|l| l.starts_with("credentials ")).map(str::split_whitespace).map(|w| w.last());
    assert_eq!(credentials, Some(Some("own")), "{out}");
    assert!(!out.contains(SECRET), "{out}");
    let (code, out, _) = wharf_cli(&wharf, &["remote", "list"]).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("NAME "), "{out}");
    assert!(out.contains("hub   https://registry-1.docker.io  library/debian  immediate  12* bookworm"), "{out}");
    let (code, out, _) = wharf_cli(&wharf, &["--json", "remote", "show", "quay"]).await;
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(shown["credentials_from"], "up");
    let (code, _, err) = wharf_cli(&wharf, &["remote", "update", "--name", "hub", "--sigstore", "file:///x"]).await;
    assert!(code == 1 && err.starts_with("wharf: sigstore"), "{code} {err}");

    // Remotes are in wharf.db: a restart keeps them.
    let config = wharf.config_path.clone();
    wharf.stop();
    let wharf = Wharf::start_with_config(&config);
    let list = send(&wharf, "GET", "/api/v1/remotes?limit=1", None).await.json();
    assert_eq!((list["count"].clone(), list["results"][0]["name"].clone()), (json!(2), json!("hub")));

    let deleted = send(&wharf, "DELETE", "/api/v1/remotes/quay", None).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(error(&send(&wharf, "GET", "/api/v1/remotes/quay", None).await).0, 404);
    let (code, out, _) = wharf_cli(&wharf, &["remote", "delete", "hub"]).await;
    assert_eq!((code, out.as_str()), (0, "deleted remote hub\n"));
    wharf.stop();
}
