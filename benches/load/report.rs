//! The one table: per scenario and metric, each server's median and spread
//! over the rounds, the median of the per-round ratios wharf ÷ peer, and the
//! issue's target next to each ratio with PASS or MISS.
//!
//! `run.sh` appends one JSON line per measurement to a results file:
//! `{"round":1,"metric":"cold_pull_s","server":"wharf","value":0.41}`, and
//! `{"param":"image","value":"3 × 32 MiB"}` lines for the labels. Targets
//! are reported, never asserted: a MISS does not fail the run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::{fail, Result};

const SERVERS: [&str; 4] = ["wharf", "distribution", "nginx", "upstream"];
const PEERS: [&str; 3] = ["distribution", "nginx", "upstream"];

#[derive(Clone, Copy)]
enum Op {
    /// At most (the median).
    Le,
    /// At least (the median).
    Ge,
    /// Strictly below in every round: a bound on a peak holds only if the
    /// worst round keeps it.
    Lt,
    /// Exactly, in every round.
    Eq,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Le => "≤",
            Op::Ge => "≥",
            Op::Lt => "<",
            Op::Eq => "=",
        }
    }

    fn holds(self, value: f64, target: f64) -> bool {
        match self {
            Op::Le => value <= target,
            Op::Ge => value >= target,
            Op::Lt => value < target,
            Op::Eq => (value - target).abs() < 1e-9,
        }
    }
}

/// One line of the table.
struct Row {
    scenario: &'static str,
    /// Scenario and label may name the run's parameters: `{image}`,
    /// `{blob}`, `{small}`, `{tls_small}`, `{rtt_small}`, `{rtt}`, `{xfer}`,
    /// `{build_bin}`, `{build_app}`, `{flatpak}`.
    label: &'static str,
    metric: &'static str,
    /// Targets on the ratio wharf ÷ peer.
    ratio_targets: &'static [(&'static str, Op, f64)],
    /// A target on wharf's own value.
    check: Option<(Op, f64)>,
}

const fn row(scenario: &'static str, label: &'static str, metric: &'static str) -> Row {
    Row { scenario, label, metric, ratio_targets: &[], check: None }
}

/// Issue 15's targets: wharf against distribution and the direct pull on
/// the cold paths, plain, over TLS and a round trip away; the herd's one
/// upstream GET per blob and the 64 MiB peak from issue 3.
const COLD_PULL: &[(&str, Op, f64)] = &[("distribution", Op::Le, 0.6), ("upstream", Op::Le, 1.3)];
const COLD_BLOB: &[(&str, Op, f64)] = &[("distribution", Op::Ge, 1.2), ("upstream", Op::Ge, 0.7)];
const SMALL_COLD: &[(&str, Op, f64)] = &[("upstream", Op::Ge, 0.85)];
/// Issue 16's, on S3, against distribution with its s3 driver: a cold pull
/// at most 0.75× its time; without a hot tier, warm reads at least its
/// throughput (an image pull's wall at most 1×, a blob's MB/s at least 1×).
const S3_COLD_PULL: &[(&str, Op, f64)] = &[("distribution", Op::Le, 0.75)];
const S3_WARM_WALL: &[(&str, Op, f64)] = &[("distribution", Op::Le, 1.0)];
const S3_WARM_RATE: &[(&str, Op, f64)] = &[("distribution", Op::Ge, 1.0)];
/// Issue 18's: an export and an import at least as fast as skopeo copying
/// the same images out of docker-registry into an `oci:` directory and from
/// it into another docker-registry (the distribution column).
const TRANSFER: &[(&str, Op, f64)] = &[("distribution", Op::Ge, 1.0)];

/// Issue 19's: a native build at least 5× faster than `buildah build` of
/// the same Containerfile (the distribution column).
const BUILD: &[(&str, Op, f64)] = &[("distribution", Op::Le, 0.2)];

