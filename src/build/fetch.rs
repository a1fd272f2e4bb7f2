//! `ADD <url>`: refused unless the URL is under a prefix the operator
//! listed (`[build] add_urls`), compared part by part (scheme, host, port,
//! then whole path segments; no user info, no dot segments, no encoded
//! dots or slashes), so that no spelling of a URL reaches a host that is
//! not listed. Fetched once, without following redirects, into the
//! build's own directory, never more than the context's size limit.

use std::path::Path;
use std::time::Duration;

use http::Uri;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

/// A whole fetch, headers and body.
const TIMEOUT: Duration = Duration::from_secs(300);

/// A URL split into what is compared.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parts {
    scheme: String,
    host: String,
    port: u16,
    /// Path segments, the last empty when the path ends with `/`.
    segments: Vec<String>,
}

fn parts(url: &str) -> Result<Parts, String> {
    let uri: Uri = url.parse().map_err(|e| format!("{url}: not a URL ({e})"))?;
    let scheme = uri.scheme_str().map(str::to_ascii_lowercase).ok_or_else(|| format!("{url}: no scheme"))?;
    let port = match (scheme.as_str(), uri.port_u16()) {
        (_, Some(p)) => p,
        ("http", None) => 80,
        ("https", None) => 443,
        _ => return Err(format!("{url}: only http and https URLs")),
    };
    if !matches!(scheme.as_str(), "http" | "https") {
        return Err(format!("{url}: only http and https URLs"));
    }
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    if authority.contains('@') {
        return Err(format!("{url}: user information in a URL is refused"));
    }
    let host = uri.host().map(str::to_ascii_lowercase).ok_or_else(|| format!("{url}: no host"))?;
    let path = uri.path();
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2e") || lower.contains("%2f") || lower.contains("%5c") || path.contains('\\') {
        return Err(format!("{url}: encoded dots, slashes or backslashes in the path are refused"));
    }
    let segments: Vec<String> = path.trim_start_matches('/').split('/').map(str::to_owned).collect();
    if segments.iter().any(|s| s == "." || s == "..") {
        return Err(format!("{url}: dot segments in the path are refused"));
    }
    Ok(Parts { scheme, host, port, segments })
}

/// The URL prefixes `ADD` may fetch from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AddUrls {
    prefixes: Vec<Parts>,
}

impl AddUrls {
    /// Checks each prefix as a URL (for the config's validation).
    pub(crate) fn new(prefixes: &[String]) -> Result<AddUrls, String> {
        Ok(AddUrls { prefixes: prefixes.iter().map(|p| parts(p)).collect::<Result<_, _>>()? })
    }

    /// Whether `url` is under a listed prefix: the same scheme, host and
    /// port, and the prefix's path segments first (a prefix's last
    /// segment, when it does not end with `/`, must match whole).
    pub(crate) fn allows(&self, url: &str) -> Result<(), String> {
        let u = parts(url)?;
        let under = |p: &Parts| {
            if (p.scheme.as_str(), p.host.as_str(), p.port) != (u.scheme.as_str(), u.host.as_str(), u.port) {
                return false;
            }
            let (dir, last) = p.segments.split_at(p.segments.len() - 1);
            u.segments.len() > dir.len()
                && u.segments[..dir.len()] == *dir
                && (last[0].is_empty() || (u.segments[dir.len()] == last[0]))
                && !u.segments.last().is_some_and(String::is_empty)
        };
        if self.prefixes.iter().any(under) {
            Ok(())
        } else if self.prefixes.is_empty() {
            Err("fetching URLs is not allowed in builds (an operator may list URL prefixes in [build] add_urls); download it into the context and COPY it".into())
        } else {
            Err("not under any prefix in [build] add_urls".into())
        }
    }
}

/// Fetches `url` into the new file `into`: its size. A status other
/// than 200 (redirects too) or more than `max_bytes` is an error.
pub(crate) async fn fetch(url: &str, into: &Path, max_bytes: u64) -> Result<u64, String> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("TLS roots: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
    let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let request = http::Request::get(uri)
        .header(http::header::USER_AGENT, concat!("wharf/", env!("CARGO_PKG_VERSION")))
        .body(http_body_util::Empty::new())
        .map_err(|e| e.to_string())?;
    let work = async {
        let response = client.request(request).await.map_err(|e| format!("{url}: {e}"))?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("{url}: the server answered {} (redirects are not followed)", response.status()));
        }
        let mut file = tokio::fs::File::create_new(into).await.map_err(|e| format!("{}: {e}", into.display()))?;
        let mut body = response.into_body();
        let mut size = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("{url}: {e}"))?;
            if let Ok(data) = frame.into_data() {
                size += data.len() as u64;
                if size > max_bytes {
                    return Err(format!("{url}: more than {max_bytes} bytes (build.max_context_size)"));
                }
                file.write_all(&data).await.map_err(|e| format!("{}: {e}", into.display()))?;
            }
        }
        file.flush().await.map_err(|e| format!("{}: {e}", into.display()))?;
        Ok(size)
    };
    tokio::time::timeout(TIMEOUT, work).await.map_err(|_| format!("{url}: no answer within {}s", TIMEOUT.as_secs()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_allowed_only_under_a_listed_prefix_part_by_part() {
        let urls = AddUrls::new(&["https://downloads.example.com/releases/".into(), "http://127.0.0.1:8080/one.tar".into()]).unwrap();
        for ok in [
            "https://downloads.example.com/releases/tool-1.4.tar.gz",
            "https://DOWNLOADS.example.com:443/releases/v1/tool",
            "http://127.0.0.1:8080/one.tar",
        ] {
            assert_eq!(urls.allows(ok), Ok(()), "{ok}");
        }
        for refused in [
            "https://downloads.example.com/releases-old/tool",
            "https://downloads.example.com/releases/",
            "https://downloads.example.com/releases/../secret",
            "https://downloads.example.com/releases/%2e%2e/secret",
            "https://downloads.example.com/releases/a%2Fb",
            "https://downloads.example.com.evil.net/releases/tool",
            "https://downloads.example.com@evil.net/releases/tool",
            "http://downloads.example.com/releases/tool",
            "https://downloads.example.com:8443/releases/tool",
            "http://127.0.0.1:8080/one.tar.bak",
            "http://127.0.0.1:8080/two.tar",
            "ftp://downloads.example.com/releases/tool",
            "git@github.com:org/repo.git",
        ] {
            assert!(urls.allows(refused).is_err(), "{refused}");
        }
        let none = AddUrls::default();
        assert!(none.allows("https://downloads.example.com/releases/tool").unwrap_err().contains("[build] add_urls"));
        assert!(AddUrls::new(&["not a url".into()]).is_err());
    }
}
