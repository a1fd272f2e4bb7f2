//! Starts the real `wharf` binary with a config written to a temp dir and
//! reads the addresses it bound from its log.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// A running wharf; killed when dropped.
pub struct Wharf {
    child: Child,
    pub registry: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    /// Every line wharf wrote to stderr so far.
    log: Arc<Mutex<Vec<String>>>,
}

/// One `[[upstream]]` entry.
pub struct UpstreamEntry {
    pub name: String,
    pub url: String,
    pub default: bool,
    /// Extra raw TOML lines for this entry (credentials, tag_ttl, timeouts...).
    pub extra: String,
}

impl UpstreamEntry {
    pub fn new(name: &str, url: &str) -> UpstreamEntry {
        UpstreamEntry { name: name.into(), url: url.into(), default: false, extra: String::new() }
    }
    pub fn default(mut self) -> Self {
        self.default = true;
        self
    }
    pub fn extra(mut self, toml_lines: &str) -> Self {
        self.extra.push_str(toml_lines);
        self.extra.push('\n');
        self
    }
}

/// Writes `wharf.toml` into `dir`, creating it (storage under `dir/storage`).
///
/// With `WHARF_TEST_POSTGRES` (a libpq key=value string for a throwaway
/// server) every wharf keeps its metadata there, in a schema of its own
/// named after `dir` (so a restart on `dir` finds it again).
///
/// With `WHARF_TEST_BACKEND=s3` every wharf keeps its objects in the bucket
/// `WHARF_TEST_S3_BUCKET` at `WHARF_TEST_S3_ENDPOINT` (credentials in
/// `WHARF_TEST_S3_ACCESS_KEY`, `WHARF_TEST_S3_SECRET_KEY`), under a prefix
/// of its own, with a 1 GiB hot tier: the suites that exercise storage run
/// again on S3 against one server started beside them.
pub fn write_config(dir: &Path, upstreams: &[UpstreamEntry]) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create wharf dir");
    // No entries: a node that reaches no registry, not the embedded
    // Docker Hub default.
    let none = if upstreams.is_empty() { "upstream = []\n" } else { "" };
    let mut toml = format!(
        "{none}[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n[storage]\npath = {:?}\n{}\n[log]\nlevel = \"debug\"\n{}",
        dir.join("storage"),
        s3_backend_lines(dir),
        postgres_metadata_lines(dir)
    );
    for u in upstreams {
        toml.push_str(&format!(
            "\n[[upstream]]\nname = {:?}\nurl = {:?}\ndefault = {}\n{}",
            u.name, u.url, u.default, u.extra
        ));
    }
    let path = dir.join("wharf.toml");
    std::fs::write(&path, toml).expect("write wharf.toml");
    path
}

impl Wharf {
    /// Starts `wharf serve --config <dir>/wharf.toml` for the given upstreams.
    pub fn start(dir: &Path, upstreams: &[UpstreamEntry]) -> Wharf {
        let config = write_config(dir, upstreams);
        Wharf::start_with_config(&config)
    }

    /// Starts wharf on an existing config file (e.g. to restart on the same storage).
    pub fn start_with_config(config: &Path) -> Wharf {
        Wharf::start_with_env(config, &[])
    }

    /// Starts wharf on `config` with extra environment variables (such as
    /// systemd's `NOTIFY_SOCKET`).
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Wharf {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wharf"));
        command.envs(env.iter().copied());
        Wharf::spawn(command, config)
    }

    /// Starts wharf on `config` with at most `files` open file descriptors
    /// (util-linux `prlimit` sets the limit, then runs wharf in its place,
    /// so the process and its id are wharf's).
    pub fn start_with_fd_limit(config: &Path, files: u32) -> Wharf {
        let mut command = Command::new("prlimit");
        command.arg(format!("--nofile={files}")).arg("--").arg(env!("CARGO_BIN_EXE_wharf"));
        Wharf::spawn(command, config)
    }

    /// Runs `command` (wharf, or what runs it) with `serve --config <config>`.
    fn spawn(mut command: Command, config: &Path) -> Wharf {
        let mut child = command
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wharf");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[wharf] {line}");
                kept.lock().expect("log lock").push(line.clone());
                if tx.send(line).is_err() {
                    // Receiver gone; keep draining so wharf never blocks on a full pipe.
                }
            }
        });
        let (registry, admin) = loop {
            let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
                panic!("wharf did not report its listening addresses (exit: {:?})", child.try_wait())
            });
            if line.contains("wharf listening") {
                break (field(&line, "registry="), field(&line, "admin="));
            }
        };
        Wharf { child, registry, admin, config_path: config.to_path_buf(), log }
    }

    /// The lines wharf has logged so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.registry)
    }

    /// `127.0.0.1:PORT`, as skopeo and podman want it.
    pub fn host(&self) -> String {
        self.registry.to_string()
    }

    /// SIGTERM, as systemd stops a service, then waits for the exit: a clean
    /// shutdown.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("sh").args(["-c", &format!("kill -TERM {pid}")]).status().expect("run kill");
        assert!(sent.success(), "SIGTERM to wharf {pid}");
        let status = self.child.wait().expect("wait for wharf");
        assert!(status.success(), "wharf exited with {status} after SIGTERM");
    }

    /// Sends a signal (`TERM`, `HUP`, ...) without waiting for its effect.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-s", name, &pid]).status().expect("run kill");
        assert!(sent.success(), "SIG{name} to wharf {pid}");
    }

    /// Waits for wharf to exit (after a signal) and returns how it exited.
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait for wharf")
    }

    /// The wharf process's id (to read its `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:PORT` of the admin port.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Wharf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `key` (as `name=`) from a text log line, or `"name":"..."` from a JSON one.
