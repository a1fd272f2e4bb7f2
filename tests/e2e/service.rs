//! wharf as a systemd service: the unit checked by the real
//! `systemd-analyze`, readiness on a `NOTIFY_SOCKET` the test binds,
//! SIGTERM's drain, SIGHUP's reload, and the registry port over TLS with
//! a CA made by `openssl`, pulled from by skopeo and curl.

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixDatagram};
use tokio::task::JoinHandle;

use crate::auth::hash_password;
use crate::clients::{require_program, Clients};
use crate::fake_upstream::{FakeUpstream, Gate, Script};
use crate::faults::REPO;
use crate::images::{self, assert_layout_holds_image, random_bytes, Image};
use crate::registry::Registry;
use crate::streaming::{self, within_guard};
use crate::wharf::{write_config, UpstreamEntry, Wharf};

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/wharf.service");
const SYSUSERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/wharf.sysusers");
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

// ---------------------------------------------------------------------------
// The unit file.

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    require_program("systemd-analyze", "systemd");
    Command::new("systemd-analyze").args(args).output().expect("run systemd-analyze")
}

/// The unit as shipped, with `ExecStart` pointing at the binary under test
/// (verify insists that the executable exists).
fn unit_with_built_binary(dir: &Path) -> PathBuf {
    let unit = std::fs::read_to_string(UNIT).expect("read systemd/wharf.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/wharf "), "the install steps copy the binary to /usr/local/bin");
    let path = dir.join("wharf.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/wharf", env!("CARGO_BIN_EXE_wharf"))).expect("write unit");
    path
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_with_built_binary(dir.path());
    let out = systemd_analyze(&["verify", unit.to_str().expect("utf-8 path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed: {stderr}");
    assert!(!stderr.contains("wharf.service"), "systemd-analyze verify complained about the unit: {stderr}");
}

#[test]
fn the_unit_exposure_level_is_at_most_2() {
    let out = systemd_analyze(&["security", "--offline=yes", UNIT]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // "→ Overall exposure level for wharf.service: 1.1 OK 🙂"
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in: {stdout}{}", String::from_utf8_lossy(&out.stderr)));
    let level: f64 = line
        .rsplit_once(": ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the level in {line:?}"));
    assert!(level <= 2.0, "exposure level {level} is above 2.0:\n{stdout}");
}

#[test]
fn the_sysusers_file_creates_the_units_user() {
    require_program("systemd-sysusers", "systemd");
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(root.path().join("etc")).expect("etc");
    let out = Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.path().display()))
        .arg("--dry-run")
        .arg(SYSUSERS)
        .output()
        .expect("run systemd-sysusers");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "systemd-sysusers: {said}");
    assert!(said.contains("Creating user 'wharf'"), "{said}");
    let unit = std::fs::read_to_string(UNIT).expect("read unit");
    assert!(unit.contains("\nUser=wharf\n") && unit.contains("\nType=notify\n"), "the unit runs as the sysusers user, Type=notify");
}

/// `45s` or `"30s"` as whole seconds.
fn seconds(value: &str) -> u64 {
    let v = value.trim().trim_matches('"');
    v.strip_suffix('s').and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("not whole seconds: {value:?}"))
}

#[test]
fn systemd_waits_longer_than_the_default_drain_grace_and_task_grace() {
    let unit = std::fs::read_to_string(UNIT).expect("read unit");
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/wharf.toml")).expect("conf");
    let value = |text: &str, key: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} line"))
            .to_owned()
    };
    let stop = seconds(&value(&unit, "TimeoutStopSec="));
    let grace = seconds(&value(&example, "drain_grace = "));
    // After the drain, background tasks get 10 s to stop (app.rs).
    assert!(stop > grace + 10, "TimeoutStopSec={stop}s must exceed drain_grace {grace}s + 10s, or systemd kills a clean drain");
}

// ---------------------------------------------------------------------------
// Notifications.

