//! Hostile or broken clients against the real binary. A connection that
//! sends nothing, half a head, or nothing after its last response
//! (HTTP/1.1 keep-alive, h2c) is closed after its timeout, while a download
//! in flight is not. Silent connections from one address are capped, so
//! under a low file-descriptor limit other clients are still served; when
//! accept runs out of descriptors anyway, the connections already open are
//! still served and the failures are logged once per interval, not once
//! each. A head over wharf's limits gets an OCI error body; one over
//! hyper's gets hyper's bare status.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::admin::sample;
use crate::clients::Clients;
use crate::fake_upstream::{FakeUpstream, Gate, Script};
use crate::faults::REPO;
use crate::http;
use crate::images::{self, assert_layout_holds_image, random_bytes, Image};
use crate::registry::Registry;
use crate::streaming::{self, within_guard};
use crate::wharf::{write_config, UpstreamEntry, Wharf};

/// Writes wharf's config into `dir` with `server_lines` added to `[server]`.
fn config_with(dir: &Path, upstreams: &[UpstreamEntry], server_lines: &str) -> PathBuf {
    let config = write_config(dir, upstreams);
    let toml = std::fs::read_to_string(&config).expect("read wharf.toml");
    let toml = toml.replacen("\n\n[storage]", &format!("\n{server_lines}\n\n[storage]"), 1);
    std::fs::write(&config, toml).expect("write wharf.toml");
    config
}

/// A TCP connection the test writes and reads by hand.
struct Raw {
    stream: TcpStream,
    /// Bytes read past the last response.
    pending: Vec<u8>,
}

