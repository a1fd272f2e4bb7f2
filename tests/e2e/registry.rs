//! A real upstream: Debian's `docker-registry` (distribution 2.8) on a free
//! loopback port, with filesystem storage in the test's temp dir, either
//! open, behind htpasswd basic auth, or behind token auth served by a small
//! in-process token issuer.
//!
//! The registry's access log (one Apache-style line per request, on its
//! stdout) is captured so tests can count what wharf asked upstream for.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

use crate::clients::require_program;

/// How clients must authenticate to the registry.
#[derive(Clone, Debug)]
pub enum Auth {
    Open,
    /// htpasswd (bcrypt) basic auth with one user.
    Basic { username: String, password: String },
    /// Bearer tokens from an in-process issuer that knows one user.
    Token { username: String, password: String },
}

impl Auth {
    pub fn basic(username: &str, password: &str) -> Auth {
        Auth::Basic { username: username.into(), password: password.into() }
    }
    pub fn token(username: &str, password: &str) -> Auth {
        Auth::Token { username: username.into(), password: password.into() }
    }
}

/// One request in the registry's access log.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessLine {
    pub method: String,
    /// Path and query, as the client sent them.
    pub path: String,
    pub status: u16,
}

/// A running (or stopped) `docker-registry`; killed when dropped.
pub struct Registry {
    dir: PathBuf,
    pub addr: SocketAddr,
    auth: Auth,
    process: Option<Process>,
    log: Arc<AccessLog>,
    issuer: Option<TokenIssuer>,
    markers: AtomicU64,
}

struct Process {
    child: Child,
    readers: Vec<JoinHandle<()>>,
}

#[derive(Default)]
struct AccessLog {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

/// How long a registry may take to come up, or to log a request it already
/// answered, before the test fails: a bound on a wait, not a measurement.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
const MARKER: &str = "e2e-log-marker=";

impl Registry {
    /// An open registry storing its data under `dir`.
    pub fn start(dir: &Path) -> Registry {
        Registry::start_with_auth(dir, Auth::Open)
    }

    pub fn start_with_auth(dir: &Path, auth: Auth) -> Registry {
        require_program("docker-registry", "docker-registry");
        std::fs::create_dir_all(dir.join("data")).expect("create registry dir");
        let issuer = match &auth {
            Auth::Token { username, password } => Some(TokenIssuer::start(dir, username, password)),
            _ => None,
        };
        if let Auth::Basic { username, password } = &auth {
            write_htpasswd(&dir.join("htpasswd"), username, password);
        }
        let mut registry = Registry {
            dir: dir.to_path_buf(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            auth,
            process: None,
            log: Arc::default(),
            issuer,
            markers: AtomicU64::new(0),
        };
        registry.spawn();
        registry
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `user:password` for skopeo's `--creds`, when the registry wants any.
    pub fn credentials(&self) -> Option<String> {
        match &self.auth {
            Auth::Open => None,
            Auth::Basic { username, password } | Auth::Token { username, password } => {
                Some(format!("{username}:{password}"))
            }
        }
    }

    /// `username = ...` / `password = ...` lines for a wharf upstream entry.
    pub fn wharf_credentials_toml(&self) -> String {
        match &self.auth {
            Auth::Open => String::new(),
            Auth::Basic { username, password } | Auth::Token { username, password } => {
                format!("username = {username:?}\npassword = {password:?}\n")
            }
        }
    }

    pub fn token_issuer(&self) -> Option<&TokenIssuer> {
        self.issuer.as_ref()
    }

    /// Kills the registry (SIGKILL) and waits until it is gone and its log
    /// is fully read. Its port then refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
            for r in p.readers {
                let _ = r.join();
            }
        }
    }

    /// Starts the registry again on the same port and the same storage.
    pub fn restart(&mut self) {
        assert!(self.process.is_none(), "restart() on a running registry; stop() it first");
        self.spawn();
    }

    /// Every request the registry has logged so far, across restarts.
    pub fn access_log(&self) -> Vec<AccessLine> {
        self.settle_log();
        let lines = self.log.lines.lock().expect("access log lock");
        lines.iter().filter(|l| !l.contains(MARKER)).filter_map(|l| parse_access_line(l)).collect()
    }