const ROWS: &[Row] = &[
    Row { ratio_targets: COLD_PULL, ..row("1 cold pull", "image {image}, s", "cold_pull_s") },
    row("2 warm", "image pull {image}, s", "warm_pull_s"),
    Row { ratio_targets: COLD_BLOB, ..row("2 warm", "blob {blob} cold first, 1 client, MB/s", "cold_blob_mbs") },
    row("2 warm", "server CPU for that cold blob (to stored), s", "cold_blob_cpu_s"),
    row("2 warm", "blob {blob}, 1 client, MB/s", "blob1_mbs"),
    row("2 warm", "blob {blob}, 8 clients, MB/s", "blob8_mbs"),
    row("2 warm", "server CPU per GiB served (warm blob), s", "cpu_s_per_gib"),
    row("3 herd", "20 clients, wall s", "herd20_s"),
    row("3 herd", "20 clients, wall ÷ own cold pull", "herd20_vs_cold"),
    Row { check: Some((Op::Eq, 1.0)), ..row("3 herd", "20 clients, upstream GETs per blob", "herd20_gets_per_blob") },
    row("3 herd", "50 clients, wall s", "herd50_s"),
    row("3 herd", "50 clients, wall ÷ own cold pull", "herd50_vs_cold"),
    Row { check: Some((Op::Eq, 1.0)), ..row("3 herd", "50 clients, upstream GETs per blob", "herd50_gets_per_blob") },
    row("4 manifest by tag", "GET, 64 conns, req/s", "manifest_get_rps"),
    row("4 manifest by tag", "GET p99, ms", "manifest_get_p99_ms"),
    row("4 manifest by tag", "HEAD, 64 conns, req/s", "manifest_head_rps"),
    row("4 manifest by tag", "HEAD p99, ms", "manifest_head_p99_ms"),
    row("5 memory", "idle RSS after start, MiB", "rss_idle_mib"),
    row("5 memory", "peak RSS, cold + warm image pull, MiB", "rss_pull_mib"),
    Row { check: Some((Op::Lt, 64.0)), ..row("5 memory", "peak RSS, cold {blob} blob, MiB", "rss_cold_blob_mib") },
    row("5 memory", "peak RSS, warm {blob} blob 1 + 8 clients, MiB", "rss_warm_blob_mib"),
    Row { check: Some((Op::Lt, 64.0)), ..row("5 memory", "peak RSS, 50-client herd, MiB", "rss_herd_mib") },
    row("5 memory", "RSS before the 50-client herd, MiB", "rss_before_herd_mib"),
    row("5 memory", "50-client herd's peak above that, MiB", "rss_herd_added_mib"),
    Row { ratio_targets: SMALL_COLD, ..row("6 small images", "{small} images cold, images/s", "small_cold_ips") },
    row("6 small images", "{small} images warm, images/s", "small_warm_ips"),
    Row { ratio_targets: COLD_PULL, ..row("7 TLS upstream", "image {image} cold, s", "tls_cold_pull_s") },
    Row {
        ratio_targets: COLD_BLOB,
        ..row("7 TLS upstream", "blob {blob} cold first, 1 client, MB/s", "tls_cold_blob_mbs")
    },
    Row {
        check: Some((Op::Lt, 64.0)),
        ..row("7 TLS upstream", "peak RSS, cold {blob} blob, MiB", "tls_rss_cold_blob_mib")
    },
    Row {
        ratio_targets: SMALL_COLD,
        ..row("7 TLS upstream", "{tls_small} small images cold, images/s", "tls_small_cold_ips")
    },
    Row {
        ratio_targets: SMALL_COLD,
        ..row("8 small images, {rtt} RTT upstream", "{rtt_small} images cold, images/s", "rtt_small_cold_ips")
    },
    row("8 small images, {rtt} RTT upstream", "upstream requests per image (cold)", "rtt_small_requests_per_image"),
    Row { ratio_targets: S3_COLD_PULL, ..row("9 S3, wharf with hot tier", "image {image} cold, s", "s3_cold_pull_s") },
    row("9 S3, wharf with hot tier", "image {image} cold, until all in the bucket, s", "s3_stored_s"),
    row("9 S3, wharf with hot tier", "image {image} warm, s", "s3_warm_pull_s"),
    Row {
        check: Some((Op::Le, 1.1)),
        ..row("9 S3, wharf with hot tier", "warm image pull ÷ the same server's on local disk (2)", "s3_warm_vs_disk")
    },
    row("9 S3, wharf with hot tier", "blob {blob} cold first, 1 client, MB/s", "s3_cold_blob_mbs"),
    Row {
        check: Some((Op::Lt, 64.0)),
        ..row("9 S3, wharf with hot tier", "peak RSS, cold {blob} blob, MiB", "s3_rss_cold_blob_mib")
    },
    row("9 S3, wharf without hot tier", "image {image} cold, s", "s3_nocache_cold_pull_s"),
    Row {
        ratio_targets: S3_WARM_WALL,
        ..row("9 S3, wharf without hot tier", "image {image} warm, s", "s3_nocache_warm_pull_s")
    },
    Row {
        ratio_targets: S3_WARM_RATE,
        ..row("9 S3, wharf without hot tier", "blob {blob} warm, 1 client, MB/s", "s3_nocache_blob1_mbs")
    },
    row("10 metadata in PostgreSQL", "{small} images cold, images/s", "pg_small_cold_ips"),
    row("10 metadata in PostgreSQL", "small images cold ÷ the same on SQLite (6)", "pg_small_cold_vs_sqlite"),
    row("10 metadata in PostgreSQL", "{small} images warm, images/s", "pg_small_warm_ips"),
    row("10 metadata in PostgreSQL", "small images warm ÷ the same on SQLite (6)", "pg_small_warm_vs_sqlite"),
    row("10 metadata in PostgreSQL", "manifest by tag GET, 64 conns, req/s", "pg_manifest_get_rps"),
    row("10 metadata in PostgreSQL", "manifest GETs ÷ the same on SQLite (4)", "pg_manifest_get_vs_sqlite"),
    row("11 two nodes, one registry", "blob {blob} cold, 10 clients on each node, MB/s", "cluster_herd_mbs"),
    Row {
        check: Some((Op::Eq, 1.0)),
        ..row("11 two nodes, one registry", "that blob's upstream GETs", "cluster_herd_upstream_gets")
    },
    Row {
        ratio_targets: TRANSFER,
        ..row("12 export and import, against skopeo", "export {xfer} into a directory, MB/s", "xfer_export_mbs")
    },
    row("12 export and import, against skopeo", "export, then `sync`, MB/s", "xfer_export_synced_mbs"),
    row("12 export and import, against skopeo", "CPU of the export, every process, s", "xfer_export_cpu_s"),
    Row {
        ratio_targets: TRANSFER,
        ..row(
            "12 export and import, against skopeo",
            "import of that export into an empty node, MB/s",
            "xfer_import_mbs",
        )
    },
    row("12 export and import, against skopeo", "import, then `sync`, MB/s", "xfer_import_synced_mbs"),
    row("12 export and import, against skopeo", "CPU of the import, every process, s", "xfer_import_cpu_s"),
    Row {
        ratio_targets: BUILD,
        ..row("13 builds, against `buildah build`", "static binary {build_bin} FROM scratch, s", "build_static_s")
    },
    Row { ratio_targets: BUILD, ..row("13 builds, against `buildah build`", "app of {build_app} FROM scratch, s", "build_app_s") },
    row("13 builds, against `buildah build`", "static binary, built and in a registry (buildah: then `buildah push`), s", "build_push_static_s"),
    row("13 builds, against `buildah build`", "app, built and in a registry (buildah: then `buildah push`), s", "build_push_app_s"),
    row("14 Flatpak index of {flatpak}", "seeding: apps pushed a second (16 at a time)", "flatpak_seed_ips"),
    row("14 Flatpak index of {flatpak}", "seeding: pushes refused 403 \"served read-only\", retried", "flatpak_seed_retried_read_only"),
    row("14 Flatpak index of {flatpak}", "seeding: pushes refused 500 \"database is locked\", retried", "flatpak_seed_retried_locked"),
    row("14 Flatpak index of {flatpak}", "seeding: until the index lists them all, s", "flatpak_seed_listed_s"),
    row("14 Flatpak index of {flatpak}", "static, flatpak's query: answer size, bytes", "flatpak_static_bytes"),
    row("14 Flatpak index of {flatpak}", "static, full answer, 1 conn, p50 ms", "flatpak_static1_p50_ms"),
    row("14 Flatpak index of {flatpak}", "static, full answer, 1 conn, p99 ms", "flatpak_static1_p99_ms"),
    row("14 Flatpak index of {flatpak}", "static, full answer, 16 conns, req/s", "flatpak_static_rps"),
    row("14 Flatpak index of {flatpak}", "static, full answer, 16 conns, p99 ms", "flatpak_static_p99_ms"),
    row("14 Flatpak index of {flatpak}", "static, If-None-Match: 304, 64 conns, req/s", "flatpak_304_rps"),
    row("14 Flatpak index of {flatpak}", "static, If-None-Match: 304, 64 conns, p99 ms", "flatpak_304_p99_ms"),
    row("14 Flatpak index of {flatpak}", "dynamic, one repository: answer size, bytes", "flatpak_dynamic_bytes"),
    row("14 Flatpak index of {flatpak}", "dynamic, one repository, 64 conns, req/s", "flatpak_dynamic_rps"),
    row("14 Flatpak index of {flatpak}", "dynamic, one repository, 64 conns, p99 ms", "flatpak_dynamic_p99_ms"),
    row("14 Flatpak index of {flatpak}", "RSS before those loads, MiB", "flatpak_rss_before_mib"),
    row("14 Flatpak index of {flatpak}", "peak RSS during those loads, MiB", "flatpak_rss_mib"),
    row("14 Flatpak index of {flatpak}", "after a push: first full answer (1 s later), ms", "flatpak_change_first_ms"),
    row("14 Flatpak index of {flatpak}", "after a push: the answer that first shows it (a rebuild), ms", "flatpak_change_rebuild_ms"),
    row("14 Flatpak index of {flatpak}", "after a push: until the index shows it, ms", "flatpak_change_visible_ms"),
];

