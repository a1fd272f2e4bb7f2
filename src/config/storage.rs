//! The `[storage]` section: where content lives (the local disk, or an
//! S3 bucket with a bounded local hot tier), and how much of it may be kept.
//! Raw shape and its validation only; the stores live in `crate::storage`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, parse_positive_duration, parse_size, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStorage {
    backend: String,
    path: PathBuf,
    max_size: Option<String>,
    high_watermark: f64,
    low_watermark: f64,
    s3: Option<RawS3>,
    cache: RawCache,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            backend: "fs".into(),
            path: PathBuf::from("/var/lib/wharf"),
            max_size: None,
            high_watermark: 0.9,
            low_watermark: 0.8,
            s3: None,
            cache: RawCache::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawS3 {
    bucket: String,
    endpoint: Option<String>,
    #[serde(default = "default_region")]
    region: String,
    #[serde(default)]
    prefix: String,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    secret_access_key_file: Option<PathBuf>,
    session_token: Option<String>,
    #[serde(default)]
    credentials_from_env: bool,
    #[serde(default)]
    allow_http: bool,
    ca_file: Option<PathBuf>,
    virtual_hosted_style: Option<bool>,
    #[serde(default = "default_request_timeout")]
    request_timeout: String,
    #[serde(default = "default_max_retries")]
    max_retries: u32,
    #[serde(default)]
    redirect: bool,
    #[serde(default = "default_redirect_expiry")]
    redirect_expiry: String,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_request_timeout() -> String {
    "60s".into()
}
fn default_max_retries() -> u32 {
    3
}
fn default_redirect_expiry() -> String {
    "20m".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCache {
    max_size: String,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache { max_size: "20GiB".into() }
    }
}

/// Where verified objects are kept.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Backend {
    /// `objects/` under `storage.path`: every object on the local disk.
    Fs,
    /// An S3 bucket holds every object; `objects/` under `storage.path` is
    /// a hot tier of recently used copies, at most `cache_max_size` bytes.
    S3(Box<S3Config>),
}

#[derive(Clone, Debug)]
pub(crate) struct StorageConfig {
    pub(crate) backend: Backend,
    /// `[storage.s3]` whatever the backend: with `fs`, where `wharf storage
    /// migrate --to s3` copies the objects.
    pub(crate) s3: Option<Box<S3Config>>,
    pub(crate) path: PathBuf,
    /// The cap on stored objects' bytes (on S3: in the bucket); None:
    /// unbounded.
    pub(crate) max_size: Option<u64>,
    /// Fractions of `max_size`: eviction starts above the high one and
    /// stops at or below the low one.
    pub(crate) high_watermark: f64,
    pub(crate) low_watermark: f64,
    /// The hot tier's bound (S3 only); 0: no hot tier.
    pub(crate) cache_max_size: u64,
}

/// `[storage.s3]`, validated. Debug redacts the secrets.
#[derive(Clone, PartialEq)]
pub(crate) struct S3Config {
    pub(crate) bucket: String,
    pub(crate) endpoint: Option<String>,
    pub(crate) region: String,
    /// Empty, or ending in `/`.
    pub(crate) prefix: String,
    pub(crate) access_key_id: Option<String>,
    pub(crate) secret_access_key: Option<String>,
    pub(crate) session_token: Option<String>,
    /// Take whatever object_store finds in `AWS_*` variables and instance
    /// metadata; off unless asked, so ambient variables never change where
    /// wharf stores content.
    pub(crate) credentials_from_env: bool,
    pub(crate) allow_http: bool,
    pub(crate) ca_file: Option<PathBuf>,
    /// Virtual-hosted-style requests (`bucket.host`); path style when false.
    pub(crate) virtual_hosted_style: bool,
    pub(crate) request_timeout: Duration,
    pub(crate) max_retries: u32,
    /// Answer blob GETs with a 307 to a presigned URL of the object.
    pub(crate) redirect: bool,
    /// How long a presigned URL stays valid.
    pub(crate) redirect_expiry: Duration,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .field("credentials_from_env", &self.credentials_from_env)
            .field("allow_http", &self.allow_http)
            .field("ca_file", &self.ca_file)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("request_timeout", &self.request_timeout)
            .field("max_retries", &self.max_retries)
            .field("redirect", &self.redirect)
            .field("redirect_expiry", &self.redirect_expiry)
            .finish()
    }
}

