//! Remotes: checking a remote before it is stored, and the changes the
//! admin API makes to one. The records live in metadata; every write goes
//! through [`Remotes`], so nothing unchecked is ever stored.

use std::sync::Arc;

use super::filter::TagFilter;
use crate::metadata::{Metadata, MetadataError, Remote, RemoteCredentials, SyncPolicy};
use crate::oci::RepositoryName;

/// Longest remote name accepted (as for distributions).
const MAX_NAME_LEN: usize = 64;
/// Downloads at once, at most.
pub(crate) const MAX_DOWNLOAD_CONCURRENCY: u32 = 64;
/// Requests per second, at most (a bound on a typo, not a policy).
pub(crate) const MAX_RATE_LIMIT: u32 = 100_000;

/// A remote as the admin API creates it: every field but the times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewRemote {
    pub(crate) name: String,
    pub(crate) url: String,
    pub(crate) upstream_name: String,
    pub(crate) include_tags: Vec<String>,
    pub(crate) exclude_tags: Vec<String>,
    pub(crate) policy: SyncPolicy,
    pub(crate) credentials: Option<RemoteCredentials>,
    pub(crate) credentials_from: Option<String>,
    pub(crate) tls_verify: bool,
    pub(crate) ca_cert: Option<String>,
    pub(crate) sigstore: Option<String>,
    pub(crate) download_concurrency: Option<u32>,
    pub(crate) rate_limit: Option<u32>,
}

/// Fields to change; None leaves a field as it is, Some(None) clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RemotePatch {
    pub(crate) name: Option<String>,
    pub(crate) url: Option<String>,
    pub(crate) upstream_name: Option<String>,
    pub(crate) include_tags: Option<Vec<String>>,
    pub(crate) exclude_tags: Option<Vec<String>>,
    pub(crate) policy: Option<SyncPolicy>,
    /// Setting credentials clears `credentials_from`, and the reverse.
    pub(crate) credentials: Option<Option<RemoteCredentials>>,
    pub(crate) credentials_from: Option<Option<String>>,
    pub(crate) tls_verify: Option<bool>,
    pub(crate) ca_cert: Option<Option<String>>,
    pub(crate) sigstore: Option<Option<String>>,
    pub(crate) download_concurrency: Option<Option<u32>>,
    pub(crate) rate_limit: Option<Option<u32>>,
}

impl RemotePatch {
    fn apply(&self, r: &mut Remote) -> Result<(), MetadataError> {
        if self.credentials.as_ref().is_some_and(Option::is_some)
            && self.credentials_from.as_ref().is_some_and(Option::is_some)
        {
            return Err(MetadataError::Invalid("give credentials or credentials_from, not both".into()));
        }
        let set = |field: &Option<String>, target: &mut String| {
            if let Some(v) = field {
                target.clone_from(v);
            }
        };
        set(&self.name, &mut r.name);
        set(&self.url, &mut r.url);
        set(&self.upstream_name, &mut r.upstream_name);
        if let Some(v) = &self.include_tags {
            r.include_tags.clone_from(v);
        }
        if let Some(v) = &self.exclude_tags {
            r.exclude_tags.clone_from(v);
        }
        if let Some(v) = self.policy {
            r.policy = v;
        }
        if let Some(v) = &self.credentials {
            if v.is_some() {
                r.credentials_from = None;
            }
            r.credentials.clone_from(v);
        }
        if let Some(v) = &self.credentials_from {
            if v.is_some() {
                r.credentials = None;
            }
            r.credentials_from.clone_from(v);
        }
        if let Some(v) = self.tls_verify {
            r.tls_verify = v;
        }
        if let Some(v) = &self.ca_cert {
            r.ca_cert.clone_from(v);
        }
        if let Some(v) = &self.sigstore {
            r.sigstore.clone_from(v);
        }
        if let Some(v) = self.download_concurrency {
            r.download_concurrency = v;
        }
        if let Some(v) = self.rate_limit {
            r.rate_limit = v;
        }
        Ok(())
    }
}

/// The remotes service: checks, then writes through metadata.
#[derive(Clone)]
pub(crate) struct Remotes {
    metadata: Metadata,
    /// Configured upstreams, which `credentials_from` may name.
    upstream_names: Arc<Vec<String>>,
}