/// The socket systemd would hold: wharf's notifications arrive here.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket { socket, path }
    }

    fn env(&self) -> String {
        self.path.to_str().expect("utf-8 path").to_owned()
    }

    async fn next(&self) -> String {
        let mut buf = vec![0u8; 4096];
        let n = within_guard("a notification", self.socket.recv(&mut buf)).await.expect("recv");
        String::from_utf8(buf[..n].to_vec()).expect("utf-8 notification")
    }

    /// The next notification, which must start with `first_line`.
    async fn expect(&self, first_line: &str) -> String {
        let message = self.next().await;
        assert_eq!(message.lines().next(), Some(first_line), "notification: {message:?}");
        message
    }

    /// A SIGHUP's RELOADING=1 then READY=1; returns the READY message
    /// (whose STATUS says whether the reload worked).
    async fn reload(&self, wharf: &Wharf) -> String {
        wharf.signal("HUP");
        let reloading = self.expect("RELOADING=1").await;
        assert!(reloading.contains("\nMONOTONIC_USEC="), "{reloading:?}");
        self.expect("READY=1").await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wharf_tells_the_notify_socket_it_is_ready_and_stopping() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let notify = NotifySocket::bind(tmp.path());
    let config = write_config(&tmp.path().join("wharf"), &[UpstreamEntry::new("up", "http://127.0.0.1:9").default()]);
    let wharf = Wharf::start_with_env(&config, &[("NOTIFY_SOCKET", &notify.env())]);
    let ready = notify.expect("READY=1").await;
    assert!(ready.contains("STATUS="), "{ready:?}");
    // Ready means both ports answer.
    assert_eq!(crate::http::get(&format!("{}/v2/", wharf.url())).await.status, 200);
    assert_eq!(crate::http::get(&format!("{}/healthz", wharf.admin_url())).await.status, 200);

    wharf.signal("TERM");
    notify.expect("STOPPING=1").await;
    let status = wharf.wait();
    assert!(status.success(), "{status}");
}

// ---------------------------------------------------------------------------
// SIGTERM: the drain.

/// A fake upstream (for stalls) behind a wharf that reports to a notify socket.
struct Stalling {
    fake: FakeUpstream,
    notify: NotifySocket,
    config: PathBuf,
    wharf: Wharf,
    dir: tempfile::TempDir,
}

impl Stalling {
    async fn start(server_toml: &str) -> Stalling {
        let fake = FakeUpstream::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let notify = NotifySocket::bind(dir.path());
        let config = write_config(&dir.path().join("wharf"), &[UpstreamEntry::new("fake", &fake.url()).default()]);
        let toml = std::fs::read_to_string(&config).expect("read config");
        std::fs::write(&config, toml.replacen("[server]\n", &format!("[server]\n{server_toml}"), 1)).expect("write");
        let wharf = Wharf::start_with_env(&config, &[("NOTIFY_SOCKET", &notify.env())]);
        notify.expect("READY=1").await;
        Stalling { fake, notify, config, wharf, dir }
    }

    fn blob_url(&self, digest: &str) -> String {
        format!("{}/v2/{REPO}/blobs/{digest}", self.wharf.url())
    }
}