impl RawStorage {
    pub(super) fn validate(self) -> Result<StorageConfig, ConfigError> {
        if self.path.as_os_str().is_empty() {
            return Err(invalid("storage.path", "must not be empty"));
        }
        let max_size = match &self.max_size {
            None => None,
            Some(v) => match parse_size("storage.max_size", v)? {
                0 => return Err(invalid("storage.max_size", "must be more than 0 (leave it out for no bound)")),
                n => Some(n),
            },
        };
        // Both are fractions of max_size; low below high, so one eviction
        // frees room for many fills instead of running on every commit.
        for (key, v) in [("storage.high_watermark", self.high_watermark), ("storage.low_watermark", self.low_watermark)] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(invalid(key, format!("{v} is not a fraction in (0, 1]")));
            }
        }
        if self.low_watermark >= self.high_watermark {
            return Err(invalid("storage.low_watermark", "must be below storage.high_watermark"));
        }
        let cache_max_size = parse_size("storage.cache.max_size", &self.cache.max_size)?;
        let s3 = self.s3.map(RawS3::validate).transpose()?.map(Box::new);
        let backend = match (self.backend.as_str(), &s3) {
            ("fs", _) => Backend::Fs,
            ("s3", Some(s3)) => Backend::S3(s3.clone()),
            ("s3", None) => return Err(invalid("storage.s3", "backend = \"s3\" needs a [storage.s3] section with a bucket")),
            (other, _) => return Err(invalid("storage.backend", format!("{other:?}: expected \"fs\" or \"s3\""))),
        };
        Ok(StorageConfig {
            backend,
            s3,
            path: self.path,
            max_size,
            high_watermark: self.high_watermark,
            low_watermark: self.low_watermark,
            cache_max_size,
        })
    }
}

