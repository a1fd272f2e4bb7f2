//! Background tasks through the admin API and the `wharf task` commands
//! against a running wharf: the empty listing, unknown and malformed ids,
//! bad filters, and what the commands print and exit with.
//!
//! Nothing in wharf starts a task yet (syncs will). To see tasks a
//! previous process left behind, rows are written into `wharf.db` while
//! wharf is stopped, as a killed wharf would have left them; the restart
//! must then show none of them running.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::http::{self, Response};
use crate::wharf::{UpstreamEntry, Wharf};

async fn send(wharf: &Wharf, method: &str, path: &str) -> Response {
    http::request(method, &format!("{}{path}", wharf.admin_url()), &[]).await
}

fn error(r: &Response) -> (u16, String, String) {
    let j = r.json();
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (r.status, text(&j["error"]["code"]), text(&j["error"]["message"]))
}

/// Runs `wharf --admin <url> <args>` off the runtime's workers: exit code,
/// stdout, stderr.
async fn wharf_cli(wharf: &Wharf, args: &[&str]) -> (i32, String, String) {
    let mut argv = vec!["--admin".to_owned(), wharf.admin_url()];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_wharf")).args(&argv).stdin(Stdio::null()).output().expect("run wharf")
    })
    .await
    .expect("runner");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// An error is exactly one `wharf: ...` line on stderr.
#[track_caller]
fn assert_one_line(err: &str, want: &str) {
    assert_eq!(err, format!("wharf: {want}\n"), "one line naming the problem");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tasks_the_listing_is_empty_and_unknown_or_malformed_ids_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let wharf = Wharf::start(&tmp.path().join("wharf"), &[UpstreamEntry::new("up", "http://127.0.0.1:9")]);

    let list = send(&wharf, "GET", "/api/v1/tasks").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json(), json!({"count": 0, "limit": 100, "offset": 0, "results": []}));
    let filtered = send(&wharf, "GET", "/api/v1/tasks?state=running&kind=sync&resource=team%2Fapp&limit=5").await;
    assert_eq!((filtered.status, filtered.json()["count"].clone()), (200, json!(0)));

    let (status, code, message) = error(&send(&wharf, "GET", "/api/v1/tasks/1").await);
    assert_eq!((status, code.as_str(), message.as_str()), (404, "not_found", "task 1 does not exist"));
    let (status, code, message) = error(&send(&wharf, "POST", "/api/v1/tasks/1/cancel").await);
    assert_eq!((status, code.as_str(), message.as_str()), (404, "not_found", "task 1 does not exist"));
    for path in ["/api/v1/tasks/abc", "/api/v1/tasks/-1", "/api/v1/tasks/1.5"] {
        let (status, code, message) = error(&send(&wharf, "GET", path).await);
        assert_eq!((status, code.as_str()), (400, "invalid"), "{path}: {message}");
        assert!(message.contains("is not a number"), "{path}: {message}");
    }
    let (status, code, _) = error(&send(&wharf, "POST", "/api/v1/tasks/abc/cancel").await);
    assert_eq!((status, code.as_str()), (400, "invalid"));
    let (status, code, message) = error(&send(&wharf, "GET", "/api/v1/tasks?state=done").await);
    assert_eq!((status, code.as_str()), (400, "invalid"));
    assert!(message.contains("\"done\"") && message.contains("waiting, running, completed, failed, canceled"), "{message}");
    let (status, _, message) = error(&send(&wharf, "GET", "/api/v1/tasks?status=running").await);
    assert!(status == 400 && message.contains("unknown query parameter \"status\""), "{message}");
    let wrong = send(&wharf, "GET", "/api/v1/tasks/1/cancel").await;
    assert_eq!((wrong.status, wrong.header("allow")), (405, Some("POST")));
    let doc = send(&wharf, "GET", "/api/v1/openapi.json").await.json();
    for path in ["/api/v1/tasks", "/api/v1/tasks/{id}", "/api/v1/tasks/{id}/cancel"] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }

    // The commands: an empty table, the listing's JSON, one-line refusals.
    let (code, out, err) = wharf_cli(&wharf, &["task", "list"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (0, "no tasks\n", ""));
    let (code, out, _) = wharf_cli(&wharf, &["--json", "task", "list", "--state", "failed", "--kind", "sync"]).await;
    assert_eq!(code, 0);
    let printed: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!((printed["count"].clone(), printed["results"].clone()), (json!(0), json!([])));
    for args in [&["task", "show", "--id", "1"][..], &["task", "show", "--id", "1", "--wait"], &["task", "cancel", "--id", "1"]] {
        let (code, out, err) = wharf_cli(&wharf, args).await;
        assert_eq!((code, out.as_str()), (1, ""), "{args:?}: {err}");
        assert_one_line(&err, "task 1 does not exist");
    }
    for args in [&["task", "list", "--state", "done"][..], &["task", "show", "--id", "abc"], &["task", "cancel"]] {
        let (code, out, err) = wharf_cli(&wharf, args).await;
        assert_eq!((code, out.as_str()), (2, ""), "{args:?}: the command line does not parse: {err}");
    }
    wharf.stop();
}