impl Remotes {
    pub(crate) fn new(metadata: Metadata, upstream_names: Vec<String>) -> Remotes {
        Remotes { metadata, upstream_names: Arc::new(upstream_names) }
    }

    pub(crate) async fn create(&self, new: NewRemote) -> Result<Remote, MetadataError> {
        let mut remote = Remote {
            name: new.name,
            url: new.url,
            upstream_name: new.upstream_name,
            include_tags: new.include_tags,
            exclude_tags: new.exclude_tags,
            policy: new.policy,
            credentials: new.credentials,
            credentials_from: new.credentials_from,
            tls_verify: new.tls_verify,
            ca_cert: new.ca_cert,
            sigstore: new.sigstore,
            download_concurrency: new.download_concurrency,
            rate_limit: new.rate_limit,
            created_at: 0,
            updated_at: 0,
        };
        if remote.credentials.is_some() && remote.credentials_from.is_some() {
            return Err(MetadataError::Invalid("give credentials or credentials_from, not both".into()));
        }
        check(&mut remote, &self.upstream_names)?;
        self.metadata.run(move |s| s.create_remote(&remote)).await
    }

    pub(crate) async fn update(&self, name: String, patch: RemotePatch) -> Result<Remote, MetadataError> {
        let upstreams = self.upstream_names.clone();
        self.metadata
            .run(move |s| {
                s.update_remote(&name, &mut |r| {
                    patch.apply(r)?;
                    check(r, &upstreams)
                })
            })
            .await
    }

    pub(crate) async fn delete(&self, name: String) -> Result<(), MetadataError> {
        self.metadata.run(move |s| s.delete_remote(&name)).await
    }
}

/// Checks every field of `r`, normalising the URLs (no trailing `/`).
/// The error is one sentence naming the field.
pub(crate) fn check(r: &mut Remote, upstream_names: &[String]) -> Result<(), MetadataError> {
    let invalid = MetadataError::Invalid;
    check_name(&r.name)?;
    r.url = check_url("url", &r.url)?;
    r.upstream_name
        .parse::<RepositoryName>()
        .map_err(|e| invalid(format!("upstream_name {:?} is not a valid repository name: {e}", r.upstream_name)))?;
    TagFilter::new(&r.include_tags, &r.exclude_tags).map_err(invalid)?;
    if let Some(c) = &r.credentials {
        if c.username.is_empty() || c.password.is_empty() {
            return Err(invalid("credentials need a non-empty username and password".into()));
        }
        if c.username.contains(':') || c.username.chars().any(char::is_control) {
            return Err(invalid("the credentials' username must not contain ':' or control characters".into()));
        }
    }
    if let Some(from) = &r.credentials_from {
        if !upstream_names.iter().any(|u| u == from) {
            let known = if upstream_names.is_empty() { "none is configured".to_owned() } else { upstream_names.join(", ") };
            return Err(invalid(format!("credentials_from {from:?} is not a configured upstream ({known})")));
        }
    }
    if let Some(pem) = &r.ca_cert {
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(invalid("ca_cert must be PEM text holding at least one CERTIFICATE block".into()));
        }
    }
    if let Some(url) = &r.sigstore {
        r.sigstore = Some(check_url("sigstore", url)?);
    }
    if let Some(n) = r.download_concurrency {
        if !(1..=MAX_DOWNLOAD_CONCURRENCY).contains(&n) {
            return Err(invalid(format!("download_concurrency must be from 1 to {MAX_DOWNLOAD_CONCURRENCY}, not {n}")));
        }
    }
    if let Some(n) = r.rate_limit {
        if !(1..=MAX_RATE_LIMIT).contains(&n) {
            return Err(invalid(format!("rate_limit must be from 1 to {MAX_RATE_LIMIT} requests per second, not {n}")));
        }
    }
    Ok(())
}

/// 1-64 characters of `[A-Za-z0-9._-]`: safe in a URL path as it is.
fn check_name(name: &str) -> Result<(), MetadataError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(MetadataError::Invalid(format!("remote name {name:?} must be 1-{MAX_NAME_LEN} characters of [A-Za-z0-9._-]")))
    }
}

