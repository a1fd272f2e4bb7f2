//! What the admin commands print: aligned plain-text tables and field
//! lists made from the admin API's JSON for people, and the API's own JSON,
//! pretty-printed, for scripts. Pure: JSON in, text out; no I/O, no HTTP.
//!
//! Rendering is forgiving: a field the answer lacks shows as `-` rather
//! than failing, so a newer server with more or fewer fields still prints.

use serde_json::Value;

/// Which rendering an answer gets; chosen by the subcommand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum View {
    Repositories,
    Repository,
    Versions,
    Version,
    Tags,
    Manifests,
    Blobs,
    Signatures,
    Distributions,
    Distribution,
    Remotes,
    Remote,
    Tasks,
    Task,
    /// The answer to a cancel: what became of the task.
    TaskCancel,
    /// A task's log, as it is.
    TaskLog,
    Users,
    SigningKeys,
    SigningKey,
    Exports,
    Export,
    /// A dry-run import's report.
    ImportPlan,
    /// A 204 to a DELETE: says what is gone.
    Deleted {
        what: &'static str,
        name: String,
    },
    /// The answer of a copy, remove or revert (`{"version": N}` or
    /// `{"version": null}`); for null, `latest_version` says where the
    /// repository stays.
    Curated {
        repository: String,
    },
}

/// Digests in tables are cut to `sha256:` and 12 hex digits, as image
/// tools show them; `--json` has them whole.
const SHORT_DIGEST: usize = 19;

/// Seconds as a duration (`6h`), or `-`.
fn interval(v: &Value) -> String {
    match v.as_u64() {
        Some(secs) => humantime::format_duration(std::time::Duration::from_secs(secs)).to_string(),
        None => "-".into(),
    }
}