/// Writes tasks into a stopped wharf's database as a previous run would
/// have left them: (kind, resource, state, error). Their ids, in order.
fn leave_tasks(dir: &Path, tasks: &[(&str, Option<&str>, &str, Option<&str>)]) -> Vec<u64> {
    let text = |v: Option<&str>| v.map_or("NULL".to_owned(), |v| format!("'{}'", v.replace('\'', "''")));
    tasks
        .iter()
        .map(|(kind, resource, state, error)| {
            let finished = if ["completed", "failed", "canceled"].contains(state) { "1795600900000" } else { "NULL" };
            let started = if *state == "waiting" { "NULL" } else { "1795600800000" };
            let sql = format!(
                "INSERT INTO tasks (kind, resource, params, state, items_done, items_total, bytes_done, error,
                   created_at, started_at, finished_at)
                 VALUES ({}, {}, '{{\"remote\": \"quay\"}}', {}, 3, 10, 3145728, {}, 1795600700000, {started}, {finished})
                 RETURNING id",
                text(Some(kind)),
                text(*resource),
                text(Some(state)),
                text(*error),
            );
            let ids = crate::wharf::metadata_query(dir, &sql);
            ids.first().and_then(|id| id.parse().ok()).expect("a task id")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_leaves_no_task_running_and_waiting_reports_how_each_ended() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("wharf");
    let wharf = Wharf::start(&dir, &[UpstreamEntry::new("up", "http://127.0.0.1:9")]);
    let config = wharf.config_path.clone();
    wharf.stop();
    let ids = leave_tasks(
        &dir,
        &[
            ("sync", Some("team/app"), "running", None),
            ("sync", Some("team/app"), "waiting", None),
            ("sync", Some("other"), "completed", None),
            ("sync", None, "canceled", Some("canceled by request")),
        ],
    );
    let (running, waiting, completed, canceled) = (ids[0], ids[1], ids[2], ids[3]);
    let wharf = Wharf::start_with_config(&config);

    let list = send(&wharf, "GET", "/api/v1/tasks").await.json();
    let listed: Vec<(u64, String)> = list["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|t| (t["id"].as_u64().unwrap_or(0), t["state"].as_str().unwrap_or_default().to_owned()))
        .collect();
    let want = |id, state: &str| (id, state.to_owned());
    assert_eq!(
        listed,
        vec![want(canceled, "canceled"), want(completed, "completed"), want(waiting, "failed"), want(running, "failed")],
        "newest first; nothing left waiting or running"
    );
    let t = send(&wharf, "GET", &format!("/api/v1/tasks/{running}")).await.json();
    assert_eq!((t["error"].clone(), t["resource"].clone()), (json!("interrupted by a restart"), json!("team/app")));
    assert_eq!(t["progress"], json!({"items_done": 3, "items_total": 10, "bytes_done": 3145728}), "progress made is kept");
    assert_eq!(t["params"], json!({"remote": "quay"}));
    assert!(t["finished_at"].as_str().is_some_and(|f| f.ends_with('Z')), "{t}");
    let on_app = send(&wharf, "GET", "/api/v1/tasks?resource=team%2Fapp&state=failed").await.json();
    assert_eq!(on_app["count"], 2);

    // A finished task cannot be canceled.
    let (status, code, _) = error(&send(&wharf, "POST", &format!("/api/v1/tasks/{completed}/cancel")).await);
    assert_eq!((status, code.as_str()), (409, "conflict"));
    let (code, _, err) = wharf_cli(&wharf, &["task", "cancel", "--id", &completed.to_string()]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with("wharf: task ") && err.contains("finished") && err.lines().count() == 1, "{err}");

    // Waiting: the finished task on stdout, how it ended on stderr, and the exit code.
    let (code, out, err) = wharf_cli(&wharf, &["task", "show", "--id", &completed.to_string(), "--wait"]).await;
    assert_eq!((code, err.as_str()), (0, ""), "nothing drawn when stderr is not a terminal");
    assert!(out.contains("state              completed\n"), "{out}");
    let (code, out, err) = wharf_cli(&wharf, &["task", "show", "--id", &running.to_string(), "--wait"]).await;
    assert_eq!(code, 1, "failed: {err}");
    assert_one_line(&err, &format!("task {running} failed: interrupted by a restart"));
    assert!(out.contains("state              failed\n") && out.contains("progress           3/10\n"), "{out}");
    let (code, out, err) = wharf_cli(&wharf, &["--json", "task", "show", "--id", &canceled.to_string(), "--wait"]).await;
    assert_eq!(code, 130, "canceled: {err}");
    assert_one_line(&err, &format!("task {canceled} was canceled: canceled by request"));
    let printed: Value = serde_json::from_str(&out).expect("--json prints the task");
    assert_eq!((printed["id"].clone(), printed["state"].clone()), (json!(canceled), json!("canceled")));

    let (code, out, _) = wharf_cli(&wharf, &["task", "list", "--resource", "team/app"]).await;
    assert_eq!(code, 0);
    let rows: Vec<&str> = out.lines().collect();
    assert!(rows.len() == 3 && rows[0].starts_with("ID  KIND  RESOURCE  STATE   PROGRESS"), "{out}");
    assert!(rows[1].starts_with(&format!("{waiting}   sync  team/app  failed  3/10      3.0 MiB")), "{out}");
    wharf.stop();
}
