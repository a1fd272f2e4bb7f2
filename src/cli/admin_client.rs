//! The admin API's HTTP client, as the `wharf` command uses it: where the
//! admin port is (flag, environment, local config), how names go into
//! paths and queries, and how an answer becomes JSON or an error that says
//! whose fault it was. Plain HTTP only. It knows nothing of subcommands or
//! tables, and nothing of the server's internals: docs/ADMIN_API.md is the
//! whole contract.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use base64::Engine as _;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::config::Config;

/// The environment variable that names the admin URL when `--admin` is not
/// given.
pub(crate) const ADMIN_ENV: &str = "WHARF_ADMIN";
/// The admin user the commands sign in as, once wharf has users.
pub(crate) const ADMIN_USER_ENV: &str = "WHARF_ADMIN_USER";
/// That user's password; an environment variable rather than a flag, so
/// it never shows in `ps`.
pub(crate) const ADMIN_PASSWORD_ENV: &str = "WHARF_ADMIN_PASSWORD";
const API_PREFIX: &str = "/api/v1";
/// The admin port is usually on loopback: a connect that takes longer than
/// this is not going to succeed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one whole exchange. Listings are paged (at most 1000 results),
/// so a healthy wharf answers far sooner; this only stops a hung one from
/// hanging a script.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// Well above the largest page the API can send; stops something that is
/// not wharf from feeding us without end.
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// Why a call to the admin API did not produce a JSON answer. Each variant
/// says whose fault it was, so the caller can choose an exit code
/// mechanically. Every message is one line.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    /// The admin URL given is not one we can use.
    #[error("{0}")]
    BadUrl(String),
    /// The local config, read only to find the admin port, is unusable.
    #[error("cannot read the admin address from {source_name}: {message}; give --admin URL or set {ADMIN_ENV}")]
    Config { source_name: String, message: String },
    /// Nothing answered at the admin URL.
    #[error("cannot reach the admin API at {url} ({origin}): {reason}; is wharf running? Point --admin URL or {ADMIN_ENV} at its admin port")]
    Unreachable { url: String, origin: Origin, reason: String },
    /// Connected, but no answer came in time.
    #[error("the admin API at {url} ({origin}) did not answer within {} s", .after.as_secs())]
    NoAnswer { url: String, origin: Origin, after: Duration },
    /// The API refused the request (4xx) and said why.
    #[error("{message}")]
    Api { status: StatusCode, message: String },
    /// The API failed (5xx) and said why.
    #[error("the admin API failed ({status}): {message}")]
    Server { status: StatusCode, message: String },
    /// Anything the contract does not describe: a 5xx or 4xx without the
    /// error JSON, a body that is not JSON, a dropped connection.
    #[error("{0}")]
    Unexpected(String),
}

/// Where the admin URL came from, so an error can say which setting to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    Flag,
    Env,
    /// `server.admin_listen` in this file.
    ConfigFile(PathBuf),
    /// The embedded default of `server.admin_listen`.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => f.write_str("given by --admin"),
            Origin::Env => write!(f, "from {ADMIN_ENV}"),
            Origin::ConfigFile(path) => write!(f, "server.admin_listen in {}", path.display()),
            Origin::Default => f.write_str("the default server.admin_listen"),
        }
    }
}

/// The admin API's base: `http://host:port` plus any path prefix (a
/// reverse proxy may mount wharf under one), without a trailing slash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AdminUrl {
    base: String,
    origin: Origin,
}

/// Chooses the admin URL: `--admin`, else `$WHARF_ADMIN` (if not empty),
/// else `http://<server.admin_listen>` from the config. `config` is only
/// called when needed, so a broken config file does not stand in the way
/// of an explicit URL.
pub(crate) fn resolve(
    flag: Option<&str>,
    env: Option<&str>,
    config: impl FnOnce() -> Result<(SocketAddr, Origin), AdminError>,
) -> Result<AdminUrl, AdminError> {
    if let Some(url) = flag {
        return Ok(AdminUrl { base: parse_base(url, &Origin::Flag)?, origin: Origin::Flag });
    }
    if let Some(url) = env.filter(|u| !u.trim().is_empty()) {
        return Ok(AdminUrl { base: parse_base(url, &Origin::Env)?, origin: Origin::Env });
    }
    let (addr, origin) = config()?;
    if addr.port() == 0 {
        // Port 0 means "any free port, chosen at start": only wharf's log
        // knows which.
        return Err(AdminError::Config {
            source_name: origin.to_string(),
            message: "the port is 0, chosen when wharf starts".into(),
        });
    }
    Ok(AdminUrl { base: format!("http://{}", connectable(addr)), origin })
}

