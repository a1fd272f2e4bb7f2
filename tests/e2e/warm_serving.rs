//! Warm blobs on plain HTTP/1.1, which wharf sends zero-copy from the page
//! cache: real pulls through it come back intact, and on one kept-alive
//! connection HEAD, whole and ranged GETs, pipelined and mixed with a
//! manifest, each get exactly their bytes.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::admin::sample;
use crate::clients::Clients;
use crate::http;
use crate::images::{self, assert_layout_holds_image, Image};
use crate::registry::Registry;
use crate::streaming::within_guard;
use crate::wharf::{UpstreamEntry, Wharf};

/// A layer spanning many zero-copy frames (256 KiB each), with a ragged end.
const LAYER: usize = 3 * 1024 * 1024 + 12_345;

/// One response read off a raw connection.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Reads one response (`Content-Length` framed; none for a HEAD).
async fn read_response(conn: &mut BufReader<TcpStream>, head_only: bool) -> Raw {
    let mut line = String::new();
    conn.read_line(&mut line).await.expect("status line");
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        conn.read_line(&mut line).await.expect("header line");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap_or_else(|| panic!("header line {l:?}"));
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let mut raw = Raw { status, headers, body: Vec::new() };
    if !head_only {
        let len: usize = raw.header("content-length").and_then(|v| v.parse().ok()).expect("Content-Length");
        raw.body = vec![0; len];
        conn.read_exact(&mut raw.body).await.expect("the whole body");
    }
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_blobs_come_back_byte_exact_whole_ranged_and_headed_on_one_reused_connection() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clients = Clients::new(&tmp.path().join("clients"));
    let upstream = Registry::start(&tmp.path().join("upstream"));
    let image = Image::random(&[LAYER, 70_000]);
    images::push(&clients, tmp.path(), &image, &upstream.host(), "team/tool", &["1"], None);
    let wharf = Wharf::start(&tmp.path().join("wharf"), &[UpstreamEntry::new("up", &upstream.url()).default()]);
    let admin = wharf.admin_url();
    let metrics = || async {
        let m = http::get(&format!("{admin}/metrics")).await;
        String::from_utf8_lossy(&m.body).into_owned()
    };

    // Cold, then warm once every fill is committed: skopeo pulls the image
    // through wharf both times, the second time from storage.
    let cold = tempfile::tempdir().expect("tempdir");
    clients.pull_to_layout(&format!("docker://{}/team/tool:1", wharf.host()), cold.path(), "1", &[]);
    assert_layout_holds_image(cold.path(), "1", &image);
    within_guard("the fills are committed", async {
        while sample(&metrics().await, "wharf_fills_in_flight") != 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let warm = tempfile::tempdir().expect("tempdir");
    clients.pull_to_layout(&format!("docker://{}/team/tool:1", wharf.host()), warm.path(), "1", &[]);
    assert_layout_holds_image(warm.path(), "1", &image);
    let text = metrics().await;
    let hits = sample(&text, r#"wharf_cache_requests_total{kind="blob",result="hit"}"#);
    assert!(hits >= image.blobs().len() as u64, "the warm pull was served from storage: {text}");
    let zero_copied = sample(&text, "wharf_sendfile_bytes_total");
    assert!(zero_copied > 0, "the warm pull went out zero-copy: {text}");

    // One connection, requests pipelined: HEAD, whole, ranges (one inside a
    // frame, one across frames, a suffix), a manifest between, whole again.
    let layer = &image.layers[0];
    let bytes = &layer.bytes;
    // The layer is LAYER random bytes in a gzip stream: a little longer.
    let size = bytes.len();
    let blob = format!("/v2/team/tool/blobs/{}", layer.digest);
    let manifest = format!("/v2/team/tool/manifests/{}", image.manifest.digest);
    let across = (1024 * 1024 - 100, 2 * 1024 * 1024 + 99);
    let requests: Vec<(&str, &str, Option<String>)> = vec![
        ("HEAD", &blob, None),
        ("GET", &blob, None),
        ("GET", &blob, Some("bytes=100-1099".to_owned())),
        ("GET", &blob, Some(format!("bytes={}-{}", across.0, across.1))),
        ("GET", &manifest, None),
        ("GET", &blob, Some("bytes=-10".to_owned())),
        ("GET", &blob, None),
    ];
    let mut conn = BufReader::new(TcpStream::connect(wharf.host()).await.expect("connect"));
    let mut pipelined = String::new();
    for (method, path, range) in &requests {
        pipelined.push_str(&format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", wharf.host()));
        pipelined.push_str("Accept: application/vnd.oci.image.manifest.v1+json\r\n");
        if let Some(r) = range {
            pipelined.push_str(&format!("Range: {r}\r\n"));
        }
        pipelined.push_str("\r\n");
    }
    conn.get_mut().write_all(pipelined.as_bytes()).await.expect("send the requests");

    let head = read_response(&mut conn, true).await;
    assert_eq!(head.status, 200, "HEAD");
    assert_eq!(head.header("content-length"), Some(size.to_string().as_str()), "HEAD length");
    assert_eq!(head.header("docker-content-digest"), Some(layer.digest.as_str()));
    let whole = read_response(&mut conn, false).await;
    assert_eq!(whole.status, 200, "whole");
    assert!(whole.body == *bytes, "whole blob differs");
    let small = read_response(&mut conn, false).await;
    assert_eq!(small.status, 206, "range in a frame");
    assert_eq!(small.header("content-range"), Some(format!("bytes 100-1099/{size}").as_str()));
    assert!(small.body == bytes[100..1100], "range in a frame differs");
    let wide = read_response(&mut conn, false).await;
    assert_eq!(wide.status, 206, "range across frames");
    assert!(wide.body == bytes[across.0..=across.1], "range across frames differs");
    let m = read_response(&mut conn, false).await;
    assert_eq!(m.status, 200, "manifest");
    assert_eq!(m.body, image.manifest.bytes, "manifest between blobs");
    let suffix = read_response(&mut conn, false).await;
    assert_eq!(suffix.status, 206, "suffix range");
    assert!(suffix.body == bytes[size - 10..], "suffix differs");
    let again = read_response(&mut conn, false).await;
    assert_eq!(again.status, 200, "whole again");
    assert!(again.body == *bytes, "whole blob differs the second time");

    // The same connection takes one more request after all of them.
    let last = format!("GET {blob} HTTP/1.1\r\nHost: {}\r\nRange: bytes=0-0\r\n\r\n", wharf.host());
    conn.get_mut().write_all(last.as_bytes()).await.expect("send on the reused connection");
    let first_byte = read_response(&mut conn, false).await;
    assert_eq!((first_byte.status, first_byte.body.as_slice()), (206, &bytes[..1]), "a request after the others");

    // And all of it went zero-copy: the blob bytes of those responses.
    let served = 2 * size + 1000 + (across.1 - across.0 + 1) + 10 + 1;
    let after = sample(&metrics().await, "wharf_sendfile_bytes_total");
    assert!(after > zero_copied, "the connection's blob bytes were sent zero-copy");
    assert!(after - zero_copied <= served as u64, "no more bytes counted than were served");
}