    /// GET requests whose path contains `path_part` (any status).
    pub fn count_gets(&self, path_part: &str) -> usize {
        self.access_log().iter().filter(|l| l.method == "GET" && l.path.contains(path_part)).count()
    }

    /// GET requests for blob `digest`, in any repository.
    pub fn blob_gets(&self, digest: &str) -> usize {
        self.count_gets(&format!("/blobs/{digest}"))
    }

    /// GET requests for blob `digest` once at least `n` are logged (or
    /// after a deadline, to fail the caller's assertion). The marker of
    /// [`Self::access_log`] is not enough right after a download: the
    /// registry logs each request from that request's own goroutine after
    /// answering it, so a GET answered just before the marker was sent can
    /// be logged just after it.
    pub fn blob_gets_reaching(&self, digest: &str, n: usize) -> usize {
        let needle = format!("/blobs/{digest}");
        let gets = |lines: &Vec<String>| {
            lines
                .iter()
                .filter_map(|l| parse_access_line(l))
                .filter(|l| l.method == "GET" && l.path.contains(&needle))
                .count()
        };
        let lines = self.log.lines.lock().expect("access log lock");
        let (lines, _) = self
            .log
            .grew
            .wait_timeout_while(lines, STARTUP_DEADLINE, |lines| gets(lines) < n)
            .expect("access log lock");
        gets(&lines)
    }

    /// Makes the log current: sends a marker request and waits until the
    /// registry logs it. The registry logs each request after answering it,
    /// so requests answered before the marker was sent are then in the log.
    fn settle_log(&self) {
        if self.process.is_none() {
            return; // stop() read the log to its end
        }
        let marker = format!("{MARKER}{}", self.markers.fetch_add(1, Ordering::Relaxed));
        let mut stream = TcpStream::connect(self.addr).expect("connect to registry for log marker");
        write!(stream, "GET /v2/?{marker} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).expect("send log marker");
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
        let lines = self.log.lines.lock().expect("access log lock");
        let (_lines, wait) = self
            .log
            .grew
            .wait_timeout_while(lines, STARTUP_DEADLINE, |lines| !lines.iter().rev().any(|l| l.contains(&marker)))
            .expect("access log lock");
        assert!(!wait.timed_out(), "the registry did not log request {marker} within {STARTUP_DEADLINE:?}");
    }

    fn config_yaml(&self) -> String {
        let auth = match &self.auth {
            Auth::Open => String::new(),
            Auth::Basic { .. } => format!(
                "auth:\n  htpasswd:\n    realm: wharf-e2e\n    path: {:?}\n",
                self.dir.join("htpasswd")
            ),
            Auth::Token { .. } => {
                let issuer = self.issuer.as_ref().expect("token auth has an issuer");
                format!(
                    "auth:\n  token:\n    realm: {:?}\n    service: {:?}\n    issuer: {:?}\n    rootcertbundle: {:?}\n",
                    issuer.realm(),
                    TOKEN_SERVICE,
                    TOKEN_ISSUER,
                    issuer.cert_path
                )
            }
        };
        format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {:?}\n  delete:\n    enabled: true\n\
             http:\n  addr: {:?}\n  secret: wharf-e2e-not-a-secret\n\
             {auth}",
            self.dir.join("data"),
            self.addr.to_string()
        )
    }

    fn spawn(&mut self) {
        let config = self.dir.join("registry.yml");
        std::fs::write(&config, self.config_yaml()).expect("write registry.yml");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run docker-registry: {e}"));

        // stdout carries the access log.
        let stdout = child.stdout.take().expect("piped stdout");
        let log = Arc::clone(&self.log);
        let access = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !line.contains(MARKER) {
                    eprintln!("[upstream access] {line}");
                }
                log.lines.lock().expect("access log lock").push(line);
                log.grew.notify_all();
            }
        });

        // stderr carries the application log; the listening line tells the port.
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        let app = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !line.contains("level=info") {
                    eprintln!("[upstream] {line}");
                }
                // After startup nobody listens; keep draining the pipe.
                let _ = tx.send(line);
            }
        });

        let mut seen = Vec::new();
        let addr = loop {
            match rx.recv_timeout(STARTUP_DEADLINE) {
                Ok(line) => {
                    if let Some(addr) = listening_addr(&line) {
                        break addr;
                    }
                    seen.push(line);
                }
                Err(e) => {
                    let _ = child.kill();
                    panic!(
                        "docker-registry did not report listening ({e:?}); config:\n{}\nlog:\n{}",
                        self.config_yaml(),
                        seen.join("\n")
                    );
                }
            }
        };
        self.addr = addr;
        self.process = Some(Process { child, readers: vec![access, app] });
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `... msg="listening on 127.0.0.1:41697" ...` → the address.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let addr: String = rest.chars().take_while(|c| !c.is_whitespace() && *c != '"').collect();
    addr.parse().ok()
}

