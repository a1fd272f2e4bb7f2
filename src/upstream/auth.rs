//! Upstream authentication: parsing `WWW-Authenticate` challenges, the
//! bearer token request and response, and the token cache.
//!
//! The HTTP round trips themselves belong to the parent module; this one is
//! pure apart from the cache. Tokens and passwords never reach a log: the
//! header values built here are marked sensitive and `BearerToken`'s `Debug`
//! is redacted.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::{HeaderValue, Uri};
use serde::Deserialize;

use super::UpstreamError;
use crate::config::Credentials;

/// The challenge wharf chose to answer from a 401.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Challenge {
    /// Token authentication as the distribution spec describes it.
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
    Basic,
}

/// One challenge as written: a scheme and its auth-params (names lowercased).
#[derive(Debug, PartialEq, Eq)]
struct RawChallenge {
    scheme: String,
    params: Vec<(String, String)>,
}

impl RawChallenge {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Picks the challenge to answer from every `WWW-Authenticate` value:
/// Bearer (with a realm) is preferred over Basic because a token can be
/// scoped; `None` if neither is offered usably.
pub(super) fn select_challenge<'a>(values: impl Iterator<Item = &'a str>) -> Option<Challenge> {
    let raw: Vec<RawChallenge> = values.flat_map(parse_challenges).collect();
    let bearer = raw.iter().find_map(|c| {
        if !c.scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let realm = c.param("realm").filter(|r| !r.is_empty())?;
        Some(Challenge::Bearer {
            realm: realm.to_owned(),
            service: c.param("service").map(str::to_owned),
            scope: c.param("scope").filter(|s| !s.trim().is_empty()).map(str::to_owned),
        })
    });
    bearer.or_else(|| raw.iter().any(|c| c.scheme.eq_ignore_ascii_case("basic")).then_some(Challenge::Basic))
}

/// Parses one header value, which may hold several challenges:
/// `Basic realm="a", Bearer realm="b",scope="x:y:pull,push"`. Quoted values
/// may contain commas, spaces and backslash escapes. Unparseable fragments
/// are skipped rather than failing the whole header.
fn parse_challenges(value: &str) -> Vec<RawChallenge> {
    let mut c = Cursor { s: value.as_bytes(), pos: 0 };
    let mut out = Vec::new();
    loop {
        c.skip(|b| b == b',' || is_ws(b));
        if c.at_end() {
            break;
        }
        let scheme = c.token();
        if scheme.is_empty() {
            // Not a token start: step over the stray byte.
            c.pos += 1;
            continue;
        }
        let mut params = Vec::new();
        loop {
            c.skip(|b| b == b',' || is_ws(b));
            let start = c.pos;
            let name = c.token();
            if name.is_empty() {
                break;
            }
            c.skip(is_ws);
            if c.peek() != Some(b'=') {
                // A token not followed by `=` starts the next challenge.
                c.pos = start;
                break;
            }
            c.pos += 1;
            c.skip(is_ws);
            let value = c.value();
            params.push((name.to_ascii_lowercase(), value));
        }
        out.push(RawChallenge { scheme, params });
    }
    out
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip(&mut self, pred: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
    }

    fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> String {
        let start = self.pos;
        self.skip(pred);
        String::from_utf8_lossy(&self.s[start..self.pos]).into_owned()
    }

    fn token(&mut self) -> String {
        self.take_while(is_tchar)
    }

    /// A quoted-string (unescaped) or, leniently, anything up to the next
    /// comma or space (some registries leave URLs unquoted).
    fn value(&mut self) -> String {
        if self.peek() != Some(b'"') {
            return self.take_while(|b| b != b',' && !is_ws(b));
        }
        self.pos += 1;
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.pos += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(escaped) = self.peek() {
                        out.push(escaped);
                        self.pos += 1;
                    }
                }
                _ => out.push(b),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The token endpoint URL: the realm with `service` and one `scope`
/// parameter per space-separated scope (as docker does).
pub(super) fn token_uri(realm: &str, service: Option<&str>, scope: &str) -> Result<Uri, UpstreamError> {
    let realm_uri: Uri = realm
        .parse()
        .map_err(|e| UpstreamError::Protocol(format!("bearer realm {realm:?} is not a URL: {e}")))?;
    if !matches!(realm_uri.scheme_str(), Some("http" | "https")) || realm_uri.authority().is_none() {
        return Err(UpstreamError::Protocol(format!("bearer realm {realm:?} is not an http(s) URL")));
    }
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(service) = service {
        query.append_pair("service", service);
    }
    for s in scope.split_whitespace() {
        query.append_pair("scope", s);
    }
    let query = query.finish();
    let url = match (query.is_empty(), realm_uri.query().is_some()) {
        (true, _) => realm.to_owned(),
        (false, true) => format!("{realm}&{query}"),
        (false, false) => format!("{realm}?{query}"),
    };
    url.parse().map_err(|e| UpstreamError::Protocol(format!("bearer realm {realm:?}: {e}")))
}

/// A bearer token and how long wharf may keep using it.
#[derive(Clone)]
pub(super) struct BearerToken {
    header: HeaderValue,
    lifetime: Duration,
}

impl BearerToken {
    pub(super) fn header(&self) -> HeaderValue {
        self.header.clone()
    }
}

impl PartialEq for BearerToken {
    fn eq(&self, other: &Self) -> bool {
        self.header == other.header
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerToken").field("lifetime", &self.lifetime).finish_non_exhaustive()
    }
}

/// The distribution spec's token response; `access_token` is the OAuth2
/// spelling some registries use instead.
#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<serde_json::Number>,
}