/// `server.admin_listen` from `path` (or the embedded defaults when None),
/// with `WHARF_<SECTION>__<KEY>` overrides from `env`, as `wharf serve`
/// would read it.
pub(crate) fn admin_listen_from_config(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(SocketAddr, Origin), AdminError> {
    let origin = match path {
        Some(p) => Origin::ConfigFile(p.to_path_buf()),
        None => Origin::Default,
    };
    match Config::load(path, env) {
        Ok(config) => Ok((config.server.admin_listen, origin)),
        Err(e) => Err(AdminError::Config {
            source_name: match path {
                Some(p) => p.display().to_string(),
                None => "the embedded defaults".into(),
            },
            message: one_line(&e.to_string()),
        }),
    }
}

/// A listener bound to every address is reached through loopback.
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

/// Accepts `http://host[:port][/prefix]`, or a bare `host:port` (taken as
/// http), and returns it without a trailing slash. Errors name `origin`, so
/// a bad `WHARF_ADMIN` is not mistaken for a bad flag.
fn parse_base(given: &str, origin: &Origin) -> Result<String, AdminError> {
    let given = given.trim();
    let bad = |problem: &str| AdminError::BadUrl(format!("admin URL {given:?} ({origin}) {problem}"));
    let with_scheme = if given.contains("://") { given.to_owned() } else { format!("http://{given}") };
    let uri: Uri = with_scheme.parse().map_err(|e| bad(&format!("is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => {}
        Some(s) if s.eq_ignore_ascii_case("https") => {
            return Err(bad("uses https, which is not supported yet: the admin port speaks plain HTTP, use http://"))
        }
        _ => return Err(bad("must start with http://")),
    }
    let authority = match uri.authority() {
        Some(a) if !a.host().is_empty() => a,
        _ => return Err(bad("has no host")),
    };
    if authority.as_str().contains('@') || uri.query().is_some() {
        return Err(bad("must be http://host:port with an optional path, no user or query"));
    }
    Ok(format!("http://{authority}{}", uri.path().trim_end_matches('/')))
}

/// `/api/v1/<segments>?<query>`. Each segment is percent-encoded whole, so
/// a repository name's `/` travels as `%2F` and the server never has to
/// guess where the name ends; query pairs are form-encoded.
pub(crate) fn api_path(segments: &[&str], query: &[(&str, String)]) -> String {
    let mut path = String::from(API_PREFIX);
    for segment in segments {
        path.push('/');
        path.push_str(&encode_segment(segment));
    }
    if !query.is_empty() {
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (key, value) in query {
            form.append_pair(key, value);
        }
        path.push('?');
        path.push_str(&form.finish());
    }
    path
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A successful answer: the body as sent (for `--json`) and parsed (for
/// tables). An empty body (204) is `Value::Null`.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) raw: Bytes,
    pub(crate) value: Value,
}

/// A request's body: JSON whole, or an upload streamed as it is made.
pub(crate) type RequestBody = BoxBody<Bytes, std::io::Error>;

pub(crate) struct AdminClient {
    url: AdminUrl,
    http: Client<HttpConnector, RequestBody>,
    /// A ready `Authorization: Basic` value, marked sensitive.
    authorization: Option<HeaderValue>,
}

/// Basic credentials from `$WHARF_ADMIN_USER` and `$WHARF_ADMIN_PASSWORD`:
/// both or neither.
pub(crate) fn credentials_from_env(
    user: Option<String>,
    password: Option<String>,
) -> Result<Option<(String, String)>, AdminError> {
    match (user.filter(|u| !u.is_empty()), password) {
        (Some(user), Some(password)) => Ok(Some((user, password))),
        (None, _) => Ok(None),
        (Some(_), None) => Err(AdminError::BadUrl(format!("{ADMIN_USER_ENV} is set but {ADMIN_PASSWORD_ENV} is not"))),
    }
}

impl AdminClient {
    /// [`AdminClient::send`] must run on a tokio runtime: the client spawns
    /// its connection task there.
    pub(crate) fn new(url: AdminUrl) -> AdminClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        AdminClient { url, http: Client::builder(TokioExecutor::new()).build(connector), authorization: None }
    }

    /// Signs every request in with these Basic credentials.
    pub(crate) fn with_credentials(mut self, credentials: Option<(String, String)>) -> AdminClient {
        self.authorization = credentials.and_then(|(user, password)| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
            value.set_sensitive(true);
            Some(value)
        });
        self
    }

    /// Sends one request to `path` (from [`api_path`]) with an optional
    /// JSON body and reads the whole answer.
    pub(crate) async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Reply, AdminError> {
        let (content_type, payload) = match body {
            Some(json) => (Some("application/json"), Bytes::from(json.to_string())),
            None => (None, Bytes::new()),
        };
        let body = Full::new(payload).map_err(|never| match never {}).boxed();
        self.exchange(method, path, content_type, body, Some(ANSWER_TIMEOUT)).await
    }

    /// Sends `body` (of `content_type`, streamed as it is produced, an
    /// upload of any size) and reads the answer; no time bound but the
    /// server's.
    pub(crate) async fn send_upload(&self, method: Method, path: &str, content_type: &str, body: RequestBody) -> Result<Reply, AdminError> {
        self.exchange(method, path, Some(content_type), body, None).await
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: RequestBody,
        timeout: Option<Duration>,
    ) -> Result<Reply, AdminError> {
        let url = format!("{}{path}", self.url.base);
        let what = format!("{method} {url}");
        let mut request = Request::builder()
            .method(method)
            .uri(&url)
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("wharf/", env!("CARGO_PKG_VERSION")));
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        if let Some(t) = content_type {
            request = request.header(CONTENT_TYPE, t);
        }
        // Paths are built from percent-encoded segments, so this fails only
        // if the base URL itself was odd; say so rather than panic.
        let request = request
            .body(body)
            .map_err(|e| AdminError::Unexpected(format!("cannot build the request {what}: {e}")))?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| self.transport_error(&e))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    AdminError::Unexpected(format!("{what}: the answer broke off: {}", one_line(&e.to_string())))
                })?
                .to_bytes();
            Ok::<_, AdminError>((status, body))
        };
        let (status, body) = match timeout {
            Some(after) => tokio::time::timeout(after, exchange)
                .await
                .map_err(|_| AdminError::NoAnswer { url: self.url.base.clone(), origin: self.url.origin.clone(), after })??,
            None => exchange.await?,
        };
        interpret(&what, status, body)
    }

    /// A failure to connect means the admin port is not there; anything
    /// after connecting means something there is not speaking the API.
    fn transport_error(&self, e: &hyper_util::client::legacy::Error) -> AdminError {
        if e.is_connect() {
            AdminError::Unreachable {
                url: self.url.base.clone(),
                origin: self.url.origin.clone(),
                reason: innermost_cause(e),
            }
        } else {
            AdminError::Unexpected(format!(
                "the admin API at {} ({}) dropped the connection: {}",
                self.url.base,
                self.url.origin,
                innermost_cause(e)
            ))
        }
    }
}