/// The human rendering of `value`, ending in a newline.
pub(crate) fn render(view: &View, value: &Value) -> String {
    match view {
        View::Repositories => listing(value, "repositories", &["NAME", "KIND", "UPSTREAM", "LATEST", "CREATED"], |r| {
            vec![
                text(&r["name"]),
                text(&r["kind"]),
                text(&r["upstream"]),
                text(&r["latest_version"]),
                time(&r["created_at"]),
            ]
        }),
        View::Repository => {
            let mut shown = vec![("name", text(&value["name"])), ("kind", text(&value["kind"]))];
            if value["kind"] == "sync" {
                shown.extend([
                    ("description", text(&value["description"])),
                    ("remote", text(&value["remote"])),
                    ("sync interval", interval(&value["sync_interval"])),
                    ("sync mirror", text(&value["sync_mirror"])),
                    ("next sync", time(&value["next_sync_at"])),
                    ("mirrored", text(&value["mirrored"])),
                ]);
            } else {
                shown.extend([("upstream", text(&value["upstream"])), ("remote name", text(&value["remote_name"]))]);
            }
            shown.extend([
                ("latest version", text(&value["latest_version"])),
                ("retain versions", text(&value["retain_versions"])),
                ("created", time(&value["created_at"])),
            ]);
            fields(&shown)
        }
        View::Versions => {
            listing(value, "versions", &["NUMBER", "CREATED", "BASE", "TAGS", "MANIFESTS", "BLOBS", "SIGNATURES"], |v| {
                let summary = &v["content_summary"];
                vec![
                    text(&v["number"]),
                    time(&v["created_at"]),
                    text(&v["base_version"]),
                    change(summary, "tag"),
                    change(summary, "manifest"),
                    change(summary, "blob"),
                    change(summary, "signature"),
                ]
            })
        }
        View::Version => version(value),
        View::Tags => listing(value, "tags", &["NAME", "DIGEST", "MEDIA TYPE"], |t| {
            vec![text(&t["name"]), digest(&t["digest"]), text(&t["media_type"])]
        }),
        View::Manifests => {
            listing(value, "manifests", &["DIGEST", "MEDIA TYPE", "SIZE", "PLATFORM", "CHILDREN"], |m| {
                vec![
                    digest(&m["digest"]),
                    text(&m["media_type"]),
                    size(&m["size"]),
                    platform(&m["platform"]),
                    children(m),
                ]
            })
        }
        View::Blobs => listing(value, "blobs", &["DIGEST", "MEDIA TYPE", "SIZE", "CACHED"], |b| {
            vec![digest(&b["digest"]), text(&b["media_type"]), size(&b["size"]), yes_no(&b["cached"])]
        }),
        View::Signatures => listing(value, "signatures", &["MANIFEST", "DIGEST", "NAME", "TYPE"], |s| {
            vec![digest(&s["manifest_digest"]), digest(&s["digest"]), signature_name(s), text(&s["type"])]
        }),
        View::Distributions => {
            listing(value, "distributions", &["NAME", "BASE PATH", "REPOSITORY", "VERSION", "PRIVATE"], |d| {
                vec![
                    text(&d["name"]),
                    text(&d["base_path"]),
                    text(&d["repository"]),
                    pinned(&d["version"]),
                    yes_no(&d["private"]),
                ]
            })
        }
        View::Distribution => fields(&[
            ("name", text(&value["name"])),
            ("base path", text(&value["base_path"])),
            ("registry path", text(&value["registry_path"])),
            ("repository", text(&value["repository"])),
            ("version", pinned(&value["version"])),
            ("private", yes_no(&value["private"])),
            ("description", text(&value["description"])),
            ("created", time(&value["created_at"])),
            ("updated", time(&value["updated_at"])),
        ]),
        View::Remotes => listing(value, "remotes", &["NAME", "URL", "UPSTREAM NAME", "POLICY", "TAGS", "CREDENTIALS"], |r| {
            vec![
                text(&r["name"]),
                text(&r["url"]),
                text(&r["upstream_name"]),
                text(&r["policy"]),
                tag_filter(r),
                credentials(r),
            ]
        }),
        View::Remote => fields(&[
            ("name", text(&value["name"])),
            ("url", text(&value["url"])),
            ("upstream name", text(&value["upstream_name"])),
            ("include tags", or_all(&value["include_tags"])),
            ("exclude tags", or_none(&value["exclude_tags"])),
            ("policy", text(&value["policy"])),
            ("credentials", credentials(value)),
            ("tls verify", yes_no(&value["tls_verify"])),
            ("ca cert", if value["ca_cert"].is_string() { "yes".into() } else { "-".into() }),
            ("sigstore", text(&value["sigstore"])),
            ("download concurrency", text(&value["download_concurrency"])),
            ("rate limit", rate(&value["rate_limit"])),
            ("created", time(&value["created_at"])),
            ("updated", time(&value["updated_at"])),
        ]),
        View::Tasks => {
            listing(value, "tasks", &["ID", "KIND", "RESOURCE", "STATE", "PROGRESS", "BYTES", "CREATED", "FINISHED"], |t| {
                vec![
                    text(&t["id"]),
                    text(&t["kind"]),
                    text(&t["resource"]),
                    text(&t["state"]),
                    items(&t["progress"]),
                    size(&t["progress"]["bytes_done"]),
                    time(&t["created_at"]),
                    time(&t["finished_at"]),
                ]
            })
        }
        View::Task => fields(&[
            ("id", text(&value["id"])),
            ("kind", text(&value["kind"])),
            ("resource", text(&value["resource"])),
            ("state", text(&value["state"])),
            ("node", text(&value["node"])),
            ("progress", items(&value["progress"])),
            ("bytes", size(&value["progress"]["bytes_done"])),
            ("error", text(&value["error"])),
            ("step", text(&value["step"])),
            ("created resources", task_made(value)),
            ("params", compact(&value["params"])),
            ("created", time(&value["created_at"])),
            ("started", time(&value["started_at"])),
            ("finished", time(&value["finished_at"])),
        ]),
        View::Exports => listing(value, "exports", &["ID", "STATE", "VERSIONS", "BASE", "SIZE", "DIRECTORY"], |e| {
            vec![text(&e["id"]), text(&e["state"]), exported(&e["repositories"]), text(&e["base"]), size(&e["size"]), text(&e["directory"])]
        }),
        View::Export => fields(&[
            ("id", text(&value["id"])),
            ("state", text(&value["state"])),
            ("directory", text(&value["directory"])),
            ("versions", exported(&value["repositories"])),
            ("base", text(&value["base"])),
            ("size", size(&value["size"])),
            ("files", text(&value["files"])),
            ("error", text(&value["error"])),
            ("created", time(&value["created_at"])),
        ]),
        View::ImportPlan => fields(&[
            ("export", text(&value["export"])),
            ("id", text(&value["uuid"])),
            ("imported before", yes_no(&value["already_imported"])),
            ("repositories", value["repositories"].as_array().map_or_else(|| "-".into(), |a| a.iter().map(text).collect::<Vec<_>>().join(", "))),
            ("space needed", size(&value["new_bytes"])),
        ]),
        View::TaskCancel => match value["state"].as_str() {
            Some("running") => format!("task {} is stopping: it ends canceled at its next check\n", text(&value["id"])),
            Some("canceled") => format!("canceled task {}\n", text(&value["id"])),
            _ => render(&View::Task, value),
        },
        View::TaskLog => value["log"].as_str().unwrap_or_default().to_owned(),
        View::Users => listing(value, "users", &["NAME", "ADMIN", "RULES"], |u| {
            let rules: Vec<String> = u["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| format!("{} {}", list_text(&r["actions"], ","), list_text(&r["repositories"], ",")))
                .collect();
            vec![text(&u["name"]), yes_no(&u["admin"]), if rules.is_empty() { "-".into() } else { rules.join("; ") }]
        }),
        View::SigningKeys => listing(value, "signing keys", &["KID", "CURRENT", "CREATED", "RETIRED", "EXPIRES"], |k| {
            vec![
                text(&k["kid"]),
                yes_no(&k["current"]),
                time(&k["created_at"]),
                time(&k["retired_at"]),
                time(&k["expires_at"]),
            ]
        }),
        View::SigningKey => fields(&[
            ("kid", text(&value["kid"])),
            ("algorithm", text(&value["algorithm"])),
            ("current", yes_no(&value["current"])),
            ("created", time(&value["created_at"])),
        ]),
        View::Deleted { what, name } => format!("deleted {what} {name}\n"),
        View::Curated { repository } => match value["version"].as_u64() {
            Some(n) => format!("created version {n} of {repository}\n"),
            None => format!("no change: {repository} stays at version {}\n", text(&value["latest_version"])),
        },
    }
}

/// Columns padded to their widest cell, two spaces apart, no trailing
/// spaces. Cells are one line: control characters become spaces so a
/// description cannot break the layout.
pub(crate) struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&str]) -> Table {
        Table { header: header.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.iter().map(|c| c.chars().map(|ch| if ch.is_control() { ' ' } else { ch }).collect()).collect());
    }

    pub(crate) fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).chain([self.header.len()]).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for line in std::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        // A field list has no header line.
        let header = (!self.header.is_empty()).then_some(&self.header);
        for line in header.into_iter().chain(&self.rows) {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', widths[i] - cell.chars().count()));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A paged listing (`{"count", "limit", "offset", "results"}`) as a table,
/// with a last line saying how to get the rest when there is more.
fn listing(list: &Value, noun: &str, header: &[&str], row: impl Fn(&Value) -> Vec<String>) -> String {
    let results = list["results"].as_array().map(Vec::as_slice).unwrap_or_default();
    let offset = list["offset"].as_u64().unwrap_or(0);
    let shown = results.len() as u64;
    let count = list["count"].as_u64().unwrap_or(offset + shown);
    if results.is_empty() {
        return if offset > 0 && count > 0 {
            format!("no {noun} from offset {offset}; there are {count}\n")
        } else {
            format!("no {noun}\n")
        };
    }
    let mut table = Table::new(header);
    for r in results {
        table.row(row(r));
    }
    let mut out = table.render();
    if offset + shown < count {
        out.push_str(&format!(
            "showing {}-{} of {count} (use --offset {} for more)\n",
            offset + 1,
            offset + shown,
            offset + shown
        ));
    }
    out
}

/// One object as `label  value` lines, labels padded to line up.
fn fields(pairs: &[(&str, String)]) -> String {
    let mut table = Table { header: Vec::new(), rows: Vec::new() };
    for (label, value) in pairs {
        table.row(vec![(*label).to_owned(), value.clone()]);
    }
    table.render()
}

/// One version: its fields, then what it holds and what changed from its base.
fn version(v: &Value) -> String {
    let mut out = fields(&[
        ("repository", text(&v["repository"])),
        ("number", text(&v["number"])),
        ("created", time(&v["created_at"])),
        ("base", text(&v["base_version"])),
    ]);
    let summary = &v["content_summary"];
    let mut table = Table::new(&["CONTENT", "PRESENT", "ADDED", "REMOVED"]);
    for (label, kind) in [("tags", "tag"), ("manifests", "manifest"), ("blobs", "blob"), ("signatures", "signature")] {
        table.row(vec![
            label.to_owned(),
            text(&summary["present"][kind]),
            text(&summary["added"][kind]),
            text(&summary["removed"][kind]),
        ]);
    }
    out.push('\n');
    out.push_str(&table.render());
    out
}

/// A version's count of one kind of content, with what changed from its
/// base when something did: `6 (+2 -1)`.
fn change(summary: &Value, kind: &str) -> String {
    let present = text(&summary["present"][kind]);
    let added = summary["added"][kind].as_u64().unwrap_or(0);
    let removed = summary["removed"][kind].as_u64().unwrap_or(0);
    match (added, removed) {
        (0, 0) => present,
        (a, 0) => format!("{present} (+{a})"),
        (0, r) => format!("{present} (-{r})"),
        (a, r) => format!("{present} (+{a} -{r})"),
    }
}

/// A scalar as people read it; absent or null is `-`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => yes_no(&Value::Bool(*b)),
        other => other.to_string(),
    }
}