/// The spec's default when a token response has no `expires_in`.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

pub(super) fn parse_token_response(body: &[u8]) -> Result<BearerToken, UpstreamError> {
    let response: TokenResponse = serde_json::from_slice(body)
        .map_err(|e| UpstreamError::Protocol(format!("token response is not valid JSON: {e}")))?;
    let token = response
        .token
        .filter(|t| !t.is_empty())
        .or(response.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| UpstreamError::Protocol("token response has no token".into()))?;
    let expires_in = response
        .expires_in
        .and_then(|n| n.as_u64())
        .filter(|&s| s > 0)
        .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
    let mut header = HeaderValue::try_from(format!("Bearer {token}"))
        .map_err(|_| UpstreamError::Protocol("token contains characters not allowed in a header".into()))?;
    header.set_sensitive(true);
    Ok(BearerToken { header, lifetime: cache_lifetime(expires_in) })
}

/// Stop using a token a little before it expires, so a request signed just
/// before expiry does not arrive just after it: a tenth of its life, at least
/// one second and at most thirty.
fn cache_lifetime(expires_in: Duration) -> Duration {
    let margin = (expires_in / 10).clamp(Duration::from_secs(1), Duration::from_secs(30));
    expires_in.saturating_sub(margin)
}

pub(super) fn basic_header(credentials: &Credentials) -> HeaderValue {
    let raw = format!("{}:{}", credentials.username, credentials.password);
    let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
    // Base64 output is always a valid header value.
    let mut header = HeaderValue::try_from(format!("Basic {encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    header.set_sensitive(true);
    header
}

/// Tokens by the scope they were requested for. `try_get_with` makes
/// concurrent requests for one scope share a single token fetch; each entry
/// expires on its own schedule (see [`cache_lifetime`]).
#[derive(Clone)]
pub(super) struct TokenCache {
    cache: moka::future::Cache<String, BearerToken>,
}

struct TokenExpiry;

impl moka::Expiry<String, BearerToken> for TokenExpiry {
    fn expire_after_create(&self, _scope: &String, token: &BearerToken, _at: Instant) -> Option<Duration> {
        Some(token.lifetime)
    }
}

/// Enough for every repository a busy cache pulls within a token's lifetime.
const TOKEN_CACHE_CAPACITY: u64 = 10_000;

impl TokenCache {
    pub(super) fn new() -> TokenCache {
        let cache = moka::future::Cache::builder()
            .max_capacity(TOKEN_CACHE_CAPACITY)
            .expire_after(TokenExpiry)
            .build();
        TokenCache { cache }
    }

    pub(super) async fn get(&self, scope: &str) -> Option<BearerToken> {
        self.cache.get(scope).await
    }

    /// The cached token for `scope`, or the result of `fetch`, which runs at
    /// most once at a time per scope; its error is shared by every waiter and
    /// not cached.
    pub(super) async fn get_or_fetch(
        &self,
        scope: &str,
        fetch: impl std::future::Future<Output = Result<BearerToken, UpstreamError>>,
    ) -> Result<BearerToken, UpstreamError> {
        self.cache.try_get_with(scope.to_owned(), fetch).await.map_err(|e: Arc<UpstreamError>| (*e).clone())
    }

    /// Forgets `rejected` if it is still the cached token for `scope` (a
    /// concurrent request may already have replaced it with a fresh one).
    pub(super) async fn forget(&self, scope: &str, rejected: &BearerToken) {
        if self.cache.get(scope).await.as_ref() == Some(rejected) {
            self.cache.invalidate(scope).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    fn bearer(realm: &str, service: Option<&str>, scope: Option<&str>) -> Challenge {
        Challenge::Bearer {
            realm: realm.into(),
            service: service.map(Into::into),
            scope: scope.map(Into::into),
        }
    }

    #[test]
    fn parses_the_docker_hub_bearer_challenge() {
        let v = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#;
        assert_eq!(
            select_challenge([v].into_iter()),
            Some(bearer(
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
                Some("repository:library/alpine:pull")
            ))
        );
    }

    #[test]
    fn challenge_scheme_and_param_names_are_case_insensitive_and_quotes_may_hold_commas() {
        let v = r#"bEaReR  Realm = "https://a.example/t?x=1,2" , SCOPE="repository:x/y:pull,push",service=reg"#;
        assert_eq!(
            select_challenge([v].into_iter()),
            Some(bearer("https://a.example/t?x=1,2", Some("reg"), Some("repository:x/y:pull,push")))
        );
    }

    #[test]
    fn challenge_quoted_values_unescape_backslashes() {
        let raw = parse_challenges(r#"Bearer realm="a\"b\\c",service="s""#);
        assert_eq!(raw.len(), 1);
        assert_eq!(raw[0].param("realm"), Some(r#"a"b\c"#));
        assert_eq!(raw[0].param("service"), Some("s"));
    }

    #[test]
    fn several_challenges_in_one_header_are_split_and_bearer_wins() {
        let v = r#"Basic realm="Registry, with comma", Bearer realm="https://t.example/token",service="svc""#;
        let raw = parse_challenges(v);
        assert_eq!(raw.iter().map(|c| c.scheme.as_str()).collect::<Vec<_>>(), ["Basic", "Bearer"]);
        assert_eq!(raw[0].param("realm"), Some("Registry, with comma"));
        assert_eq!(
            select_challenge([v].into_iter()),
            Some(bearer("https://t.example/token", Some("svc"), None))
        );
        // The same challenges in separate header values.
        let split = [r#"Basic realm="r""#, r#"Bearer realm="https://t.example/token""#];
        assert_eq!(select_challenge(split.into_iter()), Some(bearer("https://t.example/token", None, None)));
    }

    #[test]
    fn basic_challenge_and_unusable_challenges() {
        assert_eq!(select_challenge([r#"Basic realm="Registry Realm""#].into_iter()), Some(Challenge::Basic));
        assert_eq!(select_challenge(["basic"].into_iter()), Some(Challenge::Basic));
        // A bearer challenge without a realm cannot be answered.
        assert_eq!(select_challenge([r#"Bearer service="x""#].into_iter()), None);
        assert_eq!(select_challenge([r#"Bearer service="x", Basic"#].into_iter()), Some(Challenge::Basic));
        assert_eq!(select_challenge(["Negotiate abc=="].into_iter()), None);
        assert_eq!(select_challenge(["", " , ", "\"=,"].into_iter()), None);
    }

    #[test]
    fn token_uri_appends_service_and_each_scope() {
        let u = token_uri("https://auth.example/token", Some("reg.example"), "repository:a/b:pull repository:c:pull")
            .unwrap();
        assert_eq!(
            u.to_string(),
            "https://auth.example/token?service=reg.example&scope=repository%3Aa%2Fb%3Apull&scope=repository%3Ac%3Apull"
        );
        let with_query = token_uri("https://auth.example/token?x=1", None, "s").unwrap();
        assert_eq!(with_query.to_string(), "https://auth.example/token?x=1&scope=s");
        assert!(matches!(token_uri("/relative", None, "s"), Err(UpstreamError::Protocol(_))));
        assert!(matches!(token_uri("ftp://x/y", None, "s"), Err(UpstreamError::Protocol(_))));
    }

    #[test]
    fn token_response_accepts_both_spellings_and_defaults_the_lifetime() {
        let t = parse_token_response(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!(t.header(), "Bearer abc");
        assert_eq!(t.lifetime, Duration::from_secs(270));
        let t = parse_token_response(br#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!(t.header(), "Bearer xyz");
        assert_eq!(t.lifetime, Duration::from_secs(54));
        assert!(parse_token_response(br#"{"token":""}"#).is_err());
        assert!(parse_token_response(b"<html>").is_err());
        assert!(parse_token_response(br#"{"token":"a\nb"}"#).is_err());
    }

    #[test]
    fn token_debug_output_does_not_reveal_the_token() {
        let t = parse_token_response(br#"{"token":"secret-token-value"}"#).unwrap();
        assert!(!format!("{t:?}").contains("secret-token-value"));
        let creds = Credentials { username: "u".into(), password: "p".into() };
        assert!(basic_header(&creds).is_sensitive());
        assert_eq!(basic_header(&creds), "Basic dTpw");
    }

    #[test]
    fn cached_lifetime_ends_before_the_token_does() {
        assert_eq!(cache_lifetime(Duration::from_secs(60)), Duration::from_secs(54));
        assert_eq!(cache_lifetime(Duration::from_secs(3600)), Duration::from_secs(3570));
        assert_eq!(cache_lifetime(Duration::from_secs(5)), Duration::from_secs(4));
        assert_eq!(cache_lifetime(Duration::from_secs(1)), Duration::ZERO);
    }
}