/// metric → server → round → value
type Results = BTreeMap<String, BTreeMap<String, BTreeMap<u64, f64>>>;

/// Reads `path` and renders the table as markdown.
pub(crate) fn render(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut results = Results::new();
    let mut params = BTreeMap::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?;
        if let (Some(name), Some(value)) = (v["param"].as_str(), v["value"].as_str()) {
            params.insert(name.to_owned(), value.to_owned());
            continue;
        }
        match (v["round"].as_u64(), v["metric"].as_str(), v["server"].as_str(), v["value"].as_f64()) {
            (Some(round), Some(metric), Some(server), Some(value)) => {
                results.entry(metric.into()).or_default().entry(server.into()).or_default().insert(round, value);
            }
            _ => fail!("{}:{}: not a measurement: {line}", path.display(), n + 1),
        }
    }
    for herd in ["herd20", "herd50"] {
        derive_ratio(&mut results, &format!("{herd}_vs_cold"), &format!("{herd}_s"), "cold_pull_s");
    }
    derive_ratio(&mut results, "s3_warm_vs_disk", "s3_warm_pull_s", "warm_pull_s");
    derive_ratio(&mut results, "pg_small_cold_vs_sqlite", "pg_small_cold_ips", "small_cold_ips");
    derive_ratio(&mut results, "pg_small_warm_vs_sqlite", "pg_small_warm_ips", "small_warm_ips");
    derive_ratio(&mut results, "pg_manifest_get_vs_sqlite", "pg_manifest_get_rps", "manifest_get_rps");

    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario | metric | wharf | distribution proxy | nginx (files) | upstream (direct) \
         | wharf ÷ distribution | wharf ÷ nginx | wharf ÷ upstream | wharf target |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for row in ROWS {
        let Some(by_server) = results.get(row.metric) else { continue };
        let (mut scenario, mut label) = (row.scenario.to_owned(), row.label.to_owned());
        for (name, value) in &params {
            let placeholder = format!("{{{name}}}");
            scenario = scenario.replace(&placeholder, value);
            label = label.replace(&placeholder, value);
        }
        let mut cells = vec![scenario, label];
        for server in SERVERS {
            cells.push(by_server.get(server).map(spread).unwrap_or_else(|| "–".into()));
        }
        for peer in PEERS {
            cells.push(ratio_cell(row, by_server, peer));
        }
        cells.push(check_cell(row, by_server));
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    Ok(out)
}