/// A JSON array of strings, joined.
fn list_text(v: &Value, sep: &str) -> String {
    v.as_array().into_iter().flatten().map(text).collect::<Vec<_>>().join(sep)
}

fn yes_no(v: &Value) -> String {
    match v.as_bool() {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => "-".into(),
    }
}

/// A remote's tag filter in one cell: `v1.* -*-rc*`.
fn tag_filter(r: &Value) -> String {
    let include = or_all(&r["include_tags"]);
    let exclude: Vec<String> =
        r["exclude_tags"].as_array().into_iter().flatten().map(|t| format!("-{}", text(t))).collect();
    if exclude.is_empty() {
        include
    } else {
        format!("{include} {}", exclude.join(" "))
    }
}

/// An include list; empty takes every tag.
fn or_all(v: &Value) -> String {
    match v.as_array() {
        Some(a) if !a.is_empty() => list_text(v, " "),
        Some(_) => "all".into(),
        None => text(v),
    }
}

fn or_none(v: &Value) -> String {
    match v.as_array() {
        Some(a) if !a.is_empty() => list_text(v, " "),
        _ => "-".into(),
    }
}

/// Whose credentials a remote uses; the API never shows them.
fn credentials(r: &Value) -> String {
    if r["has_credentials"].as_bool() == Some(true) {
        "own".into()
    } else if let Some(from) = r["credentials_from"].as_str() {
        format!("from upstream {from}")
    } else {
        "-".into()
    }
}