impl RawS3 {
    fn validate(self) -> Result<S3Config, ConfigError> {
        // S3's rules for bucket names, which every compatible store follows.
        let b = &self.bucket;
        let ok = (3..=63).contains(&b.len())
            && b.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
            && b.starts_with(|c: char| c.is_ascii_alphanumeric())
            && b.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !ok {
            return Err(invalid(
                "storage.s3.bucket",
                format!("{b:?} is not a bucket name (3 to 63 lowercase letters, digits, '-' and '.')"),
            ));
        }
        let endpoint = match self.endpoint.map(|e| e.trim_end_matches('/').to_owned()) {
            None => None,
            Some(e) if e.starts_with("https://") => Some(e),
            Some(e) if e.starts_with("http://") => {
                if !self.allow_http {
                    return Err(invalid("storage.s3.endpoint", format!("{e} is plain HTTP: set allow_http = true to allow it")));
                }
                Some(e)
            }
            Some(e) => return Err(invalid("storage.s3.endpoint", format!("{e:?}: expected an http:// or https:// URL"))),
        };
        if self.region.is_empty() {
            return Err(invalid("storage.s3.region", "must not be empty"));
        }
        let prefix = self.prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..")
            || prefix.contains("//")
            || prefix.chars().any(|c| c.is_control() || c == '\\')
        {
            return Err(invalid("storage.s3.prefix", format!("{:?} is not a key prefix", self.prefix)));
        }
        let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
        let secret_access_key = match (self.secret_access_key, self.secret_access_key_file) {
            (Some(_), Some(_)) => {
                return Err(invalid("storage.s3.secret_access_key", "give secret_access_key or secret_access_key_file, not both"))
            }
            (Some(s), None) => Some(s),
            (None, Some(path)) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| invalid("storage.s3.secret_access_key_file", format!("{}: {e}", path.display())))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            (None, None) => None,
        };
        if self.access_key_id.is_some() != secret_access_key.is_some() {
            return Err(invalid("storage.s3.access_key_id", "access_key_id and a secret access key go together"));
        }
        if self.access_key_id.is_none() && !self.credentials_from_env {
            return Err(invalid(
                "storage.s3.access_key_id",
                "no credentials: give access_key_id and secret_access_key(_file), or set credentials_from_env = true",
            ));
        }
        let request_timeout = parse_positive_duration("storage.s3.request_timeout", &self.request_timeout)?;
        if self.max_retries > 10 {
            return Err(invalid("storage.s3.max_retries", format!("{} is more than 10", self.max_retries)));
        }
        let redirect_expiry = parse_positive_duration("storage.s3.redirect_expiry", &self.redirect_expiry)?;
        // S3 refuses presigned URLs valid for more than 7 days.
        if redirect_expiry > Duration::from_secs(7 * 24 * 3600) {
            return Err(invalid("storage.s3.redirect_expiry", format!("{} is more than 7 days", self.redirect_expiry)));
        }
        // Path style by default with a custom endpoint (what MinIO,
        // SeaweedFS and Ceph answer without DNS set-up), virtual-hosted on AWS.
        let virtual_hosted_style = self.virtual_hosted_style.unwrap_or(endpoint.is_none());
        Ok(S3Config {
            bucket: self.bucket,
            endpoint,
            region: self.region,
            prefix,
            access_key_id: self.access_key_id,
            secret_access_key,
            session_token: self.session_token,
            credentials_from_env: self.credentials_from_env,
            allow_http: self.allow_http,
            ca_file: self.ca_file,
            virtual_hosted_style,
            request_timeout,
            max_retries: self.max_retries,
            redirect: self.redirect,
            redirect_expiry,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::super::tests::{err_text, load_str};
    use super::*;

    const S3: &str = "[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"wharf\"\nendpoint = \"http://127.0.0.1:8333\"\nallow_http = true\naccess_key_id = \"id\"\nsecret_access_key = \"s3cret\"\n";

    fn s3(c: &StorageConfig) -> &S3Config {
        match &c.backend {
            Backend::S3(s3) => s3,
            Backend::Fs => panic!("not s3"),
        }
    }

    #[test]
    fn the_local_disk_is_the_default_and_s3_takes_its_section() {
        let c = load_str("", &[]).unwrap();
        assert_eq!(c.storage.backend, Backend::Fs);
        assert_eq!(c.storage.cache_max_size, 20 << 30);
        let c = load_str(&format!("{S3}prefix = \"/edge-01\"\n[storage.cache]\nmax_size = \"0\"\n"), &[]).unwrap();
        let s = s3(&c.storage);
        assert_eq!((s.bucket.as_str(), s.prefix.as_str(), s.region.as_str()), ("wharf", "edge-01/", "us-east-1"));
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert!(!s.virtual_hosted_style, "path style with a custom endpoint");
        assert!(!s.credentials_from_env);
        assert_eq!(c.storage.cache_max_size, 0);
    }

    #[test]
    fn every_key_works_from_the_environment_and_secrets_never_reach_debug() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s3.secret");
        std::fs::write(&secret, "from-a-file\n").unwrap();
        let env = [
            ("WHARF_STORAGE__BACKEND", "s3"),
            ("WHARF_STORAGE__S3__BUCKET", "edge-bucket"),
            ("WHARF_STORAGE__S3__ENDPOINT", "https://s3.example.net/"),
            ("WHARF_STORAGE__S3__ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("WHARF_STORAGE__S3__SECRET_ACCESS_KEY_FILE", secret.to_str().unwrap()),
            ("WHARF_STORAGE__CACHE__MAX_SIZE", "1GiB"),
        ];
        let c = load_str("", &env).unwrap();
        let s = s3(&c.storage);
        assert_eq!(s.bucket, "edge-bucket");
        assert_eq!(s.endpoint.as_deref(), Some("https://s3.example.net"));
        assert_eq!(s.secret_access_key.as_deref(), Some("from-a-file"), "the file's line, without its newline");
        assert_eq!(c.storage.cache_max_size, 1 << 30);
        let debug = format!("{c:?}");
        assert!(!debug.contains("from-a-file") && debug.contains("<redacted>"), "{debug}");
        let debug = format!("{:?}", load_str(S3, &[]).unwrap());
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn bad_s3_settings_name_the_key() {
        let cases = [
            ("[storage]\nbackend = \"s3\"\n", "storage.s3"),
            ("[storage]\nbackend = \"gcs\"\n", "storage.backend"),
            (&S3.replace("wharf", "Not_A_Bucket"), "storage.s3.bucket"),
            (&S3.replace("allow_http = true\n", ""), "storage.s3.endpoint"),
            (&S3.replace("http://127.0.0.1:8333", "ftp://x"), "storage.s3.endpoint"),
            (&S3.replace("secret_access_key = \"s3cret\"\n", ""), "storage.s3.access_key_id"),
            (&S3.replace("access_key_id = \"id\"\nsecret_access_key = \"s3cret\"\n", ""), "storage.s3.access_key_id"),
            (&format!("{S3}secret_access_key_file = \"/nonexistent\"\n"), "storage.s3.secret_access_key"),
            (&format!("{S3}prefix = \"a/../b\"\n"), "storage.s3.prefix"),
            (&format!("{S3}max_retries = 11\n"), "storage.s3.max_retries"),
            (&format!("{S3}request_timeout = \"0s\"\n"), "storage.s3.request_timeout"),
            (&format!("{S3}redirect_expiry = \"8d\"\n"), "storage.s3.redirect_expiry"),
            (&format!("{S3}[storage.cache]\nmax_size = \"lots\"\n"), "storage.cache.max_size"),
        ];
        for (toml, key) in cases {
            let e = err_text(load_str(toml, &[]));
            assert!(e.starts_with(key), "{toml}: {e}");
        }
        let e = err_text(load_str(&S3.replace("\"s3cret\"", "\"x\"\nsecret_access_key_file = \"/etc/x\""), &[]));
        assert!(e.contains("not both"), "{e}");
        // The credentials may come from the environment only when asked.
        let from_env = S3.replace("access_key_id = \"id\"\nsecret_access_key = \"s3cret\"\n", "credentials_from_env = true\n");
        assert!(s3(&load_str(&from_env, &[]).unwrap().storage).credentials_from_env);
    }
}
