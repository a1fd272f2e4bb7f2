//! The `wharf` admin commands against a running wharf's admin API: what an
//! operator's script sees on stdout and stderr, and the exit codes.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::faults::{assert_served, Rig};
use crate::http;
use crate::images::Image;
use crate::streaming::within_guard;

/// Runs the `wharf` binary with `args`, with no `WHARF_ADMIN` inherited
/// from the developer's shell, off the runtime's worker threads.
async fn wharf(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let what = format!("wharf {}", args.join(" "));
    let run = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(&args)
            .env_remove("WHARF_ADMIN")
            .stdin(Stdio::null())
            .output()
            .expect("run wharf")
    });
    within_guard(&what, run).await.expect("wharf runner")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn assert_success(o: &Output, what: &str) {
    assert_eq!(o.status.code(), Some(0), "{what}: stdout {:?} stderr {:?}", stdout(o), stderr(o));
}

/// An error is exactly one `wharf: ...` line on stderr, and nothing on stdout.
#[track_caller]
fn assert_one_line_error(o: &Output, code: i32, what: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{what}: stderr {err:?}");
    assert!(err.starts_with("wharf: ") && err.ends_with('\n') && err.lines().count() == 1, "{what}: stderr {err:?}");
    assert!(o.stdout.is_empty(), "{what}: stdout {:?}", stdout(o));
}

/// A rig whose upstream has pulled one image through wharf, so the cache
/// holds a repository.
async fn rig_with_a_pulled_image() -> Rig {
    let rig = Rig::start(&[]).await;
    let image = Image::random(&[1000]);
    rig.fake.put_image("v1", &image);
    assert_served(&rig.get(&rig.manifest_url("v1")).await, &image.manifest.bytes, "manifest");
    for blob in image.blobs() {
        assert_served(&rig.get(&rig.blob_url(&blob.digest)).await, &blob.bytes, "blob");
    }
    rig
}

fn admin_url(rig: &Rig) -> String {
    format!("http://{}", rig.wharf.admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_list_json_prints_the_apis_answer() {
    let rig = rig_with_a_pulled_image().await;
    let admin = admin_url(&rig);

    let out = wharf(&["--admin", &admin, "repository", "list", "--json"]).await;
    assert_success(&out, "repository list --json");
    let printed: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(&out)));
    assert!(stdout(&out).starts_with("{\n  \""), "not pretty-printed: {}", stdout(&out));
    assert!(printed["count"].is_u64() && printed["results"].is_array(), "not a listing: {printed}");

    let direct = http::get(&format!("{admin}/api/v1/repositories")).await;
    assert_eq!(direct.status, 200);
    assert_eq!(printed, direct.json(), "--json must print the API's answer unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribution_list_prints_a_table() {
    let rig = Rig::start(&[]).await;
    let out = wharf(&["--admin", &admin_url(&rig), "distribution", "list"]).await;
    assert_success(&out, "distribution list");
    assert_eq!(stdout(&out), "no distributions\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distribution_is_created_listed_updated_and_deleted() {
    let rig = rig_with_a_pulled_image().await;
    let admin = admin_url(&rig);

    // The repository's name (with its `/`s) as the API spells it; the pull
    // has finished, but the listing may trail the cache briefly.
    let repository = within_guard("the pulled repository is listed", async {
        loop {
            let list = http::get(&format!("{admin}/api/v1/repositories")).await.json();
            let found = list["results"].as_array().and_then(|rs| {
                rs.iter().filter_map(|r| r["name"].as_str()).find(|n| n.ends_with("team/app")).map(str::to_owned)
            });
            if let Some(name) = found {
                break name;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    let show = wharf(&["--admin", &admin, "repository", "show", &repository]).await;
    assert_success(&show, "repository show");
    assert!(stdout(&show).starts_with("name "), "{}", stdout(&show));
    assert!(stdout(&show).contains(&repository), "{}", stdout(&show));

    let create = wharf(&[
        "--admin",
        &admin,
        "distribution",
        "create",
        "--name",
        "app-stable",
        "--base-path",
        "mirror/app",
        "--repository",
        &repository,
    ])
    .await;
    assert_success(&create, "distribution create");

    let list = wharf(&["--admin", &admin, "distribution", "list"]).await;
    assert_success(&list, "distribution list");
    let text = stdout(&list);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("NAME") && lines[0].contains("BASE PATH"), "{text}");
    assert!(
        lines[1].starts_with("app-stable") && lines[1].contains("mirror/app") && lines[1].contains("latest"),
        "{text}"
    );

    let update =
        wharf(&["--admin", &admin, "--json", "distribution", "update", "--name", "app-stable", "--private", "true"])
            .await;
    assert_success(&update, "distribution update");
    let updated: serde_json::Value = serde_json::from_slice(&update.stdout).expect("update prints JSON");
    assert_eq!(updated["private"], true, "{updated}");
    assert_eq!(updated["base_path"], "mirror/app", "an update must change only the fields given: {updated}");

    let delete = wharf(&["--admin", &admin, "distribution", "delete", "--name", "app-stable"]).await;
    assert_success(&delete, "distribution delete");
    let gone = wharf(&["--admin", &admin, "distribution", "show", "--name", "app-stable"]).await;
    assert_one_line_error(&gone, 1, "show a deleted distribution");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_repository_is_one_error_line_and_exit_1() {
    let rig = Rig::start(&[]).await;
    let out = wharf(&["--admin", &admin_url(&rig), "repository", "show", "--name", "does/not/exist"]).await;
    assert_one_line_error(&out, 1, "repository show does/not/exist");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_admin_port_exits_69_naming_the_url() {
    let out = wharf(&["--admin", "http://127.0.0.1:1", "repository", "list"]).await;
    assert_one_line_error(&out, 69, "admin port 1");
    let err = stderr(&out);
    assert!(err.contains("http://127.0.0.1:1") && err.contains("--admin") && err.contains("WHARF_ADMIN"), "{err}");
}