fn rate(v: &Value) -> String {
    if v.is_null() {
        "unlimited".into()
    } else {
        format!("{}/s", text(v))
    }
}

/// A task's items: `3/10` once the total is known, else what is done.
fn items(progress: &Value) -> String {
    match (progress["items_done"].as_u64(), progress["items_total"].as_u64()) {
        (Some(done), Some(total)) => format!("{done}/{total}"),
        (Some(done), None) => done.to_string(),
        _ => "-".into(),
    }
}

/// What a task made: `docker.io/library/debian version 2`, comma-separated.
/// What a task made; for an import that made nothing, why.
fn task_made(task: &Value) -> String {
    let made = created_resources(&task["created_resources"]);
    if made == "-" && task["kind"] == "import" && task["state"] == "completed" {
        return "none: nothing changed (imported here before, or its content was here already)".into();
    }
    made
}

fn created_resources(v: &Value) -> String {
    let made: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| match r["type"].as_str() {
            Some("repository_version") => format!("{} version {}", text(&r["repository"]), text(&r["number"])),
            Some("export") => format!("export {} in {}", text(&r["id"]), text(&r["directory"])),
            _ => compact(r),
        })
        .collect();
    if made.is_empty() {
        "-".into()
    } else {
        made.join(", ")
    }
}

/// A JSON value on one line, as sent; `{}` and null show as `-`.
fn compact(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::Object(o) if o.is_empty() => "-".into(),
        other => other.to_string(),
    }
}

/// A distribution's version: null serves the latest.
fn pinned(v: &Value) -> String {
    if v.is_null() {
        "latest".into()
    } else {
        text(v)
    }
}

/// RFC 3339 without the fraction of a second, which only widens a table.
fn time(v: &Value) -> String {
    let Some(s) = v.as_str() else { return text(v) };
    match (s.find('.'), s.find('T')) {
        (Some(dot), Some(t)) if dot > t => {
            let zone = s[dot + 1..].trim_start_matches(|c: char| c.is_ascii_digit());
            format!("{}{zone}", &s[..dot])
        }
        _ => s.to_owned(),
    }
}

fn digest(v: &Value) -> String {
    match v.as_str() {
        Some(d) => d.chars().take(SHORT_DIGEST).collect(),
        None => text(v),
    }
}