/// An absolute `http` or `https` URL with a host and no user info, query
/// or fragment; returned without a trailing `/`.
fn check_url(field: &str, url: &str) -> Result<String, MetadataError> {
    let invalid = |why: &str| MetadataError::Invalid(format!("{field} {url:?} {why}"));
    let uri: http::Uri = url.parse().map_err(|_| invalid("is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(invalid("must start with http:// or https://")),
    }
    let Some(authority) = uri.authority() else { return Err(invalid("has no host")) };
    if authority.as_str().contains('@') {
        return Err(invalid("must not carry credentials; use the credentials field"));
    }
    if authority.host().is_empty() {
        return Err(invalid("has no host"));
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(invalid("must not have a query or fragment"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote() -> Remote {
        Remote {
            name: "quay".into(),
            url: "https://quay.io/".into(),
            upstream_name: "team/app".into(),
            include_tags: vec!["v1.*".into()],
            exclude_tags: vec![],
            policy: SyncPolicy::Immediate,
            credentials: None,
            credentials_from: None,
            tls_verify: true,
            ca_cert: None,
            sigstore: None,
            download_concurrency: None,
            rate_limit: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn refused(change: impl FnOnce(&mut Remote)) -> String {
        let mut r = remote();
        change(&mut r);
        match check(&mut r, &["docker.io".into()]) {
            Err(MetadataError::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_good_remote_passes_with_its_url_normalised() {
        let mut r = remote();
        r.sigstore = Some("https://sigs.example/store/".into());
        r.credentials_from = Some("docker.io".into());
        check(&mut r, &["docker.io".into()]).unwrap();
        assert_eq!(r.url, "https://quay.io");
        assert_eq!(r.sigstore.as_deref(), Some("https://sigs.example/store"));
    }

    #[test]
    fn each_bad_field_is_refused_with_a_message_naming_it() {
        assert!(refused(|r| r.name = "a/b".into()).starts_with("remote name \"a/b\""));
        assert!(refused(|r| r.name = String::new()).starts_with("remote name"));
        assert!(refused(|r| r.name = "x".repeat(65)).starts_with("remote name"));
        assert!(refused(|r| r.url = "ftp://quay.io".into()).contains("http:// or https://"));
        assert!(refused(|r| r.url = "quay.io".into()).starts_with("url "));
        assert!(refused(|r| r.url = "https://u:p@quay.io".into()).contains("credentials"));
        assert!(refused(|r| r.url = "https://quay.io/?x=1".into()).contains("query"));
        assert!(refused(|r| r.upstream_name = "Team/App".into()).starts_with("upstream_name"));
        assert!(refused(|r| r.include_tags = vec!["a b".into()]).starts_with("include_tags"));
        assert!(refused(|r| r.exclude_tags = vec![String::new()]).starts_with("exclude_tags"));
        assert!(refused(|r| r.credentials_from = Some("quay".into())).contains("not a configured upstream (docker.io)"));
        let empty = RemoteCredentials { username: "bot".into(), password: String::new() };
        assert!(refused(|r| r.credentials = Some(empty)).contains("non-empty"));
        assert!(refused(|r| r.ca_cert = Some("hello".into())).starts_with("ca_cert"));
        assert!(refused(|r| r.sigstore = Some("file:///x".into())).starts_with("sigstore"));
        assert!(refused(|r| r.download_concurrency = Some(0)).starts_with("download_concurrency"));
        assert!(refused(|r| r.rate_limit = Some(0)).starts_with("rate_limit"));
    }

    #[test]
    fn a_patch_changes_only_what_it_names_and_credentials_replace_each_other() {
        let mut r = remote();
        r.credentials_from = Some("docker.io".into());
        let creds = RemoteCredentials { username: "bot".into(), password: "pw".into() };
        let patch = RemotePatch {
            credentials: Some(Some(creds.clone())),
            rate_limit: Some(Some(5)),
            ..RemotePatch::default()
        };
        patch.apply(&mut r).unwrap();
        assert_eq!((r.credentials.as_ref(), r.credentials_from.as_ref()), (Some(&creds), None));
        assert_eq!((r.rate_limit, r.url.as_str()), (Some(5), "https://quay.io/"));
        RemotePatch { rate_limit: Some(None), ..RemotePatch::default() }.apply(&mut r).unwrap();
        assert_eq!(r.rate_limit, None);
        let both = RemotePatch {
            credentials: Some(Some(creds)),
            credentials_from: Some(Some("docker.io".into())),
            ..RemotePatch::default()
        };
        assert!(matches!(both.apply(&mut r), Err(MetadataError::Invalid(_))));
    }
}