/// `name`: each server's `metric` over its own `base` in the same round.
fn derive_ratio(results: &mut Results, name: &str, metric: &str, base: &str) {
    let mut derived: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
    if let (Some(values), Some(bases)) = (results.get(metric), results.get(base)) {
        for (server, rounds) in values {
            for (round, value) in rounds {
                if let Some(b) = bases.get(server).and_then(|b| b.get(round)).filter(|b| **b > 0.0) {
                    derived.entry(server.clone()).or_default().insert(*round, value / b);
                }
            }
        }
    }
    if !derived.is_empty() {
        results.insert(name.into(), derived);
    }
}

fn ratio_cell(row: &Row, by_server: &BTreeMap<String, BTreeMap<u64, f64>>, peer: &str) -> String {
    let (Some(wharf), Some(other)) = (by_server.get("wharf"), by_server.get(peer)) else {
        return String::new();
    };
    let ratios: Vec<f64> =
        wharf.iter().filter_map(|(round, w)| other.get(round).filter(|p| **p > 0.0).map(|p| w / p)).collect();
    let Some(ratio) = median(&ratios) else { return String::new() };
    match row.ratio_targets.iter().find(|(p, _, _)| *p == peer) {
        Some((_, op, target)) => {
            format!("{} ({} {} {})", number(ratio), op.symbol(), target, verdict(op.holds(ratio, *target)))
        }
        None => number(ratio),
    }
}