/// `127.0.0.1 - - [date] "GET /v2/ HTTP/1.1" 200 2 "" "ua"`
fn parse_access_line(line: &str) -> Option<AccessLine> {
    let (_, rest) = line.split_once("] \"")?;
    let (request, rest) = rest.split_once('"')?;
    let mut parts = request.split(' ');
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let status = rest.split_whitespace().next()?.parse().ok()?;
    Some(AccessLine { method, path, status })
}

fn write_htpasswd(path: &Path, username: &str, password: &str) {
    require_program("htpasswd", "apache2-utils");
    let out = Command::new("htpasswd")
        .args(["-Bbn", username, password])
        .output()
        .unwrap_or_else(|e| panic!("cannot run htpasswd: {e}"));
    assert!(out.status.success(), "htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
    let entry = String::from_utf8(out.stdout).expect("htpasswd prints text");
    std::fs::write(path, entry.trim_end()).expect("write htpasswd file");
}

// ---------------------------------------------------------------------------
// Token issuer

const TOKEN_SERVICE: &str = "wharf-e2e-registry";
const TOKEN_ISSUER: &str = "wharf-e2e-token-issuer";

/// One request the token issuer answered.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// The Basic-auth user, if the request carried valid credentials.
    pub user: Option<String>,
    pub scopes: Vec<String>,
    pub granted: bool,
}

/// An HTTP endpoint on loopback issuing ES256 JWTs the registry trusts: the
/// signing key's self-signed certificate is both the token's `x5c` header
/// and the registry's `rootcertbundle`. Valid Basic credentials get exactly
/// the scopes they ask for; anything else gets 401.
pub struct TokenIssuer {
    addr: SocketAddr,
    cert_path: PathBuf,
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
}

struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    cert_der_base64: String,
    username: String,
    password: String,
}