fn field(line: &str, key: &str) -> SocketAddr {
    let json_key = format!("\"{}\":\"", key.trim_end_matches('='));
    let (start, end_at): (usize, fn(char) -> bool) = match line.find(key) {
        Some(i) => (i + key.len(), char::is_whitespace),
        None => match line.find(&json_key) {
            Some(i) => (i + json_key.len(), |c| c == '"'),
            None => panic!("no {key} in {line:?}"),
        },
    };
    let value: String = line[start..].chars().take_while(|c| !end_at(*c)).collect();
    value.parse().unwrap_or_else(|e| panic!("bad address {value:?} in {line:?}: {e}"))
}

/// The `[storage]` lines of `WHARF_TEST_BACKEND=s3` (see [`write_config`]);
/// empty otherwise.
fn s3_backend_lines(dir: &Path) -> String {
    if std::env::var("WHARF_TEST_BACKEND").as_deref() != Ok("s3") {
        return String::new();
    }
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("WHARF_TEST_BACKEND=s3 needs {name}"));
    // A prefix per wharf directory: tests share the bucket, never keys.
    let prefix = crate::images::sha256_digest(dir.to_string_lossy().as_bytes());
    format!(
        "backend = \"s3\"\n\n[storage.s3]\nbucket = {:?}\nendpoint = {:?}\nallow_http = true\nprefix = {:?}\n\
         access_key_id = {:?}\nsecret_access_key = {:?}\nrequest_timeout = \"10s\"\n\n[storage.cache]\nmax_size = \"1GiB\"\n",
        var("WHARF_TEST_S3_BUCKET"),
        var("WHARF_TEST_S3_ENDPOINT"),
        &prefix["sha256:".len().."sha256:".len() + 16],
        var("WHARF_TEST_S3_ACCESS_KEY"),
        var("WHARF_TEST_S3_SECRET_KEY"),
    )
}

/// Writes `wharf.toml` into `dir` as [`write_config`] does, but with the
/// metadata in the PostgreSQL database `url` (whatever the suite's
/// default) and `extra` TOML appended (a `[cluster]` section, say): a node
/// of a cluster sharing that database.
pub fn write_config_on(dir: &Path, upstreams: &[UpstreamEntry], url: &str, extra: &str) -> PathBuf {
    let path = write_config(dir, upstreams);
    let text = std::fs::read_to_string(&path).expect("read config");
    let text = without_metadata(&text);
    std::fs::write(&path, format!("{text}\n[metadata]\nurl = {url:?}\n\n{extra}\n")).expect("write config");
    path
}

/// `config` without its `[metadata]` section, if it has one.
pub fn without_metadata(config: &str) -> String {
    match config.find("\n[metadata]\n") {
        Some(start) => {
            let end = config[start + 1..].find("\n\n").map_or(config.len(), |n| start + 1 + n);
            format!("{}{}", &config[..start], &config[end..])
        }
        None => config.to_owned(),
    }
}

/// The `[metadata]` lines of `WHARF_TEST_POSTGRES` (see [`write_config`]);
/// empty otherwise. Creates the wharf directory's schema with `psql`.
fn postgres_metadata_lines(dir: &Path) -> String {
    let Some(base) = std::env::var("WHARF_TEST_POSTGRES").ok().filter(|u| !u.is_empty()) else {
        return String::new();
    };
    let schema = postgres_schema(dir);
    let status = Command::new("psql")
        .args(["-q", "-v", "ON_ERROR_STOP=1", &base, "-c", &format!("CREATE SCHEMA IF NOT EXISTS {schema}")])
        .stdout(Stdio::null())
        .status()
        .expect("run psql");
    assert!(status.success(), "psql could not create schema {schema}");
    format!("\n[metadata]\nurl = {:?}\n", format!("{base} options='-c search_path={schema}'"))
}

/// Runs one SQL statement on the metadata of the wharf whose directory is
/// `dir` (stopped, or not writing what the statement touches), on whichever
/// engine it uses: its SQLite file, or its schema under
/// `WHARF_TEST_POSTGRES`. The first column of each row, as text. The SQL
/// must be valid on both (a test's way to leave state a previous run
/// would have left).
pub fn metadata_query(dir: &Path, sql: &str) -> Vec<String> {
    match std::env::var("WHARF_TEST_POSTGRES").ok().filter(|u| !u.is_empty()) {
        None => {
            let db = rusqlite::Connection::open(dir.join("storage").join("wharf.db")).expect("open wharf.db");
            let mut stmt = db.prepare(sql).expect("prepare");
            let rows = stmt
                .query_map([], |r| {
                    Ok(match r.get_ref(0)? {
                        rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                        rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                        rusqlite::types::ValueRef::Null => String::new(),
                        other => format!("{other:?}"),
                    })
                })
                .expect("query");
            rows.map(|r| r.expect("row")).collect()
        }
        Some(base) => {
            let schema = postgres_schema(dir);
            let url = format!("{base} options='-c search_path={schema}'");
            let out = Command::new("psql")
                .args(["-q", "-At", "-v", "ON_ERROR_STOP=1", &url, "-c", sql])
                .output()
                .expect("run psql");
            assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
        }
    }
}

/// The PostgreSQL schema of the wharf whose directory is `dir`.
fn postgres_schema(dir: &Path) -> String {
    let hash = crate::images::sha256_digest(dir.to_string_lossy().as_bytes());
    format!("w{}", &hash["sha256:".len().."sha256:".len() + 16])
}
