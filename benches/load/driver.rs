//! The load benchmark's driver: the client side of every scenario that
//! `benches/load/run.sh` runs against wharf, distribution in proxy mode,
//! nginx and the upstream registry, plus the random images they serve and the
//! final table. `run.sh` owns the servers, the rounds and the order; this
//! binary only makes requests, measures them and prints one JSON line per
//! command on stdout. The one exception is `delay-proxy`, a server of its
//! own that `run.sh` starts like the others: a TCP proxy that puts an
//! upstream a round trip away.
//!
//! Layout:
//! - `image`: random OCI images (an OCI layout on disk, or small ones in memory);
//! - `http`: pulls, blob downloads, closed-loop load, pushes over the registry API,
//!   admin API tasks;
//! - `delay`: the delaying TCP proxy;
//! - `report`: the markdown table from the results `run.sh` collected.
//!
//! Plain `cargo bench` runs this with `--bench` and no subcommand; it then
//! prints a note and exits 0, since the benchmark needs the servers that
//! `run.sh` starts.

mod delay;
mod http;
mod image;
mod report;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;
use tokio::task::JoinSet;

pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Result<T> = std::result::Result<T, Error>;

/// Returns early with an error built like `format!`.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => { return Err(format!($($arg)*).into()) };
}

#[derive(Parser)]
#[command(name = "load-driver", about = "Client side of the wharf load benchmark (see benches/load/run.sh)")]
struct Cli {
    /// Trust this CA (PEM) for https URLs; without it only http:// works.
    #[arg(long, global = true)]
    ca_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Prints COUNT free TCP ports on 127.0.0.1, space-separated.
    FreePorts { count: usize },
    /// Waits until URL answers with any HTTP status.
    Wait {
        url: String,
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
    },
    /// Writes a random image as an OCI layout in DIR.
    Layout {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        tag: String,
        /// Layer sizes, e.g. 32MiB,32MiB,32MiB.
        #[arg(long, value_delimiter = ',', value_parser = parse_size, required = true)]
        layers: Vec<u64>,
    },
    /// CLIENTS concurrent pulls of one image, each manifest then blobs in parallel.
    Pull {
        #[arg(long)]
        url: String,
        #[arg(long)]
        repo: String,
        #[arg(long)]
        reference: String,
        #[arg(long, default_value_t = 1)]
        clients: usize,
    },
    /// CLIENTS parallel clients, each downloading one blob REPEAT times.
    Blob {
        #[arg(long)]
        url: String,
        #[arg(long)]
        repo: String,
        #[arg(long)]
        digest: String,
        #[arg(long, default_value_t = 1)]
        clients: usize,
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
    /// Closed-loop load: CONNECTIONS connections sending METHOD PATH for SECONDS.
    Load {
        #[arg(long)]
        url: String,
        #[arg(long)]
        path: String,
        #[arg(long, value_enum, default_value_t = LoadMethod::Get)]
        method: LoadMethod,
        #[arg(long)]
        accept: Option<String>,
        /// A further request header, `Name: value` (repeatable).
        #[arg(long = "header")]
        headers: Vec<String>,
        /// The status every answer must have (default: any 2xx).
        #[arg(long)]
        expect_status: Option<u16>,
        /// The body length every answer must have.
        #[arg(long)]
        expect_bytes: Option<u64>,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Pushes COUNT small random images as PREFIX/img-NNNNN:v1 over the registry API;
    /// prints the digests of each image's blobs, in image order.
    PushSmall {
        #[arg(long)]
        url: String,
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        count: usize,
        /// Layer size, e.g. 16KiB.
        #[arg(long, value_parser = parse_size, default_value = "16KiB")]
        size: u64,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Pushes COUNT Flatpak apps, app N as PREFIXN:latest for N in FIRST ..
    /// FIRST+COUNT, CONCURRENCY at a time, with Basic credentials, each blob
    /// in one request (`POST …/blobs/uploads/?digest=`). Two refusals of
    /// wharf's are tried again and counted (`RETRIED`).
    PushFlatpak {
        #[arg(long)]
        url: String,
        #[arg(long)]
        prefix: String,
        #[arg(long, default_value_t = 0)]
        first: usize,
        #[arg(long)]
        count: usize,
        /// Basic credentials, `user:password` (from the environment, so
        /// that `ps` does not show them).
        #[arg(long, env = "LOAD_BASIC", hide_env_values = true)]
        basic: String,
        /// Layer size, e.g. 4KiB.
        #[arg(long, value_parser = parse_size, default_value = "4KiB")]
        size: u64,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Asks PATH (a registry index query) every 200 ms until its answer
    /// lists at least IMAGES images.
    IndexWait {
        #[arg(long)]
        url: String,
        #[arg(long)]
        path: String,
        #[arg(long)]
        images: usize,
        #[arg(long, default_value_t = 1200)]
        timeout_secs: u64,
    },
    /// What a change costs the registry index, SAMPLES times: pushes app N
    /// (as push-flatpak, from FIRST on), waits SETTLE_MS, then times one
    /// `/index/static?QUERY`, which must show it; pushes app N+1 and asks
    /// `/index/dynamic?repository=PREFIX<N+1>&QUERY` every 2 ms until it shows
    /// it, timing that from the push's answer and the answer that showed it.
    IndexChange {
        #[arg(long)]
        url: String,
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        first: usize,
        #[arg(long, default_value_t = 1)]
        samples: usize,
        /// Basic credentials, `user:password` (from the environment, so
        /// that `ps` does not show them).
        #[arg(long, env = "LOAD_BASIC", hide_env_values = true)]
        basic: String,
        #[arg(long)]
        query: String,
        #[arg(long, default_value_t = 1000)]
        settle_ms: u64,
    },
    /// Pulls PREFIX/img-00000:v1 … PREFIX/img-(COUNT-1):v1, CONCURRENCY at a time.
    PullMany {
        #[arg(long)]
        url: String,
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Relays TCP from LISTEN to TO, every byte delayed by half of RTT_MS each
    /// way and every new connection by RTT_MS; runs until killed.
    DelayProxy {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        rtt_ms: u64,
    },
    /// POSTs BODY (JSON) to URL, an admin API path that starts a task (an
    /// export, an import), then asks for the task every POLL_MS until it
    /// has ended; fails unless it completed. Prints the time from the POST
    /// to the answer that said so, and the task.
    Task {
        #[arg(long)]
        url: String,
        #[arg(long)]
        body: String,
        #[arg(long, default_value_t = 10)]
        poll_ms: u64,
    },
    /// Prints the markdown table of a results file.
    Report {
        #[arg(long)]
        results: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LoadMethod {
    Get,
    Head,
}

fn main() -> ExitCode {
    let first = std::env::args_os().nth(1);
    if first.is_none() || first.as_deref() == Some("--bench".as_ref()) {
        println!("load: needs servers; run benches/load/run.sh (see docs/BENCHMARKS.md)");
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::from)
        .and_then(|runtime| runtime.block_on(run(cli.command, cli.ca_file)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load driver: {}", with_sources(&*e));
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, ca_file: Option<PathBuf>) -> Result<()> {
    let trust = http::Trust::load(ca_file.as_deref())?;
    match command {
        Command::FreePorts { count } => {
            // Hold every listener until all are bound so the ports differ.
            let listeners =
                (0..count).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
            let ports = listeners
                .iter()
                .map(|l| l.local_addr().map(|a| a.port().to_string()))
                .collect::<std::io::Result<Vec<_>>>()?;
            println!("{}", ports.join(" "));
        }
        Command::Wait { url, timeout_secs } => {
            let status = http::wait_for(&url, Duration::from_secs(timeout_secs), &trust).await?;
            println!("{}", json!({ "op": "wait", "status": status.as_u16() }));
        }
        Command::Layout { dir, tag, layers } => {
            let layout = image::write_layout(&dir, &tag, &layers)?;
            let descriptor = |d: &image::Descriptor| json!({ "digest": d.digest, "size": d.size });
            println!(
                "{}",
                json!({
                    "op": "layout",
                    "manifest": descriptor(&layout.manifest),
                    "manifest_path": dir.join("blobs/sha256").join(image::hex_of(&layout.manifest.digest)),
                    "blobs": std::iter::once(&layout.config).chain(&layout.layers).map(descriptor).collect::<Vec<_>>(),
                    "layers": layout.layers.iter().map(descriptor).collect::<Vec<_>>(),
                })
            );
        }
        Command::Pull { url, repo, reference, clients } => pull(&url, &repo, &reference, clients, &trust).await?,
        Command::Blob { url, repo, digest, clients, repeat } => {
            blob(&url, &repo, &digest, clients, repeat, &trust).await?
        }
        Command::Load { url, path, method, accept, headers, expect_status, expect_bytes, connections, seconds } => {
            let addr = socket_addr(&url)?;
            let method = match method {
                LoadMethod::Get => hyper::Method::GET,
                LoadMethod::Head => hyper::Method::HEAD,
            };
            let headers = headers.iter().map(|h| parse_header(h)).collect::<Result<Vec<_>>>()?;
            let expect_status = expect_status
                .map(hyper::StatusCode::from_u16)
                .transpose()
                .map_err(|e| format!("--expect-status: {e}"))?;
            let spec = http::LoadSpec {
                addr,
                method,
                path,
                accept,
                headers,
                expect_status,
                expect_bytes,
                connections,
                duration: Duration::from_secs_f64(seconds),
            };
            let stats = http::load(spec).await?;
            let percentile = |p: usize| {
                let l = &stats.latencies_us;
                l.get((l.len() * p / 100).min(l.len().saturating_sub(1))).map_or(0.0, |us| f64::from(*us) / 1000.0)
            };
            let secs = stats.elapsed.as_secs_f64();
            println!(
                "{}",
                json!({
                    "op": "load",
                    "requests": stats.requests,
                    "unexpected": stats.unexpected,
                    "bytes_per_answer": stats.body_bytes as f64 / (stats.requests.max(1)) as f64,
                    "seconds": secs,
                    "rps": stats.requests as f64 / secs,
                    "p50_ms": percentile(50),
                    "p99_ms": percentile(99),
                })
            );
            if stats.unexpected > 0 {
                let want = match (expect_status, expect_bytes) {
                    (Some(s), Some(b)) => format!("{s} with {b} bytes"),
                    (Some(s), None) => s.to_string(),
                    (None, Some(b)) => format!("2xx with {b} bytes"),
                    (None, None) => "2xx".to_owned(),
                };
                fail!("{} of {} answers were not {want}", stats.unexpected, stats.requests);
            }
        }
        Command::PushSmall { url, prefix, count, size, concurrency } => {
            let started = Instant::now();
            let pool = http::pool(concurrency, &trust);
            let pushed = Arc::new(Mutex::new(Vec::new()));
            let digests = Arc::clone(&pushed);
            let images = for_each_image(count, concurrency, move |i| {
                let (pool, url, repo, digests) =
                    (pool.clone(), url.clone(), small_repo(&prefix, i), Arc::clone(&digests));
                async move {
                    let image = image::small_image(size, &mut StdRng::from_entropy())?;
                    http::push_image(&pool, &url, &repo, "v1", &image, &http::PushOptions::default()).await?;
                    let blobs: Vec<String> = image.blobs.iter().map(|b| b.descriptor.digest.clone()).collect();
                    // Held for one push, never across an await.
                    digests.lock().map_err(|_| "a pusher panicked")?.push((i, blobs));
                    Ok(())
                }
            })
            .await?;
            let mut blobs = std::mem::take(&mut *pushed.lock().map_err(|_| "a pusher panicked")?);
            // In image order, so that the first N lines name the first N images' blobs.
            blobs.sort_unstable_by_key(|(i, _)| *i);
            println!(
                "{}",
                json!({
                    "op": "push-small",
                    "images": images,
                    "wall_s": started.elapsed().as_secs_f64(),
                    "image_blobs": blobs.into_iter().map(|(_, b)| b).collect::<Vec<_>>(),
                })
            );
        }
        Command::PushFlatpak { url, prefix, first, count, basic, size, concurrency } => {
            let started = Instant::now();
            let pool = http::pool(concurrency, &trust);
            let options = Arc::new(flatpak_push_options(&basic)?);
            // Per refusal retried: [read-only name, locked database].
            let retries = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
            let retried = Arc::clone(&retries);
            let images = for_each_image(count, concurrency, move |i| {
                let (pool, url, prefix, options, retried) =
                    (pool.clone(), url.clone(), prefix.clone(), Arc::clone(&options), Arc::clone(&retried));
                async move {
                    let n = first + i;
                    let mut tries = 0;
                    loop {
                        let outcome = push_flatpak(&pool, &url, &prefix, n, size, &options).await;
                        let refusal = match &outcome {
                            Err(e) if tries < 20 => RETRIED.iter().position(|r| e.to_string().contains(r)),
                            _ => None,
                        };
                        let Some(kind) = refusal else { return outcome };
                        tries += 1;
                        retried[kind].fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
            .await?;
            let wall = started.elapsed().as_secs_f64();
            println!(
                "{}",
                json!({
                    "op": "push-flatpak",
                    "images": images,
                    "retried_read_only": retries[0].load(Ordering::Relaxed),
                    "retried_locked": retries[1].load(Ordering::Relaxed),
                    "wall_s": wall,
                    "images_per_s": images as f64 / wall,
                })
            );
        }
        Command::IndexWait { url, path, images, timeout_secs } => {
            let started = Instant::now();
            let pool = http::pool(1, &trust);
            let index_url = format!("{url}{path}");
            loop {
                let (body, _) = http::get_body(&pool, &index_url).await?;
                let listed = index_images(&body).map_err(|e| format!("GET {index_url}: {e}"))?;
                if listed >= images {
                    println!(
                        "{}",
                        json!({ "op": "index-wait", "images": listed, "bytes": body.len(), "wall_s": started.elapsed().as_secs_f64() })
                    );
                    break;
                }
                if started.elapsed() > Duration::from_secs(timeout_secs) {
                    fail!("GET {index_url} listed {listed} images after {timeout_secs} s, not {images}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Command::IndexChange { url, prefix, first, samples, basic, query, settle_ms } => {
            index_change(&url, &prefix, first, samples, &basic, &query, settle_ms, &trust).await?
        }
        Command::PullMany { url, prefix, count, concurrency } => {
            let started = Instant::now();
            let pool = http::pool(concurrency * 4, &trust);
            let images = for_each_image(count, concurrency, move |i| {
                let (pool, url, repo) = (pool.clone(), url.clone(), small_repo(&prefix, i));
                async move { http::pull_image(&pool, &url, &repo, "v1").await.map(|_| ()) }
            })
            .await?;
            let wall = started.elapsed().as_secs_f64();
            println!(
                "{}",
                json!({ "op": "pull-many", "images": images, "wall_s": wall, "images_per_s": images as f64 / wall })
            );
        }
        Command::DelayProxy { listen, to, rtt_ms } => {
            let rtt = Duration::from_millis(rtt_ms);
            let listener = tokio::net::TcpListener::bind(listen).await?;
            let listening = listener.local_addr()?;
            println!("{}", json!({ "op": "delay-proxy", "listen": listening, "to": to, "rtt_ms": rtt_ms }));
            delay::serve(listener, to, rtt).await?;
        }
        Command::Task { url, body, poll_ms } => {
            let pool = http::pool(1, &trust);
            let (task, wall) = http::run_task(&pool, &url, &body, Duration::from_millis(poll_ms)).await?;
            if task["state"] != "completed" {
                fail!("the task of POST {url} ended {}: {}", task["state"], task["error"]);
            }
            println!("{}", json!({ "op": "task", "wall_s": wall.as_secs_f64(), "task": task }));
        }
        Command::Report { results } => print!("{}", report::render(&results)?),
    }
    Ok(())
}

/// `clients` whole pulls of one image started at once (the herd when > 1).
async fn pull(url: &str, repo: &str, reference: &str, clients: usize, trust: &http::Trust) -> Result<()> {
    // Every pull fetches its blobs in parallel: room for a few each.
    let pool = http::pool(clients * 8, trust);
    let started = Instant::now();
    let mut pulls = JoinSet::new();
    for _ in 0..clients {
        let (pool, url, repo, reference) = (pool.clone(), url.to_owned(), repo.to_owned(), reference.to_owned());
        pulls.spawn(async move {
            let t = Instant::now();
            let pulled = http::pull_image(&pool, &url, &repo, &reference).await?;
            Ok::<_, Error>((t.elapsed().as_secs_f64(), pulled))
        });
    }
    let (mut times, mut bytes, mut blobs, mut first_error) = (Vec::new(), 0u64, 0usize, None);
    while let Some(done) = pulls.join_next().await {
        match done? {
            Ok((secs, pulled)) => {
                times.push(secs);
                bytes += pulled.bytes;
                blobs = pulled.blobs;
            }
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    let wall = started.elapsed().as_secs_f64();
    if let Some(e) = first_error {
        fail!("{} of {clients} pulls of {repo}:{reference} failed; the first: {e}", clients - times.len());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "op": "pull",
            "clients": clients,
            "wall_s": wall,
            "bytes": bytes,
            "blobs": blobs,
            "pull_s_min": times.first(),
            "pull_s_median": times.get(times.len() / 2),
            "pull_s_max": times.last(),
        })
    );
    Ok(())
}

/// `clients` parallel clients, each downloading one blob `repeat` times in a row.
async fn blob(url: &str, repo: &str, digest: &str, clients: usize, repeat: usize, trust: &http::Trust) -> Result<()> {
    let pool = http::pool(clients, trust);
    let blob_url = format!("{url}/v2/{repo}/blobs/{digest}");
    let started = Instant::now();
    let mut downloads = JoinSet::new();
    for _ in 0..clients {
        let (pool, blob_url) = (pool.clone(), blob_url.clone());
        downloads.spawn(async move {
            let mut bytes = 0;
            for _ in 0..repeat {
                bytes += http::fetch_blob(&pool, &blob_url, None).await?;
            }
            Ok::<_, Error>(bytes)
        });
    }
    let mut bytes = 0;
    while let Some(done) = downloads.join_next().await {
        bytes += done??;
    }
    let wall = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({ "op": "blob", "clients": clients, "bytes": bytes, "wall_s": wall, "mb_s": bytes as f64 / 1e6 / wall })
    );
    Ok(())
}

/// Runs `work(i)` for i in 0..count with `concurrency` workers; stops at the
/// first failure. Returns how many images were done.
async fn for_each_image<F, Fut>(count: usize, concurrency: usize, work: F) -> Result<usize>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let work = Arc::new(work);
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (next, work) = (Arc::clone(&next), Arc::clone(&work));
        workers.spawn(async move {
            let mut done = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, Error>(done);
                }
                work(i).await.map_err(|e| format!("image {i}: {e}"))?;
                done += 1;
            }
        });
    }
    let mut done = 0;
    while let Some(worker) = workers.join_next().await {
        match worker? {
            Ok(n) => done += n,
            Err(e) => {
                // Stop handing out work; the other workers finish their image.
                next.store(count, Ordering::Relaxed);
                return Err(e);
            }
        }
    }
    Ok(done)
}

/// An error and its causes, `outer: inner: innermost`: hyper's errors say
/// only "client error (Connect)" and keep the reason (a refused connection,
/// an unknown certificate issuer) in their sources.
pub(crate) fn with_sources(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// wharf's refusals of a push that `push-flatpak` tries again (up to 20
/// times, 50 ms apart) and counts. wharf makes a push repository, and its
/// distribution, on a name's first push; with many made at once it has
/// refused one as if another repository served the name (403), and said
/// its metadata database was locked (500).
const RETRIED: [&str; 2] = ["repository is served read-only by a distribution", "metadata database: database is locked"];

/// Pushes Flatpak app `n` (`image::flatpak_image`) as `<prefix><n>:latest`.
async fn push_flatpak(
    pool: &http::Pool,
    url: &str,
    prefix: &str,
    n: usize,
    size: u64,
    options: &http::PushOptions,
) -> Result<()> {
    let image = image::flatpak_image(n, size, &mut StdRng::from_entropy())?;
    http::push_image(pool, url, &format!("{prefix}{n}"), "latest", &image, options).await
}

/// Monolithic uploads with Basic credentials `user:password`.
fn flatpak_push_options(basic: &str) -> Result<http::PushOptions> {
    use base64::Engine as _;
    if !basic.contains(':') {
        fail!("--basic wants user:password");
    }
    let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(basic));
    Ok(http::PushOptions { authorization: Some(hyper::header::HeaderValue::from_str(&value)?), monolithic: true })
}

/// How many images a registry index answer lists, in lists or not.
fn index_images(body: &[u8]) -> Result<usize> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("not an index answer: {e}"))?;
    let Some(results) = v["Results"].as_array() else { fail!("not an index answer: no Results") };
    Ok(results
        .iter()
        .map(|r| {
            let images = r["Images"].as_array().map_or(0, Vec::len);
            let in_lists: usize = r["Lists"]
                .as_array()
                .map_or(0, |ls| ls.iter().map(|l| l["Images"].as_array().map_or(0, Vec::len)).sum());
            images + in_lists
        })
        .sum())
}

/// Whether an index answer names app `n`'s ref (quoted, so App1 is not App10).
fn shows_app(body: &[u8], n: usize) -> bool {
    let needle = format!("\"{}\"", image::flatpak_ref(n));
    body.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// `index-change`: see the command's help. Prints every sample and their
/// medians, in milliseconds.
#[allow(clippy::too_many_arguments)]
async fn index_change(
    url: &str,
    prefix: &str,
    first: usize,
    samples: usize,
    basic: &str,
    query: &str,
    settle_ms: u64,
    trust: &http::Trust,
) -> Result<()> {
    let pool = http::pool(4, trust);
    let options = flatpak_push_options(basic)?;
    let (mut first_ms, mut rebuild_ms, mut visible_ms, mut polls) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for k in 0..samples {
        // The first client after a change, once the change has settled.
        let n = first + 2 * k;
        push_flatpak(&pool, url, prefix, n, 4096, &options).await?;
        tokio::time::sleep(Duration::from_millis(settle_ms)).await;
        let static_url = format!("{url}/index/static?{query}");
        let (body, took) = http::get_body(&pool, &static_url).await?;
        if !shows_app(&body, n) {
            fail!("{settle_ms} ms after the push of {prefix}{n}, GET {static_url} did not show it");
        }
        first_ms.push(ms(took));

        // How soon the index shows a push, asked as often as a client could.
        let n = n + 1;
        push_flatpak(&pool, url, prefix, n, 4096, &options).await?;
        let pushed = Instant::now();
        let dynamic_url = format!("{url}/index/dynamic?repository={prefix}{n}&{query}");
        let mut asked = 0;
        loop {
            let (body, took) = http::get_body(&pool, &dynamic_url).await?;
            asked += 1;
            if shows_app(&body, n) {
                // The first answer with its labels came from a build made
                // for it, on this request.
                rebuild_ms.push(ms(took));
                visible_ms.push(ms(pushed.elapsed()));
                break;
            }
            if pushed.elapsed() > Duration::from_secs(600) {
                fail!("GET {dynamic_url} did not show {prefix}{n} within 600 s of its push");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        polls.push(asked);
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    println!(
        "{}",
        json!({
            "op": "index-change",
            "first_ms": first_ms,
            "rebuild_ms": rebuild_ms,
            "visible_ms": visible_ms,
            "polls": polls,
            "first_ms_median": median(&first_ms),
            "rebuild_ms_median": median(&rebuild_ms),
            "visible_ms_median": median(&visible_ms),
        })
    );
    Ok(())
}

/// `If-None-Match: "abc"` → the header's name and value.
fn parse_header(h: &str) -> Result<(hyper::header::HeaderName, hyper::header::HeaderValue)> {
    let Some((name, value)) = h.split_once(':') else { fail!("--header {h:?}: expected Name: value") };
    Ok((name.trim().parse().map_err(|e| format!("--header {h:?}: {e}"))?, value.trim().parse()?))
}

fn small_repo(prefix: &str, i: usize) -> String {
    format!("{prefix}/img-{i:05}")
}

/// `http://127.0.0.1:5000` → the socket address.
fn socket_addr(url: &str) -> Result<SocketAddr> {
    let Some(rest) = url.strip_prefix("http://") else { fail!("{url}: only http:// URLs are supported") };
    let authority = rest.split('/').next().unwrap_or(rest);
    Ok(authority.parse().map_err(|e| format!("{url}: the host must be an IP address and port: {e}"))?)
}

/// `16KiB`, `32MiB`, `1GiB` or plain bytes.
fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().map_err(|_| format!("{s:?}: expected a size such as 32MiB"))?;
    let scale = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(format!("{s:?}: the unit must be B, KiB, MiB or GiB")),
    };
    Ok(n * scale)
}