impl TokenIssuer {
    fn start(dir: &Path, username: &str, password: &str) -> TokenIssuer {
        let (key_der, cert_der, cert_path) = generate_signing_cert(dir);
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key_der, &rng)
            .unwrap_or_else(|e| panic!("ring refused openssl's P-256 key: {e}"));
        let signer = Arc::new(Signer {
            key,
            rng,
            cert_der_base64: STANDARD.encode(cert_der),
            username: username.into(),
            password: password.into(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token issuer");
        let addr = listener.local_addr().expect("token issuer address");
        let shutdown = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let shutdown = Arc::clone(&shutdown);
            let requests = Arc::clone(&requests);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if shutdown.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let signer = Arc::clone(&signer);
                    let requests = Arc::clone(&requests);
                    std::thread::spawn(move || serve_token_request(stream, &signer, &requests));
                }
            })
        };
        TokenIssuer { addr, cert_path, shutdown, thread: Some(thread), requests }
    }

    /// The URL the registry sends clients to (`realm` in its challenge).
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// Every token request so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().expect("token requests lock").clone()
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A P-256 key (PKCS#8 DER) and its self-signed certificate (DER, and PEM
/// at the returned path), made with the openssl CLI.
fn generate_signing_cert(dir: &Path) -> (Vec<u8>, Vec<u8>, PathBuf) {
    require_program("openssl", "openssl");
    let key_pem = dir.join("token-key.pem");
    let key_der = dir.join("token-key.p8.der");
    let cert_pem = dir.join("token-cert.pem");
    let cert_der = dir.join("token-cert.der");
    let p = |p: &Path| p.to_str().expect("utf-8 temp path").to_owned();
    openssl(&[
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", &p(&key_pem), "-out", &p(&cert_pem), "-days", "2", "-subj", "/CN=wharf-e2e-token-issuer",
    ]);
    openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", &p(&key_pem), "-outform", "DER", "-out", &p(&key_der)]);
    openssl(&["x509", "-in", &p(&cert_pem), "-outform", "DER", "-out", &p(&cert_der)]);
    (
        std::fs::read(&key_der).expect("read token key"),
        std::fs::read(&cert_der).expect("read token cert"),
        cert_pem,
    )
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(out.status.success(), "openssl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn serve_token_request(mut stream: TcpStream, signer: &Signer, requests: &Mutex<Vec<TokenRequest>>) {
    let Some((method, target, headers)) = read_request_head(&stream) else { return };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    if method != "GET" || path != "/token" {
        let _ = respond(&mut stream, "404 Not Found", &[], br#"{"errors":[{"code":"NOT_FOUND"}]}"#);
        return;
    }
    let mut service = String::new();
    let mut scopes = Vec::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "service" => service = v.into_owned(),
            "scope" => scopes.extend(v.split(' ').filter(|s| !s.is_empty()).map(str::to_owned)),
            _ => {}
        }
    }
    let user = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
        .and_then(|b64| STANDARD.decode(b64.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| pair.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())))
        .filter(|(u, p)| *u == signer.username && *p == signer.password)
        .map(|(u, _)| u);
    let granted = user.is_some() && service == TOKEN_SERVICE;
    requests.lock().expect("token requests lock").push(TokenRequest {
        user: user.clone(),
        scopes: scopes.clone(),
        granted,
    });
    let Some(user) = user.filter(|_| granted) else {
        let _ = respond(
            &mut stream,
            "401 Unauthorized",
            &["WWW-Authenticate: Basic realm=\"wharf-e2e-token\""],
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"valid Basic credentials for this service are required"}]}"#,
        );
        return;
    };
    let token = signer.sign(&user, &scopes);
    let body = json!({ "token": token, "access_token": token, "expires_in": 300 }).to_string();
    let _ = respond(&mut stream, "200 OK", &["Content-Type: application/json"], body.as_bytes());
}