/// Turns a status and body into a reply or an error, per the contract: a
/// 2xx carries JSON (or nothing), a 4xx or 5xx carries
/// `{"error": {"code", "message"}}`.
fn interpret(what: &str, status: StatusCode, body: Bytes) -> Result<Reply, AdminError> {
    if status.is_success() {
        if body.is_empty() {
            return Ok(Reply { raw: body, value: Value::Null });
        }
        return match serde_json::from_slice(&body) {
            Ok(value) => Ok(Reply { raw: body, value }),
            Err(e) => Err(AdminError::Unexpected(format!("{what}: answered {status} but the body is not JSON ({e})"))),
        };
    }
    let message = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("error")?.get("message")?.as_str().map(one_line));
    match message {
        Some(message) if status == StatusCode::UNAUTHORIZED => Err(AdminError::Api {
            status,
            message: format!("{message}; sign in with {ADMIN_USER_ENV} and {ADMIN_PASSWORD_ENV}"),
        }),
        Some(message) if status.is_client_error() => Err(AdminError::Api { status, message }),
        Some(message) if status.is_server_error() => Err(AdminError::Server { status, message }),
        _ => Err(AdminError::Unexpected(format!(
            "{what}: unexpected answer {status} without the admin API's error JSON; is this the admin port of a wharf with the admin API?"
        ))),
    }
}