fn check_cell(row: &Row, by_server: &BTreeMap<String, BTreeMap<u64, f64>>) -> String {
    let (Some((op, target)), Some(wharf)) = (row.check, by_server.get("wharf")) else {
        return String::new();
    };
    let values: Vec<f64> = wharf.values().copied().collect();
    match op {
        Op::Eq => format!("{} {} {}", op.symbol(), target, verdict(values.iter().all(|v| op.holds(*v, target)))),
        Op::Lt => {
            let worst = values.iter().copied().reduce(f64::max).unwrap_or(f64::NAN);
            format!("{} {} {} (worst round {})", op.symbol(), target, verdict(op.holds(worst, target)), number(worst))
        }
        Op::Le | Op::Ge => {
            let holds = median(&values).is_some_and(|m| op.holds(m, target));
            format!("{} {} {}", op.symbol(), target, verdict(holds))
        }
    }
}

fn verdict(holds: bool) -> &'static str {
    if holds {
        "PASS"
    } else {
        "MISS"
    }
}

/// `median (min–max)`, or just the value when there is one round.
fn spread(rounds: &BTreeMap<u64, f64>) -> String {
    let values: Vec<f64> = rounds.values().copied().collect();
    let (Some(m), Some(lo), Some(hi)) =
        (median(&values), values.iter().copied().reduce(f64::min), values.iter().copied().reduce(f64::max))
    else {
        return "–".into();
    };
    if values.len() == 1 {
        number(m)
    } else {
        format!("{} ({}–{})", number(m), number(lo), number(hi))
    }
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// About three significant figures, without exponents.
fn number(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}