/// A signature's name, `<manifest digest>@<id>`, with the digest shortened
/// as the MANIFEST column shows it; any other name as it is.
fn signature_name(s: &Value) -> String {
    match (s["name"].as_str(), s["manifest_digest"].as_str()) {
        (Some(name), Some(manifest)) => match name.strip_prefix(manifest).and_then(|id| id.strip_prefix('@')) {
            Some(id) => format!("{}@{id}", digest(&s["manifest_digest"])),
            None => name.to_owned(),
        },
        _ => text(&s["name"]),
    }
}

/// Bytes in binary units, one decimal above a KiB.
/// An export's versions: `repository@N, ...`.
fn exported(v: &Value) -> String {
    let all: Vec<String> = v
        .as_array()
        .map(|a| a.iter().map(|r| format!("{}@{}", text(&r["repository"]), text(&r["version"]))).collect())
        .unwrap_or_default();
    if all.is_empty() {
        "-".into()
    } else {
        all.join(", ")
    }
}

fn size(v: &Value) -> String {
    let Some(bytes) = v.as_u64() else { return text(v) };
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `os/architecture[/variant]`.
fn platform(v: &Value) -> String {
    if !v.is_object() {
        return "-".into();
    }
    let mut parts = vec![text(&v["os"]), text(&v["architecture"])];
    if let Some(variant) = v["variant"].as_str().filter(|s| !s.is_empty()) {
        parts.push(variant.to_owned());
    }
    parts.join("/")
}

/// How many manifests an index lists; `-` for an image manifest, which
/// has none to list.
fn children(manifest: &Value) -> String {
    let media_type = manifest["media_type"].as_str().unwrap_or_default();
    let is_index = media_type.ends_with(".index.v1+json") || media_type.ends_with(".manifest.list.v2+json");
    match manifest["children"].as_array() {
        Some(list) if is_index || !list.is_empty() => list.len().to_string(),
        _ => "-".into(),
    }
}

/// Re-indents JSON text (already known to be valid) two spaces a level,
/// as `serde_json::to_string_pretty` would, but without parsing it into a
/// map: keys keep the order the API sent and numbers keep their exact
/// text. Only whitespace outside strings changes.
pub(crate) fn pretty_json(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = raw.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", depth));
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                while chars.next_if(|n| n.is_ascii_whitespace()).is_some() {}
                // An empty object or array stays `{}` / `[]`.
                if let Some(close) = chars.next_if(|n| *n == '}' || *n == ']') {
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn page(count: u64, offset: u64, results: &str) -> Value {
        json(&format!(r#"{{"count": {count}, "limit": 100, "offset": {offset}, "results": {results}}}"#))
    }

    const DEBIAN: &str = r#"{"name": "docker.io/library/debian", "kind": "pull-through",
        "upstream": "docker.io", "remote_name": "library/debian",
        "retain_versions": null, "latest_version": 3,
        "created_at": "2026-11-25T10:00:00.123Z"}"#;
    const LOCAL: &str = r#"{"name": "team/app", "kind": "push", "upstream": null, "remote_name": null,
        "retain_versions": 5, "latest_version": 12, "created_at": "2026-11-26T08:30:00Z"}"#;

    #[test]
    fn repositories_render_as_an_aligned_table() {
        let out = render(&View::Repositories, &page(2, 0, &format!("[{DEBIAN}, {LOCAL}]")));
        assert_eq!(
            out,
            "\
NAME                      KIND          UPSTREAM   LATEST  CREATED
docker.io/library/debian  pull-through  docker.io  3       2026-11-25T10:00:00Z
team/app                  push          -          12      2026-11-26T08:30:00Z
"
        );
    }

    #[test]
    fn a_partial_page_says_how_to_get_the_rest() {
        let out = render(&View::Repositories, &page(2345, 100, &format!("[{DEBIAN}, {LOCAL}]")));
        assert_eq!(out.lines().last().unwrap(), "showing 101-102 of 2345 (use --offset 102 for more)");
        let last_page = render(&View::Repositories, &page(102, 100, &format!("[{DEBIAN}, {LOCAL}]")));
        assert!(!last_page.contains("showing"), "{last_page}");
    }

    #[test]
    fn an_empty_listing_says_so() {
        assert_eq!(render(&View::Distributions, &page(0, 0, "[]")), "no distributions\n");
        assert_eq!(render(&View::Repositories, &page(7, 50, "[]")), "no repositories from offset 50; there are 7\n");
    }

    #[test]
    fn one_repository_renders_as_fields() {
        assert_eq!(
            render(&View::Repository, &json(DEBIAN)),
            "\
name             docker.io/library/debian
kind             pull-through
upstream         docker.io
remote name      library/debian
latest version   3
retain versions  -
created          2026-11-25T10:00:00Z
"
        );
    }

    const VERSION: &str = r#"{"repository": "docker.io/library/debian", "number": 3,
        "created_at": "2026-11-25T10:00:00.000Z", "base_version": 2,
        "content_summary": {
          "added":   {"tag": 1, "manifest": 1, "blob": 2, "signature": 0},
          "removed": {"tag": 1, "manifest": 0, "blob": 0, "signature": 1},
          "present": {"tag": 2, "manifest": 3, "blob": 6, "signature": 2}}}"#;
    /// As a server from before signatures were counted answers.
    const VERSION_ZERO: &str = r#"{"repository": "docker.io/library/debian", "number": 0,
        "created_at": "2026-11-25T09:00:00.000Z", "base_version": null,
        "content_summary": {
          "added":   {"tag": 0, "manifest": 0, "blob": 0},
          "removed": {"tag": 0, "manifest": 0, "blob": 0},
          "present": {"tag": 0, "manifest": 0, "blob": 0}}}"#;

    #[test]
    fn versions_show_what_each_holds_and_what_changed() {
        let out = render(&View::Versions, &page(2, 0, &format!("[{VERSION}, {VERSION_ZERO}]")));
        assert_eq!(
            out,
            "\
NUMBER  CREATED               BASE  TAGS       MANIFESTS  BLOBS   SIGNATURES
3       2026-11-25T10:00:00Z  2     2 (+1 -1)  3 (+1)     6 (+2)  2 (-1)
0       2026-11-25T09:00:00Z  -     0          0          0       -
"
        );
    }

    #[test]
    fn one_version_shows_its_content_summary() {
        assert_eq!(
            render(&View::Version, &json(VERSION)),
            "\
repository  docker.io/library/debian
number      3
created     2026-11-25T10:00:00Z
base        2

CONTENT     PRESENT  ADDED  REMOVED
tags        2        1      1
manifests   3        1      0
blobs       6        2      0
signatures  2        0      1
"
        );
    }

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn manifests_show_platform_children_and_short_digests() {
        let index = format!(
            r#"{{"digest": "{D1}", "media_type": "application/vnd.oci.image.index.v1+json",
            "size": 1234, "artifact_type": null, "subject": null, "platform": null,
            "config": null, "layers": [],
            "children": [{{"digest": "{D2}", "media_type": "application/vnd.oci.image.manifest.v1+json", "size": 567,
                          "platform": {{"os": "linux", "architecture": "arm64", "variant": "v8"}}}}]}}"#
        );
        let image = format!(
            r#"{{"digest": "{D2}", "media_type": "application/vnd.oci.image.manifest.v1+json",
            "size": 567, "artifact_type": null, "subject": null,
            "platform": {{"os": "linux", "architecture": "arm64", "variant": "v8"}},
            "config": {{"digest": "{D1}", "media_type": "application/vnd.oci.image.config.v1+json", "size": 10}},
            "layers": [], "children": []}}"#
        );
        let out = render(&View::Manifests, &page(2, 0, &format!("[{index}, {image}]")));
        assert_eq!(
            out,
            "\
DIGEST               MEDIA TYPE                                  SIZE     PLATFORM        CHILDREN
sha256:111111111111  application/vnd.oci.image.index.v1+json     1.2 KiB  -               1
sha256:222222222222  application/vnd.oci.image.manifest.v1+json  567 B    linux/arm64/v8  -
"
        );
    }

    #[test]
    fn tags_and_blobs_render_their_columns() {
        let tags = render(
            &View::Tags,
            &page(
                1,
                0,
                &format!(
                    r#"[{{"name": "11", "digest": "{D1}", "media_type": "application/vnd.oci.image.index.v1+json"}}]"#
                ),
            ),
        );
        assert_eq!(
            tags,
            "NAME  DIGEST               MEDIA TYPE\n11    sha256:111111111111  application/vnd.oci.image.index.v1+json\n"
        );
        let blobs = render(
            &View::Blobs,
            &page(
                1,
                0,
                &format!(
                    r#"[{{"digest": "{D2}", "media_type": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 33554432, "cached": true}}]"#
                ),
            ),
        );
        assert_eq!(
            blobs,
            "\
DIGEST               MEDIA TYPE                                   SIZE      CACHED
sha256:222222222222  application/vnd.oci.image.layer.v1.tar+gzip  32.0 MiB  yes
"
        );
    }

    #[test]
    fn signatures_show_their_manifest_digest_name_and_type() {
        let listed = render(
            &View::Signatures,
            &page(
                2,
                0,
                &format!(
                    r#"[{{"manifest_digest": "{D1}", "digest": "{D2}", "name": "{D1}@0a1b", "type": "atomic"}},
                        {{"manifest_digest": "{D1}", "digest": "{D2}", "name": "other", "type": "atomic"}}]"#
                ),
            ),
        );
        assert_eq!(
            listed,
            "\
MANIFEST             DIGEST               NAME                      TYPE
sha256:111111111111  sha256:222222222222  sha256:111111111111@0a1b  atomic
sha256:111111111111  sha256:222222222222  other                     atomic
"
        );
    }

    const DISTRIBUTION: &str = r#"{"name": "debian-stable", "base_path": "debian", "repository": "docker.io/library/debian",
        "version": null, "private": false, "description": "line one\nline two",
        "registry_path": "debian", "created_at": "2026-11-25T10:00:00.5Z", "updated_at": "2026-11-25T11:00:00Z"}"#;

    #[test]
    fn distributions_show_an_unpinned_version_as_latest() {
        let out = render(&View::Distributions, &page(1, 0, &format!("[{DISTRIBUTION}]")));
        assert_eq!(
            out,
            "\
NAME           BASE PATH  REPOSITORY                VERSION  PRIVATE
debian-stable  debian     docker.io/library/debian  latest   no
"
        );
        let one = render(&View::Distribution, &json(DISTRIBUTION));
        assert!(one.contains("version        latest\n"), "{one}");
        // A multi-line description cannot break the layout.
        assert!(one.contains("description    line one line two\n"), "{one}");
        assert!(one.contains("created        2026-11-25T10:00:00Z\n"), "{one}");
    }

    const REMOTE: &str = r#"{"name": "quay", "url": "https://quay.io", "upstream_name": "team/app",
        "include_tags": ["v1.*"], "exclude_tags": ["*-rc*"], "policy": "on_demand", "has_credentials": false,
        "credentials_from": "docker.io", "tls_verify": true, "ca_cert": null, "sigstore": null,
        "download_concurrency": null, "rate_limit": 5, "created_at": "2026-11-25T10:00:00.123Z",
        "updated_at": "2026-11-25T10:00:00.123Z"}"#;

    #[test]
    fn remotes_show_their_filter_and_whose_credentials() {
        let out = render(&View::Remotes, &page(1, 0, &format!("[{REMOTE}]")));
        assert_eq!(
            out,
            "NAME  URL              UPSTREAM NAME  POLICY     TAGS         CREDENTIALS\n\
             quay  https://quay.io  team/app       on_demand  v1.* -*-rc*  from upstream docker.io\n"
        );
        let one = render(&View::Remote, &json(REMOTE));
        assert!(one.contains("rate limit            5/s\n"), "{one}");
        assert!(one.contains("include tags          v1.*\n"), "{one}");
    }

    const RUNNING: &str = r#"{"id": 7, "kind": "sync", "resource": "docker.io/library/debian",
        "params": {"remote": "debian"}, "state": "running",
        "progress": {"items_done": 3, "items_total": 10, "bytes_done": 12345}, "error": null,
        "created_resources": [], "created_at": "2026-11-25T10:00:00.123Z",
        "started_at": "2026-11-25T10:00:01.000Z", "finished_at": null, "node": "edge-01"}"#;
    const FAILED: &str = r#"{"id": 6, "kind": "gc", "resource": null, "params": {}, "state": "failed",
        "progress": {"items_done": 0, "items_total": null, "bytes_done": 0}, "error": "remote said 401",
        "created_resources": [{"type": "repository_version", "repository": "team/app", "number": 2}],
        "created_at": "2026-11-25T09:00:00Z", "started_at": null, "finished_at": "2026-11-25T09:00:05Z"}"#;

    #[test]
    fn tasks_show_their_state_and_progress() {
        let out = render(&View::Tasks, &page(2, 0, &format!("[{RUNNING}, {FAILED}]")));
        assert_eq!(
            out,
            "\
ID  KIND  RESOURCE                  STATE    PROGRESS  BYTES     CREATED               FINISHED
7   sync  docker.io/library/debian  running  3/10      12.1 KiB  2026-11-25T10:00:00Z  -
6   gc    -                         failed   0         0 B       2026-11-25T09:00:00Z  2026-11-25T09:00:05Z
"
        );
        assert_eq!(render(&View::Tasks, &page(0, 0, "[]")), "no tasks\n");
        let one = render(&View::Task, &json(FAILED));
        assert!(one.contains("error              remote said 401\n"), "{one}");
        assert!(one.contains("created resources  team/app version 2\n"), "{one}");
        assert!(one.contains("params             -\n"), "{one}");
        let one = render(&View::Task, &json(RUNNING));
        assert!(one.contains("params             {\"remote\":\"debian\"}\n"), "{one}");
        assert!(one.contains("progress           3/10\n"), "{one}");
        assert!(one.contains("node               edge-01\n"), "{one}");
        // An import that made nothing says why; an export says where.
        let unchanged = serde_json::json!({"id": 9, "kind": "import", "state": "completed", "created_resources": []});
        assert!(render(&View::Task, &unchanged).contains("created resources  none: nothing changed (imported here before"));
        let export = serde_json::json!({"id": 9, "kind": "export", "state": "completed",
            "created_resources": [{"type": "export", "id": 4, "directory": "/mnt/t/wharf-export-4"}]});
        assert!(render(&View::Task, &export).contains("created resources  export 4 in /mnt/t/wharf-export-4\n"));
    }

    #[test]
    fn a_task_log_is_printed_as_it_is() {
        let log = r#"{"log": "STEP 1/2: FROM scratch\nSTEP 2/2: COPY a /a\n", "next_offset": 40, "finished": true}"#;
        assert_eq!(render(&View::TaskLog, &json(log)), "STEP 1/2: FROM scratch\nSTEP 2/2: COPY a /a\n");
    }

    #[test]
    fn a_cancel_says_whether_the_task_stopped_or_is_stopping() {
        assert_eq!(render(&View::TaskCancel, &json(RUNNING)), "task 7 is stopping: it ends canceled at its next check\n");
        let canceled = RUNNING.replace("\"running\"", "\"canceled\"");
        assert_eq!(render(&View::TaskCancel, &json(&canceled)), "canceled task 7\n");
    }

    #[test]
    fn curation_says_which_version_it_made_or_where_the_repository_stays() {
        let view = View::Curated { repository: "team/app".into() };
        assert_eq!(render(&view, &json(r#"{"version": 7}"#)), "created version 7 of team/app\n");
        assert_eq!(
            render(&view, &json(r#"{"version": null, "latest_version": 6}"#)),
            "no change: team/app stays at version 6\n"
        );
        assert_eq!(render(&view, &json(r#"{"version": null}"#)), "no change: team/app stays at version -\n");
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(size(&json("0")), "0 B");
        assert_eq!(size(&json("1023")), "1023 B");
        assert_eq!(size(&json("1536")), "1.5 KiB");
        assert_eq!(size(&json("5368709120")), "5.0 GiB");
        assert_eq!(size(&Value::Null), "-");
    }

    #[test]
    fn pretty_json_keeps_key_order_and_number_text() {
        let raw = r#"{"zeta":1,"alpha":{"list":[1.50,2e3],"empty":[],"obj":{}},"s":"a,b:{c}\"]","n":null}"#;
        let pretty = pretty_json(raw);
        assert_eq!(
            pretty,
            r#"{
  "zeta": 1,
  "alpha": {
    "list": [
      1.50,
      2e3
    ],
    "empty": [],
    "obj": {}
  },
  "s": "a,b:{c}\"]",
  "n": null
}
"#
        );
        assert_eq!(json(&pretty), json(raw));
    }

    #[test]
    fn pretty_json_reindents_already_pretty_input() {
        let raw = "{\n    \"a\" : [ ],\n\t\"b\": [ 1 , 2 ]\n}";
        assert_eq!(pretty_json(raw), "{\n  \"a\": [],\n  \"b\": [\n    1,\n    2\n  ]\n}\n");
        // serde_json's own pretty form is a fixed point.
        let value = json(r#"{"a": {"b": [1, {"c": "d"}]}, "e": []}"#);
        let serde_pretty = serde_json::to_string_pretty(&value).unwrap();
        assert_eq!(pretty_json(&serde_pretty), format!("{serde_pretty}\n"));
    }
}