/// hyper's own messages ("client error (Connect)") say little; the cause at
/// the bottom of the chain ("Connection refused") says what happened.
fn innermost_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    // "Connection refused (os error 111)": the number adds nothing for an operator.
    let text = match text.find(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    };
    one_line(&text)
}

/// Error output is one line on stderr whatever the server put in its
/// message.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    fn unused_config() -> Result<(SocketAddr, Origin), AdminError> {
        panic!("the config must not be read when a URL is given")
    }

    fn config_at(addr: &str) -> impl FnOnce() -> Result<(SocketAddr, Origin), AdminError> {
        let addr: SocketAddr = addr.parse().unwrap();
        move || Ok((addr, Origin::ConfigFile(PathBuf::from("/etc/wharf/wharf.toml"))))
    }

    #[test]
    fn the_flag_wins_over_the_environment_and_the_config() {
        let url = resolve(Some("http://flag.example:1"), Some("http://env.example:2"), unused_config).unwrap();
        assert_eq!(url, AdminUrl { base: "http://flag.example:1".into(), origin: Origin::Flag });
    }

    #[test]
    fn the_environment_wins_over_the_config() {
        let url = resolve(None, Some("http://env.example:2/"), unused_config).unwrap();
        assert_eq!(url, AdminUrl { base: "http://env.example:2".into(), origin: Origin::Env });
    }

    #[test]
    fn an_empty_environment_variable_falls_through_to_the_config() {
        let url = resolve(None, Some(" "), config_at("127.0.0.1:6060")).unwrap();
        assert_eq!(url.base, "http://127.0.0.1:6060");
        assert_eq!(url.origin, Origin::ConfigFile(PathBuf::from("/etc/wharf/wharf.toml")));
    }

    #[test]
    fn a_wildcard_admin_listen_is_reached_through_loopback() {
        assert_eq!(resolve(None, None, config_at("0.0.0.0:5050")).unwrap().base, "http://127.0.0.1:5050");
        assert_eq!(resolve(None, None, config_at("[::]:5050")).unwrap().base, "http://[::1]:5050");
        assert_eq!(resolve(None, None, config_at("[::1]:5050")).unwrap().base, "http://[::1]:5050");
    }

    #[test]
    fn an_admin_listen_on_port_zero_asks_for_an_explicit_url() {
        let e = resolve(None, None, config_at("127.0.0.1:0")).unwrap_err();
        assert!(matches!(e, AdminError::Config { .. }), "{e:?}");
        assert!(e.to_string().contains("--admin"), "{e}");
    }

    #[test]
    fn the_config_file_and_its_environment_overrides_give_the_admin_address() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wharf.toml");
        std::fs::write(&path, "[server]\nadmin_listen = \"127.0.0.1:6000\"\n").unwrap();
        let (addr, origin) = admin_listen_from_config(Some(&path), []).unwrap();
        assert_eq!(addr, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(origin, Origin::ConfigFile(path.clone()));

        let env = [("WHARF_SERVER__ADMIN_LISTEN".to_owned(), "127.0.0.1:7000".to_owned())];
        let (addr, _) = admin_listen_from_config(Some(&path), env).unwrap();
        assert_eq!(addr, "127.0.0.1:7000".parse().unwrap());
    }

    #[test]
    fn without_a_config_file_the_embedded_default_is_used() {
        let (addr, origin) = admin_listen_from_config(None, []).unwrap();
        assert_eq!(addr, "127.0.0.1:5050".parse().unwrap());
        assert_eq!(origin, Origin::Default);
    }

    #[test]
    fn a_broken_config_file_is_named_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wharf.toml");
        std::fs::write(&path, "[server]\nadmin_listen = \"nonsense\"\n").unwrap();
        let e = admin_listen_from_config(Some(&path), []).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()) && e.contains("server.admin_listen"), "{e}");
        assert!(e.contains("--admin") && e.contains(ADMIN_ENV), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn admin_urls_are_plain_http_with_an_optional_prefix() {
        let parse_base = |url| super::parse_base(url, &Origin::Flag);
        assert_eq!(parse_base("http://127.0.0.1:5050").unwrap(), "http://127.0.0.1:5050");
        assert_eq!(parse_base("127.0.0.1:5050").unwrap(), "http://127.0.0.1:5050");
        assert_eq!(parse_base("HTTP://host/wharf/").unwrap(), "http://host/wharf");
        assert_eq!(parse_base("http://[::1]:5050/").unwrap(), "http://[::1]:5050");
        for bad in ["https://host:5050", "ftp://host", "http://", "http://user:pw@host", "http://host?x=1", "not a url"]
        {
            assert!(matches!(parse_base(bad), Err(AdminError::BadUrl(_))), "{bad} accepted");
        }
        let https = parse_base("https://host").unwrap_err().to_string();
        assert!(https.contains("https, which is not supported") && https.contains("--admin"), "{https}");
        let from_env = resolve(None, Some("ftp://host"), unused_config).unwrap_err().to_string();
        assert!(from_env.contains(ADMIN_ENV), "{from_env}");
    }

    #[test]
    fn repository_names_are_percent_encoded_whole_in_paths() {
        assert_eq!(
            api_path(&["repositories", "docker.io/library/debian", "versions", "latest", "tags"], &[]),
            "/api/v1/repositories/docker.io%2Flibrary%2Fdebian/versions/latest/tags"
        );
        assert_eq!(api_path(&["distributions", "a b%c?#"], &[]), "/api/v1/distributions/a%20b%25c%3F%23");
        assert_eq!(api_path(&["repositories", "ghcr.io/x_y-z~1"], &[]), "/api/v1/repositories/ghcr.io%2Fx_y-z~1");
    }

    #[test]
    fn queries_are_form_encoded() {
        let path = api_path(
            &["repositories"],
            &[("name_contains", "lib/deb an&x".into()), ("kind", "pull-through".into()), ("limit", "5".into())],
        );
        assert_eq!(path, "/api/v1/repositories?name_contains=lib%2Fdeb+an%26x&kind=pull-through&limit=5");
    }

    fn reply(status: u16, body: &str) -> Result<Reply, AdminError> {
        interpret("GET http://h/api/v1/x", StatusCode::from_u16(status).unwrap(), Bytes::from(body.to_owned()))
    }

    #[test]
    fn a_client_error_carries_the_apis_message_on_one_line() {
        let body = r#"{"error": {"code": "not_found", "message": "no repository\n named \"x\""}}"#;
        match reply(404, body) {
            Err(AdminError::Api { status, message }) => {
                assert_eq!(status, StatusCode::NOT_FOUND);
                assert_eq!(message, "no repository named \"x\"");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn answers_outside_the_contract_are_unexpected() {
        let server = reply(500, r#"{"error": {"code": "internal", "message": "disk full"}}"#).unwrap_err();
        assert!(matches!(server, AdminError::Server { .. }) && server.to_string().contains("disk full"), "{server}");
        // A wharf without the admin API answers plain text.
        let old = reply(404, "not found\n").unwrap_err();
        assert!(matches!(old, AdminError::Unexpected(_)) && old.to_string().contains("404"), "{old}");
        assert!(matches!(reply(502, "<html>"), Err(AdminError::Unexpected(_))));
        assert!(matches!(reply(200, "<html>"), Err(AdminError::Unexpected(_))));
    }

    #[test]
    fn a_success_keeps_the_raw_body_and_an_empty_one_is_null() {
        let ok = reply(200, r#"{"b": 1, "a": 2}"#).unwrap();
        assert_eq!(ok.raw, r#"{"b": 1, "a": 2}"#);
        assert_eq!(ok.value["a"], 2);
        assert_eq!(reply(204, "").unwrap().value, Value::Null);
    }

    #[test]
    fn a_refused_connection_names_the_url_and_the_setting() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        // Bind then drop a listener: its port is free and refuses connections.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let url = resolve(Some(&format!("http://{addr}")), None, unused_config).unwrap();
        let e = runtime
            .block_on(async { AdminClient::new(url).send(Method::GET, &api_path(&["repositories"], &[]), None).await })
            .err()
            .unwrap();
        assert!(matches!(e, AdminError::Unreachable { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains(&format!("http://{addr}")) && text.contains("given by --admin"), "{text}");
        assert!(text.to_lowercase().contains("refused") && text.contains(ADMIN_ENV), "{text}");
    }
}