/// Returns once connecting to `addr` is refused: the listener is closed.
async fn until_refused(addr: std::net::SocketAddr) {
    within_guard("the listener to close", async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_but_a_download_in_flight_completes() {
    let s = Stalling::start("").await;
    let bytes = Bytes::from(random_bytes(512 * 1024));
    let digest = s.fake.put_blob(bytes.clone());
    let gate = Gate::new();
    s.fake.script(&digest, Script::normal().stalling_at(128 * 1024, &gate));

    let mut client = within_guard("headers", streaming::open(&s.blob_url(&digest))).await;
    assert_eq!(client.status, 200);
    within_guard("first bytes", client.read_at_least(1)).await;

    s.wharf.signal("TERM");
    s.notify.expect("STOPPING=1").await;
    until_refused(s.wharf.registry).await;
    // Only now does the upstream go on: the download finishes during the drain.
    gate.open();
    let done = within_guard("the download after SIGTERM", client.finish()).await;
    assert!(done.complete, "the in-flight download must end cleanly");
    assert_eq!(done.body, bytes, "the whole blob, byte for byte");
    let Stalling { wharf, .. } = s;
    let status = wharf.wait();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_still_stalled_after_the_grace_is_aborted_and_leaves_no_partial_object() {
    let s = Stalling::start("drain_grace = \"1s\"\n").await;
    let bytes = Bytes::from(random_bytes(256 * 1024));
    let digest = s.fake.put_blob(bytes.clone());
    // Never opened: the fill cannot finish.
    s.fake.script(&digest, Script::normal().stalling_at(64 * 1024, &Gate::new()));
    let mut client = within_guard("headers", streaming::open(&s.blob_url(&digest))).await;
    within_guard("first bytes", client.read_at_least(1)).await;

    let Stalling { fake, notify, config, wharf, dir } = s;
    wharf.signal("TERM");
    notify.expect("STOPPING=1").await;
    let status = wharf.wait();
    assert!(status.success(), "{status}");
    let cut = within_guard("the client body after exit", client.finish()).await;
    assert!(!cut.complete, "a body cut by the shutdown must not end cleanly");

    let storage = dir.path().join("wharf/storage");
    let spool: Vec<_> = std::fs::read_dir(storage.join("spool")).expect("spool dir").collect();
    assert!(spool.is_empty(), "the aborted fill's spool file must be gone: {spool:?}");
    let hex = digest.trim_start_matches("sha256:");
    assert!(
        !storage.join(format!("objects/blobs/sha256/{}/{hex}", &hex[..2])).exists(),
        "no object may exist for a fill that never finished"
    );

    // Restarted, wharf fetches the blob whole and serves it.
    fake.script(&digest, Script::normal());
    let wharf = Wharf::start_with_config(&config);
    let again = within_guard("GET after restart", crate::http::get(&format!("{}/v2/{REPO}/blobs/{digest}", wharf.url()))).await;
    assert_eq!((again.status, again.complete), (200, true));
    assert_eq!(again.body, bytes);
}

// ---------------------------------------------------------------------------
// SIGHUP: the reload.

/// An HTTP/1.1 connection the test keeps open across a reload.
struct KeepAlive {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    authority: String,
    _connection: JoinHandle<()>,
}

impl KeepAlive {
    async fn connect(addr: std::net::SocketAddr) -> KeepAlive {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.expect("handshake");
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        KeepAlive { sender, authority: addr.to_string(), _connection: connection }
    }

    /// GET `path` on this connection; fails the test if the connection is gone.
    async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> (u16, Bytes) {
        within_guard("connection ready", self.sender.ready()).await.expect("the kept-alive connection was closed");
        let mut req = http::Request::get(path).header(http::header::HOST, &self.authority);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = within_guard(path, self.sender.send_request(req.body(Empty::new()).expect("request")))
            .await
            .unwrap_or_else(|e| panic!("GET {path} on the kept-alive connection: {e}"));
        let status = resp.status().as_u16();
        let body = within_guard("body", resp.into_body().collect()).await.expect("body").to_bytes();
        (status, body)
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_upstreams_users_and_limits_without_dropping_connections_and_a_bad_config_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let registry = Registry::start(&tmp.path().join("upstream"));
    let image = Image::random(&[30_000, 50_000]);
    images::push(&clients, tmp.path(), &image, &registry.host(), "team/tool", &["1"], None);
    // The fake only holds a download open across the reload.
    let fake = FakeUpstream::start().await;
    let slow_bytes = Bytes::from(random_bytes(300 * 1024));
    let slow = fake.put_blob(slow_bytes.clone());
    let gate = Gate::new();
    fake.script(&slow, Script::normal().stalling_at(100 * 1024, &gate));

    let notify = NotifySocket::bind(tmp.path());
    let dir = tmp.path().join("wharf");
    let one = UpstreamEntry::new("one", &registry.url());
    let config = write_config(&dir, &[one, UpstreamEntry::new("slow", &fake.url())]);
    let before = std::fs::read_to_string(&config).expect("read config");
    let wharf = Wharf::start_with_env(&config, &[("NOTIFY_SOCKET", &notify.env())]);
    notify.expect("READY=1").await;

    let accept = [("Accept", OCI_MANIFEST)];
    let alice = basic("alice", "wonderland");
    let mut conn = KeepAlive::connect(wharf.registry).await;
    assert_eq!(conn.get("/v2/one/team/tool/manifests/1", &accept).await.0, 200);
    assert_eq!(conn.get("/v2/two/team/tool/manifests/1", &accept).await.0, 404, "no upstream two yet");
    assert_eq!(conn.get("/v2/", &[("Authorization", &alice)]).await.0, 401, "no user alice yet");
    let mut download = within_guard("headers", streaming::open(&format!("{}/v2/slow/{REPO}/blobs/{slow}", wharf.url()))).await;
    assert_eq!(download.status, 200);
    within_guard("first bytes", download.read_at_least(1)).await;

    // Upstream two (the same registry under another name) and user alice.
    let two = UpstreamEntry::new("two", &registry.url());
    write_config(&dir, &[UpstreamEntry::new("one", &registry.url()), UpstreamEntry::new("slow", &fake.url()), two]);
    let mut after = std::fs::read_to_string(&config).expect("read config");
    after.push_str(&format!(
        "\n[auth]\nbasic = true\n\n[[auth.user]]\nname = \"alice\"\npassword_hash = {:?}\n",
        hash_password("wonderland")
    ));
    std::fs::write(&config, &after).expect("write config");
    let ready = notify.reload(&wharf).await;
    assert!(!ready.contains("failed"), "{ready:?}");

    let (status, body) = conn.get("/v2/two/team/tool/manifests/1", &accept).await;
    assert_eq!(status, 200, "upstream two after the reload, on the same connection");
    assert_eq!(body, image.manifest.bytes);
    assert_eq!(conn.get("/v2/", &[("Authorization", &alice)]).await.0, 200, "user alice after the reload");
    let layout = tempfile::tempdir().expect("tempdir");
    clients.pull_to_layout(&format!("docker://{}/two/team/tool:1", wharf.host()), layout.path(), "1", &[]);
    assert_layout_holds_image(layout.path(), "1", &image);
    gate.open();
    let done = within_guard("the download across the reload", download.finish()).await;
    assert!(done.complete && done.body == slow_bytes, "the download started before the reload must complete whole");

    // A config that does not validate is refused whole: two and alice stay.
    std::fs::write(&config, format!("{before}\n[bogus]\nkey = 1\n")).expect("write config");
    let ready = notify.reload(&wharf).await;
    assert!(ready.contains("reload failed") && ready.contains("bogus"), "{ready:?}");
    assert_eq!(conn.get("/v2/two/team/tool/manifests/1", &accept).await.0, 200, "the running config stays");
    assert_eq!(conn.get("/v2/", &[("Authorization", &alice)]).await.0, 200, "the running users stay");

    // [limits] too: a burst of two, refilled once in 1000 s.
    std::fs::write(&config, format!("{after}\n[limits]\nper_ip_rate = 0.001\nper_ip_burst = 2\n")).expect("write config");
    let ready = notify.reload(&wharf).await;
    assert!(!ready.contains("failed"), "{ready:?}");
    let signed_in = [("Authorization", alice.as_str())];
    assert_eq!(conn.get("/v2/", &signed_in).await.0, 200);
    assert_eq!(conn.get("/v2/", &signed_in).await.0, 200);
    assert_eq!(conn.get("/v2/", &signed_in).await.0, 429, "the new per-IP limit, on the connection opened before it");
    drop(conn);
    wharf.stop();
}

// ---------------------------------------------------------------------------
// TLS.

fn openssl(dir: &Path, args: &[&str]) {
    require_program("openssl", "openssl");
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA named `name` and a certificate it signed for 127.0.0.1, as
/// `<name>/ca.crt`, `<name>/server.crt` and `<name>/server.key`, and the
/// CA alone in `<name>/trust/ca.crt` (skopeo takes every `*.key` in its
/// cert dir for a client key).
pub(crate) fn make_ca_and_server_cert(dir: &Path, name: &str) -> PathBuf {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509", "-days", "2", "-keyout", "ca.key", "-out", "ca.crt"];
    ca.extend(ec);
    let subject = format!("/CN=wharf test CA {name}");
    ca.extend(["-subj", &subject]);
    ca.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(&dir, &ca);
    let mut csr = vec!["req", "-new", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"];
    csr.extend(ec);
    openssl(&dir, &csr);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext.cnf");
    openssl(
        &dir,
        &[
            "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-out", "server.crt", "-extfile", "ext.cnf",
        ],
    );
    std::fs::create_dir_all(dir.join("trust")).expect("mkdir trust");
    std::fs::copy(dir.join("ca.crt"), dir.join("trust/ca.crt")).expect("copy ca.crt");
    dir
}

/// `curl` over TLS trusting `ca`; the HTTP version spoken, or curl's error.
fn curl_version(ca: &Path, url: &str, http2: bool) -> Result<String, String> {
    require_program("curl", "curl");
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--output", "/dev/null", "--write-out", "%{http_version}"])
        .arg(if http2 { "--http2" } else { "--http1.1" })
        .arg("--cacert")
        .arg(ca)
        .arg(url)
        .output()
        .expect("run curl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pulls_over_tls_with_h2_by_alpn_and_a_reload_swaps_the_certificate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let registry = Registry::start(&tmp.path().join("upstream"));
    let image = Image::random(&[40_000, 70_000]);
    images::push(&clients, tmp.path(), &image, &registry.host(), "team/tool", &["1"], None);
    let first = make_ca_and_server_cert(tmp.path(), "first");
    let second = make_ca_and_server_cert(tmp.path(), "second");
    let live = tmp.path().join("live");
    std::fs::create_dir_all(&live).expect("mkdir");
    for f in ["server.crt", "server.key"] {
        std::fs::copy(first.join(f), live.join(f)).expect("copy cert");
    }

    let notify = NotifySocket::bind(tmp.path());
    // Pulls need a user, so the client follows the token realm wharf
    // derives: over TLS it must be https.
    let config = write_config(
        &tmp.path().join("wharf"),
        &[UpstreamEntry::new("one", &registry.url()).extra("anonymous_pull = false")],
    );
    let mut toml = std::fs::read_to_string(&config).expect("read config");
    let tls = format!("[server]\ntls_cert = {:?}\ntls_key = {:?}\n", live.join("server.crt"), live.join("server.key"));
    toml = toml.replacen("[server]\n", &tls, 1);
    toml.push_str(&format!(
        "\n[[auth.user]]\nname = \"puller\"\npassword_hash = {:?}\n\n\
         [[auth.rule]]\nusers = [\"puller\"]\nrepositories = [\"one/*\"]\nactions = [\"pull\"]\n",
        hash_password("pull-pass")
    ));
    std::fs::write(&config, toml).expect("write config");
    let wharf = Wharf::start_with_env(&config, &[("NOTIFY_SOCKET", &notify.env())]);
    notify.expect("READY=1").await;
    let https = format!("https://{}/v2/", wharf.host());

    // skopeo reads ca.crt from the directory it is given.
    let source = format!("docker://{}/one/team/tool:1", wharf.host());
    let layout = tempfile::tempdir().expect("tempdir");
    let dest = format!("oci:{}:1", layout.path().display());
    let creds = "puller:pull-pass";
    let untrusted = clients.skopeo(&["copy", "--preserve-digests", "--src-creds", creds, &source, &dest]);
    assert!(!untrusted.status.success(), "a pull that does not trust the test CA must fail");
    let trust = first.join("trust");
    let cert_dir = trust.to_str().expect("utf-8 path");
    clients.skopeo_ok(&["copy", "--preserve-digests", "--src-cert-dir", cert_dir, "--src-creds", creds, &source, &dest]);
    assert_layout_holds_image(layout.path(), "1", &image);

    assert_eq!(curl_version(&first.join("ca.crt"), &https, true).as_deref(), Ok("2"), "ALPN h2");
    assert_eq!(curl_version(&first.join("ca.crt"), &https, false).as_deref(), Ok("1.1"), "http/1.1 still");
    assert!(curl_version(&second.join("ca.crt"), &https, true).is_err(), "the second CA did not sign the cert in use");

    // Renewed files, then SIGHUP: new handshakes get the new certificate.
    for f in ["server.crt", "server.key"] {
        std::fs::copy(second.join(f), live.join(f)).expect("copy cert");
    }
    let ready = notify.reload(&wharf).await;
    assert!(!ready.contains("failed"), "{ready:?}");
    assert_eq!(curl_version(&second.join("ca.crt"), &https, true).as_deref(), Ok("2"), "the new certificate");
    assert!(curl_version(&first.join("ca.crt"), &https, true).is_err(), "the old certificate is no longer offered");

    // A key that does not match is refused; the certificate in use stays.
    std::fs::copy(first.join("server.key"), live.join("server.key")).expect("copy key");
    let ready = notify.reload(&wharf).await;
    assert!(ready.contains("reload failed"), "{ready:?}");
    assert_eq!(curl_version(&second.join("ca.crt"), &https, true).as_deref(), Ok("2"), "still the second certificate");
    wharf.stop();
}