impl Raw {
    async fn connect(to: SocketAddr) -> Raw {
        let stream = within_guard("connect", TcpStream::connect(to)).await.expect("connect");
        Raw { stream, pending: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// A GET on this connection, kept alive; its status and body.
    async fn get(&mut self, path: &str) -> (u16, Vec<u8>) {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: wharf.test\r\n\r\n").as_bytes()).await;
        self.response().await
    }

    /// The next response: its status and body (bodies with a
    /// `Content-Length`, which every response here has).
    async fn response(&mut self) -> (u16, Vec<u8>) {
        let mut buf = std::mem::take(&mut self.pending);
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.read_more(&mut buf).await;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status: {head}"));
        let length: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no Content-Length: {head}"))
            .parse()
            .expect("a length");
        while buf.len() < head_end + length {
            self.read_more(&mut buf).await;
        }
        self.pending = buf.split_off(head_end + length);
        (status, buf.split_off(head_end))
    }

    async fn read_more(&mut self, buf: &mut Vec<u8>) {
        let mut chunk = [0u8; 16 << 10];
        let n = within_guard("a response", self.stream.read(&mut chunk)).await.expect("read");
        assert!(n > 0, "the connection closed mid-response: {}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&chunk[..n]);
    }

    /// Reads until the server closes the connection; what came before.
    async fn until_closed(&mut self, what: &str) -> Vec<u8> {
        let mut got = std::mem::take(&mut self.pending);
        let mut chunk = [0u8; 16 << 10];
        loop {
            match within_guard(what, self.stream.read(&mut chunk)).await {
                Ok(0) => return got,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
                Err(e) => panic!("{what}: {e}"),
            }
        }
    }
}

/// The HTTP/2 frame types in `bytes` (a server's side of a connection).
fn h2_frame_types(bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let length = usize::from(bytes[at]) << 16 | usize::from(bytes[at + 1]) << 8 | usize::from(bytes[at + 2]);
        types.push(bytes[at + 3]);
        at += 9 + length;
    }
    types
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: what a client sends right after the preface.
const H2_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
const GOAWAY: u8 = 7;

/// One registry-port series from the admin port, on a fresh connection.
async fn metric(wharf: &Wharf, series: &str) -> u64 {
    let text = within_guard("/metrics", http::get(&format!("{}/metrics", wharf.admin_url()))).await;
    sample(&String::from_utf8_lossy(&text.body), series)
}

/// Polls `series` until it reads `value`. A connection's task updates
/// its series as it ends, which its client may see happen first.
async fn settles_at(wharf: &Wharf, series: &str, value: u64) {
    within_guard(&format!("{series} reaches {value}"), async {
        while metric(wharf, series).await != value {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_request_are_closed_after_their_timeouts_and_a_download_in_flight_is_not() {
    let fake = FakeUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with(
        dir.path(),
        &[UpstreamEntry::new("fake", &fake.url()).default()],
        "header_timeout = \"1s\"\nidle_timeout = \"2s\"",
    );
    let wharf = Wharf::start_with_config(&config);

    // A download whose upstream stalls part-way: in flight far longer than
    // either timeout.
    let bytes = Bytes::from(random_bytes(300 << 10));
    let digest = fake.put_blob(bytes.clone());
    let gate = Gate::new();
    fake.script(&digest, Script::normal().stalling_at(100 << 10, &gate));
    let mut download = streaming::open(&format!("{}/v2/{REPO}/blobs/{digest}", wharf.url())).await;
    assert_eq!(download.status, 200);
    within_guard("the first part of the body", download.read_at_least(100 << 10)).await;

    let mut silent = Raw::connect(wharf.registry).await;
    let mut partial = Raw::connect(wharf.registry).await;
    partial.send(b"GET /v2/ HTTP/1.1\r\nHost: wharf.te").await;
    let mut kept_alive = Raw::connect(wharf.registry).await;
    assert_eq!(kept_alive.get("/v2/").await.0, 200);
    let mut h2c = Raw::connect(wharf.registry).await;
    h2c.send(&[H2_PREFACE, H2_SETTINGS].concat()).await;

    assert!(silent.until_closed("the silent connection is closed").await.is_empty());
    assert!(partial.until_closed("the half-sent head is closed").await.is_empty(), "no answer to half a head");
    assert!(kept_alive.until_closed("the idle keep-alive connection is closed").await.is_empty());
    let frames = h2_frame_types(&h2c.until_closed("the idle h2c connection is closed").await);
    assert!(frames.contains(&GOAWAY), "an h2c connection is told with GOAWAY: frame types {frames:?}");

    // Every other connection has met its timeout by now; the download,
    // in flight all along, goes on.
    gate.open();
    let done = within_guard("the rest of the download", download.finish()).await;
    assert!(done.complete && done.body == bytes, "the download in flight was not cut");

    let timed_out = |timeout: &str| format!(r#"wharf_connections_timed_out_total{{port="registry",timeout="{timeout}"}}"#);
    assert_eq!(metric(&wharf, &timed_out("header")).await, 3, "silent, half a head, h2c with no request");
    assert_eq!(metric(&wharf, &timed_out("idle")).await, 1, "the keep-alive connection");
    settles_at(&wharf, r#"wharf_connections_open{port="registry"}"#, 0).await;
}

/// `n` connections to `to` from the loopback address `from` (Linux routes
/// all of 127/8 to lo, so a test can be several clients), as std streams
/// in non-blocking mode.
async fn connect_from(from: &str, to: SocketAddr, n: usize) -> Vec<std::net::TcpStream> {
    let from: IpAddr = from.parse().expect("an address");
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(from, 0)).unwrap_or_else(|e| panic!("bind to {from}: {e}"));
        let stream = within_guard("connect", socket.connect(to)).await.expect("connect");
        streams.push(stream.into_std().expect("a std stream"));
    }
    streams
}

/// Whether the server has closed `stream` (a read sees the end, or a
/// reset) rather than still holding it open. Never blocks.
fn closed_by_server(stream: &std::net::TcpStream) -> bool {
    match (&*stream).read(&mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => panic!("the server sent bytes on a silent connection"),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// Polls `series` on the kept-alive admin connection until it passes
/// `at_least` (a new connection may not be accepted meanwhile).
async fn await_metric(admin: &mut Raw, series: &str, at_least: u64) -> u64 {
    within_guard(&format!("{series} reaches {at_least}"), async {
        loop {
            let (status, body) = admin.get("/metrics").await;
            assert_eq!(status, 200);
            let value = sample(&String::from_utf8_lossy(&body), series);
            if value >= at_least {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

fn lines_with(wharf: &Wharf, text: &str) -> usize {
    wharf.log_lines().iter().filter(|l| l.contains(text)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_floods_are_capped_per_address_and_running_out_of_descriptors_keeps_open_connections_and_a_quiet_log() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let image = Image::random(&[40_000]);
    images::push(&clients, tmp.path(), &image, &upstream.host(), "team/tool", &["1"], None);
    // The header timeout is long: the floods stay for the whole test. The
    // cap is left at its default (256), which the descriptor limit lowers.
    let config = config_with(&tmp.path().join("wharf"), &[UpstreamEntry::new("up", &upstream.url())], "header_timeout = \"10m\"");
    // What stood in the way before: 256 descriptors, and 300 silent
    // connections took them all.
    let wharf = Wharf::start_with_fd_limit(&config, 256);
    assert_eq!(lines_with(&wharf, "lowered to a quarter of the file descriptor limit"), 1, "the cap is 256 / 4 = 64");
    // Opened before any flood and kept alive: they need no new descriptor.
    let mut client = Raw::connect(wharf.registry).await;
    let mut admin = Raw::connect(wharf.admin).await;
    assert_eq!(client.get("/v2/").await.0, 200);
    let started = Instant::now();

    // 300 from one address: 64 are held, the rest closed as they come.
    let mut silent = connect_from("127.0.0.2", wharf.registry, 300).await;
    await_metric(&mut admin, r#"wharf_connections_refused_total{port="registry"}"#, 236).await;
    within_guard("236 refused connections see their close", async {
        while silent.iter().filter(|s| closed_by_server(s)).count() < 236 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Only the held ones are kept: the test's own descriptors are limited too.
    silent.retain(|s| !closed_by_server(s));
    assert_eq!(silent.len(), 64, "the cap's 64 are held, no more");
    let (_, metrics) = admin.get("/metrics").await;
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    assert_eq!(sample(&metrics, r#"wharf_connections_refused_total{port="registry"}"#), 236, "{metrics}");

    // Meanwhile another client (127.0.0.1) pulls as usual.
    let dest = tempfile::tempdir().expect("tempdir");
    let (pull, source, path) = (clients.clone(), format!("docker://{}/up/team/tool:1", wharf.host()), dest.path().to_owned());
    tokio::task::spawn_blocking(move || pull.pull_to_layout(&source, &path, "1", &[])).await.expect("skopeo");
    assert_layout_holds_image(dest.path(), "1", &image);

    // Three more addresses, each under the cap, are more than the
    // descriptors left: accept fails.
    let mut flood = Vec::new();
    for from in ["127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        flood.extend(connect_from(from, wharf.registry, 64).await);
    }
    await_metric(&mut admin, r#"wharf_accept_errors_total{port="registry"}"#, 1).await;
    assert_eq!(client.get("/v2/").await.0, 200, "a connection already open is still served");
    // Another round of failures, to be sure the loop is backing off.
    let failures = await_metric(&mut admin, r#"wharf_accept_errors_total{port="registry"}"#, 2).await;

    // Descriptors come back: new connections are accepted again.
    drop(flood);
    let again = within_guard("a new connection once descriptors are free", http::get(&format!("{}/v2/", wharf.url()))).await;
    assert_eq!(again.status, 200);
    assert!(silent.iter().all(|s| !closed_by_server(s)), "the held connections stay held");

    // At most one line per 10 s about each flood, however many failures.
    let window = started.elapsed().as_secs();
    let accept_lines = lines_with(&wharf, "accept failed");
    assert!(
        (1..=2 + window as usize / 10).contains(&accept_lines),
        "{accept_lines} lines for {failures} failed accepts over {window} s"
    );
    let refusal_lines = lines_with(&wharf, "connections refused");
    assert!((1..=2 + window as usize / 10).contains(&refusal_lines), "{refusal_lines} lines for 236 refusals over {window} s");
    drop(silent);
    wharf.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_an_oci_error_and_heads_hyper_cannot_parse_its_bare_status() {
    let fake = FakeUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let wharf = Wharf::start(dir.path(), &[UpstreamEntry::new("fake", &fake.url()).default()]);
    let ask = |request: Vec<u8>| {
        let to = wharf.registry;
        async move {
            let mut conn = Raw::connect(to).await;
            conn.send(&request).await;
            conn.response().await
        }
    };
    let error = |body: &[u8]| -> (String, String) {
        let json: serde_json::Value = serde_json::from_slice(body).expect("an OCI error body");
        let e = &json["errors"][0];
        (e["code"].as_str().unwrap_or_default().to_owned(), e["message"].as_str().unwrap_or_default().to_owned())
    };

    // Over wharf's limits, under hyper's: answered by wharf.
    let long_uri = format!("GET /v2/{} HTTP/1.1\r\nHost: w\r\n\r\n", "a".repeat(20_000));
    let (status, body) = ask(long_uri.into_bytes()).await;
    let (code, message) = error(&body);
    assert_eq!((status, code.as_str()), (414, "UNSUPPORTED"), "{message}");
    assert!(message.contains("8192"), "{message}");
    let big_header = format!("GET /v2/ HTTP/1.1\r\nHost: w\r\nX-Big: {}\r\n\r\n", "b".repeat(40_000));
    let (status, body) = ask(big_header.into_bytes()).await;
    assert_eq!((status, error(&body).0.as_str()), (431, "UNSUPPORTED"));

    // The same over h2c: the header list limit lets it through to wharf.
    let tcp = TcpStream::connect(wharf.registry).await.expect("connect");
    let (mut h2, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("h2c handshake");
    tokio::spawn(connection);
    let request = hyper::Request::get(format!("{}/v2/", wharf.url()))
        .header("x-big", "c".repeat(40_000))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = within_guard("h2c request", h2.send_request(request)).await.expect("h2c response");
    assert_eq!(resp.status(), 431);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(error(&body).0, "UNSUPPORTED");

    // Past hyper's own limits: its bare status, no body, and the
    // connection closed; wharf only counts them.
    let bare = [
        (format!("GET /v2/{} HTTP/1.1\r\nHost: w\r\n\r\n", "a".repeat(70_000)), 414),
        (format!("GET /v2/ HTTP/1.1\r\nHost: w\r\n{}\r\n", "X-Many: 1\r\n".repeat(120)), 431),
        ("NOT HTTP AT ALL\r\n\r\n".to_owned(), 400),
    ];
    for (request, expected) in bare {
        let mut conn = Raw::connect(wharf.registry).await;
        conn.send(request.as_bytes()).await;
        let (status, body) = conn.response().await;
        assert_eq!((status, body.len()), (expected, 0));
        assert!(conn.until_closed("hyper closes after its answer").await.is_empty());
    }
    settles_at(&wharf, r#"wharf_malformed_requests_total{port="registry"}"#, 3).await;
    // A request within every limit is served as ever.
    assert_eq!(http::get(&format!("{}/v2/", wharf.url())).await.status, 200);
}