impl Signer {
    /// A compact JWS (ES256) granting `scopes` (`type:name:actions`).
    fn sign(&self, user: &str, scopes: &[String]) -> String {
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|s| {
                let (type_and_name, actions) = s.rsplit_once(':')?;
                let (kind, name) = type_and_name.split_once(':')?;
                Some(json!({ "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>() }))
            })
            .collect();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs();
        let header = json!({ "typ": "JWT", "alg": "ES256", "x5c": [self.cert_der_base64] });
        let claims = json!({
            "iss": TOKEN_ISSUER,
            "sub": user,
            "aud": TOKEN_SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": hex::encode(crate::images::random_bytes(16)),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.key.sign(&self.rng, signing_input.as_bytes()).expect("ES256 signing");
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }
}

type Head = (String, String, Vec<(String, String)>);

fn read_request_head(stream: &TcpStream) -> Option<Head> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    Some((method, target, headers))
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[&str], body: &[u8]) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

#[test]
fn access_lines_parse_method_path_and_status() {
    let line = r#"127.0.0.1 - - [25/Nov/2026:00:11:46 +0000] "GET /v2/foo/blobs/sha256:ab?x=1 HTTP/1.1" 404 157 "" "curl/7.88.1""#;
    assert_eq!(
        parse_access_line(line),
        Some(AccessLine { method: "GET".into(), path: "/v2/foo/blobs/sha256:ab?x=1".into(), status: 404 })
    );
    assert_eq!(parse_access_line("level=info msg=hello"), None);
}

/// The harness itself, against docker-registry alone: if these fail, the
/// wharf tests cannot be trusted either.
mod harness {
    use super::*;
    use crate::clients::{Clients, Mirror};
    use crate::images::{self, Image, Index};

    #[test]
    fn open_registry_serves_a_pushed_image_and_counts_blob_gets() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let registry = Registry::start(&tmp.path().join("upstream"));
        let clients = Clients::new(&tmp.path().join("clients"));
        let image = Image::random(&[30_000, 70_000]);
        images::push(&clients, tmp.path(), &image, &registry.host(), "team/tool", &["1"], None);

        let raw = clients.inspect_raw(&format!("docker://{}/team/tool:1", registry.host()), None);
        assert_eq!(images::sha256_digest(&raw), image.manifest.digest);
        let before = registry.blob_gets(&image.layers[1].digest);

        let pulled = tmp.path().join("pulled");
        clients.pull_to_layout(&format!("docker://{}/team/tool:1", registry.host()), &pulled, "1", &[]);
        assert_eq!(images::layout_tag_digest(&pulled, "1"), image.manifest.digest);
        for blob in image.blobs() {
            assert_eq!(images::layout_blob(&pulled, &blob.digest), blob.bytes);
        }
        assert_eq!(registry.blob_gets(&image.layers[1].digest), before + 1);
    }

    #[test]
    fn stopped_registry_refuses_connections_and_restarts_with_its_content() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut registry = Registry::start(&tmp.path().join("upstream"));
        let clients = Clients::new(&tmp.path().join("clients"));
        let image = Image::random(&[10_000]);
        images::push(&clients, tmp.path(), &image, &registry.host(), "team/tool", &["1"], None);
        let addr = registry.addr;
        registry.stop();
        assert!(TcpStream::connect(addr).is_err(), "a stopped registry still accepts connections");
        registry.restart();
        assert_eq!(registry.addr, addr);
        let raw = clients.inspect_raw(&format!("docker://{}/team/tool:1", registry.host()), None);
        assert_eq!(images::sha256_digest(&raw), image.manifest.digest);
    }

    #[test]
    fn basic_auth_registry_needs_the_htpasswd_credentials() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let registry = Registry::start_with_auth(&tmp.path().join("upstream"), Auth::basic("alice", "wonderland"));
        let clients = Clients::new(&tmp.path().join("clients"));
        let image = Image::random(&[10_000]);
        let creds = registry.credentials();
        images::push(&clients, tmp.path(), &image, &registry.host(), "team/tool", &["1"], creds.as_deref());
        let reference = format!("docker://{}/team/tool:1", registry.host());
        let raw = clients.inspect_raw(&reference, creds.as_deref());
        assert_eq!(images::sha256_digest(&raw), image.manifest.digest);
        let anonymous = clients.skopeo(&["inspect", "--raw", "--tls-verify=false", &reference]);
        assert!(!anonymous.status.success(), "anonymous pull from a basic-auth registry succeeded");
    }

    #[test]
    fn token_auth_registry_accepts_tokens_from_the_issuer() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let registry = Registry::start_with_auth(&tmp.path().join("upstream"), Auth::token("bob", "builder"));
        let clients = Clients::new(&tmp.path().join("clients"));
        let index = Index::random(&[10_000]);
        let creds = registry.credentials();
        images::push(&clients, tmp.path(), &index, &registry.host(), "team/tool", &["1"], creds.as_deref());
        let reference = format!("docker://{}/team/tool:1", registry.host());
        let raw = clients.inspect_raw(&reference, creds.as_deref());
        assert_eq!(images::sha256_digest(&raw), index.manifest.digest);
        let issued = registry.token_issuer().expect("issuer").requests();
        assert!(issued.iter().any(|r| r.granted && r.user.as_deref() == Some("bob") && r.scopes.iter().any(|s| s == "repository:team/tool:pull")));
        let anonymous = clients.skopeo(&["inspect", "--raw", "--tls-verify=false", &reference]);
        assert!(!anonymous.status.success(), "anonymous pull from a token-auth registry succeeded");
    }

    #[test]
    fn podman_pulls_from_a_registries_conf_mirror() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let registry = Registry::start(&tmp.path().join("upstream"));
        let image = Image::random(&[20_000]);
        let host = registry.host();
        let clients = Clients::with_mirrors(
            &tmp.path().join("clients"),
            &[Mirror { location: "registry.example", mirror: &host }],
        );
        images::push(&clients, tmp.path(), &image, &host, "team/tool", &["2"], None);
        let pulled = clients.podman_pull("registry.example/team/tool:2");
        assert_eq!(pulled.digest, image.manifest.digest);
        assert_eq!(pulled.diff_ids, image.diff_ids);
    }
}
