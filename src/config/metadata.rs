//! `[metadata]`: where repositories, versions and tasks are recorded. The
//! default is the embedded SQLite database under `storage.path`; a
//! `postgres://` URL shares one PostgreSQL database between several nodes.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use super::{invalid, ConfigError};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetadata {
    url: Option<String>,
    password_file: Option<PathBuf>,
    max_connections: Option<u32>,
    ca_file: Option<PathBuf>,
}

/// The URL may carry a password: Debug leaves it out.
impl fmt::Debug for RawMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawMetadata")
            .field("url", &self.url.as_deref().map(redact))
            .field("password_file", &self.password_file)
            .field("max_connections", &self.max_connections)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

#[derive(Clone, PartialEq, Eq, Default)]
pub(crate) struct MetadataConfig {
    /// A PostgreSQL database (URL or libpq key=value string); None is the
    /// embedded SQLite database.
    pub(crate) url: Option<String>,
    /// Read from `password_file`, if set.
    pub(crate) password: Option<String>,
    pub(crate) max_connections: usize,
    /// CA certificates to trust besides the system's (`sslmode=require`).
    pub(crate) ca_file: Option<PathBuf>,
}

impl fmt::Debug for MetadataConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetadataConfig")
            .field("url", &self.url.as_deref().map(redact))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("max_connections", &self.max_connections)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// Connections to PostgreSQL per node, when not set.
const DEFAULT_MAX_CONNECTIONS: usize = 16;

/// A URL without the password it may carry.
pub(crate) fn redact(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(uri) if uri.authority().is_some_and(|a| a.as_str().contains('@')) => {
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
            let (user, host) = authority.rsplit_once('@').unwrap_or(("", authority));
            let user = user.split(':').next().unwrap_or("");
            url.replacen(authority, &format!("{user}:<redacted>@{host}"), 1)
        }
        Ok(_) => url.to_owned(),
        // A key=value string: hide any password=... word.
        Err(_) => url
            .split_whitespace()
            .map(|w| if w.starts_with("password=") { "password=<redacted>" } else { w })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

impl RawMetadata {
    pub(super) fn validate(self) -> Result<MetadataConfig, ConfigError> {
        let max_connections = match self.max_connections {
            None => DEFAULT_MAX_CONNECTIONS,
            Some(0) => return Err(invalid("metadata.max_connections", "must be at least 1")),
            Some(n) => n as usize,
        };
        let url = match self.url {
            None => {
                if self.password_file.is_some() {
                    return Err(invalid("metadata.password_file", "needs metadata.url (a PostgreSQL database)"));
                }
                if self.ca_file.is_some() {
                    return Err(invalid("metadata.ca_file", "needs metadata.url (a PostgreSQL database)"));
                }
                return Ok(MetadataConfig { url: None, password: None, max_connections, ca_file: None });
            }
            Some(url) => url,
        };
        let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
        if !is_url && (url.contains("://") || !url.contains('=')) {
            return Err(invalid(
                "metadata.url",
                format!("{}: must be a postgres:// URL (or a libpq key=value string)", redact(&url)),
            ));
        }
        url.parse::<postgres::Config>().map_err(|e| invalid("metadata.url", format!("{}: {e}", redact(&url))))?;
        let password = match self.password_file {
            None => None,
            Some(file) => {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| invalid("metadata.password_file", format!("{}: {e}", file.display())))?;
                let password = text.trim_end_matches(['\n', '\r']).to_owned();
                if password.is_empty() {
                    return Err(invalid("metadata.password_file", format!("{} is empty", file.display())));
                }
                Some(password)
            }
        };
        if let Some(file) = &self.ca_file {
            if !file.is_file() {
                return Err(invalid("metadata.ca_file", format!("{}: no such file", file.display())));
            }
        }
        Ok(MetadataConfig { url: Some(url), password, max_connections, ca_file: self.ca_file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(url: Option<&str>, password_file: Option<PathBuf>, max_connections: Option<u32>) -> RawMetadata {
        RawMetadata { url: url.map(str::to_owned), password_file, max_connections, ca_file: None }
    }

    #[test]
    fn the_default_is_sqlite() {
        let c = raw(None, None, None).validate().unwrap();
        assert_eq!((c.url, c.password, c.max_connections), (None, None, DEFAULT_MAX_CONNECTIONS));
    }

    #[test]
    fn a_postgres_url_is_checked_and_its_password_never_shown() {
        let c = raw(Some("postgres://wharf:s3cret@db.example:5433/wharf"), None, Some(4)).validate().unwrap();
        assert_eq!(c.max_connections, 4);
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret") && shown.contains("wharf:<redacted>@db.example:5433"), "{shown}");
        assert!(raw(Some("host=/run/postgresql user=wharf password=x"), None, None).validate().is_ok());
        assert_eq!(redact("host=/run/pg password=x user=u"), "host=/run/pg password=<redacted> user=u");
        for bad in ["mysql://db/wharf", "wharf.db", "postgres://db:notaport/wharf"] {
            let err = raw(Some(bad), None, None).validate().unwrap_err().to_string();
            assert!(err.starts_with("metadata.url: "), "{bad}: {err}");
        }
        assert!(raw(Some("postgres://db/w"), None, Some(0)).validate().is_err());
    }

    #[test]
    fn the_password_comes_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db.pass");
        std::fs::write(&file, "p4ss\n").unwrap();
        let c = raw(Some("postgres://wharf@db/wharf"), Some(file.clone()), None).validate().unwrap();
        assert_eq!(c.password.as_deref(), Some("p4ss"));
        assert!(raw(None, Some(file), None).validate().is_err(), "a password file without a database");
        let missing = raw(Some("postgres://db/w"), Some(dir.path().join("nope")), None).validate().unwrap_err();
        assert!(missing.to_string().starts_with("metadata.password_file: "));
        let with_ca = |url: Option<&str>, ca: PathBuf| RawMetadata { ca_file: Some(ca), ..raw(url, None, None) }.validate();
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, "pem").unwrap();
        assert_eq!(with_ca(Some("postgres://db/w?sslmode=require"), ca.clone()).unwrap().ca_file, Some(ca.clone()));
        assert!(with_ca(None, ca).unwrap_err().to_string().starts_with("metadata.ca_file: "));
        let absent = with_ca(Some("postgres://db/w"), dir.path().join("none.crt")).unwrap_err().to_string();
        assert!(absent.starts_with("metadata.ca_file: "), "{absent}");
    }
}
